"""Benchmark loaders (hub layouts), fixed-seed subsets, the columns layout and decontamination."""

import json
from pathlib import Path

import pytest

from medreason_utils.evaluation.benchmarks import (
    BENCHMARKS,
    BenchmarkSpec,
    MMLU_MEDICAL_SUBJECTS,
    columns_layout,
    load_benchmark,
    select_items,
)
from medreason_utils.evaluation.decontamination import decontaminate, drop_overlapping_items, find_overlaps
from medreason_utils.data import DataError, load_rows

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")
_needs = pytest.mark.skipif(not (SHARED / "medqa_usmle_4options_test.jsonl").is_file(), reason=f"shared data absent ({SHARED})")


def needs_shared(fn):
    """Reads the full benchmark files of ../shared/data: marked ``data``, skipped with the reason when they are absent."""
    return pytest.mark.data(_needs(fn))


def _raw(name):
    return [json.loads(line) for line in open(SHARED / BENCHMARKS[name].local_file, encoding="utf-8")]


@needs_shared
@pytest.mark.parametrize("name", ["medqa", "medmcqa", "pubmedqa", "pubmedqa_test", "mmlu_medical", "medxpertqa"])
def test_full_benchmark_sizes(name):
    items, report = load_benchmark(name, data_dir=SHARED)
    assert len(items) == BENCHMARKS[name].n_full
    assert report.n_skipped == 0
    ids = [it["id"] for it in items]
    assert len(set(ids)) == len(ids), "item ids must be unique (the per-item JSONL is keyed by them)"
    for it in items[:50]:
        assert it["answer"] in it["options"]
        assert it["prompt"][0]["role"] == "system" and it["prompt_plain"][0]["role"] == "user"
        assert it["answer_text"] == it["options"][it["answer"]]


@needs_shared
def test_medmcqa_cop_is_zero_based_and_subjects_kept():
    raw = _raw("medmcqa")[:30]
    items, _ = load_benchmark("medmcqa", source=SHARED / "medmcqa_validation.jsonl")
    by_id = {it["id"]: it for it in items}
    for row in raw:
        it = by_id[row["id"]]
        assert it["answer_text"] == row["op" + "abcd"[row["cop"]]]
        assert it["subject"] == row["subject_name"]


@needs_shared
def test_pubmedqa_has_context_and_three_answers():
    raw = {str(r["pubid"]): r for r in _raw("pubmedqa")}
    items, _ = load_benchmark("pubmedqa_test", data_dir=SHARED, limit=20, seed=1)
    for it in items:
        row = raw[it["id"]]
        assert row["is_official_test"]
        assert it["options"] == {"A": "yes", "B": "no", "C": "maybe"}
        assert it["answer_text"] == row["final_decision"]
        assert row["context"]["contexts"][0][:60] in it["prompt"][1]["content"]
        assert row["context"]["contexts"][0][:60] in it["prompt_plain"][0]["content"]
    # the official subset by explicit ids (what the hub layout, which lacks the flag, needs)
    ids = [r["pubid"] for r in list(raw.values())[:7]]
    items, _ = load_benchmark("pubmedqa_test", data_dir=SHARED, test_ids=ids)
    assert sorted(it["id"] for it in items) == sorted(str(i) for i in ids)


@needs_shared
def test_pubmedqa_test_without_flag_says_what_is_missing(tmp_path):
    rows = _raw("pubmedqa")[:3]
    for r in rows:
        r.pop("is_official_test")
    f = tmp_path / "pqa.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match="is_official_test"):
        load_benchmark("pubmedqa_test", source=f)


@needs_shared
def test_mmlu_medical_subjects_and_index_answers():
    raw = _raw("mmlu_medical")
    items, _ = load_benchmark("mmlu_medical", data_dir=SHARED)
    assert {it["subject"] for it in items} == set(MMLU_MEDICAL_SUBJECTS)
    for row, it in zip(raw[:40], items[:40]):
        assert it["answer_text"] == row["choices"][row["answer"]].strip()


@needs_shared
def test_medxpertqa_ten_options_and_question_without_inline_choices():
    items, _ = load_benchmark("medxpertqa", data_dir=SHARED, limit=25, seed=3)
    for it in items:
        assert len(it["options"]) == 10
        assert "Answer Choices" not in it["question"]
        assert "J. " in it["prompt"][1]["content"]


# MMLU-Pro and GPQA: no offline copy, so a few rows written in the hub layout
# (TIGER-Lab/MMLU-Pro: question_id, question, options, answer, answer_index, cot_content, category, src;
#  Idavidrein/gpqa: Question, Correct Answer, Incorrect Answer 1-3, Record ID, High-level domain, Subdomain).
MMLU_PRO_ROWS = [
    {"question_id": 7001, "question": "Which vitamin deficiency causes scurvy?",
     "options": ["Vitamin A", "Vitamin B1", "Vitamin C", "Vitamin D", "Vitamin E", "Vitamin K", "Niacin", "Folate", "Biotin", "Iodine"],
     "answer": "C", "answer_index": 2, "cot_content": "", "category": "health", "src": "ori_mmlu-nutrition"},
    {"question_id": 7002, "question": "Which organelle is the site of oxidative phosphorylation?",
     "options": ["Nucleus", "Ribosome", "Golgi apparatus", "Mitochondrion", "Lysosome", "Peroxisome", "Centrosome"],
     "answer": "D", "answer_index": 3, "cot_content": "", "category": "biology", "src": "stemez-Biology"},
    {"question_id": 7003, "question": "What is the derivative of x^2?", "options": ["x", "2x", "x^2", "2"],
     "answer": "B", "answer_index": 1, "cot_content": "", "category": "math", "src": "ori_mmlu-college_mathematics"},
]

GPQA_ROWS = [
    {"Question": "Which enzyme unwinds the DNA double helix at the replication fork?", "Correct Answer": "Helicase",
     "Incorrect Answer 1": "Ligase", "Incorrect Answer 2": "Primase", "Incorrect Answer 3": "Topoisomerase I",
     "Record ID": "recA1", "High-level domain": "Biology", "Subdomain": "Molecular Biology"},
    {"Question": "Which gene is most often mutated in familial adenomatous polyposis?", "Correct Answer": "APC",
     "Incorrect Answer 1": "BRCA1", "Incorrect Answer 2": "MLH1", "Incorrect Answer 3": "TP53",
     "Record ID": "recB2", "High-level domain": "Biology", "Subdomain": "Genetics"},
    {"Question": "What is the ground-state term symbol of atomic carbon?", "Correct Answer": "3P0",
     "Incorrect Answer 1": "1S0", "Incorrect Answer 2": "3S1", "Incorrect Answer 3": "1D2",
     "Record ID": "recC3", "High-level domain": "Chemistry", "Subdomain": "Physical Chemistry"},
]


def _write(tmp_path, name, rows):
    f = tmp_path / name
    f.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return f


def test_mmlu_pro_filter_and_letters(tmp_path):
    items, _ = load_benchmark("mmlu_pro_health_bio", source=_write(tmp_path, "mmlu_pro.jsonl", MMLU_PRO_ROWS))
    assert [it["id"] for it in items] == ["7001", "7002"]
    assert items[0]["answer_text"] == "Vitamin C" and len(items[0]["options"]) == 10
    assert items[1]["answer_text"] == "Mitochondrion" and len(items[1]["options"]) == 7
    assert "J. Iodine" in items[0]["prompt"][1]["content"]


def test_gpqa_biology_order_is_fixed_and_gold_is_the_correct_answer(tmp_path):
    f = _write(tmp_path, "gpqa.jsonl", GPQA_ROWS)
    a, _ = load_benchmark("gpqa_biology", source=f)
    b, _ = load_benchmark("gpqa_biology", source=f)
    assert [it["id"] for it in a] == ["recA1", "recB2"]
    assert a == b, "the option order must be the same on every load"
    assert [it["answer_text"] for it in a] == ["Helicase", "APC"]
    assert {it["subject"] for it in a} == {"Molecular Biology", "Genetics"}


def test_columns_layout_any_mcq_set(tmp_path):
    rows = [
        {"stem": "Drug of choice for anaphylaxis?", "o1": "Epinephrine", "o2": "Atropine", "o3": "Diazepam", "gold": "Epinephrine", "area": "EM"},
        {"stem": "Antidote for paracetamol overdose?", "o1": "Naloxone", "o2": "N-acetylcysteine", "o3": "Flumazenil", "gold": "N-acetylcysteine", "area": "Tox"},
    ]
    spec = BenchmarkSpec("custom", "unused/hub-id", None, "test", columns_layout("stem", ["o1", "o2", "o3"], "gold", subject="area"))
    items, _ = load_benchmark(spec, source=_write(tmp_path, "custom.jsonl", rows))
    assert [it["answer"] for it in items] == ["A", "B"]
    assert [it["subject"] for it in items] == ["EM", "Tox"]
    # index and letter answers
    rows2 = [{"q": "x?", "opts": ["a1", "b1"], "y": 1}, {"q": "y?", "opts": {"A": "no", "B": "yes"}, "y": "A"}]
    spec2 = BenchmarkSpec("custom2", "unused", None, "test", columns_layout("q", "opts", "y"))
    items, _ = load_benchmark(spec2, source=_write(tmp_path, "c2.jsonl", rows2[:1]))
    assert items[0]["answer"] == "B"
    # a bad row is named
    bad = [{"stem": "Q?", "o1": "a", "o2": "b", "o3": "c", "gold": "zzz", "area": None}]
    with pytest.raises(DataError, match=r"bad.jsonl:1\): column 'gold'"):
        load_benchmark(spec, source=_write(tmp_path, "bad.jsonl", bad))
    items, report = load_benchmark(spec, source=_write(tmp_path, "bad2.jsonl", rows + bad), on_bad_row="skip")
    assert len(items) == 2 and report.n_skipped == 1


def test_select_items_fixed_seed_subset():
    items = [{"id": str(i)} for i in range(100)]
    a = select_items(items, 10, seed=7)
    assert a == select_items(items, 10, seed=7)
    assert a != select_items(items, 10, seed=8)
    assert [int(x["id"]) for x in a] == sorted(int(x["id"]) for x in a), "data order is kept"
    assert select_items(items, 5, seed=None) == items[:5]
    assert len(select_items(items, None)) == 100


def test_unknown_benchmark_is_named():
    with pytest.raises(KeyError, match="medqa"):
        load_benchmark("medqaa")


@needs_shared
def test_decontamination_finds_the_three_medmcqa_questions_in_the_medical_o1_sample():
    evals, _ = load_benchmark("medmcqa", data_dir=SHARED)
    train = list(load_rows(SHARED / "medical_o1_mcq_sample.jsonl"))
    kept, overlaps = decontaminate(train, {"medmcqa": evals}, question_col="question", drop=True)
    exact = [o for o in overlaps if o.kind == "exact"]
    assert len({o.train_index for o in exact}) == 3
    assert len(kept) == len(train) - len({o.train_index for o in overlaps})
    kept_all, _ = decontaminate(train, {"medmcqa": evals}, question_col="question", drop=False)
    assert len(kept_all) == len(train)
    kept_evals, dropped = drop_overlapping_items({"medmcqa": evals}, overlaps)
    assert dropped["medmcqa"] == len({o.eval_id for o in overlaps}) >= 3
    assert len(kept_evals["medmcqa"]) == len(evals) - dropped["medmcqa"]


def test_ngram_overlap_catches_a_reworded_question():
    evals = [{"id": "e1", "benchmark": "b", "question": "A 23-year-old woman presents with fever, neck stiffness and a petechial "
              "rash over the trunk and legs after returning from a pilgrimage. What is the most likely organism?"}]
    reworded = ("Case: a 23 year old woman presents with fever, neck stiffness and a petechial rash over the trunk and legs "
                "after returning from travel. Which organism is it?")
    unrelated = "Which drug is the first-line treatment of uncomplicated hypertension in a 50-year-old man?"
    found = find_overlaps([unrelated, reworded], evals)
    assert [(o.train_index, o.kind) for o in found] == [(1, "ngram")]
    assert find_overlaps([reworded], evals, ngram=None) == []


def test_training_questions_take_a_source_a_list_or_a_data_mix():
    """A stage's data may be one source, a list, or {source: proportion} (GRPO data mixing); each
    source is read whole, with its own question column (SFT, verifiable, multiple-choice layouts)."""
    from medreason_utils.evaluation import training_questions

    sft, verifiable, mcq = (len(load_rows(f"sample:{n}")) for n in ("medical_o1_sft", "medical_o1_verifiable", "medmcqa_train"))
    assert len(training_questions("sample:medical_o1_sft")) == sft
    assert len(training_questions(None, ["sample:medical_o1_verifiable", "sample:medmcqa_train"])) == verifiable + mcq
    mixed = training_questions("sample:medical_o1_sft", {"sample:medical_o1_verifiable": 0.75, "sample:medmcqa_train": 0.25})
    assert len(mixed) == sft + verifiable + mcq and mixed[-1] == load_rows("sample:medmcqa_train")[-1]["question"]
    with pytest.raises(DataError, match=r"medical_passages.jsonl:1\): no question column"):
        training_questions("sample:medical_passages")


def test_decontamination_reads_what_the_run_trained_on_from_its_summary(tmp_path):
    """Notebook 03 checks the data of the run (summary.json, written by notebooks 01/02), not the
    recipe's default: a run whose GRPO stage trained on MedMCQA rows that are also evaluation items
    has those items found and dropped, which the recipe's default data would have missed."""
    from medreason_utils.config import load_stage_config
    from medreason_utils.evaluation import load_benchmark, training_questions
    from medreason_utils.pipeline.reporting import run_training_data, update_summary

    evals = {"medmcqa": load_benchmark("medmcqa", "sample:medmcqa")[0][:20]}
    run = tmp_path / "run"
    run.mkdir()
    leaked = run / "leaked.jsonl"  # the run's own file: 5 evaluation questions among its GRPO prompts
    leaked.write_text("".join(json.dumps({"question": it["question"]}) + "\n" for it in evals["medmcqa"][:5]))
    update_summary(run, "sft", {"config": {"data": "sample:medical_o1_sft"}})
    update_summary(run, "grpo", {"config": {"data": {"sample:medical_o1_verifiable": 0.5, str(leaked): 0.5}}})

    def recipe(stage):
        return load_stage_config(stage, "cpu").data

    assert "leaked.jsonl" in json.loads((run / "summary.json").read_text())["grpo"]["config"]["data"]  # recorded relative
    used = run_training_data(run, recipe)
    assert used.origin == {"sft": "run", "grpo": "run"} and "summary.json" in used.describe()
    dropped = drop_overlapping_items(evals, find_overlaps(training_questions(used.sft, used.grpo), evals))[1]
    assert dropped == {"medmcqa": 5}
    by_recipe = training_questions(recipe("sft"), recipe("grpo"))
    assert drop_overlapping_items(evals, find_overlaps(by_recipe, evals))[1] == {"medmcqa": 0}
    # the run folder has no record of a stage (GRPO not run, or a folder of adapters only): the recipe's default, said so
    bare = tmp_path / "bare"
    update_summary(bare, "sft", {"config": {"data": "sample:medical_o1_sft"}})
    fallback = run_training_data(bare, recipe)
    assert fallback.origin == {"sft": "run", "grpo": "recipe"} and fallback.grpo == recipe("grpo")
    assert "recipe's default" in fallback.describe()
    # summaries written before the stage configs held the settings flat (the shipped checkpoint's)
    flat = tmp_path / "flat"
    update_summary(flat, "grpo", {"data": "sample:medical_o1_verifiable"})
    assert run_training_data(flat, recipe).grpo == "sample:medical_o1_verifiable"
