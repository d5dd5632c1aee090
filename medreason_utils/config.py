"""Stage settings for the notebooks: one profile for a CPU, one for a Colab GPU.

Each notebook's ``parameters`` cell holds every knob, ``None`` meaning "the profile's value
for this runtime". :func:`resolve` fills those in, so a headless run (papermill) changes only
what it names and the notebook prints the settings it actually used.

CPU figures come from ``../shared/notes/cpu-path.md`` (SmolLM2-135M on a 2-core CPU): SFT rows
with the reasoning capped at 96 tokens and the response at 64 reach about 0.85 strict format
after 2 epochs of 96 rows at lr 5e-4; longer rows or truncated rows teach it worse. GPU values
follow Unsloth's Colab GRPO notebooks (LoRA rank 16-32, lr 5e-6 for GRPO, 2e-4 for SFT).

Length budgets. Under Unsloth, vLLM's ``max_model_len`` is the model's ``max_seq_length``
(``unsloth_zoo.vllm_utils.load_vllm``: ``max_model_len = max_seq_length``), and vLLM stops a
completion silently when prompt + completion reach it: a completion cut there loses ``</ANSWER>``.
So every stage has a ``max_seq_length`` and a ``max_prompt_tokens`` reserved for the prompt (system
prompt + question + chat template), and the completion lengths (GRPO ``max_completion_length``,
evaluation ``max_new_tokens``, SFT reasoning + response caps) are derived to fit in the rest
(:func:`resolve`); :func:`length_budget_line` prints the budget in the notebooks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "PROFILES",
    "resolve",
    "length_budget_line",
    "check_prompt_lengths",
    "COMPLETION_OVERHEAD_TOKENS",
    "repo_root",
    "checkpoints_dir",
    "DEFAULT_CHECKPOINT",
    "default_checkpoint",
]

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "sft": {
        "cpu": {
            "data": "sample:medical_o1_sft",
            "n_train": 96,  # rows trained on
            "n_heldout": 40,  # questions held out of SFT and GRPO for format compliance
            "max_reasoning_tokens": 64,  # CoT cap (tokens), cut at a sentence end
            "max_response_tokens": 48,  # response cap (tokens)
            "epochs": 2,
            "max_steps": -1,  # -1: epochs decide
            "learning_rate": 5e-4,
            "batch_size": 4,
            "grad_accum": 1,
            "lora_rank": 16,
            "max_seq_length": 512,  # tokens: prompt + completion (SFTConfig max_length)
            "max_prompt_tokens": 256,  # tokens kept for the prompt; longer questions are skipped
            "eval_max_new_tokens": 256,
            "eval_batch_size": 20,
        },
        "gpu": {
            "data": "medical_o1_sft",  # FreedomIntelligence/medical-o1-reasoning-SFT (en)
            "n_train": 4000,
            "n_heldout": 100,
            "max_reasoning_tokens": 768,
            "max_response_tokens": 256,
            "epochs": 1,
            "max_steps": -1,
            "learning_rate": 2e-4,
            "batch_size": 4,
            "grad_accum": 4,
            "lora_rank": None,  # the model's GPU preset (models.preset_for: 16 on a T4, 32 on an A100)
            "max_seq_length": None,  # the model's GPU preset (1024 on a T4, 2048 on an A100)
            # medical-o1 questions with the system prompt: median 101, 99th percentile 199 tokens (SmolLM2
            # tokenizer, the 158-row sample); longer questions are skipped
            "max_prompt_tokens": 256,
            "eval_max_new_tokens": 1024,  # at most; lowered to fit max_seq_length
            "eval_batch_size": 64,
        },
    },
    "grpo": {
        "cpu": {
            "data": "sample:medical_o1_verifiable",
            "n_prompts": 64,
            "max_steps": 8,
            "num_generations": 4,  # completions per prompt (the group)
            "batch_size": 4,  # completions per step (one group on CPU)
            "grad_accum": 1,
            "max_completion_length": 160,  # tokens; SFT rows are ~130 tokens of THINK+ANSWER
            "max_seq_length": 512,
            "max_prompt_tokens": 256,
            "learning_rate": 2e-5,
            "temperature": 1.0,
        },
        "gpu": {
            "data": "medical_o1_verifiable",  # FreedomIntelligence/medical-o1-verifiable-problem
            "n_prompts": 4000,
            "max_steps": 300,
            "num_generations": 8,
            "batch_size": 8,
            "grad_accum": 1,
            "max_completion_length": 1024,  # at most; lowered to fit max_seq_length (768 on a T4)
            "max_seq_length": None,  # the model's GPU preset
            "max_prompt_tokens": 256,
            "learning_rate": 5e-6,
            "temperature": 1.0,
        },
    },
    # Evaluation trains nothing, so its context is sized for the benchmarks rather than the training preset:
    # prompts with the system prompt (SmolLM2 tokenizer): MedQA median 286, 99th percentile 545, longest 1041;
    # MedXpertQA longest 1381; PubMedQA longest 778. 2560 = 1536 for the prompt + 1024 generated; vLLM's KV
    # cache for 2560 tokens of Qwen3-1.7B is ~0.3 GB.
    "eval": {
        "cpu": {"limit": 40, "max_new_tokens": 160, "batch_size": 20, "max_seq_length": 2560, "max_prompt_tokens": 1536},
        "gpu": {"limit": None, "max_new_tokens": 1024, "batch_size": 64, "max_seq_length": 2560, "max_prompt_tokens": 1536},
    },
}


#: Tokens of an SFT row besides the prompt, the reasoning and the response: the four tags, their line
#: breaks and the chat template's end of turn (25 with SmolLM2's ChatML template, measured on the
#: 158-row sample; Qwen3's template adds an empty think block).
COMPLETION_OVERHEAD_TOKENS = 32

#: Per stage: the settings that are completion lengths, fitted into ``max_seq_length - max_prompt_tokens``.
_COMPLETION_KEYS = {"sft": ("eval_max_new_tokens",), "grpo": ("max_completion_length",), "eval": ("max_new_tokens",)}


def _gpu_runtime(runtime: Any):
    """A RuntimeInfo from a RuntimeInfo or a bool (True: a nominal T4, the smallest GPU class)."""
    from .models import GPU_PRESETS, NOMINAL_GPU_MEMORY_GIB, RuntimeInfo

    if isinstance(runtime, RuntimeInfo):
        return runtime
    if runtime:
        return RuntimeInfo("cuda", "t4", "Tesla T4 (nominal)", NOMINAL_GPU_MEMORY_GIB["t4"], False, preset=dict(GPU_PRESETS["t4"]))
    return RuntimeInfo("cpu", "cpu", preset=dict(GPU_PRESETS["cpu"]))


def resolve(stage: str, runtime: Any, *, model: Any = None, **overrides: Any) -> dict[str, Any]:
    """The settings of ``stage`` ("sft", "grpo", "eval") for the runtime, with every override that is not
    ``None`` applied and the completion lengths fitted into ``max_seq_length``.

    Args:
        runtime: a :class:`~medreason_utils.models.RuntimeInfo` (``detect_runtime()``), or a bool
            (``False``: CPU; ``True``: a GPU of unknown class, budgeted as a T4, the smallest).
        model: on a GPU, the base model (name, or an adapter folder naming its base) whose preset
            (:func:`medreason_utils.models.preset_for`: by model size and GPU memory) fills
            ``max_seq_length`` and ``lora_rank`` when they are ``None``; ``None`` is the default GPU model.
        overrides: settings of the stage; ``None`` keeps the profile's value.

    Length budget (tokens): ``completion room = max_seq_length - max_prompt_tokens``. Each completion
    length the user did not set (``max_completion_length``, ``max_new_tokens``, ``eval_max_new_tokens``)
    becomes ``min(profile value, room)``; SFT's reasoning and response caps keep
    ``reasoning + response + COMPLETION_OVERHEAD_TOKENS <= room`` (scaled down in proportion, an explicit
    one kept and the other given the rest). On a T4 (1024): GRPO 768, SFT caps 552 + 184.

    Raises:
        KeyError: an unknown stage or an override that is not a setting of the stage.
        ValueError: ``max_prompt_tokens >= max_seq_length``; on a GPU, an explicit completion length
            (or explicit SFT caps) that does not fit ``max_seq_length`` (vLLM would cut the completions
            silently); what :func:`~medreason_utils.models.preset_for` raises for an unknown model size.
    """
    if stage not in PROFILES:
        raise KeyError(f"unknown stage {stage!r}; known: {sorted(PROFILES)}")
    rt = _gpu_runtime(runtime)
    base = dict(PROFILES[stage]["gpu" if rt.on_gpu else "cpu"])
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise KeyError(f"{stage} has no setting(s) {unknown}; known: {sorted(base)}")
    explicit = {k for k, v in overrides.items() if v is not None}
    base.update({k: v for k, v in overrides.items() if v is not None})
    if rt.on_gpu and any(base.get(k) is None for k in ("max_seq_length", "lora_rank") if k in base):
        from .models import preset_for

        preset = preset_for(model, rt)
        for k in ("max_seq_length", "lora_rank"):
            if k in base and base[k] is None:
                base[k] = preset[k]
    _fit_lengths(stage, base, explicit, enforce=rt.on_gpu)
    return base


def _fit_lengths(stage: str, s: dict[str, Any], explicit: set[str], *, enforce: bool) -> None:
    """Fit the completion lengths of ``s`` into ``max_seq_length - max_prompt_tokens`` (see :func:`resolve`)."""
    total, prompt = int(s["max_seq_length"]), int(s["max_prompt_tokens"])
    if prompt >= total:
        raise ValueError(f"{stage}: max_prompt_tokens {prompt} leaves no room for a completion in max_seq_length {total}")
    room = total - prompt
    where = f"{stage}: max_seq_length {total} = prompt <= {prompt} + completion <= {room} tokens"
    hint = "vLLM's max_model_len is max_seq_length under Unsloth and it cuts longer completions silently (they lose </ANSWER>)"
    for key in _COMPLETION_KEYS[stage]:
        if key not in explicit:
            s[key] = min(int(s[key]), room)
        elif enforce and int(s[key]) > room:
            raise ValueError(f"{where}; {key}={s[key]} does not fit: set it <= {room}, or raise max_seq_length. {hint}")
    if stage == "sft":
        r, a = int(s["max_reasoning_tokens"]), int(s["max_response_tokens"])
        avail = room - COMPLETION_OVERHEAD_TOKENS
        if r + a <= avail:
            return
        fixed = {"max_reasoning_tokens", "max_response_tokens"} & explicit
        if len(fixed) == 2:
            if enforce:
                raise ValueError(
                    f"{where}; max_reasoning_tokens {r} + max_response_tokens {a} + {COMPLETION_OVERHEAD_TOKENS} for tags "
                    f"do not fit: keep their sum <= {avail}, or raise max_seq_length. {hint}"
                )
            return
        if len(fixed) == 1:
            key = fixed.pop()
            other = "max_response_tokens" if key == "max_reasoning_tokens" else "max_reasoning_tokens"
            rest = avail - int(s[key])
            if rest < 1:
                if enforce:
                    raise ValueError(f"{where}; {key}={s[key]} leaves no room for {other}: keep it < {avail}. {hint}")
                return
            s[other] = min(int(s[other]), rest)
            return
        s["max_reasoning_tokens"] = avail * r // (r + a)
        s["max_response_tokens"] = avail - s["max_reasoning_tokens"]


def length_budget_line(stage: str, settings: Mapping[str, Any]) -> str:
    """One line stating the token budget of ``settings`` (from :func:`resolve`) for the notebooks to print."""
    total, prompt = settings["max_seq_length"], settings["max_prompt_tokens"]
    head = f"length budget (tokens): max_seq_length {total} = prompt <= {prompt} + completion <= {total - prompt}"
    if stage == "sft":
        tail = (
            f"SFT rows: reasoning <= {settings['max_reasoning_tokens']} + response <= {settings['max_response_tokens']}"
            f" + {COMPLETION_OVERHEAD_TOKENS} for tags; format check generates <= {settings['eval_max_new_tokens']}"
        )
    elif stage == "grpo":
        tail = f"GRPO max_completion_length {settings['max_completion_length']}"
    else:
        tail = f"max_new_tokens {settings['max_new_tokens']}"
    return f"{head} | {tail}"


def check_prompt_lengths(
    prompts: Mapping[str, Sequence[Any]] | Sequence[Any],
    tokenizer: Any,
    max_prompt_tokens: int,
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
    from .generation import render_prompts

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
            "raise MAX_PROMPT_TOKENS and MAX_SEQ_LENGTH together, or leave those items out"
        )
    return {"n": n, "longest": longest, "over": over}


def repo_root() -> Path:
    """The checkout's root (the folder holding ``checkpoints/`` and ``notebooks/``), or the current folder
    when the package is installed without a checkout. ``$MEDREASON_ROOT`` overrides."""
    env = os.environ.get("MEDREASON_ROOT")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    return here if (here / "notebooks").is_dir() or (here / "checkpoints").is_dir() else Path.cwd()


def checkpoints_dir() -> Path:
    return repo_root() / "checkpoints"


#: Folder name of the adapter the CPU pipeline trains and ships.
DEFAULT_CHECKPOINT = "medreason-smollm2-135m-grpo"


def default_checkpoint() -> Path:
    """Path of the shipped LoRA checkpoint (``checkpoints/medreason-smollm2-135m-grpo``)."""
    return checkpoints_dir() / DEFAULT_CHECKPOINT


def as_plain(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings with only JSON-friendly values (for summary.json)."""
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in settings.items()}
