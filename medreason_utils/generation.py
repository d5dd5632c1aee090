"""Batched generation of completions for conversational prompts.

Two backends behind one function:

* vLLM through Unsloth (``model.fast_generate``) when the model was loaded with
  ``fast_inference=True`` on a GPU; a LoRA is passed as a ``lora_request``;
* transformers ``generate`` (CPU or GPU), batched with left padding, prompts sorted by length
  so a batch holds prompts of similar length (less padding).

Greedy decoding by default; sampling needs a ``seed`` for reproducibility.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["render_prompts", "generate_completions", "uses_vllm"]

#: Passed to chat templates: Qwen3 templates otherwise open their own ``<think>`` block.
DEFAULT_CHAT_TEMPLATE_KWARGS = {"enable_thinking": False}


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


def uses_vllm(model) -> bool:
    """True when ``model`` carries an Unsloth vLLM engine (loaded with ``fast_inference=True``)."""
    return callable(getattr(model, "fast_generate", None)) and getattr(model, "vllm_engine", None) is not None


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
        lora_request: vLLM only, e.g. ``model.load_lora(path)``.
        progress: show a tqdm bar over batches.

    Returns:
        ``list[str]`` of length ``len(prompts)``, special tokens removed.

    Raises:
        ValueError: sampling without a seed, a malformed prompt, or ``batch_size < 1``.
    """
    if temperature and temperature > 0 and seed is None:
        raise ValueError("sampling (temperature > 0) needs a seed so the run can be reproduced")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts = render_prompts(tokenizer, prompts, chat_template_kwargs)
    if not texts:
        return []

    if uses_vllm(model):
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=float(temperature or 0.0),
            top_p=top_p,
            max_tokens=max_new_tokens,
            seed=seed,
            repetition_penalty=repetition_penalty or 1.0,
        )
        outputs = model.fast_generate(texts, sampling_params=params, lora_request=lora_request, use_tqdm=progress)
        return [o.outputs[0].text for o in outputs]

    import torch
    from tqdm.auto import tqdm

    if seed is not None:
        torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    results: list[str | None] = [None] * len(texts)
    gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id}
    if temperature and temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if repetition_penalty:
        gen_kwargs["repetition_penalty"] = repetition_penalty
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    try:
        for batch in tqdm(batches, desc=desc, disable=not progress):
            enc = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.inference_mode():
                out = model.generate(**enc, **gen_kwargs)
            new = out[:, enc["input_ids"].shape[1] :]
            for i, ids in zip(batch, new):
                results[i] = tokenizer.decode(ids, skip_special_tokens=True)
    finally:
        if was_training:
            model.train()
    return [r or "" for r in results]
