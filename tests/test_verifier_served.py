"""The served HuatuoGPT-o1 verifier against real loopback HTTP servers: schema, retries, and faults."""

from __future__ import annotations

import time

import pytest

from medreason_utils.verifiers import (
    HuatuoServedVerifier,
    VerifierUnavailableError,
    format_verifier_input,
    make_verifier,
)
from verifier_helpers import ClassifyServer, free_port

EOS = "<|im_end|>"
PREDS = ["the correct answer", "wrong", "correct: aspirin", "no idea", "correct", "nope"]
REFS = ["aspirin"] * len(PREDS)
EXPECTED = [0.9, 0.1, 0.9, 0.1, 0.9, 0.1]


def served(url: str, **kw) -> HuatuoServedVerifier:
    settings = dict(tokenizer=None, eos_token=EOS, batch_size=2, timeout_s=2.0, retries=1, backoff_s=0.01)
    settings.update(kw)
    return HuatuoServedVerifier(url, **settings)


def test_scores_in_input_order_with_vllm_schema():
    with ClassifyServer() as server:
        v = make_verifier({"kind": "huatuo_served", "url": server.url, "model": "verifier", "tokenizer": None,
                           "eos_token": EOS, "batch_size": 4})
        assert v.score(PREDS, REFS) == pytest.approx(EXPECTED)
    assert [len(r["input"]) for r in server.requests] == [4, 2]  # batches of batch_size
    sent = [t for r in server.requests for t in r["input"]]
    assert sorted(sent) == sorted(format_verifier_input(p, r, EOS) for p, r in zip(PREDS, REFS))
    assert all(r["add_special_tokens"] is False and r["model"] == "verifier" for r in server.requests)
    assert all(t.endswith('output "False" . ' + EOS) for t in sent)


def test_transient_500_is_retried():
    with ClassifyServer(fail_first=1) as server:
        v = served(server.url, batch_size=len(PREDS))
        assert v.score(PREDS, REFS) == pytest.approx(EXPECTED)
    assert len(server.requests) == 2 and v.last_errors == []


@pytest.mark.parametrize("mode", ["500", "bad_json"])
def test_failing_server_gives_none_after_bounded_retries(mode):
    with ClassifyServer(mode) as server:
        v = served(server.url, retries=2)
        out = v.score(PREDS, REFS)
    assert out == [None] * len(PREDS)
    assert len(server.requests) == 3 * 3  # 3 batches x (1 + 2 retries)
    assert server.url in v.last_errors[-1]
    assert ("HTTP 500" if mode == "500" else "malformed JSON") in v.last_errors[-1]


def test_slower_than_timeout_gives_none_within_bounded_time():
    with ClassifyServer("slow", delay_s=1.0) as server:
        v = served(server.url, timeout_s=0.2, retries=1, batch_size=len(PREDS))
        t0 = time.monotonic()
        out = v.score(PREDS, REFS)
        elapsed = time.monotonic() - t0
    assert out == [None] * len(PREDS)
    assert elapsed < 2.0  # 2 tries x 0.2 s timeout + backoff, not the server's 1 s x 2
    assert "timed out" in v.last_errors[0]


def test_server_stopped_mid_run_keeps_scored_items():
    with ClassifyServer(stop_after=1) as server:
        v = served(server.url, batch_size=2)
        out = v.score(PREDS, REFS)
    scored = [p for p in out if p is not None]
    assert len(scored) == 2 and out.count(None) == 4  # first batch scored, then connection refused
    assert any("cannot reach" in e and server.url in e for e in v.last_errors)
    assert len(server.requests) == 1  # the rest of the call is skipped once the server is gone


def test_unreachable_server_raises_naming_url():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    v = served(url, retries=1)
    with pytest.raises(VerifierUnavailableError, match=f"{url}/classify"):
        v.score(PREDS, REFS)


def test_refused_item_is_isolated_by_splitting_the_batch():
    preds = ["correct"] * 3 + ["x" * 5000] + ["wrong"] * 2
    with ClassifyServer("reject_long", max_chars=1000) as server:
        v = served(server.url, batch_size=6)
        out = v.score(preds, ["a"] * 6)
    assert out[3] is None
    assert out[:3] == pytest.approx([0.9] * 3) and out[4:] == pytest.approx([0.1] * 2)
    assert "HTTP 400" in v.last_errors[-1]


def test_api_key_is_sent_and_never_shown(monkeypatch):
    monkeypatch.setenv("MEDREASON_TEST_KEY", "sk-test-secret-123")
    with ClassifyServer() as server:
        v = served(server.url, api_key_env="MEDREASON_TEST_KEY")
        v.score(PREDS[:1], REFS[:1])
    assert server.headers[0]["Authorization"] == "Bearer sk-test-secret-123"
    assert "sk-test" not in repr(v)
    monkeypatch.delenv("MEDREASON_TEST_KEY")
    with pytest.raises(ValueError, match="MEDREASON_TEST_KEY"):
        served("http://127.0.0.1:1", api_key_env="MEDREASON_TEST_KEY")
