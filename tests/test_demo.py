"""Demo: checkpoint resolution, rendering, streaming on the real small model, widget callbacks."""

from __future__ import annotations

import json
import os
import time

import pytest

from medreason_utils.ui.demo import DemoApp, build_messages, demo_questions, find_checkpoint
from medreason_utils.ui.html import DISCLAIMER, malformed_reasons, render_response_html
from medreason_utils.parsing import parse_completion
from medreason_utils.ui.playground import load_examples

EXAMPLES = {r["kind"]: r for r in load_examples() if r["question"].startswith("Identify a drug")}


def _fake_adapter(folder):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x", "r": 4}))
    return folder


def test_find_checkpoint(tmp_path):
    root = tmp_path / "checkpoints"
    old = _fake_adapter(root / "sft")
    new = _fake_adapter(root / "grpo" / "final")
    os.utime(old / "adapter_config.json", (time.time() - 100, time.time() - 100))
    assert find_checkpoint(root) == str(new)  # the newest adapter below the folder
    assert find_checkpoint(old) == str(old)  # an adapter folder itself
    assert find_checkpoint("someone/medreason-lora") == "someone/medreason-lora"  # a hub id
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no LoRA adapter"):
        find_checkpoint(tmp_path / "empty")


def test_load_demo_model_when_the_checkpoint_is_missing(tmp_path):
    from medreason_utils.ui.demo import load_demo_model

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_demo_model(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="if_missing"):
        load_demo_model(tmp_path / "nowhere", if_missing="ignore")


@pytest.mark.slow
def test_load_demo_model_falls_back_to_the_base_model_with_a_warning(tmp_path):
    from medreason_utils.ui.demo import load_demo_model

    with pytest.warns(UserWarning, match="loading the base model"):
        model, tokenizer, adapter = load_demo_model(tmp_path / "nowhere", if_missing="base")
    assert adapter is None and not type(model).__name__.startswith("Peft") and tokenizer.padding_side == "left"


def test_render_well_formed_completion():
    page = render_response_html(EXAMPLES["well-formed, correct"]["completion"], question="Q?", seconds=1.25)
    assert DISCLAIMER.split(".")[0] in page
    assert "<details class='medreason-reasoning'" in page and "PBP2a" in page
    assert "class='medreason-answer'" in page and "Cefaclor" in page
    assert "medreason-malformed" not in page and "generated in 1.2 s" in page


@pytest.mark.parametrize("kind, expected", [
    ("truncated (max tokens reached)", "</THINK> missing"),
    ("missing tags", "<THINK> missing"),
    ("answer block only", "<THINK> missing"),
])
def test_render_malformed_completions(kind, expected):
    text = EXAMPLES[kind]["completion"]
    page = render_response_html(text)
    assert "Malformed output" in page and expected.replace("<", "&lt;").replace(">", "&gt;") in page
    assert "medreason-raw" in page  # the raw output is shown
    parsed = parse_completion(text)
    assert ("class='medreason-answer'" in page) == (parsed.answer is not None)


def test_malformed_reasons_and_escaping():
    parsed = parse_completion("<THINK>a</THINK><ANSWER>x</ANSWER><ANSWER>x</ANSWER>")
    assert malformed_reasons(parsed) == ["<ANSWER> appears 2 times", "</ANSWER> appears 2 times"]
    assert malformed_reasons(parse_completion(EXAMPLES["well-formed, correct"]["completion"])) == []
    page = render_response_html("<THINK>x</THINK><ANSWER><script>alert(1)</script></ANSWER>")
    assert "<script>" not in page and "&lt;script&gt;" in page
    streaming = render_response_html("<THINK>partial", done=False)
    assert "generating" in streaming and "medreason-stream" in streaming and "Malformed" not in streaming


def test_build_messages_with_passages():
    from medreason_utils.ui.retrieval import Hit, Passage

    hits = [Hit(Passage("p1", "MRSA", "PBP2a resists beta-lactams."), 0.7)]
    msgs = build_messages("Which drug fails against MRSA?", hits)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "[1] MRSA: PBP2a resists beta-lactams." in msgs[1]["content"]
    assert msgs[1]["content"].endswith("Question: Which drug fails against MRSA?")
    assert build_messages("Q?")[1]["content"] == "Q?"
    with pytest.raises(ValueError):
        build_messages("  ", hits)
    qs = demo_questions(4)
    assert len(qs) == 4 and all(len(q) <= 160 for q in qs)


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory):
    """The offline default model with a fresh LoRA adapter saved and loaded back through load_demo_model."""
    import torch

    from medreason_utils.ui.demo import load_demo_model
    from medreason_utils.models import add_lora, load_model, save_adapter

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/test_playground.py: 2 threads under load were ~15x slower here
    model, tokenizer = load_model()
    model = add_lora(model, rank=4, target_modules=["q_proj", "v_proj"])
    folder = save_adapter(model, tokenizer, tmp_path_factory.mktemp("ckpt") / "checkpoints" / "tiny")
    yield load_demo_model(folder.parent, cpu_vllm=False)  # transformers: the streaming path (vLLM's: test_vllm_cpu.py)
    torch.set_num_threads(before)


@pytest.mark.slow
def test_streaming_matches_batched_generation(tiny_lora):
    from medreason_utils.ui.demo import stream_completion
    from medreason_utils.generation import generate_completions

    model, tokenizer, adapter = tiny_lora
    # the adapter merged into transformers weights (load_for_generation's path without vLLM): it streams
    assert adapter.endswith("tiny") and type(model).__name__ == "LlamaForCausalLM" and not hasattr(model, "vllm_engine")
    msgs = build_messages("What does insulin do?")
    pieces = list(stream_completion(model, tokenizer, msgs, max_new_tokens=24, greedy=True))
    assert len(pieces) > 3, "tokens should arrive in several pieces"
    assert all(b.startswith(a) for a, b in zip(pieces, pieces[1:])), "each yield extends the previous text"
    batched = generate_completions(model, tokenizer, [msgs], max_new_tokens=24, progress=False)[0]
    assert pieces[-1].strip() == batched.strip()
    # an error in the generating thread reaches the caller instead of hanging the stream
    with pytest.raises(ValueError, match="strictly positive"):
        list(stream_completion(model, tokenizer, msgs, max_new_tokens=4, greedy=True, repetition_penalty=-1.0, timeout_s=60))


@pytest.mark.slow
def test_demo_app_callbacks(tiny_lora):
    from medreason_utils.ui.retrieval import Hit, Passage

    class _Index:
        """A stand-in index with the PassageIndex interface; the real one is tested in test_retrieval."""

        def __init__(self):
            self.queries = []

        def search(self, query, k=3):
            self.queries.append((query, k))
            return [Hit(Passage(f"p{i}", f"Passage {i}", f"text {i}"), 0.5 - i / 10) for i in range(k)]

    model, tokenizer, adapter = tiny_lora
    index = _Index()
    app = DemoApp(model, tokenizer, adapter=adapter, index=index, max_new_tokens=16, questions=demo_questions(3))
    assert "Research demonstration only" in app.widget.children[0].value

    app.greedy.value = True
    assert app.temperature.disabled and app.top_p.disabled
    app.greedy.value = False
    assert not app.temperature.disabled

    app.examples.value = app.examples.options[2][1]
    assert app.question.value == app.examples.options[2][1]

    app.greedy.value = True
    result = app.ask()
    assert result.question == app.question.value and result.completion
    assert app.output.value == result.html and DISCLAIMER.split(".")[0] in result.html
    assert ("Malformed output" in result.html) == result.malformed
    assert index.queries == [] and "medreason-passages" not in result.html

    app.use_retrieval.value = True
    app.top_k.value = 2
    result = app.ask("Which antibiotic treats MRSA?")
    assert index.queries == [("Which antibiotic treats MRSA?", 2)] and len(result.hits) == 2
    assert "Retrieved passages (top 2)" in result.html and "retrieval top-2" in result.html

    with pytest.raises(ValueError):
        app.ask("   ")
    assert "Type a question" in app.output.value and not app.ask_button.disabled
