"""medreason_utils: the medical part of the medreason suite, laid out as the pipeline runs.

* ``prompts`` (the response grammar, every prompt), ``parsing`` (the one completion parser),
  ``data`` (loading and mapping training data);
* ``models`` (Unsloth + vLLM on a GPU, transformers + peft on CPU), ``generation`` (batched, or
  an OpenAI-compatible server);
* ``verifiers/`` (who judges an answer), ``rewards/`` (TRL reward functions, built from one
  ``RewardSettings``), ``evaluation/`` (benchmarks, scoring, runner, reports, statistics);
* ``config/`` (stage configs and their YAML recipes), ``training/`` (SFT and GRPO trainers from
  a stage config), ``ui/`` (the reward playground, the demo), ``pipeline/`` (the headless run,
  the shared notebook cells, run records).

``docs/architecture.md`` shows the flow from data to demo with the module that owns each step.
Submodules import torch/transformers lazily, so ``import medreason_utils`` stays cheap; import
what you need from the sub-packages.
"""

from .parsing import ParsedCompletion, choice_from_completion, extract_choice, parse_completion
from .prompts import DEFAULT_TAGS, Tags, mcq_prompt, question_prompt, sft_messages, system_prompt
from .rewards import (
    RewardSettings,
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
    "RewardSettings",
    "strict_format_reward",
    "partial_format_reward",
    "make_correctness_reward",
    "mcq_exact_match_reward",
    "Verifier",
    "RuleBasedVerifier",
]
