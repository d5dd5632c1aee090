"""Notebooks 01-02's PUSH_TO_HUB: :func:`medreason_utils.pipeline.reporting.push_adapter` pushes a stage's saved
adapter with its model card through ``huggingface_hub.HfApi`` (issue 19). The Hub is unreachable here, so
``HfApi.create_repo`` / ``upload_folder`` are replaced by recorders; the adapter is the shipped one (real files),
the card is huggingface_hub's ``ModelCard``, and an unreachable endpoint is a real refused connection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from medreason_utils import config
from medreason_utils.pipeline.reporting import (
    push_adapter,
    read_summary,
    update_summary,
)

TOKEN = "hf_test_token_never_shown_0123456789"
SECTION = {"steps": 12, "final_loss": 1.25, "format_compliance_after": 0.9,
           "config": {"data": "sample:medical_o1_sft", "base_model": "offline:smollm2-135m-instruct"}}


def _run(tmp_path: Path, stage: str = "sft", **extra) -> SimpleNamespace:
    """A stage's record as notebook 01/02 holds it after ``finish_sft`` / ``finish_grpo``: the saved adapter in the
    run folder, the section it wrote to summary.json, accelerate's state."""
    run_dir = tmp_path / "run"
    adapter = run_dir / f"{stage}_adapter"
    shutil.copytree(config.default_checkpoint(), adapter)
    update_summary(run_dir, stage, SECTION)
    fields = {"adapter_dir": adapter, "run_dir": run_dir, "section": dict(SECTION), "state": SimpleNamespace(is_main_process=True)}
    return SimpleNamespace(**{**fields, **extra})


@pytest.fixture
def hub(monkeypatch):
    """HfApi's two calls recorded (with the token the client was built with) instead of sent."""
    from huggingface_hub import HfApi

    calls = []

    def create_repo(self, **kwargs):
        calls.append(("create_repo", self.token, kwargs))
        return SimpleNamespace(repo_id=kwargs["repo_id"])

    def upload_folder(self, **kwargs):
        calls.append(("upload_folder", self.token, {**kwargs, "files": sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())}))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    return calls


def test_push_to_hub_none_does_nothing(tmp_path, hub):
    run = _run(tmp_path)
    card_before = (run.adapter_dir / "README.md").read_bytes() if (run.adapter_dir / "README.md").exists() else None
    assert push_adapter(run, None, env={"HF_TOKEN": TOKEN}) is None
    assert hub == []
    after = run.adapter_dir / "README.md"
    assert (after.read_bytes() if after.exists() else None) == card_before
    assert "hub" not in read_summary(run.run_dir)["sft"]


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_push_sends_the_adapter_with_its_card_and_records_the_commit(tmp_path, hub, capsys, stage):
    run = _run(tmp_path, stage)
    url = push_adapter(run, "someone/medreason-sft", env={"HF_TOKEN": TOKEN})
    assert url == "https://huggingface.co/someone/medreason-sft/commit/abc123"
    (name1, token1, create), (name2, token2, upload) = hub
    assert (name1, name2) == ("create_repo", "upload_folder") and token1 == token2 == TOKEN
    assert create == {"repo_id": "someone/medreason-sft", "repo_type": "model", "private": True, "exist_ok": True}
    assert upload["folder_path"] == str(run.adapter_dir) and upload["repo_type"] == "model"
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(upload["files"])
    # the card: huggingface_hub's metadata, the adapter's own base model, the stage's figures
    from huggingface_hub import ModelCard

    card = ModelCard.load(run.adapter_dir / "README.md")
    base = json.loads((run.adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert card.data.base_model == base and card.data.library_name == "peft" and stage in card.data.tags
    assert f"medreason {stage.upper()} LoRA adapter" in card.text and "- steps: 12" in card.text and "not a medical tool" in card.text
    # recorded in the stage's section; the token nowhere
    assert read_summary(run.run_dir)[stage]["hub"] == {"repo_id": "someone/medreason-sft", "commit_url": url}
    out = capsys.readouterr()
    written = "".join(p.read_text(errors="ignore") for p in run.run_dir.rglob("*") if p.is_file() and p.suffix in (".json", ".md"))
    assert TOKEN not in out.out + out.err + written


def test_push_refuses_without_token_or_adapter_and_bad_ids(tmp_path, hub, monkeypatch):
    run = _run(tmp_path)
    with pytest.raises(PermissionError, match="HF_TOKEN"):
        push_adapter(run, "someone/adapter", env={})
    with pytest.raises(ValueError, match="owner/name"):
        push_adapter(run, "no-owner", env={"HF_TOKEN": TOKEN})
    with pytest.raises(RuntimeError, match="run the training cell first"):
        push_adapter(SimpleNamespace(adapter_dir=None, state=None), "someone/adapter", env={"HF_TOKEN": TOKEN})
    # other processes of a multi-GPU run leave the push to the main one
    worker = _run(tmp_path / "w", state=SimpleNamespace(is_main_process=False))
    assert push_adapter(worker, "someone/adapter", env={"HF_TOKEN": TOKEN}) is None
    assert hub == []


def test_unreachable_hub_is_a_connection_error_naming_it(tmp_path):
    """Real huggingface_hub against a port nothing listens on: the error names the endpoint and the repo."""
    run = _run(tmp_path)
    with pytest.raises(ConnectionError, match="127.0.0.1:9.*someone/adapter"):
        push_adapter(run, "someone/adapter", env={"HF_TOKEN": TOKEN}, endpoint="http://127.0.0.1:9")


@pytest.mark.parametrize("name, stage, var", [("01_sft_format.ipynb", "sft", "sft"), ("02_grpo_training.ipynb", "grpo", "grpo")])
def test_notebook_parameter_and_push_cell(tmp_path, hub, capsys, monkeypatch, name, stage, var):
    """Notebooks 01-02 declare ``PUSH_TO_HUB = None`` in their parameters cell; their push cell, run as a kernel runs
    it after the stage (its record in ``sft`` / ``grpo``), pushes nothing with None and the adapter with a repo id."""
    import ast

    import nbformat

    nb = nbformat.read(str(config.repo_root() / "notebooks" / name), as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    declared = {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(params.source).body if isinstance(n, ast.Assign)}
    assert "PUSH_TO_HUB" in declared and declared["PUSH_TO_HUB"] is None
    cell = [c.source for c in nb.cells if c.cell_type == "code" and "push_adapter" in c.source]
    assert len(cell) == 1
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the notebook's token comes from the environment (or Colab's secret)
    run = _run(tmp_path, stage)
    exec(compile(cell[0], name, "exec"), {var: run, "PUSH_TO_HUB": None})  # noqa: S102 - the notebook's own cell
    assert hub == []
    exec(compile(cell[0], name, "exec"), {var: run, "PUSH_TO_HUB": "someone/x"})  # noqa: S102
    assert [c[0] for c in hub] == ["create_repo", "upload_folder"] and hub[1][2]["folder_path"] == str(run.adapter_dir)
    assert "pushed: https://huggingface.co/someone/x/commit/abc123" in capsys.readouterr().out


def test_the_command_line_checks_the_push_before_training_and_exits_2(tmp_path, monkeypatch, capsys):
    """`medreason sft|grpo --push_adapter_to` refuses a push it could not make at the end (no token, not owner/name)
    before anything loads or trains: exit status 2, the message naming HF_TOKEN / the id, no run folder written."""
    from medreason_utils.pipeline.cli import main, parse

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "run"
    assert parse(["sft", "--config", "cpu", "--output_dir", str(out), "--push_adapter_to", "me/x"]).push_to == "me/x"
    assert parse(["sft", "--config", "cpu", "--output_dir", str(out)]).push_to is None
    assert main(["sft", "--config", "cpu", "--output_dir", str(out), "--push_adapter_to", "me/x"]) == 2
    assert "HF_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    assert main(["grpo", "--config", "cpu", "--output_dir", str(out), "--push_adapter_to", "not-a-repo-id"]) == 2
    err = capsys.readouterr().err
    assert "owner/name" in err and "hf_secret_value" not in err
    assert not out.exists()
