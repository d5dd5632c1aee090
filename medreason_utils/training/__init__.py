"""Training: what the notebooks (and any script) call to build the SFT and GRPO trainers from a stage config.

* :mod:`.sft`: the SFT rows and held-out questions (:func:`sft_data`), TRL's ``SFTConfig`` and
  ``SFTTrainer`` from an :class:`~medreason_utils.config.SFTStageConfig`;
* :mod:`.grpo`: the GRPO prompts (:func:`grpo_prompts`), TRL's ``GRPOConfig`` and ``GRPOTrainer``
  from a :class:`~medreason_utils.config.GRPOStageConfig` (rewards from its ``rewards`` section);
* written out in plain torch for teaching and baselines (imported from their modules, not here):
  :mod:`.grpo_from_scratch` (GRPO's loss, checked against TRL's ``GRPOTrainer``; notebook 05) and
  :mod:`.ppo` (a PPO baseline with a value head).

TRL is imported when a function is called. On a GPU, import ``unsloth`` first (the set-up cell
does), so that Unsloth patches the TRL trainers.
"""

from .grpo import (GRPOPrompts, check_cpu_rollout_engine, checkpoint_problem, completions_table, evaluate_rewards, filter_by_pass_rate, grpo_config, grpo_config_kwargs, grpo_prompts,
                   grpo_trainer, last_checkpoint, mix_counts, order_by_pass_rate, prompt_budget_counts, source_prompts)
from .sft import SFTData, sft_config, sft_config_kwargs, sft_data, sft_trainer

__all__ = [
    "check_cpu_rollout_engine",
    "SFTData",
    "sft_data",
    "sft_config_kwargs",
    "sft_config",
    "sft_trainer",
    "GRPOPrompts",
    "grpo_prompts",
    "grpo_config_kwargs",
    "grpo_config",
    "grpo_trainer",
    "source_prompts",
    "prompt_budget_counts",
    "mix_counts",
    "order_by_pass_rate",
    "filter_by_pass_rate",
    "last_checkpoint",
    "checkpoint_problem",
    "completions_table",
    "evaluate_rewards",
]
