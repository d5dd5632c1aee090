"""Medical multiple-choice benchmarks, each defined here and nowhere else: where it lives, how its rows read.

Each benchmark is a :class:`BenchmarkSpec`: its hub id, config and split, the row layout
(a key of :data:`MCQ_LAYOUTS`, defined in this module) and an optional row filter (MMLU's medical
subjects, MMLU-Pro's health and biology categories, GPQA's biology questions, PubMedQA's
official test subset). :func:`load_benchmark` reads the hub (online) or a local file with the
hub's columns (offline), and returns items ready for :func:`medreason_utils.evaluation.evaluate_models`:

``id``, ``question``, ``options`` (``{letter: text}``), ``answer`` (gold letter), ``answer_text``,
``subject``, ``prompt`` (the suite's prompt: system prompt with the response grammar) and
``prompt_plain`` (``mcq_prompt(..., plain=True)``: no system prompt, "answer with the letter":
scores a base model with its own chat template and no grammar). Decontamination against
training data is :mod:`medreason_utils.evaluation.decontamination`.

Benchmarks (item counts of the full sets):

=====================  ==================================  =============  ======
name                   hub id (config)                     split          items
=====================  ==================================  =============  ======
medqa                  GBaker/MedQA-USMLE-4-options        test           1,273
medmcqa                openlifescienceai/medmcqa           validation     4,183
pubmedqa               qiaojin/PubMedQA (pqa_labeled)      train          1,000
pubmedqa_test          the same, ``is_official_test`` rows train            500
mmlu_medical           cais/mmlu (all), six subjects       test           1,089
medxpertqa             TsinghuaC3I/MedXpertQA (Text)       test           2,450
mmlu_pro_health_bio    TIGER-Lab/MMLU-Pro, health+biology  test           1,535
gpqa_biology           Idavidrein/gpqa (gpqa_main)         train            78
=====================  ==================================  =============  ======

PubMedQA's official test subset is the 500 pqa_labeled ids of the PubMedQA repository's
``data/test_ground_truth.json`` (Jin et al. 2019); the hub's ``pqa_labeled`` split does not mark
them, so online that benchmark needs ``test_ids`` or a file with an ``is_official_test`` column.
GPQA is gated on the hub (accept its terms, then an ``HF_TOKEN``).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..data import DataError, MappingReport, OnBadRow, load_rows, map_rows, require_field
from ..parsing import normalize_answer
from ..prompts import DEFAULT_TAGS, OPTION_LETTERS, Tags, mcq_prompt, normalise_options

__all__ = [
    "BenchmarkSpec",
    "BENCHMARKS",
    "MCQ_LAYOUTS",
    "PUBMEDQA_OPTIONS",
    "MMLU_MEDICAL_SUBJECTS",
    "columns_layout",
    "to_mcq_items",
    "load_benchmark",
    "select_items",
]

#: The six MMLU subjects medical LLM papers report (Singhal et al. 2023, Med-PaLM, Table 1 "MMLU clinical topics").
MMLU_MEDICAL_SUBJECTS = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)


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


# ---------------------------------------------------------------------------------------------
# The benchmarks: where each lives, which layout and filter
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives and how its rows read.

    Attributes:
        hub_id, config, split: for ``datasets.load_dataset``.
        layout: key of :data:`MCQ_LAYOUTS` (or a layout function).
        row_filter: keeps a raw row when it returns True (None keeps all).
        local_file: the file name of this benchmark in the project's shared data folder (hub layout).
        n_full: items in the full set after the filter (documentation and a check in tests).
    """

    name: str
    hub_id: str
    config: str | None
    split: str
    layout: str | Callable
    row_filter: Callable[[Mapping], bool] | None = None
    local_file: str | None = None
    n_full: int | None = None
    description: str = ""


def _mmlu_medical(row: Mapping) -> bool:
    return row.get("subject") in MMLU_MEDICAL_SUBJECTS


def _mmlu_pro_health_bio(row: Mapping) -> bool:
    return str(row.get("category", "")).lower() in ("health", "biology")


def _gpqa_biology(row: Mapping) -> bool:
    return str(row.get("High-level domain", "")).strip().lower() == "biology"


def _pubmedqa_official(row: Mapping) -> bool:
    flag = row.get("is_official_test")
    if flag is None:
        raise DataError(
            "pubmedqa_test: the rows have no 'is_official_test' column (the hub's pqa_labeled does not mark the "
            "500-item test set); pass test_ids= with the ids of PubMedQA's data/test_ground_truth.json"
        )
    return bool(flag)


BENCHMARKS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in [
        BenchmarkSpec("medqa", "GBaker/MedQA-USMLE-4-options", None, "test", "medqa", None,
                      "medqa_usmle_4options_test.jsonl", 1273, "MedQA-USMLE, 4 options"),
        BenchmarkSpec("medmcqa", "openlifescienceai/medmcqa", None, "validation", "medmcqa", None,
                      "medmcqa_validation.jsonl", 4183, "MedMCQA validation (the test set has no answers)"),
        BenchmarkSpec("pubmedqa", "qiaojin/PubMedQA", "pqa_labeled", "train", "pubmedqa", None,
                      "pubmedqa_pqa_labeled.jsonl", 1000, "PubMedQA labeled, yes/no/maybe with the abstract"),
        BenchmarkSpec("pubmedqa_test", "qiaojin/PubMedQA", "pqa_labeled", "train", "pubmedqa", _pubmedqa_official,
                      "pubmedqa_pqa_labeled.jsonl", 500, "PubMedQA official 500-item test subset"),
        BenchmarkSpec("mmlu_medical", "cais/mmlu", "all", "test", "mmlu", _mmlu_medical,
                      "mmlu_medical_test.jsonl", 1089, "MMLU, six medical subjects"),
        BenchmarkSpec("medxpertqa", "TsinghuaC3I/MedXpertQA", "Text", "test", "medxpertqa", None,
                      "medxpertqa_text_test.jsonl", 2450, "MedXpertQA Text, ten options"),
        BenchmarkSpec("mmlu_pro_health_bio", "TIGER-Lab/MMLU-Pro", None, "test", "mmlu_pro", _mmlu_pro_health_bio,
                      None, None, "MMLU-Pro health and biology, up to ten options"),
        BenchmarkSpec("gpqa_biology", "Idavidrein/gpqa", "gpqa_main", "train", "gpqa", _gpqa_biology,
                      None, None, "GPQA main, biology domain (gated on the hub)"),
    ]
}

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


def select_items(items: Sequence[Mapping], limit: int | None = None, seed: int | None = 0) -> list[dict]:
    """A reproducible subset: ``limit`` items drawn with ``random.Random(seed)`` and kept in data
    order; ``seed=None`` takes the first ``limit``. ``limit=None`` (or >= len) keeps all."""
    items = [dict(it) for it in items]
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if seed is None:
        return items[:limit]
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def load_benchmark(
    name: str | BenchmarkSpec,
    source: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    seed: int | None = 0,
    test_ids: Iterable[Any] | None = None,
    tags: Tags = DEFAULT_TAGS,
    system: str | None = None,
    on_bad_row: OnBadRow = "raise",
) -> tuple[list[dict], MappingReport]:
    """Load one benchmark as evaluation items.

    Args:
        name: a key of :data:`BENCHMARKS` or a :class:`BenchmarkSpec` (for another set, e.g. with
            ``layout=columns_layout(...)``).
        source: a local JSON/JSONL/CSV/Parquet file with the hub's columns, ``"sample:NAME"``, or
            another hub id; default: ``data_dir/spec.local_file`` when ``data_dir`` is given and
            holds it, else the spec's hub id.
        limit, seed: a fixed-seed subset (:func:`select_items`), drawn after the filter.
        test_ids: PubMedQA official test ids (pubids) when the rows have no ``is_official_test``.

    Returns:
        ``(items, report)``: a list of dicts (see the module docstring) and the
        :class:`MappingReport` of the rows kept and skipped (``on_bad_row="skip"``).

    Raises:
        KeyError: unknown benchmark name. DataError: a bad row (``on_bad_row="raise"``).
        Whatever ``datasets.load_dataset`` raises offline for a hub id.
    """
    if isinstance(name, BenchmarkSpec):
        spec = name
    elif name in BENCHMARKS:
        spec = BENCHMARKS[name]
    else:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    if source is None and data_dir is not None and spec.local_file and (Path(data_dir) / spec.local_file).is_file():
        source = Path(data_dir) / spec.local_file
    if source is None:
        rows = load_rows(spec.hub_id, config=spec.config, split=spec.split)
    else:
        rows = load_rows(source, config=spec.config, split=spec.split)
    row_filter = spec.row_filter
    if test_ids is not None:
        wanted = {str(t) for t in test_ids}
        row_filter = lambda r: str(r.get("pubid", r.get("id"))) in wanted  # noqa: E731
    if row_filter is not None:
        rows = [r for r in rows if row_filter(r)]
    layout = spec.layout
    if isinstance(layout, str) and layout not in MCQ_LAYOUTS:
        raise KeyError(f"benchmark {spec.name}: unknown layout {layout!r}; known: {sorted(MCQ_LAYOUTS)}")
    ds, report = to_mcq_items(rows, layout, tags=tags, system=system, on_bad_row=on_bad_row, source=spec.name)
    items = []
    for it in ds:
        opts = {k: v for k, v in it["options"].items() if v is not None}
        it["options"] = opts
        it["benchmark"] = spec.name
        items.append(it)
    return select_items(items, limit, seed), report
