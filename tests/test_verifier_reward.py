"""Fault semantics of the correctness reward with real verifiers behind real loopback servers, and under TRL."""

from __future__ import annotations

import os

import pytest

from medreason_utils.rewards import (
    UnscoredError,
    exclude_unscored,
    make_correctness_reward,
    make_strict_format_reward,
)
from medreason_utils.verifiers import HuatuoServedVerifier, RuleBasedVerifier, make_verifier
from conftest import needs_cpu_grpo
from verifier_helpers import ClassifyServer, free_port


def completion(answer: str) -> str:
    return f"<THINK>reasoning</THINK><ANSWER>{answer}</ANSWER>"


LONG = "y" * 600  # refused by the server below (max_chars=500): an item the verifier cannot score
COMPLETIONS = [completion("correct"), completion("wrong"), completion(LONG), "no tags at all", completion("correct")]
REFS = ["aspirin"] * 5


def served(url: str, **kw) -> HuatuoServedVerifier:
    settings = dict(tokenizer=None, eos_token="</s>", batch_size=8, timeout_s=2.0, retries=1, backoff_s=0.01)
    settings.update(kw)
    return HuatuoServedVerifier(url, **settings)


class MetricLog:
    def __init__(self):
        self.values: dict[str, list[float]] = {}

    def __call__(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)


def test_unscored_items_give_none_and_are_counted_and_logged():
    log = MetricLog()
    with ClassifyServer("reject_long", max_chars=500) as server:
        fn = make_correctness_reward(served(server.url))
        out = fn(COMPLETIONS, answer=REFS, log_metric=log)
    assert out == [3.5, -2.5, None, -2.0, 3.5]  # tiers: p=0.9 -> 3.5 (not > 0.9), p=0.1 -> -2.5, no answer -> -2.0
    assert fn.last_unscored == [2]
    assert (fn.counter.calls, fn.counter.items, fn.counter.unscored) == (1, 5, 1)
    assert log.values == {"correctness/unscored_fraction": [0.2], "correctness/unscored": [1.0],
                          "correctness/verifier_fallbacks": [0.0]}
    assert "HTTP 400" in fn.counter.last_error


def test_outage_above_the_fraction_raises_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    fn = make_correctness_reward(served(url), max_unscored_fraction=0.5)
    with pytest.raises(UnscoredError, match=f"4 of 5 items unscored.*{url}/classify"):
        fn(COMPLETIONS, answer=REFS)
    assert fn.counter.unscored == 4


def test_outage_below_the_fraction_trains_on_with_none():
    with ClassifyServer("500") as server:
        fn = make_correctness_reward(served(server.url), max_unscored_fraction=0.9)
        out = fn(COMPLETIONS, answer=REFS)
    assert out == [None, None, None, -2.0, None]
    assert fn.counter.history == [0.8] and "HTTP 500" in fn.counter.last_error


def test_server_stopped_mid_run_between_steps():
    with ClassifyServer(stop_after=1) as server:
        fn = make_correctness_reward(served(server.url), max_unscored_fraction=0.5)
        assert fn(COMPLETIONS[:2], answer=REFS[:2]) == [3.5, -2.5]
        with pytest.raises(UnscoredError, match="cannot be reached|could not be reached"):
            fn([completion("correct"), completion("wrong")], answer=REFS[:2])
    assert fn.counter.history == [0.0, 1.0]


def test_exclude_unscored_makes_other_rewards_none_in_any_order():
    with ClassifyServer("reject_long", max_chars=500) as server:
        correctness = make_correctness_reward(served(server.url))
        strict = make_strict_format_reward()
        funcs = exclude_unscored([strict, correctness], correctness)
        assert [f.__name__ for f in funcs] == ["strict_format_reward", "correctness_reward"]
        fmt = funcs[0](COMPLETIONS, answer=REFS)  # the wrapper runs correctness first ...
        n_requests = len(server.requests)  # 4 items, one refused: 400, split, 400, split: 5 requests
        cor = funcs[1](COMPLETIONS, answer=REFS)  # ... and TRL's own call reuses that result
    assert fmt == [3.0, 3.0, None, 0.0, 3.0]
    assert cor == [3.5, -2.5, None, -2.0, 3.5]
    assert n_requests == 5 and len(server.requests) == 5 and correctness.counter.calls == 1  # scored once


def test_rule_based_default_never_unscored():
    fn = make_correctness_reward(make_verifier(None))
    assert isinstance(fn.verifier, RuleBasedVerifier)
    out = fn([completion("Aspirin"), completion("ibuprofen")], answer=["aspirin", "aspirin"])
    assert out == [5.0, -2.5] and fn.counter.unscored == 0
    with pytest.raises(ValueError, match="max_unscored_fraction"):
        make_correctness_reward(max_unscored_fraction=1.5)


@pytest.mark.slow
@needs_cpu_grpo
def test_grpo_step_logs_unscored_fraction_and_leaves_unscored_out_of_the_advantage(tmp_path):
    """One real TRL GRPOTrainer step (1-layer SmolLM2, CPU) with fixed rollouts, a served verifier that
    cannot score one completion, and exclude_unscored: the metric reaches TRL's logs and that
    completion gets advantage 0 while the others are normalised without it."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from medreason_utils.models import default_model_dir

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    src = default_model_dir()
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, num_hidden_layers=1, dtype=torch.float32)
    texts = [completion("correct"), completion("wrong"), completion(LONG)]

    def rollout(prompts, trainer):
        prompt_ids, completion_ids, logprobs = [], [], []
        for k, p in enumerate(prompts):  # TRL 1.16 passes each prompt num_generations times: one completion each
            ids = tok(texts[k % len(texts)], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            prompt_ids.append(tok(p, add_special_tokens=False)["input_ids"])
            completion_ids.append(ids)
            logprobs.append([0.0] * len(ids))
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs}

    data = Dataset.from_list([{"prompt": "Which drug after a heart attack?", "answer": "aspirin"}] * 2)
    with ClassifyServer("reject_long", max_chars=500) as server:
        correctness = make_correctness_reward(served(server.url))
        funcs = exclude_unscored([make_strict_format_reward(), correctness], correctness)
        args = GRPOConfig(
            output_dir=str(tmp_path), per_device_train_batch_size=3, num_generations=3, max_steps=1,
            max_completion_length=256, logging_steps=1, report_to="none", use_cpu=True, bf16=False,
            learning_rate=1e-6, save_strategy="no",
        )
        trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=data,
                              processing_class=tok, rollout_func=rollout)
        trainer.train()
    logged = [h for h in trainer.state.log_history if "correctness/unscored_fraction" in h]
    assert logged and logged[0]["correctness/unscored_fraction"] == pytest.approx(1 / 3)
    adv = list(trainer._logs["advantages"])
    assert len(adv) == 3 and adv[2] == 0.0  # the unscored completion is out of the advantage
    assert adv[0] > 0 > adv[1] and adv[0] == pytest.approx(-adv[1], rel=1e-3)  # baseline from the two scored ones
