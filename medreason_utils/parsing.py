"""The one parser of completions. Rewards and evaluation both call it, so the training
signal and the metric cannot disagree.

Grammar: ``<THINK>reasoning</THINK><ANSWER>final answer</ANSWER>`` (tag names from
:class:`medreason_utils.prompts.Tags`). Nothing here raises on a malformed completion:
a completion that is not a string is read as the empty string.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .prompts import DEFAULT_TAGS, Tags, normalise_options

__all__ = [
    "ParsedCompletion",
    "parse_completion",
    "completion_text",
    "extract_choice",
    "choice_from_completion",
    "find_choice_anywhere",
    "plain_choice",
    "normalize_answer",
]


@dataclass(frozen=True)
class ParsedCompletion:
    """What :func:`parse_completion` reads from one completion.

    Attributes:
        think: stripped text of the first complete THINK block (with ``prefilled_think``,
            the text before the first closing THINK tag); ``None`` when there is none or it is blank.
        answer: stripped text of the last complete ANSWER block; ``None`` when there is none or it is blank.
        is_strict: leading and trailing whitespace aside, the completion is exactly one non-empty
            THINK block followed by one non-empty ANSWER block, each tag exactly once, nothing
            before, between or after but whitespace.
        tag_counts: occurrences of each of the four tags, keyed by the tag text.
    """

    think: str | None
    answer: str | None
    is_strict: bool
    tag_counts: dict[str, int] = field(default_factory=dict)


def completion_text(completion: Any) -> str:
    """The text of a completion in either TRL format.

    Accepts a plain string, or a conversational completion (a list of message dicts, whose
    ``content`` strings are joined; TRL gives ``[{"role": "assistant", "content": ...}]``),
    or one message dict. Anything else (``None``, numbers, malformed lists) gives ``""``.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        content = completion.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
            return "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str))
        return ""
    if isinstance(completion, (list, tuple)):
        return "".join(completion_text(m) for m in completion if isinstance(m, (Mapping, str)))
    return ""


def _strip_or_none(s: str | None) -> str | None:
    if s is None:
        return None
    s = s.strip()
    return s or None


def parse_completion(text: Any, *, prefilled_think: bool = False, tags: Tags = DEFAULT_TAGS) -> ParsedCompletion:
    """Parse one completion into reasoning, answer and strict-format flag.

    Args:
        text: the completion (str; conversational completions are read with :func:`completion_text`).
        prefilled_think: the prompt already ends with the opening THINK tag, so the completion
            starts inside the reasoning and must not open it again (a strict completion then has
            zero opening THINK tags).
        tags: tag names.

    Returns:
        :class:`ParsedCompletion`. Never raises.
    """
    s = completion_text(text)
    t_open, t_close, a_open, a_close = tags.all
    counts = {tag: s.count(tag) for tag in tags.all}

    # Answer: the last complete ANSWER block = the last opening tag that has a closing tag after it,
    # up to the first closing tag after that opening (a stray or duplicated closing tag, as in
    # "<ANSWER>a</ANSWER></ANSWER>", does not become part of the answer).
    answer = None
    end = s.rfind(a_close)
    if end != -1:
        start = s.rfind(a_open, 0, end)
        if start != -1:
            body_start = start + len(a_open)
            answer = _strip_or_none(s[body_start : s.find(a_close, body_start)])

    # Think: the first complete THINK block (or, prefilled, everything before the first closing tag).
    think = None
    close = s.find(t_close)
    if close != -1:
        if prefilled_think:
            think = _strip_or_none(s[:close].replace(t_open, ""))
        else:
            start = s.rfind(t_open, 0, close)
            if start != -1:
                think = _strip_or_none(s[start + len(t_open) : close])

    expected_think_open = 0 if prefilled_think else 1
    is_strict = False
    if (
        counts[t_open] == expected_think_open
        and counts[t_close] == 1
        and counts[a_open] == 1
        and counts[a_close] == 1
    ):
        body = s.strip()
        if not prefilled_think:
            if body.startswith(t_open):
                body = body[len(t_open) :]
            else:
                body = None
        if body is not None:
            reasoning, sep, rest = body.partition(t_close)
            rest = rest.strip()
            if sep and reasoning.strip() and rest.startswith(a_open) and rest.endswith(a_close):
                inner = rest[len(a_open) : -len(a_close)]
                is_strict = bool(inner.strip())
    return ParsedCompletion(think=think, answer=answer, is_strict=is_strict, tag_counts=counts)


# ---------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------

_PUNCT = re.compile(r"[^\w\s]", flags=re.UNICODE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: Any) -> str:
    """Normalise an answer for comparison: NFKC, lower case, punctuation and the articles
    a/an/the removed, whitespace collapsed (the SQuAD v1.1 evaluation script's normalisation,
    Rajpurkar et al. 2016). Non-strings give ``""``.
    """
    if not isinstance(text, str):
        return ""
    s = unicodedata.normalize("NFKC", text).lower()
    s = _PUNCT.sub(" ", s)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


#: "option", "answer is", "choice:", in any case, then an optional opening bracket.
_KEYWORD = r"(?i:\b(?:option|answer|choice))\s*(?:(?i:is)\s*)?[:\-]?\s*[\(\[]?"


def _letter_patterns(letters: str) -> list[re.Pattern]:
    cls = f"[{letters}]"
    return [
        # the whole answer is a letter, in either case: "B", "(B)", "B.", "b)"
        re.compile(rf"^\s*[\(\[]?({cls}|{cls.lower()})[\)\]]?[.:]?\s*$"),
        # a leading option label: "B. text", "B) text", "(B) text", "B: text", "B - text"
        re.compile(rf"^\s*[\(\[]?({cls})(?:[\)\]]|[.:](?!\w)|\s+-\s)"),
        # "option B", "answer is B", "choice (B)", "answer: B" (the keyword in any case, the letter upper case)
        re.compile(rf"{_KEYWORD}({cls})\b(?![\w'])"),
        # a lower-case letter only where it ends the statement: "answer is b", "option (c)."; so that
        # "the answer is a vitamin deficiency" is not read as option A
        re.compile(rf"{_KEYWORD}({cls.lower()})(?:[\)\]]|[.,;:]?\s*$)"),
        # a label inside the text: "... (B) text ...", " B. text"
        re.compile(rf"(?:^|\s)[\(\[]({cls})[\)\]](?=\s|$|[.,;:])"),
    ]


def _named_letters(answer_text: str, letters: str) -> set[str]:
    found: set[str] = set()
    for pat in _letter_patterns(letters):
        found.update(m.group(1).upper() for m in pat.finditer(answer_text))
    return found


def _named_texts(answer_text: str, options: dict[str, str]) -> set[str]:
    norm_answer = f" {normalize_answer(answer_text)} "
    hits = {}
    for letter, text in options.items():
        norm = normalize_answer(text)
        if norm and f" {norm} " in norm_answer:
            hits[letter] = norm
    # an option whose text is part of another matched option's text is not named on its own
    return {
        letter
        for letter, norm in hits.items()
        if not any(other != letter and norm != o_norm and f" {norm} " in f" {o_norm} " for other, o_norm in hits.items())
    }


def extract_choice(answer_text: Any, options: Mapping[str, str | None] | Sequence[str]) -> str | None:
    """The option letter an answer names, or ``None`` when it names none or more than one.

    Rules, in order: (1) option labels (``B``, ``(B)``, ``B.``/``B)`` at the start; an answer
    that is nothing but one letter counts in either case, ``b``;
    ``option B``, ``answer is B``; after such a keyword a lower-case letter counts only where it
    ends the statement, ``answer is b``); if they name exactly one letter that is it, more than one
    gives ``None``; (2) otherwise the option texts that occur in the answer (after
    :func:`normalize_answer`; an option contained in a longer matched option is dropped);
    exactly one gives its letter. A leading article "A ..." is not read as option A unless it
    is followed by ``.``, ``)`` or ``:``.

    Args:
        answer_text: usually ``parse_completion(...).answer``; ``None`` or blank gives ``None``.
        options: ``{letter: text}`` or a list of option texts (lettered A, B, ...).
    """
    if not isinstance(answer_text, str) or not answer_text.strip():
        return None
    try:
        opts = normalise_options(options)
    except (ValueError, TypeError):
        return None
    letters = "".join(opts)
    named = _named_letters(answer_text.strip(), letters)
    if len(named) == 1:
        return named.pop()
    if len(named) > 1:
        return None
    by_text = _named_texts(answer_text, opts)
    return by_text.pop() if len(by_text) == 1 else None


def _last_position(hay: str, needle: str) -> int:
    """Index of the last occurrence of ``needle`` as whole words in ``hay`` (-1 when absent)."""
    hits = [m.start() for m in re.finditer(rf"(?<!\w){re.escape(needle)}(?!\w)", hay)]
    return hits[-1] if hits else -1


def find_choice_anywhere(
    text: Any, options: Mapping[str, str | None] | Sequence[str], *, prefilled_think: bool = False, tags: Tags = DEFAULT_TAGS
) -> str | None:
    """Lenient letter extraction over the whole completion, tags or not; for the named *lenient* score.

    Rules, in order (after the scorer of HuatuoGPT-o1, Chen et al. 2024, repository
    FreedomIntelligence/HuatuoGPT-o1, ``evaluation/scorer.py``, ``match_choice``):

    1. the ANSWER block, read by :func:`extract_choice` (the primary reading);
    2. only the text after the last closing THINK tag is read when there is any (the scorer cuts
       at ``</think>`` / "## Final Response" the same way);
    3. the last "answer is X" statement (``:`` or ``(`` allowed; a capital option letter, or a
       lower-case one only where it ends the statement: "the answer is: b" is B, "the answer is a
       vitamin deficiency" is not option A);
    4. the last option letter standing alone: a capital letter among the options with no letter or
       digit either side (the scorer's "non strict" rule), where ``A`` followed by a space is read
       as the article, not option A (as in the scorer), and so is the pronoun ``I`` (an addition:
       with ten options the scorer reads "I think" as option I);
    5. the option whose text (case-insensitive, whole words) occurs last.

    Differences from the scorer, on purpose: the *last* match is taken (the scorer computes first
    and last and keeps whichever scores higher over the data set, an optimistic choice); a bare
    letter must stand alone as a word ("answer is Aspirin" is not option A); and when nothing
    matches the result is ``None``, where the scorer falls back to the option most similar to
    the whole output (``difflib``), which is a guess rather than a reading.

    Returns:
        The letter, or ``None``. Never raises.
    """
    s = completion_text(text)
    parsed = parse_completion(s, prefilled_think=prefilled_think, tags=tags)
    letter = extract_choice(parsed.answer, options)
    if letter:
        return letter
    try:
        opts = normalise_options(options)
    except (ValueError, TypeError):
        return None
    letters = "".join(opts)
    cut = s.rfind(tags.think_close)
    if cut != -1 and s[cut + len(tags.think_close) :].strip():
        s = s[cut + len(tags.think_close) :]
    for tag in tags.all:
        s = s.replace(tag, " ")
    stated = re.findall(rf"(?i:answer is)\s*:?\s*[\(\[]?(?:([{letters}])(?![A-Za-z0-9])|([{letters.lower()}])(?=[\)\]]|[.,;:]?\s*(?:\n|$)))", s)
    if stated:
        return (stated[-1][0] or stated[-1][1]).upper()
    alone = re.findall(rf"(?<![A-Za-z0-9])(?!A |I )([{letters}])(?![A-Za-z0-9])", s)
    if alone:
        return alone[-1]
    low = s.lower()
    positions = {L: _last_position(low, t.lower()) for L, t in opts.items()}
    found = {L: p for L, p in positions.items() if p >= 0}
    if found:
        return max(found, key=lambda L: (found[L], len(opts[L])))
    return None


#: Leading markup a plain answer may open with: markdown bold/heading marks and an "Answer:" label.
_PLAIN_LEAD = re.compile(r"^(?:[\s*#>_]|(?i:(?:final\s+|correct\s+)?answer\s*(?:is)?\s*:?))*")


def plain_choice(text: Any, options: Mapping[str, str | None] | Sequence[str], *, tags: Tags = DEFAULT_TAGS) -> str | None:
    r"""The option letter a free answer names: the *plain reading*, for completions of the plain
    prompt (``prompts.mcq_prompt(..., plain=True)``: the model's own chat template, "Answer with
    the letter of the correct option.", no grammar asked for).

    Rules, in order; the first that reads a letter wins:

    1. the answer opens with an option label (after leading whitespace, markdown ``*``/``#`` and an
       "Answer:" / "Final answer is" lead): ``B``, ``B.``, ``B)``, ``(B)``, ``B:``, ``**B**``, ``B - text``
       (:func:`extract_choice`'s label rules on the first line), so "B) Hypertension" is B;
       a leading article is not a label: "A patient with ..." is not option A;
    2. the first statement "answer is X" / "answer: X" / "Final Answer: X" (case-insensitive
       keyword, capital option letter, optional ``**`` or bracket before it; "the answer is a
       vitamin" is not option A, and "Answer B is wrong" states nothing). This is lm-eval-harness's
       MedQA answer regex, ``Final Answer:\s*(?:\*\*)?\s*([A-D])`` with its ``take_first`` filter
       (EleutherAI/lm-evaluation-harness, ``lm_eval/tasks/medqa/medqa_4options_cot.yaml``), widened
       to "answer is" / "answer:" without "Final" and to every option letter of the item;
    3. :func:`find_choice_anywhere` (after HuatuoGPT-o1's ``evaluation/scorer.py`` ``match_choice``):
       the ANSWER block if there is one, the last "answer is X", the last option letter standing
       alone (not the article "A " nor the pronoun "I "), so "I think (C)" is C; else the option
       whose text occurs last.

    The first stated answer wins over later ones (rules 1-2, as lm-eval's ``take_first``): a plain
    answer states its letter and then explains, and the explanation names other options. This is
    the fair reading of the plain prompt; the suite's prompt is read by the ``<ANSWER>`` block only
    (:func:`choice_from_completion`), as the reward reads it.

    Returns:
        The letter, or ``None``. Never raises.
    """
    s = completion_text(text)
    try:
        opts = normalise_options(options)
    except (ValueError, TypeError):
        return None
    letters = "".join(opts)
    body = s
    for tag in tags.all:
        body = body.replace(tag, " ")
    first_line = next((line for line in body.splitlines() if line.strip(" \t*#>_")), "")
    lead = _PLAIN_LEAD.sub("", first_line, count=1).replace("**", "").replace("__", "")
    for pat in _letter_patterns(letters)[:2]:
        m = pat.search(lead)
        if m:
            return m.group(1).upper()
    stated = re.search(rf"(?i:answer)(?:\s+(?i:is)\s*:?|\s*:)\s*(?:\*\*)?\s*[\(\[]?([{letters}])(?![A-Za-z0-9])", body)
    if stated:
        return stated.group(1)
    return find_choice_anywhere(s, opts, tags=tags)


def choice_from_completion(
    completion: Any,
    options: Mapping[str, str | None] | Sequence[str],
    *,
    prefilled_think: bool = False,
    tags: Tags = DEFAULT_TAGS,
) -> tuple[str | None, ParsedCompletion]:
    """The primary multiple-choice reading of a completion, shared by ``mcq_exact_match_reward`` and evaluation.

    Returns ``(letter or None, parsed)``: the letter comes from the ANSWER block only
    (``extract_choice(parse_completion(completion).answer, options)``), whatever the format.
    """
    parsed = parse_completion(completion, prefilled_think=prefilled_think, tags=tags)
    return extract_choice(parsed.answer, options), parsed
