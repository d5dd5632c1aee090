"""The verifier protocol: what the correctness reward asks of any judge.

A verifier gives, for each (prediction, reference) pair, the probability in [0, 1] that the
prediction is a correct answer, or ``None`` for an item it could not score.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

__all__ = ["Verifier", "check_score_inputs"]


@runtime_checkable
class Verifier(Protocol):
    """Anything with ``score(predictions, references, questions=None) -> list[float | None]``.

    ``predictions`` and ``references`` are equal-length sequences of strings (the answer text
    extracted from a completion, and the ground-truth answer); ``questions`` is ``None`` or the
    same length. The result has one entry per item: a probability in [0, 1], or ``None`` when
    that item could not be scored (the correctness reward then gives ``None`` and TRL leaves the
    item out of the advantage).
    """

    def score(
        self,
        predictions: Sequence[str],
        references: Sequence[str],
        questions: Sequence[str] | None = None,
    ) -> list[float | None]: ...


def check_score_inputs(predictions: Sequence, references: Sequence, questions: Sequence | None) -> None:
    """Raise ``ValueError`` naming the argument when the lengths of the score inputs differ."""
    if len(predictions) != len(references):
        raise ValueError(f"predictions has {len(predictions)} items but references has {len(references)}")
    if questions is not None and len(questions) != len(predictions):
        raise ValueError(f"questions has {len(questions)} items but predictions has {len(predictions)}")
