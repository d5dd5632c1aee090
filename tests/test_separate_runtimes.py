"""Issue 19: on Colab every notebook runs on its own runtime. Notebook 01 runs in one fresh clone, then
notebooks 02, 03 and 04 each in another fresh clone (each clone deleted before the next starts), sharing only
the run folder, a path outside every clone: what a notebook needs from an earlier one must be in the run
folder. Smallest settings (``SMOKE_PARAMETERS``), passed as parameters (RUN_DIR, OVERRIDES). The clone is of
this checkout's committed HEAD (``git clone``), as a Colab runtime gets it from a fork."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("01_sft_format.ipynb", "02_grpo_training.ipynb", "03_evaluation.ipynb", "04_inference_demo.ipynb")


@pytest.mark.slow
@pytest.mark.notebooks
def test_notebooks_01_to_04_each_in_its_own_clone_share_only_the_run_folder(tmp_path, monkeypatch):
    from medreason_utils.pipeline.run import SMOKE_PARAMETERS, run_notebooks

    run = tmp_path / "drive" / "MyDrive" / "medreason" / "runs" / "separate"  # outside every clone
    for i, name in enumerate(ORDER):
        clone = tmp_path / f"runtime{i + 1}" / "medreason"
        subprocess.run(["git", "clone", "-q", "--", str(ROOT), str(clone)], check=True, timeout=300)
        assert not (clone / "runs").exists()
        monkeypatch.setenv("PYTHONPATH", str(clone))  # the kernel imports the clone's package, as on Colab
        monkeypatch.setenv("MEDREASON_ROOT", str(clone))
        run_notebooks(run, parameters=SMOKE_PARAMETERS, notebooks_dir=clone / "notebooks", only=[name], progress=False)
        assert not [p for p in clone.rglob("*_adapter") if p.is_dir()], f"{name} wrote an adapter into its clone"
        shutil.rmtree(clone.parent)  # the runtime ends: its files are gone
    summary = json.loads((run / "summary.json").read_text())
    assert {"sft", "grpo", "eval", "demo"} <= set(summary)
    assert summary["grpo"]["steps"] == SMOKE_PARAMETERS["02_grpo_training.ipynb"]["OVERRIDES"]["max_steps"]
    assert {r["model"] for r in summary["eval"]["table"]} >= {"sft", "grpo"}
    # 04 found 02's adapter on the shared folder (summary.json records paths relative to the run folder)
    assert (run / summary["demo"]["checkpoint"]).resolve() == (run / "grpo_adapter").resolve()
    for sub in ("sft_adapter", "grpo_adapter"):
        assert (run / sub / "adapter_config.json").is_file()
