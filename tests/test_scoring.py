"""The one scorer (rewards.scoring.score_groups): TRL's call, None kept, TRL's totals and advantages;
and the playground built from the CPU GRPO recipe scores what that recipe trains (mcq_exact_match)."""

from __future__ import annotations

import math

import pytest

from medreason_utils.config.recipes import load_stage_config
from medreason_utils.evaluation.reward_eval import score_completions as eval_score_completions
from medreason_utils.rewards import RewardSettings, score_groups
from medreason_utils.training import grpo_prompts
from medreason_utils.ui.playground import RewardPlayground, parse_options, row_examples


def _trl_totals_and_advantages(rewards, weights, num_generations, scale):
    """TRL 1.16 ``_generate_and_score_completions`` (sum_then_normalize) on torch, with TRL's own ``nanstd``."""
    import torch
    from trl.trainer.utils import nanstd

    per_func = torch.tensor([[math.nan if x is None else x for x in r] for r in rewards], dtype=torch.float32)
    unscorable = torch.isnan(per_func).all(dim=1)
    totals = (per_func * torch.tensor(weights).unsqueeze(0)).nansum(dim=1)
    totals[unscorable] = torch.nan
    mean = torch.nanmean(totals.view(-1, num_generations), dim=1).repeat_interleave(num_generations, dim=0)
    std = (nanstd(totals.view(-1, num_generations), dim=1).repeat_interleave(num_generations, dim=0)
           if scale == "group" else nanstd(totals).expand_as(totals))
    adv = totals - mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    return totals.tolist(), torch.nan_to_num(adv, nan=0.0).tolist()


def _recording_reward(calls):
    """A reward that gives None on rows without a 'gold' column value and records how it was called."""

    def length_if_gold(prompts, completions, completion_ids, **kwargs):
        calls.append({"prompts": prompts, "completions": completions, "completion_ids": completion_ids, **kwargs})
        return [None if g is None else float(len(c[0]["content"] if isinstance(c, list) else c)) for c, g in zip(completions, kwargs["gold"])]

    return length_if_gold


def _half(completions, **_):
    return [None if i % 4 == 3 else 0.5 * i for i in range(len(completions))]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_score_groups_calls_rewards_as_trl_and_matches_trls_totals_and_advantages_with_none(scale):
    calls = []
    rows = [{"prompt": [{"role": "user", "content": "q1"}], "gold": "x"}, {"prompt": "q2 as text", "gold": None},
            {"prompt": "q3", "gold": "y"}]
    completions = ["a", "bb", "ccc", "dddd", "e", "ff", "g", "hhhhhhh", "ii", "j", "kkk", "ll"]
    ids = [[i] * (i + 1) for i in range(12)]
    scores = score_groups([_recording_reward(calls), _half], [2.0, 1.0], rows, completions, 4, scale, completion_ids=ids)
    call = calls[0]
    assert len(call["prompts"]) == 12 and call["prompts"][:4] == [rows[0]["prompt"]] * 4 and call["prompts"][4] == "q2 as text"
    assert call["completions"][0] == [{"role": "assistant", "content": "a"}] and call["completions"][4] == "e"  # TRL's is_conversational
    assert call["completion_ids"] == ids and call["gold"] == ["x"] * 4 + [None] * 4 + ["y"] * 4
    assert {"trainer_state", "log_extra", "log_metric"} <= set(call)
    assert scores.names == ("length_if_gold", "_half") and scores.column("length_if_gold")[4:8] == [None] * 4
    assert scores.rewards[7] == [None, None]  # neither reward applies: unscorable
    t_totals, t_adv = _trl_totals_and_advantages(scores.rewards, [2.0, 1.0], 4, scale)
    assert math.isnan(scores.totals[7]) and math.isnan(t_totals[7]) and scores.advantages[7] == 0.0
    assert [t for t in scores.totals if not math.isnan(t)] == pytest.approx([t for t in t_totals if not math.isnan(t)], abs=1e-5)
    assert scores.advantages == pytest.approx(t_adv, abs=1e-4)
    # rows one per completion (TRL's inputs) give the same scores as one per group
    flat = [r for r in rows for _ in range(4)]
    again = score_groups([_recording_reward([]), _half], [2.0, 1.0], flat, completions, 4, scale, completion_ids=ids)
    assert again.rewards == scores.rewards and again.advantages == pytest.approx(scores.advantages)
    means = scores.group_means()
    assert means["length_if_gold"][1] is None and means["total"][0] == pytest.approx(2 * (1 + 2 + 3 + 4) / 4 + (0 + 0.5 + 1) / 4)


def test_score_groups_rejects_shapes_it_cannot_group():
    with pytest.raises(ValueError, match="does not divide"):
        score_groups([_half], None, [{"prompt": "p"}], ["a", "b", "c"], 2)
    with pytest.raises(ValueError, match="2 rows for 4 completions in groups of 1"):
        score_groups([_half], None, [{"prompt": "p"}] * 2, ["a"] * 4, 1)
    with pytest.raises(ValueError, match="2 reward weights for 1"):
        score_groups([_half], [1, 1], [{"prompt": "p"}], ["a"], 1)
    with pytest.raises(ValueError, match="returned 1 values for 2"):
        score_groups([lambda completions, **_: [1.0]], None, [{"prompt": "p"}], ["a", "b"], 2)


def test_the_reward_evaluation_and_the_scorer_agree_per_prompt():
    config = load_stage_config("grpo", "cpu")
    rows = list(grpo_prompts(config).prompts.select(range(3)))
    groups = [[ex["completion"] for ex in row_examples(r)] for r in rows]
    funcs = config.rewards.reward_funcs()
    scores = eval_score_completions(rows, groups, funcs, config.rewards.weights)
    direct = score_groups(funcs, config.rewards.weights, rows, [c for g in groups for c in g], len(groups[0]), "none")
    assert scores.total == direct.group_means()["total"]
    assert scores.per_prompt["mcq_exact_match_reward"] == [config.rewards.mcq_value / 4] * 3  # 1 of 4: the letter counts only in an ANSWER block


def _cpu_playground(**overrides):
    config = load_stage_config("grpo", "cpu", overrides=overrides)
    return config, RewardPlayground(config.rewards, rows=grpo_prompts(config).prompts)


def test_the_playground_built_from_the_cpu_recipe_scores_its_multiple_choice_prompts_with_mcq_exact_match():
    config, pg = _cpu_playground()
    assert config.rewards.rewards == ("strict_format", "mcq_exact_match") or list(config.rewards.rewards) == ["strict_format", "mcq_exact_match"]
    first = grpo_prompts(config).prompts[0]
    assert pg.question.value == first["question"] and pg.answer.value == first["answer"]
    assert parse_options(pg.options.value) == {L: t for L, t in first["options"].items() if t is not None}
    from medreason_utils.prompts import mcq_prompt

    assert mcq_prompt(pg.question.value, parse_options(pg.options.value)) == first["prompt"]  # sample() asks what GRPO asks
    table = pg.refresh()
    mcq = [r["mcq_exact_match_reward"] for r in table.records()]
    assert None not in mcq and sorted(set(mcq)) == [0.0, config.rewards.mcq_value]
    assert table.settings.mcq_value == pg.mcq_value.value == config.rewards.mcq_value
    # another recipe item: still scored, the options of that item
    pg.example_pick.value = pg.example_pick.options[3][1]
    assert None not in [r["mcq_exact_match_reward"] for r in pg.table.records()]


def test_moving_the_mcq_value_control_changes_the_totals_and_the_settings_handed_back():
    config, pg = _cpu_playground()
    before = list(pg.refresh().totals)
    pg.mcq_value.value = config.rewards.mcq_value + 2.0
    after = pg.table.totals
    right = [i for i, r in enumerate(pg.table.records()) if r["mcq_exact_match_reward"]]
    assert right and all(after[i] == pytest.approx(before[i] + 2.0) for i in right)
    assert all(after[i] == before[i] for i in range(len(after)) if i not in right)
    assert pg.settings.mcq_value == config.rewards.mcq_value + 2.0


def test_the_playground_without_options_leaves_mcq_exact_match_unscored_and_parses_what_is_typed():
    _, pg = _cpu_playground()
    pg.options.value = ""
    assert all(r["mcq_exact_match_reward"] is None for r in pg.table.records())
    assert parse_options("A. one\ncontinued\nB. two") == {"A": "one\ncontinued", "B": "two"}
    with pytest.raises(ValueError, match="line 1"):
        parse_options("no letter here")
    pg.options.value = "A. x\nA. y"
    assert pg.error and "given twice" in pg.error  # shown, not raised


def test_settings_default_mcq_value_reaches_the_playground_slider():
    pg = RewardPlayground(RewardSettings(rewards=("strict_format", "mcq_exact_match"), weights=(1.0, 1.0), mcq_value=4.0))
    assert pg.mcq_value.value == 4.0 and pg.settings.mcq_value == 4.0
