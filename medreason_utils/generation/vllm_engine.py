"""Generation through vLLM's own API: the engine, LoRA requests, sampling.

On a GPU, Unsloth's ``FastLanguageModel.from_pretrained(..., fast_inference=True)`` builds a
``vllm.LLM`` and attaches it as ``model.vllm_engine``, with ``model.fast_generate`` bound to its
``generate`` (``unsloth/models/llama.py``; Unsloth runs it in-process,
``VLLM_ENABLE_V1_MULTIPROCESSING=0``, with ``enable_lora=True`` for text models). The engine holds
the *base* weights: a LoRA adapter trained in torch is used only when it is passed as a
``vllm.lora.request.LoRARequest(name, int_id, path)`` with each ``generate`` call.

This module talks to that ``vllm.LLM`` directly, not to Unsloth's helpers (``model.load_lora``
exists only after ``get_peft_model``), so the same code runs with Unsloth's engine on Colab and
with a plain ``vllm.LLM(model=<folder>, dtype="float32", enable_lora=True, max_lora_rank=16,
enforce_eager=True)`` on a CPU (``make test-vllm``, ``benchmarks/vllm_vs_transformers.py``).

No silent fallbacks: where an engine exists but an adapter cannot be attached (the engine was
built without ``enable_lora``, the adapter's rank exceeds the engine's ``max_lora_rank``, the
folder is missing or holds no ``adapter_config.json``), :func:`lora_request` raises
:class:`AdapterNotAttachableError` or ``FileNotFoundError`` instead of generating from the base weights.

vLLM is imported only inside the functions that need it (a CPU install of this package has none).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Sequence

__all__ = [
    "AdapterNotAttachableError",
    "engine_of",
    "is_vllm_engine",
    "engine_lora_config",
    "resolve_adapter_dir",
    "adapter_rank",
    "lora_request",
    "default_lora_request",
    "looks_like_path",
    "read_adapter_config",
    "vllm_generate",
    "prompt_token_ids",
    "mark_merged",
    "RetiredEngineError",
    "is_retired",
]

#: LoRA request ids handed out here start above this, away from Unsloth's own counter
#: (``unsloth_zoo.vllm_utils.LORA_REQUEST_ID`` counts up from 1 for GRPO's in-memory adapters):
#: vLLM caches adapters by ``lora_int_id``, so two adapters sharing an id would share weights.
LORA_ID_BASE = 1_000_000

_ids: dict[tuple[str, int, int], int] = {}
_ids_lock = threading.Lock()


#: attribute set on a CPU ``vllm.LLM`` shut down because another was built (``generation.cpu_engine``)
RETIRED_ATTR = "medreason_retired"


class RetiredEngineError(RuntimeError):
    """The CPU vLLM engine was shut down when another was built (one in-process engine at a time); load the model
    again (:func:`medreason_utils.models.load_for_generation`)."""


def check_live(engine: Any) -> None:
    """Raise :class:`RetiredEngineError` for an engine :mod:`~medreason_utils.generation.cpu_engine` retired."""
    if getattr(engine, RETIRED_ATTR, False):
        raise RetiredEngineError("this CPU vLLM engine was shut down when another was built (one in-process engine "
                                 "at a time); load the model again with medreason_utils.models.load_for_generation")


def is_retired(model: Any) -> bool:
    """True when ``model`` is, or carries, a CPU vLLM engine that was shut down (:func:`check_live` would raise)."""
    engine = engine_of(model)
    return engine is not None and bool(getattr(engine, RETIRED_ATTR, False))


class AdapterNotAttachableError(RuntimeError):
    """A vLLM engine exists but cannot take this LoRA adapter; the message names the adapter and the fix."""


def is_vllm_engine(obj: Any) -> bool:
    """True when ``obj`` is a ``vllm.LLM`` (checked by class, without importing vllm)."""
    return any(c.__name__ == "LLM" and c.__module__.startswith("vllm.") for c in type(obj).__mro__) and callable(
        getattr(obj, "generate", None)
    )


def engine_of(model: Any) -> Any | None:
    """The ``vllm.LLM`` behind ``model``: ``model`` itself when it is one, Unsloth's ``model.vllm_engine``
    (``fast_inference=True``), else ``None`` (a transformers / peft model: generation runs in torch)."""
    if model is None:
        return None
    if is_vllm_engine(model):
        return model
    engine = getattr(model, "vllm_engine", None)
    return engine if engine is not None and callable(getattr(engine, "generate", None)) else None


_UNKNOWN = object()


def engine_lora_config(engine: Any) -> Any:
    """The engine's ``LoRAConfig`` (``engine.llm_engine.vllm_config.lora_config``, vLLM 0.11 to 0.32),
    ``None`` when the engine was built without ``enable_lora``. Raises ``TypeError`` for an object
    whose configuration cannot be read (not a vLLM V1 ``LLM``)."""
    llm_engine = getattr(engine, "llm_engine", None)
    vllm_config = getattr(llm_engine, "vllm_config", None)
    if vllm_config is not None:
        return getattr(vllm_config, "lora_config", None)
    cfg = getattr(llm_engine, "lora_config", _UNKNOWN)
    if cfg is _UNKNOWN:
        raise TypeError(f"cannot read the LoRA settings of {type(engine).__name__} (expected a vllm.LLM)")
    return cfg


def looks_like_path(name: str | Path) -> bool:
    """True when ``name`` reads as a local path rather than a hub id ``owner/name``: a ``Path``; it starts
    with ``.``, ``~`` or ``/``; it holds a backslash or more than one ``/``, or ends with ``/``; or its first
    part is an existing local folder (``runs/sft_adapter`` where ``runs/`` exists). Such a name is never
    sent to the hub: a missing one is a missing folder."""
    s = str(name)
    if isinstance(name, Path) or s.startswith((".", "~", "/")) or "\\" in s or s.count("/") > 1 or s.endswith("/"):
        return True
    return "/" in s and Path(s.split("/", 1)[0]).expanduser().is_dir()


def resolve_adapter_dir(adapter: str | Path) -> Path:
    """A local adapter folder for ``adapter``: the folder itself, or for a hub id ``owner/name`` that is
    not a local path (:func:`looks_like_path`), ``huggingface_hub.snapshot_download`` of it (the cached
    snapshot when :func:`medreason_utils.models.load_model` already fetched it; the network otherwise).

    Raises ``FileNotFoundError`` naming the path when it looks like a path and does not exist, or is
    neither a folder nor a hub id, or when the folder holds no ``adapter_config.json``; for a hub id that
    cannot be fetched, ``FileNotFoundError`` naming it (chained to what ``snapshot_download`` raised).
    """
    p = Path(adapter).expanduser()
    if not p.exists():
        s = str(adapter)
        if looks_like_path(adapter):
            raise FileNotFoundError(f"adapter folder {s} does not exist (relative to {Path.cwd()}); check the path")
        if s.count("/") != 1:
            raise FileNotFoundError(f"adapter {adapter} does not exist (neither a folder nor a hub id 'owner/name')")
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

        try:
            p = Path(snapshot_download(repo_id=s))
        except (LocalEntryNotFoundError, RepositoryNotFoundError) as exc:
            raise FileNotFoundError(f"adapter {s!r} is not a local folder and could not be fetched from the hub "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not (p / "adapter_config.json").is_file():
        raise FileNotFoundError(f"adapter folder {p} has no adapter_config.json")
    return p


def read_adapter_config(adapter: str | Path) -> dict:
    """The parsed ``adapter_config.json`` of a local adapter folder. Raises ``FileNotFoundError`` when it is
    missing and ``ValueError`` naming the file when it is not a JSON object (cut off mid-write, emptied)."""
    path = Path(adapter) / "adapter_config.json"
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}; "
                         f"{len(text)} characters: truncated? save the adapter again)") from exc
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(cfg).__name__}")
    return cfg


def adapter_rank(adapter: str | Path) -> int:
    """The LoRA rank of a saved peft adapter: the largest of ``r`` and the values of ``rank_pattern``
    in its ``adapter_config.json`` (peft's per-module ranks); vLLM's ``max_lora_rank`` must reach it.

    Raises ``FileNotFoundError`` as :func:`resolve_adapter_dir`, and ``ValueError`` naming the file
    when the config is not JSON or has no positive integer ``r``.
    """
    folder = resolve_adapter_dir(adapter)
    cfg = read_adapter_config(folder)
    r = cfg.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"{folder / 'adapter_config.json'}: field 'r' (LoRA rank) is {r!r}, expected a positive integer")
    return max([r, *[v for v in (cfg.get("rank_pattern") or {}).values() if isinstance(v, int)]])


def _weights_file(folder: Path) -> Path:
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"LoRA adapter folder {folder} has no adapter_model.safetensors (nor .bin)")


#: attribute of a ``vllm.LLM`` whose weights hold an adapter merged in: :func:`_merge_stamp` of that adapter
MERGED_ATTR = "medreason_merged_adapter"


def _merge_stamp(folder: Path) -> tuple[str, int, int]:
    w = _weights_file(folder).stat()
    return (str(folder), w.st_size, w.st_mtime_ns)


def mark_merged(engine: Any, adapter: str | Path) -> Any:
    """Record on ``engine`` (a ``vllm.LLM``) that its weights are ``adapter`` merged into the base, so that
    :func:`lora_request` for that adapter returns ``None`` and for any other raises. Returns ``engine``."""
    setattr(engine, MERGED_ATTR, _merge_stamp(resolve_adapter_dir(adapter).resolve()))
    return engine


def lora_request(model_or_engine: Any, adapter: str | Path, *, name: str | None = None):
    """A ``vllm.lora.request.LoRARequest`` that makes the engine generate with ``adapter``.

    Args:
        model_or_engine: a ``vllm.LLM`` or a model carrying one (Unsloth ``fast_inference=True``).
        adapter: a peft LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``)
            or a hub id of one (see :func:`resolve_adapter_dir`).
        name: the request's ``lora_name`` (default: the folder name and the id).

    The ``lora_int_id`` is stable per adapter: the same folder with the same weights file (path,
    size, modification time) always gets the same id in this process, so vLLM reuses the adapter it
    already loaded; a folder saved again gets a new id, so vLLM does not serve stale weights from its
    cache. Ids start above :data:`LORA_ID_BASE`, clear of Unsloth's own request ids.

    An engine built on the adapter merged into the base weights (:func:`mark_merged`: the CPU path's
    :func:`medreason_utils.models.load_for_generation`) needs no request for that same adapter (the same
    weights file: path, size, modification time): ``None``.

    Raises:
        ValueError: ``model_or_engine`` has no vLLM engine.
        FileNotFoundError: the adapter folder (or its config or weights) does not exist.
        AdapterNotAttachableError: also for an engine holding another adapter merged.
        AdapterNotAttachableError: the engine was built without ``enable_lora``, or the adapter's
            rank exceeds the engine's ``max_lora_rank``.
    """
    engine = engine_of(model_or_engine)
    if engine is None:
        raise ValueError(f"{type(model_or_engine).__name__} has no vLLM engine; a LoRA request needs a vllm.LLM")
    folder = resolve_adapter_dir(adapter).resolve()
    weights = _weights_file(folder)
    merged = getattr(engine, MERGED_ATTR, None)
    if merged is not None:
        if merged == _merge_stamp(folder):
            return None  # the engine's weights are this adapter merged into the base: nothing to attach
        raise AdapterNotAttachableError(
            f"LoRA adapter {folder}: this vLLM engine's weights hold another adapter merged ({merged[0]}), so it cannot "
            "generate with this one; load it with medreason_utils.models.load_for_generation(adapter=...)"
        )
    cfg = engine_lora_config(engine)
    if cfg is None:
        raise AdapterNotAttachableError(
            f"LoRA adapter {folder}: the vLLM engine was built without LoRA support (enable_lora=False), so it would "
            "generate from the base weights; rebuild it with enable_lora=True and max_lora_rank >= the adapter's rank "
            "(Unsloth: fast_inference=True with max_lora_rank=...), or merge the adapter into the weights"
        )
    rank, limit = adapter_rank(folder), int(getattr(cfg, "max_lora_rank", 0) or 0)
    if limit and rank > limit:
        raise AdapterNotAttachableError(
            f"LoRA adapter {folder} has rank {rank} but the vLLM engine takes ranks up to max_lora_rank={limit}; "
            f"load the base model with max_lora_rank >= {rank} (medreason_utils.models.load_model(lora_rank=...))"
        )
    stat = weights.stat()
    key = (str(folder), stat.st_size, stat.st_mtime_ns)
    with _ids_lock:
        int_id = _ids.setdefault(key, LORA_ID_BASE + len(_ids) + 1)
    from vllm.lora.request import LoRARequest

    return LoRARequest(lora_name=name or f"{folder.name}-{int_id}", lora_int_id=int_id, lora_path=str(folder))


def default_lora_request(model: Any):
    """The LoRA request for generation that was given none: an adapter is never guessed from the model.

    * a model with no vLLM engine, or a ``vllm.LLM``, or a plain base model: ``None`` (nothing to attach);
    * a model whose adapter folder was attached to its CPU engine by ``generation.cpu_engine.attach_engine``: that
      folder's request;
    * a peft model (``peft_config``) with an engine: raises ``ValueError``; its LoRA lives only in torch,
      and the engine would silently generate from the base weights. Pass the request of its saved folder
      (``vllm_lora_request(model, loaded.adapter_dir)``, ``loaded`` being what ``load_model`` returned).
    """
    engine = engine_of(model)
    if engine is None or engine is model:
        return None
    attached = getattr(model, "medreason_adapter_dir", None)  # set only by generation.cpu_engine.attach_engine, explicitly
    if attached:
        return lora_request(model, attached)
    if getattr(model, "peft_config", None):
        raise ValueError(
            "this model carries a LoRA adapter that its vLLM engine cannot see (vLLM holds the base weights only); "
            "pass lora_request=medreason_utils.models.vllm_lora_request(model, folder) with the adapter's folder "
            "(LoadedModel.adapter_dir for a model from load_model; save a trained one with save_adapter first)"
        )
    return None


def prompt_token_ids(tokenizer: Any, texts: Sequence[str]) -> list[dict[str, list[int]]]:
    """vLLM token prompts (``{"prompt_token_ids": [...]}``, vLLM's ``TokensPrompt``) of rendered prompts,
    tokenized with ``add_special_tokens=False``, as the transformers path and TRL's rollouts tokenize them.

    A chat template that starts with the BOS token (Llama 3.x, Gemma 3) already renders it: vLLM given the
    text would tokenize it with the tokenizer's own BOS again and the prompt would start with two BOS tokens.
    """
    return [{"prompt_token_ids": list(tokenizer(t, add_special_tokens=False)["input_ids"])} for t in texts]


def vllm_generate(
    engine: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[dict] | str],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    repetition_penalty: float | None = None,
    n: int = 1,
    lora_request: Any = None,
    chat_template_kwargs: dict | None = None,
    progress: bool = False,
) -> list[list[str]]:
    """Generate ``n`` completions per prompt with a ``vllm.LLM``, in one batched ``generate`` call.

    Conversational prompts are rendered with ``tokenizer``'s chat template (the same rendering as the
    transformers path, :func:`medreason_utils.generation.render_prompts`). One ``SamplingParams(n=n,
    seed=seed)`` serves every prompt: vLLM draws the ``n`` samples of a request with seeds
    ``seed, seed + 1, ...`` (``vllm/v1/engine/parallel_sampling.py``), so they differ, while ``n``
    copies of one prompt under one seeded ``SamplingParams`` would give ``n`` identical completions.

    Returns ``out[i][j]``: completion ``j`` (of ``n``) of prompt ``i``, text without the prompt.
    Raises ``ValueError`` for ``n < 1`` or ``n > 1`` with greedy decoding (``temperature`` 0).
    """
    from vllm import SamplingParams

    from . import render_prompts

    check_live(engine)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n > 1 and not (temperature and temperature > 0):
        raise ValueError(f"n={n} completions per prompt need temperature > 0 (greedy decoding repeats itself)")
    texts = render_prompts(tokenizer, prompts, chat_template_kwargs)
    if not texts:
        return []
    params = SamplingParams(
        n=n,
        temperature=float(temperature or 0.0),
        top_p=float(top_p) if temperature and temperature > 0 else 1.0,
        max_tokens=int(max_new_tokens),
        seed=seed,
        repetition_penalty=float(repetition_penalty or 1.0),
    )
    outputs = engine.generate(prompt_token_ids(tokenizer, texts), sampling_params=params, lora_request=lora_request,
                              use_tqdm=progress)
    return [[c.text for c in sorted(o.outputs, key=lambda c: c.index)] for o in outputs]
