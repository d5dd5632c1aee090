"""PPO with a value head on the LoRA policy: the baseline GRPO is compared with.

Why written here: TRL 1.x no longer ships ``PPOTrainer`` (not in ``trl`` nor ``trl.experimental`` of TRL 1.16.0,
checked in the installed package), and the maintained libraries that do train LLMs with PPO and a critic need
GPUs and a distributed stack (OpenRLHF 0.11.2: Ray, DeepSpeed, flash-attn, bitsandbytes and transformers==5.15;
verl 0.9.1: Ray, transformers<5.11, vLLM/SGLang rollouts); TorchRL 0.14.1 has LLM losses for GRPO, DAPO and
CISPO but none for PPO with a critic. So PPO is written beside the from-scratch GRPO and shares its sampling,
scoring and log-probabilities (:mod:`.grpo_from_scratch`). Checked 2026-11-24.

The algorithm follows TRL's former ``PPOTrainer`` (``trl/trainer/ppov2_trainer.py``, TRL 0.9-0.19) and
Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO" (arXiv:2403.17031), with their defaults
(``PPOv2Config``: kl_coef 0.05, cliprange 0.2, cliprange_value 0.2, vf_coef 0.1, gamma 1, lam 0.95,
num_ppo_epochs 4, whiten_rewards False):

* **Reward per token** (Ouyang et al. 2022, InstructGPT, arXiv:2203.02155, eq. 2): r_t = -kl_coef (log pi(a_t) -
  log pi_ref(a_t)) at every completion token, plus the sequence's score (the weighted sum of the suite's reward
  functions) at its last token. The reference is the policy with its LoRA adapter disabled (or the frozen
  ``"ref"`` copy of a pretrained adapter, as TRL 1.16's GRPOTrainer does).
* **Values** V(s_t) from a linear value head on the policy's last hidden state (one backbone for actor and critic).
* **GAE** (Schulman et al. 2015, arXiv:1506.02438): delta_t = r_t + gamma V_{t+1} - V_t,
  A_t = delta_t + gamma lam A_{t+1}; returns R_t = A_t + V_t; advantages whitened over the batch's tokens.
* **Losses** (Schulman et al. 2017, arXiv:1707.06347): policy max(-A rho, -A clip(rho, 1 - c, 1 + c)); value
  0.5 max((V - R)^2, (V_old + clip(V - V_old, -c_v, c_v) - R)^2); loss = policy + vf_coef value, token means.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from .grpo_from_scratch import (
    RLHistory,
    Rollout,
    _cycle_rows,
    _reward_means,
    add_reference_adapter,
    adapter_is_trained,
    per_token_logps,
    reference_context,
    sample_rollout,
    score_rollout,
)

__all__ = ["PPOScratchConfig", "make_value_head", "policy_logps_and_values", "sequence_scores", "gae", "masked_whiten",
           "ppo_losses", "ppo_step", "train_ppo"]


@dataclass
class PPOScratchConfig:
    """Settings of the PPO baseline; defaults from TRL's former ``PPOv2Config`` where it had them.

    Attributes:
        prompts_per_step, num_generations: rollouts per step = ``prompts_per_step * num_generations`` (each prompt
            sampled ``num_generations`` times, so GRPO and PPO see the same prompts and number of rollouts).
        max_completion_length, temperature, top_p: sampling, as in :class:`~.grpo_from_scratch.GRPOScratchConfig`.
        kl_coef: weight of the per-token KL penalty in the reward (0.05).
        cliprange, cliprange_value: clip ranges of the policy ratio and of the value change (0.2, 0.2).
        vf_coef: weight of the value loss (0.1).
        gamma, lam: discount and GAE lambda (1.0, 0.95).
        num_ppo_epochs: optimisation passes over each batch (4 in TRL; one optimiser step per pass here).
        micro_batch_size: completions per forward/backward pass.
        learning_rate, max_grad_norm: AdamW learning rate (policy LoRA and value head) and gradient clipping.
        max_steps, seed: as in GRPO.
    """

    prompts_per_step: int = 1
    num_generations: int = 4
    max_completion_length: int = 96
    temperature: float = 1.0
    top_p: float = 1.0
    kl_coef: float = 0.05
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    num_ppo_epochs: int = 4
    micro_batch_size: int = 2
    learning_rate: float = 2e-5
    max_grad_norm: float = 1.0
    max_steps: int = 8
    seed: int = 3407

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "num_generations", "max_completion_length", "num_ppo_epochs", "micro_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise ValueError(f"gamma and lam must be in [0, 1], got {self.gamma}, {self.lam}")

    @property
    def batch_size(self) -> int:
        return self.prompts_per_step * self.num_generations

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_value_head(model):
    """A ``Linear(hidden_size, 1)`` value head in float32 on the model's device, zero-initialised (values start at 0)."""
    import torch

    hidden = model.config.get_text_config().hidden_size if hasattr(model.config, "get_text_config") else model.config.hidden_size
    head = torch.nn.Linear(hidden, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head.to(next(model.parameters()).device)


def policy_logps_and_values(model, value_head, input_ids, attention_mask, logits_to_keep: int, *, temperature: float = 1.0,
                            batch_size: int | None = None):
    """Per-token log-probabilities and values of the last ``logits_to_keep`` tokens, each ``(B, T)``, one forward pass.

    The value of token t is the head applied to the hidden state that predicts it (position t - 1), as the
    log-probability is; hidden states are the backbone's last layer (after its final norm).
    """
    import torch

    logps, values = [], []
    bs = batch_size or input_ids.size(0)
    T = logits_to_keep
    for s in range(0, input_ids.size(0), bs):
        ids = input_ids[s : s + bs]
        out = model(input_ids=ids, attention_mask=attention_mask[s : s + bs], logits_to_keep=T + 1, output_hidden_states=True)
        logits = out.logits[:, :-1, :].float() / temperature
        logps.append(torch.log_softmax(logits, dim=-1).gather(-1, ids[:, -T:].unsqueeze(-1)).squeeze(-1))
        hidden = out.hidden_states[-1][:, -T - 1 : -1, :].float()
        values.append(value_head(hidden).squeeze(-1))
    return torch.cat(logps, dim=0), torch.cat(values, dim=0)


def sequence_scores(rewards_per_func, weights) -> tuple[list[float], list[bool]]:
    """Weighted sum of each completion's rewards with ``None`` left out (TRL's ``nansum``); ``scored[i]`` is False
    when every reward was ``None`` (the completion then gets score 0 and is left out of the losses)."""
    scores, scored = [], []
    for row in rewards_per_func:
        vals = [(v, w) for v, w in zip(row, weights) if v is not None and not math.isnan(v)]
        scored.append(bool(vals))
        scores.append(sum(v * w for v, w in vals))
    return scores, scored


def gae(rewards, values, mask, *, gamma: float = 1.0, lam: float = 0.95):
    """Generalised advantage estimation over the completion tokens (Schulman et al. 2015, arXiv:1506.02438).

    ``rewards``, ``values``, ``mask``: ``(B, T)``; positions where ``mask`` is 0 (after the end of a completion)
    count as terminal: their value and reward are taken as 0. Returns ``(advantages, returns)``, each ``(B, T)``,
    ``returns = advantages + values``; with gamma = lam = 1 the return is the reward-to-go.
    """
    import torch

    rewards = rewards * mask
    values = values * mask
    T = rewards.size(1)
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    return adv * mask, (adv + values) * mask


def masked_whiten(x, mask, *, shift_mean: bool = True, eps: float = 1e-8):
    """(x - mean) / sqrt(var + eps) over the positions where ``mask`` is 1 (var with Bessel's correction, as TRL's
    ``masked_whiten``); ``shift_mean=False`` adds the mean back. Zero where ``mask`` is 0."""
    import torch

    n = mask.sum()
    mean = (x * mask).sum() / n.clamp(min=1)
    var = (((x - mean) ** 2) * mask).sum() / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def ppo_losses(new_logps, old_logps, advantages, vpred, old_values, returns, mask, *, cliprange: float, cliprange_value: float,
               num_tokens):
    """Clipped policy loss and clipped value loss of a (micro-)batch, summed over its tokens and divided by
    ``num_tokens`` (the whole batch's), so micro-batches add up to the batch's token means. Returns
    ``(policy_loss, value_loss, clip_fraction_sum)``."""
    import torch

    ratio = torch.exp(new_logps - old_logps)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    policy = (torch.max(pg1, pg2) * mask).sum() / num_tokens
    vclipped = old_values + torch.clamp(vpred - old_values, -cliprange_value, cliprange_value)
    value = 0.5 * (torch.max((vpred - returns) ** 2, (vclipped - returns) ** 2) * mask).sum() / num_tokens
    clipped = ((pg2 > pg1).float() * mask).sum()
    return policy, value, clipped


def ppo_step(model, value_head, optimizer, rollout: Rollout, scores: Sequence[float], scored: Sequence[bool],
             config: PPOScratchConfig) -> dict[str, float]:
    """One PPO update on a sampled batch: rollout values and reference log-probabilities (no gradient), per-token
    rewards, GAE, then ``num_ppo_epochs`` micro-batched passes of the clipped policy and value losses.

    Returns ``loss``, ``value_loss``, ``kl`` (mean per token of log pi - log pi_ref at sampling time) and ``clip_ratio``.
    """
    import torch

    input_ids, attention_mask = rollout.input_ids()
    device = input_ids.device
    keep = torch.tensor([1.0 if s else 0.0 for s in scored], device=device).unsqueeze(1)
    mask = rollout.completion_mask.float() * keep
    T = rollout.completion_ids.size(1)
    B = rollout.size
    mb = config.micro_batch_size
    with torch.no_grad():
        old_logps, old_values = policy_logps_and_values(model, value_head, input_ids, attention_mask, T,
                                                        temperature=config.temperature, batch_size=mb)
        with reference_context(model):
            ref_logps = per_token_logps(model, input_ids, attention_mask, T, temperature=config.temperature, batch_size=mb)
        kl = (old_logps - ref_logps) * mask
        rewards = -config.kl_coef * kl
        last = (rollout.completion_mask.sum(dim=1) - 1).clamp(min=0)
        rewards[torch.arange(B, device=device), last] += torch.tensor(list(scores), dtype=rewards.dtype, device=device)
        advantages, returns = gae(rewards, old_values, mask, gamma=config.gamma, lam=config.lam)
        advantages = masked_whiten(advantages, mask)
    num_tokens = mask.sum().clamp(min=1.0)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad] + list(value_head.parameters())
    stats: dict[str, float] = {}
    for _ in range(config.num_ppo_epochs):
        optimizer.zero_grad(set_to_none=True)
        tot_pg, tot_vf, clipped = 0.0, 0.0, 0.0
        for s in range(0, B, mb):
            sl = slice(s, s + mb)
            new_logps, vpred = policy_logps_and_values(model, value_head, input_ids[sl], attention_mask[sl], T,
                                                       temperature=config.temperature)
            pg, vf, c = ppo_losses(new_logps, old_logps[sl], advantages[sl], vpred, old_values[sl], returns[sl], mask[sl],
                                   cliprange=config.cliprange, cliprange_value=config.cliprange_value, num_tokens=num_tokens)
            (pg + config.vf_coef * vf).backward()
            tot_pg += float(pg.detach())
            tot_vf += float(vf.detach())
            clipped += float(c)
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        stats = {"loss": tot_pg + config.vf_coef * tot_vf, "value_loss": tot_vf,
                 "kl": float(kl.sum() / num_tokens), "clip_ratio": clipped / float(num_tokens)}
    optimizer.zero_grad(set_to_none=True)
    return stats


def train_ppo(
    model,
    tokenizer,
    dataset,
    reward_funcs: Sequence[Callable],
    config: PPOScratchConfig,
    *,
    reward_weights: Sequence[float] | None = None,
    value_head=None,
    progress: bool = True,
    on_step: Callable[[int, Rollout, list, dict], None] | None = None,
) -> RLHistory:
    """Run ``config.max_steps`` PPO steps with the same sampling and rewards as :func:`~.grpo_from_scratch.train_grpo`.

    ``model`` is a peft model with a trainable LoRA adapter; ``value_head`` defaults to :func:`make_value_head`
    (pass your own to keep it). One AdamW optimiser holds the LoRA and value-head parameters. Returns
    :class:`~.grpo_from_scratch.RLHistory` (``stats`` adds ``value_loss``).
    """
    import torch
    from tqdm.auto import tqdm

    if not hasattr(model, "peft_config"):
        raise TypeError("PPO here needs a peft model: the KL reference is the model with its adapter disabled")
    if adapter_is_trained(model):
        add_reference_adapter(model)  # the reference is the starting adapter, not the bare base model
    value_head = value_head if value_head is not None else make_value_head(model)
    params = [p for p in model.parameters() if p.requires_grad] + list(value_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    names = [getattr(f, "__name__", f"reward_{i}") for i, f in enumerate(reward_funcs)]
    weights = [1.0] * len(reward_funcs) if reward_weights is None else list(reward_weights)
    rows_iter = _cycle_rows(dataset, config.prompts_per_step, config.seed)
    history = RLHistory()
    start = time.perf_counter()
    for step in tqdm(range(1, config.max_steps + 1), desc="PPO", disable=not progress):
        t0 = time.perf_counter()
        rollout = sample_rollout(
            model, tokenizer, next(rows_iter), num_generations=config.num_generations,
            max_completion_length=config.max_completion_length, temperature=config.temperature, top_p=config.top_p,
            seed=config.seed + step,
        )
        rewards = score_rollout(reward_funcs, rollout)
        scores, scored = sequence_scores(rewards, weights)
        stats = ppo_step(model, value_head, optimizer, rollout, scores, scored, config)
        stats["completion_tokens"] = float(rollout.completion_mask.sum()) / rollout.size
        stats["step_seconds"] = round(time.perf_counter() - t0, 2)
        totals = [s if ok else math.nan for s, ok in zip(scores, scored)]
        history.add(step, _reward_means(rewards, names, totals), stats)
        if on_step is not None:
            on_step(step, rollout, rewards, stats)
    history.wall_seconds = round(time.perf_counter() - start, 1)
    return history
