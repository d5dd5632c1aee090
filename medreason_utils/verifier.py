"""Verifiers: the judges behind the answer-correctness reward.

A verifier gives, for each (prediction, reference) pair, the probability in [0, 1] that the
prediction is a correct answer, or ``None`` for an item it could not score. This module holds
the protocol and the offline rule-based verifier (no model, no network), the default when no
model verifier is configured. Model-based verifiers (the HuatuoGPT-o1 classifier, served or
local, and an LLM judge) implement the same protocol.
"""

from __future__ import annotations

import re
from typing import Mapping, Protocol, Sequence, runtime_checkable

from .parsing import extract_choice, normalize_answer

__all__ = ["Verifier", "RuleBasedVerifier", "check_score_inputs"]


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


_LABEL = re.compile(r"^\s*[\(\[]?([A-J])[\)\].:]\s*(.+)$", re.DOTALL)


def _tokens(s: str) -> list[str]:
    return normalize_answer(s).split()


def _f1(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return 0.0
    common = 0
    rest = list(ref)
    for t in pred:
        if t in rest:
            rest.remove(t)
            common += 1
    if not common:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


class RuleBasedVerifier:
    """Offline verifier by normalised matching; needs no model and never returns ``None``.

    Probabilities (a heuristic scale chosen to land in the tiers of the correctness reward,
    whose thresholds 0.9/0.7/0.5/0.3 follow the reference GRPO project):

    * 1.0: the normalised prediction equals the normalised reference or one of its aliases;
      or the reference is an option label (``"B"`` or ``"B. text"``) and the prediction names
      that letter (via :func:`medreason_utils.parsing.extract_choice`) or that option text.
    * 0.8: the normalised reference (or an alias) occurs as a whole phrase inside the
      prediction (the prediction contains the answer and says more).
    * 0.6: the prediction is contained in the reference and covers at least half its tokens.
    * otherwise 0.5 x token F1 (SQuAD F1), in [0, 0.5].

    Normalisation is :func:`medreason_utils.parsing.normalize_answer` (SQuAD v1.1).

    Args:
        aliases: optional map from a normalised or raw reference to extra accepted answers.
    """

    def __init__(self, aliases: Mapping[str, Sequence[str]] | None = None):
        self.aliases = {normalize_answer(k): [normalize_answer(a) for a in v] for k, v in (aliases or {}).items()}

    def _one(self, pred: str, ref: str) -> float:
        if not isinstance(pred, str) or not pred.strip() or not isinstance(ref, str) or not ref.strip():
            return 0.0
        label = _LABEL.match(ref)
        if label or re.fullmatch(r"\s*[\(\[]?[A-J][\)\]]?\s*", ref):
            letter = (label.group(1) if label else re.sub(r"[^A-J]", "", ref)).upper()
            option_text = label.group(2).strip() if label else ""
            options = {letter: option_text or letter}
            # the letter stands for itself; other letters are possible distractors
            for other in "ABCDEFGHIJ":
                options.setdefault(other, f"\u0000option {other}")
            if extract_choice(pred, options) == letter:
                return 1.0
            if not option_text:
                return 0.0
            ref = option_text
        norm_pred = normalize_answer(pred)
        targets = [normalize_answer(ref)] + self.aliases.get(normalize_answer(ref), [])
        if norm_pred in targets:
            return 1.0
        best = 0.0
        for target in targets:
            if not target:
                continue
            if f" {target} " in f" {norm_pred} ":
                best = max(best, 0.8)
            elif f" {norm_pred} " in f" {target} " and len(norm_pred.split()) * 2 >= len(target.split()):
                best = max(best, 0.6)
            else:
                best = max(best, 0.5 * _f1(norm_pred.split(), target.split()))
        return best

    def score(
        self,
        predictions: Sequence[str],
        references: Sequence[str],
        questions: Sequence[str] | None = None,
    ) -> list[float | None]:
        """Score each pair; see the class docstring for the scale. Raises ``ValueError`` on length mismatch."""
        check_score_inputs(predictions, references, questions)
        return [self._one(p, r) for p, r in zip(predictions, references)]

    def __repr__(self) -> str:
        return f"RuleBasedVerifier(aliases={len(self.aliases)})"
