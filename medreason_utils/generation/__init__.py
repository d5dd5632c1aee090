"""Batched generation of completions for conversational prompts.

Three backends. Two behind one function, :func:`generate_completions`:

* vLLM, through its own API (:mod:`medreason_utils.generation.vllm_engine`), when the model is a
  ``vllm.LLM`` or carries one (Unsloth ``fast_inference=True`` on a GPU: ``model.vllm_engine``);
  a LoRA adapter is passed as a ``vllm.lora.request.LoRARequest`` (``LoadedModel.lora_request()`` for
  the adapter :func:`medreason_utils.models.load_model` loaded; none is guessed);
* transformers ``generate`` (CPU or GPU), batched with left padding, prompts sorted by length
  so a batch holds prompts of similar length (less padding).

and a third, :class:`OpenAIChatBackend`, for any OpenAI-compatible server (vLLM, SGLang,
``transformers serve``): concurrent ``/chat/completions`` requests with a bound.

:class:`LocalBackend` and :class:`OpenAIChatBackend` share one method,
``generate(prompts, *, max_new_tokens, temperature, top_p, seed, progress, desc) -> list[str]``,
which is what :func:`medreason_utils.evaluation.evaluate_models` calls.
:func:`sample_completions` draws k samples of one prompt (the reward playground).

Greedy decoding by default; sampling needs a ``seed`` for reproducibility.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = [
    "render_prompts",
    "require_seed",
    "decoding_kwargs",
    "generate_completions",
    "sample_completions",
    "uses_vllm",
    "engine_name",
    "LocalBackend",
    "OpenAIChatBackend",
    "GenerationError",
]

from ..prompts import DEFAULT_CHAT_TEMPLATE_KWARGS  # noqa: E402  (re-exported: where generation used to define it)


def render_prompts(tokenizer, prompts: Sequence[Sequence[dict]], chat_template_kwargs: dict | None = None) -> list[str]:
    """Apply the tokenizer's chat template (with the generation prompt) to conversational prompts.

    Raises ``ValueError`` naming the index of a prompt that is not a non-empty list of messages.
    """
    kw = dict(DEFAULT_CHAT_TEMPLATE_KWARGS if chat_template_kwargs is None else chat_template_kwargs)
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            out.append(p)
            continue
        if not p or not all(isinstance(m, dict) and "role" in m and "content" in m for m in p):
            raise ValueError(f"prompt {i} is not a list of {{'role', 'content'}} messages: {str(p)[:80]}")
        out.append(tokenizer.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True, **kw))
    return out


def require_seed(temperature: float | None, seed: int | None) -> None:
    """Raise ``ValueError`` when sampling (``temperature > 0``) is asked without a ``seed``: a run
    must be reproducible. The one check every generation path makes."""
    if temperature and temperature > 0 and seed is None:
        raise ValueError("sampling (temperature > 0) needs a seed so the run can be reproduced")


def decoding_kwargs(temperature: float | None, top_p: float = 1.0, repetition_penalty: float | None = None) -> dict[str, Any]:
    """transformers ``generate`` keywords for greedy (``temperature`` 0 or None: ``do_sample=False``,
    the model's sampling defaults cleared) or sampling (``do_sample=True`` with ``temperature`` and
    ``top_p``), plus ``repetition_penalty`` when given. Shared by batched generation and the demo's stream."""
    out: dict[str, Any]
    if temperature and temperature > 0:
        out = dict(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        out = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    if repetition_penalty:
        out["repetition_penalty"] = repetition_penalty
    return out


def engine_name(model) -> str:
    """``"vllm"`` when generation with ``model`` goes through a vLLM engine, else ``"transformers"``: the
    ``engine`` recorded per stage in ``summary.json`` (:func:`medreason_utils.generation.cpu_engine.engine_name`)."""
    from .cpu_engine import engine_name as _name

    return _name(model)


def uses_vllm(model) -> bool:
    """True when ``model`` is a ``vllm.LLM`` or carries one (Unsloth ``fast_inference=True``: ``model.vllm_engine``)."""
    from .vllm_engine import engine_of

    return engine_of(model) is not None


def generate_completions(
    model,
    tokenizer,
    prompts: Sequence[Sequence[dict] | str],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    temperature: float = 0.0,
    top_p: float = 1.0,
    repetition_penalty: float | None = None,
    seed: int | None = None,
    lora_request: Any = None,
    chat_template_kwargs: dict | None = None,
    progress: bool = True,
    desc: str = "generate",
) -> list[str]:
    """Generate one completion per prompt; returns the completion texts in prompt order.

    Args:
        prompts: conversational prompts (lists of messages) or already-rendered strings.
        max_new_tokens: tokens generated at most per completion.
        batch_size: prompts per ``generate`` call (transformers backend; vLLM batches itself).
        temperature: 0.0 is greedy; > 0 samples and then ``seed`` is required.
        repetition_penalty: transformers/vLLM repetition penalty (None: the model's default).
        lora_request: vLLM only: a ``LoRARequest`` (:func:`medreason_utils.models.vllm_lora_request`).
            ``None``: no adapter; a peft model with a vLLM engine then raises ``ValueError``
            (:func:`medreason_utils.generation.vllm_engine.default_lora_request`): pass
            ``LoadedModel.lora_request()``. The transformers path leaves ``tokenizer`` unchanged (it pads
            on the left itself, whatever the tokenizer's ``padding_side`` and even without a pad token).
        progress: show a tqdm bar over batches.

    Returns:
        ``list[str]`` of length ``len(prompts)``, special tokens removed.

    Raises:
        ValueError: sampling without a seed, a malformed prompt, ``batch_size < 1``, or a model whose
            vLLM engine cannot see its LoRA (see :func:`~medreason_utils.generation.vllm_engine.default_lora_request`).
        AdapterNotAttachableError, FileNotFoundError: the adapter cannot be attached to the vLLM engine.
    """
    require_seed(temperature, seed)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts = render_prompts(tokenizer, prompts, chat_template_kwargs)
    if not texts:
        return []

    from .vllm_engine import default_lora_request, engine_of, vllm_generate

    engine = engine_of(model)
    if engine is not None:
        if lora_request is None:
            lora_request = default_lora_request(model)
        outs = vllm_generate(
            engine, tokenizer, texts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
            repetition_penalty=repetition_penalty, lora_request=lora_request, progress=progress,
        )
        return [o[0] for o in outs]

    import torch
    from tqdm.auto import tqdm

    if seed is not None:
        torch.manual_seed(seed)
    # the caller's tokenizer is left as it is (no padding_side or pad_token set on it): the prompts are
    # tokenized once, unpadded, and each batch is padded on the left here, the pad id being the tokenizer's
    # pad token or else its EOS token (masked out by the attention mask either way)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad a batch with")
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    results: list[str | None] = [None] * len(texts)
    gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": pad_id,
                                   **decoding_kwargs(temperature, top_p, repetition_penalty)}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    try:
        for batch in tqdm(batches, desc=desc, disable=not progress):
            enc = _left_padded([ids[i] for i in batch], pad_id, device)
            with torch.inference_mode():
                out = model.generate(**enc, **gen_kwargs)
            new = out[:, enc["input_ids"].shape[1] :]
            for i, row in zip(batch, new):
                results[i] = tokenizer.decode(row, skip_special_tokens=True)
    finally:
        if was_training:
            model.train()
    return [r or "" for r in results]


def _left_padded(rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> dict[str, Any]:
    """``{"input_ids", "attention_mask"}`` (``[len(rows), longest]`` long tensors on ``device``) with each row
    padded on the left with ``pad_id``: what a tokenizer with ``padding_side="left"`` returns, without
    changing any tokenizer (and without ``token_type_ids``, which causal LMs' ``generate`` rejects)."""
    import torch

    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        if r:
            input_ids[j, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
            mask[j, width - len(r):] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def sample_completions(
    model,
    tokenizer,
    prompt: Sequence[dict] | str,
    n: int,
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.8,
    top_p: float = 1.0,
    seed: int = 0,
    lora_request: Any = None,
    chat_template_kwargs: dict | None = None,
) -> list[str]:
    """``n`` sampled completions of one prompt (a GRPO-style group), reproducible from ``seed``.

    With vLLM: one request with ``SamplingParams(n=n, seed=seed)``, so the ``n`` samples differ
    (vLLM seeds sample ``j`` with ``seed + j``); ``n`` copies of the prompt under one seeded
    ``SamplingParams`` would all draw the same tokens. ``lora_request=None`` takes the model's own
    adapter as in :func:`generate_completions`. With transformers: the prompt repeated ``n`` times in
    one batch after ``torch.manual_seed(seed)`` (each row draws its own tokens).

    Returns ``n`` completion texts. Raises ``ValueError`` for ``n < 1`` or ``temperature <= 0``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not (temperature and temperature > 0):
        raise ValueError(f"sampling {n} completions needs temperature > 0, got {temperature}")
    from .vllm_engine import default_lora_request, engine_of, vllm_generate

    engine = engine_of(model)
    if engine is not None:
        if lora_request is None:
            lora_request = default_lora_request(model)
        return vllm_generate(
            engine, tokenizer, [prompt], max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
            n=n, lora_request=lora_request, chat_template_kwargs=chat_template_kwargs,
        )[0]
    return generate_completions(
        model, tokenizer, [prompt] * n, max_new_tokens=max_new_tokens, batch_size=n, temperature=temperature, top_p=top_p,
        seed=seed, chat_template_kwargs=chat_template_kwargs, progress=False,
    )


class GenerationError(RuntimeError):
    """A backend could not produce a completion; the message names the item index and the URL or model."""


class LocalBackend:
    """A model in this process: transformers (+ peft) batched with left padding, or a vLLM engine
    (a ``vllm.LLM``, or Unsloth's ``model.vllm_engine``; then ``lora_request`` selects the adapter).

    Args:
        model, tokenizer: from :func:`medreason_utils.models.load_model`, or a ``vllm.LLM`` and its tokenizer.
        batch_size: prompts per ``generate`` call (transformers; vLLM batches itself).
        lora_request: vLLM only: :func:`medreason_utils.models.vllm_lora_request` of an adapter
            (``None``: no adapter, see :func:`generate_completions`).
        repetition_penalty, chat_template_kwargs: passed to :func:`generate_completions`.
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 8, lora_request: Any = None,
                 repetition_penalty: float | None = None, chat_template_kwargs: dict | None = None, name: str = "local"):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.lora_request = lora_request
        self.repetition_penalty = repetition_penalty
        self.chat_template_kwargs = chat_template_kwargs
        self.name = name

    def generate(self, prompts: Sequence[Sequence[dict] | str], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None, progress: bool = True, desc: str = "generate") -> list[str]:
        """Completions for ``prompts`` in order (see :func:`generate_completions`)."""
        return generate_completions(
            self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=self.batch_size,
            temperature=temperature, top_p=top_p, repetition_penalty=self.repetition_penalty, seed=seed,
            lora_request=self.lora_request, chat_template_kwargs=self.chat_template_kwargs, progress=progress, desc=desc,
        )


class OpenAIChatBackend:
    """Any OpenAI-compatible chat-completions server (vLLM, SGLang, ``transformers serve``).

    Requests go through the ``openai`` client
    (:func:`medreason_utils.verifiers.http.openai_client`) and run on ``concurrency`` threads at
    most (a bound the server sees as in-flight requests); each has a ``timeout`` in seconds and is
    retried ``retries`` times by the client (connection errors, timeouts, 408/409/429/5xx, with
    exponential backoff from 0.5 s). The API key comes from the environment variable
    ``api_key_env`` (default ``OPENAI_API_KEY``) or Colab secrets; without one the placeholder
    ``EMPTY`` is sent (local servers ignore it); it is never printed.

    Args:
        base_url: e.g. ``"http://127.0.0.1:8000/v1"`` (the ``/chat/completions`` path is appended).
        model: the model name the server expects (vLLM: the served name; a LoRA served with
            ``--lora-modules name=path`` is selected by its name).
        extra_body: more JSON fields for every request (e.g. ``{"chat_template_kwargs": {...}}``).
    """

    def __init__(self, base_url: str, model: str, *, concurrency: int = 8, timeout: float = 300.0, retries: int = 2,
                 api_key_env: str = "OPENAI_API_KEY", extra_body: dict | None = None, name: str | None = None):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.concurrency = concurrency
        self.batch_size = concurrency * 4  # prompts per chunk handed to generate() by evaluate_models
        self.timeout = timeout
        self.retries = retries
        self.api_key_env = api_key_env
        self.extra_body = dict(extra_body or {})
        self.name = name or model

    def _one(self, client, index: int, messages: list[dict], body: dict) -> str:
        from ..verifiers.http import openai_error

        try:
            reply = client.chat.completions.create(messages=messages, **body)
        except Exception as exc:
            err = openai_error(exc, self.url, self.timeout)
            if err is None:
                raise
            raise GenerationError(f"item {index}: {self.url} (model {self.model!r}) failed: {err}") from exc
        try:
            return reply.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError) as exc:
            raise GenerationError(f"item {index}: {self.url} answered without choices[0].message.content: {str(reply)[:200]!r}") from exc

    def generate(self, prompts: Sequence[Sequence[dict] | str], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None, progress: bool = True, desc: str = "generate") -> list[str]:
        """Completions for ``prompts`` in order. Strings are sent as one user message.

        Raises ``ValueError`` for sampling without a seed, :class:`GenerationError` naming the
        item index and URL when a request fails after its retries.
        """
        from concurrent.futures import ThreadPoolExecutor

        from tqdm.auto import tqdm

        from ..verifiers.http import openai_client

        require_seed(temperature, seed)
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_new_tokens, "temperature": float(temperature or 0.0),
                                "stream": False}
        if temperature and temperature > 0:
            body["top_p"] = top_p
        if seed is not None:
            body["seed"] = seed
        if self.extra_body:
            body["extra_body"] = dict(self.extra_body)
        messages = [[{"role": "user", "content": p}] if isinstance(p, str) else list(p) for p in prompts]
        client = openai_client(self.base_url, api_key_env=self.api_key_env, timeout_s=self.timeout, retries=self.retries,
                               require_key=False)
        with client, ThreadPoolExecutor(max_workers=self.concurrency) as pool, \
                tqdm(total=len(messages), desc=desc, disable=not progress) as bar:
            futures = [pool.submit(self._one, client, i, m, body) for i, m in enumerate(messages)]
            out = []
            try:
                for f in futures:
                    out.append(f.result())
                    bar.update(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return out
