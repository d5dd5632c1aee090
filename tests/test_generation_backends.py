"""Generation backends: the OpenAI-compatible client against real loopback servers.

* a small real HTTP server (stdlib ``http.server``) speaking the chat-completions schema, which
  records how many requests are in flight, to check the concurrency bound, ordering and retries;
* ``transformers serve`` with the default CPU model (slow), checked against local greedy generation.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from medreason_utils.generation import GenerationError, LocalBackend, OpenAIChatBackend
from conftest import needs_json_transformers_serve


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):  # noqa: N802 - http.server API
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            srv.requests.append({"body": body, "auth": self.headers.get("Authorization")})
            fail = srv.fail_first > 0
            srv.fail_first -= 1 if fail else 0
        try:
            time.sleep(0.05)
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": f"no route {self.path}"})
            elif fail:
                self._send(503, {"error": "overloaded"})
            else:
                text = body["messages"][-1]["content"]
                self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": f"echo:{text}"}}]})
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _send(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def chat_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.lock, srv.in_flight, srv.max_in_flight, srv.requests, srv.fail_first = threading.Lock(), 0, 0, [], 0
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv, f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


def test_openai_backend_order_bound_and_greedy(chat_server, monkeypatch):
    srv, url = chat_server
    monkeypatch.setenv("MEDREASON_TEST_KEY", "sk-test-123")
    b = OpenAIChatBackend(url, "served-model", concurrency=3, timeout=10, api_key_env="MEDREASON_TEST_KEY")
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(12)] + ["plain string"]
    out = b.generate(prompts, max_new_tokens=7, progress=False)
    assert out == [f"echo:q{i}" for i in range(12)] + ["echo:plain string"]
    assert 1 < srv.max_in_flight <= 3
    body = srv.requests[0]["body"]
    assert body["max_tokens"] == 7 and body["temperature"] == 0.0 and body["model"] == "served-model" and "top_p" not in body
    assert srv.requests[0]["auth"] == "Bearer sk-test-123"
    with pytest.raises(ValueError, match="seed"):
        b.generate(prompts[:1], temperature=0.8, progress=False)
    b.generate(prompts[:1], temperature=0.8, seed=5, progress=False)
    assert srv.requests[-1]["body"]["seed"] == 5 and srv.requests[-1]["body"]["top_p"] == 1.0


def test_openai_backend_retries_then_names_the_failure(chat_server):
    srv, url = chat_server
    srv.fail_first = 1
    b = OpenAIChatBackend(url, "m", concurrency=1, retries=1, timeout=10)
    assert b.generate(["hello"], progress=False) == ["echo:hello"]
    srv.fail_first = 5
    b0 = OpenAIChatBackend(url, "m", concurrency=1, retries=0, timeout=10)
    with pytest.raises(GenerationError, match=r"item 0: http://127\.0\.0\.1:\d+/v1/chat/completions .*HTTP 503"):
        b0.generate(["hello"], progress=False)
    wrong = OpenAIChatBackend(url.replace("/v1", "/v2"), "m", retries=0, timeout=10)
    with pytest.raises(GenerationError, match="HTTP 404"):
        wrong.generate(["x"], progress=False)


def test_openai_backend_unreachable_server_is_named():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = OpenAIChatBackend(f"http://127.0.0.1:{port}/v1", "m", retries=0, timeout=2)
    with pytest.raises(GenerationError, match=f"127.0.0.1:{port}"):
        b.generate(["x"], progress=False)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@needs_json_transformers_serve
def test_transformers_serve_matches_local_greedy(tmp_path):
    """``transformers serve`` on loopback with the default CPU model: greedy completions equal
    the local transformers backend's, and evaluate_models runs through it."""
    import httpx

    from medreason_utils.data import load_rows
    from medreason_utils.evaluation.benchmarks import to_mcq_items
    from medreason_utils.evaluation import evaluate_models
    from medreason_utils.models import default_model_dir, load_model

    model_dir = str(default_model_dir())
    exe = Path(sys.executable).with_name("transformers")
    if not exe.exists():
        pytest.skip("the transformers CLI (transformers[serving]) is not installed")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([str(exe), "serve", model_dir, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"transformers serve did not start: {proc.stderr.read().decode()[-500:] if proc.poll() is not None else 'timeout'}")
            time.sleep(1)
        ds, _ = to_mcq_items(load_rows("sample:medmcqa", limit=2), "medmcqa")
        prompts = [r["prompt"] for r in ds]
        remote = OpenAIChatBackend(f"http://127.0.0.1:{port}/v1", model_dir, concurrency=2, timeout=120)
        got = remote.generate(prompts, max_new_tokens=8, progress=False)
        model, tok = load_model()
        local = LocalBackend(model, tok, batch_size=1).generate(prompts, max_new_tokens=8, progress=False)
        assert [g.strip() for g in got] == [x.strip() for x in local]
        table = evaluate_models({"served": remote}, {"medmcqa": list(ds)}, tmp_path, max_new_tokens=8, progress=False)
        assert table[0]["n"] == 2
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
