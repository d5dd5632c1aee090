"""The reward registry: reward names a config lists, and the one function that builds them.

After open-r1's ``src/open_r1/rewards.py`` (``get_reward_funcs``): a config names its rewards,
the registry maps each name to its factory, and the factory's settings come from one object,
:class:`~medreason_utils.rewards.settings.RewardSettings`. The notebooks, the playground and
the trainers all build their reward functions through :func:`get_reward_funcs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..verifiers import make_verifier
from .base import RewardFunc
from .correctness import exclude_unscored, make_correctness_reward
from .format import make_partial_format_reward, make_strict_format_reward
from .mcq import make_mcq_exact_match_reward
from .perplexity import make_perplexity_reward

__all__ = ["RegisteredReward", "REWARD_REGISTRY", "get_reward_funcs"]


@dataclass(frozen=True)
class RegisteredReward:
    """One registry entry.

    Attributes:
        factory: builds the reward function from keyword settings.
        settings: reads the factory's keyword arguments from a ``RewardSettings``.
        needs_verifier: the factory takes ``verifier=`` (built once per :func:`get_reward_funcs` call).
        needs_model: the factory takes ``model`` and ``tokenizer`` (a reference model, e.g. the perplexity reward).
    """

    factory: Callable[..., RewardFunc]
    settings: Callable[[Any], dict]
    needs_verifier: bool = False
    needs_model: bool = False

    @property
    def func_name(self) -> str:
        """The ``__name__`` of the functions this entry builds (what TRL logs as ``rewards/<name>/mean``)."""
        import inspect

        return inspect.signature(self.factory).parameters["name"].default


#: Reward names a config can list (``RewardSettings.rewards``), each with its factory.
REWARD_REGISTRY: dict[str, RegisteredReward] = {
    "strict_format": RegisteredReward(
        make_strict_format_reward, lambda s: {"value": s.strict_value, "prefilled_think": s.prefilled_think}
    ),
    "partial_format": RegisteredReward(
        make_partial_format_reward, lambda s: {"per_tag": s.partial_per_tag, "prefilled_think": s.prefilled_think}
    ),
    "correctness": RegisteredReward(
        make_correctness_reward,
        lambda s: {"tiers": s.tiers, "prefilled_think": s.prefilled_think, "max_unscored_fraction": s.max_unscored_fraction},
        needs_verifier=True,
    ),
    "mcq_exact_match": RegisteredReward(
        make_mcq_exact_match_reward, lambda s: {"value": s.mcq_value, "prefilled_think": s.prefilled_think}
    ),
    "perplexity": RegisteredReward(
        make_perplexity_reward, lambda s: {"prefilled_think": s.prefilled_think}, needs_model=True
    ),
}


def get_reward_funcs(settings: Any, verifier: Any = None, *, model: Any = None, tokenizer: Any = None) -> list[RewardFunc]:
    """The reward functions ``settings.rewards`` names, in that order, for ``GRPOTrainer(reward_funcs=...)``.

    Args:
        settings: a :class:`~medreason_utils.rewards.settings.RewardSettings`.
        verifier: a built verifier (or spec) to use instead of ``settings.verifier``; pass one to
            share a loaded model verifier between calls. Built with
            :func:`~medreason_utils.verifiers.make_verifier`, only when a listed reward needs one.
        model, tokenizer: the reference model of a listed reward that needs one (``"perplexity"``).

    When the list has a correctness reward, the other rewards are gated with
    :func:`~medreason_utils.rewards.correctness.exclude_unscored`, so a completion the verifier
    could not score is left out of the advantage rather than rewarded on format alone.

    Raises ``KeyError`` naming an unknown reward and the known ones, ``ValueError`` when a listed
    reward needs a reference model and ``model``/``tokenizer`` are missing.
    """
    names = list(settings.rewards)
    unknown = [n for n in names if n not in REWARD_REGISTRY]
    if unknown:
        raise KeyError(f"unknown reward(s) {unknown}; known: {sorted(REWARD_REGISTRY)}")
    needs = any(REWARD_REGISTRY[n].needs_verifier for n in names)
    v = make_verifier(settings.verifier if verifier is None else verifier) if needs else None
    funcs = []
    for n in names:
        entry = REWARD_REGISTRY[n]
        kwargs = entry.settings(settings)
        if entry.needs_verifier:
            kwargs["verifier"] = v
        if entry.needs_model:
            if model is None or tokenizer is None:
                raise ValueError(f"reward {n!r} needs a reference model: pass model= and tokenizer=")
            kwargs.update(model=model, tokenizer=tokenizer)
        funcs.append(entry.factory(**kwargs))
    if "correctness" in names:
        funcs = exclude_unscored(funcs, funcs[names.index("correctness")])
    return funcs
