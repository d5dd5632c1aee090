"""The reward-hacking table: each adversarial completion gets the reward it must from every reward, fast,
never raising; docs/reward-hacking.md is what scripts/reward_hacking_table.py computes from the rewards."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from medreason_utils.rewards.hacking import CASES, REWARDS, measure

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def measured():
    return {r["case"]: r for r in measure()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_adversarial_completion_gets_the_reward_it_must(case, measured):
    row = measured[case.name]
    assert {n: row[n] for n in REWARDS} == case.expect


def test_no_hack_beats_the_right_answer_nor_the_wrong_answers_correctness(measured):
    right, wrong = measured["right answer"], measured["wrong answer"]
    for name, row in measured.items():
        if name == "right answer":
            continue
        assert sum(row[n] for n in REWARDS) < sum(right[n] for n in REWARDS), name
        assert row["correctness"] <= max(wrong["correctness"], -2.0), name


def test_one_megabyte_completion_is_scored_fast(measured):
    """Four rewards on a 1 MiB completion; measured 2026-12-04 on the shared 2-core machine (loaded): 0.4-0.8 s."""
    assert measured["1 MB completion"]["seconds"] < 5.0


def test_doc_table_is_what_the_script_computes():
    spec = importlib.util.spec_from_file_location("reward_hacking_table", ROOT / "scripts" / "reward_hacking_table.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    doc = (ROOT / "docs" / "reward-hacking.md").read_text(encoding="utf-8")
    assert script.render(doc) == doc, "docs/reward-hacking.md is out of date: run python scripts/reward_hacking_table.py"
