"""Tasks: a benchmark's or training source's row layout, prompt, reward and item reading, together.

After nanochat's ``tasks/``. :mod:`.layouts` holds the row layouts (MedQA, MedMCQA, MMLU, MedXpertQA,
PubMedQA, MMLU-Pro, GPQA, any set by its columns) and :func:`to_mcq_items`; :mod:`.registry` holds the
:class:`Task` of each kind of row (its layout, prompt, reward and reading) and :func:`task_for_columns`;
:mod:`.benchmarks` holds each benchmark's :class:`BenchmarkSpec` (hub id, split, filter, the task that reads it).
The evaluation's benchmarks and GRPO's data sources both ask a task; neither imports the other for it.
"""

from .benchmarks import BENCHMARKS, MMLU_MEDICAL_SUBJECTS, BenchmarkSpec
from .layouts import MCQ_LAYOUTS, OPEN_COLUMNS, PUBMEDQA_OPTIONS, columns_layout, to_mcq_items
from .registry import TASKS, Task, task_for_columns

__all__ = ["BENCHMARKS", "BenchmarkSpec", "MMLU_MEDICAL_SUBJECTS", "MCQ_LAYOUTS", "OPEN_COLUMNS", "PUBMEDQA_OPTIONS", "TASKS", "Task", "columns_layout", "task_for_columns", "to_mcq_items"]
