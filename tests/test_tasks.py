"""Tasks: one place reads a kind of row, asks it, rewards it and reads an answer; evaluation and GRPO both ask it."""

from __future__ import annotations

import pytest

from medreason_utils.data import load_rows
from medreason_utils.evaluation import load_benchmark
from medreason_utils.evaluation.scoring import score_item
from medreason_utils.prompts import DEFAULT_TAGS
from medreason_utils.tasks import TASKS, task_for_columns
from medreason_utils.training.grpo import source_prompts

T = DEFAULT_TAGS


def _answer(text: str) -> str:
    return f"{T.think_open}\nreasoning\n{T.think_close}\n{T.answer_open}\n{text}\n{T.answer_close}"


@pytest.mark.parametrize("source, task", [("sample:medical_o1_mcq", "medqa"), ("sample:medqa", "medqa"),
                                          ("sample:medmcqa_train", "medmcqa"), ("sample:medical_o1_verifiable", "open_ended")])
def test_a_source_finds_its_task_by_its_columns_and_grpo_reports_that_layout(source, task):
    assert task_for_columns(load_rows(source, limit=3).column_names).name == task
    _, _, _, layout = source_prompts(source)
    assert layout == ("open" if task == "open_ended" else task)


def test_columns_that_fit_no_task_name_the_source_and_the_layouts(tmp_path):
    from medreason_utils.data import DataError

    assert task_for_columns(["foo", "bar"]) is None
    path = tmp_path / "odd.jsonl"
    path.write_text('{"foo": "q", "bar": "a"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"odd\.jsonl.*\['bar', 'foo'\] fit no layout.*MedMCQA"):
        source_prompts(str(path))


def test_the_benchmark_and_the_grpo_source_ask_the_same_task_for_the_same_rows():
    items, _ = load_benchmark("medqa", "sample:medqa")
    ds, _, _, _ = source_prompts("sample:medqa")
    by_question = {r["question"]: r for r in ds}
    for it in items[:5]:
        row = by_question[it["question"]]
        assert row["prompt"] == it["prompt"] and row["answer"] == it["answer"]
        assert {L: t for L, t in row["options"].items() if t is not None} == it["options"]


def test_a_tasks_reading_agrees_with_the_evaluation_and_with_its_reward():
    task = TASKS["medmcqa"]
    ds, _ = task.items(load_rows("sample:medmcqa", limit=4))
    reward = task.reward_func()
    assert reward.__name__ == "mcq_exact_match_reward"
    for i, it in enumerate(ds):
        opts = {L: t for L, t in it["options"].items() if t is not None}
        wrong = next(L for L in opts if L != it["answer"])
        for text, want in ((_answer(f"{it['answer']}. {opts[it['answer']]}"), 1.0), (_answer(wrong), 0.0), ("no block", 0.0)):
            item = {**it, "options": opts}
            assert task.score_item(text, item) == want
            assert score_item(text, item, i).correct == bool(want)
            assert reward([text], answer=[it["answer"]], options=[opts]) == [want]


def test_the_open_ended_task_grades_with_its_verifier_and_rewards_with_correctness():
    task = TASKS["open_ended"]
    ds, report = task.items(load_rows("sample:medical_o1_verifiable", limit=3), on_bad_row="skip")
    assert report.kept == 3 and task.reward_func().__name__ == "correctness_reward"
    it = ds[0]
    assert task.score_item(_answer(it["answer"]), it) == pytest.approx(1.0)
    assert task.score_item("no answer block", it) == 0.0


def test_every_benchmark_names_a_multiple_choice_task_whose_reward_is_the_letter_match():
    from medreason_utils.tasks import BENCHMARKS

    for spec in BENCHMARKS.values():
        task = TASKS[spec.layout]
        assert task.kind == "mcq" and task.reward == "mcq_exact_match", spec.name
