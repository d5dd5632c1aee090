"""Evaluation: exact-match accuracy of the option letter, format compliance, intervals, reports.

Scores (each named, each with its n):

* ``accuracy`` (primary, exact match): the option letter read from the ``<ANSWER>`` block by
  :func:`medreason_utils.parsing.choice_from_completion`, the same reading the
  ``mcq_exact_match_reward`` uses, so the metric and the training signal cannot disagree; with a
  95% Wilson interval (``ci_low``, ``ci_high``);
* ``format_compliance``: the fraction of completions in the strict grammar, reported apart from
  accuracy, so a wrong format and a wrong answer are told apart;
* ``strict_accuracy``: accuracy on the strictly formatted completions only (``n_strict`` of them);
* ``lenient_accuracy``: the letter found anywhere in the completion, tags or not
  (:func:`medreason_utils.parsing.find_choice_anywhere`, after HuatuoGPT-o1's scorer).

:func:`evaluate_models` runs several models (or adapters) on several benchmarks over the same
items, writes per-item JSONL as it goes (a rerun resumes where it stopped), and writes
``results.md``/``results.csv``, ``per_subject.csv``, ``comparisons.md``/``comparisons.csv``
(McNemar's paired test between runs) and ``results.png`` (bars with Wilson intervals).
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..parsing import choice_from_completion, completion_text, find_choice_anywhere, parse_completion
from .stats import mcnemar_paired, mean_and_spread, wilson_interval

__all__ = [
    "ItemResult",
    "EvalResult",
    "format_compliance",
    "score_mcq",
    "summarise_items",
    "evaluate_mcq",
    "PROMPT_STYLES",
    "evaluate_models",
    "compare_runs",
    "subject_breakdown",
    "write_tables",
    "plot_results",
    "read_items",
]

log = logging.getLogger(__name__)


def format_compliance(completions: Sequence[Any], *, prefilled_think: bool = False) -> float:
    """Fraction in [0, 1] of completions whose ``parse_completion(c).is_strict`` is True.

    Raises ``ValueError`` for an empty sequence (a fraction of nothing is undefined).
    """
    if not completions:
        raise ValueError("format_compliance of zero completions is undefined")
    return sum(parse_completion(c, prefilled_think=prefilled_think).is_strict for c in completions) / len(completions)


@dataclass
class ItemResult:
    """One scored completion.

    ``predicted``: letter from the ANSWER block (None if none); ``lenient``: letter found anywhere;
    ``strict``: the completion is in the strict grammar; ``sample``: 0-based sample index (k > 1
    samples per item when sampling).
    """

    id: str
    gold: str
    predicted: str | None
    correct: bool
    strict: bool
    completion: str
    subject: str | None = None
    lenient: str | None = None
    lenient_correct: bool = False
    prompt: Any = None
    sample: int = 0
    benchmark: str = ""
    model: str = ""


@dataclass
class EvalResult:
    """Scores of one model on one benchmark; fractions in [0, 1], ``n`` items.

    With k > 1 samples per item, ``accuracy`` is the mean of the k per-sample accuracies and
    ``accuracy_std`` their sample standard deviation; the interval is Wilson's for that mean over
    ``n`` items. ``strict_accuracy`` is None when no completion was strictly formatted.
    """

    benchmark: str
    model: str
    n: int
    correct: int
    accuracy: float
    format_compliance: float
    items: list[ItemResult] = field(default_factory=list, repr=False)
    ci_low: float = 0.0
    ci_high: float = 1.0
    n_strict: int = 0
    strict_correct: int = 0
    strict_accuracy: float | None = None
    lenient_correct: int = 0
    lenient_accuracy: float = 0.0
    answered: float = 0.0
    samples: int = 1
    accuracy_std: float | None = None

    def summary(self) -> dict:
        """The figures without the per-item records (for summary.json and tables)."""
        d = asdict(self)
        d.pop("items")
        return d


def _score_one(completion: Any, item: Mapping, index: int, *, prefilled_think: bool = False) -> ItemResult:
    options = item["options"]
    letter, parsed = choice_from_completion(completion, options, prefilled_think=prefilled_think)
    lenient = find_choice_anywhere(completion, options, prefilled_think=prefilled_think)
    gold = str(item["answer"]).strip().upper()
    return ItemResult(
        id=str(item.get("id", index)), gold=gold, predicted=letter, correct=letter == gold, strict=parsed.is_strict,
        completion=completion_text(completion), subject=item.get("subject"), lenient=lenient,
        lenient_correct=lenient == gold, prompt=item.get("prompt"), benchmark=str(item.get("benchmark") or ""),
    )


def summarise_items(records: Sequence[ItemResult], *, benchmark: str = "", model: str = "") -> EvalResult:
    """Aggregate scored completions (one or more samples per item) into an :class:`EvalResult`.

    Raises ``ValueError`` for no records or samples of unequal size.
    """
    if not records:
        raise ValueError("nothing to score")
    by_sample: dict[int, list[ItemResult]] = {}
    for r in records:
        by_sample.setdefault(r.sample, []).append(r)
    sizes = {len(v) for v in by_sample.values()}
    if len(sizes) != 1:
        raise ValueError(f"samples cover different numbers of items: { {k: len(v) for k, v in by_sample.items()} }")
    n = sizes.pop()
    k = len(by_sample)
    accs = [sum(r.correct for r in v) / n for v in by_sample.values()]
    acc, std = mean_and_spread(accs)
    correct = round(acc * n)
    lo, hi = wilson_interval(correct, n)
    total = len(records)
    strict = [r for r in records if r.strict]
    strict_correct = sum(r.correct for r in strict)
    lenient_correct = sum(r.lenient_correct for r in records)
    return EvalResult(
        benchmark=benchmark, model=model, n=n, correct=correct if k > 1 else sum(r.correct for r in records),
        accuracy=acc, format_compliance=len(strict) / total, items=list(records), ci_low=lo, ci_high=hi,
        n_strict=len(strict), strict_correct=strict_correct, strict_accuracy=strict_correct / len(strict) if strict else None,
        lenient_correct=lenient_correct, lenient_accuracy=lenient_correct / total,
        answered=sum(r.predicted is not None for r in records) / total, samples=k, accuracy_std=std if k > 1 else None,
    )


def score_mcq(
    completions: Sequence[Any], items: Sequence[Mapping], *, benchmark: str = "", model: str = "", prefilled_think: bool = False
) -> EvalResult:
    """Score completions against multiple-choice items (``options``, ``answer`` letter, optional ``id``, ``subject``).

    Raises ``ValueError`` when the two sequences differ in length or there are none.
    """
    if len(completions) != len(items):
        raise ValueError(f"{len(completions)} completions for {len(items)} items")
    if not items:
        raise ValueError("nothing to score")
    records = [_score_one(c, item, i, prefilled_think=prefilled_think) for i, (c, item) in enumerate(zip(completions, items))]
    for r in records:
        r.benchmark, r.model = benchmark or r.benchmark, model
    return summarise_items(records, benchmark=benchmark, model=model)


def evaluate_mcq(
    model,
    tokenizer,
    items: Sequence[Mapping],
    *,
    benchmark: str = "",
    model_label: str = "",
    max_new_tokens: int = 256,
    batch_size: int = 8,
    **generate_kwargs: Any,
) -> EvalResult:
    """Generate a completion for each item's ``prompt`` (greedy by default) and score it with :func:`score_mcq`."""
    from ..generation import generate_completions

    items = list(items)
    completions = generate_completions(
        model, tokenizer, [it["prompt"] for it in items], max_new_tokens=max_new_tokens, batch_size=batch_size,
        desc=f"{model_label} {benchmark}".strip(), **generate_kwargs,
    )
    return score_mcq(completions, items, benchmark=benchmark, model=model_label)


# ---------------------------------------------------------------------------------------------
# Several models x several benchmarks, resumable
# ---------------------------------------------------------------------------------------------

#: Prompt styles: item field holding the prompt, and the suffix added to the model label.
#: "suite": the suite's system prompt with the response grammar; "plain": the model's own chat
#: template with no system prompt and "answer with the letter" (see ``benchmarks.plain_mcq_prompt``).
PROMPT_STYLES = {"suite": ("prompt", ""), "plain": ("prompt_plain", " (plain prompt)")}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def _backend_for(spec: Any, *, label: str, base: Any, base_model: str | None, batch_size: int, backend_kwargs: dict):
    """(backend, release) for one entry of ``models``; ``release()`` frees what was loaded here."""
    from ..generation import LocalBackend, uses_vllm

    if hasattr(spec, "generate") and callable(spec.generate):
        return spec, lambda: None
    if isinstance(spec, tuple) and len(spec) == 2:
        return LocalBackend(spec[0], spec[1], batch_size=batch_size, name=label, **backend_kwargs), lambda: None
    if spec is None or isinstance(spec, (str, os.PathLike)):
        if spec is not None and base is not None and uses_vllm(base[0]):
            # one vLLM engine, the adapter as a LoRA request (Unsloth: model.load_lora(path))
            return LocalBackend(base[0], base[1], batch_size=batch_size, lora_request=base[0].load_lora(str(spec)), name=label,
                                **backend_kwargs), lambda: None
        if spec is None and base is not None:
            return LocalBackend(base[0], base[1], batch_size=batch_size, name=label, **backend_kwargs), lambda: None
        from ..models import load_model

        model, tokenizer = load_model(base_model, adapter=spec)
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

        return LocalBackend(model, tokenizer, batch_size=batch_size, name=label, **backend_kwargs), release
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


def _fingerprint(items: Sequence[Mapping], field_name: str) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([str(it.get("id")), it.get(field_name), it.get("answer")], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def read_items(path: str | Path) -> list[dict]:
    """Per-item records of a JSONL file written by :func:`evaluate_models`. A last line cut short
    (a disconnect mid-write) is skipped with a warning; a bad line elsewhere raises ``ValueError``
    naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if k == len(lines) - 1:
                log.warning("%s: last line %d is incomplete (interrupted write); it will be generated again", path, k + 1)
                continue
            raise ValueError(f"{path} line {k + 1} is not JSON: {exc}") from exc
    return out


def _record_to_item(d: Mapping) -> ItemResult:
    return ItemResult(**{k: d.get(k) for k in ItemResult.__dataclass_fields__ if k in d})


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
    resume: bool = True,
    chunk_size: int | None = None,
    base: tuple | None = None,
    base_model: str | None = None,
    backend_kwargs: Mapping[str, Any] | None = None,
    prefilled_think: bool = False,
    compare: Sequence[tuple[str, str]] | None = None,
    plot: bool = True,
    progress: bool = True,
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
            :func:`medreason_utils.data.to_mcq_items`): ``id``, ``options``, ``answer``, ``prompt``,
            optional ``subject``, ``prompt_plain``.
        out_dir: folder for ``items/*.jsonl``, ``results.md``, ``results.csv``, ``per_subject.csv``,
            ``comparisons.md``, ``comparisons.csv``, ``results.png``, ``summary.json``.
        styles: ``{label: ["suite", "plain"]}``; default ``["suite"]`` for every label. "plain"
            scores the model with its own chat template (no grammar, letter asked for); its label
            gets " (plain prompt)".
        max_new_tokens: tokens generated at most per completion.
        batch_size: prompts per ``generate`` call of a local model.
        temperature, top_p, num_samples, seed: greedy (``temperature=0``, one sample) by default;
            sampling needs ``num_samples >= 1`` and uses seed ``seed + s`` for sample ``s``.
        limit, subset_seed: a fixed-seed subset of each benchmark (``benchmarks.select_items``).
        resume: reuse the records already in ``items/*.jsonl`` (same settings only, else
            ``ValueError``); ``False`` starts those files over.
        chunk_size: completions generated between two writes (default ``4 * batch_size``).
        compare: pairs ``(label_a, label_b)`` for McNemar's test; default every pair of runs.

    Returns:
        The results table: a list of dicts, one per (run, benchmark), with ``benchmark``, ``model``,
        ``n``, ``correct``, ``accuracy``, ``ci_low``, ``ci_high``, ``format_compliance``,
        ``n_strict``, ``strict_accuracy``, ``lenient_accuracy``, ``answered``, ``samples``,
        ``accuracy_std``, ``max_new_tokens``, ``temperature``.

    Raises:
        ValueError: sampling without ``seed``, ``num_samples > 1`` with greedy decoding, a benchmark
            without items, items missing a prompt style, or a resume with other settings.
    """
    from .benchmarks import select_items

    if temperature and temperature > 0 and seed is None:
        raise ValueError("sampling (temperature > 0) needs a seed so the run can be reproduced")
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
    results: list[EvalResult] = []

    for label, spec in models.items():
        runs = [(st, label + PROMPT_STYLES[st][1]) for st in styles.get(label, ["suite"])]
        backend, release = None, lambda: None
        try:
            for style, run_label in runs:
                field_name = PROMPT_STYLES[style][0]
                for name, items in bench_items.items():
                    if field_name == "prompt_plain":
                        _add_plain_prompts(items)
                    missing = [str(it.get("id")) for it in items if not it.get(field_name)]
                    if missing:
                        raise ValueError(f"benchmark {name!r}: items {missing[:3]} have no {field_name!r} (prompt style {style!r})")
                    path = out / "items" / f"{_slug(run_label)}__{_slug(name)}.jsonl"
                    meta_path = path.with_suffix(".meta.json")
                    meta = {"model": run_label, "benchmark": name, "style": style, "max_new_tokens": max_new_tokens,
                            "temperature": temperature, "top_p": top_p if temperature else None, "seed": seed,
                            "num_samples": num_samples, "items": _fingerprint(items, field_name)}
                    if resume and meta_path.is_file():
                        old = json.loads(meta_path.read_text())
                        if old != meta:
                            diff = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
                            raise ValueError(f"{path} was written with other settings {diff}; use another out_dir or resume=False")
                    if not resume:
                        path.unlink(missing_ok=True)
                    meta_path.write_text(json.dumps(meta, indent=1))
                    wanted = {str(it["id"]) for it in items}
                    done = {(d.get("sample", 0), str(d["id"])): d for d in read_items(path) if str(d.get("id")) in wanted}
                    if any(d.get("sample", 0) >= num_samples for d in done.values()):
                        done = {k: v for k, v in done.items() if k[0] < num_samples}
                    pending = [(s, it) for s in range(num_samples) for it in items if (s, str(it["id"])) not in done]
                    if pending:
                        log.info("%s on %s: %d done, %d to generate", run_label, name, len(done), len(pending))
                        if backend is None:
                            backend, release = _backend_for(spec, label=label, base=base, base_model=base_model,
                                                            batch_size=batch_size, backend_kwargs=dict(backend_kwargs or {}))
                    _generate_pending(backend, pending, path, done, field_name=field_name, run_label=run_label, benchmark=name,
                                      chunk=chunk, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                      seed=seed, prefilled_think=prefilled_think, progress=progress)
                    records = [_record_to_item(done[(s, str(it["id"]))]) for s in range(num_samples) for it in items]
                    results.append(summarise_items(records, benchmark=name, model=run_label))
        finally:
            backend = None
            release()

    table = [_table_row(r, max_new_tokens, temperature) for r in results]
    comparisons = compare_runs(results, pairs=compare)
    write_tables(table, comparisons, subject_breakdown(results), out)
    if plot:
        plot_results(table, out / "results.png")
    (out / "summary.json").write_text(json.dumps({"table": table, "comparisons": comparisons}, indent=1, default=str))
    return table


def _add_plain_prompts(items: list[dict]) -> None:
    from .benchmarks import plain_mcq_prompt

    for it in items:
        if not it.get("prompt_plain") and it.get("question") and it.get("options"):
            it["prompt_plain"] = plain_mcq_prompt(it["question"], it["options"], context=it.get("context"))


def _drop_incomplete_tail(path: Path) -> None:
    """Cut a last line left without its newline by an interrupted write, so appends start on a fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


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
                    r = _score_one(c, it, 0, prefilled_think=prefilled_think)
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


def compare_runs(results: Sequence[EvalResult], *, pairs: Sequence[tuple[str, str]] | None = None) -> list[dict]:
    """McNemar's paired test between runs on the same benchmark, over the items both scored
    (sample 0). ``pairs``: ``(model_a, model_b)`` labels; default every pair, in run order.
    Returns one dict per comparison: ``benchmark``, ``model_a``, ``model_b``, ``n``, ``accuracy_a``,
    ``accuracy_b``, ``difference`` (b - a), ``only_a``, ``only_b``, ``p_value``, ``test``."""
    by_bench: dict[str, dict[str, EvalResult]] = {}
    for r in results:
        by_bench.setdefault(r.benchmark, {})[r.model] = r
    out = []
    for bench, runs in by_bench.items():
        todo = pairs if pairs is not None else list(combinations(list(runs), 2))
        for a, b in todo:
            if a not in runs or b not in runs:
                continue
            ca = {x.id: x.correct for x in runs[a].items if x.sample == 0}
            cb = {x.id: x.correct for x in runs[b].items if x.sample == 0}
            ids = [i for i in ca if i in cb]
            if not ids:
                continue
            m = mcnemar_paired([ca[i] for i in ids], [cb[i] for i in ids])
            out.append({"benchmark": bench, "model_a": a, "model_b": b, "n": m.n, "accuracy_a": (m.both + m.only_a) / m.n,
                        "accuracy_b": (m.both + m.only_b) / m.n, "difference": m.difference, "only_a": m.only_a,
                        "only_b": m.only_b, "p_value": m.p_value, "test": "McNemar exact" if m.exact else "McNemar chi2 (corrected)"})
    return out


def subject_breakdown(results: Sequence[EvalResult]) -> list[dict]:
    """Per-subject exact match (sample 0) with Wilson intervals, for benchmarks whose items have a subject."""
    rows = []
    for r in results:
        groups: dict[str, list[ItemResult]] = {}
        for x in r.items:
            if x.sample == 0 and x.subject:
                groups.setdefault(str(x.subject), []).append(x)
        for subj, xs in sorted(groups.items()):
            k = sum(x.correct for x in xs)
            lo, hi = wilson_interval(k, len(xs))
            rows.append({"benchmark": r.benchmark, "model": r.model, "subject": subj, "n": len(xs), "correct": k,
                         "accuracy": k / len(xs), "ci_low": lo, "ci_high": hi,
                         "format_compliance": sum(x.strict for x in xs) / len(xs)})
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _markdown(rows: Sequence[Mapping], cols: Sequence[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _csv(rows: Sequence[Mapping], path: Path) -> None:
    cols = list(rows[0]) if rows else []
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def write_tables(table: Sequence[Mapping], comparisons: Sequence[Mapping], per_subject: Sequence[Mapping], out_dir: str | Path) -> None:
    """Write ``results.md``/``results.csv``, ``comparisons.md``/``comparisons.csv`` and ``per_subject.csv`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md_rows = [{**r, "exact match [95% CI]": f"{r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"} for r in table]
    cols = ["benchmark", "model", "n", "exact match [95% CI]", "format_compliance", "n_strict", "strict_accuracy", "lenient_accuracy",
            "answered"]
    if any(r.get("samples", 1) > 1 for r in table):
        cols += ["samples", "accuracy_std"]
    note = ("Exact match: option letter read from the <ANSWER> block (95% Wilson interval). format_compliance: share of "
            "completions in the strict grammar. strict_accuracy: exact match on those only. lenient_accuracy: letter "
            "found anywhere (HuatuoGPT-o1 scorer rules). answered: share with a letter in the <ANSWER> block.\n\n")
    (out / "results.md").write_text("# Results\n\n" + note + _markdown(md_rows, cols), encoding="utf-8")
    _csv(list(table), out / "results.csv")
    if comparisons:
        ccols = ["benchmark", "model_a", "model_b", "n", "accuracy_a", "accuracy_b", "difference", "only_a", "only_b", "p_value", "test"]
        (out / "comparisons.md").write_text(
            "# Paired comparisons (McNemar)\n\nSame items, sample 0. only_a / only_b: items only that run got right. "
            "difference = accuracy_b - accuracy_a.\n\n" + _markdown([{**c, "p_value": f"{c['p_value']:.3g}"} for c in comparisons], ccols),
            encoding="utf-8")
        _csv(list(comparisons), out / "comparisons.csv")
    if per_subject:
        _csv(list(per_subject), out / "per_subject.csv")


def plot_results(table: Sequence[Mapping], path: str | Path, *, title: str = "Exact match with 95% Wilson intervals") -> Path:
    """Grouped bar chart (benchmarks on x, one bar per model run) of exact match with Wilson
    interval error bars; saved as PNG at ``path``. Uses matplotlib's Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    benches = list(dict.fromkeys(r["benchmark"] for r in table))
    models = list(dict.fromkeys(r["model"] for r in table))
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(benches) * max(1, len(models)) ** 0.5), 4))
    for j, m in enumerate(models):
        xs, ys, lo, hi = [], [], [], []
        for i, b in enumerate(benches):
            row = next((r for r in table if r["benchmark"] == b and r["model"] == m), None)
            if row is None:
                continue
            xs.append(i + (j - (len(models) - 1) / 2) * width)
            ys.append(row["accuracy"])
            lo.append(max(0.0, row["accuracy"] - row["ci_low"]))
            hi.append(max(0.0, row["ci_high"] - row["accuracy"]))
        ax.bar(xs, ys, width=width, yerr=[lo, hi], capsize=3, label=m)
    ax.set_xticks(range(len(benches)))
    ax.set_xticklabels([f"{b}\n(n={next(r['n'] for r in table if r['benchmark'] == b)})" for b in benches])
    ax.set_ylim(0, 1)
    ax.set_ylabel("exact match")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
