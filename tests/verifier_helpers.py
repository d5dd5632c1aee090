"""Test helpers for the verifiers: real loopback HTTP servers and a tiny two-label classifier.

* :class:`ClassifyServer`: a real HTTP server (stdlib, 127.0.0.1, a free port, in a thread)
  answering vLLM's ``/classify`` schema. Its ``mode`` makes it answer 500, malformed JSON,
  sleep past the client's timeout, refuse long inputs with 400, or stop after N requests.
* :class:`ChatServer`: a real HTTP server answering the OpenAI chat-completions schema, with or
  without ``logprobs``.
* :func:`tiny_classifier_dir`: a two-label ``LlamaForSequenceClassification`` built from the
  converted default model (SmolLM2-135M-Instruct) with 2 layers and a random (seeded) head, saved
  with the real SmolLM2 tokenizer; a distinct pad token (``<|endoftext|>``) so the pooled token
  is the eos the template ends with.
* :func:`transformers_serve`: starts ``transformers serve`` on the default model, waits for it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread; ``stop()`` closes the port."""

    def __init__(self, handler_cls):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.stopped = False

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass

    def _read(self) -> dict:
        n = int(self.headers.get("Content-Length", 0))
        payload = json.loads(self.rfile.read(n) or b"{}")
        owner = self.server.owner
        with owner.lock:
            owner.requests.append(payload)
            owner.headers.append(dict(self.headers))
        return payload


def keyword_scorer(text: str) -> float:
    """A stand-in for the classifier on the server side: p = 0.9 when the model response says "correct"."""
    response = text.split("</Model Response>")[0]
    return 0.9 if "correct" in response and "incorrect" not in response else 0.1


class ClassifyServer(_Server):
    """vLLM ``/classify`` (``{"input": [str], ...}`` -> ``{"data": [{"index", "probs", ...}]}``).

    ``mode``: ``"ok"``; ``"500"``; ``"bad_json"``; ``"slow"`` (sleeps ``delay_s`` then answers);
    ``"reject_long"`` (400 when any input is longer than ``max_chars``). ``fail_first`` requests
    answer 500 before the mode applies; after ``stop_after`` answered requests the server stops.
    ``scorer(text) -> p`` gives the positive-label probability.
    """

    def __init__(self, mode: str = "ok", *, scorer: Callable[[str], float] = keyword_scorer, delay_s: float = 1.0,
                 fail_first: int = 0, stop_after: int | None = None, max_chars: int = 10_000):
        self.mode, self.scorer, self.delay_s = mode, scorer, delay_s
        self.fail_first, self.stop_after, self.max_chars = fail_first, stop_after, max_chars
        self.answered = 0
        outer = self

        class Handler(_Handler):
            def do_POST(self):
                payload = self._read()
                if self.path != "/classify":
                    return self._send(404, b'{"error": "not found"}')
                with outer.lock:
                    n_req = len(outer.requests)
                if n_req <= outer.fail_first or outer.mode == "500":
                    return self._send(500, b'{"error": "internal"}')
                if outer.mode == "bad_json":
                    return self._send(200, b'{"data": [{"index": 0, "probs": [0.1, ')
                if outer.mode == "slow":
                    time.sleep(outer.delay_s)
                texts = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
                if outer.mode == "reject_long" and any(len(t) > outer.max_chars for t in texts):
                    return self._send(400, b'{"error": "input too long"}')
                data = []
                for k, t in enumerate(texts):
                    p = float(outer.scorer(t))
                    data.append({"index": k, "label": "True" if p > 0.5 else "False", "probs": [1 - p, p], "num_classes": 2})
                body = {"id": "classify-test", "object": "list", "created": int(time.time()), "model": payload.get("model", "m"),
                        "data": data, "usage": {"prompt_tokens": 0, "total_tokens": 0}}
                with outer.lock:
                    outer.answered += 1
                    stop = outer.stop_after is not None and outer.answered >= outer.stop_after
                if stop:  # close the port before answering, so the client's next request is refused
                    outer.stop()
                self._send(200, json.dumps(body).encode())

        super().__init__(Handler)


class ChatServer(_Server):
    """OpenAI ``/v1/chat/completions``. ``verdict(user_text) -> p_true`` decides the reply.

    ``mode``: ``"logprobs"`` (returns ``logprobs.content`` with ``top_logprobs`` for " True"/" False"
    when asked), ``"text"`` (content only, ignores logprobs), ``"reject_logprobs"`` (400 when the
    request asks for logprobs), ``"reject_long_logprobs"`` (log-probs as ``"logprobs"``, but 400 when a
    request asking for them has a user message over ``max_chars``: vLLM refusing an over-long item's
    ``top_logprobs`` prompt), ``"500"``, ``"bad_json"``, ``"slow"`` (sleeps ``delay_s`` first).
    """

    def __init__(self, mode: str = "logprobs", *, verdict: Callable[[str], float] = keyword_scorer, delay_s: float = 1.0,
                 max_chars: int = 10_000):
        self.mode, self.verdict, self.delay_s, self.max_chars = mode, verdict, delay_s, max_chars
        outer = self

        class Handler(_Handler):
            def do_POST(self):
                payload = self._read()
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": "not found"}')
                if outer.mode == "500":
                    return self._send(500, b"oops")
                if outer.mode == "bad_json":
                    return self._send(200, b'{"choices": [{"message": ')
                if outer.mode == "slow":
                    time.sleep(outer.delay_s)
                if outer.mode == "reject_logprobs" and payload.get("logprobs"):
                    return self._send(400, b'{"error": "logprobs not supported"}')
                if (outer.mode == "reject_long_logprobs" and payload.get("logprobs")
                        and len(payload["messages"][-1]["content"]) > outer.max_chars):
                    return self._send(400, b'{"error": "prompt too long for top_logprobs"}')
                p = float(outer.verdict(payload["messages"][-1]["content"]))
                word = "True" if p >= 0.5 else "False"
                choice = {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": f"{word}."}}
                if outer.mode in ("logprobs", "reject_long_logprobs") and payload.get("logprobs"):
                    top = [{"token": "True", "logprob": math.log(p)}, {"token": "False", "logprob": math.log(1 - p)},
                           {"token": "Maybe", "logprob": -20.0}]
                    choice["logprobs"] = {"content": [{"token": word, "logprob": math.log(max(p, 1 - p)), "top_logprobs": top}]}
                body = {"id": "chat-test", "object": "chat.completion", "created": int(time.time()),
                        "model": payload.get("model"), "choices": [choice]}
                self._send(200, json.dumps(body).encode())

        super().__init__(Handler)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@functools.lru_cache(maxsize=1)
def tiny_classifier_dir() -> Path:
    """Folder with a 2-layer two-label LlamaForSequenceClassification from SmolLM2's config and weights,
    random seeded head, the real SmolLM2 tokenizer, and pad token ``<|endoftext|>`` (id 0). Built once per process."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from medreason_utils.models import default_model_dir

    src = default_model_dir()
    out = Path(tempfile.mkdtemp(prefix="medreason-tiny-cls-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)  # ~140 MB
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        src, num_labels=2, num_hidden_layers=2, dtype=torch.float32, pad_token_id=0
    )
    with torch.no_grad():
        model.score.weight.normal_(0.0, 0.2)
    tok = AutoTokenizer.from_pretrained(src)
    tok.pad_token = "<|endoftext|>"
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@contextlib.contextmanager
def transformers_serve(model_dir: Path, *, ready_timeout_s: float = 120.0):
    """Run ``transformers serve MODEL --host 127.0.0.1 --port P --device cpu``; yield its base URL (``.../v1``)."""
    import httpx

    exe = Path(sys.executable).with_name("transformers")
    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"transformers serve exited with {proc.returncode}: {log.read()[-2000:]!r}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve not ready on port {port} after {ready_timeout_s} s")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
