"""The offline rule-based verifier: normalised matching, no model, no network.

The default verifier of the correctness reward when no model verifier is configured.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from ..parsing import extract_choice, normalize_answer
from .base import check_score_inputs

__all__ = ["RuleBasedVerifier"]


_LABEL = re.compile(r"^\s*[\(\[]?([A-J])[\)\].:]\s*(.+)$", re.DOTALL)
_FILLER = {"answer", "option", "choice", "is", "correct", "final", "my", "best"}
_BARE = re.compile(r"\s*[\(\[]?([A-J])[\)\]]?[.:]?\s*")
_LEADING_LABEL = re.compile(r"^\s*(?:[\(\[][A-J][\)\]]|[A-J](?:[\)\]]|[.:](?!\w)|\s*$))\s*(?:-\s*)?")


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
      that letter by an option label (via :func:`medreason_utils.parsing.extract_choice`: "B",
      "(B) ...", "answer is B"; a letter inside a word or name such as "Hepatitis B" does not
      count) and carries no text contradicting the option's ("E. Staphylococcus aureus" against
      "E. coli" is read as text, not as option E).
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
        bare = _BARE.fullmatch(ref)
        label = None if bare else _LABEL.match(ref)
        if bare or label:
            letter = (bare or label).group(1).upper()
            option_text = label.group(2).strip() if label else ""
            # only option labels name a letter ("Hepatitis B" does not name B); texts that cannot
            # match stand in for the other options
            options = {L: "\u0000" for L in "ABCDEFGHIJ"}
            if option_text:
                options[letter] = option_text
            if extract_choice(pred, options) == letter:
                rest = normalize_answer(_LEADING_LABEL.sub("", pred, count=1))
                words = [t for t in rest.split() if t not in _FILLER and t != letter.lower()]
                opt = normalize_answer(option_text)
                # "E. Staphylococcus aureus" names letter E but its text contradicts a reference "E. coli"
                if not words or not opt or f" {opt} " in f" {rest} " or f" {rest} " in f" {opt} ":
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
