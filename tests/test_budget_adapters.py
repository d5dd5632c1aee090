"""Defect 1 of issue 19: ``stage_max_seq_length`` on a GPU for an SFT adapter given as a hub id, or not
written yet (another runtime's run folder). Runs without a GPU: a simulated GPU runtime, a real hub cache."""

from __future__ import annotations

import json

import pytest

from medreason_utils import models
from medreason_utils.config import stage_max_seq_length
from medreason_utils.models import RuntimeInfo

T4 = RuntimeInfo("cuda", "t4", "simulated Tesla T4", 14.7, False, preset={})


def _grpo(sft_adapter):
    return type("GRPOConfigStandIn", (), {"sft_adapter": sft_adapter})()


def _cached_hub_adapter(cache, repo_id: str, base: str) -> None:
    """A hub adapter laid out as huggingface_hub caches it (refs/main -> snapshots/<commit>/)."""
    commit = "0" * 40
    root = cache / ("models--" + repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 16, "peft_type": "LORA"}))


def test_hub_adapter_takes_its_base_models_preset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    _cached_hub_adapter(tmp_path, "someone/qwen3-sft", "unsloth/Qwen3-1.7B")
    expected = models.preset_for("unsloth/Qwen3-1.7B", T4)["max_seq_length"]
    assert stage_max_seq_length("grpo", _grpo("someone/qwen3-sft"), T4) == expected


def test_hub_adapter_that_cannot_be_read_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="someone/not-cached.*adapter_config.json"):
        stage_max_seq_length("grpo", _grpo("someone/not-cached"), T4)


@pytest.mark.parametrize("path", ["../runs/latest/sft_adapter", "/content/medreason/runs/latest/sft_adapter"])
def test_adapter_not_written_yet_says_which_notebook_writes_it(path):
    with pytest.raises(FileNotFoundError, match="notebook 01 writes RUN_DIR/sft_adapter.*same"):
        stage_max_seq_length("grpo", _grpo(path), T4)


def test_local_adapter_and_model_names_still_work():
    shipped = models.DEFAULT_GPU_MODEL
    assert stage_max_seq_length("grpo", _grpo(shipped), T4) == models.preset_for(shipped, T4)["max_seq_length"]
    assert stage_max_seq_length("grpo", _grpo(None), T4) == models.preset_for(None, T4)["max_seq_length"]
