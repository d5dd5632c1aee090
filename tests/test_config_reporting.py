"""Paths of the checkout, run records (summary.json, reward curves, model card) and the pipeline's checkpoint publishing."""

from __future__ import annotations

import json

import pytest

from medreason_utils import config
from medreason_utils.pipeline import reporting


def test_default_checkpoint_lives_in_checkpoints_folder_of_the_checkout():
    assert config.default_checkpoint().parent == config.repo_root() / "checkpoints"
    assert (config.repo_root() / "notebooks").is_dir()


def test_update_summary_merges_sections_and_writes_nan_as_null(tmp_path):
    reporting.update_summary(tmp_path, "sft", {"a": 1, "b": float("nan")})
    reporting.update_summary(tmp_path, "sft", {"c": [1.5, None]})
    out = reporting.update_summary(tmp_path, "grpo", {"path": tmp_path})
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == out
    assert on_disk["sft"] == {"a": 1, "b": None, "c": [1.5, None]}
    assert on_disk["grpo"]["path"] == "."  # the run folder itself, relative to the run folder


def _absolute_strings(value, at=""):
    """(where, string) for every string in ``value`` that is or holds an absolute path."""
    import os

    if isinstance(value, dict):
        return [x for k, v in value.items() for x in _absolute_strings(k, f"{at} key") + _absolute_strings(v, f"{at}.{k}")]
    if isinstance(value, list):
        return [x for i, v in enumerate(value) for x in _absolute_strings(v, f"{at}[{i}]")]
    if isinstance(value, str) and (os.path.isabs(value) or str(config.repo_root()) in value or "/tmp/" in value):
        return [(at, value)]
    return []


def test_summary_records_paths_relative_to_the_run_folder_or_the_repository(tmp_path):
    """What notebooks 01-04 write (adapter folders of the run, the recipe, the demo's checkpoint)
    holds no folder of the machine it ran on, so a shipped summary.json names none."""
    run = tmp_path / "runs" / "latest"
    reporting.update_summary(run, "sft", {"config": {"recipe": f"{config.repo_root()}/recipes/mine.yaml + overrides {{'n': 1}}",
                                                     "data": "sample:medical_o1_sft", "output": run / "sft_adapter"}})
    reporting.update_summary(run, "grpo", {"config": {"sft_adapter": str(run / "sft_adapter"), "data": {f"{run}/mix.jsonl": 1.0}}})
    reporting.update_summary(run, "eval", {"config": {"adapters": {"base": None, "sft": f"{run}/sft_adapter", "grpo": f"{run}/grpo_adapter"}}})
    reporting.update_summary(run, "demo", {"checkpoint": str(config.default_checkpoint())})  # as notebook 04 writes it
    summary = json.loads((run / "summary.json").read_text())
    assert _absolute_strings(summary) == []
    assert summary["demo"]["checkpoint"] == "checkpoints/medreason-smollm2-135m-grpo"
    assert summary["eval"]["config"]["adapters"] == {"base": None, "sft": "sft_adapter", "grpo": "grpo_adapter"}
    assert summary["sft"]["config"]["recipe"] == "recipes/mine.yaml + overrides {'n': 1}"
    assert summary["grpo"]["config"]["data"] == {"mix.jsonl": 1.0}
    # a path elsewhere is kept, and a folder that merely starts like the run folder is not cut
    assert reporting.relative_paths({"x": f"{run}x/y", "y": "/etc/hosts"}, run) == {"x": f"{run}x/y", "y": "/etc/hosts"}


def test_published_checkpoint_summary_holds_no_absolute_path(tmp_path, monkeypatch):
    """publish_checkpoint writes the run's summary with relative paths, also one written with
    absolute paths (before update_summary made them relative)."""
    from medreason_utils.pipeline.run import publish_checkpoint

    repo = tmp_path / "repo"
    monkeypatch.setenv("MEDREASON_ROOT", str(repo))
    run = repo / "runs" / "latest"
    (run / "grpo_adapter").mkdir(parents=True)
    (run / "grpo_adapter" / "adapter_model.safetensors").write_bytes(b"0")
    old = {"demo": {"checkpoint": f"{repo}/checkpoints/medreason-smollm2-135m-grpo"}, "grpo": {"config": {"sft_adapter": f"{run}/sft_adapter"}}}
    (run / "summary.json").write_text(json.dumps(old))
    dst = publish_checkpoint(run, date="2026-11-24")
    published = json.loads((dst / "summary.json").read_text())
    assert dst == repo / "checkpoints" / "medreason-smollm2-135m-grpo"
    assert _absolute_strings(published) == [] and published["grpo"]["config"]["sft_adapter"] == "sft_adapter"


def test_shipped_checkpoint_summaries_hold_no_absolute_path():
    paths = sorted((config.repo_root() / "checkpoints").glob("*/summary.json"))
    assert paths, "a checkpoint with its summary.json is shipped"
    for path in paths:
        assert _absolute_strings(json.loads(path.read_text())) == [], path


def _grpo_log_history():
    # the shape TRL 1.16's GRPOTrainer leaves in trainer.state.log_history with logging_steps=1
    return [
        {"step": 1, "reward": 1.0, "rewards/strict_format_reward/mean": 0.0, "rewards/correctness_reward/mean": -2.0},
        {"step": 2, "reward": 2.0, "rewards/strict_format_reward/mean": 3.0, "rewards/correctness_reward/mean": 1.5},
        {"step": 2, "train_runtime": 10.0},
    ]


def test_reward_history_reads_each_reward_per_step():
    h = reporting.reward_history(_grpo_log_history(), ["strict_format_reward", "correctness_reward", "partial_format_reward"])
    assert h["step"] == [1, 2]
    assert h["strict_format_reward"] == [0.0, 3.0]
    assert h["correctness_reward"] == [-2.0, 1.5]
    assert h["partial_format_reward"] == [None, None]
    assert h["reward"] == [1.0, 2.0]


def test_plot_reward_curves_writes_a_png_and_refuses_an_empty_history(tmp_path):
    h = reporting.reward_history(_grpo_log_history(), ["strict_format_reward", "correctness_reward"])
    png = reporting.plot_reward_curves(h, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no logged steps"):
        reporting.plot_reward_curves({"step": []}, tmp_path / "empty.png")


def test_model_card_states_figures_and_that_it_is_not_a_medical_tool(tmp_path):
    summary = {
        "sft": {"n_train": 96, "n_heldout": 40, "steps": 48, "format_compliance_before": 0.0, "format_compliance_after": 0.85},
        "grpo": {"steps": 8, "num_generations": 4, "verifier": "RuleBasedVerifier"},
        "eval": {"table": [{"model": "grpo", "benchmark": "medqa", "n": 40, "exact_match": 0.25, "format_compliance": 0.9},
                           {"model": "base (plain prompt)", "benchmark": "medqa", "n": 40, "exact_match": 0.0, "plain_match": 0.3,
                            "reading": "plain", "score": 0.3, "format_compliance": 0.0}]},
    }
    card = reporting.write_model_card(tmp_path, summary, machine="2-core CPU", date="2026-11-21").read_text()
    assert "not a medical tool" in card
    assert "after SFT 0.85" in card and "grpo on medqa (n=40)" in card and "2026-11-21" in card
    assert "base (plain prompt) on medqa (n=40): score 0.3 (plain reading), exact match 0.0, plain reading 0.3" in card


def test_publish_checkpoint_refuses_a_run_without_grpo_adapter(tmp_path):
    from medreason_utils.pipeline.run import publish_checkpoint

    with pytest.raises(FileNotFoundError, match="grpo_adapter"):
        publish_checkpoint(tmp_path)


def test_smoke_parameters_name_real_parameters_of_each_notebook():
    import nbformat

    from medreason_utils.config import STAGES
    from medreason_utils.pipeline.run import RECIPE_NOTEBOOKS, SMOKE_PARAMETERS

    stage_of = dict(zip(RECIPE_NOTEBOOKS, ("sft", "grpo", "eval")))
    for name, params in SMOKE_PARAMETERS.items():
        nb = nbformat.read(str(config.repo_root() / "notebooks" / name), as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        declared = {line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line and not line.startswith("#")}
        assert set(params) <= declared, f"{name}: smoke parameters {set(params) - declared} are not in its parameters cell"
        if name in stage_of:
            assert {"RECIPE", "OVERRIDES"} <= declared
            fields = {f.name for f in __import__("dataclasses").fields(STAGES[stage_of[name]])}
            assert set(params["OVERRIDES"]) <= fields, f"{name}: OVERRIDES {set(params['OVERRIDES']) - fields} are not settings"


def test_model_card_reads_settings_from_the_resolved_config_section(tmp_path):
    summary = {"sft": {"config": {"n_train": 96, "n_heldout": 40, "lora_rank": 16}, "steps": 48, "format_compliance_after": 0.9}}
    card = reporting.write_model_card(tmp_path, summary, machine="m", date="d").read_text()
    assert "- SFT: 96 rows" in card and "LoRA r=16" in card and "48 steps" in card and "on 40 held-out" in card


# -- run records that cannot be read (issue 17) -----------------------------------------------------------------


def test_truncated_summary_json_is_an_error_naming_the_file_when_read(tmp_path):
    from medreason_utils.fileio import CorruptFileError

    (tmp_path / "summary.json").write_text('{"sft": {"n_train": 12, "config": {"da')
    with pytest.raises(CorruptFileError, match=rf"run record {tmp_path / 'summary.json'}:1:\d+: not valid JSON"):
        reporting.read_summary(tmp_path)
    (tmp_path / "summary.json").write_text("[1, 2]")
    with pytest.raises(CorruptFileError, match="expected a JSON dict, found list"):
        reporting.read_summary(tmp_path)


def test_truncated_summary_json_does_not_cost_a_finished_stage_its_record(tmp_path, caplog):
    """The stage trained for hours, then writes its section: the corrupt file is kept aside, the record is written."""
    import logging

    cut = '{"sft": {"n_train": 12, "config": {"da'
    (tmp_path / "summary.json").write_text(cut)
    with caplog.at_level(logging.WARNING):
        out = reporting.update_summary(tmp_path, "grpo", {"steps": 30})
    kept = sorted(tmp_path.glob("summary.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == cut  # nothing of the old file lost
    assert out == {"corrupt_records_kept": [kept[0].name], "grpo": {"steps": 30}}
    assert reporting.read_summary(tmp_path) == out
    assert kept[0].name in caplog.text and "summary.json" in caplog.text


def test_publish_checkpoint_interrupted_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    from medreason_utils.pipeline import run as run_mod

    repo = tmp_path / "repo"
    monkeypatch.setenv("MEDREASON_ROOT", str(repo))
    run = repo / "runs" / "latest"
    (run / "grpo_adapter").mkdir(parents=True)
    (run / "grpo_adapter" / "adapter_model.safetensors").write_bytes(b"new weights")
    reporting.update_summary(run, "grpo", {"steps": 2})
    dst = run_mod.publish_checkpoint(run, date="2026-12-01")
    assert (dst / "adapter_model.safetensors").read_bytes() == b"new weights" and (dst / "README.md").is_file()
    (run / "grpo_adapter" / "adapter_model.safetensors").write_bytes(b"newer weights")

    def killed(*a, **k):
        raise KeyboardInterrupt("the runtime was stopped while publishing")

    monkeypatch.setattr(run_mod, "write_model_card", killed)
    with pytest.raises(KeyboardInterrupt):
        run_mod.publish_checkpoint(run, date="2026-12-02")
    assert (dst / "adapter_model.safetensors").read_bytes() == b"new weights"  # the old one, whole
    assert sorted(p.name for p in dst.parent.iterdir()) == [dst.name]  # no temporary folder left


def test_read_json_names_an_empty_or_non_utf8_file(tmp_path):
    from medreason_utils.fileio import CorruptFileError, read_json

    (tmp_path / "meta.json").write_bytes(b"")
    with pytest.raises(CorruptFileError, match=r"meta.json is empty"):
        read_json(tmp_path / "meta.json", what="evaluation meta")
    (tmp_path / "meta.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(CorruptFileError, match=r"meta.json: not UTF-8 text \(byte 7\)"):
        read_json(tmp_path / "meta.json")
    with pytest.raises(FileNotFoundError, match="held-out list .*nope.json does not exist"):
        read_json(tmp_path / "nope.json", what="held-out list")
