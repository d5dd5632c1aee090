"""Build any verifier from one config entry (notebook 02's ``VERIFIER``, a recipe's ``rewards.verifier``)."""

from __future__ import annotations

from typing import Any, Mapping

from .base import Verifier
from .rule import RuleBasedVerifier

__all__ = ["VERIFIER_KINDS", "make_verifier"]


#: The ``kind`` values :func:`make_verifier` accepts.
VERIFIER_KINDS = ("rule", "huatuo_local", "huatuo_served", "llm_judge")


def make_verifier(spec: "Verifier | str | Mapping[str, Any] | None" = None) -> Verifier:
    """Build the verifier named by one config entry (notebook 02's parameters cell).

    ``spec`` is one of:

    * ``None`` or ``"rule"``: :class:`~medreason_utils.verifiers.rule.RuleBasedVerifier` (offline, no model); ``{"kind": "rule",
      "aliases": {...}}`` passes its settings.
    * ``{"kind": "huatuo_local", "model": ..., "batch_size": 16, "load_in_4bit": False, ...}``:
      :class:`~medreason_utils.verifiers.huatuo.HuatuoLocalVerifier`.
    * ``{"kind": "huatuo_served", "url": "http://127.0.0.1:8000", ...}``:
      :class:`~medreason_utils.verifiers.huatuo.HuatuoServedVerifier` (vLLM ``/classify``).
    * ``{"kind": "llm_judge", "base_url": ".../v1", "model": ..., "api_key_env": "OPENAI_API_KEY"}``:
      :class:`~medreason_utils.verifiers.judge.LLMJudgeVerifier`.
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
