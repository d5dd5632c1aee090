"""Row layouts: how each benchmark's or training source's rows read, and the items they become.

Moved here from ``evaluation/benchmarks.py`` so that evaluation and GRPO training read rows the same way
without training importing evaluation (:mod:`medreason_utils.tasks`). A multiple-choice layout is a function
``(row, source, index) -> (question, options, gold_letter, extra)``; :func:`to_mcq_items` turns rows into items
with the suite's prompt. Bad rows raise :class:`~medreason_utils.data.DataError` naming the source, row and field.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..data import DataError, OnBadRow, map_rows, require_field
from ..parsing import normalize_answer
from ..prompts import DEFAULT_TAGS, OPTION_LETTERS, Tags, mcq_prompt, normalise_options

__all__ = ["MCQ_LAYOUTS", "PUBMEDQA_OPTIONS", "OPEN_COLUMNS", "columns_layout", "to_mcq_items"]

#: The columns of an open-ended verifiable row (FreedomIntelligence/medical-o1-verifiable-problem).
OPEN_COLUMNS = ("Open-ended Verifiable Question", "Ground-True Answer")


# ---------------------------------------------------------------------------------------------
# Row layouts: how each benchmark's rows read
# ---------------------------------------------------------------------------------------------


def _medqa_layout(row: Mapping, source: str, i: int) -> tuple[str, dict, str, dict]:
    q = require_field(row, "question", source, i)
    options = row.get("options")
    if not options:
        raise DataError(f"{source} row {i}: field 'options' is missing or empty")
    if isinstance(options, str):  # some exports keep the dict as a JSON/Python literal
        import ast

        try:
            options = ast.literal_eval(options)
        except (ValueError, SyntaxError) as exc:
            raise DataError(f"{source} row {i}: field 'options' is not a mapping: {options[:80]!r}") from exc
    letter = require_field(row, "answer_idx", source, i).upper()
    return q, options, letter, {"subject": row.get("meta_info")}


def _medmcqa_layout(row: Mapping, source: str, i: int) -> tuple[str, dict, str, dict]:
    q = require_field(row, "question", source, i)
    options = {L: require_field(row, f"op{L.lower()}", source, i) for L in "ABCD"}
    cop = row.get("cop")
    try:
        cop_i = int(cop)
    except (TypeError, ValueError):
        raise DataError(f"{source} row {i}: field 'cop' must be an integer 0-3, got {cop!r}") from None
    if not 0 <= cop_i <= 3:
        raise DataError(f"{source} row {i}: field 'cop' must be 0-3, got {cop_i}")
    return q, options, "ABCD"[cop_i], {"subject": row.get("subject_name"), "id": row.get("id")}


def _index_letter(value: Any, n_options: int, field_name: str, source: str, i: int) -> str:
    try:
        idx = int(value)
    except (TypeError, ValueError):
        raise DataError(f"{source} row {i}: field {field_name!r} must be an integer 0-{n_options - 1}, got {value!r}") from None
    if not 0 <= idx < n_options:
        raise DataError(f"{source} row {i}: field {field_name!r} must be 0-{n_options - 1}, got {idx}")
    return OPTION_LETTERS[idx]


def _mmlu_layout(row: Mapping, source: str, i: int) -> tuple[str, Any, str, dict]:
    """cais/mmlu: ``question``, ``choices`` (list of 4), ``answer`` (0-3), ``subject``."""
    q = require_field(row, "question", source, i)
    choices = require_field(row, "choices", source, i)
    if not isinstance(choices, (list, tuple)):
        raise DataError(f"{source} row {i}: field 'choices' must be a list, got {type(choices).__name__}")
    return q, list(choices), _index_letter(row.get("answer"), len(choices), "answer", source, i), {"subject": row.get("subject")}


_ANSWER_CHOICES = re.compile(r"\n\s*Answer Choices:.*\Z", flags=re.S)


def _medxpertqa_layout(row: Mapping, source: str, i: int) -> tuple[str, Any, str, dict]:
    """TsinghuaC3I/MedXpertQA (Text): ``question`` (ends with 'Answer Choices: (A) ...', cut here
    because the prompt renders the options), ``options`` (A-J), ``label``, ``medical_task``."""
    q = _ANSWER_CHOICES.sub("", require_field(row, "question", source, i)).strip()
    options = require_field(row, "options", source, i)
    return q, options, require_field(row, "label", source, i), {"subject": row.get("medical_task"), "id": row.get("id")}


#: PubMedQA's three answers, as options A-C.
PUBMEDQA_OPTIONS = {"A": "yes", "B": "no", "C": "maybe"}


def _pubmedqa_layout(row: Mapping, source: str, i: int) -> tuple[str, Any, str, dict]:
    """qiaojin/PubMedQA pqa_labeled: ``question``, ``context.contexts`` (abstract without its
    conclusion, given as context), ``final_decision`` yes/no/maybe -> options A/B/C."""
    q = require_field(row, "question", source, i)
    ctx = row.get("context")
    parts = ctx.get("contexts") if isinstance(ctx, Mapping) else ctx
    if isinstance(parts, str):
        parts = [parts]
    if not parts:
        raise DataError(f"{source} row {i}: field 'context.contexts' is missing or empty")
    decision = require_field(row, "final_decision", source, i).lower()
    letters = {v: k for k, v in PUBMEDQA_OPTIONS.items()}
    if decision not in letters:
        raise DataError(f"{source} row {i}: field 'final_decision' must be yes/no/maybe, got {decision!r}")
    extra = {"context": "\n".join(str(p) for p in parts), "id": row.get("pubid")}
    return q, dict(PUBMEDQA_OPTIONS), letters[decision], extra


def _mmlu_pro_layout(row: Mapping, source: str, i: int) -> tuple[str, Any, str, dict]:
    """TIGER-Lab/MMLU-Pro: ``question``, ``options`` (list of up to 10), ``answer`` letter
    (or ``answer_index``), ``category``, ``question_id``."""
    q = require_field(row, "question", source, i)
    options = require_field(row, "options", source, i)
    if not isinstance(options, (list, tuple)):
        raise DataError(f"{source} row {i}: field 'options' must be a list, got {type(options).__name__}")
    letter = row.get("answer")
    if not (isinstance(letter, str) and letter.strip()):
        letter = _index_letter(row.get("answer_index"), len(options), "answer_index", source, i)
    return q, list(options), letter, {"subject": row.get("category"), "id": row.get("question_id")}


def _gpqa_layout(row: Mapping, source: str, i: int) -> tuple[str, Any, str, dict]:
    """Idavidrein/gpqa: ``Question``, ``Correct Answer``, ``Incorrect Answer 1-3``,
    ``Subdomain``, ``Record ID``. GPQA ships the answers unordered; they are placed in an order
    fixed by a hash of the record id (or question), so every run and every model sees the same
    letters."""
    import hashlib
    import random

    q = require_field(row, "Question", source, i)
    answers = [require_field(row, "Correct Answer", source, i)] + [require_field(row, f"Incorrect Answer {k}", source, i) for k in (1, 2, 3)]
    key = str(row.get("Record ID") or q)
    order = list(range(4))
    random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)).shuffle(order)
    options = [answers[j] for j in order]
    return q, options, OPTION_LETTERS[order.index(0)], {"subject": row.get("Subdomain"), "id": row.get("Record ID")}


#: Row layouts of multiple-choice datasets: name -> function(row, source, index) -> (question, options, letter, extra).
#: ``extra`` may hold ``subject``, ``id`` and ``context`` (shown before the question).
MCQ_LAYOUTS: dict[str, Callable[[Mapping, str, int], tuple[str, Any, str, dict]]] = {
    "medqa": _medqa_layout,  # GBaker/MedQA-USMLE-4-options; also the medical-o1 MCQ sample
    "medmcqa": _medmcqa_layout,  # openlifescienceai/medmcqa
    "mmlu": _mmlu_layout,  # cais/mmlu
    "medxpertqa": _medxpertqa_layout,  # TsinghuaC3I/MedXpertQA, config Text
    "pubmedqa": _pubmedqa_layout,  # qiaojin/PubMedQA, config pqa_labeled
    "mmlu_pro": _mmlu_pro_layout,  # TIGER-Lab/MMLU-Pro
    "gpqa": _gpqa_layout,  # Idavidrein/gpqa
}


def to_mcq_items(
    rows: Iterable[Mapping],
    layout: str | Callable[[Mapping, str, int], tuple[str, Any, str, dict]],
    *,
    tags: Tags = DEFAULT_TAGS,
    system: str | None = None,
    on_bad_row: OnBadRow = "raise",
    source: str | None = None,
):
    """Map multiple-choice rows to items with a prompt.

    Args:
        layout: a key of :data:`MCQ_LAYOUTS` or a function ``(row, source, index) -> (question,
            options, gold_letter, extra_fields)``.

    Returns ``(dataset, report)``; columns ``id`` (row index unless the data has one),
    ``question``, ``options`` (``{letter: text}``), ``answer`` (gold letter), ``answer_text``,
    ``subject`` (or None), ``context`` (or None; e.g. a PubMedQA abstract), ``prompt`` (conversational, the
    suite's grammar) and ``prompt_plain`` (the model's own chat template, no grammar; ``mcq_prompt(plain=True)``).
    A gold letter not among the options is a bad row.
    """
    if isinstance(layout, str):
        if layout not in MCQ_LAYOUTS:
            raise KeyError(f"unknown multiple-choice layout {layout!r}; known: {sorted(MCQ_LAYOUTS)}")
        layout_fn = MCQ_LAYOUTS[layout]
        src = source or layout
    else:
        layout_fn, src = layout, source or getattr(layout, "__name__", "mcq data")

    def fn(row: Mapping, i: int) -> dict:
        q, options, letter, extra = layout_fn(row, src, i)
        opts = normalise_options(options)
        letter = str(letter).strip().upper()
        if letter not in opts:
            raise DataError(f"{src} row {i}: answer letter {letter!r} is not among the options {list(opts)}")
        item = {
            "id": str(extra.get("id") if extra.get("id") is not None else i),
            "question": q,
            # letters A up to the last one used (at least A-D, so 4- and 5-option rows share columns)
            "options": {L: opts.get(L) for L in OPTION_LETTERS[: max(4, OPTION_LETTERS.index(max(opts)) + 1)]},
            "answer": letter,
            "answer_text": opts[letter],
            "subject": extra.get("subject"),
            "context": extra.get("context"),
            "prompt": mcq_prompt(q, opts, tags=tags, system=system, context=extra.get("context")),
            "prompt_plain": mcq_prompt(q, opts, context=extra.get("context"), plain=True),
        }
        return item

    return map_rows(rows, fn, src, on_bad_row)


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def columns_layout(
    question: str,
    options: str | Sequence[str],
    answer: str,
    *,
    answer_format: str = "auto",
    subject: str | None = None,
    context: str | None = None,
    id: str | None = None,
) -> Callable[[Mapping, str, int], tuple[str, Any, str, dict]]:
    """A layout for any multiple-choice set, by naming its columns.

    Args:
        question: column of the question text.
        options: one column holding a ``{letter: text}`` dict or a list of texts, or a list of
            columns (one option each, lettered A, B, ... in the order given).
        answer: column of the gold answer.
        answer_format: ``"letter"`` (A-J), ``"index"`` (0-based integer), ``"text"`` (the option's
            text, compared after ``normalize_answer``), or ``"auto"`` (an int is an index, a single
            letter among the options a letter, otherwise text).
        subject, context, id: optional columns.

    Returns:
        A layout function for :func:`to_mcq_items` / :func:`load_benchmark`.
        A row whose answer cannot be read raises :class:`DataError` naming row and column.
    """
    if answer_format not in ("auto", "letter", "index", "text"):
        raise ValueError(f"answer_format must be auto, letter, index or text, got {answer_format!r}")

    def layout(row: Mapping, source: str, i: int) -> tuple[str, Any, str, dict]:
        for col in [question, answer] + ([options] if isinstance(options, str) else list(options)):
            if col not in row:
                raise DataError(f"{source} row {i}: column {col!r} is missing (columns: {sorted(row)})")
        q = row[question]
        if _is_blank(q):
            raise DataError(f"{source} row {i}: column {question!r} is empty")
        opts_raw = row[options] if isinstance(options, str) else [row[c] for c in options]
        try:
            opts = normalise_options(opts_raw)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{source} row {i}: options {options!r}: {exc}") from None
        gold = row[answer]
        fmt = answer_format
        if fmt == "auto":
            if isinstance(gold, int) and not isinstance(gold, bool):
                fmt = "index"
            elif isinstance(gold, str) and gold.strip().upper() in opts and len(gold.strip()) == 1:
                fmt = "letter"
            else:
                fmt = "text"
        if fmt == "index":
            try:
                letter = OPTION_LETTERS[int(gold)]
            except (TypeError, ValueError, IndexError):
                raise DataError(f"{source} row {i}: column {answer!r} is not a 0-based option index: {gold!r}") from None
        elif fmt == "letter":
            letter = str(gold).strip().upper()
        else:
            matches = [L for L, t in opts.items() if normalize_answer(t) == normalize_answer(str(gold))]
            if len(matches) != 1:
                raise DataError(f"{source} row {i}: column {answer!r} text {str(gold)[:60]!r} matches {len(matches)} options")
            letter = matches[0]
        extra = {k: row.get(col) for k, col in (("subject", subject), ("context", context), ("id", id)) if col}
        return str(q), opts, letter, extra

    return layout
