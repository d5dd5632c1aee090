"""Evaluation speed: the same MedQA items generated one at a time versus batched, in one run.

Loads the CPU default model (SmolLM2-135M-Instruct, ``load_model()``) unless ``--model`` is
given, takes ``--n`` MedQA items (fixed-seed subset of the test set from ``--data-dir`` in the
hub layout; else the hub; else the shipped 60-item sample), warms the model up, then generates
greedy completions with ``batch_size=1`` and with ``--batch-size``, and prints seconds, generated
tokens per second (completions re-tokenised, special tokens excluded), the speed-up ratio, and how
many completions are identical (left padding can change float rounding, so a few greedy
completions may differ).

    PYTHONPATH=. python benchmarks/eval_batching.py --n 64 --max-new-tokens 64 --batch-size 16
    PYTHONPATH=. python benchmarks/eval_batching.py --n 64 --max-new-tokens 160 --adapter checkpoints/medreason-smollm2-135m-grpo
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path


def _items(n: int, data_dir: Path | None, seed: int) -> tuple[list[dict], str]:
    from medreason_utils.evaluation.benchmarks import load_benchmark, select_items
    from medreason_utils.data import load_rows
    from medreason_utils.evaluation.benchmarks import to_mcq_items

    if data_dir is not None and (data_dir / "medqa_usmle_4options_test.jsonl").is_file():
        return load_benchmark("medqa", data_dir=data_dir, limit=n, seed=seed)[0], f"MedQA test ({data_dir})"
    try:
        return load_benchmark("medqa", limit=n, seed=seed)[0], "MedQA test (hub)"
    except Exception:  # offline: the shipped sample
        ds, _ = to_mcq_items(load_rows("sample:medqa"), "medqa")
        return select_items(list(ds), n, seed), "shipped sample:medqa"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0, help="item subset seed")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own choice)")
    ap.add_argument("--model", default=None, help="model name or folder (default: load_model()'s default)")
    ap.add_argument("--adapter", default=None, help="LoRA adapter folder on the model, e.g. checkpoints/medreason-smollm2-135m-grpo "
                    "(a trained adapter writes the full THINK/ANSWER grammar, ~130 tokens, as evaluation does)")
    ap.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from medreason_utils.generation import LocalBackend
    from medreason_utils.models import load_model

    items, source = _items(args.n, args.data_dir, args.seed)
    model, tok = load_model(args.model, adapter=args.adapter)
    prompts = [it["prompt"] for it in items]
    LocalBackend(model, tok, batch_size=2).generate(prompts[:2], max_new_tokens=4, progress=False)  # warm-up

    def run(batch_size: int) -> tuple[float, int, list[str]]:
        t0 = time.perf_counter()
        out = LocalBackend(model, tok, batch_size=batch_size).generate(prompts, max_new_tokens=args.max_new_tokens, progress=False)
        dt = time.perf_counter() - t0
        return dt, sum(len(tok(c, add_special_tokens=False)["input_ids"]) for c in out), out

    t1, k1, o1 = run(1)
    tb, kb, ob = run(args.batch_size)
    same = sum(a == b for a, b in zip(o1, ob))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"date {datetime.date.today().isoformat()}")
    print(f"items: {len(items)} from {source}; adapter: {args.adapter or 'none'}; greedy, max_new_tokens={args.max_new_tokens}")
    print(f"one at a time : {t1:7.1f} s  {k1:6d} tokens  {k1 / t1:7.1f} tokens/s")
    print(f"batched ({args.batch_size:>3}) : {tb:7.1f} s  {kb:6d} tokens  {kb / tb:7.1f} tokens/s")
    print(f"speed-up (time one at a time / time batched): {t1 / tb:.2f}x; identical completions: {same}/{len(items)}")


if __name__ == "__main__":
    main()
