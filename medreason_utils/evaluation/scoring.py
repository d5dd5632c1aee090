"""Scoring multiple-choice completions: exact match of the option letter, format compliance.

Scores (each named, each with its n):

* ``exact_match`` (primary): the option letter read from the ``<ANSWER>`` block by
  :func:`medreason_utils.parsing.choice_from_completion`, the same reading the
  ``mcq_exact_match_reward`` uses, so the metric and the training signal cannot disagree; with a
  95% Wilson interval (``ci_low``, ``ci_high``);
* ``format_compliance``: the fraction of completions in the strict grammar, reported apart from
  exact match, so a wrong format and a wrong answer are told apart;
* ``strict_exact_match``: exact match on the strictly formatted completions only (``n_strict`` of them);
* ``lenient_match``: the letter found anywhere in the completion, tags or not
  (:func:`medreason_utils.parsing.find_choice_anywhere`, after HuatuoGPT-o1's scorer).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from ..parsing import choice_from_completion, completion_text, find_choice_anywhere, parse_completion
from .stats import mean_and_spread, wilson_interval

__all__ = ["ItemResult", "EvalResult", "format_compliance", "score_item", "score_mcq", "summarise_items"]


def format_compliance(completions: Sequence[Any], *, prefilled_think: bool = False) -> float:
    """Fraction in [0, 1] of completions whose ``parse_completion(c).is_strict`` is True.

    Raises ``ValueError`` for an empty sequence (a fraction of nothing is undefined).
    """
    if not completions:
        raise ValueError("format_compliance of zero completions is undefined")
    return sum(parse_completion(c, prefilled_think=prefilled_think).is_strict for c in completions) / len(completions)


@dataclass
class ItemResult:
    """One scored completion.

    ``predicted``: letter from the ANSWER block (None if none); ``lenient``: letter found anywhere;
    ``strict``: the completion is in the strict grammar; ``sample``: 0-based sample index (k > 1
    samples per item when sampling).
    """

    id: str
    gold: str
    predicted: str | None
    correct: bool
    strict: bool
    completion: str
    subject: str | None = None
    lenient: str | None = None
    lenient_correct: bool = False
    prompt: Any = None
    sample: int = 0
    benchmark: str = ""
    model: str = ""


@dataclass
class EvalResult:
    """Scores of one model on one benchmark; fractions in [0, 1], ``n`` items.

    With k > 1 samples per item, ``exact_match`` is the mean of the k per-sample accuracies and
    ``exact_match_std`` their sample standard deviation; the interval is Wilson's for that mean over
    ``n`` items. ``strict_exact_match`` is None when no completion was strictly formatted.
    """

    benchmark: str
    model: str
    n: int
    correct: int
    exact_match: float
    format_compliance: float
    items: list[ItemResult] = field(default_factory=list, repr=False)
    ci_low: float = 0.0
    ci_high: float = 1.0
    n_strict: int = 0
    strict_correct: int = 0
    strict_exact_match: float | None = None
    lenient_correct: int = 0
    lenient_match: float = 0.0
    answered: float = 0.0
    samples: int = 1
    exact_match_std: float | None = None

    def summary(self) -> dict:
        """The figures without the per-item records (for summary.json and tables)."""
        d = asdict(self)
        d.pop("items")
        return d


def score_item(completion: Any, item: Mapping, index: int, *, prefilled_think: bool = False) -> ItemResult:
    options = item["options"]
    letter, parsed = choice_from_completion(completion, options, prefilled_think=prefilled_think)
    lenient = find_choice_anywhere(completion, options, prefilled_think=prefilled_think)
    gold = str(item["answer"]).strip().upper()
    return ItemResult(
        id=str(item.get("id", index)), gold=gold, predicted=letter, correct=letter == gold, strict=parsed.is_strict,
        completion=completion_text(completion), subject=item.get("subject"), lenient=lenient,
        lenient_correct=lenient == gold, prompt=item.get("prompt"), benchmark=str(item.get("benchmark") or ""),
    )


def summarise_items(records: Sequence[ItemResult], *, benchmark: str = "", model: str = "") -> EvalResult:
    """Aggregate scored completions (one or more samples per item) into an :class:`EvalResult`.

    Raises ``ValueError`` for no records or samples of unequal size.
    """
    if not records:
        raise ValueError("nothing to score")
    by_sample: dict[int, list[ItemResult]] = {}
    for r in records:
        by_sample.setdefault(r.sample, []).append(r)
    sizes = {len(v) for v in by_sample.values()}
    if len(sizes) != 1:
        raise ValueError(f"samples cover different numbers of items: { {k: len(v) for k, v in by_sample.items()} }")
    n = sizes.pop()
    k = len(by_sample)
    accs = [sum(r.correct for r in v) / n for v in by_sample.values()]
    acc, std = mean_and_spread(accs)
    correct = round(acc * n)
    lo, hi = wilson_interval(correct, n)
    total = len(records)
    strict = [r for r in records if r.strict]
    strict_correct = sum(r.correct for r in strict)
    lenient_correct = sum(r.lenient_correct for r in records)
    return EvalResult(
        benchmark=benchmark, model=model, n=n, correct=correct if k > 1 else sum(r.correct for r in records),
        exact_match=acc, format_compliance=len(strict) / total, items=list(records), ci_low=lo, ci_high=hi,
        n_strict=len(strict), strict_correct=strict_correct, strict_exact_match=strict_correct / len(strict) if strict else None,
        lenient_correct=lenient_correct, lenient_match=lenient_correct / total,
        answered=sum(r.predicted is not None for r in records) / total, samples=k, exact_match_std=std if k > 1 else None,
    )


def score_mcq(
    completions: Sequence[Any], items: Sequence[Mapping], *, benchmark: str = "", model: str = "", prefilled_think: bool = False
) -> EvalResult:
    """Score completions against multiple-choice items (``options``, ``answer`` letter, optional ``id``, ``subject``).

    Raises ``ValueError`` when the two sequences differ in length or there are none.
    """
    if len(completions) != len(items):
        raise ValueError(f"{len(completions)} completions for {len(items)} items")
    if not items:
        raise ValueError("nothing to score")
    records = [score_item(c, item, i, prefilled_think=prefilled_think) for i, (c, item) in enumerate(zip(completions, items))]
    for r in records:
        r.benchmark, r.model = benchmark or r.benchmark, model
    return summarise_items(records, benchmark=benchmark, model=model)


