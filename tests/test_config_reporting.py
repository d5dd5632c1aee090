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
    assert on_disk["grpo"]["path"] == str(tmp_path)


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
        "eval": {"table": [{"model": "grpo", "benchmark": "medqa", "n": 40, "exact_match": 0.25, "format_compliance": 0.9}]},
    }
    card = reporting.write_model_card(tmp_path, summary, machine="2-core CPU", date="2026-11-21").read_text()
    assert "not a medical tool" in card
    assert "after SFT 0.85" in card and "grpo on medqa (n=40)" in card and "2026-11-21" in card


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
