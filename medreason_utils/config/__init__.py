"""Settings: the stage configs (:mod:`.stages`), the YAML recipes they are read from (:mod:`.recipes`),
the length budgets (:mod:`.budget`) and the checkout's folders (:mod:`.paths`).

A notebook's config cell::

    CONFIG = load_stage_config("sft", RECIPE, RUNTIME, OVERRIDES, run_dir=RUN_DIR)
    CONFIG  # every setting, its value and its help text
"""

from .budget import (
    COMPLETION_OVERHEAD_TOKENS,
    EVAL_MAX_SEQ_LENGTH,
    MAX_PROMPT_TOKENS,
    check_length_budget,
    check_prompt_lengths,
    stage_max_seq_length,
)
from .paths import DEFAULT_CHECKPOINT, RUNS_SETTING, checkpoints_dir, default_checkpoint, default_demo_adapter, default_run_dir, recipes_dir, repo_root
from .recipes import MACHINE_CLASSES, load_stage_config, read_recipe, recipe_for_runtime, recipe_path
from .stages import STAGES, EvalStageConfig, GRPOStageConfig, SFTStageConfig, StageConfig

__all__ = [
    "StageConfig",
    "SFTStageConfig",
    "GRPOStageConfig",
    "EvalStageConfig",
    "STAGES",
    "MACHINE_CLASSES",
    "load_stage_config",
    "read_recipe",
    "recipe_for_runtime",
    "recipe_path",
    "repo_root",
    "checkpoints_dir",
    "recipes_dir",
    "DEFAULT_CHECKPOINT",
    "default_checkpoint",
    "RUNS_SETTING",
    "default_run_dir",
    "default_demo_adapter",
    "MAX_PROMPT_TOKENS",
    "EVAL_MAX_SEQ_LENGTH",
    "COMPLETION_OVERHEAD_TOKENS",
    "stage_max_seq_length",
    "check_length_budget",
    "check_prompt_lengths",
]
