"""PPO baseline (medreason_utils.training.ppo): GAE, whitening and the clipped losses by hand, and a real
training loop on a tiny Llama (SmolLM2's config made small, random weights, SmolLM2's tokenizer)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from medreason_utils.prompts import question_prompt  # noqa: E402
from medreason_utils.training.ppo import (  # noqa: E402
    PPOScratchConfig,
    gae,
    make_value_head,
    masked_whiten,
    ppo_losses,
    sequence_scores,
    train_ppo,
)

from test_grpo_from_scratch import QUESTIONS, _length_reward, tiny  # noqa: E402,F401  (fixture)


def test_gae_reward_to_go_and_one_step_td():
    rewards = torch.tensor([[0.1, -0.2, 1.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
    values = torch.tensor([[0.3, 0.2, 0.4, 9.0], [1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])  # the first completion ends at t = 2
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # gamma = lam = 1: the return is the reward-to-go, the value after the end counts as 0
    assert ret.tolist()[0] == pytest.approx([0.9, 0.8, 1.0, 0.0])
    assert ret.tolist()[1] == pytest.approx([2.0, 1.5, 1.0, 0.5])
    assert adv.tolist()[0] == pytest.approx([0.6, 0.6, 0.6, 0.0])
    # lam = 0: one-step TD error r_t + gamma V_{t+1} - V_t
    adv0, _ = gae(rewards, values, mask, gamma=0.9, lam=0.0)
    assert adv0.tolist()[1] == pytest.approx([0.5 + 0.9 * 2 - 1, 0.5 + 0.9 * 3 - 2, 0.5 + 0.9 * 4 - 3, 0.5 - 4])
    assert adv0.tolist()[0][2] == pytest.approx(1.0 - 0.4)  # terminal: no bootstrap from the masked value 9.0


def test_masked_whiten_uses_only_the_mask():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = masked_whiten(x, mask)
    assert w.tolist()[0][:3] == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)  # mean 2, unbiased var 1
    assert w.tolist()[0][3] == 0.0


def test_ppo_losses_by_hand():
    new = torch.tensor([[math.log(0.6), math.log(0.5)]])
    old = torch.tensor([[math.log(0.4), math.log(0.5)]])  # ratio 1.5 then 1.0
    adv = torch.tensor([[1.0, -1.0]])
    vpred = torch.tensor([[1.0, 0.0]])
    old_v = torch.tensor([[0.0, 0.0]])
    ret = torch.tensor([[1.0, 1.0]])
    mask = torch.ones(1, 2)
    policy, value, clipped = ppo_losses(new, old, adv, vpred, old_v, ret, mask, cliprange=0.2, cliprange_value=0.2, num_tokens=2.0)
    # token 1: max(-1.5, -1.2) = -1.2; token 2: max(1.0, 1.0) = 1.0
    assert float(policy) == pytest.approx((-1.2 + 1.0) / 2)
    # token 1: max((1-1)^2, (0.2-1)^2) = 0.64; token 2: max(1, 1) = 1 -> 0.5 * 1.64 / 2
    assert float(value) == pytest.approx(0.5 * 1.64 / 2)
    assert float(clipped) == 1.0


def test_sequence_scores_leave_out_none():
    scores, scored = sequence_scores([[3.0, -1.0, None], [None, None, None], [0.0, 2.0, 1.0]], [1.0, 0.5, 2.0])
    assert scores == [2.5, 0.0, 3.0] and scored == [True, False, True]


@pytest.mark.slow  # needs the converted SmolLM2 tokenizer and config (~20 s to convert once per machine)
def test_train_ppo_moves_policy_and_value_head(tiny):
    from datasets import Dataset

    tok, build = tiny
    model = build()
    rows = Dataset.from_list([{"prompt": question_prompt(q), "answer": "x", "question": q} for q in QUESTIONS])
    head = make_value_head(model)
    config = PPOScratchConfig(prompts_per_step=2, num_generations=2, max_completion_length=6, max_steps=2, num_ppo_epochs=2,
                              micro_batch_size=3, learning_rate=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    history = train_ppo(model, tok, rows, [_length_reward], config, value_head=head, progress=False)
    assert history.rewards["step"] == [1, 2]
    assert set(history.stats) >= {"loss", "value_loss", "kl", "clip_ratio", "step_seconds"}
    assert float(head.weight.abs().sum()) > 0, "the value head did not learn"
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
    assert "ref" in model.peft_config  # the adapter had weights: a frozen copy of it is the KL reference
    assert history.wall_seconds > 0


def test_ppo_config_rejects_bad_values():
    with pytest.raises(ValueError, match="num_ppo_epochs"):
        PPOScratchConfig(num_ppo_epochs=0)
    with pytest.raises(ValueError, match="gamma"):
        PPOScratchConfig(gamma=1.5)
