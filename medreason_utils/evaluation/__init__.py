"""Evaluation: benchmarks, scoring, the multi-model runner and its reports.

Modules, in the order of an evaluation:

* :mod:`.benchmarks`: each benchmark's definition in one place (hub id, split, row layout,
  filter), loaded as multiple-choice items with the suite's prompt and the plain prompt;
* :mod:`.decontamination`: evaluation items that overlap training questions;
* :mod:`.scoring`: exact match of the option letter (the grammar's reading), the plain reading,
  format compliance, lenient match; each run's fair score by the reading its prompt asks for;
* :mod:`.runner`: :func:`evaluate_models`, several models x several benchmarks, resumable;
* :mod:`.reports`: McNemar comparisons, per-subject scores, tables, the bar chart;
* :mod:`.reward_eval`: GRPO's rewards on held-out prompts, SFT adapter vs GRPO adapter, paired tests;
* :mod:`.stats`: Wilson intervals, McNemar's test, paired tests (Wilcoxon signed-rank, t).
"""

from .benchmarks import BENCHMARKS, BenchmarkSpec, columns_layout, load_benchmark, select_items, to_mcq_items
from .decontamination import (
    Overlap,
    data_sources,
    decontaminate,
    drop_overlapping_items,
    find_overlaps,
    training_questions,
)
from .reports import compare_runs, plot_results, subject_breakdown, write_tables
from .reward_eval import RewardScores, compare_reward_scores, reward_eval, score_completions, score_prompts
from .runner import PROMPT_STYLES, RESUME_MODES, STYLE_READINGS, evaluate_models, model_key, read_items
from .scoring import READINGS, EvalResult, ItemResult, format_compliance, item_correct, score_item, score_mcq, summarise_items
from .stats import McNemarResult, PairedTestResult, mcnemar_paired, mean_and_spread, paired_tests, wilson_interval

__all__ = [
    "BENCHMARKS",
    "BenchmarkSpec",
    "columns_layout",
    "load_benchmark",
    "select_items",
    "to_mcq_items",
    "Overlap",
    "training_questions",
    "data_sources",
    "find_overlaps",
    "decontaminate",
    "drop_overlapping_items",
    "ItemResult",
    "EvalResult",
    "format_compliance",
    "score_item",
    "score_mcq",
    "summarise_items",
    "PROMPT_STYLES",
    "STYLE_READINGS",
    "READINGS",
    "item_correct",
    "evaluate_models",
    "read_items",
    "model_key",
    "RESUME_MODES",
    "compare_runs",
    "subject_breakdown",
    "write_tables",
    "plot_results",
    "wilson_interval",
    "McNemarResult",
    "mcnemar_paired",
    "mean_and_spread",
    "PairedTestResult",
    "paired_tests",
    "RewardScores",
    "score_completions",
    "score_prompts",
    "compare_reward_scores",
    "reward_eval",
]
