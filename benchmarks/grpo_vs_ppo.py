"""Benchmark: GRPO (from scratch) versus PPO (value head, GAE) on the same prompts, rewards and rollouts, in one run.

Both start from the same LoRA checkpoint, sample the same number of completions per step from the same prompts
with the same seeds (so their first batches are identical), score them with the same reward functions (strict
format, partial format, correctness with the rule-based verifier) and take one AdamW step per batch (PPO's
``--ppo-epochs`` defaults to 1 for that reason; TRL's former PPOTrainer used 4). Each algorithm runs in its own
Python process, one after the other, so its peak memory and CPU time are its own. Time is the training loop's
wall time and its CPU time (user + system, ``getrusage``; on a CPU shared with other jobs the wall time follows
the load, the CPU time much less, so both are printed with the load average). Memory is the peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) at the end of training, and the same figure right after loading
the model, whose difference is what training added (tracemalloc would not see torch's allocations). Prints both
and the PPO / GRPO ratios, saves the reward curves of both in one figure and the figures as JSON.

Usage::

    python benchmarks/grpo_vs_ppo.py                                   # CPU: 8 steps x 4 rollouts of 128 tokens
    python benchmarks/grpo_vs_ppo.py --steps 6 --max-completion-length 64 --figure docs/grpo_vs_ppo.png

The code has no CPU-only path: on a GPU ``models.load_model`` loads with the GPU preset and the tensors follow the
model's device (raise ``--prompts-per-step``, ``--max-completion-length`` and ``--threads`` there). It has been run
on a CPU only so far (no GPU was available for this release).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    """User + system CPU time of this process so far, seconds (less sensitive than wall time to a shared CPU)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker(args: argparse.Namespace) -> dict:
    """Train one algorithm in this process; return its figures."""
    import torch

    torch.set_num_threads(args.threads)
    from medreason_utils.config import default_checkpoint
    from medreason_utils.data import load_rows, to_question_prompts
    from medreason_utils.models import load_model
    from medreason_utils.rewards import RewardSettings
    from medreason_utils.training.grpo_from_scratch import GRPOScratchConfig, train_grpo
    from medreason_utils.training.ppo import PPOScratchConfig, train_ppo

    model, tokenizer = load_model(adapter=args.adapter or default_checkpoint(), trainable=True)
    prompts, _ = to_question_prompts(load_rows(args.data), on_bad_row="skip")
    prompts = prompts.shuffle(seed=args.seed).select(range(min(args.n_prompts, len(prompts))))
    reward_funcs = RewardSettings(rewards=("strict_format", "partial_format", "correctness")).reward_funcs()
    after_load = _rss_mib()
    common = dict(prompts_per_step=args.prompts_per_step, num_generations=args.num_generations,
                  max_completion_length=args.max_completion_length, temperature=args.temperature,
                  learning_rate=args.learning_rate, max_steps=args.steps, micro_batch_size=args.micro_batch_size, seed=args.seed)
    load = os.getloadavg()[0]
    cpu0 = _cpu_seconds()
    if args.worker == "grpo":
        config = GRPOScratchConfig(loss_type=args.loss_type, scale_rewards=args.scale_rewards, beta=args.beta, **common)
        history = train_grpo(model, tokenizer, prompts, reward_funcs, config, progress=False)
    else:
        config = PPOScratchConfig(num_ppo_epochs=args.ppo_epochs, kl_coef=args.kl_coef, **common)
        history = train_ppo(model, tokenizer, prompts, reward_funcs, config, progress=False)
    return {
        "algorithm": args.worker, "config": config.to_dict(), "history": history.to_dict(),
        "wall_seconds": history.wall_seconds, "cpu_seconds": round(_cpu_seconds() - cpu0, 1), "peak_rss_mib": round(_rss_mib(), 1), "rss_after_load_mib": round(after_load, 1),
        "load_average_start": round(load, 2), "load_average_end": round(os.getloadavg()[0], 2), "torch_threads": args.threads,
    }


def plot(results: dict, path: Path, title: str) -> Path:
    """Reward curves of both algorithms: one panel per reward and one for the weighted total."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["strict_format_reward", "partial_format_reward", "correctness_reward", "reward"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names):
        for algo, style in (("grpo", "o-"), ("ppo", "s--")):
            h = results[algo]["history"]["rewards"]
            ys = [float("nan") if v is None else v for v in h[name]]
            ax.plot(h["step"], ys, style, ms=3, label=algo.upper())
        ax.set_title("total (weighted)" if name == "reward" else name.replace("_reward", ""), fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--prompts-per-step", type=int, default=1)
    p.add_argument("--num-generations", type=int, default=4, help="completions per prompt (GRPO's group; PPO samples as many)")
    p.add_argument("--max-completion-length", type=int, default=128)
    p.add_argument("--micro-batch-size", type=int, default=2)
    p.add_argument("--learning-rate", type=float, default=2e-5)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--loss-type", default="dr_grpo")
    p.add_argument("--scale-rewards", default="batch")
    p.add_argument("--beta", type=float, default=0.0)
    p.add_argument("--ppo-epochs", type=int, default=1)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--n-prompts", type=int, default=64)
    p.add_argument("--data", default="sample:medical_o1_verifiable")
    p.add_argument("--adapter", default=None, help="starting LoRA adapter (default: the shipped checkpoint)")
    p.add_argument("--seed", type=int, default=3407)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (1 on a shared CPU)")
    p.add_argument("--figure", default=str(ROOT / "docs" / "grpo_vs_ppo.png"))
    p.add_argument("--json", default=None, help="where to write the figures (default: beside the figure)")
    p.add_argument("--worker", choices=["grpo", "ppo"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        Path(args.out).write_text(json.dumps(worker(args)))
        return 0

    import tempfile

    results = {}
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    for algo in ("grpo", "ppo"):
        out = Path(tempfile.mkstemp(prefix=f"bench-{algo}-", suffix=".json")[1])
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, *forwarded, "--worker", algo, "--out", str(out)], check=True)
        results[algo] = json.loads(out.read_text())
        results[algo]["process_seconds"] = round(time.perf_counter() - t0, 1)
        out.unlink()
    g, q = results["grpo"], results["ppo"]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"
    date = _dt.date.today().isoformat()
    rollouts = args.prompts_per_step * args.num_generations
    title = (f"GRPO ({args.loss_type}, {args.scale_rewards}-std) vs PPO (GAE, value head): {args.steps} steps x {rollouts} "
             f"rollouts of <= {args.max_completion_length} tokens, SmolLM2-135M LoRA; {machine}, {date}")
    figure = plot(results, Path(args.figure), title)

    def row(name: str, r: dict) -> str:
        total = r["history"]["rewards"]["reward"]
        return (f"{name:5s} {r['wall_seconds']:9.1f} s {r['cpu_seconds']:9.1f} s {r['peak_rss_mib']:10.0f} MiB "
                f"{r['peak_rss_mib'] - r['rss_after_load_mib']:10.0f} MiB   load {r['load_average_start']:.1f}-{r['load_average_end']:.1f}"
                f"   reward first {total[0]:+.2f} last {total[-1]:+.2f} mean {sum(total) / len(total):+.2f}")

    print(f"\n{title}")
    print(f"{'':5s} {'wall time':>11s} {'CPU time':>11s} {'peak RSS':>14s} {'+ over load':>14s}   1-min load average start-end")
    print(row("GRPO", g))
    print(row("PPO", q))
    print(f"ratio PPO / GRPO: wall time {q['wall_seconds'] / g['wall_seconds']:.2f}x, CPU time {q['cpu_seconds'] / g['cpu_seconds']:.2f}x, peak RSS {q['peak_rss_mib'] / g['peak_rss_mib']:.2f}x, "
          f"memory added by training {(q['peak_rss_mib'] - q['rss_after_load_mib']) / max(g['peak_rss_mib'] - g['rss_after_load_mib'], 1e-9):.2f}x")
    print(f"figure: {figure}")
    data = {"machine": machine, "date": date, "python": platform.python_version(), "args": vars(args), "results": results}
    json_path = Path(args.json) if args.json else figure.with_suffix(".json")
    json_path.write_text(json.dumps(data, indent=1))
    print(f"figures: {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
