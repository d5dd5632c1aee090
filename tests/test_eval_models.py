"""evaluate_models: reports, resumable per-item JSONL, prompt styles, sampling rules; the real model (slow)."""

import json

import pytest

from medreason_utils.data import load_rows
from medreason_utils.evaluation.benchmarks import to_mcq_items
from medreason_utils.evaluation import evaluate_models, read_items


@pytest.fixture(scope="module")
def items():
    ds, _ = to_mcq_items(load_rows("sample:medqa", limit=20), "medqa")
    return [dict(r) for r in ds]


class Reader:
    """A backend answering from a fixed answer key (what a model that 'knows' would write), counting
    the prompts it was asked; ``fail_after`` raises after that many prompts, as a disconnect would."""

    def __init__(self, items, *, wrong=(), fail_after=None, fmt="<THINK>reasoning</THINK><ANSWER>{}</ANSWER>"):
        self.key = {it["question"]: it["answer"] for it in items}
        self.wrong = set(wrong)
        self.fail_after = fail_after
        self.fmt = fmt
        self.seen = []
        self.calls = []

    def generate(self, prompts, **kw):
        self.calls.append(kw)
        out = []
        for p in prompts:
            if self.fail_after is not None and len(self.seen) >= self.fail_after:
                raise ConnectionError("runtime disconnected")
            user = next(m["content"] for m in p if m["role"] == "user")
            q = next(q for q in self.key if q.strip() in user)
            self.seen.append(q)
            letter = "A" if self.key[q] != "A" else "B"
            out.append(self.fmt.format(letter if q in self.wrong else self.key[q]))
        return out


def test_reports_and_table(tmp_path, items):
    qs = [it["question"] for it in items]
    good = Reader(items, wrong=qs[:4])
    worse = Reader(items, wrong=qs[:12])
    table = evaluate_models({"sft": good, "grpo": worse}, {"medqa": items}, tmp_path, batch_size=4, progress=False)
    assert [(r["model"], r["n"], r["correct"]) for r in table] == [("sft", 20, 16), ("grpo", 20, 8)]
    assert all(r["format_compliance"] == 1.0 and r["ci_low"] < r["exact_match"] < r["ci_high"] for r in table)
    for name in ["results.md", "results.csv", "comparisons.md", "comparisons.csv", "per_subject.csv", "summary.json"]:
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cmp = json.loads((tmp_path / "summary.json").read_text())["comparisons"]
    assert cmp[0]["model_a"] == "sft" and cmp[0]["only_a"] == 8 and cmp[0]["only_b"] == 0 and cmp[0]["p_value"] < 0.01
    recs = read_items(tmp_path / "items" / "sft__medqa.jsonl")
    assert len(recs) == 20
    assert set(recs[0]) >= {"prompt", "completion", "predicted", "gold", "correct", "strict", "lenient", "subject", "sample"}
    md = (tmp_path / "results.md").read_text()
    assert "| medqa | sft | 20 | grammar | 0.800 [" in md
    # greedy by default
    assert all(c["temperature"] == 0.0 for c in good.calls)


def test_resume_after_a_disconnect(tmp_path, items):
    first = Reader(items, fail_after=8)
    with pytest.raises(ConnectionError):
        evaluate_models({"m": first}, {"medqa": items}, tmp_path, batch_size=2, chunk_size=4, progress=False)
    path = tmp_path / "items" / "m__medqa.jsonl"
    assert len(read_items(path)) == 8  # two chunks of 4 were written before the failure
    with open(path, "a") as fh:  # a line cut short by the disconnect
        fh.write('{"id": "19", "gold": "A", "predi')
    second = Reader(items)
    table = evaluate_models({"m": second}, {"medqa": items}, tmp_path, batch_size=2, chunk_size=4, progress=False)
    assert len(second.seen) == 12, "only the items not yet written are generated again"
    assert table[0]["n"] == 20 and table[0]["correct"] == 20
    third = Reader(items)
    evaluate_models({"m": third}, {"medqa": items}, tmp_path, batch_size=2, progress=False)
    assert third.seen == []
    with pytest.raises(ValueError, match=r"max_new_tokens: 256 -> 9.*resume='auto'.*--resume_items auto"):
        evaluate_models({"m": third}, {"medqa": items}, tmp_path, max_new_tokens=9, resume="refuse", progress=False)
    evaluate_models({"m": third}, {"medqa": items}, tmp_path, max_new_tokens=9, resume=False, progress=False)
    assert len(third.seen) == 20


def test_plain_prompt_style_and_subset(tmp_path, items):
    plain = Reader(items, fmt="The answer is {}.")
    table = evaluate_models({"base": plain}, {"medqa": items}, tmp_path, styles={"base": ["suite", "plain"]}, limit=10,
                            subset_seed=5, progress=False)
    assert [r["model"] for r in table] == ["base", "base (plain prompt)"]
    assert all(r["n"] == 10 and r["exact_match"] == 0.0 and r["lenient_match"] == 1.0 and r["plain_match"] == 1.0 for r in table)
    # each prompt by the reading that fits it: the suite's by the grammar (0: no <ANSWER> block), the plain one by the letter named
    assert [(r["reading"], r["score"]) for r in table] == [("grammar", 0.0), ("plain", 1.0)]
    recs = read_items(tmp_path / "items" / "base_plain_prompt__medqa.jsonl")
    assert all(r["prompt"][0]["role"] == "user" and "letter of the correct option" in r["prompt"][0]["content"] for r in recs)
    assert all(r["plain"] == r["gold"] and r["plain_correct"] for r in recs)
    md = (tmp_path / "results.md").read_text()
    assert "| medqa | base (plain prompt) | 10 | plain | 1.000 [" in md and "plain_match" in md
    summary = json.loads((tmp_path / "summary.json").read_text())
    [c] = summary["comparisons"]
    assert (c["reading_a"], c["reading_b"], c["score_a"], c["score_b"], c["only_b"]) == ("grammar", "plain", 0.0, 1.0, 10)


def test_records_written_before_the_plain_reading_are_read_on_resume(tmp_path, items):
    """Per-item files of an earlier version have no plain reading: a resume reads it from the
    completion instead of generating again."""
    evaluate_models({"base": Reader(items, fmt="B) {}")}, {"medqa": items}, tmp_path, styles={"base": ["plain"]}, limit=6,
                    progress=False)
    path = tmp_path / "items" / "base_plain_prompt__medqa.jsonl"
    old = [{k: v for k, v in r.items() if k not in ("plain", "plain_correct")} for r in read_items(path)]
    path.write_text("".join(json.dumps(r) + "\n" for r in old))

    def must_not_run(prompts, **_):
        raise AssertionError("resumed run generated again")

    [row] = evaluate_models({"base": must_not_run}, {"medqa": items}, tmp_path, styles={"base": ["plain"]}, limit=6, progress=False)
    gold_b = sum(r["gold"] == "B" for r in old)
    assert row["reading"] == "plain" and row["plain_correct"] == gold_b and row["score"] == gold_b / 6


def test_sampling_rules(tmp_path, items):
    r = Reader(items)
    with pytest.raises(ValueError, match="seed"):
        evaluate_models({"m": r}, {"medqa": items}, tmp_path, temperature=0.7, seed=None, progress=False)
    with pytest.raises(ValueError, match="temperature"):
        evaluate_models({"m": r}, {"medqa": items}, tmp_path, num_samples=3, progress=False)
    table = evaluate_models({"m": r}, {"medqa": items}, tmp_path, temperature=0.7, num_samples=3, seed=11, limit=5, progress=False)
    assert table[0]["samples"] == 3 and table[0]["exact_match_std"] == 0.0 and table[0]["n"] == 5
    assert sorted({c["seed"] for c in r.calls}) == [11, 12, 13]
    assert len(read_items(tmp_path / "items" / "m__medqa.jsonl")) == 15


def test_bad_model_spec_is_named(tmp_path, items):
    with pytest.raises(TypeError, match=r"models\['x'\]"):
        evaluate_models({"x": 42}, {"medqa": items}, tmp_path, progress=False)


@pytest.mark.slow
def test_real_model_base_with_both_prompts(tmp_path, items):
    from medreason_utils.models import load_model

    model, tok = load_model()
    kw = dict(max_new_tokens=12, batch_size=3, limit=3, progress=False)
    table = evaluate_models({"base": (model, tok)}, {"medqa": items}, tmp_path, styles={"base": ["suite", "plain"]}, **kw)
    assert [r["n"] for r in table] == [3, 3]
    recs = read_items(tmp_path / "items" / "base__medqa.jsonl")
    assert len(recs) == 3 and all(isinstance(r["completion"], str) and r["completion"] for r in recs)

    def must_not_run(prompts, **_):
        raise AssertionError("resumed run generated again")

    again = evaluate_models({"base": must_not_run}, {"medqa": items}, tmp_path, styles={"base": ["suite", "plain"]}, **kw)
    assert [r["exact_match"] for r in again] == [r["exact_match"] for r in table]


def test_truncated_meta_json_of_an_items_file_is_named_or_regenerated(tmp_path, items):
    evaluate_models({"m": Reader(items)}, {"medqa": items}, tmp_path, batch_size=4, progress=False, plot=False)
    meta = tmp_path / "items" / "m__medqa.meta.json"
    meta.write_text(meta.read_text()[:25])  # cut off mid-write
    with pytest.raises(ValueError, match=r"m__medqa.meta.json"):  # refuse: the unreadable record is named
        evaluate_models({"m": Reader(items)}, {"medqa": items}, tmp_path, batch_size=4, progress=False, plot=False,
                        resume="refuse")
    again = Reader(items)
    evaluate_models({"m": again}, {"medqa": items}, tmp_path, batch_size=4, progress=False, plot=False)  # auto: regenerated
    assert len(again.seen) == len(items)


def test_evaluation_leaves_no_temporary_file_beside_its_reports(tmp_path, items):
    evaluate_models({"a": Reader(items), "b": Reader(items, wrong=[items[0]["question"]])}, {"medqa": items}, tmp_path,
                    batch_size=4, progress=False)
    left = [p.name for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert left == [] and (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "items" / "a__medqa.meta.json").read_text())["benchmark"] == "medqa"


class KeyedReader(Reader):
    """A backend that says which model it is (``model_key``), as an adapter folder's hash does."""

    def __init__(self, items, key, **kw):
        super().__init__(items, **kw)
        self.model_key = key


def test_changed_model_key_regenerates_not_reuses(tmp_path, items):
    """Issue 17's stale scores: the same label with another model (re-trained adapter) in the same RUN_DIR."""
    qs = [it["question"] for it in items]
    first = evaluate_models({"grpo": KeyedReader(items, "folder:aaaa", wrong=qs)}, {"medqa": items}, tmp_path, limit=6,
                            progress=False)
    assert first[0]["correct"] == 0
    retrained = KeyedReader(items, "folder:bbbb")
    again = evaluate_models({"grpo": retrained}, {"medqa": items}, tmp_path, limit=6, progress=False)
    assert len(retrained.seen) == 6 and again[0]["correct"] == 6  # generated again, the new model's scores
    stale = list((tmp_path / "items" / "stale").iterdir())
    assert sorted(f.name.split(".jsonl")[0].split(".meta")[0] for f in stale) == ["grpo__medqa", "grpo__medqa"]
    meta = json.loads((tmp_path / "items" / "grpo__medqa.meta.json").read_text())
    assert meta["model_key"] == "folder:bbbb"
    with pytest.raises(ValueError, match=r"model_key: 'folder:bbbb' -> 'folder:cccc'.*--resume_items auto"):
        evaluate_models({"grpo": KeyedReader(items, "folder:cccc")}, {"medqa": items}, tmp_path, limit=6, resume="refuse",
                        progress=False)
    same = KeyedReader(items, "folder:bbbb")
    evaluate_models({"grpo": same}, {"medqa": items}, tmp_path, limit=6, resume="refuse", progress=False)
    assert same.seen == []  # same model, same settings: resumed


@pytest.mark.parametrize("setting", [{"max_new_tokens": 9}, {"prefilled_think": True}, {"seed": 1, "temperature": 0.5},
                                     {"styles": {"m": ["plain"]}}])
def test_changed_generation_setting_regenerates(tmp_path, items, setting):
    kw = dict(limit=4, progress=False)
    evaluate_models({"m": Reader(items)}, {"medqa": items}, tmp_path, **kw)
    second = Reader(items, fmt="The answer is {}.")
    evaluate_models({"m": second}, {"medqa": items}, tmp_path, **kw, **setting)
    assert len(second.seen) == 4


def test_adapter_folder_key_follows_its_weights_and_config(tmp_path):
    from medreason_utils.evaluation import model_key

    folder = tmp_path / "grpo_adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"r": 8}')
    (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    (folder / "README.md").write_text("trained")
    k1 = model_key(str(folder))
    (folder / "README.md").write_text("trained again, same weights")
    assert model_key(folder) == k1 and k1.startswith("folder:")
    (folder / "adapter_model.safetensors").write_bytes(b"\x01" + b"\x00" * 63)
    k2 = model_key(folder)
    (folder / "adapter_config.json").write_text('{"r": 16}')
    k3 = model_key(folder)
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    assert len({k1, k2, k3, model_key(folder)}) == 4
    assert model_key("HuggingFaceTB/SmolLM2-135M-Instruct") == "hub:HuggingFaceTB/SmolLM2-135M-Instruct"
    assert model_key(None, base_model="Qwen/Qwen3-0.6B") == "hub:Qwen/Qwen3-0.6B"


def test_unknown_resume_mode_names_the_allowed_ones(tmp_path, items):
    with pytest.raises(ValueError, match=r"resume='yes'; allowed: \['auto', 'refuse', 'fresh'\]"):
        evaluate_models({"m": Reader(items)}, {"medqa": items}, tmp_path, resume="yes", progress=False)


def test_eval_stage_resume_setting_from_overrides():
    from medreason_utils.config.stages import EvalStageConfig

    from medreason_utils.config.recipes import read_recipe
    from medreason_utils.pipeline.cli import parse

    base = EvalStageConfig.from_dict(read_recipe("recipes/cpu/eval.yaml"))
    assert base.resume_items == "auto"
    assert base.with_overrides({"resume_items": "fresh"}, label="OVERRIDES").resume_items == "fresh"
    with pytest.raises(ValueError, match=r"EvalStageConfig.resume_items: 'yes'; give 'auto', 'refuse' or 'fresh'"):
        base.with_overrides({"resume_items": "yes"}, label="OVERRIDES")
    assert parse(["eval", "--config", "cpu", "--resume_items", "refuse"]).config.resume_items == "refuse"


@pytest.mark.slow
def test_retrained_adapter_in_the_same_run_dir_is_generated_again(tmp_path, items, default_model_path):
    """Issue 17's probe with a real adapter: re-train (here: change the LoRA weights of) RUN_DIR/grpo_adapter and
    re-run the evaluation: its completions are generated again, not the old adapter's reused."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "grpo_adapter"

    def train(seed):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(default_model_path)
        peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        peft_model.save_pretrained(adapter)

    kw = dict(base_model=str(default_model_path), limit=2, max_new_tokens=3, batch_size=2, progress=False)
    train(0)
    evaluate_models({"grpo": str(adapter)}, {"medqa": items}, tmp_path / "eval", **kw)
    first = read_items(tmp_path / "eval" / "items" / "grpo__medqa.jsonl")
    train(1)
    evaluate_models({"grpo": str(adapter)}, {"medqa": items}, tmp_path / "eval", **kw)
    stale = sorted((tmp_path / "eval" / "items" / "stale").iterdir())
    assert len(stale) == 2  # the first adapter's records and meta, kept aside
    second = read_items(tmp_path / "eval" / "items" / "grpo__medqa.jsonl")
    assert len(second) == 2 and len(first) == 2
    meta = json.loads((tmp_path / "eval" / "items" / "grpo__medqa.meta.json").read_text())
    from medreason_utils.evaluation import model_key

    assert meta["model_key"] == model_key(str(adapter))
    evaluate_models({"grpo": str(adapter)}, {"medqa": items}, tmp_path / "eval", resume="refuse", **kw)  # same adapter: resumed
    assert len(sorted((tmp_path / "eval" / "items" / "stale").iterdir())) == 2
