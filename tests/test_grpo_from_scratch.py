"""GRPO from scratch (medreason_utils.training.grpo_from_scratch) against TRL 1.16.0's GRPOTrainer.

One batch (the same prompt and completion ids, the same old and reference log-probabilities, the same
advantages) goes through TRL's own ``GRPOTrainer.compute_loss`` (TRL 1.16.0, ``trl/trainer/grpo_trainer.py``
``_compute_loss``) in one call, and through ours micro-batched (two micro-batches of two completions); the
losses and every LoRA gradient agree within 1e-5 for ``grpo``, ``dr_grpo`` and ``dapo``, with beta = 0 and
beta > 0 (k3 KL with TRL's default bias correction). The model is a real Llama (SmolLM2-135M's config made
tiny: 2 layers, hidden 64, random weights) with a LoRA adapter on every linear layer whose A and B are both
random (a fresh LoRA has B = 0, which would make every lora_A gradient zero), and SmolLM2's real tokenizer.
"""

from __future__ import annotations

import functools
import math

import pytest

torch = pytest.importorskip("torch")

from conftest import needs_cpu_grpo  # noqa: E402  (TRL 1.15, the GPU lock's, has no CPU GRPO loss to compare with)
from medreason_utils.generation import render_prompts  # noqa: E402
from medreason_utils.prompts import question_prompt  # noqa: E402
from medreason_utils.training.grpo_from_scratch import (  # noqa: E402
    LOSS_TYPES,
    GRPOScratchConfig,
    Rollout,
    aggregate_loss,
    completion_mask_from_ids,
    grpo_step,
    grpo_token_loss,
    lora_grads,
    make_optimizer,
    per_token_logps,
    rollout_advantages,
    sample_rollout,
    score_rollout,
    train_grpo,
    trl_grpo_loss,
)

#: The TRL release whose GRPOTrainer formulas these functions follow (re-read grpo_trainer.py when upgrading).
TRL_VERSION_CHECKED = "1.16.0"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@functools.lru_cache(maxsize=1)
def _tokenizer_and_config():
    from transformers import AutoConfig, AutoTokenizer

    from medreason_utils.models import default_model_dir

    path = default_model_dir()
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    cfg = AutoConfig.from_pretrained(path)
    cfg.update(dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16))
    return tok, cfg


@pytest.fixture(scope="module")
def tiny(default_model_path):
    """(tokenizer, build) where build() gives a fresh tiny Llama with a random LoRA adapter (same weights each call)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    tok, cfg = _tokenizer_and_config()

    def build():
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, init_lora_weights=False, task_type="CAUSAL_LM")
        return get_peft_model(model, lora)

    return tok, build


QUESTIONS = ["Which vitamin deficiency causes scurvy?", "What is the first-line drug for anaphylaxis?"]
COMPLETIONS = [
    "<THINK>Scurvy: lack of vitamin C.</THINK><ANSWER>Vitamin C</ANSWER>",
    "<THINK>hmm</THINK><ANSWER>B12",
    "<THINK>Epinephrine IM is first line for anaphylactic shock.</THINK><ANSWER>Epinephrine</ANSWER>",
    "no tags",
]


def _batch(tok) -> Rollout:
    """Two prompts x two completions, real text: left-padded prompts, right-padded completions of different lengths."""
    prompts = [question_prompt(QUESTIONS[0])] * 2 + [question_prompt(QUESTIONS[1])] * 2
    tok.padding_side = "left"
    enc = tok(render_prompts(tok, prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    ids = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in COMPLETIONS]
    width = max(map(len, ids))
    comp = torch.full((len(ids), width), tok.pad_token_id)
    for i, c in enumerate(ids):
        comp[i, : len(c)] = torch.tensor(c)
    mask = completion_mask_from_ids(comp, {tok.eos_token_id})
    assert mask.sum(1).tolist() == [len(c) for c in ids]
    return Rollout(enc["input_ids"], enc["attention_mask"], comp, mask, COMPLETIONS, prompts, {}, 2)


@needs_cpu_grpo
def test_trl_version_is_the_one_checked():
    import trl

    assert trl.__version__ == TRL_VERSION_CHECKED, (
        f"installed TRL {trl.__version__}; the from-scratch formulas were checked against {TRL_VERSION_CHECKED}: "
        "re-read trl/trainer/grpo_trainer.py (_compute_loss) and update TRL_VERSION_CHECKED"
    )


@pytest.mark.slow  # needs the converted SmolLM2 tokenizer and config (~20 s to convert once per machine)
@needs_cpu_grpo
@pytest.mark.parametrize("beta", [0.0, 0.04], ids=["no_kl", "kl"])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_and_lora_grads_match_trl_grpo_trainer(tiny, loss_type, beta):
    tok, build = tiny
    model = build()
    batch = _batch(tok)
    T = batch.completion_ids.size(1)
    max_completion_length = T + 5  # dr_grpo's constant is the budget, not the longest completion
    temperature = 0.9
    ids, att = batch.input_ids()
    advantages = torch.tensor([1.2, -0.7, 0.5, -1.0])
    with torch.no_grad():
        current = per_token_logps(model, ids, att, T, temperature=temperature)
    gen = torch.Generator().manual_seed(1)
    old = current + 0.3 * torch.randn(current.shape, generator=gen)  # an older policy: ratios away from 1, some clipped
    ref = current + 0.2 * torch.randn(current.shape, generator=gen)

    trl_loss, trainer = trl_grpo_loss(
        model, tok, batch, advantages, loss_type=loss_type, max_completion_length=max_completion_length, beta=beta,
        temperature=temperature, old_logps=old, ref_logps=ref if beta else None,
    )
    assert type(trainer).__name__ == "GRPOTrainer" and trainer.loss_type == loss_type and trainer.beta == beta
    trl_grads = lora_grads(model)
    model.zero_grad(set_to_none=True)

    mask = batch.completion_mask.float()
    ours, clipped = 0.0, 0.0
    for s in (0, 2):  # two micro-batches, normalised by the whole batch's counts
        sl = slice(s, s + 2)
        logps = per_token_logps(model, ids[sl], att[sl], T, temperature=temperature)
        per_token, _kl, ratio = grpo_token_loss(logps, old[sl], advantages[sl], ref_logps=ref[sl], beta=beta)
        loss = aggregate_loss(per_token, mask[sl], loss_type, num_sequences=4, max_completion_length=max_completion_length,
                              num_tokens=mask.sum())
        loss.backward()
        ours += float(loss.detach())
        clipped += float((((ratio < 0.8) | (ratio > 1.2)).float() * mask[sl]).sum())
    our_grads = lora_grads(model)

    assert clipped > 0, "the batch should exercise the clipped branch"
    assert ours == pytest.approx(float(trl_loss), abs=1e-5)
    assert set(our_grads) == set(trl_grads) and len(our_grads) == 2 * 2 * len(LORA_TARGETS)
    for name, g in trl_grads.items():
        assert g.abs().sum() > 0, f"TRL gave no gradient to {name}"
        diff = float((our_grads[name] - g).abs().max())
        assert diff < 1e-5, f"{loss_type} beta={beta}: {name} differs from TRL by {diff:.2e}"


def test_normalisations_differ_as_documented():
    """On one batch with completions of 2 and 4 tokens, the three reductions give their formulas' values."""
    per_token = torch.tensor([[1.0, 1.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    # grpo: mean over completions of each completion's token mean = (1 + 2) / 2
    assert float(aggregate_loss(per_token, mask, "grpo", num_sequences=2)) == pytest.approx(1.5)
    # dr_grpo: token sum / (B * budget) = 10 / (2 * 8)
    assert float(aggregate_loss(per_token, mask, "dr_grpo", num_sequences=2, max_completion_length=8)) == pytest.approx(10 / 16)
    # dapo: token sum / tokens = 10 / 6
    assert float(aggregate_loss(per_token, mask, "dapo", num_sequences=2, num_tokens=mask.sum())) == pytest.approx(10 / 6)
    with pytest.raises(ValueError, match="loss_type"):
        aggregate_loss(per_token, mask, "bnpo", num_sequences=2)
    with pytest.raises(ValueError, match="loss_type"):
        GRPOScratchConfig(loss_type="ppo")


def test_clipped_surrogate_and_k3_kl_by_hand():
    logps = torch.tensor([[math.log(0.5), math.log(0.5)]])
    old = torch.tensor([[math.log(0.25), math.log(0.5)]])  # ratios 2.0 and 1.0
    loss, kl, ratio = grpo_token_loss(logps, old, torch.tensor([1.0]), epsilon_low=0.2)
    assert ratio.tolist()[0] == pytest.approx([2.0, 1.0])
    assert loss.tolist()[0] == pytest.approx([-1.2, -1.0])  # positive advantage: the ratio is capped at 1.2
    loss, _, _ = grpo_token_loss(logps, old, torch.tensor([-1.0]), epsilon_low=0.2)
    assert loss.tolist()[0] == pytest.approx([2.0, 1.0])  # negative advantage: min(-2, -1.2) -> the unclipped 2.0
    ref = torch.tensor([[math.log(0.25), math.log(0.5)]])
    _, kl, _ = grpo_token_loss(logps, logps, torch.tensor([0.0]), ref_logps=ref, beta=0.1, kl_bias_correction=False)
    assert kl.tolist()[0] == pytest.approx([0.5 - math.log(0.5) - 1, 0.0])  # k3 = e^x - x - 1, x = ref - logp
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_token_loss(logps, logps, torch.tensor([0.0]), beta=0.1)


def test_completion_mask_stops_after_the_first_eos():
    ids = torch.tensor([[5, 6, 2, 2, 2], [5, 6, 7, 8, 9], [2, 5, 2, 5, 5]])
    assert completion_mask_from_ids(ids, {2}).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def _length_reward(completions, **kwargs):
    """A real reward function of the TRL signature: characters in the completion (varies within a group)."""
    from medreason_utils.parsing import completion_text

    return [float(len(completion_text(c))) for c in completions]


@pytest.mark.slow  # needs the converted SmolLM2 tokenizer and config (~20 s to convert once per machine)
def test_sample_score_and_train_on_the_tiny_model(tiny):
    """The loop end to end: groups of 2, rewards through the TRL call signature, LoRA weights move, history per step."""
    from datasets import Dataset

    tok, build = tiny
    model = build()
    rows = Dataset.from_list([{"prompt": question_prompt(q), "answer": "x", "question": q} for q in QUESTIONS])
    rollout = sample_rollout(model, tok, [rows[0]], num_generations=3, max_completion_length=6, seed=1)
    assert rollout.size == 3 and rollout.completion_ids.shape[0] == 3 and rollout.columns["answer"] == ["x"] * 3
    assert rollout.completions()[0] == [{"role": "assistant", "content": rollout.texts[0]}]
    rewards = score_rollout([_length_reward], rollout)
    adv, totals = rollout_advantages(rewards, [1.0], num_generations=3, scale_rewards="group")
    assert adv.shape == (3,) and float(adv.sum()) == pytest.approx(0.0, abs=1e-4)

    config = GRPOScratchConfig(prompts_per_step=2, num_generations=2, max_completion_length=6, max_steps=2, micro_batch_size=1,
                               learning_rate=1e-2, loss_type="dapo", beta=0.04, num_iterations=2, scale_rewards="none")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    history = train_grpo(model, tok, rows, [_length_reward], config, progress=False)
    assert history.rewards["step"] == [1, 2] and len(history.rewards["_length_reward"]) == 2
    assert len(history.stats["loss"]) == 2 and all(k >= 0 for k in history.stats["kl"])
    changed = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert changed, "no LoRA weight changed"
    assert "ref" in model.peft_config  # beta > 0 with a trained adapter: a frozen copy is the reference


@pytest.mark.slow  # needs the converted SmolLM2 tokenizer and config (~20 s to convert once per machine)
def test_grpo_step_zero_advantage_leaves_weights(tiny):
    """With every advantage 0 and no KL the gradient is 0, so AdamW (no weight decay) leaves the weights as they were."""
    tok, build = tiny
    model = build()
    batch = _batch(tok)
    config = GRPOScratchConfig(max_completion_length=batch.completion_ids.size(1), micro_batch_size=3)
    optimizer = make_optimizer(model.parameters(), config)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    stats = grpo_step(model, optimizer, batch, torch.zeros(4), config)
    assert stats["loss"] == 0.0
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)


@pytest.mark.slow  # needs the converted SmolLM2 tokenizer and config (~20 s to convert once per machine)
@needs_cpu_grpo
def test_check_against_trl_helper_the_notebook_calls(tiny):
    """The notebook's check (on-policy, reference log-probabilities from a frozen copy of the adapter) agrees too."""
    from medreason_utils.training.grpo_from_scratch import add_reference_adapter, check_against_trl

    tok, build = tiny
    model = build()
    add_reference_adapter(model)
    batch = _batch(tok)
    config = GRPOScratchConfig(loss_type="dapo", beta=0.04, max_completion_length=batch.completion_ids.size(1),
                               micro_batch_size=1, temperature=0.7)
    out = check_against_trl(model, tok, batch, torch.tensor([0.5, -0.5, 1.0, -1.0]), config)
    assert out["lora_tensors"] == 2 * 2 * len(LORA_TARGETS)
    assert out["loss_abs_diff"] < 1e-5 and out["grad_max_abs_diff"] < 1e-5, out
    assert all(p.grad is None for p in model.parameters())


def test_the_loop_reads_the_grpo_stage_config_by_trls_names():
    from medreason_utils.config import load_stage_config
    from medreason_utils.training.grpo_from_scratch import GRPOScratchConfig

    stage = load_stage_config("grpo", "cpu", overrides={"epsilon_high": 0.28, "top_p": 0.9})
    loop = GRPOScratchConfig.from_stage_config(stage, micro_batch_size=4)
    assert loop.prompts_per_step * loop.num_generations == stage.per_device_train_batch_size * stage.gradient_accumulation_steps
    assert (loop.num_generations, loop.max_completion_length, loop.temperature, loop.learning_rate, loop.max_steps) == (
        stage.num_generations, stage.max_completion_length, stage.temperature, stage.learning_rate, stage.max_steps)
    assert (loop.loss_type, loop.beta, loop.scale_rewards) == (stage.loss_type, stage.beta, stage.rewards.scale_rewards)
    assert (loop.epsilon_high, loop.top_p, loop.micro_batch_size) == (0.28, 0.9, 4)
