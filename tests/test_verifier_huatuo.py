"""The HuatuoGPT-o1 classifier path on CPU with a tiny two-label classifier (SmolLM2 config, 2 layers, random head).

Checks the wiring, not the verdicts: template, eos, no added special tokens, truncation, batching
(sorted by length, same result as one at a time, input order kept), the index of the positive
label and the pooled token, and that the served client sends the same inputs as the local one.
"""

from __future__ import annotations

import pytest

from medreason_utils.verifiers import (
    HUATUO_VERIFIER_TEMPLATE,
    HuatuoLocalVerifier,
    HuatuoServedVerifier,
    build_verifier_input_ids,
    format_verifier_input,
    make_verifier,
)
from verifier_helpers import ClassifyServer, tiny_classifier_dir

pytestmark = pytest.mark.slow

PREDS = [
    "Aspirin",
    "The answer is low-dose aspirin given daily after the infarction, together with a statin.",
    "B",
    "Metformin is the first-line drug for type 2 diabetes in most adults without contraindications.",
    "Vitamin B12 deficiency",
    "I do not know the answer.",
]
REFS = ["Aspirin", "aspirin", "B. Atropine", "Metformin", "Pernicious anaemia", "Tetanus"]


@pytest.fixture(scope="module")
def tiny():
    return HuatuoLocalVerifier(str(tiny_classifier_dir()), batch_size=4, max_length=512, device="cpu")


def test_input_is_the_huatuo_template_with_eos_and_no_bos(tiny):
    tok = tiny.tokenizer
    ids, truncated = build_verifier_input_ids(tok, PREDS[:2], REFS[:2], max_length=512)
    assert truncated == [False, False]
    for i in range(2):
        assert tok.decode(ids[i]) == format_verifier_input(PREDS[i], REFS[i], tok.eos_token)
        assert ids[i][-1] == tok.eos_token_id and ids[i][0] != tok.bos_token_id
    text = tok.decode(ids[0])
    assert text.startswith("<Model Response>\nAspirin\n</Model Response>\n\n<Reference Answer>\nAspirin\n")
    assert text.endswith('output "True" . If it is incorrect or fails to select the correct option (if options are provided), output "False" . <|im_end|>')


def test_truncation_shortens_the_response_and_keeps_instruction_and_eos(tiny):
    tok = tiny.tokenizer
    long_pred = "The patient has a long history. " * 400  # ~2800 tokens
    ids, truncated = build_verifier_input_ids(tok, [long_pred, "short"], ["Aspirin", "Aspirin"], max_length=128)
    assert truncated == [True, False]
    assert 100 < len(ids[0]) <= 128 and ids[0][-1] == tok.eos_token_id
    text = tok.decode(ids[0])
    assert text.startswith("<Model Response>\nThe patient has a long history.")
    tail = HUATUO_VERIFIER_TEMPLATE.split("{reference}")[1].format(eos=tok.eos_token)
    assert text.endswith("Aspirin" + tail)
    p = tiny.score([long_pred], ["Aspirin"])
    assert 0.0 <= p[0] <= 1.0 and tiny.last_truncated == 1


def test_probability_is_softmax_of_label_1_at_the_eos_token(tiny):
    """Recompute p by hand: hidden state of the last token (the eos), score head, softmax, column 1."""
    import torch

    model, tok = tiny.model, tiny.tokenizer
    ids, _ = build_verifier_input_ids(tok, PREDS[:1], REFS[:1], max_length=512)
    with torch.no_grad():
        hidden = model.model(torch.tensor(ids)).last_hidden_state[0, -1]
        logits = model.score(hidden)
    expected = torch.softmax(logits, -1)[1].item()
    assert tiny.score(PREDS[:1], REFS[:1])[0] == pytest.approx(expected, abs=1e-5)
    assert abs(expected - 0.5) > 1e-3  # the seeded random head is not symmetric
    # swapping the two rows of the head turns p into 1 - p: the verifier reads label 1
    with torch.no_grad():
        model.score.weight.copy_(model.score.weight.flip(0))
    try:
        assert tiny.score(PREDS[:1], REFS[:1])[0] == pytest.approx(1 - expected, abs=1e-5)
    finally:
        with torch.no_grad():
            model.score.weight.copy_(model.score.weight.flip(0))


def test_batched_equals_one_at_a_time_in_input_order(tiny):
    batched = tiny.score(PREDS, REFS)
    single = [tiny.score([p], [r])[0] for p, r in zip(PREDS, REFS)]
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in batched)
    assert batched == pytest.approx(single, abs=1e-4)
    assert len(set(round(p, 6) for p in batched)) > 1  # items are scored individually


def test_make_verifier_builds_local_and_rejects_bad_specs(tiny):
    v = make_verifier({"kind": "huatuo_local", "model": str(tiny_classifier_dir()), "batch_size": 2, "max_length": 256, "device": "cpu"})
    assert isinstance(v, HuatuoLocalVerifier) and v.batch_size == 2
    assert v.score(PREDS[:2], REFS[:2]) == pytest.approx(tiny.score(PREDS[:2], REFS[:2]), abs=1e-4)
    with pytest.raises(ValueError, match="unknown verifier kind 'huatuo'"):
        make_verifier({"kind": "huatuo"})
    with pytest.raises(TypeError, match="huatuo_local"):
        make_verifier({"kind": "huatuo_local", "model": str(tiny_classifier_dir()), "batchsize": 2})
    with pytest.raises(ValueError, match="4-bit|load_in_4bit"):
        HuatuoLocalVerifier(str(tiny_classifier_dir()), device="cpu", load_in_4bit=True)


def test_served_classifier_matches_local(tiny):
    """A real HTTP server running the tiny classifier behind vLLM's /classify schema gives the local scores."""
    import torch

    def scorer(text: str) -> float:
        ids = tiny.tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            return torch.softmax(tiny.model(**ids).logits, -1)[0, 1].item()

    with ClassifyServer(scorer=scorer) as server:
        v = HuatuoServedVerifier(server.url, tokenizer=str(tiny_classifier_dir()), max_length=512, batch_size=4, timeout_s=30)
        served = v.score(PREDS, REFS)
    assert served == pytest.approx(tiny.score(PREDS, REFS), abs=1e-4)
    sent = sorted(t for r in server.requests for t in r["input"])
    assert sent == sorted(format_verifier_input(p, r, "<|im_end|>") for p, r in zip(PREDS, REFS))
