"""Export a trained adapter as Unsloth's notebooks end: a merged 16-bit model, GGUF, and a Hub push.

* :func:`save_merged` (CPU or GPU, transformers + peft): the adapter folded into its base with peft's
  ``merge_and_unload`` (W + (alpha/r) B A per target layer), cast to 16 bits and saved with
  ``save_pretrained`` (safetensors) beside the tokenizer and a model card, so plain
  ``transformers.AutoModelForCausalLM.from_pretrained(folder)`` loads it without peft;
* :func:`save_merged_unsloth` / :func:`save_gguf_unsloth` (GPU): Unsloth's own
  ``model.save_pretrained_merged`` / ``model.save_pretrained_gguf`` on the model Unsloth loaded;
  on CPU they raise ``RuntimeError`` saying to use :func:`save_merged`;
* :func:`model_card` writes ``README.md`` (``huggingface_hub.ModelCard``: YAML metadata + text);
* :func:`hub_push_plan` / :func:`push_to_hub`: ``huggingface_hub.HfApi.create_repo`` then
  ``upload_folder`` of an adapter or merged folder, the token from ``$HF_TOKEN`` or Colab's
  secret ``HF_TOKEN`` only (never an argument written into a notebook);
* :func:`export_adapter`: all of these in one call, what notebook 04's export cell and
  ``medreason export`` both run (formats and push checked before anything is written).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..fileio import UserInputError, atomic_directory, atomic_write_text

__all__ = ["DTYPES", "FORMATS", "DEFAULT_FORMATS", "DEFAULT_GGUF_QUANTIZATION", "ExportError", "HubTokenError",
           "save_merged", "save_merged_unsloth", "save_gguf_unsloth", "model_card", "hub_token", "push_token",
           "HubPushPlan", "hub_push_plan", "push_to_hub", "ExportResult", "check_formats", "export_adapter"]

#: The 16-bit types of :func:`save_merged` (torch dtypes by name).
DTYPES = ("float16", "bfloat16")

#: What :func:`export_adapter` can write (notebook 04's ``EXPORT_FORMATS``, ``medreason export --format``):
#: ``"merged_16bit"`` (:func:`save_merged` into ``<out_dir>/merged_16bit``, CPU or GPU), ``"gguf"``
#: (:func:`save_gguf_unsloth` into ``<out_dir>/gguf``, a CUDA GPU with Unsloth only) and ``"adapter"``
#: (the LoRA adapter as it is: nothing written, it is what a push sends when ``merged_16bit`` is not asked).
FORMATS = ("merged_16bit", "gguf", "adapter")

#: What ``medreason export`` writes when no ``--format`` is given.
DEFAULT_FORMATS = ("merged_16bit",)

#: llama.cpp's quantisation of the GGUF, the one Unsloth's notebooks use (``save_pretrained_gguf``).
DEFAULT_GGUF_QUANTIZATION = "q4_k_m"

#: The environment variables :func:`hub_token` reads, in order (then Colab's secret ``HF_TOKEN``).
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


class ExportError(UserInputError, ValueError):
    """An export that cannot be done as asked: an unknown format, GGUF without a CUDA GPU, a repo id that is
    not ``owner/name``, nothing to export. The message names the setting and what is allowed."""


class HubTokenError(UserInputError, PermissionError):
    """A Hub push without a token (``$HF_TOKEN`` or Colab's secret ``HF_TOKEN``); the message says where to set it."""


def _card_body(folder: Path) -> str:
    """The text (without YAML metadata) of the card already in ``folder`` (an adapter's README.md), or ''."""
    path = folder / "README.md"
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8")
    if text.startswith("---"):
        parts = text.split("---", 2)
        text = parts[2] if len(parts) == 3 else ""
    return text.strip()


def model_card(folder: str | Path, *, base_model: str | None, kind: str, source: str | Path | None = None,
               body: str | None = None, tags: Sequence[str] = ()) -> Path:
    """Write ``folder/README.md``: a Hub model card (``huggingface_hub.ModelCard``) and return its path.

    Args:
        folder: the model folder (an adapter or a merged model).
        base_model: the base model's hub id (metadata ``base_model``); ``None`` leaves it out.
        kind: ``"adapter"`` (metadata ``library_name: peft``) or ``"merged"`` (``library_name: transformers``).
        source: the adapter the model came from; its card's text is reused when ``body`` is ``None``.
        body: the card's text (markdown) below the metadata.
        tags: extra metadata tags (``medreason``, ``medical-reasoning`` and ``kind`` are always there).

    Raises ``ValueError`` for another ``kind``.
    """
    from huggingface_hub import ModelCard, ModelCardData

    if kind not in ("adapter", "merged"):
        raise ValueError(f"model card kind must be 'adapter' or 'merged', got {kind!r}")
    folder = Path(folder)
    if body is None:
        body = _card_body(Path(source)) if source is not None else ""
        if kind == "merged":
            note = (f"Merged 16-bit model: the LoRA adapter `{Path(source).name if source else 'adapter'}` folded into "
                    f"{base_model or 'its base'} (peft `merge_and_unload`). Load it with plain transformers: "
                    "`AutoModelForCausalLM.from_pretrained(<this folder>)`.")
            body = note + ("\n\n" + body if body else "")
    data = ModelCardData(library_name="peft" if kind == "adapter" else "transformers", base_model=base_model,
                         license="apache-2.0", tags=sorted({"medreason", "medical-reasoning", kind, *tags}))
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")
    return atomic_write_text(folder / "README.md", str(card))


def save_merged(adapter: str | Path, out_dir: str | Path, *, dtype: str = "float16", model_name: str | None = None,
                runtime: Any = None) -> Path:
    """Fold a LoRA adapter into its base and save a plain transformers model in 16 bits.

    The base is the adapter's ``base_model_name_or_path`` (the offline SmolLM2 folder on CPU,
    :func:`medreason_utils.models.load_model` with ``merge_adapter=True``, ``engine="transformers"``)
    unless ``model_name`` is given. The merge is done in float32, then the weights are cast to ``dtype``
    (``"float16"``: Unsloth's ``merged_16bit``; ``"bfloat16"``) and saved as safetensors with the
    tokenizer, a model card (:func:`model_card`, kind ``merged``) and ``medreason_export.json``
    (the adapter, the base, the dtype). Written into a temporary folder renamed into place
    (:func:`medreason_utils.fileio.atomic_directory`). A 135M model gives about 270 MB.

    Returns ``out_dir``. Raises ``ValueError`` for a ``dtype`` not in :data:`DTYPES`,
    ``FileNotFoundError`` for a folder without ``adapter_config.json`` (from ``load_model``).
    """
    import torch

    from ..models import load_model

    if dtype not in DTYPES:
        raise ValueError(f"save_merged dtype must be one of {DTYPES}, got {dtype!r}")
    adapter = Path(adapter)
    cfg_path = adapter / "adapter_config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{adapter}: no adapter_config.json (not a LoRA adapter folder)")
    base_id = json.loads(cfg_path.read_text()).get("base_model_name_or_path")
    model, tokenizer = load_model(model_name, adapter=adapter, merge_adapter=True, engine="transformers", runtime=runtime,
                                  dtype=torch.float32)
    model = model.to(getattr(torch, dtype))
    model.config.dtype = dtype
    model.config.torch_dtype = dtype  # the name transformers 4.x (the GPU lock's) reads
    out = Path(out_dir)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        model_card(tmp, base_model=base_id, kind="merged", source=adapter)
        atomic_write_text(Path(tmp) / "medreason_export.json", json.dumps(
            {"adapter": str(adapter), "base_model": base_id, "dtype": dtype, "method": "peft merge_and_unload"}, indent=2))
    return out


def _unsloth_model(model: Any, method: str) -> Any:
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        cuda = False
    if not cuda or not hasattr(model, method):
        raise RuntimeError(
            f"{method} is Unsloth's (a model loaded by unsloth.FastLanguageModel on a CUDA GPU); "
            f"{'no CUDA GPU here' if not cuda else type(model).__name__ + ' has no ' + method}. On CPU, "
            "medreason_utils.training.export.save_merged(adapter, out_dir) writes the merged 16-bit model "
            "(GGUF: convert that folder with llama.cpp's convert_hf_to_gguf.py)")
    return model


def save_merged_unsloth(model: Any, tokenizer: Any, out_dir: str | Path, *, save_method: str = "merged_16bit") -> Path:
    """GPU: Unsloth's ``model.save_pretrained_merged(out_dir, tokenizer, save_method=...)`` (``"merged_16bit"``,
    ``"merged_4bit"`` or ``"lora"``) on the model :func:`medreason_utils.models.load_model` returned with
    Unsloth. Raises ``RuntimeError`` without CUDA or on a model without that method (not Unsloth's)."""
    _unsloth_model(model, "save_pretrained_merged").save_pretrained_merged(str(out_dir), tokenizer, save_method=save_method)
    return Path(out_dir)


def save_gguf_unsloth(model: Any, tokenizer: Any, out_dir: str | Path, *, quantization_method: str = "q4_k_m") -> Path:
    """GPU: Unsloth's ``model.save_pretrained_gguf(out_dir, tokenizer, quantization_method=...)`` (llama.cpp's
    quantisations: ``"q4_k_m"``, ``"q8_0"``, ``"f16"``, ...; Unsloth builds llama.cpp the first time, minutes).
    Raises ``RuntimeError`` without CUDA or on a model without that method (not Unsloth's)."""
    _unsloth_model(model, "save_pretrained_gguf").save_pretrained_gguf(str(out_dir), tokenizer,
                                                                      quantization_method=quantization_method)
    return Path(out_dir)


def hub_token(env: Mapping[str, str] | None = None) -> str | None:
    """The Hub token: ``$HF_TOKEN`` (or ``$HUGGING_FACE_HUB_TOKEN``), else Colab's secret ``HF_TOKEN``
    (``google.colab.userdata``) when running in Colab, else ``None``. Never logged."""
    env = os.environ if env is None else env
    for name in TOKEN_VARIABLES:
        if env.get(name):
            return env[name]
    try:
        from google.colab import userdata  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        return userdata.get("HF_TOKEN")
    except Exception:  # noqa: BLE001 - no such secret, or access not granted to the notebook
        return None


def push_token(repo_id: str, env: Mapping[str, str] | None = None) -> str:
    """The token of a push to ``repo_id``, after checking the id: :class:`ExportError` when it is not
    ``owner/name``, :class:`HubTokenError` when no token is set. The token is never part of a message."""
    parts = str(repo_id).split("/")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ExportError(f"repo_id must be 'owner/name', got {repo_id!r}")
    token = hub_token(env)
    if not token:
        raise HubTokenError("no Hub token: set HF_TOKEN in the environment, or add the secret HF_TOKEN in Colab "
                            "(key icon) and grant this notebook access")
    return token


@dataclass(frozen=True)
class HubPushPlan:
    """What :func:`push_to_hub` sends: the folder, the repo, whether private, the commit message, and the
    files (relative paths) that go up. ``token`` is kept out of ``repr``."""

    folder: Path
    repo_id: str
    private: bool
    commit_message: str
    files: list[str]
    token: str | None = field(default=None, repr=False)

    def create_repo_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``HfApi.create_repo``."""
        return {"repo_id": self.repo_id, "repo_type": "model", "private": self.private, "exist_ok": True}

    def upload_folder_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``HfApi.upload_folder``."""
        return {"repo_id": self.repo_id, "repo_type": "model", "folder_path": str(self.folder),
                "commit_message": self.commit_message}


def hub_push_plan(folder: str | Path, repo_id: str, *, private: bool = True, commit_message: str | None = None,
                  env: Mapping[str, str] | None = None) -> HubPushPlan:
    """Check a folder (an adapter or a merged model, with its ``README.md`` card) and name what a push sends.

    Raises ``FileNotFoundError`` when ``folder`` has no model (``adapter_config.json`` or ``config.json``)
    or no ``README.md`` (write one with :func:`model_card`), :class:`ExportError` (a ``ValueError``) when
    ``repo_id`` is not ``owner/name``, :class:`HubTokenError` (a ``PermissionError``) when no token is set
    (``$HF_TOKEN`` or Colab's secret ``HF_TOKEN``).
    """
    folder = Path(folder)
    if not ((folder / "adapter_config.json").is_file() or (folder / "config.json").is_file()):
        raise FileNotFoundError(f"{folder}: neither adapter_config.json nor config.json: not a model folder")
    if not (folder / "README.md").is_file():
        raise FileNotFoundError(f"{folder}: no README.md model card (write it with model_card)")
    token = push_token(repo_id, env)
    kind = "merged model" if (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file() else "adapter"
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return HubPushPlan(folder, repo_id, private, commit_message or f"medreason {kind} from {folder.name}", files, token)


def push_to_hub(plan: HubPushPlan, *, endpoint: str | None = None) -> str:
    """Create the repo (``exist_ok``) and upload the plan's folder with ``huggingface_hub.HfApi``
    (``endpoint``: another Hub, e.g. a private mirror; default ``$HF_ENDPOINT`` or huggingface.co).
    Returns the commit URL. Raises ``ConnectionError`` naming the endpoint when it cannot be reached;
    what ``huggingface_hub`` raises otherwise (bad token, no write access) passes through."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=plan.token)
    try:
        api.create_repo(**plan.create_repo_kwargs())
        info = api.upload_folder(**plan.upload_folder_kwargs())
    except Exception as exc:
        chain, e = [], exc
        while e is not None and len(chain) < 8:
            chain.append(e)
            e = e.__cause__ or e.__context__
        if any(isinstance(e, (ConnectionError, TimeoutError)) or "ConnectError" in type(e).__name__
               or "Timeout" in type(e).__name__ for e in chain):
            raise ConnectionError(f"the Hub at {api.endpoint} cannot be reached ({type(exc).__name__}: {exc}); "
                                  f"{plan.folder} was not pushed to {plan.repo_id}") from exc
        raise
    return str(getattr(info, "commit_url", info))


def check_formats(formats: str | Sequence[str] | None) -> tuple[str, ...]:
    """The export formats asked, checked: a name or a sequence of names of :data:`FORMATS` (a name may hold
    several, comma-separated, as ``medreason export --format merged_16bit,gguf`` gives them); ``None`` or
    empty: none. Duplicates are dropped, the order kept. Raises :class:`ExportError` naming an unknown
    format and the known ones."""
    if formats is None:
        return ()
    names = [formats] if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for item in names:
        for name in str(item).split(","):
            name = name.strip()
            if not name:
                continue
            if name not in FORMATS:
                raise ExportError(f"unknown export format {name!r}; known: {', '.join(FORMATS)}")
            if name not in out:
                out.append(name)
    return tuple(out)


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_adapter` did: the adapter (local folder), the folders written by format
    (``merged_16bit``, ``gguf``), and for a push the folder sent, the repo and the commit URL."""

    adapter: Path | None
    written: dict[str, Path]
    pushed_folder: Path | None = None
    repo_id: str | None = None
    commit_url: str | None = None

    def describe(self) -> str:
        """One line per thing done (what notebook 04 and ``medreason export`` print); no token."""
        if not self.written and self.repo_id is None:
            return "nothing exported (no format asked and no push)"
        lines = [f"adapter: {self.adapter}"]
        if "merged_16bit" in self.written:
            lines.append(f"merged 16-bit model: {self.written['merged_16bit']} "
                         "(load it with transformers' AutoModelForCausalLM.from_pretrained)")
        if "gguf" in self.written:
            lines.append(f"GGUF: {self.written['gguf']}")
        if self.repo_id is not None:
            lines.append(f"pushed {self.pushed_folder} to {self.repo_id}: {self.commit_url}")
        return "\n".join(lines)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return bool(torch.cuda.is_available())


def export_adapter(adapter: str | Path | None, out_dir: str | Path, *, formats: str | Sequence[str] | None = DEFAULT_FORMATS,
                   gguf_quantization: str = DEFAULT_GGUF_QUANTIZATION, push_to: str | None = None,
                   model: Any = None, tokenizer: Any = None, env: Mapping[str, str] | None = None,
                   endpoint: str | None = None, runtime: Any = None) -> ExportResult:
    """Export a LoRA adapter: what notebook 04's export cell and ``medreason export`` run, in this order.

    1. Everything asked is checked before anything is written or loaded: the formats
       (:func:`check_formats`), ``gguf`` needs a CUDA GPU, ``push_to`` is ``owner/name`` and a token is set
       (``$HF_TOKEN`` or Colab's secret ``HF_TOKEN``), the adapter exists (a hub id is downloaded,
       :func:`medreason_utils.models.adapters.adapter_folder`) and is whole (``check_adapter``).
    2. ``merged_16bit``: :func:`save_merged` into ``out_dir/merged_16bit`` (float16).
    3. ``gguf``: :func:`save_gguf_unsloth` into ``out_dir/gguf`` with ``gguf_quantization``, on ``model`` /
       ``tokenizer`` when given (notebook 04's demo model, loaded by Unsloth on a GPU), else on the adapter
       loaded by :func:`medreason_utils.models.load_model` (Unsloth on a GPU).
    4. ``push_to``: the merged folder when ``merged_16bit`` was asked, else the adapter folder (its
       ``README.md`` card is written with :func:`model_card` when it has none), through
       :func:`hub_push_plan` and :func:`push_to_hub` (``endpoint``: another Hub).

    No format and no push: nothing is done (``adapter`` may then be ``None``, notebook 04's ``BASE_ONLY``).
    Returns an :class:`ExportResult`. Raises :class:`ExportError` (unknown format, GGUF without CUDA, a bad
    repo id, no adapter), :class:`HubTokenError` (push without a token), ``FileNotFoundError`` (no such
    adapter folder, or a hub id that cannot be fetched), ``ConnectionError`` (the Hub cannot be reached);
    the first two are :class:`medreason_utils.fileio.UserInputError` (the command line exits 2).
    """
    from ..models.adapters import adapter_folder, check_adapter

    asked = check_formats(formats)
    if not asked and push_to is None:
        return ExportResult(None if adapter is None else Path(str(adapter)), {})
    if "gguf" in asked and not _cuda():
        raise ExportError("export format 'gguf' is written by Unsloth's save_pretrained_gguf on a CUDA GPU, and there "
                          "is no CUDA GPU here; ask for merged_16bit and convert that folder with llama.cpp's "
                          "convert_hf_to_gguf.py")
    if push_to is not None:
        push_token(push_to, env)
    if adapter is None:
        raise ExportError("no adapter to export (the base model alone, BASE_ONLY?): give an adapter folder or hub id")
    folder = check_adapter(adapter_folder(adapter))
    out = Path(out_dir)
    written: dict[str, Path] = {}
    if "merged_16bit" in asked:
        written["merged_16bit"] = save_merged(folder, out / "merged_16bit", runtime=runtime)
    if "gguf" in asked:
        if model is None:
            from ..models import load_model

            model, tokenizer = load_model(adapter=folder, runtime=runtime)
        written["gguf"] = save_gguf_unsloth(model, tokenizer, out / "gguf", quantization_method=gguf_quantization)
    if push_to is None:
        return ExportResult(folder, written)
    send = written.get("merged_16bit", folder)
    if send == folder and not (folder / "README.md").is_file():
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
        model_card(folder, base_model=base, kind="adapter")
    plan = hub_push_plan(send, push_to, env=env)
    return ExportResult(folder, written, send, push_to, push_to_hub(plan, endpoint=endpoint))
