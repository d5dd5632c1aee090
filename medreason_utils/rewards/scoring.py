"""Score groups of completions exactly as TRL's ``GRPOTrainer`` does: the one scorer of the suite.

Training's pass-rate ordering and logging, the reward evaluation (``evaluation.reward_eval``), the
from-scratch GRPO of notebook 05 and the reward playground all call :func:`score_groups`; none of
them calls a reward function itself.

What it mirrors, TRL 1.16 ``GRPOTrainer._calculate_rewards`` and ``_generate_and_score_completions``:

- every reward function is called once for the whole batch as
  ``fn(prompts=..., completions=..., completion_ids=..., trainer_state=..., log_extra=..., log_metric=...,
  **columns)``, with every dataset column but ``prompt`` repeated once per completion;
- completions are conversational (``[{"role": "assistant", "content": text}]``) when the prompt is a
  list of messages, plain text otherwise (TRL's ``is_conversational``);
- ``None`` (or NaN) means "not mine to grade": kept as ``None`` here, NaN in TRL;
- the total of a completion is the weighted ``nansum`` of its rewards, NaN when every reward gave
  ``None``; advantages by :func:`~medreason_utils.rewards.advantages.compute_advantages`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .advantages import compute_advantages

__all__ = ["GroupScores", "score_groups"]


@dataclass(frozen=True)
class GroupScores:
    """The scores of ``n_groups`` groups of ``num_generations`` completions each (``n = n_groups * num_generations``).

    Attributes:
        names: the reward functions' ``__name__`` (what TRL logs as ``rewards/<name>/mean``).
        weights: one per reward (TRL ``reward_weights``).
        num_generations: completions per group (consecutive completions share a prompt).
        rewards: ``n x len(names)``: ``rewards[i][j]`` is reward ``names[j]`` of completion ``i``, ``None`` where
            that reward does not apply (TRL: NaN).
        totals: ``n`` weighted totals (TRL's ``nansum``); NaN where every reward gave ``None``.
        advantages: ``n`` GRPO advantages (0.0 for an unscorable completion), as TRL computes them.
    """

    names: tuple[str, ...]
    weights: tuple[float, ...]
    num_generations: int
    rewards: list[list[float | None]]
    totals: list[float]
    advantages: list[float]

    @property
    def n_groups(self) -> int:
        return len(self.totals) // self.num_generations if self.num_generations else 0

    def column(self, name: str) -> list[float | None]:
        """The ``n`` values of reward ``name``. Raises ``KeyError`` naming the known rewards."""
        if name not in self.names:
            raise KeyError(f"no reward {name!r}; scored: {list(self.names)}")
        j = self.names.index(name)
        return [r[j] for r in self.rewards]

    def group_means(self) -> dict[str, list[float | None]]:
        """Per group, the mean of each reward over the completions it applies to and of the total (key
        ``"total"``), ``None`` where it applies to none (as TRL's logged ``rewards/<name>/mean`` is a ``nanmean``)."""
        g = self.num_generations
        series = {name: self.column(name) for name in self.names}
        series["total"] = [None if math.isnan(t) else t for t in self.totals]
        return {name: [_mean(vals[i * g:(i + 1) * g]) for i in range(self.n_groups)] for name, vals in series.items()}

    def means(self) -> dict[str, float | None]:
        """Over all completions, each reward's and the total's mean where they apply (TRL's logged means)."""
        out: dict[str, float | None] = {name: _mean(self.column(name)) for name in self.names}
        out["total"] = _mean([None if math.isnan(t) else t for t in self.totals])
        return out


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


def score_groups(
    reward_funcs: Sequence[Any],
    weights: Sequence[float] | None,
    rows: Sequence[Mapping[str, Any]],
    completions: Sequence[str],
    num_generations: int,
    scale_rewards: str | bool = "group",
    *,
    completion_ids: Sequence[Sequence[int]] | None = None,
    tokenizer: Any = None,
    trainer_state: Any = None,
) -> GroupScores:
    """Score ``completions`` with ``reward_funcs`` as TRL's ``GRPOTrainer`` scores one batch.

    Args:
        reward_funcs: callables with TRL's reward signature (``nn.Module`` reward models are not supported).
        weights: one per function (TRL ``reward_weights``); ``None``: 1.0 each.
        rows: dataset rows holding ``prompt`` (text or messages) and the columns the rewards read
            (``answer``, ``options``, ``question``, ...): either one per group (``len(completions) /
            num_generations`` rows, repeated here as TRL's sampler repeats them) or one per completion
            (TRL's ``inputs``). Columns are those of ``rows[0]``; a row missing one gives ``None``.
        completions: ``n`` completion texts, consecutive groups of ``num_generations`` sharing a prompt.
        num_generations: group size, >= 1.
        scale_rewards: ``"group"``, ``"batch"`` or ``"none"`` (TRL's; ``True``/``False`` as in TRL).
        completion_ids: the completions' token ids (TRL passes the sampled ids); when ``None`` they are
            ``tokenizer(text, add_special_tokens=False)`` with ``tokenizer`` given, else ``None`` for each.
        trainer_state: what TRL passes as ``trainer_state`` (its ``TrainerState``); ``None`` outside a trainer.
            ``log_extra`` and ``log_metric`` are passed as functions that do nothing.

    Returns:
        :class:`GroupScores`.

    Raises:
        ValueError: a group size that does not divide the completions, a row count that is neither one per
        group nor one per completion, a weight count that differs from the functions, or a reward that
        returns a list of another length (what a reward function itself raises passes through).
    """
    completions = list(completions)
    rows = [dict(r) for r in rows]
    n, g = len(completions), int(num_generations)
    if g < 1 or n % g:
        raise ValueError(f"num_generations={num_generations} does not divide the {n} completions into groups")
    if len(rows) == n // g:
        flat_rows = [r for r in rows for _ in range(g)]
    elif len(rows) == n:
        flat_rows = rows
    else:
        raise ValueError(f"{len(rows)} rows for {n} completions in groups of {g}: give one row per group "
                         f"({n // g}) or one per completion ({n})")
    funcs = list(reward_funcs)
    w = [1.0] * len(funcs) if weights is None else [float(x) for x in weights]
    if len(w) != len(funcs):
        raise ValueError(f"{len(w)} reward weights for {len(funcs)} reward functions")
    names = tuple(getattr(f, "__name__", f"reward_{i}") for i, f in enumerate(funcs))
    if n == 0:
        return GroupScores(names, tuple(w), g, [], [], [])
    prompts = [r.get("prompt") for r in flat_rows]
    convo = [[{"role": "assistant", "content": c}] if isinstance(p, list) else c for p, c in zip(prompts, completions)]
    if completion_ids is None:
        completion_ids = ([tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions] if tokenizer is not None
                          else [None] * n)
    keys = [k for k in flat_rows[0] if k not in ("prompt", "completion", "completion_ids")]
    columns = {k: [r.get(k) for r in flat_rows] for k in keys}
    columns.update(trainer_state=trainer_state, log_extra=_noop, log_metric=_noop)
    per_func: list[list[float | None]] = []
    for name, fn in zip(names, funcs):
        out = list(fn(prompts=prompts, completions=convo, completion_ids=list(completion_ids), **columns))
        if len(out) != n:
            raise ValueError(f"reward {name} returned {len(out)} values for {n} completions")
        per_func.append([None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in out])
    rewards = [[per_func[j][i] for j in range(len(funcs))] for i in range(n)]
    if funcs:
        totals, advantages = compute_advantages(rewards, w, num_generations=g, scale_rewards=scale_rewards)
    else:
        totals, advantages = [math.nan] * n, [0.0] * n
    return GroupScores(names, tuple(w), g, rewards, totals, advantages)
