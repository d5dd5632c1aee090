"""Reports of an evaluation run: paired comparisons (McNemar), per-subject scores, tables, the bar chart."""

from __future__ import annotations

import csv
from itertools import combinations
from pathlib import Path
from typing import Any, Mapping, Sequence

from .scoring import EvalResult, ItemResult
from .stats import mcnemar_paired, wilson_interval

__all__ = ["compare_runs", "subject_breakdown", "write_tables", "plot_results"]


def compare_runs(results: Sequence[EvalResult], *, pairs: Sequence[tuple[str, str]] | None = None) -> list[dict]:
    """McNemar's paired test between runs on the same benchmark, over the items both scored
    (sample 0). ``pairs``: ``(model_a, model_b)`` labels; default every pair, in run order.
    Returns one dict per comparison: ``benchmark``, ``model_a``, ``model_b``, ``n``, ``exact_match_a``,
    ``exact_match_b``, ``difference`` (b - a), ``only_a``, ``only_b``, ``p_value``, ``test``."""
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
            out.append({"benchmark": bench, "model_a": a, "model_b": b, "n": m.n, "exact_match_a": (m.both + m.only_a) / m.n,
                        "exact_match_b": (m.both + m.only_b) / m.n, "difference": m.difference, "only_a": m.only_a,
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
                         "exact_match": k / len(xs), "ci_low": lo, "ci_high": hi,
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
    md_rows = [{**r, "exact match [95% CI]": f"{r['exact_match']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"} for r in table]
    cols = ["benchmark", "model", "n", "exact match [95% CI]", "format_compliance", "n_strict", "strict_exact_match", "lenient_match",
            "answered"]
    if any(r.get("samples", 1) > 1 for r in table):
        cols += ["samples", "exact_match_std"]
    note = ("Exact match: option letter read from the <ANSWER> block (95% Wilson interval). format_compliance: share of "
            "completions in the strict grammar. strict_exact_match: exact match on those only. lenient_match: letter "
            "found anywhere (HuatuoGPT-o1 scorer rules). answered: share with a letter in the <ANSWER> block.\n\n")
    (out / "results.md").write_text("# Results\n\n" + note + _markdown(md_rows, cols), encoding="utf-8")
    _csv(list(table), out / "results.csv")
    if comparisons:
        ccols = ["benchmark", "model_a", "model_b", "n", "exact_match_a", "exact_match_b", "difference", "only_a", "only_b", "p_value", "test"]
        (out / "comparisons.md").write_text(
            "# Paired comparisons (McNemar)\n\nSame items, sample 0. only_a / only_b: items only that run got right. "
            "difference = exact_match_b - exact_match_a.\n\n" + _markdown([{**c, "p_value": f"{c['p_value']:.3g}"} for c in comparisons], ccols),
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
            ys.append(row["exact_match"])
            lo.append(max(0.0, row["exact_match"] - row["ci_low"]))
            hi.append(max(0.0, row["ci_high"] - row["exact_match"]))
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
