"""A reward from likelihood: how well a completion's reasoning predicts the reference answer.

What is scored, and why this one of the two choices. The reward is the likelihood of the **reference answer
given the completion's reasoning** (the question, then the completion's THINK block, then the opening ANSWER
tag, then the reference answer's tokens), under a reference model. The other choice, the likelihood of the
completion's own answer, rewards fluent and confident text whether or not it is right, and a policy can raise
it by writing short, generic answers; conditioning the *reference* answer on the *reasoning* rewards reasoning
that leads to the right answer, needs no verifier, and works for the free-text answers of medical-o1 where
rule matching is brittle. This is the reward of VeriFree (Zhou et al. 2025, "Reinforcing General Reasoning
without Verifiers", arXiv:2505.21493: pi(a* | q, c)) and RLPR (Yu et al. 2025, "RLPR: Extrapolating RLVR to
General Domains without Verifiers", arXiv:2506.18254), which found the mean per-token probability steadier than
the sequence probability; the GRPO starter project's "quality by perplexity" is the same quantity read as
1 / perplexity. As VeriFree recommends, the prefix and the reference are tokenised separately and their ids
concatenated, so the reference's tokens do not merge with the tag before them.

Normalisation, range [0, ``value``]: ``"inverse_perplexity"`` (default) is exp(mean log p) over the reference's
tokens, i.e. 1 / perplexity, the geometric mean of the token probabilities; ``"mean_prob"`` is RLPR's arithmetic
mean of the token probabilities. Both lie in [0, 1] and are multiplied by ``value``. A completion with no
reasoning (no complete THINK block) gets 0.0, the bottom of the range.

``None`` for an item it cannot score: no reference answer for the row (missing, blank or not text), no prompt
or question to condition on, a sequence longer than ``max_length`` tokens, or a model error (every item of the
failing batch, the error kept in ``fn.last_error``). The function never raises.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Sequence

from ..parsing import parse_completion
from ..prompts import DEFAULT_TAGS, Tags, question_prompt

__all__ = ["NORMALISATIONS", "make_perplexity_reward"]

logger = logging.getLogger(__name__)

#: Ways to turn the reference answer's token log-probabilities into a number in [0, 1].
NORMALISATIONS = ("inverse_perplexity", "mean_prob")


def make_perplexity_reward(
    model: Any,
    tokenizer: Any,
    *,
    value: float = 1.0,
    normalisation: str = "inverse_perplexity",
    answer_key: str = "answer",
    question_key: str = "question",
    batch_size: int = 4,
    max_length: int = 2048,
    use_base_model: bool = True,
    prefilled_think: bool = False,
    tags: Tags = DEFAULT_TAGS,
    chat_template_kwargs: dict | None = None,
    name: str = "perplexity_reward",
):
    """Build the reward (see the module docstring for what it scores and why).

    Args:
        model, tokenizer: the reference model, a causal LM (e.g. from :func:`medreason_utils.models.load_model`).
            With ``use_base_model`` and a peft model, its adapter is disabled while scoring, so the policy being
            trained is scored by its frozen base, not by itself.
        value: the reward's maximum; the range is [0, value].
        normalisation: ``"inverse_perplexity"`` (exp of the mean token log-probability) or ``"mean_prob"`` (mean token
            probability, RLPR).
        answer_key, question_key: dataset columns of the reference answers and, when TRL passes no ``prompts``,
            the questions (rendered with the suite's GRPO prompt).
        batch_size: sequences per forward pass (sorted by length, right-padded).
        max_length: tokens at most per scored sequence; a longer one gets ``None``.
        prefilled_think: the prompt already ends with the opening THINK tag.
        chat_template_kwargs: passed to ``apply_chat_template`` (default ``{"enable_thinking": False}``).

    Returns the reward function ``fn(completions, **kwargs) -> list[float | None]`` with ``__name__`` ``name``,
    attributes ``value``, ``normalisation``, ``last_error`` (the last model error, or ``None``) and ``bounds``.

    Raises ``ValueError`` here (not in the returned function) for an unknown normalisation or ``value <= 0``.
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    if not value > 0:
        raise ValueError(f"value must be > 0, got {value}")
    t_open, t_close, a_open, _ = tags.all
    state: dict[str, Any] = {"last_error": None}

    def _render(prompt: Any) -> str | None:
        from ..generation import render_prompts

        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, (list, tuple)) and prompt:
            return render_prompts(tokenizer, [list(prompt)], chat_template_kwargs)[0]
        return None

    def _items(completions: Sequence[Any], kwargs: dict) -> list[tuple[int, str, str] | float | None]:
        """Per completion: (index, prefix text, reference text) to score, 0.0 (no reasoning) or None."""
        n = len(completions)
        refs = kwargs.get(answer_key)
        refs = list(refs) if isinstance(refs, (list, tuple)) and len(refs) == n else [None] * n
        prompts = kwargs.get("prompts")
        if not (isinstance(prompts, (list, tuple)) and len(prompts) == n):
            questions = kwargs.get(question_key)
            if isinstance(questions, (list, tuple)) and len(questions) == n:
                prompts = [question_prompt(q, tags=tags) if isinstance(q, str) and q.strip() else None for q in questions]
            else:
                prompts = [None] * n
        out: list[tuple[int, str, str] | float | None] = []
        for i, (c, ref, prompt) in enumerate(zip(completions, refs, prompts)):
            if not isinstance(ref, str) or not ref.strip():
                out.append(None)
                continue
            think = parse_completion(c, prefilled_think=prefilled_think, tags=tags).think
            if think is None:
                out.append(0.0)
                continue
            try:
                rendered = _render(prompt)
            except Exception as exc:  # a malformed prompt: this item cannot be scored
                state["last_error"] = f"{type(exc).__name__}: {exc}"
                rendered = None
            if rendered is None:
                out.append(None)
                continue
            opener = "" if rendered.endswith(t_open) else t_open
            out.append((i, f"{rendered}{opener}{think}{t_close}{a_open}", ref.strip()))
        return out

    @contextlib.contextmanager
    def _reference():
        if use_base_model and hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                yield
        else:
            yield

    def _score(jobs: list[tuple[int, str, str]]) -> dict[int, float | None]:
        import torch

        encoded = []
        scores: dict[int, float | None] = {}
        for i, prefix, ref in jobs:
            p_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
            r_ids = tokenizer(ref, add_special_tokens=False)["input_ids"]
            if not r_ids or not p_ids or len(p_ids) + len(r_ids) > max_length:
                scores[i] = None
                continue
            encoded.append((i, p_ids, r_ids))
        encoded.sort(key=lambda e: len(e[1]) + len(e[2]))
        device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        was_training = model.training
        model.eval()
        try:
            for s in range(0, len(encoded), max(1, batch_size)):
                batch = encoded[s : s + max(1, batch_size)]
                width = max(len(p) + len(r) for _, p, r in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                att = torch.zeros((len(batch), width), dtype=torch.long)
                for row, (_, p, r) in enumerate(batch):
                    ids[row, : len(p) + len(r)] = torch.tensor(p + r)
                    att[row, : len(p) + len(r)] = 1
                try:
                    with torch.inference_mode(), _reference():
                        logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits
                except Exception as exc:  # never raise: the batch is unscored
                    state["last_error"] = f"{type(exc).__name__}: {exc}"
                    logger.warning("%s: scoring failed for %d items: %s", name, len(batch), state["last_error"])
                    for i, _, _ in batch:
                        scores[i] = None
                    continue
                for row, (i, p, r) in enumerate(batch):
                    # logits at position t predict token t + 1: the reference's tokens are predicted from len(p) - 1 on
                    rows = torch.log_softmax(logits[row, len(p) - 1 : len(p) + len(r) - 1].float(), dim=-1)
                    token_logp = rows.gather(-1, torch.tensor(r, device=rows.device).unsqueeze(-1)).squeeze(-1).double().cpu()
                    if normalisation == "inverse_perplexity":
                        x = math.exp(float(token_logp.mean()))
                    else:
                        x = float(token_logp.exp().mean())
                    scores[i] = None if math.isnan(x) else min(1.0, max(0.0, x)) * float(value)
        finally:
            if was_training:
                model.train()
        return scores

    def perplexity_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        try:
            completions = list(completions)
        except Exception as exc:
            state["last_error"] = f"{type(exc).__name__}: {exc}"
            return []
        try:
            items = _items(completions, kwargs)
            jobs = [it for it in items if isinstance(it, tuple)]
            scored = _score(jobs) if jobs else {}
            out: list[float | None] = []
            for i, it in enumerate(items):
                out.append(scored.get(i) if isinstance(it, tuple) else it)
            perplexity_reward.last_error = state["last_error"]
            return out
        except Exception as exc:  # never raise: nothing of this call is scored
            state["last_error"] = f"{type(exc).__name__}: {exc}"
            perplexity_reward.last_error = state["last_error"]
            logger.warning("%s: %s", name, state["last_error"])
            return [None] * len(completions)

    perplexity_reward.__name__ = name
    perplexity_reward.__qualname__ = name
    perplexity_reward.value = value
    perplexity_reward.normalisation = normalisation
    perplexity_reward.bounds = (0.0, float(value))
    perplexity_reward.last_error = None
    perplexity_reward.__doc__ = (
        f"Likelihood of the reference answer given the completion's reasoning, in [0, {value}] "
        f"({normalisation}); None when an item cannot be scored.\n\n"
        "Example::\n\n"
        "    >>> fn(completions=['<THINK>Scurvy: vitamin C deficiency.</THINK><ANSWER>x</ANSWER>',\n"
        "    ...                 '<THINK>The weather today is sunny and warm.</THINK><ANSWER>Iron</ANSWER>'],\n"
        "    ...    answer=['Vitamin C'] * 2, question=['Which vitamin deficiency causes scurvy?'] * 2)\n"
        "    [0.217, 0.141]  # SmolLM2-135M-Instruct, inverse perplexity: reasoning that names the answer scores higher\n"
    )
    return perplexity_reward
