"""Reports of an evaluation run: paired comparisons (McNemar), per-subject scores, tables, the bar chart."""

from __future__ import annotations

import csv
import io
from itertools import combinations
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..fileio import atomic_write_text, atomic_write_with
from .scoring import EvalResult, ItemResult, item_correct
from .stats import mcnemar_paired, wilson_interval

__all__ = ["compare_runs", "subject_breakdown", "write_tables", "plot_results"]


def compare_runs(results: Sequence[EvalResult], *, pairs: Sequence[tuple[str, str]] | None = None) -> list[dict]:
    """McNemar's paired test between runs on the same benchmark, over the items both scored
    (sample 0), each run on its fair score (``EvalResult.reading``: the grammar's exact match for
    the suite's prompt, the plain reading for the plain prompt), so a trained model is compared
    with the base model's real accuracy and not with a 0 that the base model's prompt makes by
    construction. ``pairs``: ``(model_a, model_b)`` labels; default every pair, in run order.

    Returns one dict per comparison: ``benchmark``, ``model_a``, ``model_b``, ``n``, ``reading_a``,
    ``reading_b`` (which reading scored each side), ``score_a``, ``score_b`` (the paired fair
    scores, in [0, 1]), ``difference`` (``score_b - score_a``), ``only_a``, ``only_b`` (items only
    that side got right, by its reading), ``p_value``, ``test``, and for reference
    ``exact_match_a``, ``exact_match_b`` (both by the grammar, on the same items); and format
    compliance paired the same way (McNemar's exact binomial test on "strictly formatted or not", whatever the count):
    ``format_a``, ``format_b`` (fractions in [0, 1]), ``format_only_a``, ``format_only_b``,
    ``format_p_value`` (``None`` when either side is a plain-prompt run, which is not asked for
    the grammar)."""
    by_bench: dict[str, dict[str, EvalResult]] = {}
    for r in results:
        by_bench.setdefault(r.benchmark, {})[r.model] = r
    out = []
    for bench, runs in by_bench.items():
        todo = pairs if pairs is not None else list(combinations(list(runs), 2))
        for a, b in todo:
            if a not in runs or b not in runs:
                continue
            ra, rb = runs[a].reading, runs[b].reading
            xa = {x.id: x for x in runs[a].items if x.sample == 0}
            xb = {x.id: x for x in runs[b].items if x.sample == 0}
            ids = [i for i in xa if i in xb]
            if not ids:
                continue
            m = mcnemar_paired([item_correct(xa[i], ra) for i in ids], [item_correct(xb[i], rb) for i in ids])
            out.append({"benchmark": bench, "model_a": a, "model_b": b, "n": m.n, "reading_a": ra, "reading_b": rb,
                        "score_a": (m.both + m.only_a) / m.n, "score_b": (m.both + m.only_b) / m.n, "difference": m.difference,
                        "only_a": m.only_a, "only_b": m.only_b, "p_value": m.p_value,
                        "test": "McNemar exact" if m.exact else "McNemar chi2 (corrected)",
                        "exact_match_a": sum(bool(xa[i].correct) for i in ids) / m.n,
                        "exact_match_b": sum(bool(xb[i].correct) for i in ids) / m.n,
                        **_format_comparison([bool(xa[i].strict) for i in ids], [bool(xb[i].strict) for i in ids],
                                             asked=ra == "grammar" and rb == "grammar")})
    return out


def _format_comparison(strict_a: Sequence[bool], strict_b: Sequence[bool], *, asked: bool) -> dict:
    """Format compliance of two runs on the same items, with McNemar's test when both prompts ask for the grammar."""
    n = len(strict_a)
    out = {"format_a": sum(strict_a) / n, "format_b": sum(strict_b) / n, "format_only_a": None, "format_only_b": None,
           "format_p_value": None}
    if asked:
        f = mcnemar_paired(strict_a, strict_b, exact=True)  # the exact binomial test whatever the count (valid for any n)
        out.update(format_only_a=f.only_a, format_only_b=f.only_b, format_p_value=f.p_value)
    return out


def subject_breakdown(results: Sequence[EvalResult]) -> list[dict]:
    """Per-subject scores (sample 0) for benchmarks whose items have a subject: exact match with its
    Wilson interval, the plain reading, and the run's fair ``score`` by its ``reading``."""
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
                         "format_compliance": sum(x.strict for x in xs) / len(xs),
                         "plain_match": sum(bool(x.plain_correct) for x in xs) / len(xs), "reading": r.reading,
                         "score": sum(item_correct(x, r.reading) for x in xs) / len(xs)})
    return rows


def _with_ci(v: float, lo: float, hi: float) -> str:
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


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
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    atomic_write_with(path, lambda tmp: tmp.write_bytes(buf.getvalue().encode("utf-8")))


def write_tables(table: Sequence[Mapping], comparisons: Sequence[Mapping], per_subject: Sequence[Mapping], out_dir: str | Path) -> None:
    """Write ``results.md``/``results.csv``, ``comparisons.md``/``comparisons.csv`` and ``per_subject.csv`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md_rows = [{**r, "reading": r.get("reading", "grammar"),
                "score [95% CI]": _with_ci(r.get("score", r["exact_match"]), r.get("score_ci_low", r["ci_low"]),
                                           r.get("score_ci_high", r["ci_high"])),
                "exact match [95% CI]": _with_ci(r["exact_match"], r["ci_low"], r["ci_high"])} for r in table]
    cols = ["benchmark", "model", "n", "reading", "score [95% CI]", "exact match [95% CI]", "plain_match", "format_compliance",
            "n_strict", "strict_exact_match", "lenient_match", "answered"]
    if any(r.get("samples", 1) > 1 for r in table):
        cols += ["samples", "exact_match_std"]
    note = ("score: each run's fair score, by the reading that fits its prompt (column reading): grammar = exact match, for "
            "the suite's prompt, which asks for the <THINK>/<ANSWER> grammar; plain = plain_match, for the plain prompt "
            "(the model's own chat template, the letter asked for, no grammar), whose answers have no <ANSWER> block to read. "
            "Exact match: option letter read from the <ANSWER> block, the reward's reading (95% Wilson interval). "
            "plain_match: the letter the answer names (a leading option label, the first 'answer is X' as in "
            "lm-eval-harness's MedQA regex, then HuatuoGPT-o1's scorer rules). The two side by side show what the grammar "
            "costs and what training adds. format_compliance: share of completions in the strict grammar. "
            "strict_exact_match: exact match on those only. lenient_match: letter found anywhere (HuatuoGPT-o1 scorer "
            "rules). answered: share with a letter in the <ANSWER> block.\n\n")
    atomic_write_text(out / "results.md", "# Results\n\n" + note + _markdown(md_rows, cols))
    _csv(list(table), out / "results.csv")
    if comparisons:
        ccols = ["benchmark", "model_a", "model_b", "n", "reading_a", "reading_b", "score_a", "score_b", "difference", "only_a",
                 "only_b", "p_value", "test", "exact_match_a", "exact_match_b", "format_a", "format_b", "format_p_value"]
        atomic_write_text(out / "comparisons.md",
            "# Paired comparisons (McNemar)\n\nSame items, sample 0, each run on its fair score (reading_a / reading_b: "
            "grammar = letter in the <ANSWER> block, for the suite's prompt; plain = the letter the answer names, for the "
            "plain prompt). only_a / only_b: items only that run got right. difference = score_b - score_a. "
            "exact_match_a / exact_match_b: both by the grammar, for reference. format_a / format_b: format compliance; "
            "format_p_value: McNemar exact on it (- where a side is the plain prompt, which does not ask for the grammar).\n\n"
            + _markdown([{**c, "p_value": f"{c['p_value']:.3g}",
                          "format_p_value": None if c.get("format_p_value") is None else f"{c['format_p_value']:.3g}"}
                         for c in comparisons], ccols),
            encoding="utf-8")
        _csv(list(comparisons), out / "comparisons.csv")
    if per_subject:
        _csv(list(per_subject), out / "per_subject.csv")


def plot_results(table: Sequence[Mapping], path: str | Path, *,
                 title: str = "Fair score (grammar: exact match; plain prompt: plain reading), 95% Wilson intervals") -> Path:
    """Grouped bar chart (benchmarks on x, one bar per model run) of each run's fair ``score``
    (its ``reading`` in the legend) with Wilson interval error bars; saved as PNG at ``path``.
    Rows without ``score`` (tables written before the readings) show ``exact_match``. Uses
    matplotlib's Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    benches = list(dict.fromkeys(r["benchmark"] for r in table))
    models = list(dict.fromkeys(r["model"] for r in table))
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(benches) * max(1, len(models)) ** 0.5), 4))
    for j, m in enumerate(models):
        xs, ys, lo, hi = [], [], [], []
        reading = "grammar"
        for i, b in enumerate(benches):
            row = next((r for r in table if r["benchmark"] == b and r["model"] == m), None)
            if row is None:
                continue
            y = row.get("score", row["exact_match"])
            xs.append(i + (j - (len(models) - 1) / 2) * width)
            ys.append(y)
            lo.append(max(0.0, y - row.get("score_ci_low", row["ci_low"])))
            hi.append(max(0.0, row.get("score_ci_high", row["ci_high"]) - y))
            reading = row.get("reading", "grammar")
        ax.bar(xs, ys, width=width, yerr=[lo, hi], capsize=3, label=f"{m} [{reading}]")
    ax.set_xticks(range(len(benches)))
    ax.set_xticklabels([f"{b}\n(n={next(r['n'] for r in table if r['benchmark'] == b)})" for b in benches])
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (fair reading)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)
    return path
