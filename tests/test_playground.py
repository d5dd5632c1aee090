"""Reward playground: settings object, scoring, TRL-exact advantages, widget callbacks."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from medreason_utils.ui import playground as pg_module
from medreason_utils.ui.playground import (
    RewardPlayground,
    join_completions,
    load_examples,
    score_completions,
    split_completions,
)
from medreason_utils.rewards import CorrectnessTiers, RewardSettings, compute_advantages
from medreason_utils.verifiers import RuleBasedVerifier

REWARD_NAMES = RewardSettings().func_names

MRSA = "Identify a drug that cannot be used to treat a methicillin-resistant Staphylococcus aureus (MRSA) infection."


def _trl_advantages(rows, weights, num_generations, scale):
    """The lines of TRL 1.16 GRPOTrainer._generate_and_score_completions (sum_then_normalize), with TRL's nanstd."""
    import torch
    from trl.trainer.utils import nanstd

    rewards_per_func = torch.tensor([[math.nan if x is None else x for x in r] for r in rows], dtype=torch.float32)
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * torch.tensor(weights).unsqueeze(0)).nansum(dim=1)
    rewards[unscorable] = torch.nan
    mean = torch.nanmean(rewards.view(-1, num_generations), dim=1).repeat_interleave(num_generations, dim=0)
    if scale in ("group", "none"):
        std = nanstd(rewards.view(-1, num_generations), dim=1).repeat_interleave(num_generations, dim=0)
    else:
        std = nanstd(rewards).expand_as(rewards)
    adv = rewards - mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    return rewards.tolist(), torch.nan_to_num(adv, nan=0.0).tolist()


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_compute_advantages_matches_trl(scale):
    rng = random.Random(7)
    rows = [[rng.choice([0.0, 3.0]), rng.uniform(-2, 2), rng.choice([None, -2.5, 5.0, 3.5])] for _ in range(12)]
    rows[5] = [None, None, None]  # unscorable: advantage 0
    weights = [1.0, 0.5, 2.0]
    totals, adv = compute_advantages(rows, weights, num_generations=4, scale_rewards=scale)
    t_totals, t_adv = _trl_advantages(rows, weights, 4, scale)
    assert math.isnan(totals[5]) and adv[5] == 0.0
    for a, b in zip(totals, t_totals):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-5)
    assert adv == pytest.approx(t_adv, abs=1e-4)


def test_compute_advantages_rejects_bad_input():
    with pytest.raises(ValueError, match="scale_rewards"):
        compute_advantages([[1.0]], scale_rewards="global")
    with pytest.raises(ValueError, match="2 reward weights for 3"):
        compute_advantages([[1.0, 2.0, 3.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="does not divide"):
        compute_advantages([[1.0]] * 5, num_generations=2)
    with pytest.raises(ValueError, match="completion 1 has 1 rewards"):
        compute_advantages([[1.0, 2.0], [1.0]])
    # True/False as in TRL
    assert compute_advantages([[1.0], [3.0]], scale_rewards=False)[1] == [-1.0, 1.0]


def test_settings_build_reward_funcs_and_grpo_config(tmp_path):
    from trl import GRPOConfig

    s = RewardSettings(strict_value=2.0, partial_per_tag=0.25, weights=(1, 0.5, 2), scale_rewards="batch")
    funcs = s.reward_funcs()
    assert [f.__name__ for f in funcs] == list(REWARD_NAMES)
    assert funcs[0].value == 2.0 and funcs[1].per_tag == 0.25 and isinstance(funcs[2].verifier, RuleBasedVerifier)
    config = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], **s.grpo_config_kwargs())
    assert config.reward_weights == [1.0, 0.5, 2.0] and config.scale_rewards == "batch"
    assert json.loads(json.dumps(s.to_dict()))["weights"]["correctness_reward"] == 2.0
    assert RewardSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ValueError, match="weights needs 3"):
        RewardSettings(weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="scale_rewards"):
        RewardSettings(scale_rewards="global")


def test_make_verifier_specs():
    from medreason_utils.verifiers import make_verifier

    assert isinstance(make_verifier("rule"), RuleBasedVerifier)
    assert isinstance(make_verifier(None), RuleBasedVerifier)
    v = RuleBasedVerifier()
    assert make_verifier(v) is v
    judge = make_verifier({"kind": "llm_judge", "base_url": "http://127.0.0.1:9/v1", "model": "m"})
    assert type(judge).__name__ == "LLMJudgeVerifier"  # built, not called: no request is sent
    with pytest.raises(ValueError, match="unknown"):
        make_verifier({"kind": "no_such_verifier"})


def test_playground_edits_the_settings_object_it_was_given():
    start = RewardSettings(max_unscored_fraction=0.9, weights=(1.0, 2.0, 3.0), verifier="rule")
    pg = RewardPlayground(start, examples=load_examples())
    assert pg.settings == start  # nothing lost on the way through the widgets (max_unscored_fraction has no control)
    pg.strict_value.value = 1.0
    assert pg.settings.max_unscored_fraction == 0.9 and pg.settings.strict_value == 1.0


def test_split_and_join_completions_round_trip():
    comps = ["<THINK>a</THINK><ANSWER>b</ANSWER>", "line one\nline two", "x --- y"]
    assert split_completions(join_completions(comps)) == comps
    assert split_completions("\n---\n\n---\n") == []


def test_score_examples_ranks_the_well_formed_correct_completion_first():
    rows = [r for r in load_examples() if r["question"] == MRSA]
    kinds = [r["kind"] for r in rows]
    table = score_completions([r["completion"] for r in rows], rows[0]["answer"], MRSA, RewardSettings(), labels=kinds)
    rec = {r["label"]: r for r in table.records()}
    best = rec["well-formed, correct"]
    assert best["rank"] == 1 and best["strict_format_reward"] == 3.0 and best["correctness_reward"] == 5.0
    assert rec["missing tags"]["strict_format_reward"] == 0.0 and rec["missing tags"]["correctness_reward"] == -2.0
    assert rec["truncated (max tokens reached)"]["correctness_reward"] == -2.0
    assert rec["well-formed, wrong answer"]["correctness_reward"] < 0 < rec["well-formed, wrong answer"]["strict_format_reward"]
    # weighted totals and centred advantages (scale "none": advantages sum to 0)
    for r in table.records():
        assert r["total"] == pytest.approx(sum(r[n] for n in REWARD_NAMES))
    assert sum(table.advantages) == pytest.approx(0.0, abs=1e-9)
    assert max(table.rank) == len(rows)
    html = table.to_html()
    assert html.count("<tr>") == len(rows) + 1 and "&lt;THINK&gt;" in html


def test_playground_callbacks_recompute_the_table():
    pg = RewardPlayground()
    first = pg.table
    assert first is not None and pg.error is None and "<table" in pg.output.value
    n = len(first.completions)

    # strict value: the strict column follows the widget
    pg.strict_value.value = 7.0
    strict = [r[0] for r in pg.table.rewards]
    assert max(strict) == 7.0 and set(strict) <= {0.0, 7.0}
    assert "+7.00" in pg.output.value

    # a tier reward: the correct answer's correctness follows
    pg.tier_rewards[0].value = 9.0
    assert max(r[2] for r in pg.table.rewards) == 9.0

    # a zero weight removes the reward from the totals and the ranking
    pg.weights[2].value = 0.0
    assert all(t == pytest.approx(r[0] + r[1]) for t, r in zip(pg.table.totals, pg.table.rewards))

    # group scaling: advantages have unit sample std (up to the 1e-4 epsilon)
    pg.weights[2].value = 1.0
    pg.scale_rewards.value = "group"
    assert statistics.stdev(pg.table.advantages) == pytest.approx(1.0, rel=1e-3)

    # partial format per tag
    pg.partial_per_tag.value = 1.0
    assert {r[1] for r in pg.table.rewards} <= {-4.0, -2.0, 0.0, 2.0, 4.0}

    # an invalid tier threshold is shown, not raised, and the last table stays
    before = pg.table
    pg.tier_thresholds[0].value = 1.0  # valid
    pg.tier_thresholds[1].value = 0.95  # valid too: tiers are re-sorted
    assert pg.error is None and pg.table is not before

    # typed completions replace the group
    pg.completions.value = join_completions(["<THINK>r</THINK><ANSWER>Cefaclor</ANSWER>", "no tags at all"])
    assert len(pg.table.completions) == 2 and pg.table.labels == ["completion 1", "completion 2"]
    assert pg.table.rank == [1, 2]

    # empty box: an error message, no table
    pg.completions.value = ""
    assert pg.table is None and "no completions" in pg.status.value

    # picking an example restores the labelled group
    other = [q for q in pg.example_pick.options if q[1] != MRSA][0][1]
    pg.example_pick.value = other
    assert pg.question.value == other and "well-formed, correct" in pg.table.labels
    assert n > 0


class _AlwaysWrong:
    """A real verifier object (the protocol): every answer has probability 0."""

    def score(self, predictions, references, questions=None):
        return [0.0] * len(predictions)


def test_playground_verifier_dropdown_and_settings_object():
    wrong = _AlwaysWrong()
    pg = RewardPlayground(verifier_options=[("rule-based", "rule"), ("always wrong", wrong)])
    pg.verifier.value = 1
    s = pg.settings
    assert s.verifier is wrong
    tiers = s.tiers
    # every completion with an answer gets the "below" tier, those without get "no answer"
    assert {r[2] for r in pg.table.rewards} <= {tiers.below, tiers.no_answer}
    # the object hands straight to the trainer
    funcs = s.reward_funcs()
    assert funcs[2].verifier is wrong and s.reward_weights == [w.value for w in pg.weights]
    # a settings object given at construction is what the widgets start from
    custom = RewardSettings(strict_value=1.5, tiers=CorrectnessTiers(((0.8, 4.0),), below=-1.0, no_answer=-3.0), scale_rewards="batch")
    pg2 = RewardPlayground(custom)
    assert pg2.settings.strict_value == 1.5 and pg2.settings.scale_rewards == "batch"
    assert pg2.settings.tiers.below == -1.0 and pg2.settings.tiers.no_answer == -3.0


@pytest.fixture
def one_torch_thread():
    """One intra-op thread while the model runs: on this shared 2-core machine two OpenMP threads
    under load made generation ~15x slower (measured 52 s vs 3.9 s for 2 x 16 tokens)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_playground_samples_from_the_model_and_builds_a_trainer(tmp_path, one_torch_thread):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from medreason_utils.models import load_model
    from medreason_utils.prompts import question_prompt

    model, tokenizer = load_model()
    pg = RewardPlayground(model=model, tokenizer=tokenizer)
    assert not pg.sample_button.disabled
    pg.n_samples.value, pg.sample_tokens.value = 2, 16
    texts = pg.sample()
    assert len(texts) == 2 and pg.table.labels == ["sample 1", "sample 2"]
    assert texts[0] != texts[1]  # a group of distinct samples (issue 8, defect 6; the vLLM path: tests/test_vllm_cpu.py)
    assert pg.sample() == texts  # the seed widget makes the group reproducible
    assert pg.table.completions == [t.strip("\n") for t in texts if t.strip()]

    pg.weights[0].value = 2.0
    s = pg.settings
    train = Dataset.from_list([{"prompt": question_prompt(MRSA), "answer": "Cefaclor.", "question": MRSA}] * 2)
    config = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2, max_completion_length=8,
        max_steps=1, report_to=[], use_cpu=True, bf16=False, **s.grpo_config_kwargs(),
    )
    trainer = GRPOTrainer(model=model, reward_funcs=s.reward_funcs(), args=config, train_dataset=train, processing_class=tokenizer)
    assert trainer.reward_weights.tolist() == [2.0, 1.0, 1.0]
    assert trainer.reward_func_names == list(REWARD_NAMES)
    assert trainer.scale_rewards == s.scale_rewards
