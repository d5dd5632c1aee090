"""``medreason export``: notebook 04's export cell from a command line (one call, ``export.export_adapter``).

* user errors exit 2 with one line naming what was wrong (an unknown format, a push without a token, no such
  adapter, GGUF without a GPU), checked before anything is merged or written;
* the Hub push's arguments up to the network: ``huggingface_hub.HfApi``'s ``create_repo``/``upload_folder``
  replaced by recorders (the Hub is unreachable here); the token comes from ``$HF_TOKEN`` and is never printed;
  notebook 04's real export cell, run with the same settings, makes the same calls;
* (slow) on the shipped checkpoint the command writes a merged folder that plain transformers loads and whose
  greedy output is the adapter's, and the push sends that folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from medreason_utils.pipeline import cli
from test_tracking_export import SHIPPED, assert_merged_generates_as_the_adapter

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_04 = ROOT / "notebooks" / "04_inference_demo.ipynb"
SECRET = "hf_test_secret_never_printed"


@pytest.fixture
def no_token(monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def hub(monkeypatch):
    """``HfApi.create_repo`` / ``upload_folder`` record their keyword arguments and the client's token
    instead of calling the Hub; ``$HF_TOKEN`` is set."""
    from huggingface_hub import HfApi

    calls: list[tuple[str, str | None, dict]] = []

    def create_repo(self, **kwargs):
        calls.append(("create_repo", self.token, kwargs))
        return SimpleNamespace(repo_id=kwargs["repo_id"])

    def upload_folder(self, **kwargs):
        calls.append(("upload_folder", self.token, kwargs))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/0123abc")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    return calls


def _error_line(capsys, *needles: str) -> str:
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("medreason export: error:"), out.err
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


def _adapter_copy(dest: Path, *, card: bool) -> Path:
    shutil.copytree(SHIPPED, dest, ignore=None if card else shutil.ignore_patterns("README.md"))
    return dest


# -- user errors: exit 2, one line, nothing written ------------------------------------------------

def test_an_unknown_format_exits_2_naming_it_and_the_known_ones(tmp_path, capsys):
    assert cli.main(["export", "--output_dir", str(tmp_path), "--format", "merged_16bit,onnx"]) == 2
    _error_line(capsys, "'onnx'", "merged_16bit", "gguf", "adapter")
    assert list(tmp_path.iterdir()) == []


def test_a_push_without_a_token_exits_2_naming_hf_token_before_merging(tmp_path, capsys, no_token):
    assert cli.main(["export", "--output_dir", str(tmp_path), "--push_to_hub", "me/medreason"]) == 2
    _error_line(capsys, "HF_TOKEN")
    assert not (tmp_path / "merged_16bit").exists()  # checked before the (minutes-long on a big model) merge


def test_a_repo_id_that_is_not_owner_name_exits_2_naming_it(tmp_path, capsys, hub):
    assert cli.main(["export", "--output_dir", str(tmp_path), "--format", "adapter", "--push-to-hub", "medreason"]) == 2
    line = _error_line(capsys, "owner/name", "'medreason'")
    assert SECRET not in line and hub == []


def test_a_missing_adapter_folder_exits_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "no such run" / "grpo_adapter"
    assert cli.main(["export", "--adapter", str(missing), "--output_dir", str(tmp_path / "out")]) == 2
    _error_line(capsys, str(missing), "does not exist")
    assert not (tmp_path / "out").exists()


def test_gguf_without_a_cuda_gpu_exits_2_saying_what_to_do_instead(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: GGUF is Unsloth's to write here")
    assert cli.main(["export", "--output_dir", str(tmp_path), "--format", "merged_16bit", "--format", "gguf"]) == 2
    _error_line(capsys, "'gguf'", "CUDA", "merged_16bit", "convert_hf_to_gguf")
    assert list(tmp_path.iterdir()) == []


# -- the push up to the network call -----------------------------------------------------------

def test_the_adapter_push_sends_the_runs_grpo_adapter_with_a_card_and_the_token_from_the_environment(tmp_path, capsys, hub):
    run = tmp_path / "run"
    adapter = _adapter_copy(run / "grpo_adapter", card=False)  # notebook 04's default: the run's GRPO adapter
    assert cli.main(["export", "--output_dir", str(run), "--format", "adapter", "--push_to_hub", "me/medreason-135m"]) == 0
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert "https://huggingface.co/me/medreason-135m/commit/0123abc" in out.out and str(adapter) in out.out

    assert [name for name, _, _ in hub] == ["create_repo", "upload_folder"]
    assert all(token == SECRET for _, token, _ in hub)  # the client's token: $HF_TOKEN
    assert hub[0][2] == {"repo_id": "me/medreason-135m", "repo_type": "model", "private": True, "exist_ok": True}
    assert hub[1][2] == {"repo_id": "me/medreason-135m", "repo_type": "model", "folder_path": str(adapter),
                         "commit_message": "medreason adapter from grpo_adapter"}
    card = (adapter / "README.md").read_text()  # the adapter had no card: one was written before the push
    assert card.startswith("---\n") and "library_name: peft" in card and "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert not (run / "merged_16bit").exists()


def test_without_a_run_adapter_the_shipped_checkpoint_is_pushed_as_it_is(tmp_path, capsys, hub):
    before = (SHIPPED / "README.md").read_text()
    assert cli.main(["export", "--output_dir", str(tmp_path / "empty run"), "--format", "adapter",
                     "--push_to_hub", "me/x"]) == 0
    assert hub[1][2]["folder_path"] == str(SHIPPED)
    assert (SHIPPED / "README.md").read_text() == before  # its own card, untouched
    assert not (tmp_path / "empty run").exists()


def test_notebook_04s_export_cell_makes_the_same_calls_as_the_command(tmp_path, capsys, hub):
    """The real cell of notebook 04 (tagged ``export``), its parameter lines set as papermill would, run on the
    names the notebook's earlier cells define: the same Hub calls as ``medreason export``."""
    import nbformat

    nb = nbformat.read(NOTEBOOK_04, as_version=4)
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and "export" in c.metadata.get("tags", [])]
    settings = {"EXPORT_FORMATS": '["adapter"]', "PUSH_TO": '"me/medreason-135m"'}
    lines = cell.source.splitlines()
    for name, value in settings.items():
        (i,) = [k for k, line in enumerate(lines) if line.startswith(f"{name} =")]  # the parameter is in the cell
        lines[i] = f"{name} = {value}"
    adapter = _adapter_copy(tmp_path / "nb" / "grpo_adapter", card=True)
    exec("\n".join(lines), {"adapter": str(adapter), "RUN_DIR": tmp_path / "nb", "model": None, "tokenizer": None})
    from_notebook = [(name, kw) for name, _, kw in hub]

    hub.clear()
    assert cli.main(["export", "--adapter", str(adapter), "--output_dir", str(tmp_path / "nb"), "--format", "adapter",
                     "--push_to_hub", "me/medreason-135m"]) == 0
    assert [(name, kw) for name, _, kw in hub] == from_notebook and len(from_notebook) == 2
    assert SECRET not in capsys.readouterr().out


def test_the_notebooks_default_cell_exports_nothing(tmp_path, capsys):
    import nbformat

    nb = nbformat.read(NOTEBOOK_04, as_version=4)
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and "export" in c.metadata.get("tags", [])]
    exec(cell.source, {"adapter": str(SHIPPED), "RUN_DIR": tmp_path, "model": None, "tokenizer": None})
    assert "nothing exported" in capsys.readouterr().out and list(tmp_path.iterdir()) == []


# -- the merged model ------------------------------------------------------------------------------

@pytest.mark.slow
def test_export_of_the_shipped_checkpoint_writes_a_merged_model_that_generates_as_the_adapter_and_pushes_it(
        tmp_path, capsys, hub):
    run = tmp_path / "run"
    assert cli.main(["export", "--adapter", str(SHIPPED), "--output_dir", str(run), "--push_to_hub", "me/merged"]) == 0
    merged = run / "merged_16bit"
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    export_record = json.loads((merged / "medreason_export.json").read_text())
    assert export_record["dtype"] == "float16" and export_record["adapter"] == str(SHIPPED)
    assert "library_name: transformers" in (merged / "README.md").read_text()
    assert hub[1][2]["folder_path"] == str(merged) and hub[1][2]["commit_message"] == "medreason merged model from merged_16bit"
    out = capsys.readouterr().out
    assert f"merged 16-bit model: {merged}" in out and SECRET not in out
    assert_merged_generates_as_the_adapter(merged)
