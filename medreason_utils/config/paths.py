"""Where the checkout's folders are: the root, ``checkpoints/``, ``recipes/``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "checkpoints_dir", "recipes_dir", "DEFAULT_CHECKPOINT", "default_checkpoint"]


def repo_root() -> Path:
    """The checkout's root (the folder holding ``checkpoints/`` and ``notebooks/``), or the current folder
    when the package is installed without a checkout. ``$MEDREASON_ROOT`` overrides."""
    env = os.environ.get("MEDREASON_ROOT")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2]
    return here if (here / "notebooks").is_dir() or (here / "checkpoints").is_dir() else Path.cwd()


def checkpoints_dir() -> Path:
    """``checkpoints/`` of the checkout (the shipped adapter lives there)."""
    return repo_root() / "checkpoints"


def recipes_dir() -> Path:
    """``recipes/`` of the checkout: one folder per machine class (``cpu``, ``t4``, ``a100``), one YAML file per stage."""
    return repo_root() / "recipes"


#: Folder name of the adapter the CPU pipeline trains and ships.
DEFAULT_CHECKPOINT = "medreason-smollm2-135m-grpo"


def default_checkpoint() -> Path:
    """Path of the shipped LoRA checkpoint (``checkpoints/medreason-smollm2-135m-grpo``)."""
    return checkpoints_dir() / DEFAULT_CHECKPOINT
