"""Difficulty filtering of GRPO prompts (pass rate under the starting adapter, k samples each)."""

from __future__ import annotations

import pytest

from conftest import REPO_ROOT
from medreason_utils.config import load_stage_config
from medreason_utils.training import grpo_prompts
from medreason_utils.training.grpo import filter_by_pass_rate

CHECKPOINT = REPO_ROOT / "checkpoints" / "medreason-smollm2-135m-grpo"


@pytest.mark.parametrize("bad", [{"k": 0}, {"drop": [1.5]}, {"kk": 4}, {"k": "4"}])
def test_the_setting_is_validated_with_the_recipe(bad):
    with pytest.raises(ValueError, match="difficulty_filter"):
        load_stage_config("grpo", "cpu", overrides={"difficulty_filter": bad})


def test_the_setting_defaults_to_off_and_takes_k_and_drop():
    assert load_stage_config("grpo", "cpu").difficulty_filter is None
    cfg = load_stage_config("grpo", "cpu", overrides={"difficulty_filter": {"k": 4, "drop": [0, 1]}})
    assert cfg.difficulty_filter == {"k": 4, "drop": [0, 1]}


@pytest.mark.slow
def test_filter_drops_always_and_never_solved_prompts_by_the_mcq_reward_of_k_samples():
    from medreason_utils.evaluation.reward_eval import sample_groups
    from medreason_utils.models import load_model

    config = load_stage_config("grpo", "cpu", overrides={"n_prompts": 4, "max_completion_length": 64})
    prompts = grpo_prompts(config).prompts
    funcs = config.rewards.reward_funcs()
    model, tok = load_model(adapter=CHECKPOINT)
    with pytest.raises(ValueError, match="not among"):
        filter_by_pass_rate(prompts, model, tok, config, funcs, k=2, rewards=["correctness"], progress=False)

    kept, counts = filter_by_pass_rate(prompts, model, tok, config, funcs, k=2, drop=(0.0, 1.0), progress=False)
    # the pass rates independently: the same samples (same seed), the MCQ reward called directly
    groups = sample_groups(model, tok, list(prompts["prompt"]), 2, temperature=config.temperature,
                           max_new_tokens=64, seed=config.seed, batch_size=config.eval_batch_size, progress=False)
    mcq = next(f for f in funcs if f.__name__.removesuffix("_reward") == "mcq_exact_match")
    rates = []
    for row, group in zip(prompts, groups):
        vals = mcq(prompts=[row["prompt"]] * 2, completions=[[{"role": "assistant", "content": c}] for c in group],
                   **{key: [row[key]] * 2 for key in row if key != "prompt"})
        rates.append(sum(v is not None and v > 0 for v in vals) / 2)
    expected_kept = [i for i, r in enumerate(rates) if r not in (0.0, 1.0)]
    assert counts["rewards"] == ["mcq_exact_match"] and counts["k"] == 2 and counts["prompts"] == 4
    assert counts["kept"] == len(expected_kept) == len(kept) and counts["dropped"] == 4 - len(expected_kept)
    assert counts["dropped_by_rate"] == {"0.0": rates.count(0.0), "1.0": rates.count(1.0)}
    assert list(kept["question"]) == [prompts[i]["question"] for i in expected_kept]
    assert sum(counts["pass_rate_histogram"].values()) == 4
    assert list(kept["pass_rate"]) == [rates[i] for i in expected_kept]


@pytest.mark.slow
def test_the_measuring_script_runs_notebook_02s_steps_to_the_filter_and_prints_its_counts(capsys):
    """scripts/difficulty_filter_counts.py (the figure in the notes): the stage's own steps up to the filter on the
    shipped adapter, 4 prompts, k = 2; its JSON adds up (kept + dropped = prompts) and names the sampling engine."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("difficulty_filter_counts", REPO_ROOT / "scripts" / "difficulty_filter_counts.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--sft_adapter", str(CHECKPOINT), "--k", "2", "--n_prompts", "4"]) == 0
    out = capsys.readouterr().out
    counts = json.loads(out[out.index("{"):])
    assert counts["prompts"] == 4 and counts["k"] == 2 and counts["kept"] + counts["dropped"] == 4
    assert counts["engine"] in ("vllm", "transformers") and counts["seconds"] > 0
