"""LoRA adapters on disk: reading and checking a saved adapter, its base and rank, saving one, comparing two."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Sequence

from ..fileio import atomic_directory, atomic_write_text
from ..generation.vllm_engine import adapter_rank, read_adapter_config, resolve_adapter_dir
from .names import OFFLINE_BASE_ID, OFFLINE_MODEL_NAME
from .offline import default_model_dir_path, portable_tokenizer_config
from .runtime import RuntimeInfo, detect_runtime

#: The local folder of an adapter (a hub id ``owner/name`` is downloaded) and its LoRA rank: one
#: implementation, in the generation layer that vLLM's LoRA requests need it in.
adapter_folder = resolve_adapter_dir

WEIGHTS_FILE = "adapter_model.safetensors"


def _adapter_config(adapter: str | Path) -> dict | None:
    """The parsed ``adapter_config.json`` of a local adapter folder, ``None`` when it has none;
    ``ValueError`` naming the file when it is not a JSON object (e.g. cut off mid-write)."""
    path = Path(adapter) / "adapter_config.json"
    return read_adapter_config(path.parent) if path.is_file() else None


def safetensors_header(path: str | Path) -> dict[str, Any]:
    """The header of a ``.safetensors`` file (tensor name -> ``{"dtype", "shape", "data_offsets"}``, plus
    ``__metadata__``), checked against the file's size without reading a tensor.

    The format (huggingface/safetensors, "Format"): an 8-byte little-endian header length ``N``, ``N``
    bytes of JSON, then the tensor bytes, each tensor at ``data_offsets`` ``[begin, end)`` from there.
    Raises ``ValueError`` naming the file when it is shorter than its header says (a truncated or
    interrupted save) or the header is not JSON.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: truncated safetensors file ({size} bytes, shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            raise ValueError(f"{path}: truncated safetensors file: its header says {n} bytes of JSON, the file has {size} bytes")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: corrupt safetensors header ({exc})") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (not a JSON object)")
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ValueError(f"{path}: truncated safetensors file: its tensors need {8 + n + end} bytes, the file has {size} "
                         "(an interrupted save? save the adapter again)")
    return header


def check_adapter(folder: str | Path) -> Path:
    """Check a local adapter folder before anything loads it: ``adapter_config.json`` parses (and names a
    positive rank ``r``) and ``adapter_model.safetensors``, when present, is whole (:func:`safetensors_header`).
    Returns the folder. Raises ``FileNotFoundError`` for a missing folder or config, ``ValueError`` naming
    the file that is truncated or corrupt."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter folder {folder} does not exist")
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"adapter folder {folder} has no adapter_config.json")
    adapter_rank(folder)  # parses the config, names the file when it does not parse
    if (folder / WEIGHTS_FILE).is_file():
        safetensors_header(folder / WEIGHTS_FILE)
    return folder


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
    ``adapter_config.json``), as :func:`~medreason_utils.models.load_model` would load it: on CPU the offline
    SmolLM2 name for adapters of :data:`OFFLINE_BASE_ID`. ``None`` entries (the base itself) are skipped;
    no adapter gives ``None``.

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


def load_adapter_weights(model, adapter: str | Path) -> None:
    """Copy a saved adapter's weights into a peft model of the same LoRA shape (GPU path: the
    SFT adapter into the Unsloth LoRA that GRPO trains). Raises ``ValueError`` naming the keys
    that did not load, or naming the weights file when it is truncated."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    if (Path(adapter) / WEIGHTS_FILE).is_file():
        safetensors_header(Path(adapter) / WEIGHTS_FILE)
    weights = load_peft_weights(str(adapter))
    result = set_peft_model_state_dict(model, weights)
    unexpected = getattr(result, "unexpected_keys", []) or []
    if unexpected:
        raise ValueError(f"adapter {adapter}: {len(unexpected)} weights did not fit the model, e.g. {unexpected[:3]}")


def _load_weights(adapter_dir: str | Path) -> dict:
    from safetensors.torch import load_file

    path = Path(adapter_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_FILE} in {adapter_dir}")
    safetensors_header(path)
    return load_file(str(path))


def adapter_nonzero(adapter_dir: str | Path) -> dict[str, float]:
    """Check a saved LoRA adapter: number of tensors, parameters, and the summed absolute value of
    its ``lora_B`` matrices (zero at initialisation, so > 0 means training from a fresh LoRA changed it;
    for training that continues an adapter, such as GRPO after SFT, use :func:`adapter_weights_changed`).

    Raises ``FileNotFoundError`` when the folder has no ``adapter_model.safetensors``, ``ValueError``
    naming it when it is truncated.
    """
    path = Path(adapter_dir) / WEIGHTS_FILE
    tensors = _load_weights(adapter_dir)
    b_abs = sum(float(t.abs().sum()) for k, t in tensors.items() if "lora_B" in k)
    return {
        "tensors": len(tensors),
        "parameters": int(sum(t.numel() for t in tensors.values())),
        "lora_B_abs_sum": b_abs,
        "size_mb": round(path.stat().st_size / 1e6, 2),
    }


def adapter_weights_changed(before: str | Path, after: str | Path, *, atol: float = 0.0) -> dict[str, Any]:
    """Compare two saved adapters of one LoRA shape tensor by tensor: did training change the weights?

    The check of TRL's trainer tests (``tests/test_grpo_trainer.py``: every trainable parameter must differ
    from its copy taken before ``train()``), made on the saved ``adapter_model.safetensors`` files, so it
    also holds for GRPO continuing an SFT adapter (whose ``lora_B`` is already non-zero).

    Args:
        before, after: adapter folders (e.g. the SFT adapter and the GRPO adapter trained from it).
        atol: a tensor counts as changed when its largest absolute difference exceeds this.

    Returns:
        ``{"tensors"`` (number compared), ``"changed"`` (number whose max abs difference > ``atol``),
        ``"unchanged"`` (their names, sorted), ``"max_abs_diff"`` (largest over all tensors),
        ``"per_tensor"`` (name -> max abs difference, float)``}``.

    Raises:
        FileNotFoundError: a folder has no ``adapter_model.safetensors``.
        ValueError: naming both files when the tensor names or shapes differ (not the same LoRA), or a
            file that is truncated.
    """
    a, b = _load_weights(before), _load_weights(after)
    fa, fb = Path(before) / WEIGHTS_FILE, Path(after) / WEIGHTS_FILE
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(f"{fa} and {fb} hold different tensors: {len(only_a)} only in the first (e.g. {only_a[:2]}), "
                         f"{len(only_b)} only in the second (e.g. {only_b[:2]}); they are not the same LoRA")
    shapes = [k for k in sorted(a) if tuple(a[k].shape) != tuple(b[k].shape)]
    if shapes:
        k = shapes[0]
        raise ValueError(f"{fa} and {fb}: {len(shapes)} tensors differ in shape, e.g. {k}: {tuple(a[k].shape)} vs {tuple(b[k].shape)}")
    per = {k: float((a[k].float() - b[k].float()).abs().max()) if a[k].numel() else 0.0 for k in sorted(a)}
    unchanged = [k for k, d in per.items() if not d > atol]
    return {"tensors": len(per), "changed": len(per) - len(unchanged), "unchanged": unchanged,
            "max_abs_diff": max(per.values(), default=0.0), "per_tensor": per}


def save_adapter(model, tokenizer, out_dir: str | Path) -> Path:
    """Save a LoRA adapter and its tokenizer to ``out_dir`` atomically and make it portable.

    Everything is written into a temporary folder beside ``out_dir``, which then replaces it
    (:func:`medreason_utils.fileio.atomic_directory`): an interrupted save leaves the earlier adapter (or
    nothing), never a folder with a config and half its weights. The adapter's ``base_model_name_or_path``
    is rewritten from the local cache folder of the offline model to :data:`OFFLINE_BASE_ID`, so the adapter
    loads on any machine (from the hub on a GPU, from the converted GGUF on CPU). Returns the folder.
    """
    out = Path(out_dir)
    with atomic_directory(out) as tmp:
        model.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
            portable_tokenizer_config(tmp)
        cfg_path = tmp / "adapter_config.json"
        if cfg_path.is_file():
            cfg = json.loads(cfg_path.read_text())
            base = str(cfg.get("base_model_name_or_path") or "")
            if base and Path(base).resolve() == default_model_dir_path().resolve():
                cfg["base_model_name_or_path"] = OFFLINE_BASE_ID
                atomic_write_text(cfg_path, json.dumps(cfg, indent=2, sort_keys=True))
    return out


def vllm_lora_request(model, adapter_dir: str | Path | None = None):
    """The ``vllm.lora.request.LoRARequest`` that makes a model's vLLM engine generate with a LoRA adapter.

    vLLM holds the base weights only: a LoRA trained in torch is used in generation only when it is
    saved and passed as a LoRA request. This builds the request with vLLM's own API
    (:func:`medreason_utils.generation.vllm_engine.lora_request`: a stable id per adapter folder), not with
    Unsloth's ``model.load_lora``, which exists only on models that went through ``get_peft_model``.

    Args:
        model: a model from :func:`~medreason_utils.models.load_model` (on a GPU with ``fast_inference=True``
            it carries Unsloth's ``vllm_engine``) or a ``vllm.LLM``.
        adapter_dir: an adapter folder or hub id (the adapter ``load_model`` loaded is
            ``LoadedModel.adapter_dir``); ``None``: a model without a LoRA gets no request.

    Returns:
        The request, or ``None`` when there is nothing to attach: the model has no vLLM engine
        (transformers on CPU: the adapter is in the model's own weights), or it has one and no adapter.

    Raises:
        AdapterNotAttachableError: the engine was built without ``enable_lora`` or with a
            ``max_lora_rank`` below the adapter's rank.
        FileNotFoundError: the adapter folder, its config or its weights do not exist.
        ValueError: no ``adapter_dir`` and the model is a peft model (its LoRA lives only in torch; the
            engine would generate from the base weights).
    """
    from ..generation.vllm_engine import default_lora_request, engine_of, lora_request

    if engine_of(model) is None:
        return None
    if adapter_dir is None:
        return default_lora_request(model)
    return lora_request(model, adapter_dir)
