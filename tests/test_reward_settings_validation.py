"""RewardSettings.from_dict validates every field where it is read: types (a string is not a bool), finite
numbers, ranges; each error names the setting, the source (recipe file or OVERRIDES) and what is allowed."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medreason_utils.rewards import RewardSettings
from medreason_utils.rewards.registry import REWARD_REGISTRY

SOURCE = "recipes/cpu/grpo.yaml"


@pytest.mark.parametrize("data,error,message", [
    ({"prefilled_think": "false"}, TypeError, "rewards.prefilled_think = 'false': true or false"),
    ({"prefilled_think": 1}, TypeError, "rewards.prefilled_think = 1: true or false"),
    ({"strict_value": "high"}, ValueError, "rewards.strict_value = 'high': a finite number"),
    ({"strict_value": float("inf")}, ValueError, "rewards.strict_value = inf: a finite number"),
    ({"partial_per_tag": -0.5}, ValueError, "rewards.partial_per_tag = -0.5: a finite number >= 0"),
    ({"mcq_value": True}, TypeError, "rewards.mcq_value = True: a finite number"),
    ({"max_unscored_fraction": 1.5}, ValueError, r"rewards.max_unscored_fraction = 1.5: a finite number in \[0, 1\]"),
    ({"rewards": "correctness"}, TypeError, "rewards.rewards = 'correctness': a non-empty list"),
    ({"rewards": []}, TypeError, "rewards.rewards = \\(\\): a non-empty list|rewards.rewards = \\[\\]: a non-empty list"),
    ({"weights": [1, float("nan"), 1]}, ValueError, r"rewards.weights\[1\] = nan: a finite number"),
    ({"weights": "1,1,1"}, TypeError, "rewards.weights = '1,1,1': None or a list"),
    ({"scale_rewards": "std"}, ValueError, "rewards.scale_rewards = 'std': one of group, batch, none"),
    ({"verifier": "rules"}, ValueError, "rewards.verifier = 'rules': a kind"),
    ({"tiers": {"thresholds": [[0.9, "five"]]}}, ValueError, "rewards.tiers.thresholds reward = 'five': a finite number"),
    ({"tiers": {"below": None}}, TypeError, "rewards.tiers.below = None: a finite number"),
])
def test_bad_setting_names_itself_the_source_and_what_is_allowed(data, error, message):
    with pytest.raises(error, match=f"^{SOURCE}: ({message})"):
        RewardSettings.from_dict(data, source=SOURCE)


def test_overrides_source_reaches_the_message_through_the_stage_config():
    from medreason_utils.config import load_stage_config
    from medreason_utils.config.stages import SettingError

    config = load_stage_config("grpo", "cpu")
    with pytest.raises(SettingError, match=r"^OVERRIDES: rewards.prefilled_think = 'false'"):
        config.with_overrides({"rewards.prefilled_think": "false"}, label="OVERRIDES")


def test_valid_strings_of_numbers_are_read():
    s = RewardSettings.from_dict({"strict_value": "5e-1", "tiers": {"thresholds": [["0.9", 5]], "below": "-2"}})
    assert s.strict_value == 0.5 and s.tiers.thresholds == ((0.9, 5.0),) and s.tiers.below == -2.0


_ANY = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=6), st.sampled_from(["false", "true", "high", "1.5", "group", "rule", "batch"]),
                 st.lists(st.floats(-3, 3), max_size=4))
_FIELDS = {
    "strict_value": _ANY, "partial_per_tag": _ANY, "mcq_value": _ANY, "max_unscored_fraction": _ANY, "prefilled_think": _ANY,
    "scale_rewards": _ANY, "verifier": st.one_of(_ANY, st.sampled_from(["rule", {"kind": "rule"}, {"kind": "nope"}])),
    "weights": st.one_of(_ANY, st.lists(_ANY, max_size=4)),
    "rewards": st.one_of(_ANY, st.lists(st.sampled_from(sorted(REWARD_REGISTRY) + ["nope"]), max_size=4)),
    "tiers": st.one_of(_ANY, st.fixed_dictionaries({}, optional={"below": _ANY, "no_answer": _ANY,
                                                                  "thresholds": st.lists(st.tuples(_ANY, _ANY), max_size=3)})),
}


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional=_FIELDS))
def test_from_dict_accepts_only_valid_settings_and_names_the_rest(data):
    """Property: any dict of settings either builds settings whose every field is valid, or raises KeyError,
    ValueError or TypeError naming the source and a ``rewards.`` setting; nothing else, nothing half-valid."""
    try:
        s = RewardSettings.from_dict(data, source="OVERRIDES")
    except (KeyError, ValueError, TypeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        assert msg.startswith("OVERRIDES: ") and ("rewards." in msg or "reward(s)" in msg), msg
        return
    assert isinstance(s.prefilled_think, bool)
    for v in (s.strict_value, s.partial_per_tag, s.mcq_value, s.tiers.below, s.tiers.no_answer, *s.weights):
        assert isinstance(v, float) and math.isfinite(v)
    assert s.partial_per_tag >= 0 and 0 <= s.max_unscored_fraction <= 1
    assert len(s.weights) == len(s.rewards) >= 1 and all(n in REWARD_REGISTRY for n in s.rewards)
    assert s.scale_rewards in ("group", "batch", "none")
    assert all(0 <= t <= 1 and math.isfinite(r) for t, r in s.tiers.thresholds)
    assert RewardSettings.from_dict(s.to_dict()) == s
