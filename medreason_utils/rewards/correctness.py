"""Answer correctness: a verifier's probability mapped to reward tiers, with fault handling.

Default tiers follow the reference GRPO medical-reasoning project: no extractable answer -2.0,
verifier probability p > 0.9 5.0, > 0.7 3.5, > 0.5 2.0, > 0.3 1.5, else -2.5. An item the
verifier cannot score gives ``None`` (TRL turns it into NaN and, when every reward gives
``None``, leaves the completion out of the advantage: see :func:`exclude_unscored`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..parsing import parse_completion
from ..prompts import DEFAULT_TAGS, Tags
from ..verifiers import RuleBasedVerifier, Verifier
from .base import RewardFunc, has_options, named

__all__ = [
    "CorrectnessTiers",
    "DEFAULT_TIERS",
    "UnscoredError",
    "make_correctness_reward",
    "exclude_unscored",
]

logger = logging.getLogger(__name__)


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


_DOC = """Answer correctness graded by {verifier!r}: tiers of its probability p that the answer is right.

    The {answer_open} block is parsed; no answer (or more than one {answer_open} tag) gives {no_answer:g} (no verifier call); otherwise the
    verifier's p gives, first match wins: {tiers}; else {below:g}. The reference answers come
    from the dataset column ``{answer_key}`` (and questions, when present, from ``{question_key}``).
    An item the verifier cannot score gives ``None``; a call leaving more than
    {max_unscored_fraction:.0%} of its items unscored raises ``UnscoredError``. A multiple-choice row
    (non-empty ``options`` column) gives ``None``: the MCQ reward grades it.

    Args:
        completions: plain strings or conversational completions, as TRL passes them.
        {answer_key}: reference answers, one per completion (a dataset column TRL passes).
        log_metric: passed by TRL; receives ``correctness/unscored_fraction``, ``correctness/unscored`` and
            ``correctness/verifier_fallbacks``.

    Returns:
        ``list[float | None]``, one per completion. Malformed completions never raise.

    Example:
    >>> {name}(["{example}", "no tags at all"], {answer_key}=["measles", "measles"])  # p = 1.0 for the first
    {rewards}
    """


def _single_answer(completion: Any, prefilled_think: bool, tags: Tags) -> str | None:
    """The ANSWER block's text, or ``None`` when there is none or more than one opening ANSWER tag: a
    completion with several answer blocks ("<ANSWER>Rubella</ANSWER><ANSWER>Measles</ANSWER>", or 1,000
    tags) hedges, and is graded as giving no answer (see ``docs/reward-hacking.md``)."""
    parsed = parse_completion(completion, prefilled_think=prefilled_think, tags=tags)
    return None if parsed.tag_counts.get(tags.answer_open, 0) > 1 else parsed.answer


class UnscoredError(RuntimeError):
    """More of a step's items were left unscored by the verifier than the configured fraction allows."""


@dataclass
class _UnscoredCounter:
    """Counts of the correctness reward: calls, items (completions), unscored items, items the verifier
    graded by a fallback reading (``fallbacks``: the LLM judge's text verdict where its log-prob request was
    refused; the verifier's ``last_fallbacks``), the last verifier error, and the unscored fraction of each
    call (``history``)."""

    calls: int = 0
    items: int = 0
    unscored: int = 0
    fallbacks: int = 0
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
    options_key: str = "options",
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

    Multiple-choice rows (a non-empty ``options_key`` column: a GRPO data mix with multiple-choice
    sources, whose ``answer`` is the gold letter) are not this reward's to grade: they give ``None``
    (TRL sums the other rewards of the row; ``mcq_exact_match_reward`` grades them), are not sent
    to the verifier and are not counted as unscored.

    Fault semantics: an item the verifier returns ``None`` (or a non-number, NaN) for, and every
    item of a call where the verifier raises (after its own retries), gives ``None``. Counts are
    on the function (``fn.counter``: calls, items, unscored, last_error, per-call ``history``)
    and, under TRL (which passes ``log_metric`` to reward functions), logged with the training
    metrics as ``correctness/unscored_fraction`` (fraction of the call's completions, in [0, 1])
    and ``correctness/unscored`` (count), and ``correctness/verifier_fallbacks`` (items of the call the
    verifier graded by a fallback reading, its ``last_fallbacks``; total in ``fn.counter.fallbacks``). TRL turns ``None`` into NaN; it leaves a completion out
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
        verifier: any :class:`~medreason_utils.verifiers.Verifier`; ``None`` uses
            :class:`~medreason_utils.verifiers.RuleBasedVerifier`.
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
        options = kwargs.get(options_key)
        options = list(options) if options is not None and len(options) == len(completions) else [None] * len(completions)
        applies = [not has_options(opts) for opts in options]  # a multiple-choice row: None, graded by the MCQ reward
        answers = [_single_answer(c, prefilled_think, tags) if a else None for c, a in zip(completions, applies)]
        rewards: list[float | None] = [tiers.no_answer if a else None for a in applies]
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
        fell_back = int(getattr(verifier, "last_fallbacks", 0) or 0) if idx else 0
        counter.fallbacks += fell_back
        n_applies = sum(applies)
        counter.calls += 1
        counter.items += n_applies
        counter.unscored += unscored
        fraction = unscored / n_applies if n_applies else 0.0
        counter.history.append(fraction)
        correctness_reward.last_unscored = unscored_idx
        last["completions"], last["rewards"] = completions, list(rewards)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric("correctness/unscored_fraction", fraction)
            log_metric("correctness/unscored", float(unscored))
            log_metric("correctness/verifier_fallbacks", float(fell_back))
        if fraction > max_unscored_fraction:
            raise UnscoredError(
                f"{name}: {unscored} of {n_applies} items unscored ({fraction:.0%} > "
                f"max_unscored_fraction={max_unscored_fraction:.0%}); last verifier error: {counter.last_error}"
            )
        return rewards

    think = "" if prefilled_think else tags.think_open
    example = f"{think}Koplik spots.{tags.think_close}{tags.answer_open}Measles{tags.answer_close}"
    doc = _DOC.format(
        name=name, answer_key=answer_key, question_key=question_key, verifier=verifier, example=example, answer_open=tags.answer_open,
        tiers=", ".join(f"p > {t:g}: {r:g}" for t, r in tiers.thresholds), below=tiers.below, no_answer=tiers.no_answer,
        rewards=[tiers.reward(1.0), tiers.no_answer], max_unscored_fraction=max_unscored_fraction,
    )
    return named(
        correctness_reward,
        name,
        doc=doc,
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
        doc = (f"{(fn.__doc__ or '').rstrip()}\n\n    Gated by ``exclude_unscored``: ``None`` where the correctness reward "
               f"``{getattr(correctness, '__name__', 'correctness')}`` left the item unscored (it needs the "
               f"correctness reward's dataset columns too).\n    ")
        out.append(named(gated, getattr(fn, "__name__", "reward"), doc=doc, **{**attrs, "wrapped": fn}))
    return out
