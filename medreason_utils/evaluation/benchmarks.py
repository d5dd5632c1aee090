"""Medical multiple-choice benchmarks, each defined here and nowhere else: where it lives, how its rows read.

Each benchmark is a :class:`BenchmarkSpec`: its hub id, config and split, the row layout
(a key of :data:`MCQ_LAYOUTS`; the layouts, the prompt, the reward and the item reading of each kind
of row live in :mod:`medreason_utils.tasks`, which GRPO's data sources read too) and an optional row filter (MMLU's medical
subjects, MMLU-Pro's health and biology categories, GPQA's biology questions, PubMedQA's
official test subset). :func:`load_benchmark` reads the hub (online) or a local file with the
hub's columns (offline), and returns items ready for :func:`medreason_utils.evaluation.evaluate_models`:

``id``, ``question``, ``options`` (``{letter: text}``), ``answer`` (gold letter), ``answer_text``,
``subject``, ``prompt`` (the suite's prompt: system prompt with the response grammar) and
``prompt_plain`` (``mcq_prompt(..., plain=True)``: no system prompt, "answer with the letter":
scores a base model with its own chat template and no grammar). Decontamination against
training data is :mod:`medreason_utils.evaluation.decontamination`.

Benchmarks (item counts of the full sets):

=====================  ==================================  =============  ======
name                   hub id (config)                     split          items
=====================  ==================================  =============  ======
medqa                  GBaker/MedQA-USMLE-4-options        test           1,273
medmcqa                openlifescienceai/medmcqa           validation     4,183
pubmedqa               qiaojin/PubMedQA (pqa_labeled)      train          1,000
pubmedqa_test          the same, ``is_official_test`` rows train            500
mmlu_medical           cais/mmlu (all), six subjects       test           1,089
medxpertqa             TsinghuaC3I/MedXpertQA (Text)       test           2,450
mmlu_pro_health_bio    TIGER-Lab/MMLU-Pro, health+biology  test           1,535
gpqa_biology           Idavidrein/gpqa (gpqa_main)         train            78
=====================  ==================================  =============  ======

PubMedQA's official test subset is the 500 pqa_labeled ids of the PubMedQA repository's
``data/test_ground_truth.json`` (Jin et al. 2019); the hub's ``pqa_labeled`` split does not mark
them, so online that benchmark needs ``test_ids`` or a file with an ``is_official_test`` column.
GPQA is gated on the hub (accept its terms, then an ``HF_TOKEN``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..data import MappingReport, OnBadRow, load_rows
from ..prompts import DEFAULT_TAGS, Tags
from ..tasks import TASKS
from ..tasks.benchmarks import BENCHMARKS, MMLU_MEDICAL_SUBJECTS, BenchmarkSpec  # re-exported: defined with the tasks
from ..tasks.layouts import MCQ_LAYOUTS, PUBMEDQA_OPTIONS, columns_layout, to_mcq_items  # re-exported: callers keep these names

__all__ = [
    "BenchmarkSpec",
    "BENCHMARKS",
    "MCQ_LAYOUTS",
    "PUBMEDQA_OPTIONS",
    "MMLU_MEDICAL_SUBJECTS",
    "columns_layout",
    "to_mcq_items",
    "load_benchmark",
    "select_items",
]

def select_items(items: Sequence[Mapping], limit: int | None = None, seed: int | None = 0) -> list[dict]:
    """A reproducible subset: ``limit`` items drawn with ``random.Random(seed)`` and kept in data
    order; ``seed=None`` takes the first ``limit``. ``limit=None`` (or >= len) keeps all."""
    items = [dict(it) for it in items]
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if seed is None:
        return items[:limit]
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def load_benchmark(
    name: str | BenchmarkSpec,
    source: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    seed: int | None = 0,
    test_ids: Iterable[Any] | None = None,
    tags: Tags = DEFAULT_TAGS,
    system: str | None = None,
    on_bad_row: OnBadRow = "raise",
) -> tuple[list[dict], MappingReport]:
    """Load one benchmark as evaluation items.

    Args:
        name: a key of :data:`BENCHMARKS` or a :class:`BenchmarkSpec` (for another set, e.g. with
            ``layout=columns_layout(...)``).
        source: a local JSON/JSONL/CSV/Parquet file with the hub's columns, ``"sample:NAME"``, or
            another hub id; default: ``data_dir/spec.local_file`` when ``data_dir`` is given and
            holds it, else the spec's hub id.
        limit, seed: a fixed-seed subset (:func:`select_items`), drawn after the filter.
        test_ids: PubMedQA official test ids (pubids) when the rows have no ``is_official_test``.

    Returns:
        ``(items, report)``: a list of dicts (see the module docstring) and the
        :class:`MappingReport` of the rows kept and skipped (``on_bad_row="skip"``).

    Raises:
        KeyError: unknown benchmark name. DataError: a bad row (``on_bad_row="raise"``).
        Whatever ``datasets.load_dataset`` raises offline for a hub id.
    """
    if isinstance(name, BenchmarkSpec):
        spec = name
    elif name in BENCHMARKS:
        spec = BENCHMARKS[name]
    else:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    if source is None and data_dir is not None and spec.local_file and (Path(data_dir) / spec.local_file).is_file():
        source = Path(data_dir) / spec.local_file
    if source is None:
        rows = load_rows(spec.hub_id, config=spec.config, split=spec.split)
    else:
        rows = load_rows(source, config=spec.config, split=spec.split)
    row_filter = spec.row_filter
    if test_ids is not None:
        wanted = {str(t) for t in test_ids}
        row_filter = lambda r: str(r.get("pubid", r.get("id"))) in wanted  # noqa: E731
    if row_filter is not None:
        rows = [r for r in rows if row_filter(r)]
    layout = spec.layout
    if isinstance(layout, str) and layout not in MCQ_LAYOUTS:
        raise KeyError(f"benchmark {spec.name}: unknown layout {layout!r}; known: {sorted(MCQ_LAYOUTS)}")
    if isinstance(layout, str):  # the task of that layout reads the rows (the same task GRPO's sources ask)
        ds, report = TASKS[layout].items(rows, tags=tags, system=system, on_bad_row=on_bad_row, source=spec.name)
    else:
        ds, report = to_mcq_items(rows, layout, tags=tags, system=system, on_bad_row=on_bad_row, source=spec.name)
    items = []
    for it in ds:
        opts = {k: v for k, v in it["options"].items() if v is not None}
        it["options"] = opts
        it["benchmark"] = spec.name
        items.append(it)
    return select_items(items, limit, seed), report
