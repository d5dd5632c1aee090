"""Decontamination: evaluation items that overlap training questions, reported and dropped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ..data import DataError, load_rows, question_key

__all__ = ["Overlap", "training_questions", "find_overlaps", "decontaminate", "drop_overlapping_items"]


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


def training_questions(
    sft_data: str | None = None,
    grpo_data: "str | Mapping[str, float] | None" = None,
    *,
    sft_column: str = "Question",
    grpo_column: str = "Open-ended Verifiable Question",
) -> list[str]:
    """The question texts a run trains on: the SFT rows' ``sft_column`` and the GRPO rows'
    ``grpo_column`` (the medical-o1 layouts), read with :func:`medreason_utils.data.load_rows`
    from the stage configs' ``data`` (``None`` skips a stage). For :func:`find_overlaps`.

    ``grpo_data`` may be a GRPO data mix ``{source: proportion}``: every source is read; rows of
    a multiple-choice source (MedQA's or MedMCQA's layout, no ``grpo_column``) give their ``question``.

    Raises ``KeyError`` naming the source and the column when a row lacks it.
    """
    out: list[str] = []
    grpo_sources = list(grpo_data) if isinstance(grpo_data, Mapping) else [grpo_data]
    for source, column in [(sft_data, sft_column)] + [(g, grpo_column) for g in grpo_sources]:
        if source is None:
            continue
        for i, row in enumerate(load_rows(source)):
            col = column if column in row or column == sft_column else "question"
            if col not in row:
                raise KeyError(f"{source} row {i}: no column {column!r} (columns: {sorted(row)})")
            out.append(str(row[col]))
    return out
