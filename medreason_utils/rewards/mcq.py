"""Multiple-choice reward: exact match of the option letter, read as the evaluation reads it."""

from __future__ import annotations

from typing import Any, Sequence

from ..parsing import choice_from_completion, normalize_answer, parse_completion
from ..prompts import DEFAULT_TAGS, Tags
from .base import RewardFunc, has_options, named

__all__ = ["make_mcq_exact_match_reward", "mcq_exact_match_reward"]

_DOC = """Exact match of the option letter in the {answer_open} block: {value} if right, 0.0 if wrong or none.

    A completion with more than one {answer_open} tag, or whose answer negates the option it names
    ("not measles"), names no option (0.0).

    The letter is read by ``choice_from_completion`` (the evaluation's exact match reads it the
    same way) and compared with the gold letter in the dataset column ``{answer_key}``; the
    options come from the column ``{options_key}`` (``{{letter: text}}`` or a list of texts).
    Rows without options (open-ended items), or without these columns, give ``None``.

    Args:
        completions: plain strings or conversational completions, as TRL passes them.
        {answer_key}, {options_key}: dataset columns, one value per completion (TRL passes them).

    Returns:
        ``list[float | None]``: {value} or 0.0 per completion, ``None`` where not applicable.

    Raises:
        ValueError: a column holds a different number of values than there are completions.
        Malformed completions never raise.

    Example:
    >>> options = {{"A": "Measles", "B": "Rubella"}}
    >>> {name}(["{ok}", "{bad}"],
    ...        {answer_key}=["A", "A"], {options_key}=[options, options])
    [{value}, 0.0]
    """


def _hedged_or_negated(completion: Any, options: Any, letter: str, prefilled_think: bool, tags: Tags) -> bool:
    """Whether the completion has several ANSWER blocks, or its answer negates the option it names
    ("not measles" is not option A "Measles"); see ``docs/reward-hacking.md``."""
    from ..prompts import normalise_options
    from ..verifiers.rule import RuleBasedVerifier

    parsed = parse_completion(completion, prefilled_think=prefilled_think, tags=tags)
    if parsed.tag_counts.get(tags.answer_open, 0) > 1:
        return True
    text = normalise_options(options).get(letter) or ""
    targets = [t for t in (normalize_answer(text), letter.lower()) if t]
    return RuleBasedVerifier._negated(normalize_answer(parsed.answer or ""), targets)


def make_mcq_exact_match_reward(
    value: float = 1.0,
    *,
    answer_key: str = "answer",
    options_key: str = "options",
    prefilled_think: bool = False,
    tags: Tags = DEFAULT_TAGS,
    name: str = "mcq_exact_match_reward",
) -> RewardFunc:
    """Exact match of the option letter in the ANSWER block: ``value`` if right, 0.0 if wrong or none.

    Uses :func:`~medreason_utils.parsing.choice_from_completion`, the same reading as the
    evaluation's exact match. Rows without options (open-ended items), or without the
    ``answer_key``/``options_key`` columns, give ``None``. Range {0, value} or ``None``.

    Raises (from the returned function) ``ValueError`` naming the column when a column holds a
    different number of values than there are completions. Malformed completions never raise.
    """

    def mcq_exact_match_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        n = len(completions)
        columns = {}
        for key in (answer_key, options_key):
            values = kwargs.get(key)
            values = [None] * n if values is None else list(values)
            if len(values) != n:
                raise ValueError(f"{name}: column {key!r} has {len(values)} values for {n} completions")
            columns[key] = values
        golds, options = columns[answer_key], columns[options_key]
        out: list[float | None] = []
        for c, gold, opts in zip(completions, golds, options):
            if not has_options(opts) or not isinstance(gold, str) or not gold.strip():
                out.append(None)
                continue
            try:
                letter, _ = choice_from_completion(c, opts, prefilled_think=prefilled_think, tags=tags)
            except (ValueError, TypeError):  # options that are no options (all empty, bad keys): not applicable
                out.append(None)
                continue
            if letter is not None and _hedged_or_negated(c, opts, letter, prefilled_think, tags):
                letter = None
            out.append(float(value) if letter is not None and letter == gold.strip().upper() else 0.0)
        return out

    think = "" if prefilled_think else tags.think_open
    ok = f"{think}Koplik spots.{tags.think_close}{tags.answer_open}A. Measles{tags.answer_close}"
    bad = f"{think}Rash.{tags.think_close}{tags.answer_open}B{tags.answer_close}"
    doc = _DOC.format(value=float(value), name=name, answer_key=answer_key, options_key=options_key, answer_open=tags.answer_open,
                      ok=ok, bad=bad)
    return named(mcq_exact_match_reward, name, doc=doc, value=value, prefilled_think=prefilled_think, tags=tags)


mcq_exact_match_reward = make_mcq_exact_match_reward()
