"""The tasks: each kind of row, with its layout, its prompt, its reward and the reading of an item, in one place.

After nanochat's ``tasks/`` (one module per task holding how it reads, asks and grades): a :class:`Task`
knows the columns that identify its rows, turns rows into items with the suite's prompt (:meth:`Task.items`),
names the reward that grades it in GRPO (``mcq_exact_match`` for multiple choice, ``correctness`` for
open-ended verifiable questions: keys of :data:`medreason_utils.rewards.REWARD_REGISTRY`) and builds that
reward (:meth:`Task.reward_func`), and reads one completion of an item (:meth:`Task.score_item`). The
evaluation's benchmarks (``evaluation.benchmarks.BENCHMARKS``) name a task's layout; GRPO's data sources
(``training.grpo.source_prompts``) find their task by their columns (:func:`task_for_columns`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..data import OnBadRow, to_question_prompts
from ..parsing import choice_from_completion
from ..prompts import DEFAULT_TAGS, Tags
from .layouts import MCQ_LAYOUTS, OPEN_COLUMNS, to_mcq_items

__all__ = ["Task", "TASKS", "task_for_columns"]


@dataclass(frozen=True)
class Task:
    """One kind of row: how it reads, how it is asked, what rewards it, how an answer is read.

    Attributes:
        name: the task's name (a key of :data:`TASKS`; for multiple choice also the key of ``MCQ_LAYOUTS``).
        kind: ``"mcq"`` (options and a gold letter) or ``"open"`` (a reference answer a verifier compares with).
        reward: the registry name of the reward that grades it in GRPO.
        columns: columns whose presence identifies the layout (:func:`task_for_columns`); ``()``: never guessed.
        layout: multiple choice: ``(row, source, index) -> (question, options, gold_letter, extra)``.
        description: where the rows come from.
    """

    name: str
    kind: str
    reward: str
    columns: tuple[str, ...] = ()
    layout: Callable[[Mapping, str, int], tuple[str, Any, str, dict]] | None = None
    description: str = ""

    def items(self, rows: Iterable[Mapping], *, tags: Tags = DEFAULT_TAGS, system: str | None = None,
              on_bad_row: OnBadRow = "raise", source: str | None = None, layout: Callable | None = None):
        """Rows as items with the suite's prompt: ``(dataset, report)``.

        Multiple choice: :func:`medreason_utils.tasks.layouts.to_mcq_items` (``id``, ``question``, ``options``,
        ``answer`` gold letter, ``answer_text``, ``subject``, ``context``, ``prompt``, ``prompt_plain``); ``layout``
        replaces the task's own (e.g. one that also keeps the row index). Open-ended:
        :func:`medreason_utils.data.to_question_prompts` (``prompt``, ``answer`` reference text, ``question``).
        Bad rows raise :class:`~medreason_utils.data.DataError` or are skipped and counted (``on_bad_row``).
        """
        src = source or self.name
        if self.kind == "open":
            return to_question_prompts(rows, on_bad_row=on_bad_row, source=src, tags=tags, system=system)
        return to_mcq_items(rows, layout or self.layout, tags=tags, system=system, on_bad_row=on_bad_row, source=src)

    def reward_func(self, settings: Any = None, verifier: Any = None):
        """The reward that grades this task, built through the reward registry from ``settings`` (a
        :class:`~medreason_utils.rewards.RewardSettings`; default settings when ``None``) with weight 1.
        Raises what :func:`medreason_utils.rewards.get_reward_funcs` raises."""
        from ..rewards import RewardSettings, get_reward_funcs

        s = replace(settings or RewardSettings(), rewards=(self.reward,), weights=(1.0,))
        return get_reward_funcs(s, verifier)[0]

    def score_item(self, completion: Any, item: Mapping, *, prefilled_think: bool = False, tags: Tags = DEFAULT_TAGS,
                   verifier: Any = None) -> float | None:
        """One completion of ``item`` read as the task reads it: 1.0 right, 0.0 wrong or unreadable, ``None`` unscored.

        Multiple choice: the option letter in the ANSWER block (:func:`~medreason_utils.parsing.choice_from_completion`,
        the reading of the evaluation's exact match and of ``mcq_exact_match``) against ``item["answer"]``.
        Open-ended: the verifier's probability that the ANSWER block matches ``item["answer"]`` (``verifier`` or the
        rule verifier), ``None`` where the verifier could not score it.
        """
        if self.kind == "mcq":
            letter, _ = choice_from_completion(completion, item["options"], prefilled_think=prefilled_think, tags=tags)
            return 1.0 if letter is not None and letter == str(item["answer"]).strip().upper() else 0.0
        from ..parsing import parse_completion
        from ..verifiers import make_verifier

        parsed = parse_completion(completion, prefilled_think=prefilled_think, tags=tags)
        if not parsed.answer:
            return 0.0
        return make_verifier(verifier or "rule").score([parsed.answer], [item["answer"]], [item.get("question")])[0]


#: Every task: the multiple-choice layouts of the benchmarks and GRPO sources, and open-ended verifiable questions.
#: Order matters for :func:`task_for_columns`: the first whose columns a source has is its task.
TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("open_ended", "open", "correctness", OPEN_COLUMNS, None,
             "open-ended verifiable questions (FreedomIntelligence/medical-o1-verifiable-problem)"),
        Task("medmcqa", "mcq", "mcq_exact_match", ("opa", "opb", "opc", "opd", "cop"), MCQ_LAYOUTS["medmcqa"],
             "openlifescienceai/medmcqa"),
        Task("medqa", "mcq", "mcq_exact_match", ("question", "options", "answer_idx"), MCQ_LAYOUTS["medqa"],
             "GBaker/MedQA-USMLE-4-options; the medical-o1 MCQ sample"),
        Task("mmlu", "mcq", "mcq_exact_match", (), MCQ_LAYOUTS["mmlu"], "cais/mmlu"),
        Task("medxpertqa", "mcq", "mcq_exact_match", (), MCQ_LAYOUTS["medxpertqa"], "TsinghuaC3I/MedXpertQA (Text)"),
        Task("pubmedqa", "mcq", "mcq_exact_match", (), MCQ_LAYOUTS["pubmedqa"], "qiaojin/PubMedQA (pqa_labeled), yes/no/maybe"),
        Task("mmlu_pro", "mcq", "mcq_exact_match", (), MCQ_LAYOUTS["mmlu_pro"], "TIGER-Lab/MMLU-Pro"),
        Task("gpqa", "mcq", "mcq_exact_match", (), MCQ_LAYOUTS["gpqa"], "Idavidrein/gpqa"),
    ]
}


def task_for_columns(columns: Sequence[str]) -> Task | None:
    """The task whose identifying columns ``columns`` hold (open-ended, MedMCQA, then MedQA), ``None`` if none."""
    cols = set(columns)
    return next((t for t in TASKS.values() if t.columns and set(t.columns) <= cols), None)
