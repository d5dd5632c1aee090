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
  (:func:`medreason_utils.parsing.find_choice_anywhere`, after HuatuoGPT-o1's scorer);
* ``plain_match``: the letter a free answer names (:func:`medreason_utils.parsing.plain_choice`:
  a leading option label, the first "answer is X" as in lm-eval-harness's MedQA regex, then the
  lenient rules), the fair reading of the plain prompt, which asks for a letter and no grammar;
* ``score`` (with ``score_ci_low``, ``score_ci_high``): the fair score of the run, named by
  ``reading``: ``"grammar"`` (= ``exact_match``) for the suite's prompt, which asks for the
  grammar, ``"plain"`` (= ``plain_match``) for the plain prompt, which does not. Reading a plain
  answer for an ``<ANSWER>`` block it was never asked for scores 0 by construction; reading a
  grammar answer leniently would credit letters the reward never sees. Each prompt is scored by the
  reading that fits what it asks, and both readings are reported for every run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from ..parsing import choice_from_completion, completion_text, find_choice_anywhere, parse_completion, plain_choice
from .stats import mean_and_spread, wilson_interval

__all__ = ["READINGS", "ItemResult", "EvalResult", "format_compliance", "item_correct", "score_item", "score_mcq", "summarise_items"]

#: The readings a run can be scored by: ``grammar`` (the letter in the ``<ANSWER>`` block, the
#: reward's reading; for the suite's prompt) and ``plain`` (the letter the answer names,
#: :func:`~medreason_utils.parsing.plain_choice`; for the plain prompt).
READINGS = ("grammar", "plain")


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
    ``plain``: the letter the answer names (the plain reading); ``strict``: the completion is in
    the strict grammar; ``sample``: 0-based sample index (k > 1 samples per item when sampling).
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
    plain: str | None = None
    plain_correct: bool = False


def item_correct(item: ItemResult, reading: str) -> bool:
    """Whether ``item`` is right by ``reading`` (``"grammar"``: ``correct``; ``"plain"``:
    ``plain_correct``). Raises ``ValueError`` for another reading."""
    if reading == "grammar":
        return bool(item.correct)
    if reading == "plain":
        return bool(item.plain_correct)
    raise ValueError(f"unknown reading {reading!r}; known: {list(READINGS)}")


@dataclass
class EvalResult:
    """Scores of one model on one benchmark; fractions in [0, 1], ``n`` items.

    With k > 1 samples per item, ``exact_match`` is the mean of the k per-sample accuracies and
    ``exact_match_std`` their sample standard deviation; the interval is Wilson's for that mean over
    ``n`` items. ``strict_exact_match`` is None when no completion was strictly formatted.
    ``score`` is the fair score, ``exact_match`` when ``reading`` is ``"grammar"`` and
    ``plain_match`` when it is ``"plain"``, with its own Wilson interval (``score_ci_low``,
    ``score_ci_high``); ``plain_match`` is, like ``exact_match``, the mean over samples.
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
    plain_correct: int = 0
    plain_match: float = 0.0
    reading: str = "grammar"
    score: float = 0.0
    score_ci_low: float = 0.0
    score_ci_high: float = 1.0

    def summary(self) -> dict:
        """The figures without the per-item records (for summary.json and tables)."""
        d = asdict(self)
        d.pop("items")
        return d


def score_item(completion: Any, item: Mapping, index: int, *, prefilled_think: bool = False) -> ItemResult:
    options = item["options"]
    letter, parsed = choice_from_completion(completion, options, prefilled_think=prefilled_think)
    lenient = find_choice_anywhere(completion, options, prefilled_think=prefilled_think)
    plain = plain_choice(completion, options)
    gold = str(item["answer"]).strip().upper()
    return ItemResult(
        id=str(item.get("id", index)), gold=gold, predicted=letter, correct=letter == gold, strict=parsed.is_strict,
        completion=completion_text(completion), subject=item.get("subject"), lenient=lenient,
        lenient_correct=lenient == gold, prompt=item.get("prompt"), benchmark=str(item.get("benchmark") or ""),
        plain=plain, plain_correct=plain == gold,
    )


def summarise_items(records: Sequence[ItemResult], *, benchmark: str = "", model: str = "", reading: str = "grammar") -> EvalResult:
    """Aggregate scored completions (one or more samples per item) into an :class:`EvalResult`.

    ``reading``: which reading is the run's fair ``score`` (:data:`READINGS`).
    Raises ``ValueError`` for no records, samples of unequal size or an unknown reading.
    """
    if not records:
        raise ValueError("nothing to score")
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}; known: {list(READINGS)}")
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
    plain_correct = sum(bool(r.plain_correct) for r in records)
    plain_match = plain_correct / total
    score = acc if reading == "grammar" else plain_match
    s_lo, s_hi = wilson_interval(round(score * n), n)
    return EvalResult(
        benchmark=benchmark, model=model, n=n, correct=correct if k > 1 else sum(r.correct for r in records),
        exact_match=acc, format_compliance=len(strict) / total, items=list(records), ci_low=lo, ci_high=hi,
        n_strict=len(strict), strict_correct=strict_correct, strict_exact_match=strict_correct / len(strict) if strict else None,
        lenient_correct=lenient_correct, lenient_match=lenient_correct / total,
        answered=sum(r.predicted is not None for r in records) / total, samples=k, exact_match_std=std if k > 1 else None,
        plain_correct=plain_correct, plain_match=plain_match, reading=reading, score=score, score_ci_low=s_lo, score_ci_high=s_hi,
    )


def score_mcq(
    completions: Sequence[Any], items: Sequence[Mapping], *, benchmark: str = "", model: str = "", prefilled_think: bool = False,
    reading: str = "grammar",
) -> EvalResult:
    """Score completions against multiple-choice items (``options``, ``answer`` letter, optional ``id``, ``subject``).

    ``reading``: the run's fair score, ``"grammar"`` (suite prompt) or ``"plain"`` (plain prompt).
    Raises ``ValueError`` when the two sequences differ in length or there are none.
    """
    if len(completions) != len(items):
        raise ValueError(f"{len(completions)} completions for {len(items)} items")
    if not items:
        raise ValueError("nothing to score")
    records = [score_item(c, item, i, prefilled_think=prefilled_think) for i, (c, item) in enumerate(zip(completions, items))]
    for r in records:
        r.benchmark, r.model = benchmark or r.benchmark, model
    return summarise_items(records, benchmark=benchmark, model=model, reading=reading)


