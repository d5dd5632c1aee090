"""GPU presets: 16-bit or 4-bit, sequence length, LoRA rank and vLLM's memory share, by model size and GPU memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from .names import BASE_MODELS, DEFAULT_GPU_MODEL, OFFLINE_BASE_ID, OFFLINE_MODEL_NAME

#: Size of each base model of :data:`BASE_MODELS`, in billions of parameters (the model cards'
#: figures; gemma-3-4b-it counts its vision tower). :func:`preset_for` picks 4-bit or 16-bit and the
#: other GPU settings from it. Add an entry for another hub id (keys are compared case-insensitively).
MODEL_PARAMS_B: dict[str, float] = {
    "unsloth/Qwen3-0.6B": 0.6,
    "unsloth/Qwen3-1.7B": 1.7,
    "unsloth/Qwen3-4B": 4.0,
    "unsloth/Qwen2.5-1.5B-Instruct": 1.54,
    "unsloth/Qwen2.5-3B-Instruct": 3.09,
    "unsloth/Qwen2.5-7B-Instruct": 7.61,
    "unsloth/Meta-Llama-3.1-8B-Instruct": 8.03,
    "unsloth/gemma-3-1b-it": 1.0,
    "unsloth/gemma-3-4b-it": 4.3,
    "unsloth/phi-4": 14.7,
    "unsloth/Phi-4-mini-instruct": 3.8,
    "HuggingFaceTB/SmolLM2-135M-Instruct": 0.135,
}

#: The CPU settings, and the GPU classes' settings for the default GPU model (filled in below from
#: :func:`preset_for`, which is what :func:`load_model` uses for a given model). Keys: max_seq_length
#: (tokens; vLLM's ``max_model_len`` under Unsloth), lora_rank, gpu_memory_utilization (fraction of
#: GPU memory vLLM may take), load_in_4bit.
GPU_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"max_seq_length": 512, "lora_rank": 16, "gpu_memory_utilization": None, "load_in_4bit": False},
}
#: Memory (GiB, as ``torch.cuda.get_device_properties(0).total_memory / 2**30`` reports it) of the GPU
#: classes named in the docs: Colab's T4 (16 GB), L4 (24 GB), A100 40 GB and 80 GB.
NOMINAL_GPU_MEMORY_GIB = {"t4": 14.7, "l4": 22.0, "a100": 39.4, "a100-80gb": 79.2}

#: Bytes of GPU memory per parameter: 16-bit weights, and bitsandbytes NF4 4-bit weights (4 bits plus
#: quantisation constants, with the embeddings and norms kept in 16-bit: ~0.6 byte per parameter,
#: e.g. Llama-3.1-8B in NF4 is ~5 GB).
_BYTES_16BIT, _BYTES_4BIT = 2.0, 0.6
#: 16-bit weights are used when they take at most this fraction of the GPU's memory.
_MAX_16BIT_FRACTION = 0.4
#: 4-bit weights must take at most this fraction of the GPU's memory, or the model does not fit.
_MAX_4BIT_FRACTION = 0.6
#: Above this fraction of GPU memory taken by the weights, the sequence length and LoRA rank are lowered.
_LARGE_WEIGHTS_FRACTION = 0.45
#: A GPU with less memory than this (GiB) is a "16 GB class" GPU (T4, V100-16GB).
_SMALL_GPU_GIB = 20.0


def _weights_gib(params_b: float, load_in_4bit: bool) -> float:
    return params_b * 1e9 * (_BYTES_4BIT if load_in_4bit else _BYTES_16BIT) / 2**30


def gpu_preset(params_b: float, gpu_memory_gib: float) -> dict[str, Any]:
    """GPU settings for a model of ``params_b`` billion parameters on a GPU of ``gpu_memory_gib`` GiB.

    The rule (after Unsloth's Colab GRPO notebooks: Gemma-3-1B 16-bit and Llama-3.1-8B / Phi-4 4-bit
    on a T4, ranks 16-32, 1024 tokens on a T4, Phi-4 at 512):

    * 16-bit weights (2 bytes/parameter) when they take at most 40% of the GPU's memory, else 4-bit
      NF4 (~0.6 byte/parameter); 4-bit weights above 60% of the memory do not fit: ``ValueError``.
      So a T4 (14.7 GiB) keeps models up to ~3B in 16-bit, a 40 GB A100 up to ~8B, and Phi-4
      (14.7B: ~27 GiB in 16-bit) is 4-bit on a 40 GB A100 and 16-bit only on an 80 GB GPU.
    * ``max_seq_length`` (tokens): 1024 on a 16 GB-class GPU (< 20 GiB), 2048 above; halved when the
      weights take more than 45% of the memory (Phi-4 on a T4: 512, as in Unsloth's Phi-4 notebook).
    * ``lora_rank``: 16 on a 16 GB-class GPU or with weights above 45% of the memory, else 32.
    * ``gpu_memory_utilization`` (vLLM's share of the GPU, which holds the weights and the KV cache):
      0.55 on a 16 GB-class GPU, 0.7 above, raised to weights fraction + 0.3 (at most 0.9) so the
      weights leave room for a KV cache.

    Returns ``{"load_in_4bit", "max_seq_length", "lora_rank", "gpu_memory_utilization",
    "params_b", "weights_gib"}``. Raises ``ValueError`` for a model that does not fit even in 4-bit,
    or non-positive sizes.
    """
    if params_b <= 0 or gpu_memory_gib <= 0:
        raise ValueError(f"model size and GPU memory must be positive, got {params_b} B and {gpu_memory_gib} GiB")
    load_in_4bit = _weights_gib(params_b, False) > _MAX_16BIT_FRACTION * gpu_memory_gib
    weights = _weights_gib(params_b, load_in_4bit)
    if weights > _MAX_4BIT_FRACTION * gpu_memory_gib:
        raise ValueError(
            f"a {params_b:g}B model does not fit a {gpu_memory_gib:g} GiB GPU for GRPO with vLLM: even in 4-bit its "
            f"weights take {weights:.1f} GiB (> {_MAX_4BIT_FRACTION:.0%} of the memory); pick a smaller model or a larger GPU"
        )
    fraction = weights / gpu_memory_gib
    small_gpu, large = gpu_memory_gib < _SMALL_GPU_GIB, fraction > _LARGE_WEIGHTS_FRACTION
    base_util = 0.55 if small_gpu else 0.7
    return {
        "load_in_4bit": load_in_4bit,
        "max_seq_length": (1024 if small_gpu else 2048) // (2 if large else 1),
        "lora_rank": 16 if small_gpu or large else 32,
        "gpu_memory_utilization": round(min(0.9, max(base_util, fraction + 0.3)), 2),
        "params_b": params_b,
        "weights_gib": round(weights, 1),
    }


for _kind, _mem in (("t4", NOMINAL_GPU_MEMORY_GIB["t4"]), ("a100", NOMINAL_GPU_MEMORY_GIB["a100"]), ("other", NOMINAL_GPU_MEMORY_GIB["l4"])):
    GPU_PRESETS[_kind] = {k: v for k, v in gpu_preset(MODEL_PARAMS_B[DEFAULT_GPU_MODEL], _mem).items() if k in GPU_PRESETS["cpu"]}


def _safetensors_params(folder: Path) -> int:
    """Parameters counted from the headers of the ``*.safetensors`` files of ``folder`` (no tensor is read)."""
    import struct

    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for key, info in header.items():
            if key != "__metadata__":
                size = 1
                for d in info["shape"]:
                    size *= d
                total += size
    return total


def model_params_b(name: str) -> float:
    """Size of a base model in billions of parameters: :data:`MODEL_PARAMS_B` for a known hub id or short
    name (Unsloth's ``-bnb-4bit`` / ``-unsloth-bnb-4bit`` uploads count as their model), the
    :data:`OFFLINE_MODEL_NAME`, or a local folder of 16/32-bit safetensors (counted from the file headers).

    Raises ``ValueError`` for any other name, saying how to proceed: add the size to
    :data:`MODEL_PARAMS_B` or pass every GPU setting (``load_in_4bit``, ``max_seq_length``, ``lora_rank``,
    ``gpu_memory_utilization``) to :func:`load_model` explicitly.
    """
    if name == OFFLINE_MODEL_NAME:
        return MODEL_PARAMS_B[OFFLINE_BASE_ID]
    hub_id = BASE_MODELS.get(name.lower(), name)
    known = {k.lower(): v for k, v in MODEL_PARAMS_B.items()}
    for suffix in ("-unsloth-bnb-4bit", "-bnb-4bit", ""):
        key = hub_id.lower()
        if suffix and key.endswith(suffix):
            key = key[: -len(suffix)]
        if key in known:
            return known[key]
    folder = Path(name).expanduser()
    if folder.is_dir():
        cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        n = _safetensors_params(folder)
        if n and not cfg.get("quantization_config"):
            return n / 1e9
    raise ValueError(
        f"size of model {name!r} unknown: add it to medreason_utils.models.MODEL_PARAMS_B (billions of parameters), "
        "or pass load_in_4bit, max_seq_length, lora_rank and gpu_memory_utilization explicitly"
    )


def preset_table_markdown(models: Sequence[str] | None = None, gpus: Mapping[str, float] | None = None) -> str:
    """The presets of :func:`gpu_preset` as a markdown table: one row per model of :data:`BASE_MODELS`
    (or ``models``), one column per GPU class of :data:`NOMINAL_GPU_MEMORY_GIB` (or ``gpus``: label -> GiB).
    A cell reads ``16-bit · 2048 · r32 · 0.7`` (weights, max_seq_length in tokens, LoRA rank,
    gpu_memory_utilization) or ``does not fit``."""
    gpus = dict(gpus or {"T4 16 GB": NOMINAL_GPU_MEMORY_GIB["t4"], "L4 24 GB": NOMINAL_GPU_MEMORY_GIB["l4"],
                         "A100 40 GB": NOMINAL_GPU_MEMORY_GIB["a100"], "A100/H100 80 GB": NOMINAL_GPU_MEMORY_GIB["a100-80gb"]})
    names = list(models or [n for n in BASE_MODELS.values() if n != OFFLINE_BASE_ID])
    lines = ["| model | params (B) | " + " | ".join(gpus) + " |", "|---|---:|" + "---|" * len(gpus)]
    for name in sorted(names, key=model_params_b):
        cells = []
        for mem in gpus.values():
            try:
                p = gpu_preset(model_params_b(name), mem)
                cells.append(f"{'4-bit' if p['load_in_4bit'] else '16-bit'} · {p['max_seq_length']} · r{p['lora_rank']} · {p['gpu_memory_utilization']}")
            except ValueError:
                cells.append("does not fit")
        lines.append(f"| {name} | {model_params_b(name):g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


