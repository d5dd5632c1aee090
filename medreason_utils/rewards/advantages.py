"""GRPO advantages as TRL computes them, for the playground and for tests against TRL."""

from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["compute_advantages"]


def compute_advantages(
    rewards_per_func: Sequence[Sequence[float | None]],
    weights: Sequence[float] | None = None,
    *,
    num_generations: int | None = None,
    scale_rewards: str | bool = "group",
    epsilon: float = 1e-4,
) -> tuple[list[float], list[float]]:
    """Weighted reward totals and GRPO advantages, as TRL's ``GRPOTrainer`` computes them.

    Mirrors TRL 1.16 ``GRPOTrainer._generate_and_score_completions`` with
    ``multi_objective_aggregation="sum_then_normalize"`` (the default): the total of a
    completion is the weighted sum of its rewards with ``None``/NaN left out (``nansum``);
    a completion whose every reward is ``None`` is unscorable (total NaN, advantage 0).
    The advantage is ``total - mean(group totals)``, divided by ``std + epsilon`` where std
    (Bessel-corrected, NaN-aware, as TRL's ``nanstd``) is taken over the completion's group
    (``scale_rewards="group"``, the GRPO paper, DeepSeekMath arXiv:2402.03300) or over the whole
    batch (``"batch"``, PPO Lite arXiv:2508.08221), or not divided at all (``"none"``,
    Dr. GRPO arXiv:2503.20783). ``True``/``False`` mean ``"group"``/``"none"`` as in TRL.

    Args:
        rewards_per_func: ``n_completions x n_reward_funcs`` rewards (rows are completions,
            consecutive groups of ``num_generations`` rows share a prompt).
        weights: one weight per reward function (TRL's ``reward_weights``); ``None`` gives 1.0 each.
        num_generations: group size; ``None`` treats all rows as one group.
        epsilon: added to the std before dividing (TRL uses 1e-4).

    Returns:
        ``(totals, advantages)``, two lists of ``n_completions`` floats (totals may be NaN).

    Raises:
        ValueError: rows of different lengths, a weight count that does not match, a group size
        that does not divide the number of rows, or an unknown ``scale_rewards``.
    """
    scale = {True: "group", False: "none"}.get(scale_rewards, scale_rewards)  # type: ignore[arg-type]
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {scale_rewards!r}")
    rows = [list(r) for r in rewards_per_func]
    n = len(rows)
    if n == 0:
        return [], []
    k = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != k:
            raise ValueError(f"completion {i} has {len(r)} rewards, completion 0 has {k}")
    w = [1.0] * k if weights is None else [float(x) for x in weights]
    if len(w) != k:
        raise ValueError(f"{len(w)} reward weights for {k} reward functions")
    g = n if num_generations is None else int(num_generations)
    if g < 1 or n % g:
        raise ValueError(f"num_generations={num_generations} does not divide the {n} completions into groups")

    def _isnan(x: Any) -> bool:
        return x is None or (isinstance(x, float) and math.isnan(x))

    totals: list[float] = []
    for r in rows:
        if all(_isnan(x) for x in r):
            totals.append(math.nan)
        else:
            totals.append(sum(float(x) * wi for x, wi in zip(r, w) if not _isnan(x)))

    def _mean_std(values: list[float]) -> tuple[float, float]:
        vals = [v for v in values if not math.isnan(v)]
        if not vals:
            return math.nan, math.nan
        m = sum(vals) / len(vals)
        if len(vals) < 2:
            return m, math.nan if len(values) > 1 else 0.0
        var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
        return m, math.sqrt(var)

    advantages: list[float] = []
    batch_std = _mean_std(totals)[1] if n > 1 else 0.0
    for start in range(0, n, g):
        group = totals[start : start + g]
        mean, std = _mean_std(group)
        if g == 1:
            std = 0.0
        if scale == "batch":
            std = batch_std
        for t in group:
            a = t - mean
            if scale != "none":
                a = a / (std + epsilon)
            advantages.append(0.0 if math.isnan(a) else a)
    return totals, advantages
