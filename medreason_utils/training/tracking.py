"""Experiment tracking through TRL's own ``report_to`` (transformers' integrations), offline first.

* ``tensorboard`` (pinned in ``requirements-cpu.txt``): transformers' ``TensorBoardCallback`` writes
  event files into ``<output_dir>/runs/<date>_<host>/`` (transformers 5 has no ``logging_dir``
  argument; ``$TENSORBOARD_LOGGING_DIR`` overrides it). The trainers' ``output_dir`` lies in the run
  folder (``RUN_DIR/sft_trainer``, ``RUN_DIR/grpo_trainer``), so the logs do too: offline, nothing sent.
* ``wandb``: kept only where a key is set (``$WANDB_API_KEY``, or ``$WANDB_MODE=offline``) and the
  package is installed; otherwise dropped with a logged warning, never required.
* anything else TRL accepts (``trackio``, ``mlflow``, ...) passes through unchanged.

:func:`report_to` normalises a recipe's value; :func:`tracker_logs` finds the event files of a run
folder and says how to open them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["report_to", "tracker_logs", "tracker_help"]

logger = logging.getLogger(__name__)

#: Event files TensorBoard's ``SummaryWriter`` writes (``events.out.tfevents.<time>.<host>.<pid>.<n>``).
EVENT_GLOB = "events.out.tfevents.*"


def report_to(value: str | Sequence[str] | None, *, env: Mapping[str, str] | None = None) -> list[str]:
    """TRL's ``report_to`` (a list) from a recipe's value: ``None``/``"none"``/``[]`` -> ``["none"]``;
    a name or a list of names otherwise, ``"wandb"`` dropped unless a key is set (``$WANDB_API_KEY``,
    or ``$WANDB_MODE`` ``offline``/``disabled``) and ``wandb`` is importable.

    Raises ``ValueError`` for ``"all"`` (it would turn on every installed integration, wandb included)
    and ``ImportError`` naming the package when ``tensorboard`` is asked for and not installed.
    """
    env = os.environ if env is None else env
    names = [] if value is None else [value] if isinstance(value, str) else list(value)
    names = [n for n in (str(n).strip() for n in names) if n and n != "none"]
    if "all" in names:
        raise ValueError("report_to: 'all' turns on every installed tracker (wandb included); name them, e.g. [tensorboard]")
    out = []
    for name in names:
        if name == "wandb":
            keyed = bool(env.get("WANDB_API_KEY")) or env.get("WANDB_MODE") in ("offline", "disabled")
            if not keyed or importlib.util.find_spec("wandb") is None:
                logger.warning("report_to: wandb dropped (%s)", "no WANDB_API_KEY set" if not keyed else "wandb not installed")
                continue
        if name == "tensorboard" and importlib.util.find_spec("tensorboard") is None \
                and importlib.util.find_spec("tensorboardX") is None:
            raise ImportError("report_to: tensorboard is not installed (pip install tensorboard; requirements-cpu.txt pins it)")
        if name not in out:
            out.append(name)
    return out or ["none"]


def tracker_logs(run_dir: str | Path) -> dict[str, Any]:
    """Where the tracker logs of a run folder are: ``{"tensorboard": [folders holding event files,
    relative to run_dir, sorted], "event_files": count, "command": "tensorboard --logdir RUN_DIR"
    or None when there are none}``. Reads only file names."""
    run_dir = Path(run_dir)
    files = sorted(run_dir.rglob(EVENT_GLOB)) if run_dir.is_dir() else []
    folders = sorted({str(f.parent.relative_to(run_dir)) for f in files})
    return {"tensorboard": folders, "event_files": len(files),
            "command": f"tensorboard --logdir {run_dir}" if files else None}


def tracker_help(run_dir: str | Path) -> str:
    """Markdown for a notebook: where the run's TensorBoard logs are and how to open them (a terminal,
    or ``%load_ext tensorboard`` / ``%tensorboard --logdir ...`` in Jupyter or Colab)."""
    logs = tracker_logs(run_dir)
    if not logs["event_files"]:
        return (f"No tracker logs under `{run_dir}`: set `report_to: [tensorboard]` in the recipe "
                "(or `wandb` with `WANDB_API_KEY` set) and train again.")
    where = "\n".join(f"- `{run_dir}/{f}`" for f in logs["tensorboard"])
    return (f"TensorBoard logs ({logs['event_files']} event files):\n{where}\n\n"
            f"Open them: `{logs['command']}` in a terminal, then http://localhost:6006; "
            f"in Jupyter or Colab: `%load_ext tensorboard` then `%tensorboard --logdir {run_dir}`.")
