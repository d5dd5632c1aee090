"""Where the checkout's folders are: the root, ``checkpoints/``, ``recipes/``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["RUNS_SETTING", "default_run_dir", "default_demo_adapter", "repo_root", "checkpoints_dir", "recipes_dir", "DEFAULT_CHECKPOINT", "default_checkpoint"]


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


#: Environment variable naming the folder that holds the run folders; the Colab set-up cell sets it to
#: ``<Drive>/MyDrive/medreason/runs`` when Drive is mounted.
RUNS_SETTING = "MEDREASON_RUNS"


def default_run_dir(run_name: str = "latest") -> Path:
    """The run folder of ``run_name`` that every notebook's ``RUN_DIR = None`` means.

    ``$MEDREASON_RUNS/<run_name>`` when set (on Colab the set-up cell sets it to
    ``/content/drive/MyDrive/medreason/runs``, a folder that outlives the runtime and is the same in every
    notebook), else ``../runs/<run_name>`` (relative to the notebooks folder, as ``make run`` has it).
    Raises ``ValueError`` for a ``run_name`` that is empty or holds a path separator or ``..``.
    """
    name = str(run_name)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"RUN_NAME {run_name!r}: one folder name, e.g. 'latest' or 'qwen3-t4-dec04' (no '/', not empty)")
    root = os.environ.get(RUNS_SETTING)
    return (Path(root) if root else Path("..") / "runs") / name


def default_demo_adapter(run_dir: str | os.PathLike | None) -> Path:
    """The adapter notebook 04 loads when ``CHECKPOINT = None``: the run's GRPO adapter
    (``<run_dir>/grpo_adapter``, written by notebook 02) when it holds an ``adapter_config.json``,
    else the shipped checkpoint (:func:`default_checkpoint`)."""
    if run_dir is not None:
        grpo = Path(run_dir) / "grpo_adapter"
        if (grpo / "adapter_config.json").is_file():
            return grpo
    return default_checkpoint()
