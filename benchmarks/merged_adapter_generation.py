"""CPU evaluation speed: the same MedQA prompts generated with a LoRA adapter unmerged (peft) versus
merged into the base weights (peft ``merge_and_unload``), in one run.

Loads the base model twice with the adapter (``load_model(adapter=...)`` and
``load_model(adapter=..., merge_adapter=True)``; default: the shipped
``checkpoints/medreason-smollm2-135m-grpo`` on the offline SmolLM2-135M-Instruct), takes ``--n``
MedQA items (fixed-seed subset of the shipped sample, the suite's prompt, as notebook 03 asks the
trained models), warms both up, then generates greedy completions with each, ``--rounds`` times
in alternating order, and prints seconds, generated tokens per second (completions re-tokenised,
special tokens excluded), the ratio, how many completions agree, and the largest difference of
the two models' next-token logits on the prompts (merging is exact up to float rounding:
W + (alpha/r) B A computed once instead of per token).

    nice -n 19 .venv/bin/python benchmarks/merged_adapter_generation.py --n 20 --max-new-tokens 96
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=20, help="prompts per generate call (the CPU eval recipe's 20)")
    ap.add_argument("--rounds", type=int, default=1, help="timed rounds of each, alternating unmerged / merged")
    ap.add_argument("--seed", type=int, default=0, help="item subset seed")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own choice)")
    ap.add_argument("--model", default=None, help="base model (default: the adapter's own base)")
    ap.add_argument("--adapter", default="checkpoints/medreason-smollm2-135m-grpo")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from medreason_utils.data import load_rows
    from medreason_utils.evaluation.benchmarks import select_items, to_mcq_items
    from medreason_utils.generation import LocalBackend
    from medreason_utils.models import load_model

    ds, _ = to_mcq_items(load_rows("sample:medqa"), "medqa")
    items = select_items(list(ds), args.n, args.seed)
    prompts = [it["prompt"] for it in items]
    t0 = time.perf_counter()
    unmerged, tok = load_model(args.model, adapter=args.adapter)
    t_load_unmerged = time.perf_counter() - t0
    t0 = time.perf_counter()
    merged, _ = load_model(args.model, adapter=args.adapter, merge_adapter=True)
    t_load_merged = time.perf_counter() - t0
    assert not hasattr(merged, "peft_config") and hasattr(unmerged, "peft_config"), "one peft model, one plain model"
    backends = {"unmerged": LocalBackend(unmerged, tok, batch_size=args.batch_size),
                "merged": LocalBackend(merged, tok, batch_size=args.batch_size)}

    # exactness: the next-token logits of both on the first prompts (float32)
    enc = tok.apply_chat_template(prompts[: min(4, len(prompts))], add_generation_prompt=True, return_tensors="pt", padding=True,
                                  return_dict=True)
    with torch.no_grad():
        diff = (unmerged(**enc).logits[:, -1] - merged(**enc).logits[:, -1]).abs().max().item()

    for b in backends.values():  # warm-up
        b.generate(prompts[:2], max_new_tokens=4, progress=False)
    seconds = {k: 0.0 for k in backends}
    tokens = {k: 0 for k in backends}
    outs: dict[str, list[str]] = {}
    for r in range(args.rounds):
        order = list(backends) if r % 2 == 0 else list(reversed(backends))
        for name in order:
            t0 = time.perf_counter()
            out = backends[name].generate(prompts, max_new_tokens=args.max_new_tokens, progress=False)
            seconds[name] += time.perf_counter() - t0
            tokens[name] += sum(len(tok(c, add_special_tokens=False)["input_ids"]) for c in out)
            outs.setdefault(name, out)
    same = sum(a == b for a, b in zip(outs["unmerged"], outs["merged"]))
    rate = {k: tokens[k] / seconds[k] for k in backends}
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); date {datetime.date.today().isoformat()}")
    print(f"items: {len(items)} shipped sample:medqa (suite prompt); adapter: {args.adapter}; greedy, max_new_tokens={args.max_new_tokens}, "
          f"batch {args.batch_size}, {args.rounds} round(s)")
    print(f"load: unmerged {t_load_unmerged:.1f} s, merged {t_load_merged:.1f} s (merging included)")
    for k in backends:
        print(f"{k:9s}: {seconds[k]:7.1f} s  {tokens[k]:6d} tokens  {rate[k]:7.1f} tokens/s")
    print(f"speed-up (merged tokens/s / unmerged tokens/s): {rate['merged'] / rate['unmerged']:.2f}x")
    print(f"identical completions: {same}/{len(items)}; largest next-token logit difference: {diff:.2e}")


if __name__ == "__main__":
    main()
