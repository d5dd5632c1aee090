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
    "vllm_generate",
    "prompt_token_ids",
]

#: LoRA request ids handed out here start above this, away from Unsloth's own counter
#: (``unsloth_zoo.vllm_utils.LORA_REQUEST_ID`` counts up from 1 for GRPO's in-memory adapters):
#: vLLM caches adapters by ``lora_int_id``, so two adapters sharing an id would share weights.
LORA_ID_BASE = 1_000_000

_ids: dict[tuple[str, int, int], int] = {}
_ids_lock = threading.Lock()


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


def resolve_adapter_dir(adapter: str | Path) -> Path:
    """A local adapter folder for ``adapter``: the folder itself, or for a hub id ``owner/name`` that is
    not a local path, ``huggingface_hub.snapshot_download`` of it (the cached snapshot when
    :func:`medreason_utils.models.load_model` already fetched it; the network otherwise).

    Raises ``FileNotFoundError`` naming the path when it is neither an existing folder nor a hub id,
    or when the folder holds no ``adapter_config.json``; whatever ``snapshot_download`` raises offline
    for a hub id that is not cached.
    """
    p = Path(adapter).expanduser()
    if not p.exists():
        s = str(adapter)
        if s.count("/") != 1 or s.startswith((".", "/", "~")):
            raise FileNotFoundError(f"adapter {adapter} does not exist (neither a folder nor a hub id 'owner/name')")
        from huggingface_hub import snapshot_download

        p = Path(snapshot_download(repo_id=s))
    if not (p / "adapter_config.json").is_file():
        raise FileNotFoundError(f"adapter folder {p} has no adapter_config.json")
    return p


def adapter_rank(adapter: str | Path) -> int:
    """The LoRA rank of a saved peft adapter: the largest of ``r`` and the values of ``rank_pattern``
    in its ``adapter_config.json`` (peft's per-module ranks); vLLM's ``max_lora_rank`` must reach it.

    Raises ``FileNotFoundError`` as :func:`resolve_adapter_dir`, and ``ValueError`` naming the file
    when the config has no positive integer ``r``.
    """
    folder = resolve_adapter_dir(adapter)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    r = cfg.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"{folder / 'adapter_config.json'}: field 'r' (LoRA rank) is {r!r}, expected a positive integer")
    return max([r, *[v for v in (cfg.get("rank_pattern") or {}).values() if isinstance(v, int)]])


def _weights_file(folder: Path) -> Path:
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"LoRA adapter folder {folder} has no adapter_model.safetensors (nor .bin)")


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

    Raises:
        ValueError: ``model_or_engine`` has no vLLM engine.
        FileNotFoundError: the adapter folder (or its config or weights) does not exist.
        AdapterNotAttachableError: the engine was built without ``enable_lora``, or the adapter's
            rank exceeds the engine's ``max_lora_rank``.
    """
    engine = engine_of(model_or_engine)
    if engine is None:
        raise ValueError(f"{type(model_or_engine).__name__} has no vLLM engine; a LoRA request needs a vllm.LLM")
    folder = resolve_adapter_dir(adapter).resolve()
    weights = _weights_file(folder)
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
    """The LoRA request for the adapter a model carries, for generation that was given none.

    * a model :func:`medreason_utils.models.load_model` loaded with an adapter
      (``model.medreason_adapter_dir``): that adapter's request (:func:`lora_request`);
    * a model with no vLLM engine, or a plain base model: ``None`` (nothing to attach);
    * a peft model (``peft_config``) with an engine but no saved folder: raises ``ValueError``;
      its LoRA lives only in torch, and the engine would silently generate from the base weights.
    """
    engine = engine_of(model)
    if engine is None or engine is model:
        return None
    folder = getattr(model, "medreason_adapter_dir", None)
    if folder:
        return lora_request(model, folder)
    if getattr(model, "peft_config", None):
        raise ValueError(
            "this model carries a LoRA adapter that its vLLM engine cannot see (vLLM holds the base weights only); "
            "save it (medreason_utils.models.save_adapter) and pass lora_request=vllm_lora_request(model, folder)"
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
