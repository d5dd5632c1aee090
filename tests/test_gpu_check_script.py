"""The CPU-checkable parts of scripts/gpu_check.py (issue 19): its arguments, and the tiny models it builds
from configs with the suite's tokenizer (Qwen3 and Llama, random weights) that load and run a forward pass."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_arguments(gpu_check):
    args = gpu_check.parse_args(["--archs", "Qwen3", "--only", "load-16bit,lora"])
    assert args.archs == ["qwen3"] and args.only == ["load-16bit", "lora"] and args.steps_sft == 2 == args.steps_grpo
    for bad in (["--archs", "gpt2"], ["--only", "train"], ["--steps-grpo", "0"]):
        with pytest.raises(SystemExit) as exc:
            gpu_check.parse_args(bad)
        assert exc.value.code == 2


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_tiny_model_from_config_loads_and_runs(gpu_check, tmp_path, arch):
    import torch
    import transformers

    folder = gpu_check.build_tiny_model(arch, gpu_check.TOKENIZER, tmp_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder))
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert model.config.model_type == arch and model.config.vocab_size == len(tok)
    assert sum(p.numel() for p in model.parameters()) < 20e6  # tiny: the upload holds no weights, the GPU any size
    ids = tok("<|im_start|>user\nWhich nerve?<|im_end|>", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tok)) and torch.isfinite(logits).all()
    assert (folder / "model.safetensors").stat().st_size < 64 * 2**20


def test_dry_run_reports_what_did_not_run(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "report.json").read_text())["rows"]
    assert {(r["arch"], r["status"]) for r in rows if r["step"] == "build from config"} == {("qwen3", "ran"), ("llama", "ran")}
    assert all(r["status"] == "skipped" and r["detail"] == "--dry-run" for r in rows if r["step"] != "build from config")
    assert "| qwen3 | grpo | skipped |" in proc.stdout


def test_training_rows_come_from_the_suites_mappers(gpu_check):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gpu_check.TOKENIZER))
    sft = gpu_check._sft_rows(tok)
    assert len(sft) == 8 and {"prompt", "completion"} <= set(sft.column_names)
    assert "</ANSWER>" in sft[0]["completion"][0]["content"]
    grpo = gpu_check._grpo_rows()
    assert len(grpo) == 4 and grpo[0]["prompt"][-1]["role"] == "user" and grpo[0]["answer"]
