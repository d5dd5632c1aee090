"""Evaluation: exact-match accuracy of the option letter and format compliance.

Scoring uses :func:`medreason_utils.parsing.choice_from_completion`, the same reading the
``mcq_accuracy_reward`` uses, so the metric and the training signal cannot disagree. Format
compliance (strict grammar) is reported apart from accuracy, so a wrong format and a wrong
answer are told apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from .parsing import choice_from_completion, parse_completion

__all__ = ["ItemResult", "EvalResult", "format_compliance", "score_mcq", "evaluate_mcq"]


def format_compliance(completions: Sequence[Any], *, prefilled_think: bool = False) -> float:
    """Fraction in [0, 1] of completions whose ``parse_completion(c).is_strict`` is True.

    Raises ``ValueError`` for an empty sequence (a fraction of nothing is undefined).
    """
    if not completions:
        raise ValueError("format_compliance of zero completions is undefined")
    return sum(parse_completion(c, prefilled_think=prefilled_think).is_strict for c in completions) / len(completions)


@dataclass
class ItemResult:
    """One scored item: id, gold letter, extracted letter (None if none), correct, strict format, completion."""

    id: str
    gold: str
    predicted: str | None
    correct: bool
    strict: bool
    completion: str
    subject: str | None = None


@dataclass
class EvalResult:
    """Scores of one model on one benchmark. ``accuracy`` and ``format_compliance`` are in [0, 1]."""

    benchmark: str
    model: str
    n: int
    correct: int
    accuracy: float
    format_compliance: float
    items: list[ItemResult] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        """The figures without the per-item records (for summary.json and tables)."""
        d = asdict(self)
        d.pop("items")
        return d


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
    records = []
    for i, (c, item) in enumerate(zip(completions, items)):
        letter, parsed = choice_from_completion(c, item["options"], prefilled_think=prefilled_think)
        gold = str(item["answer"]).strip().upper()
        records.append(
            ItemResult(str(item.get("id", i)), gold, letter, letter == gold, parsed.is_strict, c if isinstance(c, str) else str(c), item.get("subject"))
        )
    n = len(records)
    correct = sum(r.correct for r in records)
    return EvalResult(benchmark, model, n, correct, correct / n, sum(r.strict for r in records) / n, records)


def evaluate_mcq(
    model,
    tokenizer,
    items: Sequence[Mapping],
    *,
    benchmark: str = "",
    model_label: str = "",
    max_new_tokens: int = 256,
    batch_size: int = 8,
    **generate_kwargs: Any,
) -> EvalResult:
    """Generate a completion for each item's ``prompt`` (greedy by default) and score it with :func:`score_mcq`."""
    from .generation import generate_completions

    items = list(items)
    completions = generate_completions(
        model, tokenizer, [it["prompt"] for it in items], max_new_tokens=max_new_tokens, batch_size=batch_size,
        desc=f"{model_label} {benchmark}".strip(), **generate_kwargs,
    )
    return score_mcq(completions, items, benchmark=benchmark, model=model_label)
