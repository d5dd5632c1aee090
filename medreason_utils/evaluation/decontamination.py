"""Decontamination: evaluation items that overlap training questions, reported and dropped."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence, Union

from ..data import DataError, load_rows, question_key, row_location

__all__ = ["Overlap", "QUESTION_COLUMNS", "DataSpec", "data_sources", "training_questions", "find_overlaps", "decontaminate",
           "drop_overlapping_items"]


@dataclass(frozen=True)
class Overlap:
    """A training row whose question overlaps an evaluation item.

    ``kind`` is ``"exact"`` (the same question, :func:`~medreason_utils.data.question_key`) or ``"ngram"`` (they
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

    Texts are compared after :func:`~medreason_utils.data.question_key` (lower case, no punctuation or articles).
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
            words = question_key(it["question"]).split()
            exact.setdefault(" ".join(words), []).append(ref)
            if ngram:
                for g in _ngrams(words, ngram):
                    grams.setdefault(g, []).append(ref)
    found: list[Overlap] = []
    for i, q in enumerate(train_questions):
        words = question_key(q).split()
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


#: Question columns of the training layouts, tried in this order: medical-o1-reasoning-SFT
#: (``Question``), medical-o1-verifiable-problem (``Open-ended Verifiable Question``), multiple
#: choice (``question``: MedQA/MedMCQA layouts, the medical-o1 MCQ sample).
QUESTION_COLUMNS = ("Question", "Open-ended Verifiable Question", "question")

#: A stage's ``data`` setting: one source, a list of sources, or ``{source: proportion}`` (mixing).
DataSpec = Union[str, Path, Sequence[Union[str, Path]], Mapping[str, float], None]


def data_sources(spec: DataSpec) -> list[str]:
    """The sources a stage's ``data`` setting names, in order: a source string (``sample:NAME``, a
    file, a hub id or a :data:`~medreason_utils.data.HUB_IDS` key) gives itself, a list its items,
    a mapping ``{source: proportion}`` (GRPO data mixing) its keys; ``None`` gives ``[]``.
    Raises ``TypeError`` for anything else."""
    if spec is None:
        return []
    if isinstance(spec, (str, Path)):
        return [str(spec)]
    if isinstance(spec, Mapping):
        return [str(k) for k in spec]
    if isinstance(spec, Sequence):
        out = []
        for s in spec:
            out += data_sources(s)
        return out
    raise TypeError(f"training data: expected a source, a list of sources or {{source: proportion}}, got {type(spec).__name__}")


def training_questions(
    sft_data: DataSpec = None,
    grpo_data: DataSpec = None,
    *,
    sft_column: str | Sequence[str] = QUESTION_COLUMNS,
    grpo_column: str | Sequence[str] = QUESTION_COLUMNS,
) -> list[str]:
    """The question texts a run trains on, for :func:`find_overlaps`.

    Each stage's data is a source, a list of sources or a mapping ``{source: proportion}`` (GRPO
    data mixing; every source is read whole, whatever its proportion: any row may have been drawn),
    read with :func:`medreason_utils.data.load_rows`; ``None`` skips a stage. The question of a row
    is its first column among ``sft_column`` / ``grpo_column`` (default :data:`QUESTION_COLUMNS`,
    which covers the medical-o1 SFT, verifiable and multiple-choice layouts).

    Raises :class:`~medreason_utils.data.DataError` naming the file and line (or source and row) and the
    columns when a row has none of them.
    """
    out: list[str] = []
    for spec, column in ((sft_data, sft_column), (grpo_data, grpo_column)):
        columns = (column,) if isinstance(column, str) else tuple(column)
        for source in data_sources(spec):
            for i, row in enumerate(load_rows(source)):
                col = next((c for c in columns if c in row), None)
                if col is None:
                    raise DataError(f"{row_location(row, str(source), i)}: no question column {list(columns)} "
                                    f"(columns: {sorted(k for k in row if not k.startswith('_'))})")
                out.append(str(row[col]))
    return out
