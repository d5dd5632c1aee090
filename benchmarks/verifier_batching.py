"""Benchmark: HuatuoGPT-o1-style verifier scoring one pair per call (as the reference GRPO project does)
versus batched and sorted by length, with the same model, in one run. Prints both times and the ratio.

The pairs are scored in interleaved rounds (``--chunk`` pairs one at a time, then the same pairs
batched) so both ways see the same load on a shared machine; times are summed over the rounds.

Usage::

    python benchmarks/verifier_batching.py                       # tiny 2-layer classifier from SmolLM2 (CPU)
    python benchmarks/verifier_batching.py --model FreedomIntelligence/medical_o1_verifier_3B --batch-size 32

The default model is a two-label ``LlamaForSequenceClassification`` built from the converted
default model (SmolLM2-135M-Instruct, see ``medreason_utils.models.default_model_dir``) with
``--layers`` layers and a random head: it has the real tokenizer and input lengths, so it
measures the wiring (template, padding, batching), not verdicts. Pairs: 256 (``--n``)
prediction/reference pairs from the shipped medical samples when present, otherwise synthetic.
"""

from __future__ import annotations

import argparse
import atexit
import json
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path


def pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` (prediction, reference) pairs: answers of the shipped GRPO sample, paired with right and wrong ones."""
    refs: list[str] = []
    try:
        from medreason_utils.data import load_rows

        for name in ("sample:medical_o1_verifiable", "sample:verifiable", "sample:grpo"):
            try:
                rows = load_rows(name)
            except Exception:
                continue
            refs = [str(r.get("Ground-True Answer") or r.get("answer") or "") for r in rows]
            refs = [r for r in refs if r]
            if refs:
                break
    except Exception:
        refs = []
    if not refs:
        refs = ["Aspirin", "Metformin", "Pernicious anaemia", "Tetanus", "B. Atropine", "Acute pancreatitis"]
    rng = random.Random(seed)
    preds, golds = [], []
    for i in range(n):
        ref = refs[i % len(refs)]
        other = refs[rng.randrange(len(refs))]
        kind = i % 3
        pred = ref if kind == 0 else (f"The most likely answer is {ref}, given the history and findings." if kind == 1 else other)
        preds.append(pred)
        golds.append(ref)
    return preds, golds


def tiny_classifier(layers: int) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from medreason_utils.models import default_model_dir

    src = default_model_dir()
    out = Path(tempfile.mkdtemp(prefix="medreason-bench-cls-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)  # ~140 MB
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=2, num_hidden_layers=layers, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(src)
    tok.pad_token = "<|endoftext|>"
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="verifier id or folder (default: tiny classifier from SmolLM2)")
    ap.add_argument("--layers", type=int, default=2, help="layers of the tiny classifier")
    ap.add_argument("--n", type=int, default=256, help="prediction/reference pairs")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=4000, help="tokens")
    ap.add_argument("--chunk", type=int, default=64, help="pairs per interleaved round")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()

    import torch
    import transformers

    from medreason_utils.verifiers import HuatuoLocalVerifier

    transformers.logging.set_verbosity_error()  # no load reports for the partial (2-layer) checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or str(tiny_classifier(args.layers))
    preds, refs = pairs(args.n)
    batched = HuatuoLocalVerifier(model, batch_size=args.batch_size, max_length=args.max_length)
    one = HuatuoLocalVerifier(batched.model, tokenizer=batched.tokenizer, batch_size=1, max_length=args.max_length)
    one.score(preds[:4], refs[:4])  # warm-up
    batched.score(preds[:4], refs[:4])

    # Interleaved rounds (one-at-a-time then batched on the same chunk of pairs) so that both ways
    # see the same machine load: this CPU is shared, and its speed drifts over minutes.
    chunk = max(args.chunk, args.batch_size)
    t_single = t_batched = 0.0
    single_scores, batch_scores, rounds = [], [], []
    for k in range(0, len(preds), chunk):
        p, r = preds[k : k + chunk], refs[k : k + chunk]
        t0 = time.perf_counter()
        single_scores += [one.score([a], [b])[0] for a, b in zip(p, r)]  # one pair per call
        t1 = time.perf_counter()
        batch_scores += batched.score(p, r)
        t2 = time.perf_counter()
        t_single, t_batched = t_single + (t1 - t0), t_batched + (t2 - t1)
        rounds.append(round((t1 - t0) / (t2 - t1), 2))
    max_diff = max(abs(a - b) for a, b in zip(single_scores, batch_scores))
    result = {
        "model": args.model or f"tiny {args.layers}-layer two-label classifier from SmolLM2-135M (random head)",
        "pairs": args.n,
        "batch_size": args.batch_size,
        "one_at_a_time_s": round(t_single, 3),
        "batched_s": round(t_batched, 3),
        "ratio": round(t_single / t_batched, 2),
        "ratio_per_round": rounds,
        "max_abs_score_diff": float(f"{max_diff:.2e}"),
        "device": str(batched.device),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    print(json.dumps(result, indent=2))
    print(f"batched is {result['ratio']}x faster than one pair per call ({t_single:.2f} s vs {t_batched:.2f} s for {args.n} pairs)")


if __name__ == "__main__":
    main()
