"""TRL-compatible reward functions for GRPO.

Each reward function has the signature TRL's ``GRPOTrainer`` calls,
``(completions, **kwargs) -> list[float | None]``, one value per completion, a stable
``__name__`` (TRL logs ``rewards/<name>/mean``), and accepts plain-text and conversational
completions. ``None`` means not applicable / not scored: TRL turns it into NaN and leaves it
out of the advantage. No reward raises on a malformed completion.

Default values follow the reference GRPO medical-reasoning project: strict format 3.0 / 0.0;
partial format +0.5 per tag present exactly once, -0.5 per tag that is not; correctness by
verifier probability p: no extractable answer -2.0, p>0.9 5.0, p>0.7 3.5, p>0.5 2.0,
p>0.3 1.5, else -2.5. A registry maps reward names to functions, after open-r1's
``src/open_r1/rewards.py``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .parsing import choice_from_completion, completion_text, parse_completion
from .prompts import DEFAULT_TAGS, Tags
from .verifier import RuleBasedVerifier, Verifier

__all__ = [
    "RewardFunc",
    "CorrectnessTiers",
    "DEFAULT_TIERS",
    "make_strict_format_reward",
    "make_partial_format_reward",
    "make_correctness_reward",
    "make_mcq_accuracy_reward",
    "strict_format_reward",
    "partial_format_reward",
    "mcq_accuracy_reward",
    "REWARD_REGISTRY",
    "get_reward_funcs",
    "UnscoredError",
    "compute_advantages",
    "exclude_unscored",
]

logger = logging.getLogger(__name__)

RewardFunc = Callable[..., list]


def _named(fn: Callable, name: str, **attrs: Any) -> Callable:
    fn.__name__ = name
    fn.__qualname__ = name
    for k, v in attrs.items():
        setattr(fn, k, v)
    return fn


def make_strict_format_reward(
    value: float = 3.0, *, prefilled_think: bool = False, tags: Tags = DEFAULT_TAGS, name: str = "strict_format_reward"
) -> RewardFunc:
    """Reward ``value`` when ``parse_completion(c).is_strict``, else 0.0. Range {0, value}."""

    def strict_format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [
            float(value) if parse_completion(c, prefilled_think=prefilled_think, tags=tags).is_strict else 0.0
            for c in completions
        ]

    return _named(strict_format_reward, name, value=value, prefilled_think=prefilled_think, tags=tags)


def make_partial_format_reward(
    per_tag: float = 0.5, *, prefilled_think: bool = False, tags: Tags = DEFAULT_TAGS, name: str = "partial_format_reward"
) -> RewardFunc:
    """``+per_tag`` for each tag that occurs exactly once, ``-per_tag`` for each that does not.

    Four tags give a range of [-4 per_tag, +4 per_tag] ([-2, 2] by default); with
    ``prefilled_think`` the opening THINK tag is already in the prompt and is not counted
    (three tags, [-1.5, 1.5]).
    """
    counted = tags.all[1:] if prefilled_think else tags.all

    def partial_format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        out = []
        for c in completions:
            s = completion_text(c)
            out.append(sum(per_tag if s.count(t) == 1 else -per_tag for t in counted))
        return out

    return _named(partial_format_reward, name, per_tag=per_tag, prefilled_think=prefilled_think, tags=tags)


@dataclass(frozen=True)
class CorrectnessTiers:
    """Map a verifier probability p to a reward.

    ``thresholds`` are ``(threshold, reward)`` pairs tried from the highest threshold down;
    the first with ``p > threshold`` wins; ``below`` is given when none does; ``no_answer`` is
    given when the completion has no extractable answer. Defaults from the reference GRPO
    project: >0.9 5.0, >0.7 3.5, >0.5 2.0, >0.3 1.5, else -2.5; no answer -2.0.
    """

    thresholds: tuple[tuple[float, float], ...] = ((0.9, 5.0), (0.7, 3.5), (0.5, 2.0), (0.3, 1.5))
    below: float = -2.5
    no_answer: float = -2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", tuple(sorted(((float(t), float(r)) for t, r in self.thresholds), reverse=True)))
        for t, _ in self.thresholds:
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"tier threshold {t} is outside [0, 1]")

    def reward(self, p: float) -> float:
        """Reward for probability ``p`` in [0, 1]."""
        for threshold, r in self.thresholds:
            if p > threshold:
                return r
        return self.below

    @property
    def bounds(self) -> tuple[float, float]:
        """(lowest, highest) reward these tiers can give."""
        values = [r for _, r in self.thresholds] + [self.below, self.no_answer]
        return min(values), max(values)


DEFAULT_TIERS = CorrectnessTiers()


class UnscoredError(RuntimeError):
    """More of a step's items were left unscored by the verifier than the configured fraction allows."""


@dataclass
class _UnscoredCounter:
    """Counts of the correctness reward: calls, items (completions), unscored items, the last verifier error,
    and the unscored fraction of each call (``history``)."""

    calls: int = 0
    items: int = 0
    unscored: int = 0
    last_error: str | None = None
    history: list = field(default_factory=list)

    @property
    def unscored_fraction(self) -> float:
        """Unscored items over all items so far, in [0, 1]."""
        return self.unscored / self.items if self.items else 0.0


def make_correctness_reward(
    verifier: Verifier | None = None,
    tiers: CorrectnessTiers = DEFAULT_TIERS,
    *,
    answer_key: str = "answer",
    question_key: str = "question",
    prefilled_think: bool = False,
    tags: Tags = DEFAULT_TAGS,
    max_unscored_fraction: float = 0.5,
    name: str = "correctness_reward",
) -> RewardFunc:
    """Answer-correctness reward graded by a verifier.

    The returned function reads the reference answers from the dataset column ``answer_key``
    (TRL passes dataset columns as keyword arguments, one value per completion) and, when
    present, the questions from ``question_key``. For each completion the ANSWER block is
    parsed; no answer gives ``tiers.no_answer`` without calling the verifier; otherwise the
    verifier's probability goes through ``tiers``.

    Fault semantics: an item the verifier returns ``None`` (or a non-number, NaN) for, and every
    item of a call where the verifier raises (after its own retries), gives ``None``. Counts are
    on the function (``fn.counter``: calls, items, unscored, last_error, per-call ``history``)
    and, under TRL (which passes ``log_metric`` to reward functions), logged with the training
    metrics as ``correctness/unscored_fraction`` (fraction of the call's completions, in [0, 1])
    and ``correctness/unscored`` (count). TRL turns ``None`` into NaN; it leaves a completion out
    of the group baseline and the advantage only when *every* reward function gave ``None`` for
    it, so wrap the other reward functions with :func:`exclude_unscored` to get that (otherwise
    an unscored completion is rewarded by format alone). The indices left unscored by the last
    call are in ``fn.last_unscored``.

    When a call (one TRL generation batch: ``per_device_train_batch_size x steps_per_generation``
    completions) leaves more than ``max_unscored_fraction`` of its items unscored,
    :class:`UnscoredError` is raised, with the last verifier error (which names the server URL
    for the served verifiers): a verifier outage stops the run instead of training on format
    rewards alone. 1.0 never raises.

    A second call with the very same ``completions`` list object (as TRL passes to every reward
    function of a step, and as :func:`exclude_unscored` does) returns the first call's result
    without scoring or counting again.

    Args:
        verifier: any :class:`~medreason_utils.verifier.Verifier`; ``None`` uses
            :class:`~medreason_utils.verifier.RuleBasedVerifier`.
        tiers: probability-to-reward map.
        max_unscored_fraction: in [0, 1], see above (default 0.5).

    Raises (from the returned function): ``KeyError`` naming ``answer_key`` when that column
    is missing; :class:`UnscoredError` as above. Malformed completions never raise.
    """
    if not 0.0 <= max_unscored_fraction <= 1.0:
        raise ValueError(f"max_unscored_fraction must be in [0, 1], got {max_unscored_fraction}")
    verifier = verifier if verifier is not None else RuleBasedVerifier()
    counter = _UnscoredCounter()
    last: dict[str, Any] = {"completions": None, "rewards": None}

    def correctness_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        if last["completions"] is completions and last["rewards"] is not None:
            return list(last["rewards"])
        if answer_key not in kwargs:
            raise KeyError(
                f"{name} needs the reference answers in the dataset column {answer_key!r}; "
                f"got columns {sorted(k for k in kwargs if k not in ('trainer_state', 'log_extra', 'log_metric'))}"
            )
        references = list(kwargs[answer_key])
        if len(references) != len(completions):
            raise ValueError(f"{name}: {len(completions)} completions but {len(references)} values in column {answer_key!r}")
        questions = kwargs.get(question_key)
        if questions is not None and len(questions) != len(completions):
            questions = None  # a question column of another length is not ours to align; the verifiers do not need it
        answers = [parse_completion(c, prefilled_think=prefilled_think, tags=tags).answer for c in completions]
        rewards: list[float | None] = [tiers.no_answer] * len(answers)
        idx = [i for i, a in enumerate(answers) if a is not None]
        unscored_idx: list[int] = []
        if idx:
            preds = [answers[i] for i in idx]
            refs = [str(references[i]) for i in idx]
            qs = [str(questions[i]) for i in idx] if questions is not None else None
            raised = False
            try:
                probs = list(verifier.score(preds, refs, qs))
                if len(probs) != len(idx):
                    raise ValueError(f"verifier returned {len(probs)} scores for {len(idx)} items")
            except UnscoredError:
                raise
            except Exception as exc:  # a verifier outage: every item of this call is unscored
                raised = True
                counter.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("%s: verifier %r failed for %d items: %s", name, verifier, len(idx), counter.last_error)
                probs = [None] * len(idx)
            for i, p in zip(idx, probs):
                if p is None or isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(p):
                    rewards[i] = None
                    unscored_idx.append(i)
                else:
                    rewards[i] = tiers.reward(min(1.0, max(0.0, float(p))))
            errors = getattr(verifier, "last_errors", None)
            if unscored_idx and errors and not raised:
                counter.last_error = str(errors[-1])
        unscored = len(unscored_idx)
        counter.calls += 1
        counter.items += len(answers)
        counter.unscored += unscored
        fraction = unscored / len(answers) if answers else 0.0
        counter.history.append(fraction)
        correctness_reward.last_unscored = unscored_idx
        last["completions"], last["rewards"] = completions, list(rewards)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric("correctness/unscored_fraction", fraction)
            log_metric("correctness/unscored", float(unscored))
        if fraction > max_unscored_fraction:
            raise UnscoredError(
                f"{name}: {unscored} of {len(answers)} items unscored ({fraction:.0%} > "
                f"max_unscored_fraction={max_unscored_fraction:.0%}); last verifier error: {counter.last_error}"
            )
        return rewards

    return _named(
        correctness_reward,
        name,
        verifier=verifier,
        tiers=tiers,
        counter=counter,
        max_unscored_fraction=max_unscored_fraction,
        last_unscored=[],
    )


def exclude_unscored(reward_funcs: Sequence[RewardFunc], correctness: RewardFunc) -> list[RewardFunc]:
    """Make TRL leave completions the verifier could not score out of the advantage.

    TRL 1.16 (``GRPOTrainer._generate_and_score_completions``) sums the reward functions with
    ``nansum`` and excludes a completion from the group baseline and the advantage only when
    *every* reward function returned ``None`` for it. This returns ``reward_funcs`` with every
    function other than ``correctness`` (a function from :func:`make_correctness_reward`)
    wrapped to return ``None`` where ``correctness`` left the item unscored, so such a
    completion is not rewarded by format alone. Each wrapper calls ``correctness`` first on the
    same ``completions`` list (its result is reused when TRL calls it), so the order of the list
    does not matter. Names (``__name__``) and settings attributes are kept for TRL's logs.
    """
    out: list[RewardFunc] = []
    for fn in reward_funcs:
        if fn is correctness:
            out.append(fn)
            continue

        def gated(completions: Sequence[Any], _fn: RewardFunc = fn, **kwargs: Any) -> list:
            correctness(completions, **kwargs)
            values = list(_fn(completions, **kwargs))
            for i in correctness.last_unscored:
                if i < len(values):
                    values[i] = None
            return values

        # keep the wrapped function's settings (value, per_tag, ...) visible on the wrapper
        attrs = {k: v for k, v in getattr(fn, "__dict__", {}).items() if not k.startswith("__")}
        out.append(_named(gated, getattr(fn, "__name__", "reward"), **{**attrs, "wrapped": fn}))
    return out


def make_mcq_accuracy_reward(
    value: float = 1.0,
    *,
    answer_key: str = "answer",
    options_key: str = "options",
    prefilled_think: bool = False,
    tags: Tags = DEFAULT_TAGS,
    name: str = "mcq_accuracy_reward",
) -> RewardFunc:
    """Exact match of the option letter in the ANSWER block: ``value`` if right, 0.0 if wrong or none.

    Uses :func:`~medreason_utils.parsing.choice_from_completion`, the same reading as the
    evaluation's exact-match accuracy. Rows without options (open-ended items), or without the
    ``answer_key``/``options_key`` columns, give ``None``. Range {0, value} or ``None``.

    Raises (from the returned function) ``ValueError`` naming the column when a column holds a
    different number of values than there are completions. Malformed completions never raise.
    """

    def mcq_accuracy_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        n = len(completions)
        columns = {}
        for key in (answer_key, options_key):
            values = kwargs.get(key)
            values = [None] * n if values is None else list(values)
            if len(values) != n:
                raise ValueError(f"{name}: column {key!r} has {len(values)} values for {n} completions")
            columns[key] = values
        golds, options = columns[answer_key], columns[options_key]
        out: list[float | None] = []
        for c, gold, opts in zip(completions, golds, options):
            if not opts or not isinstance(gold, str):
                out.append(None)
                continue
            letter, _ = choice_from_completion(c, opts, prefilled_think=prefilled_think, tags=tags)
            out.append(float(value) if letter is not None and letter == gold.strip().upper() else 0.0)
        return out

    return _named(mcq_accuracy_reward, name, value=value)


strict_format_reward = make_strict_format_reward()
partial_format_reward = make_partial_format_reward()
mcq_accuracy_reward = make_mcq_accuracy_reward()

from .perplexity_reward import make_perplexity_reward  # noqa: E402  (needs model= and tokenizer= settings)

#: Reward names a config can list; each entry builds the function from keyword settings.
REWARD_REGISTRY: dict[str, Callable[..., RewardFunc]] = {
    "strict_format": make_strict_format_reward,
    "partial_format": make_partial_format_reward,
    "correctness": make_correctness_reward,
    "mcq_accuracy": make_mcq_accuracy_reward,
    "perplexity": make_perplexity_reward,
}


def get_reward_funcs(names: Sequence[str], settings: dict[str, dict] | None = None) -> list[RewardFunc]:
    """Build reward functions by name from :data:`REWARD_REGISTRY`.

    ``settings`` maps a name to the keyword arguments of its factory, e.g.
    ``{"correctness": {"verifier": v}, "strict_format": {"value": 2.0}}``.
    Raises ``KeyError`` naming an unknown reward and the known ones.
    """
    settings = settings or {}
    out = []
    for n in names:
        if n not in REWARD_REGISTRY:
            raise KeyError(f"unknown reward {n!r}; known: {sorted(REWARD_REGISTRY)}")
        out.append(REWARD_REGISTRY[n](**settings.get(n, {})))
    return out


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
