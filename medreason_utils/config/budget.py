"""Length budgets: prompt + completion must fit the model's ``max_seq_length`` on a GPU.

Under Unsloth, vLLM's ``max_model_len`` is the model's ``max_seq_length``
(``unsloth_zoo.vllm_utils.load_vllm``: ``max_model_len = max_seq_length``), and vLLM stops a
completion silently when prompt + completion reach it: a completion cut there loses ``</ANSWER>``.
Each stage therefore reserves :data:`MAX_PROMPT_TOKENS` for the prompt (system prompt + question +
chat template) and its completion lengths (SFT reasoning + response caps and the format check's
``eval_max_new_tokens``, GRPO ``max_completion_length``, evaluation ``max_new_tokens``) must fit in
the rest. :func:`check_length_budget` checks a stage config against that (raising on a GPU) and
returns the line the notebooks print; the T4 recipes hold values that fit 1,024 tokens.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = [
    "MAX_PROMPT_TOKENS",
    "EVAL_MAX_SEQ_LENGTH",
    "COMPLETION_OVERHEAD_TOKENS",
    "stage_max_seq_length",
    "check_length_budget",
    "check_prompt_lengths",
]

#: Tokens reserved for the prompt, per stage. medical-o1 questions with the system prompt: median 101,
#: 99th percentile 199 tokens (SmolLM2 tokenizer, the 158-row sample), so 256 for SFT and GRPO (longer
#: questions are bad rows, skipped and counted). Evaluation: MedQA median 286, 99th percentile 545,
#: longest 1,041; MedXpertQA longest 1,381; PubMedQA longest 778: 1,536.
MAX_PROMPT_TOKENS = {"sft": 256, "grpo": 256, "eval": 1536}
#: Evaluation trains nothing, so its engine is sized for the benchmarks: 1,536 for the prompt + 1,024
#: generated (vLLM's KV cache for 2,560 tokens of Qwen3-1.7B is ~0.3 GB).
EVAL_MAX_SEQ_LENGTH = 2560
#: Tokens of an SFT row besides the prompt, the reasoning and the response: the four tags, their line
#: breaks and the chat template's end of turn (25 with SmolLM2's ChatML template, measured on the
#: 158-row sample; Qwen3's template adds an empty think block).
COMPLETION_OVERHEAD_TOKENS = 32

_HINT = "vLLM's max_model_len is max_seq_length under Unsloth and it cuts longer completions silently (they lose </ANSWER>)"


def stage_max_seq_length(stage: str, config: Any, runtime: Any = None, model: Any = None) -> int:
    """The ``max_seq_length`` (tokens) a stage runs under: SFT's own field; evaluation's
    :data:`EVAL_MAX_SEQ_LENGTH`; GRPO the model's preset (:func:`medreason_utils.models.preset_for`
    on ``runtime`` for ``model``, the SFT adapter's base when ``None``), 512 on CPU."""
    if stage == "sft":
        return int(config.max_seq_length)
    if stage == "eval":
        return EVAL_MAX_SEQ_LENGTH
    if runtime is None or not getattr(runtime, "on_gpu", False):
        return 512
    from ..models import base_model_of, preset_for

    target = model if model is not None else getattr(config, "sft_adapter", None)
    if target is not None:
        target = _base_of_adapter(target, runtime, base_model_of)
    return int(preset_for(target, runtime)["max_seq_length"])


def _base_of_adapter(target: Any, runtime: Any, base_model_of: Any) -> Any:
    """``target`` itself for a model name (a short name, a hub id of :data:`~medreason_utils.models.MODEL_PARAMS_B`,
    a model folder); for an adapter (a local folder, or a hub id ``owner/name`` not known as a model) the base
    model its ``adapter_config.json`` names (:func:`~medreason_utils.models.base_model_of`, which downloads it
    from the hub). A path (``./``, ``../``, ``/``, ``~`` or two ``/``) that does not exist, e.g.
    ``../runs/latest/sft_adapter`` before notebook 01 ran or on another runtime, raises ``FileNotFoundError``
    saying which notebook writes it and that the run folder must be the same one."""
    from pathlib import Path

    text = str(target)
    path = Path(text).expanduser()
    if path.is_dir():
        return base_model_of([path], runtime) if (path / "adapter_config.json").is_file() else target
    if text.lower() in _known_models() or "/" not in text:
        return target
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise FileNotFoundError(
            f"adapter {text!r} does not exist (yet): notebook 01 writes RUN_DIR/sft_adapter. Run it first with the same "
            "RUN_NAME / RUN_DIR (on Colab keep the run on Drive: USE_DRIVE in the set-up cell), or set sft_adapter "
            "to a hub id 'owner/name' of an adapter"
        )
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return base_model_of([text], runtime) or target  # a hub adapter: its adapter_config.json names the base
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:  # offline and not cached, no such repository
        if isinstance(exc, FileNotFoundError) and "has no adapter_config.json" in str(exc):
            return target  # a hub repository without adapter_config.json: a model
        raise FileNotFoundError(f"sft_adapter {text!r}: cannot read its adapter_config.json from the hub "
                                f"({type(exc).__name__}: {exc})") from exc


def _known_models() -> set[str]:
    from ..models import BASE_MODELS, MODEL_PARAMS_B

    return {k.lower() for k in MODEL_PARAMS_B} | {v.lower() for v in BASE_MODELS.values()}


def check_length_budget(stage: str, config: Any, runtime: Any = None, *, max_seq_length: int | None = None,
                        model: Any = None) -> str:
    """Check that ``config``'s completion lengths fit ``max_seq_length - MAX_PROMPT_TOKENS[stage]``.

    Args:
        stage: ``"sft"``, ``"grpo"`` or ``"eval"``.
        config: the stage config (:class:`~medreason_utils.config.SFTStageConfig` etc.).
        runtime: a :class:`~medreason_utils.models.RuntimeInfo`; on a GPU a length that does not fit raises.
        max_seq_length: tokens; ``None``: :func:`stage_max_seq_length`.

    Returns the budget line the notebooks print, e.g. on a T4
    ``length budget (tokens): max_seq_length 1024 = prompt <= 256 + completion <= 768 | GRPO max_completion_length 768``.

    Raises:
        ValueError: on a GPU, a completion length (or SFT reasoning + response + tags) longer than the room,
            naming the setting and the largest value that fits.
    """
    total = int(max_seq_length or stage_max_seq_length(stage, config, runtime, model))
    prompt = MAX_PROMPT_TOKENS[stage]
    room = total - prompt
    head = f"length budget (tokens): max_seq_length {total} = prompt <= {prompt} + completion <= {room}"
    problems = []
    if stage == "sft":
        r, a = int(config.max_reasoning_tokens or 0), int(config.max_response_tokens or 0)
        if r + a + COMPLETION_OVERHEAD_TOKENS > room:
            problems.append(f"max_reasoning_tokens {r} + max_response_tokens {a} + {COMPLETION_OVERHEAD_TOKENS} for tags "
                            f"> {room}: keep their sum <= {room - COMPLETION_OVERHEAD_TOKENS}")
        if int(config.eval_max_new_tokens) > room:
            problems.append(f"eval_max_new_tokens={config.eval_max_new_tokens} > {room}")
        tail = (f"SFT rows: reasoning <= {r} + response <= {a} + {COMPLETION_OVERHEAD_TOKENS} for tags; "
                f"format check generates <= {config.eval_max_new_tokens}")
    elif stage == "grpo":
        if int(config.max_completion_length) > room:
            problems.append(f"max_completion_length={config.max_completion_length} > {room}")
        tail = f"GRPO max_completion_length {config.max_completion_length}"
    elif stage == "eval":
        if int(config.max_new_tokens) > room:
            problems.append(f"max_new_tokens={config.max_new_tokens} > {room}")
        tail = f"max_new_tokens {config.max_new_tokens}"
    else:
        raise KeyError(f"unknown stage {stage!r}; known: sft, grpo, eval")
    if problems and runtime is not None and getattr(runtime, "on_gpu", False):
        raise ValueError(f"{stage}: {head}; " + "; ".join(problems) + f" (or raise max_seq_length). {_HINT}")
    return f"{head} | {tail}"


def check_prompt_lengths(
    prompts: Mapping[str, Sequence[Any]] | Sequence[Any],
    tokenizer: Any,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS["eval"],
    *,
    enforce: bool = True,
    field: str = "prompt",
) -> dict[str, Any]:
    """Token lengths of conversational prompts, rendered as generation renders them
    (:func:`medreason_utils.generation.render_prompts`), against ``max_prompt_tokens``.

    ``prompts`` is a list of prompts (message lists, strings, or items holding one under ``field``), or a
    mapping ``{name: such a list}`` (notebook 03's items per benchmark).

    Returns ``{"n", "longest", "over": [(name, index, tokens), ...]}``. Raises ``ValueError`` when
    ``enforce`` and a prompt is longer, naming the first ones: a longer prompt would leave its completion
    less than its budget before vLLM's limit.
    """
    from ..generation import render_prompts

    groups: Mapping[str, Sequence[Any]] = prompts if isinstance(prompts, Mapping) else {"prompts": prompts}
    n, longest, over = 0, 0, []
    for name, seq in groups.items():
        items = [p[field] if isinstance(p, Mapping) else p for p in seq]
        for i, text in enumerate(render_prompts(tokenizer, items)):
            k = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            n, longest = n + 1, max(longest, k)
            if k > max_prompt_tokens:
                over.append((name, i, k))
    if over and enforce:
        shown = ", ".join(f"{name}[{i}]: {k}" for name, i, k in over[:5])
        raise ValueError(
            f"{len(over)} of {n} prompts are longer than max_prompt_tokens={max_prompt_tokens} ({shown}); "
            "leave those items out, or raise EVAL_MAX_SEQ_LENGTH and MAX_PROMPT_TOKENS['eval'] together"
        )
    return {"n": n, "longest": longest, "over": over}
