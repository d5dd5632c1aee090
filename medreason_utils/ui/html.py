"""HTML of the interactive layer: the demo's answer (reasoning folded apart from the highlighted
answer, malformed output flagged), its disclaimer, and the playground's score table. Plain HTML strings, so they also show in a
saved notebook and its HTML export, where widgets do not run."""

from __future__ import annotations

import html
import math
from typing import Any, Sequence

from ..parsing import ParsedCompletion, parse_completion
from ..prompts import DEFAULT_TAGS, Tags

__all__ = ["DISCLAIMER", "DISCLAIMER_BG", "malformed_reasons", "render_response_html", "score_table_html"]

#: Shown above every answer and in the UI header.
DISCLAIMER = (
    "Research demonstration only. This is not medical advice: a small language model trained for "
    "research can be wrong, and its output must not be used to diagnose or treat anyone. "
    "Ask a qualified clinician."
)

_ANSWER_BG = "#fff3b0"
DISCLAIMER_BG = "#fdecea"
_MALFORMED_BG = "#fde2c8"


def malformed_reasons(parsed: ParsedCompletion, *, tags: Tags = DEFAULT_TAGS) -> list[str]:
    """Why a completion is not strictly well-formed, one short phrase a problem (``[]`` when it is).

    Reads only what :func:`~medreason_utils.parsing.parse_completion` returned (tag counts, blocks).
    """
    if parsed.is_strict:
        return []
    out = []
    for tag in tags.all:
        n = parsed.tag_counts.get(tag, 0)
        if n == 0:
            out.append(f"{tag} missing")
        elif n > 1:
            out.append(f"{tag} appears {n} times")
    if parsed.answer is None and not any("ANSWER" in r or tags.answer in r for r in out):
        out.append("no complete answer block")
    if not out:
        out.append("text outside the tags or blocks out of order")
    return out


def _passages_html(hits: Sequence[Any]) -> str:
    items = "".join(
        f"<li style='margin-bottom:6px'><b>{html.escape(h.passage.title)}</b> "
        f"<span style='color:#666;font-size:11px'>(similarity {h.score:.2f})</span><br>"
        f"<span style='font-size:12px'>{html.escape(h.passage.text)}</span></li>"
        for h in hits
    )
    return (
        "<div class='medreason-passages' style='flex:1;min-width:220px;border-left:3px solid #8ab4f8;padding-left:10px'>"
        f"<div style='font-weight:bold;margin-bottom:4px'>Retrieved passages (top {len(hits)})</div>"
        f"<ol style='padding-left:18px;margin:0'>{items}</ol></div>"
    )


def render_response_html(
    text: str,
    *,
    question: str | None = None,
    hits: Sequence[Any] | None = None,
    done: bool = True,
    seconds: float | None = None,
    meta: str | None = None,
    tags: Tags = DEFAULT_TAGS,
) -> str:
    """HTML of one demo answer: disclaimer, question, reasoning (collapsible), highlighted answer, passages.

    While ``done`` is False the text so far is shown raw (it is still growing). When done, the
    completion is parsed with :func:`~medreason_utils.parsing.parse_completion`: a strict
    completion shows its reasoning in a ``<details>`` block and its answer highlighted; otherwise a
    "Malformed output" banner names the wrong tags (:func:`malformed_reasons`), the answer is still
    highlighted when there is one, and the raw output is shown. ``meta`` is a small grey line under
    the title (e.g. the adapter and the sampling settings).
    """
    parts = [
        "<div style='font-size:18px;font-weight:bold;margin-bottom:2px'>medreason &middot; structured medical reasoning demo</div>",
        f"<div style='font-size:11px;color:#666;margin-bottom:6px'>{html.escape(meta)}</div>" if meta else "",
        f"<div class='medreason-disclaimer' style='background:{DISCLAIMER_BG};border:1px solid #d93025;"
        f"border-radius:4px;padding:6px 10px;margin-bottom:8px;font-size:13px'>&#9888; {html.escape(DISCLAIMER)}</div>"
    ]
    if question:
        parts.append(f"<div style='margin-bottom:8px'><b>Question.</b> {html.escape(question)}</div>")
    body: list[str] = []
    if not done:
        body.append(
            "<div style='color:#666;font-size:12px'>generating&hellip;</div>"
            f"<pre class='medreason-stream' style='white-space:pre-wrap;font-size:12px'>{html.escape(text)}</pre>"
        )
    else:
        parsed = parse_completion(text, tags=tags)
        reasons = malformed_reasons(parsed, tags=tags)
        if reasons:
            body.append(
                f"<div class='medreason-malformed' style='background:{_MALFORMED_BG};border:1px solid #e8710a;"
                "border-radius:4px;padding:6px 10px;margin-bottom:8px'><b>Malformed output</b> "
                f"(not <code>{html.escape(tags.think_open)}&hellip;{html.escape(tags.think_close)}"
                f"{html.escape(tags.answer_open)}&hellip;{html.escape(tags.answer_close)}</code>): "
                f"{html.escape('; '.join(reasons))}</div>"
            )
        if parsed.think:
            body.append(
                "<details class='medreason-reasoning' style='margin-bottom:8px'><summary style='cursor:pointer'>"
                f"<b>Reasoning</b> ({len(parsed.think.split())} words, click to expand)</summary>"
                f"<div style='white-space:pre-wrap;font-size:12px;color:#333;padding:6px'>{html.escape(parsed.think)}</div></details>"
            )
        if parsed.answer:
            body.append(
                f"<div class='medreason-answer' style='background:{_ANSWER_BG};border-left:5px solid #f9ab00;"
                f"padding:8px 12px;font-size:15px'><b>Answer.</b> {html.escape(parsed.answer)}</div>"
            )
        if reasons:
            body.append(
                "<details open><summary>Raw output</summary>"
                f"<pre class='medreason-raw' style='white-space:pre-wrap;font-size:12px'>{html.escape(text) or '(empty)'}</pre></details>"
            )
        if seconds is not None:
            body.append(f"<div style='color:#666;font-size:11px;margin-top:4px'>generated in {seconds:.1f} s</div>")
    main = f"<div style='flex:2;min-width:300px'>{''.join(body)}</div>"
    side = _passages_html(hits) if hits else ""
    parts.append(f"<div style='display:flex;gap:16px;align-items:flex-start'>{main}{side}</div>")
    return f"<div class='medreason-demo' id='medreason-demo' style='font-family:sans-serif;max-width:1100px'>{''.join(parts)}</div>"


def score_table_html(table: Any, preview_chars: int = 140) -> str:
    """A playground :class:`~medreason_utils.ui.playground.ScoreTable` as HTML: one row a completion (escaped,
    previewed to ``preview_chars`` characters, the whole text as a tooltip), each reward, the total, the
    advantage coloured by its sign, the rank; the caption states the weights and the scaling."""

    def num(x: float | None) -> str:
        return "&ndash;" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.2f}"

    labels = [n.split("_")[0] for n in (table.names or table.settings.rewards)]
    head = "".join(f"<th>{h}</th>" for h in ("#", "completion", *labels, "total", "advantage", "rank"))
    body = []
    for i, c in enumerate(table.completions):
        preview = c if len(c) <= preview_chars else c[:preview_chars] + "…"
        adv = table.advantages[i]
        colour = "#d8f3dc" if adv > 1e-9 else "#ffd6d6" if adv < -1e-9 else "#f1f1f1"
        cells = "".join(f"<td style='text-align:right'>{num(x)}</td>" for x in table.rewards[i])
        body.append(
            f"<tr><td>{i + 1}</td>"
            f"<td title='{html.escape(c, quote=True)}'><b>{html.escape(table.labels[i])}</b><br>"
            f"<code style='white-space:pre-wrap;font-size:11px'>{html.escape(preview)}</code></td>"
            f"{cells}<td style='text-align:right'><b>{num(table.totals[i])}</b></td>"
            f"<td style='text-align:right;background:{colour}'><b>{num(adv)}</b></td>"
            f"<td style='text-align:center'>{table.rank[i]}</td></tr>"
        )
    s = table.settings
    caption = (
        f"weights {dict(zip(labels, s.weights))}, "
        f"scale_rewards={s.scale_rewards!r}; advantage = total - group mean"
        + ("" if s.scale_rewards == "none" else f", divided by the {s.scale_rewards} std")
        + (" (one group here, so the batch std is the group std)" if s.scale_rewards == "batch" else "")
        + ("; not trainable with loss_type='dr_grpo' (Unsloth turns it into no scaling)" if s.scale_rewards == "group" else "")
    )
    return (
        "<table class='medreason-scores' style='border-collapse:collapse' border='1' cellpadding='4'>"
        f"<caption style='caption-side:bottom;font-size:11px'>{html.escape(caption)}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )
