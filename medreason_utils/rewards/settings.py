"""Every setting of the GRPO rewards and advantages in one object.

:class:`RewardSettings` is what a recipe's ``rewards:`` section holds (``recipes/*/grpo.yaml``),
what notebook 02's reward playground edits, and what the GRPO trainer is built from:
``settings.reward_funcs()`` for ``GRPOTrainer(reward_funcs=...)`` (through the registry,
:func:`~medreason_utils.rewards.registry.get_reward_funcs`) and ``settings.grpo_config_kwargs()``
for ``GRPOConfig`` (``reward_weights``, ``scale_rewards``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from .correctness import DEFAULT_TIERS, CorrectnessTiers
from .registry import REWARD_REGISTRY, get_reward_funcs

__all__ = ["SCALE_OPTIONS", "DEFAULT_REWARDS", "RewardSettings"]

#: TRL ``GRPOConfig.scale_rewards`` values (TRL 1.16).
SCALE_OPTIONS = ("group", "batch", "none")
#: The suite's three GRPO rewards, by registry name.
DEFAULT_REWARDS = ("strict_format", "partial_format", "correctness")


@dataclass(frozen=True)
class RewardSettings:
    """Every setting of the GRPO rewards and advantages, in one object for the trainer.

    Each field's help text is in its metadata (``dataclasses.fields(RewardSettings)``), as in
    TRL's ``GRPOConfig``. Build from a plain dict (a recipe's ``rewards:`` section) with
    :meth:`from_dict`; :meth:`to_dict` is the inverse (JSON-serialisable, for ``summary.json``).

    Every field is validated where it is read (here, when the object is built), so a bad value
    fails at once naming the setting, not steps later: ``ValueError`` (a ``TypeError`` for a value
    of the wrong type) ``"rewards.strict_value = 'high': a finite number"``, with the source
    (recipe file or ``OVERRIDES``) in front when built by :meth:`from_dict`. Allowed:

    * ``strict_value``, ``mcq_value``: a finite number (an int, a float, or a string a float reads:
      YAML reads ``5e-1`` as a string); ``partial_per_tag``: a finite number >= 0;
    * ``prefilled_think``: ``true`` or ``false`` (a bool; the string ``"false"`` is refused, not read as true);
    * ``max_unscored_fraction``: a number in [0, 1];
    * ``rewards``: a non-empty list of known reward names (a single name is refused: give a list);
    * ``weights``: ``None`` or one finite number per reward; ``scale_rewards``: one of
      :data:`SCALE_OPTIONS` (``True``/``False`` read as ``"group"``/``"none"``);
    * ``tiers``: thresholds in [0, 1] with finite rewards, finite ``below`` and ``no_answer``;
    * ``verifier``: a kind name (``medreason_utils.verifiers.VERIFIER_KINDS``), a dict with such a ``kind``, or an object with ``score``.
    """

    strict_value: float = field(default=3.0, metadata={"help": "Reward of a completion in the strict grammar (0 otherwise)."})
    partial_per_tag: float = field(
        default=0.5, metadata={"help": "Partial format: + this per tag present exactly once, - this per tag that is not."}
    )
    tiers: CorrectnessTiers = field(
        default=DEFAULT_TIERS,
        metadata={"help": "Verifier probability -> correctness reward: thresholds (first p > t wins), below, no_answer. "
                          "Defaults from the reference GRPO medical-reasoning project."},
    )
    weights: tuple[float, ...] | None = field(
        default=None, metadata={"help": "One weight per reward in `rewards` order (TRL's `reward_weights`); None: 1.0 each."}
    )
    verifier: Any = field(
        default="rule",
        metadata={"help": "Judge of the correctness reward: 'rule' (offline matching), a dict spec for "
                          "`medreason_utils.verifiers.make_verifier` (huatuo_local, huatuo_served, llm_judge), or a verifier object."},
    )
    scale_rewards: str = field(
        default="batch",
        metadata={"help": "Advantage scaling (TRL `GRPOConfig.scale_rewards`): 'batch' (the suite's recipe: group mean, "
                          "batch std), 'group' (the GRPO paper) or 'none' (Dr. GRPO, arXiv:2503.20783)."},
    )
    prefilled_think: bool = field(
        default=False, metadata={"help": "The prompt ends with the opening THINK tag (the completion must not open it again)."}
    )
    max_unscored_fraction: float = field(
        default=0.5,
        metadata={"help": "Stop the run when the verifier leaves more than this fraction of a step's completions unscored."},
    )
    rewards: tuple[str, ...] = field(
        default=DEFAULT_REWARDS,
        metadata={"help": f"Reward functions by registry name, in order; known: {', '.join(REWARD_REGISTRY)}."},
    )
    mcq_value: float = field(default=1.0, metadata={"help": "Reward of a right option letter (mcq_exact_match)."})

    def __post_init__(self) -> None:
        for name in ("strict_value", "mcq_value", "partial_per_tag"):
            object.__setattr__(self, name, _number(name, getattr(self, name), low=0.0 if name == "partial_per_tag" else None))
        object.__setattr__(self, "max_unscored_fraction", _number("max_unscored_fraction", self.max_unscored_fraction, low=0.0, high=1.0))
        if not isinstance(self.prefilled_think, bool):
            raise TypeError(f"rewards.prefilled_think = {self.prefilled_think!r}: true or false (a bool, not a "
                            f"{type(self.prefilled_think).__name__})")
        if isinstance(self.rewards, str) or not isinstance(self.rewards, (list, tuple)) or not self.rewards:
            raise TypeError(f"rewards.rewards = {self.rewards!r}: a non-empty list of reward names, known: {', '.join(REWARD_REGISTRY)}")
        if not all(isinstance(n, str) for n in self.rewards):
            raise TypeError(f"rewards.rewards = {list(self.rewards)!r}: reward names (strings), known: {', '.join(REWARD_REGISTRY)}")
        if self.weights is not None and (isinstance(self.weights, (str, Mapping)) or not isinstance(self.weights, (list, tuple))):
            raise TypeError(f"rewards.weights = {self.weights!r}: None or a list of numbers, one per reward")
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(_number(f"weights[{i}]", w) for i, w in enumerate(self.weights)))
        _check_verifier(self.verifier)
        names = tuple(self.rewards)
        unknown = [n for n in names if n not in REWARD_REGISTRY]
        if unknown:
            raise ValueError(f"rewards.rewards: unknown reward(s) {unknown}; known: {sorted(REWARD_REGISTRY)}")
        object.__setattr__(self, "rewards", names)
        w = (1.0,) * len(names) if self.weights is None else tuple(float(x) for x in self.weights)
        if len(w) != len(names):
            raise ValueError(f"rewards.weights needs {len(names)} values, one per reward {names}, got {len(w)}")
        object.__setattr__(self, "weights", w)
        scale = self.scale_rewards
        if isinstance(scale, bool):
            scale = "group" if scale else "none"
        if not isinstance(scale, str) or scale not in SCALE_OPTIONS:
            raise ValueError(f"rewards.scale_rewards = {self.scale_rewards!r}: one of {', '.join(SCALE_OPTIONS)}")
        object.__setattr__(self, "scale_rewards", scale)
        if isinstance(self.tiers, Mapping):
            object.__setattr__(self, "tiers", _tiers_from_dict(self.tiers))
        if not isinstance(self.tiers, CorrectnessTiers):
            raise TypeError(f"rewards.tiers = {self.tiers!r}: {{thresholds: [[p, reward], ...], below: reward, no_answer: reward}}")
        for t, r in self.tiers.thresholds:
            _number("tiers.thresholds", t, low=0.0, high=1.0)
            _number("tiers.thresholds reward", r)
        _number("tiers.below", self.tiers.below)
        _number("tiers.no_answer", self.tiers.no_answer)

    @property
    def func_names(self) -> list[str]:
        """The ``__name__`` of each reward function, in ``rewards`` order (TRL logs ``rewards/<name>/mean``)."""
        return [REWARD_REGISTRY[n].func_name for n in self.rewards]

    def reward_funcs(self, verifier: Any = None, *, model: Any = None, tokenizer: Any = None) -> list:
        """The reward functions for ``GRPOTrainer(reward_funcs=...)``, in ``rewards`` order.

        Built by :func:`~medreason_utils.rewards.registry.get_reward_funcs`; ``verifier``
        overrides :attr:`verifier` (pass an already-built verifier to share it); ``model`` and
        ``tokenizer`` are the reference model of a reward that needs one (``"perplexity"``).
        """
        return get_reward_funcs(self, verifier, model=model, tokenizer=tokenizer)

    @property
    def reward_weights(self) -> list[float]:
        """Weights in ``rewards`` order, for ``GRPOConfig(reward_weights=...)``."""
        return list(self.weights)

    def grpo_config_kwargs(self, loss_type: str = "dr_grpo") -> dict[str, Any]:
        """``{"loss_type", "reward_weights", "scale_rewards"}`` to unpack into ``GRPOConfig``.

        Raises ``ValueError`` for ``loss_type="dr_grpo"`` with ``scale_rewards="group"``: Unsloth's
        GRPOConfig (``unsloth/models/rl.py``, unsloth 2026.10.5) rewrites it, printing only a notice::

            if loss_type.lower() == 'dr_grpo':
                if scale_rewards == None:
                    scale_rewards = True
                elif scale_rewards == True or scale_rewards == 'group':
                    ...
                    scale_rewards = False

        so a GPU run would train without scaling while the same settings on CPU (plain TRL) scale by
        the group std. The suite refuses that pair on both runtimes, so CPU and GPU train alike: pick
        ``"none"`` (what Unsloth would do, Dr. GRPO's choice), ``"batch"`` (the suite's recipe, kept
        by Unsloth), or another ``loss_type``. ``"batch"`` and ``"none"`` pass through Unsloth unchanged.
        """
        if str(loss_type).lower() == "dr_grpo" and self.scale_rewards == "group":
            raise ValueError(
                "scale_rewards='group' with loss_type='dr_grpo': Unsloth's GRPOConfig silently turns it into "
                "scale_rewards=False (no scaling) on a GPU, while TRL on CPU scales by the group std. Choose "
                "'none' (what Unsloth would use), 'batch' (the suite's recipe) or another loss_type."
            )
        return {"loss_type": loss_type, "reward_weights": self.reward_weights, "scale_rewards": self.scale_rewards}

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable settings (a verifier object is shown by its ``repr``); :meth:`from_dict` reads it back."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["tiers"] = {"thresholds": [list(t) for t in self.tiers.thresholds], "below": self.tiers.below, "no_answer": self.tiers.no_answer}
        d["weights"] = dict(zip(self.func_names, self.weights))
        d["rewards"] = list(self.rewards)
        if not isinstance(self.verifier, (str, dict, type(None))):
            d["verifier"] = repr(self.verifier)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> "RewardSettings":
        """Settings from a plain dict, every error naming ``source`` (the recipe file, or ``"OVERRIDES"``)
        before the setting; see :meth:`_from_dict`."""
        try:
            return cls._from_dict(data)
        except (KeyError, ValueError, TypeError) as exc:
            if not source:
                raise
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise type(exc)(f"{source}: {msg}") from exc

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> "RewardSettings":
        """Settings from a plain dict (a recipe's ``rewards:`` section or :meth:`to_dict`'s output).

        ``tiers`` may be ``{"thresholds": [[p, reward], ...], "below": ..., "no_answer": ...}``;
        ``weights`` a list in ``rewards`` order or a dict keyed by reward name (``strict_format``)
        or function name (``strict_format_reward``). Raises ``KeyError`` naming a key that is not a
        setting, ``ValueError`` as the class does.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"rewards = {data!r}: a mapping of settings, known: {sorted(f.name for f in fields(cls))}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KeyError(f"rewards: no setting(s) {unknown}; known: {sorted(known)}")
        d = dict(data)
        if isinstance(d.get("rewards"), list):
            d["rewards"] = tuple(d["rewards"])
        if isinstance(d.get("tiers"), Mapping):
            d["tiers"] = _tiers_from_dict(d["tiers"])
        weights = d.get("weights")
        if isinstance(weights, Mapping):
            names = d.get("rewards", DEFAULT_REWARDS)
            unknown_rewards = [n for n in names if n not in REWARD_REGISTRY]
            if unknown_rewards:
                raise ValueError(f"rewards.rewards: unknown reward(s) {unknown_rewards}; known: {sorted(REWARD_REGISTRY)}")
            by_name = {}
            for k, v in weights.items():
                key = next((n for n in names if k in (n, REWARD_REGISTRY[n].func_name)), None)
                if key is None:
                    raise KeyError(f"rewards.weights: {k!r} is not one of the rewards {list(names)}")
                by_name[key] = v
            missing = [n for n in names if n not in by_name]  # noqa: E501
            if missing:
                raise KeyError(f"rewards.weights: no weight for {missing}")
            d["weights"] = tuple(by_name[n] for n in names)
        elif isinstance(weights, list):
            d["weights"] = tuple(weights)
        return cls(**d)


def _number(name: str, value: Any, *, low: float | None = None, high: float | None = None) -> float:
    """``value`` as a finite float within [low, high], or an error naming ``rewards.<name>`` and what is allowed."""
    allowed = "a finite number" + (f" in [{low:g}, {high:g}]" if low is not None and high is not None
                                   else f" >= {low:g}" if low is not None else "")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"rewards.{name} = {value!r}: {allowed}")
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"rewards.{name} = {value!r}: {allowed}") from None
    if not math.isfinite(x) or (low is not None and x < low) or (high is not None and x > high):
        raise ValueError(f"rewards.{name} = {value!r}: {allowed}")
    return x


def _check_verifier(v: Any) -> None:
    from ..verifiers import VERIFIER_KINDS

    kind = v.get("kind", "rule") if isinstance(v, Mapping) else v
    if v is None or hasattr(v, "score"):
        return
    if not isinstance(kind, str) or kind not in VERIFIER_KINDS:
        raise ValueError(f"rewards.verifier = {v!r}: a kind ({', '.join(VERIFIER_KINDS)}), a dict with such a 'kind', or a verifier object")


def _tiers_from_dict(d: Mapping[str, Any]) -> CorrectnessTiers:
    unknown = sorted(set(d) - {"thresholds", "below", "no_answer"})
    if unknown:
        raise KeyError(f"rewards.tiers: no setting(s) {unknown}; known: thresholds, below, no_answer")
    kwargs = dict(d)
    if "thresholds" in kwargs:
        th = kwargs["thresholds"]
        if isinstance(th, (str, Mapping)) or not isinstance(th, (list, tuple)) or not all(
                isinstance(t, (list, tuple)) and len(t) == 2 for t in th):
            raise TypeError(f"rewards.tiers.thresholds = {th!r}: a list of [probability in [0, 1], reward] pairs")
        kwargs["thresholds"] = tuple((_number("tiers.thresholds", p, low=0.0, high=1.0), _number("tiers.thresholds reward", r))
                                     for p, r in th)
    for k in ("below", "no_answer"):
        if k in kwargs:
            kwargs[k] = _number(f"tiers.{k}", kwargs[k])
    return CorrectnessTiers(**kwargs)
