"""Verifiers: the judges behind the answer-correctness reward.

A verifier gives, for each (prediction, reference) pair, the probability in [0, 1] that the
prediction is a correct answer, or ``None`` for an item it could not score. This module holds
the protocol, the offline rule-based verifier (no model, no network; the default when no model
verifier is configured) and :func:`make_verifier`, which builds any verifier from one config
entry. The model-based verifiers implement the same protocol and are re-exported from here:
the HuatuoGPT-o1 classifier run locally or served by vLLM (``verifiers_huatuo``) and an LLM
judge over any OpenAI-compatible server (``verifiers_judge``).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from ..parsing import extract_choice, normalize_answer

__all__ = [
    "Verifier",
    "RuleBasedVerifier",
    "check_score_inputs",
    "make_verifier",
    "VERIFIER_KINDS",
    "HuatuoLocalVerifier",
    "HuatuoServedVerifier",
    "LLMJudgeVerifier",
    "HUATUO_VERIFIER_TEMPLATE",
    "HUATUO_VERIFIER_MODEL",
    "format_verifier_input",
    "build_verifier_input_ids",
    "VerifierHTTPError",
    "VerifierUnavailableError",
]


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
_FILLER = {"answer", "option", "choice", "is", "correct", "final", "my", "best"}
_BARE = re.compile(r"\s*[\(\[]?([A-J])[\)\]]?[.:]?\s*")
_LEADING_LABEL = re.compile(r"^\s*(?:[\(\[][A-J][\)\]]|[A-J](?:[\)\]]|[.:](?!\w)|\s*$))\s*(?:-\s*)?")


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


#: The ``kind`` values :func:`make_verifier` accepts.
VERIFIER_KINDS = ("rule", "huatuo_local", "huatuo_served", "llm_judge")


def make_verifier(spec: "Verifier | str | Mapping[str, Any] | None" = None) -> Verifier:
    """Build the verifier named by one config entry (notebook 02's parameters cell).

    ``spec`` is one of:

    * ``None`` or ``"rule"``: :class:`RuleBasedVerifier` (offline, no model); ``{"kind": "rule",
      "aliases": {...}}`` passes its settings.
    * ``{"kind": "huatuo_local", "model": ..., "batch_size": 16, "load_in_4bit": False, ...}``:
      :class:`~medreason_utils.verifiers_huatuo.HuatuoLocalVerifier`.
    * ``{"kind": "huatuo_served", "url": "http://127.0.0.1:8000", ...}``:
      :class:`~medreason_utils.verifiers_huatuo.HuatuoServedVerifier` (vLLM ``/classify``).
    * ``{"kind": "llm_judge", "base_url": ".../v1", "model": ..., "api_key_env": "OPENAI_API_KEY"}``:
      :class:`~medreason_utils.verifiers_judge.LLMJudgeVerifier`.
    * a string kind alone (``"huatuo_local"``) uses that verifier's defaults; an object that
      already has ``score`` is returned as is.

    The other keys of the dict are the keyword arguments of that class. Raises ``ValueError``
    naming an unknown kind (and the known ones) and ``TypeError`` naming a setting the kind
    does not take.
    """
    if spec is None:
        return RuleBasedVerifier()
    if isinstance(spec, Verifier):
        return spec
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping):
        raise TypeError(f"verifier spec must be None, a kind name, a dict with 'kind' or a Verifier; got {type(spec).__name__}")
    settings = dict(spec)
    kind = settings.pop("kind", "rule")
    if kind == "rule":
        cls: Any = RuleBasedVerifier
    elif kind == "huatuo_local":
        from .huatuo import HuatuoLocalVerifier as cls
    elif kind == "huatuo_served":
        from .huatuo import HuatuoServedVerifier as cls
    elif kind == "llm_judge":
        from .judge import LLMJudgeVerifier as cls
    else:
        raise ValueError(f"unknown verifier kind {kind!r}; known: {', '.join(VERIFIER_KINDS)}")
    try:
        return cls(**settings)
    except TypeError as exc:
        raise TypeError(f"verifier kind {kind!r} ({cls.__name__}): {exc}") from exc


def __getattr__(name: str) -> Any:
    """Re-export the model-based verifiers lazily (their modules import httpx/transformers on use)."""
    lazy = {
        "HuatuoLocalVerifier": "huatuo",
        "HuatuoServedVerifier": "huatuo",
        "HUATUO_VERIFIER_TEMPLATE": "huatuo",
        "HUATUO_VERIFIER_MODEL": "huatuo",
        "format_verifier_input": "huatuo",
        "build_verifier_input_ids": "huatuo",
        "LLMJudgeVerifier": "judge",
        "VerifierHTTPError": "http",
        "VerifierUnavailableError": "http",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(f".{lazy[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
