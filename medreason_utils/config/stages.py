"""Stage settings for the notebooks: one profile for a CPU, one for a Colab GPU.

Each notebook's ``parameters`` cell holds every knob, ``None`` meaning "the profile's value
for this runtime". :func:`resolve` fills those in, so a headless run (papermill) changes only
what it names and the notebook prints the settings it actually used.

CPU figures come from ``../shared/notes/cpu-path.md`` (SmolLM2-135M on a 2-core CPU): SFT rows
with the reasoning capped at 96 tokens and the response at 64 reach about 0.85 strict format
after 2 epochs of 96 rows at lr 5e-4; longer rows or truncated rows teach it worse. GPU values
follow Unsloth's Colab GRPO notebooks (LoRA rank 16-32, lr 5e-6 for GRPO, 2e-4 for SFT).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["PROFILES", "resolve", "repo_root", "checkpoints_dir", "DEFAULT_CHECKPOINT", "default_checkpoint"]

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "sft": {
        "cpu": {
            "data": "sample:medical_o1_sft",
            "n_train": 96,  # rows trained on
            "n_heldout": 40,  # questions held out of SFT and GRPO for format compliance
            "max_reasoning_tokens": 64,  # CoT cap (tokens), cut at a sentence end
            "max_response_tokens": 48,  # response cap (tokens)
            "epochs": 2,
            "max_steps": -1,  # -1: epochs decide
            "learning_rate": 5e-4,
            "batch_size": 4,
            "grad_accum": 1,
            "lora_rank": 16,
            "max_seq_length": 512,
            "eval_max_new_tokens": 256,
            "eval_batch_size": 20,
        },
        "gpu": {
            "data": "medical_o1_sft",  # FreedomIntelligence/medical-o1-reasoning-SFT (en)
            "n_train": 4000,
            "n_heldout": 100,
            "max_reasoning_tokens": 768,
            "max_response_tokens": 256,
            "epochs": 1,
            "max_steps": -1,
            "learning_rate": 2e-4,
            "batch_size": 4,
            "grad_accum": 4,
            "lora_rank": None,  # the GPU preset (16 on a T4, 32 on an A100)
            "max_seq_length": None,  # the GPU preset
            "eval_max_new_tokens": 1024,
            "eval_batch_size": 64,
        },
    },
    "grpo": {
        "cpu": {
            "data": "sample:medical_o1_verifiable",
            "n_prompts": 64,
            "max_steps": 8,
            "num_generations": 4,  # completions per prompt (the group)
            "batch_size": 4,  # completions per step (one group on CPU)
            "grad_accum": 1,
            "max_completion_length": 160,  # tokens; SFT rows are ~130 tokens of THINK+ANSWER
            "learning_rate": 2e-5,
            "temperature": 1.0,
        },
        "gpu": {
            "data": "medical_o1_verifiable",  # FreedomIntelligence/medical-o1-verifiable-problem
            "n_prompts": 4000,
            "max_steps": 300,
            "num_generations": 8,
            "batch_size": 8,
            "grad_accum": 1,
            "max_completion_length": 1024,
            "learning_rate": 5e-6,
            "temperature": 1.0,
        },
    },
    "eval": {
        "cpu": {"limit": 40, "max_new_tokens": 160, "batch_size": 20},  # trained completions are ~130 tokens
        "gpu": {"limit": None, "max_new_tokens": 1024, "batch_size": 64},  # full 1,273 / 4,183
    },
}


def resolve(stage: str, on_gpu: bool, **overrides: Any) -> dict[str, Any]:
    """The settings of ``stage`` ("sft", "grpo", "eval") for the runtime, with every override that is not ``None`` applied.

    Raises ``KeyError`` for an unknown stage or an override that is not a setting of the stage.
    """
    if stage not in PROFILES:
        raise KeyError(f"unknown stage {stage!r}; known: {sorted(PROFILES)}")
    base = dict(PROFILES[stage]["gpu" if on_gpu else "cpu"])
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise KeyError(f"{stage} has no setting(s) {unknown}; known: {sorted(base)}")
    base.update({k: v for k, v in overrides.items() if v is not None})
    return base


def repo_root() -> Path:
    """The checkout's root (the folder holding ``checkpoints/`` and ``notebooks/``), or the current folder
    when the package is installed without a checkout. ``$MEDREASON_ROOT`` overrides."""
    env = os.environ.get("MEDREASON_ROOT")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2]
    return here if (here / "notebooks").is_dir() or (here / "checkpoints").is_dir() else Path.cwd()


def checkpoints_dir() -> Path:
    return repo_root() / "checkpoints"


#: Folder name of the adapter the CPU pipeline trains and ships.
DEFAULT_CHECKPOINT = "medreason-smollm2-135m-grpo"


def default_checkpoint() -> Path:
    """Path of the shipped LoRA checkpoint (``checkpoints/medreason-smollm2-135m-grpo``)."""
    return checkpoints_dir() / DEFAULT_CHECKPOINT
