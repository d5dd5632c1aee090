"""TRL-compatible reward functions for GRPO, and the one way to build them.

Each reward function has the signature TRL's ``GRPOTrainer`` calls,
``(completions, **dataset_columns) -> list[float | None]``, one value per completion, a stable
``__name__`` (TRL logs ``rewards/<name>/mean``), a docstring with an example, and accepts
plain-text and conversational completions. ``None`` means not applicable / not scored: TRL
turns it into NaN and leaves it out of the advantage. No reward raises on a malformed completion.

Build them from one :class:`RewardSettings` (a recipe's ``rewards:`` section, edited by the
playground): ``RewardSettings().reward_funcs()``, which goes through the registry
(:func:`get_reward_funcs`, after open-r1).

Modules: :mod:`.format` (strict and partial format), :mod:`.correctness` (verifier tiers,
unscored items), :mod:`.mcq` (option-letter exact match), :mod:`.registry`, :mod:`.settings`,
:mod:`.advantages` (GRPO advantages as TRL computes them), :mod:`.scoring` (:func:`score_groups`, the one
scorer: groups of completions scored as TRL's ``GRPOTrainer`` scores them).
"""

from .advantages import compute_advantages
from .base import RewardFunc
from .correctness import DEFAULT_TIERS, CorrectnessTiers, UnscoredError, exclude_unscored, make_correctness_reward
from .format import make_partial_format_reward, make_strict_format_reward, partial_format_reward, strict_format_reward
from .mcq import make_mcq_exact_match_reward, mcq_exact_match_reward
from .perplexity import NORMALISATIONS, make_perplexity_reward
from .registry import REWARD_REGISTRY, RegisteredReward, get_reward_funcs
from .scoring import GroupScores, score_groups
from .settings import DEFAULT_REWARDS, SCALE_OPTIONS, RewardSettings

__all__ = [
    "make_perplexity_reward",
    "NORMALISATIONS",
    "RewardFunc",
    "CorrectnessTiers",
    "DEFAULT_TIERS",
    "make_strict_format_reward",
    "make_partial_format_reward",
    "make_correctness_reward",
    "make_mcq_exact_match_reward",
    "strict_format_reward",
    "partial_format_reward",
    "mcq_exact_match_reward",
    "REWARD_REGISTRY",
    "RegisteredReward",
    "get_reward_funcs",
    "RewardSettings",
    "DEFAULT_REWARDS",
    "SCALE_OPTIONS",
    "UnscoredError",
    "compute_advantages",
    "GroupScores",
    "score_groups",
    "exclude_unscored",
]
