"""GRPO from a :class:`~medreason_utils.config.GRPOStageConfig`: the prompts, TRL's ``GRPOConfig`` and ``GRPOTrainer``.

The recipe: Dr. GRPO's loss (``loss_type="dr_grpo"``, Liu et al. 2025, arXiv:2503.20783), no KL
term (``beta=0.0``), advantages scaled as the ``rewards`` section says (``scale_rewards``, batch
std by default), reward weights from the same section, a constant learning rate, one log line per
step (TRL logs each reward's mean as ``rewards/<name>/mean``). On a GPU, Unsloth generates the
rollouts with vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..data import MappingReport, exclude_questions, load_rows, to_question_prompts
from .sft import precision_kwargs

__all__ = ["GRPOPrompts", "grpo_prompts", "grpo_config_kwargs", "grpo_config", "grpo_trainer"]


@dataclass
class GRPOPrompts:
    """The prompts of one GRPO run: ``prompts`` (``datasets.Dataset`` with ``prompt``, ``answer``,
    ``question``), the mapping ``report``, and ``n_excluded`` held-out questions left out."""

    prompts: Any
    report: MappingReport
    n_excluded: int


def grpo_prompts(config: Any, *, exclude: Iterable[str] = ()) -> GRPOPrompts:
    """Load ``config.data`` as question prompts, leave out the questions ``exclude`` names (the same
    question, :func:`medreason_utils.data.question_key`; notebook 01's held-out questions), shuffle
    with ``config.seed`` and keep ``config.n_prompts``. Bad rows are skipped and counted."""
    prompts, report = to_question_prompts(load_rows(config.data), on_bad_row="skip", source="grpo data")
    prompts, n_excluded = exclude_questions(prompts, list(exclude))
    prompts = prompts.shuffle(seed=config.seed).select(range(min(config.n_prompts, len(prompts))))
    return GRPOPrompts(prompts, report, n_excluded)


def grpo_config_kwargs(config: Any, *, output_dir: str | Path, runtime: Any) -> dict[str, Any]:
    """The keyword arguments of TRL's ``GRPOConfig`` for ``config`` on ``runtime`` (``reward_weights``
    and ``scale_rewards`` from ``config.rewards``; ``use_vllm`` and TRL's ``vllm_*`` fields from
    ``config.vllm`` when set, e.g. ``{"mode": "server"}`` -> ``vllm_mode="server"``)."""
    kwargs = dict(
        output_dir=str(output_dir), max_steps=config.max_steps, learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        num_generations=config.num_generations, max_completion_length=config.max_completion_length,
        temperature=config.temperature, beta=config.beta,
        **config.rewards.grpo_config_kwargs(config.loss_type),  # loss_type, reward_weights, scale_rewards (dr_grpo + group refused)
        lr_scheduler_type=config.lr_scheduler_type, logging_steps=1, save_strategy="no", report_to="none", seed=config.seed,
        chat_template_kwargs={"enable_thinking": False},  # Qwen3 templates otherwise open their own <think> block
        **precision_kwargs(runtime),
    )
    if getattr(config, "log_completions", False):
        kwargs["log_completions"] = True
    if getattr(config, "vllm", None) is not None:
        kwargs["use_vllm"] = True
        kwargs.update({f"vllm_{key}": value for key, value in config.vllm.items()})
    return kwargs


def grpo_config(config: Any, *, output_dir: str | Path, runtime: Any):
    """TRL's ``GRPOConfig`` for ``config`` on ``runtime`` (:func:`grpo_config_kwargs`)."""
    from trl import GRPOConfig

    return GRPOConfig(**grpo_config_kwargs(config, output_dir=output_dir, runtime=runtime))


def grpo_trainer(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    config: Any,
    *,
    output_dir: str | Path,
    runtime: Any,
    reward_funcs: Sequence[Any] | None = None,
):
    """TRL's ``GRPOTrainer`` on ``model`` (the SFT adapter, trainable) and ``train_dataset`` (:attr:`GRPOPrompts.prompts`).

    ``reward_funcs``: built from ``config.rewards`` when ``None``; pass the list you built (with
    a shared verifier) to read its counters afterwards. Their order must match ``config.rewards.weights``.
    """
    from trl import GRPOTrainer

    funcs = list(reward_funcs) if reward_funcs is not None else config.rewards.reward_funcs()
    if len(funcs) != len(config.rewards.weights):
        raise ValueError(f"{len(funcs)} reward functions for {len(config.rewards.weights)} reward weights")
    return GRPOTrainer(model=model, args=grpo_config(config, output_dir=output_dir, runtime=runtime),
                       reward_funcs=funcs, train_dataset=train_dataset, processing_class=tokenizer)
