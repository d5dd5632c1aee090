"""What the GRPO difficulty filter drops on a recipe, without training: notebook 02's steps up to the filter.

Runs :func:`medreason_utils.pipeline.stages.start_grpo` -> ``load_grpo_model`` -> ``load_grpo_prompts`` ->
``build_grpo_rewards`` -> ``order_grpo_prompts`` with ``difficulty_filter`` set (the same functions, in the same
order, as notebook 02 and ``medreason grpo``), then prints the filter's counts (what ``summary.json``'s
``grpo.difficulty_filter`` would hold) as JSON: prompts, kept, dropped by pass rate (0: never solved, 1: always),
the engine that sampled them and the seconds it took. Nothing is trained; the run folder is a temporary one.

    python scripts/difficulty_filter_counts.py --sft_adapter runs/<run>/sft_adapter --recipe cpu --k 4

Measured 2026-12-04 (2-core Xeon with AVX-512/AMX, idle) on the CPU recipe from that day's ``make run`` SFT adapter:
of 64 prompts, k = 4, rewarded by ``mcq_exact_match``, 56 never solved (dropped), 0 always solved, 8 kept
(pass rate 0.25); 68 s, sampled by vLLM (the adapter merged).
"""

from __future__ import annotations

import argparse
import json
import tempfile


def main(argv: list[str] | None = None) -> int:
    from medreason_utils.config import load_stage_config
    from medreason_utils.pipeline import stages

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sft_adapter", required=True, help="the starting adapter (a run's sft_adapter folder or a hub id)")
    p.add_argument("--recipe", default="cpu", help="a machine class or a GRPO recipe file (default cpu)")
    p.add_argument("--k", type=int, default=4, help="completions sampled per prompt (default 4)")
    p.add_argument("--n_prompts", type=int, default=None, help="prompts drawn (default: the recipe's n_prompts)")
    args = p.parse_args(argv)
    overrides = {"sft_adapter": args.sft_adapter, "difficulty_filter": {"k": args.k}, "reward_eval_prompts": 0}
    if args.n_prompts is not None:
        overrides["n_prompts"] = args.n_prompts
    config = load_stage_config("grpo", args.recipe, None, overrides, label="scripts/difficulty_filter_counts.py")
    with tempfile.TemporaryDirectory(prefix="difficulty-") as run_dir:
        run = stages.start_grpo(config, run_dir)
        stages.load_grpo_model(run)
        stages.load_grpo_prompts(run)
        stages.build_grpo_rewards(run)
        stages.order_grpo_prompts(run)
    print(json.dumps(run.difficulty, indent=1, default=str))
    return 0 if run.difficulty["kept"] + run.difficulty["dropped"] == run.difficulty["prompts"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
