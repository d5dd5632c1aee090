"""Verifiers: the judges behind the answer-correctness reward.

A verifier gives, for each (prediction, reference) pair, the probability in [0, 1] that the
prediction is a correct answer, or ``None`` for an item it could not score.

Modules, lowest layer first (an import-linter contract in ``pyproject.toml`` keeps this order):

* :mod:`.base`: the :class:`Verifier` protocol;
* :mod:`.rule`: :class:`RuleBasedVerifier`, offline normalised matching (the default);
  :mod:`.template`: the HuatuoGPT-o1 verifier instruction; :mod:`.http`: retries, errors, API keys;
* :mod:`.huatuo`: the HuatuoGPT-o1 classifier, local (transformers) or served (vLLM ``/classify``);
  :mod:`.judge`: any chat model behind an OpenAI-compatible server;
* :mod:`.factory`: :func:`make_verifier`, which builds any of them from one config entry.

The model verifiers import torch/transformers/httpx/openai only when built.
"""

from .base import Verifier, check_score_inputs
from .factory import VERIFIER_KINDS, make_verifier
from .http import VerifierHTTPError, VerifierUnavailableError
from .huatuo import HUATUO_VERIFIER_MODEL, HuatuoLocalVerifier, HuatuoServedVerifier, build_verifier_input_ids
from .judge import LLMJudgeVerifier
from .rule import RuleBasedVerifier
from .template import HUATUO_VERIFIER_TEMPLATE, format_verifier_input

__all__ = [
    "Verifier",
    "check_score_inputs",
    "RuleBasedVerifier",
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
