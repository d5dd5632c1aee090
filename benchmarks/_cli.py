"""Run the ``medreason`` command line in a fresh process and read its run record: what the benchmarks that time
whole stages share (``cpu_training.py``, ``grpo_processes.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]


def run_cli(cmd: Sequence[str], out: Path, *, env: Mapping[str, str] | None = None, what: str = "") -> tuple[dict, float, float]:
    """Run ``cmd`` (a ``medreason`` command line writing into ``out``) from the repository root, offline (hub off),
    with ``env`` added to this process's environment. Returns ``(summary.json, wall seconds launch to exit, load
    average before)``. Raises ``RuntimeError`` with the last 3,000 characters of its output when it fails."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), cwd=ROOT, env=full_env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{what or ' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads((Path(out) / "summary.json").read_text()), wall, load
