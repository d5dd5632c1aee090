"""medreason_utils: the medical part of the medreason suite.

Prompts and the response grammar (``prompts``), the one completion parser (``parsing``),
TRL reward functions (``rewards``), verifiers (``verifier``), data loading and mapping
(``data``), model loading for GPU (Unsloth + vLLM) and CPU (transformers + peft)
(``models``), generation (``generation``) and evaluation (``evaluation``).

Submodules import torch/transformers lazily where they can, so ``import medreason_utils``
stays cheap; import what you need from the submodules.
"""

from .parsing import ParsedCompletion, choice_from_completion, extract_choice, parse_completion
from .prompts import DEFAULT_TAGS, Tags, question_prompt, mcq_prompt, sft_messages, system_prompt
from .rewards import (
    make_correctness_reward,
    mcq_exact_match_reward,
    partial_format_reward,
    strict_format_reward,
)
from .verifiers import RuleBasedVerifier, Verifier

__version__ = "0.1.0"

__all__ = [
    "ParsedCompletion",
    "parse_completion",
    "extract_choice",
    "choice_from_completion",
    "Tags",
    "DEFAULT_TAGS",
    "system_prompt",
    "sft_messages",
    "question_prompt",
    "mcq_prompt",
    "strict_format_reward",
    "partial_format_reward",
    "make_correctness_reward",
    "mcq_exact_match_reward",
    "Verifier",
    "RuleBasedVerifier",
]
