"""SFT from an :class:`~medreason_utils.config.SFTStageConfig`: the data, TRL's ``SFTConfig`` and ``SFTTrainer``.

The recipe: LoRA on every linear projection (``medreason_utils.models.add_lora``), the loss on
the assistant turn only (conversational prompt-completion rows), a linear schedule after a short
warmup, one log line per step, nothing saved by the trainer (the notebook saves the adapter).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import MappingReport, load_rows, split_train_heldout, to_question_prompts, to_sft_conversations

__all__ = ["SFTData", "sft_data", "precision_kwargs", "sft_config_kwargs", "sft_config", "sft_trainer"]


@dataclass
class SFTData:
    """The SFT rows and the held-out questions of one run.

    Attributes:
        train: ``datasets.Dataset`` with ``prompt`` (system, user) and ``completion`` (the assistant
            turn in the grammar): TRL computes the loss on the completion only.
        heldout: ``datasets.Dataset`` with ``prompt``, ``answer``, ``question``: questions never
            trained on (here nor in GRPO), for format compliance.
        train_report, heldout_report: rows kept and skipped (``on_bad_row="skip"``).
    """

    train: Any
    heldout: Any
    train_report: MappingReport
    heldout_report: MappingReport


def sft_data(config: Any, tokenizer: Any = None, *, max_prompt_tokens: int | None = None) -> SFTData:
    """Load ``config.data``, hold out ``config.n_heldout`` questions (seed ``config.seed``), keep
    ``config.n_train`` of the rest, and map them.

    Reasoning and response are capped at a sentence end (``max_reasoning_tokens``,
    ``max_response_tokens``, tokens of ``tokenizer``; whitespace words without one): a row cut
    mid-way would teach the model to stop before its closing tags. Bad rows are skipped and
    counted. Raises ``ValueError`` when ``n_heldout`` leaves no training rows, and what
    :func:`medreason_utils.data.load_rows` raises.

    Length budget, with ``tokenizer``: a row whose prompt is longer than ``max_prompt_tokens`` (default
    :data:`~medreason_utils.config.MAX_PROMPT_TOKENS` ``["sft"]``, 256) or whose whole conversation is longer
    than ``config.max_seq_length`` (the trainer's ``max_length``: Unsloth and TRL would cut it and lose
    ``</ANSWER>`` and the end of turn) is skipped and counted in ``train_report``
    (:func:`medreason_utils.training.grpo.prompt_budget_counts` gives the counts for ``summary.json``).
    """
    from ..config.budget import MAX_PROMPT_TOKENS

    if tokenizer is not None and max_prompt_tokens is None:
        max_prompt_tokens = MAX_PROMPT_TOKENS["sft"]
    rows = load_rows(config.data)
    train_rows, heldout_rows = split_train_heldout(rows, config.n_heldout, seed=config.seed)
    train_rows = train_rows.select(range(min(config.n_train, len(train_rows))))
    train, train_report = to_sft_conversations(
        train_rows, max_reasoning_tokens=config.max_reasoning_tokens, max_response_tokens=config.max_response_tokens,
        tokenizer=tokenizer, output_format="prompt_completion", on_bad_row="skip", source="sft data",
        max_prompt_tokens=max_prompt_tokens if tokenizer is not None else None,
        max_total_tokens=int(config.max_seq_length) if tokenizer is not None else None,
    )
    heldout, heldout_report = to_question_prompts(
        heldout_rows, question_col="Question", answer_col="Response", on_bad_row="skip", source="held-out questions"
    )
    return SFTData(train, heldout, train_report, heldout_report)


def precision_kwargs(runtime: Any) -> dict[str, bool]:
    """``bf16``/``fp16`` for TRL: bf16 where the GPU has it, fp16 on other GPUs, neither on CPU (float32).

    ``use_cpu`` on CPU: the trainer then sets up accelerate for CPU processes, so several processes
    started by ``torchrun``/``accelerate launch`` train together over gloo (DDP), as on GPUs."""
    on_gpu = bool(getattr(runtime, "on_gpu", False))
    bf16 = bool(getattr(runtime, "bf16", False))
    return {"bf16": on_gpu and bf16, "fp16": on_gpu and not bf16, "use_cpu": not on_gpu}


def sft_config_kwargs(config: Any, *, output_dir: str | Path, runtime: Any) -> dict[str, Any]:
    """The keyword arguments of TRL's ``SFTConfig`` for ``config`` (an :class:`~medreason_utils.config.SFTStageConfig`)
    on ``runtime``: the config's TRL fields as they are (:meth:`~medreason_utils.config.StageConfig.trl_kwargs`, a
    filter by ``SFTConfig``'s own fields, recipe extras included), plus what the suite sets itself: ``output_dir``,
    ``max_length`` (= ``max_seq_length``) and the precision of the runtime (:func:`precision_kwargs`); ``report_to``
    as :func:`medreason_utils.training.tracking.report_to` reads it (tracker logs under ``output_dir/runs``)."""
    from .tracking import report_to

    kwargs = {**config.trl_kwargs(), "output_dir": str(output_dir), "max_length": config.max_seq_length, **precision_kwargs(runtime)}
    kwargs["report_to"] = report_to(kwargs.get("report_to"))  # TRL's names; wandb only with a key
    return kwargs


def sft_config(config: Any, *, output_dir: str | Path, runtime: Any):
    """TRL's ``SFTConfig`` for ``config`` on ``runtime`` (:func:`sft_config_kwargs`)."""
    from trl import SFTConfig

    return SFTConfig(**sft_config_kwargs(config, output_dir=output_dir, runtime=runtime))


def sft_trainer(model: Any, tokenizer: Any, train_dataset: Any, config: Any, *, output_dir: str | Path, runtime: Any):
    """TRL's ``SFTTrainer`` on ``model`` (with its LoRA adapter attached) and ``train_dataset`` (:attr:`SFTData.train`)."""
    from trl import SFTTrainer

    return SFTTrainer(model=model, args=sft_config(config, output_dir=output_dir, runtime=runtime),
                      train_dataset=train_dataset, processing_class=tokenizer)
