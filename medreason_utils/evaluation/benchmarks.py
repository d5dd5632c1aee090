"""Medical multiple-choice benchmarks: loaders, prompts, fixed-seed subsets and decontamination.

Each benchmark is a :class:`BenchmarkSpec`: its hub id, config and split, the row layout
(a key of :data:`medreason_utils.data.MCQ_LAYOUTS`) and an optional row filter (MMLU's medical
subjects, MMLU-Pro's health and biology categories, GPQA's biology questions, PubMedQA's
official test subset). :func:`load_benchmark` reads the hub (online) or a local file with the
hub's columns (offline), and returns items ready for :func:`medreason_utils.evaluation.evaluate_models`:

``id``, ``question``, ``options`` (``{letter: text}``), ``answer`` (gold letter), ``answer_text``,
``subject``, ``prompt`` (the suite's prompt: system prompt with the response grammar) and
``prompt_plain`` (no system prompt, "answer with the letter": scores a base model with its own
chat template and no grammar).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..data import DataError, MappingReport, MCQ_LAYOUTS, OnBadRow, load_rows, to_mcq_items
from ..parsing import normalize_answer
from ..prompts import DEFAULT_TAGS, OPTION_LETTERS, Tags, normalise_options, render_options

__all__ = [
    "BenchmarkSpec",
    "BENCHMARKS",
    "MMLU_MEDICAL_SUBJECTS",
    "PLAIN_INSTRUCTION",
    "plain_mcq_prompt",
    "columns_layout",
    "load_benchmark",
    "load_benchmarks",
    "select_items",
    "Overlap",
    "find_overlaps",
    "decontaminate",
    "drop_overlapping_items",
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


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives and how its rows read.

    Attributes:
        hub_id, config, split: for ``datasets.load_dataset``.
        layout: key of ``MCQ_LAYOUTS`` (or a layout function).
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

#: Instruction of the plain prompt (no grammar): the model's own chat template, no system prompt.
PLAIN_INSTRUCTION = "Answer with the letter of the correct option."


def plain_mcq_prompt(question: str, options: Mapping[str, str | None] | Sequence[str], *, context: str | None = None) -> list[dict]:
    """A grammar-free prompt: one user message (context, question, ``A. text`` options,
    :data:`PLAIN_INSTRUCTION`), no system prompt. Scores a base model with its own chat template
    so the gain of training is not confused with the gain of the suite's template."""
    parts = [f"Context: {context.strip()}"] if context else []
    parts += [question.strip(), render_options(options), PLAIN_INSTRUCTION]
    return [{"role": "user", "content": "\n\n".join(parts)}]


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
        A layout function for :func:`medreason_utils.data.to_mcq_items` / :func:`load_benchmark`.
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
        it["prompt_plain"] = plain_mcq_prompt(it["question"], opts, context=it.get("context"))
        items.append(it)
    return select_items(items, limit, seed), report


def load_benchmarks(names: Sequence[str], *, data_dir: str | Path | None = None, limit: int | None = None, seed: int | None = 0,
                    **kwargs: Any) -> dict[str, list[dict]]:
    """Several benchmarks by name: ``{name: items}`` (same ``limit``/``seed`` subset rule each)."""
    return {n: load_benchmark(n, data_dir=data_dir, limit=limit, seed=seed, **kwargs)[0] for n in names}


# ---------------------------------------------------------------------------------------------
# Decontamination
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overlap:
    """A training row whose question overlaps an evaluation item.

    ``kind`` is ``"exact"`` (same text after :func:`normalize_answer`) or ``"ngram"`` (they
    share at least one ``n``-word sequence); ``shared`` is the overlapping text (first n-gram)."""

    train_index: int
    benchmark: str
    eval_id: str
    kind: str
    shared: str = field(default="", repr=False)


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[k : k + n]) for k in range(len(words) - n + 1)}


def find_overlaps(
    train_questions: Sequence[str], eval_items: Mapping[str, Sequence[Mapping]] | Sequence[Mapping], *, ngram: int | None = 13
) -> list[Overlap]:
    """Training questions that overlap evaluation items.

    Texts are compared after :func:`normalize_answer` (lower case, no punctuation or articles).
    Exact: equal texts. N-gram: at least one shared sequence of ``ngram`` words (13, the
    contamination test of GPT-3, Brown et al. 2020, appendix C); ``ngram=None`` checks exact
    matches only. Questions shorter than ``ngram`` words are compared exactly only.

    Args:
        train_questions: question texts of the training rows (index = row index).
        eval_items: ``{benchmark: items}`` or one list of items (``question``, ``id``, ``benchmark``).

    Returns:
        One :class:`Overlap` per (training row, evaluation item) pair, exact ones first.
    """
    groups = eval_items.items() if isinstance(eval_items, Mapping) else [(None, eval_items)]
    exact: dict[str, list[tuple[str, str]]] = {}
    grams: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for bench, items in groups:
        for k, it in enumerate(items):
            b = bench or str(it.get("benchmark", ""))
            ref = (b, str(it.get("id", k)))
            words = normalize_answer(it["question"]).split()
            exact.setdefault(" ".join(words), []).append(ref)
            if ngram:
                for g in _ngrams(words, ngram):
                    grams.setdefault(g, []).append(ref)
    found: list[Overlap] = []
    for i, q in enumerate(train_questions):
        words = normalize_answer(q).split()
        seen = set()
        for ref in exact.get(" ".join(words), []):
            seen.add(ref)
            found.append(Overlap(i, ref[0], ref[1], "exact", " ".join(words)))
        if ngram:
            for g in _ngrams(words, ngram):
                for ref in grams.get(g, []):
                    if ref not in seen:
                        seen.add(ref)
                        found.append(Overlap(i, ref[0], ref[1], "ngram", " ".join(g)))
    return sorted(found, key=lambda o: (o.kind != "exact", o.train_index))


def decontaminate(
    train_rows: Sequence[Mapping],
    eval_items: Mapping[str, Sequence[Mapping]] | Sequence[Mapping],
    *,
    question_col: str = "Question",
    ngram: int | None = 13,
    drop: bool = True,
) -> tuple[list[dict], list[Overlap]]:
    """Report (and with ``drop=True`` remove) training rows whose question overlaps an evaluation item.

    Returns ``(rows, overlaps)``: the training rows kept (all of them when ``drop=False``) and
    the overlaps found (:func:`find_overlaps`). Raises :class:`DataError` naming the row that lacks
    ``question_col``.
    """
    rows = [dict(r) for r in train_rows]
    questions = []
    for i, r in enumerate(rows):
        if question_col not in r:
            raise DataError(f"training row {i}: column {question_col!r} is missing (columns: {sorted(r)})")
        questions.append(str(r[question_col] or ""))
    overlaps = find_overlaps(questions, eval_items, ngram=ngram)
    if drop:
        bad = {o.train_index for o in overlaps}
        rows = [r for i, r in enumerate(rows) if i not in bad]
    return rows, overlaps


def drop_overlapping_items(
    eval_items: Mapping[str, Sequence[Mapping]], overlaps: Sequence[Overlap]
) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """The other direction, when training is done: drop the evaluation items that a training
    question overlaps (from :func:`find_overlaps` on ``{benchmark: items}``).

    Returns ``(items, dropped)``: ``{benchmark: items kept}`` and ``{benchmark: number dropped}``.
    """
    bad = {(o.benchmark, o.eval_id) for o in overlaps}
    kept = {b: [dict(it) for it in its if (b, str(it.get("id"))) not in bad] for b, its in eval_items.items()}
    return kept, {b: len(eval_items[b]) - len(kept[b]) for b in eval_items}
