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

#: Separators of a list of candidate answers: "or", "either ... or", "/", ";", "vs", "versus", "and/or".
_DISJUNCTION = re.compile(r"\s*(?:\band/or\b|\bor\b|/|\bversus\b|\bvs\b\.?)\s*", re.IGNORECASE)
#: A candidate of a list is a short phrase (words); a longer clause is explanation, not a candidate.
_MAX_CANDIDATE_WORDS = 5
_COMMA = re.compile(r"\s*,\s*")
#: Words that negate the phrase they precede ("not measles", "rule out measles", "isn't measles").
_NEG_BEFORE = {"not", "no", "never", "without", "neither", "nor", "unlikely", "rule", "ruled", "exclude", "excluded", "excluding",
               "isn", "isnt", "doesn", "cannot", "against", "non"}
#: What negates the phrase it follows ("measles is unlikely", "measles ruled out", "measles is not").
_NEG_AFTER = re.compile(r"^(?:(?:is|was|are|seems|being)\s+(?:not|unlikely|excluded|ruled|improbable|incorrect|wrong)\b|(?:unlikely|excluded|ruled)\b)")


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

    Before any of these, three readings that would pay for not committing to an answer give 0.0
    (the lowest tier, as a wrong answer):

    * **a list of candidates**: the prediction splits on "or", "/", "vs"/"versus", "and/or"
      (or is a comma list of three or more, or with "or") into two or more short candidates (at
      most 5 words each, or 2 more than the reference; a longer clause is read as explanation)
      and at least one of them is neither the reference nor an alias (nor contains or is
      contained in one): "measles or rubella or mumps" against "measles" is 0.0, "measles or
      rubeola" (an alias) is 1.0-tier. A list is graded as one answer that hedges. How a
      published matcher treats several candidates: HuatuoGPT-o1's scorer
      (FreedomIntelligence/HuatuoGPT-o1, ``evaluation/scorer.py``: ``match_choice`` returns the
      *first* and the *last* option a response names, and ``score`` compares each with the gold
      letter separately, reporting the better of the head and tail match over the whole
      benchmark) grades a response by one candidate, never by "any candidate is right"; a
      reward is optimised by the policy, so here a list gets no credit at all (committing to the
      right answer is worth more than any hedge, and a hedge is worth what a wrong answer is).
    * **the reference negated**: the reference phrase is preceded within three words by a
      negation ("not", "no", "rule out", "isn't", "unlikely", ...) or followed by "is
      not"/"is unlikely"/"ruled out"/"excluded": "not measles" is 0.0.
    * **the question copied back**: ``questions`` are given and the normalised prediction
      contains the normalised question (of four or more words).

    Normalisation is :func:`medreason_utils.parsing.normalize_answer` (SQuAD v1.1).
    Cost: linear in the prediction's length (a 1 MB prediction is scored in well under a second).

    Args:
        aliases: optional map from a normalised or raw reference to extra accepted answers.
    """

    def __init__(self, aliases: Mapping[str, Sequence[str]] | None = None):
        self.aliases = {normalize_answer(k): [normalize_answer(a) for a in v] for k, v in (aliases or {}).items()}

    @staticmethod
    def _candidates(pred: str, max_words: int = _MAX_CANDIDATE_WORDS) -> list[str]:
        """The candidate answers of a prediction that lists several (normalised); ``[]`` for one answer."""
        text = re.sub(r"^\s*either\s+", "", pred, flags=re.IGNORECASE)
        parts = _DISJUNCTION.split(text)
        if len(parts) < 2:
            commas = _COMMA.split(text)
            parts = commas if len(commas) >= 3 else []
        elif "," in text:  # "a, b, or c"
            parts = [c for p in parts for c in _COMMA.split(p)]
        cands = [normalize_answer(p) for p in parts]
        cands = [c for c in cands if c]
        if len(cands) < 2 or any(len(c.split()) > max_words for c in cands):
            return []
        return cands

    @staticmethod
    def _negated(norm_pred: str, targets: Sequence[str]) -> bool:
        """Whether every occurrence of a target phrase in the prediction is negated (see the class docstring)."""
        found = False
        padded = f" {norm_pred} "
        for target in targets:
            start = padded.find(f" {target} ")
            while start != -1:  # each occurrence looks at a bounded window: linear in the prediction's length
                found = True
                before = padded[max(0, start - 64) : start].split()[-3:]
                end = start + len(target) + 2
                after = padded[end : end + 64].strip()
                if not (set(before) & _NEG_BEFORE or _NEG_AFTER.match(after)):
                    return False
                start = padded.find(f" {target} ", start + 1)
        return found

    def _hedges(self, pred: str, ref: str, targets: Sequence[str]) -> bool:
        """Whether ``pred`` lists candidates of which one is not the reference (see the class docstring)."""
        cands = self._candidates(pred, max(_MAX_CANDIDATE_WORDS, max(len(t.split()) for t in targets) + 2))
        if not cands:
            return False
        if set(cands) == set(self._candidates(ref)) or normalize_answer(pred) in targets:
            return False  # the reference itself is such a list ("hepatitis B or C")

        def agrees(c: str) -> bool:
            return any(c == t or f" {t} " in f" {c} " or f" {c} " in f" {t} " for t in targets)

        return not all(agrees(c) for c in cands)

    def _one(self, pred: str, ref: str, question: str | None = None) -> float:
        if not isinstance(pred, str) or not pred.strip() or not isinstance(ref, str) or not ref.strip():
            return 0.0
        if isinstance(question, str):
            norm_q = normalize_answer(question)
            if len(norm_q.split()) >= 4 and f" {norm_q} " in f" {normalize_answer(pred)} ":
                return 0.0  # the question copied back
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
        clean = [t for t in targets if t]
        if clean and self._hedges(pred, ref, clean) or self._negated(norm_pred, clean):
            return 0.0
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
        qs = list(questions) if questions is not None else [None] * len(predictions)
        return [self._one(p, r, q) for p, r, q in zip(predictions, references, qs)]

    def __repr__(self) -> str:
        return f"RuleBasedVerifier(aliases={len(self.aliases)})"
