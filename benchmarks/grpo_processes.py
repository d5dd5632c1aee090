"""GRPO wall time: the same steps in one process versus two data-parallel processes, in one run.

Runs ``medreason grpo`` (the command line) from the shipped adapter with the CPU recipe, the same
number of steps and the same completions per step in each arm: one process with
``batch_size = 2 * B`` and ``--threads`` torch threads (one thread: the same compute as each of
the other arm's processes), and two processes launched by accelerate's torchrun launcher with
``batch_size = B`` each, one thread each (TRL gathers the rewards of both). Arms alternate for
``--repeats`` rounds. Prints each run's wall time (launch to exit, model
loading included) and training time (``trainer.train()``, from ``summary.json``), the medians and
their ratio. On a machine shared with other jobs the figures move: repeat, and report the machine
load (printed) with them.

    PYTHONPATH=. python benchmarks/grpo_processes.py --steps 3 --batch 4 --tokens 32 --repeats 2 [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from _cli import run_cli  # benchmarks/_cli.py (the script's folder is on sys.path)


def _run(processes: int, threads: int, batch: int, args: argparse.Namespace, out: Path) -> dict:
    settings = ["grpo", "--config", "recipes/cpu/grpo.yaml", "--sft_adapter", "checkpoints/medreason-smollm2-135m-grpo",
                "--max_steps", str(args.steps), "--n_prompts", str(args.steps * 2 * args.batch), "--per_device_train_batch_size", str(batch),
                "--max_completion_length", str(args.tokens), "--reward_eval_prompts", "0", "--output_dir", str(out)]
    if processes == 1:
        cmd = [sys.executable, "-m", "medreason_utils.pipeline.cli", *settings]
    else:
        cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "medreason_utils.pipeline.cli", *settings]
    summary, wall, load = run_cli(cmd, out, env={"OMP_NUM_THREADS": str(threads)}, what=f"{processes} process(es)")
    grpo = summary["grpo"]
    return {"processes": processes, "threads": threads, "wall_s": round(wall, 1), "train_s": grpo["train_seconds"],
            "completions_per_step": grpo["completions_per_step"], "load_before": round(load, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="GRPO steps per run")
    ap.add_argument("--batch", type=int, default=4, help="completions per process per step in the two-process arm (one group)")
    ap.add_argument("--tokens", type=int, default=32, help="max_completion_length")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the one-process arm")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {datetime.date.today()}; "
          f"{args.steps} steps x {2 * args.batch} completions of <= {args.tokens} tokens")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for processes, threads, batch in ((2, 1, args.batch), (1, args.threads, 2 * args.batch)):
                res = _run(processes, threads, batch, args, Path(tmp) / f"r{r}p{processes}")
                runs.append(res)
                print(json.dumps(res), flush=True)
    one = [r for r in runs if r["processes"] == 1]
    two = [r for r in runs if r["processes"] == 2]
    for key in ("wall_s", "train_s"):
        a, b = statistics.median(r[key] for r in one), statistics.median(r[key] for r in two)
        print(f"median {key}: 1 process {a:.1f} | 2 processes {b:.1f} | ratio 1/2 = {a / b:.2f}")


if __name__ == "__main__":
    main()
