"""Run the notebooks (01-05) headless, in order, with papermill: the suite's main job.

``python -m medreason_utils.pipeline --run-dir runs/NAME`` executes
``notebooks/01..04`` into ``runs/NAME/notebooks/`` with ``RUN_DIR`` set, so every notebook writes
its adapters, plots and figures into that folder; the figures collect in
``runs/NAME/summary.json`` together with each notebook's wall time and the total.
``--smoke`` runs the smallest settings (what the test suite uses). ``--publish-checkpoint``
copies the GRPO adapter into ``checkpoints/`` with a model card.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

from ..config import DEFAULT_CHECKPOINT, checkpoints_dir, repo_root
from ..fileio import atomic_directory, atomic_write_json
from .notebook_cells import NOTEBOOKS
from .reporting import read_summary, relative_paths, update_summary, write_model_card

__all__ = ["SMOKE_PARAMETERS", "MAIN_PARAMETERS", "RECIPE_NOTEBOOKS", "run_notebooks", "publish_checkpoint", "main"]

#: The smallest settings that still run every cell; the test suite executes the notebooks with these.
#: Notebooks 01-03 take their settings from a recipe and change single ones with ``OVERRIDES``.
SMOKE_PARAMETERS: dict[str, dict[str, Any]] = {
    "01_sft_format.ipynb": {
        "OVERRIDES": {
            "n_train": 8,  # two optimizer steps of 4 rows
            "n_heldout": 4,  # format compliance on 4 questions
            "num_train_epochs": 1,
            "max_reasoning_tokens": 32,
            "max_response_tokens": 16,
            "eval_max_new_tokens": 24,
        },
    },
    "02_grpo_training.ipynb": {
        # two GRPO steps, one group of 4 each; the reward evaluation on 2 held-out prompts x 2 completions
        "OVERRIDES": {"n_prompts": 8, "max_steps": 2, "max_completion_length": 24, "reward_eval_prompts": 2, "reward_eval_k": 2},
    },
    "03_evaluation.ipynb": {"OVERRIDES": {"limit": 4, "max_new_tokens": 24}},  # 4 items per benchmark
    "04_inference_demo.ipynb": {"MAX_NEW_TOKENS": 24},
    "05_grpo_from_scratch.ipynb": {  # one GRPO step of one group of 2 completions, checked against TRL
        "OVERRIDES": {"n_prompts": 2, "max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 2, "max_completion_length": 16},
    },
}

#: The main job's settings where they differ from a notebook's own: notebook 05 (GRPO written out
#: by hand, a teaching notebook, not a stage of the pipeline) runs two of the recipe's steps, its
#: check against TRL included, so that ``make run`` stays within 25 minutes on a 2-core CPU
#: (the recipe's 16 steps would add ~9 min); set ``OVERRIDES = {}`` in the notebook for all of them.
MAIN_PARAMETERS: dict[str, dict[str, Any]] = {
    "05_grpo_from_scratch.ipynb": {"OVERRIDES": {"max_steps": 2}},
}

#: The notebooks whose settings come from a recipe (they take ``RECIPE``).
RECIPE_NOTEBOOKS = ("01_sft_format.ipynb", "02_grpo_training.ipynb", "03_evaluation.ipynb", "05_grpo_from_scratch.ipynb")


def run_notebooks(
    run_dir: str | Path,
    *,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    notebooks_dir: str | Path | None = None,
    only: list[str] | None = None,
    recipe: str | None = None,
    kernel_name: str = "python3",
    progress: bool = True,
) -> dict:
    """Execute the notebooks in order into ``run_dir/notebooks`` and return the run's summary.

    Each notebook gets ``RUN_DIR`` (absolute) plus its entry of ``parameters``; notebooks 01-03 get
    ``RECIPE`` when ``recipe`` is given (a machine class of ``recipes/`` or a YAML file; ``None``:
    each notebook takes its machine's). A notebook that
    fails stops the run: papermill raises ``PapermillExecutionError`` naming the cell, and the
    partly executed notebook is kept in the run folder for reading.
    """
    import papermill as pm

    run = Path(run_dir).resolve()
    out_nb = run / "notebooks"
    out_nb.mkdir(parents=True, exist_ok=True)
    src = Path(notebooks_dir) if notebooks_dir else repo_root() / "notebooks"
    names = [n for n in NOTEBOOKS if not only or n in only]
    started = time.perf_counter()
    update_summary(
        run,
        "run",
        {
            "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
            "python": platform.python_version(),
        },
    )
    for name in names:
        params = {"RUN_DIR": str(run), **({"RECIPE": recipe} if recipe and name in RECIPE_NOTEBOOKS else {}),
                  **dict((parameters or {}).get(name, {}))}
        t0 = time.perf_counter()
        pm.execute_notebook(
            str(src / name),
            str(out_nb / name),
            parameters=params,
            kernel_name=kernel_name,
            cwd=str(src),
            progress_bar=progress,
            log_output=False,
        )
        update_summary(run, "timings_s", {name: round(time.perf_counter() - t0, 1)})
    update_summary(run, "timings_s", {"total": round(time.perf_counter() - started, 1)})
    return read_summary(run)


def publish_checkpoint(run_dir: str | Path, *, date: str | None = None) -> Path:
    """Copy ``run_dir/grpo_adapter`` to ``checkpoints/medreason-smollm2-135m-grpo`` with a model card
    and the run's summary, its paths relative to the run folder or the repository
    (:func:`~medreason_utils.pipeline.reporting.relative_paths`: no folder of the training machine).
    The copy is atomic (:func:`medreason_utils.fileio.atomic_directory`): an interrupted publish leaves the
    previous checkpoint in place. Raises ``FileNotFoundError`` when the run has no GRPO adapter and
    :class:`~medreason_utils.fileio.CorruptFileError` when its ``summary.json`` cannot be read (before copying)."""
    run = Path(run_dir)
    src = run / "grpo_adapter"
    if not (src / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(f"{src} holds no adapter_model.safetensors: did notebook 02 run?")
    dst = checkpoints_dir() / DEFAULT_CHECKPOINT
    summary = relative_paths(read_summary(run), run)  # a summary written before update_summary made paths relative
    with atomic_directory(dst) as tmp:  # the published folder is the old one or the new one whole, never half
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("checkpoint-*", "*.pt", "training_args.bin"), dirs_exist_ok=True)
        atomic_write_json(tmp / "summary.json", summary, indent=2, sort_keys=True)
        write_model_card(
            tmp, summary, machine=summary.get("run", {}).get("machine", "unknown"), date=date or _dt.date.today().isoformat()
        )
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Execute the five medreason notebooks headless.")
    parser.add_argument("--run-dir", required=True, help="output folder (executed notebooks, adapters, summary.json)")
    parser.add_argument("--smoke", action="store_true", help="smallest settings (as in the tests)")
    parser.add_argument("--only", nargs="*", help="run only these notebook files")
    parser.add_argument("--recipe", default=None, help="recipe of notebooks 01-03: cpu, t4, a100 or a YAML file (default: the machine's)")
    parser.add_argument("--publish-checkpoint", action="store_true", help="copy the GRPO adapter into checkpoints/")
    args = parser.parse_args(argv)
    summary = run_notebooks(args.run_dir, parameters=SMOKE_PARAMETERS if args.smoke else MAIN_PARAMETERS, only=args.only, recipe=args.recipe)
    if args.publish_checkpoint:
        print(f"published {publish_checkpoint(args.run_dir)}")
    total = summary.get("timings_s", {}).get("total")
    print(f"done in {total} s; summary: {Path(args.run_dir) / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
