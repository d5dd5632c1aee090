"""Data loaders and mappers: shipped samples, the full shared files in hub layouts (when
present), local JSON/JSONL files, bad rows written to temporary files, and a hub id offline."""

from __future__ import annotations

import json
import time

import pytest

from medreason_utils.data import (
    ABSENT_COLUMN,
    ORIGIN_COLUMN,
    HUB_IDS,
    DataError,
    MappingReport,
    cap_text,
    exclude_questions,
    load_rows,
    question_key,
    read_jsonl,
    sample_path,
    split_train_heldout,
    to_question_prompts,
    to_sft_conversations,
)
from medreason_utils.evaluation.benchmarks import BENCHMARKS, MCQ_LAYOUTS, to_mcq_items
from medreason_utils.parsing import parse_completion
from medreason_utils.prompts import system_prompt


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def check_mcq_item(item, row_question):
    assert item["question"] == row_question.strip()
    assert item["answer"] in item["options"] and item["options"][item["answer"]] == item["answer_text"]
    assert list(item["options"])[:4] == list("ABCD")
    roles = [m["role"] for m in item["prompt"]]
    assert roles == ["system", "user"]
    user = item["prompt"][1]["content"]
    assert row_question.strip() in user
    for letter, text in item["options"].items():
        if text is not None:
            assert f"{letter}. {text}" in user


# --------------------------------------------------------------------------------------------
# Shipped samples
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,rows", [("medqa", 160), ("medmcqa", 160), ("medmcqa_train", 300), ("medical_o1_sft", 158), ("medical_o1_verifiable", 158)])
def test_samples_load(name, rows):
    assert len(load_rows(f"sample:{name}")) == rows
    assert sample_path(name).is_file()


def test_unknown_sample_lists_known():
    with pytest.raises(FileNotFoundError, match="medqa"):
        load_rows("sample:nope")


def test_medqa_sample_maps():
    rows = load_rows("sample:medqa")
    ds, report = to_mcq_items(rows, "medqa")
    assert (report.kept, report.n_skipped) == (160, 0) and len(ds) == 160
    for row, item in zip(rows, ds):
        check_mcq_item(item, row["question"])
        assert item["answer"] == row["answer_idx"]
        assert item["answer_text"] == row["answer"].strip()  # the hub's answer text agrees with the letter
        assert item["subject"] == row["meta_info"]


@pytest.mark.parametrize("name, n", [("medmcqa", 160), ("medmcqa_train", 300)])
def test_medmcqa_sample_maps(name, n):
    rows = load_rows(f"sample:{name}")
    ds, report = to_mcq_items(rows, "medmcqa")
    assert report.kept == n
    for row, item in zip(rows, ds):
        check_mcq_item(item, row["question"])
        assert item["answer"] == "ABCD"[row["cop"]]
        assert item["answer_text"] == row["op" + "abcd"[row["cop"]]].strip()
        assert item["id"] == row["id"] and item["subject"] == row["subject_name"]


def test_sft_sample_maps_to_strict_conversations():
    rows = load_rows("sample:medical_o1_sft")
    ds, report = to_sft_conversations(rows)
    assert report.kept == 158 and report.n_skipped == 0
    for row, conv in zip(rows, ds):
        msgs = conv["messages"]
        assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
        assert msgs[0]["content"] == system_prompt()
        assert msgs[1]["content"] == row["Question"].strip()
        parsed = parse_completion(msgs[2]["content"])
        assert parsed.is_strict
        assert parsed.think == row["Complex_CoT"].strip()
        assert parsed.answer == row["Response"].strip()


def test_sft_capped_rows_keep_closing_tags():
    rows = load_rows("sample:medical_o1_sft", limit=20)
    ds, _ = to_sft_conversations(rows, max_reasoning_tokens=40, max_response_tokens=20)
    for row, conv in zip(rows, ds):
        parsed = parse_completion(conv["messages"][2]["content"])
        assert parsed.is_strict
        assert len(parsed.think.split()) <= 40 and len(parsed.answer.split()) <= 20
        assert row["Complex_CoT"].strip().startswith(parsed.think[:30])


def test_grpo_sample_maps():
    rows = load_rows("sample:medical_o1_verifiable")
    ds, report = to_question_prompts(rows)
    assert report.kept == 158
    assert set(ds.column_names) == {"prompt", "answer", "question"}
    for row, item in zip(rows, ds):
        assert item["answer"] == row["Ground-True Answer"].strip()
        assert item["question"] == row["Open-ended Verifiable Question"].strip()
        assert [m["role"] for m in item["prompt"]] == ["system", "user"]


def test_limit():
    assert len(load_rows("sample:medqa", limit=5)) == 5
    assert len(load_rows("sample:medqa", limit=1000)) == 160


# --------------------------------------------------------------------------------------------
# Full files in /work/shared/data (hub layouts)
# --------------------------------------------------------------------------------------------


def test_full_medqa_every_row_maps(shared_file):
    rows = load_rows(shared_file("medqa_usmle_4options_test.jsonl"))
    ds, report = to_mcq_items(rows, "medqa")
    assert report.kept == len(rows) == 1273 and report.n_skipped == 0
    mismatched = [i for i, (row, item) in enumerate(zip(rows, ds)) if item["answer_text"] != row["answer"].strip()]
    assert mismatched == []
    check_mcq_item(ds[len(ds) - 1], rows[len(rows) - 1]["question"])


def test_full_medmcqa_every_row_maps(shared_file):
    rows = load_rows(shared_file("medmcqa_validation.jsonl"))
    ds, report = to_mcq_items(rows, "medmcqa")
    assert report.kept == len(rows) == 4183 and report.n_skipped == 0
    assert [item["answer"] for item in ds] == ["ABCD"[c] for c in rows["cop"]]


def test_full_medical_o1_mcq_five_options(shared_file):
    rows = load_rows(shared_file("medical_o1_mcq_sample.jsonl"))
    ds, report = to_mcq_items(rows, "medqa")
    assert report.kept == len(rows) == 158
    assert any(item["answer"] == "E" for item in ds) or all(item["options"].get("E") for item in ds)
    for row, item in zip(rows, ds):
        assert item["answer_text"] == row["answer"].strip()


def test_full_medical_o1_sft_and_grpo(shared_file):
    sft_rows = load_rows(shared_file("medical_o1_reasoning_sft_sample.jsonl"))
    ds, report = to_sft_conversations(sft_rows)
    assert report.kept == len(sft_rows) and all(parse_completion(c["messages"][2]["content"]).is_strict for c in ds)
    grpo_rows = load_rows(shared_file("medical_o1_verifiable_problem_sample.jsonl"))
    ds, report = to_question_prompts(grpo_rows)
    assert report.kept == len(grpo_rows) and all(item["answer"] for item in ds)


def test_full_mmlu_with_a_layout_function(shared_file):
    """A caller-supplied layout (MMLU: ``choices`` list, ``answer`` 0-3) goes through the same mapper."""
    rows = load_rows(shared_file("mmlu_medical_dev.jsonl"))

    def mmlu(row, source, i):
        return row["question"], list(row["choices"]), "ABCD"[int(row["answer"])], {"subject": row["subject"]}

    ds, report = to_mcq_items(rows, mmlu)
    assert report.kept == len(rows) == 30 and report.source == "mmlu"
    for row, item in zip(rows, ds):
        assert item["answer_text"] == row["choices"][row["answer"]].strip()


# --------------------------------------------------------------------------------------------
# Local files and the hub
# --------------------------------------------------------------------------------------------


def test_local_json_and_jsonl_same_columns(tmp_path):
    rows = [json.loads(line) for line in sample_path("medqa").read_text().splitlines()[:3]]
    jsonl = write_jsonl(tmp_path / "medqa.jsonl", rows)
    as_json = tmp_path / "medqa.json"
    as_json.write_text(json.dumps(rows))
    for path in (jsonl, str(as_json)):
        ds, report = to_mcq_items(load_rows(path), "medqa")
        assert report.kept == 3 and [d["answer"] for d in ds] == [r["answer_idx"] for r in rows]


def test_missing_local_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_rows(tmp_path / "nope.jsonl")


def test_hub_id_without_network_fails_fast():
    import huggingface_hub.constants

    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE was not set before huggingface_hub was imported: a hub call would retry for ~25 s")
    assert "medical_o1_sft" in HUB_IDS and "medqa" not in HUB_IDS  # benchmarks are defined in evaluation.benchmarks
    for source, name in (("medical_o1_sft", "medical-o1"), (BENCHMARKS["medqa"].hub_id, "MedQA")):
        start = time.monotonic()
        with pytest.raises(Exception, match=name):  # datasets raises ConnectionError naming the hub id
            load_rows(source)
        assert time.monotonic() - start < 10


# --------------------------------------------------------------------------------------------
# Bad rows
# --------------------------------------------------------------------------------------------

GOOD_MEDQA = {"question": "Which vitamin?", "options": {"A": "B12", "B": "C", "C": "D", "D": "K"}, "answer_idx": "A", "meta_info": "step1"}


def medqa_rows_with_bad():
    return [
        GOOD_MEDQA,
        {**GOOD_MEDQA, "question": "   "},  # 1: empty question
        {**GOOD_MEDQA, "answer_idx": "E"},  # 2: letter not among the options
        {**GOOD_MEDQA, "answer_idx": None},  # 3: missing answer letter
        {**GOOD_MEDQA, "options": {"A": None, "B": None, "C": None, "D": None}},  # 4: no option text
        {**GOOD_MEDQA, "question": "Which organ?"},
    ]


@pytest.mark.parametrize(
    "bad_index,field",
    [(1, "question"), (2, "answer letter 'E'"), (3, "answer_idx"), (4, "option")],
)
def test_bad_medqa_row_raises_naming_row(tmp_path, bad_index, field):
    rows = medqa_rows_with_bad()
    path = write_jsonl(tmp_path / "bad.jsonl", [rows[0], rows[bad_index]])
    with pytest.raises(DataError) as info:
        to_mcq_items(load_rows(path), "medqa", source="bad.jsonl")
    message = str(info.value)
    assert "bad.jsonl:2)" in message and field in message  # the file's line 2, not the row index


def test_bad_rows_skipped_and_counted(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", medqa_rows_with_bad())
    ds, report = to_mcq_items(load_rows(path), "medqa", on_bad_row="skip")
    assert isinstance(report, MappingReport)
    assert report.kept == 2 and len(ds) == 2
    assert [i for i, _ in report.skipped] == [1, 2, 3, 4]
    assert [d["question"] for d in ds] == ["Which vitamin?", "Which organ?"]
    assert "kept 2, skipped 4" in str(report) and "bad.jsonl:2)" in str(report)  # file line 2, row index 1


def test_missing_column_named(tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"Question": "Q?", "Complex_CoT": "r"}])
    with pytest.raises(DataError, match=r"sft.jsonl:1\): field 'Response' is missing"):
        to_sft_conversations(load_rows(path))


def test_bad_sft_and_grpo_rows(tmp_path):
    sft = write_jsonl(
        tmp_path / "sft.jsonl",
        [
            {"Question": "Q?", "Complex_CoT": "r", "Response": "a"},
            {"Question": "Q?", "Complex_CoT": "", "Response": "a"},
            {"Question": None, "Complex_CoT": "r", "Response": "a"},
        ],
    )
    with pytest.raises(DataError, match=r"sft.jsonl:2\): field 'Complex_CoT' is empty"):
        to_sft_conversations(load_rows(sft))
    ds, report = to_sft_conversations(load_rows(sft), on_bad_row="skip")
    assert report.kept == 1 and [i for i, _ in report.skipped] == [1, 2] and "'Question'" in report.skipped[1][1]

    grpo = write_jsonl(
        tmp_path / "grpo.jsonl",
        [{"Open-ended Verifiable Question": "Q?", "Ground-True Answer": " "}, {"Open-ended Verifiable Question": "Q?", "Ground-True Answer": "a"}],
    )
    with pytest.raises(DataError, match=r"grpo.jsonl:1\): field 'Ground-True Answer' is empty"):
        to_question_prompts(load_rows(grpo))
    ds, report = to_question_prompts(load_rows(grpo), on_bad_row="skip")
    assert report.kept == 1 and ds[0]["answer"] == "a"


def test_bad_medmcqa_rows():
    good = {"id": "x1", "question": "Q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 2, "subject_name": "Anatomy"}
    rows = [good, {**good, "cop": 4}, {**good, "cop": "two"}, {**good, "opc": ""}, {**good, "cop": None}]
    with pytest.raises(DataError, match=r"row 1: field 'cop' must be 0-3, got 4"):
        to_mcq_items(rows, "medmcqa")
    ds, report = to_mcq_items(rows, "medmcqa", on_bad_row="skip")
    assert report.kept == 1 and [i for i, _ in report.skipped] == [1, 2, 3, 4]
    assert "'opc'" in report.skipped[2][1] and "'cop'" in report.skipped[1][1]


def test_options_as_string_literal_and_gaps():
    rows = [
        {"question": "Q?", "options": "{'A': 'x', 'B': 'y'}", "answer_idx": "B"},
        {"question": "Q?", "options": {"A": "a", "B": "b", "C": "c", "E": "e"}, "answer_idx": "E"},
        {"question": "Q?", "options": "not a dict {", "answer_idx": "A"},
    ]
    ds, report = to_mcq_items(rows, "medqa", on_bad_row="skip")
    assert report.kept == 2 and report.skipped[0][0] == 2 and "'options'" in report.skipped[0][1]
    assert ds[0]["answer_text"] == "y"
    assert ds[1]["options"]["E"] == "e" and ds[1]["options"]["D"] is None


def test_bad_arguments():
    with pytest.raises(KeyError, match="medqa"):
        to_mcq_items([GOOD_MEDQA], "pubmedqa_unknown")
    with pytest.raises(ValueError, match="on_bad_row"):
        to_mcq_items([GOOD_MEDQA], "medqa", on_bad_row="ignore")
    assert set(MCQ_LAYOUTS) >= {"medqa", "medmcqa"}


# --------------------------------------------------------------------------------------------
# cap_text and splits
# --------------------------------------------------------------------------------------------


def test_cap_text_whitespace_words():
    text = "One two three. Four five six. Seven eight nine ten eleven."
    assert cap_text(text, None) == text
    assert cap_text(text, 100) == text
    assert cap_text(text, 7) == "One two three. Four five six."
    assert cap_text("a b c d e f", 3) == "a b c"  # no sentence end: cut at the limit
    assert cap_text("First. b c d e f g h", 8) == "First. b c d e f g h"
    assert cap_text("First. b c d e f g h", 6) == "First. b c d e f"  # the only end is in the first half
    with pytest.raises(ValueError):
        cap_text(text, 0)


def test_cap_text_keeps_line_breaks():
    text = "Okay, let's think.\n\nSo the retics are low,\nwhich points to marrow failure. More words here now."
    capped = cap_text(text, 10)
    assert capped == "Okay, let's think.\n\nSo the retics are low,"  # cut at the line end, layout kept
    assert text.startswith(capped)


def test_split_train_heldout():
    ds, _ = to_question_prompts(load_rows("sample:medical_o1_verifiable"))
    train, held = split_train_heldout(ds, 40, seed=0)
    assert (len(train), len(held)) == (118, 40)
    assert not set(train["question"]) & set(held["question"])
    again_train, again_held = split_train_heldout(ds, 40, seed=0)
    assert again_held["question"] == held["question"]
    for bad in (0, len(ds)):
        with pytest.raises(ValueError):
            split_train_heldout(ds, bad)


def test_one_jsonl_reader_names_file_and_line(tmp_path):
    """A broken line is named (file:line) by every reader of JSONL: load_rows, passages, playground
    examples, evaluation records (the datasets json builder raised a generic DatasetGenerationError)."""
    from medreason_utils.evaluation import read_items
    from medreason_utils.ui.playground import load_examples
    from medreason_utils.ui.retrieval import load_passages

    path = tmp_path / "broken.jsonl"
    good = {"id": "a", "text": "t", "question": "q", "answer": "a", "kind": "k", "completion": "c"}  # a row every reader accepts
    path.write_text(json.dumps(good) + '\n\n{"question": "q2", oops}\n' + json.dumps({**good, "id": "b"}) + "\n")
    for read in (load_rows, read_jsonl, load_passages, load_examples, read_items):
        with pytest.raises(DataError, match=r"broken\.jsonl:3: not JSON"):
            read(path)
    tail = tmp_path / "tail.jsonl"
    tail.write_text('{"id": 1}\n{"id": 2, "trunc')  # an append cut short by a disconnect
    with pytest.raises(DataError, match="tail.jsonl:2"):
        read_jsonl(tail)
    assert read_jsonl(tail, allow_truncated_tail=True) == [{"id": 1}]
    arr = tmp_path / "array.jsonl"
    arr.write_text('[1, 2]\n')
    with pytest.raises(DataError, match="array.jsonl:1: expected a JSON object"):
        read_jsonl(arr)


def test_local_jsonl_reads_as_the_hub_layout_the_datasets_builder_gave():
    import datasets

    for name in ("medqa", "medmcqa", "medical_o1_sft", "medical_o1_verifiable"):
        ours = load_rows(f"sample:{name}")
        builder = datasets.load_dataset("json", data_files=str(sample_path(name)), split="train")
        assert ours[ORIGIN_COLUMN][:2] == [f"{sample_path(name)}:1", f"{sample_path(name)}:2"]
        ours = ours.remove_columns([c for c in (ORIGIN_COLUMN, ABSENT_COLUMN) if c in ours.column_names])
        assert ours.features == builder.features and ours.to_list() == builder.to_list()


def test_exclude_questions_uses_the_same_question_key_as_decontamination():
    from medreason_utils.evaluation import find_overlaps

    ds = datasets_from([{"question": "What is the first-line drug?"}, {"question": "Another one"}])
    kept, dropped = exclude_questions(ds, ["what is THE first line drug"])
    assert dropped == 1 and kept["question"] == ["Another one"]
    overlaps = find_overlaps(["what is THE first line drug"], [{"question": "What is the first-line drug?", "id": "x"}], ngram=None)
    assert [o.kind for o in overlaps] == ["exact"]


def datasets_from(rows):
    import datasets

    return datasets.Dataset.from_list(rows)


# --------------------------------------------------------------------------------------------
# The shipped MedQA / MedMCQA samples (scripts/build_eval_samples.py, SOURCES.md)
# --------------------------------------------------------------------------------------------


def _questions(name, column):
    return [str(r[column]) for r in load_rows(f"sample:{name}")]


def test_eval_samples_leave_the_cpu_limit_after_decontamination():
    """160 rows per benchmark, no question twice: after decontamination against the CPU recipe's
    training data (and the 300 MedMCQA training rows, a possible GRPO source) at least the CPU
    evaluation's ``limit`` items remain per benchmark."""
    from medreason_utils.config import load_stage_config
    from medreason_utils.evaluation import data_sources, drop_overlapping_items, find_overlaps, load_benchmark, training_questions

    limit = load_stage_config("eval", "cpu").limit
    items = {name: load_benchmark(name, f"sample:{name}")[0] for name in ("medqa", "medmcqa")}
    for name, its in items.items():
        assert len(its) == 160 and len({question_key(it["question"]) for it in its}) == 160, name
    train = training_questions(load_stage_config("sft", "cpu").data,
                               [*data_sources(load_stage_config("grpo", "cpu").data), "sample:medmcqa_train"])
    kept, dropped = drop_overlapping_items(items, find_overlaps(train, items))
    assert all(len(its) >= limit for its in kept.values()), dropped


def test_medmcqa_train_sample_is_disjoint_from_the_evaluation_samples():
    from medreason_utils.evaluation import find_overlaps

    train = load_rows("sample:medmcqa_train")
    evaluation = load_rows("sample:medmcqa")
    assert len(train) == 300
    assert not {r["id"] for r in train} & {r["id"] for r in evaluation}
    keys = [question_key(r["question"]) for r in train]
    assert len(set(keys)) == 300 and not set(keys) & {question_key(r["question"]) for r in evaluation}
    # nor does decontamination (exact or 13 words) find a training question in either evaluation sample
    items = {name: [{"id": str(i), "question": q} for i, q in enumerate(_questions(name, "question"))] for name in ("medqa", "medmcqa")}
    assert find_overlaps([r["question"] for r in train], items) == []


def test_medmcqa_samples_hold_no_medical_o1_question(shared_file):
    """The medical-o1 data (SFT, verifiable, multiple choice) shares 3 questions with MedMCQA
    validation word for word; none of them, nor a 13-word overlap, is in the shipped MedMCQA files."""
    from medreason_utils.data import read_jsonl
    from medreason_utils.evaluation import find_overlaps

    o1 = _questions("medical_o1_sft", "Question") + _questions("medical_o1_verifiable", "Open-ended Verifiable Question")
    o1 += [r["question"] for r in read_jsonl(shared_file("medical_o1_mcq_sample.jsonl"))]
    o1 += [r["Question"] for r in read_jsonl(shared_file("medical_o1_reasoning_sft_sample.jsonl"))]
    full = read_jsonl(shared_file("medmcqa_validation.jsonl"))
    exact = {question_key(r["question"]) for r in full} & {question_key(q) for q in o1}
    assert len(exact) == 3, "the known word-for-word overlaps are still found (the check can fail)"
    for name in ("medmcqa", "medmcqa_train"):
        items = [{"id": r["id"], "question": r["question"]} for r in load_rows(f"sample:{name}")]
        assert find_overlaps(o1, items) == [], name


# --------------------------------------------------------------------------------------------
# Bad files (issue 17): the file and its own line, missing vs empty, no usable row is an error
# --------------------------------------------------------------------------------------------

SFT_ROW = {"Question": "A 30-year-old has fever.", "Complex_CoT": "Think about infection.", "Response": "Sepsis."}


def test_sft_file_with_a_field_missing_on_line_5_names_line_5_after_the_shuffled_split(tmp_path):
    from types import SimpleNamespace

    from medreason_utils.training.sft import sft_data

    rows = [dict(SFT_ROW, Question=f"Question {k}?") for k in range(8)]
    del rows[4]["Response"]  # file line 5
    path = write_jsonl(tmp_path / "sft.jsonl", rows)
    config = SimpleNamespace(data=str(path), n_heldout=2, seed=0, n_train=10, max_reasoning_tokens=None, max_response_tokens=None)
    data = sft_data(config)
    reasons = [r for _, r in data.train_report.skipped + data.heldout_report.skipped]
    assert len(reasons) == 1 and f"{path}:5)" in reasons[0] and "field 'Response' is missing" in reasons[0], reasons


def test_jsonl_null_field_is_empty_and_absent_field_is_missing(tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", [SFT_ROW, dict(SFT_ROW, Response=None), {k: v for k, v in SFT_ROW.items() if k != "Response"}])
    rows = load_rows(path)
    with pytest.raises(DataError, match=r"sft.jsonl:2\): field 'Response' is empty \(null\)"):
        to_sft_conversations(rows.select([1]))
    with pytest.raises(DataError, match=r"sft.jsonl:3\): field 'Response' is missing"):
        to_sft_conversations(rows.select([2]))


def test_jsonl_file_whose_every_row_is_bad_is_an_error_naming_the_file(tmp_path):
    path = write_jsonl(tmp_path / "allbad.jsonl", [{"Question": "q", "Complex_CoT": "", "Response": "r"}] * 3)
    with pytest.raises(DataError, match=r"allbad.jsonl.*no usable row among 3 row\(s\); every row is bad, the first: .*allbad.jsonl:1\)"):
        to_sft_conversations(load_rows(path), on_bad_row="skip")


@pytest.mark.parametrize("name, text", [("empty.jsonl", ""), ("blank.jsonl", "\n\n"), ("empty.csv", "Question,Response\n"),
                                        ("empty.json", "[]")])
def test_data_file_with_no_rows_is_an_error_naming_it(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=rf"{name}: the file holds no rows"):
        load_rows(path)


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "json"])
def test_data_file_with_invalid_utf8_on_line_3_names_file_and_line(tmp_path, suffix):
    good = {"jsonl": b'{"a": "x"}\n{"a": "y"}\n', "csv": b"a\nx\n", "json": b'[{"a": "x"},\n{"a": "y"},\n'}[suffix]
    bad = {"jsonl": b'{"a": "caf\xe9"}\n', "csv": b"caf\xe9\n", "json": b'{"a": "caf\xe9"}]\n'}[suffix]
    path = tmp_path / f"latin1.{suffix}"
    path.write_bytes(good + bad)
    with pytest.raises(DataError, match=rf"latin1.{suffix}:3: not UTF-8 text"):
        load_rows(path)


def test_jsonl_with_a_list_in_a_text_column_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [SFT_ROW, SFT_ROW, dict(SFT_ROW, Question=["a", "list"])])
    with pytest.raises(DataError, match=r"mixed.jsonl:3: field 'Question' holds a list where .*mixed.jsonl:1 holds a text"):
        load_rows(path)


def test_csv_rows_carry_the_line_they_start_on_across_quoted_line_breaks(tmp_path):
    path = tmp_path / "sft.csv"
    path.write_text('Question,Complex_CoT,Response\n"two\nline question",cot,resp\n\nq2,,resp2\n')
    rows = load_rows(path)
    assert rows[ORIGIN_COLUMN] == [f"{path}:2", f"{path}:5"]
    with pytest.raises(DataError, match=r"sft.csv:5\): field 'Complex_CoT' is empty"):
        to_sft_conversations(rows, on_bad_row="raise")


def test_parquet_and_json_rows_are_named_by_their_1_based_row(tmp_path):
    import datasets

    pq = tmp_path / "d.parquet"
    datasets.Dataset.from_list([SFT_ROW, dict(SFT_ROW, Response="")]).to_parquet(str(pq))
    with pytest.raises(DataError, match=r"d.parquet row 2\): field 'Response' is empty"):
        to_sft_conversations(load_rows(pq))
    js = tmp_path / "d.json"
    js.write_text(json.dumps({"data": [SFT_ROW, {"Question": "q"}]}))
    with pytest.raises(DataError, match=r"d.json row 2\): field 'Complex_CoT' is missing"):
        to_sft_conversations(load_rows(js))


def test_benchmark_file_whose_rows_are_all_bad_is_an_error_naming_it(tmp_path):
    from medreason_utils.evaluation.benchmarks import load_benchmark

    path = write_jsonl(tmp_path / "medqa.jsonl", [{"question": "q", "options": {"A": "x", "B": "y"}, "answer_idx": "E"}] * 2)
    with pytest.raises(DataError, match=r"medqa.jsonl.*no usable row among 2"):
        load_benchmark("medqa", source=path, on_bad_row="skip")
