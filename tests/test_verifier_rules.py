"""The offline rule-based verifier: normalised exact match, option letter or option text for
multiple choice, aliases, containment, and its probability scale against the reward tiers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medreason_utils.rewards import DEFAULT_TIERS
from medreason_utils.verifiers import RuleBasedVerifier, Verifier, check_score_inputs

REF = "Parvovirus B19 infection"


@pytest.fixture(scope="module")
def verifier():
    return RuleBasedVerifier(aliases={REF: ["fifth disease", "erythema infectiosum"], "myocardial infarction": ["MI", "heart attack"]})


def one(verifier, pred, ref):
    (p,) = verifier.score([pred], [ref])
    return p


def test_is_a_verifier():
    assert isinstance(RuleBasedVerifier(), Verifier)


@pytest.mark.parametrize(
    "pred",
    [REF, "parvovirus b19 infection", "  Parvovirus B19 infection.  ", "The parvovirus B19 infection", "PARVOVIRUS B19 INFECTION!"],
)
def test_normalised_exact_match(verifier, pred):
    assert one(verifier, pred, REF) == 1.0


@pytest.mark.parametrize("pred", ["Fifth disease", "erythema infectiosum."])
def test_aliases(verifier, pred):
    assert one(verifier, pred, REF) == 1.0


def test_aliases_keyed_by_raw_or_normalised_reference(verifier):
    assert one(verifier, "heart attack", "Myocardial infarction") == 1.0
    assert one(verifier, "MI", "myocardial infarction.") == 1.0
    assert one(RuleBasedVerifier(), "heart attack", "Myocardial infarction") < 0.3


def test_prediction_containing_reference(verifier):
    assert one(verifier, "It is a parvovirus B19 infection causing transient aplastic crisis", REF) == 0.8


def test_prediction_contained_in_reference(verifier):
    assert one(verifier, "Parvovirus B19", REF) == 0.6  # 2 of 3 tokens
    assert one(verifier, "infection", REF) < 0.6  # 1 of 3: token F1 only


def test_unrelated_and_partial_overlap(verifier):
    assert one(verifier, "Iron deficiency anemia", REF) == 0.0
    partial = one(verifier, "Parvovirus infection of the marrow", REF)
    assert 0.0 < partial <= 0.5


@pytest.mark.parametrize(
    "pred,ref,p",
    [
        ("B", "B", 1.0),
        ("(B)", "B", 1.0),
        ("b", "B", 1.0),
        ("The answer is B", "B", 1.0),
        ("B. Vitamin B12 deficiency", "B", 1.0),
        ("C", "B", 0.0),
        ("C. Folate deficiency", "B", 0.0),
        ("B. Vitamin B12 deficiency", "B. Vitamin B12 deficiency", 1.0),
        ("B", "B. Vitamin B12 deficiency", 1.0),
        ("vitamin B12 deficiency", "B. Vitamin B12 deficiency", 1.0),
        ("(B) Vitamin B12 deficiency", "(B) Vitamin B12 deficiency", 1.0),
        ("C", "B. Vitamin B12 deficiency", 0.0),
        ("A deficiency of vitamin B12", "A", 0.0),
    ],
)
def test_multiple_choice_references(verifier, pred, ref, p):
    assert one(verifier, pred, ref) == p


def test_other_option_lands_in_lowest_tier(verifier):
    # naming option A when the gold is B: only token overlap ("deficiency") is left, below 0.3
    assert one(verifier, "A. Iron deficiency anemia", "B. Vitamin B12 deficiency") <= 0.3


@pytest.mark.parametrize(
    "pred,ref",
    [
        ("B and C", "B"),  # names two options
        ("Hepatitis B", "B"),  # a letter inside a disease name is not option B
        ("E. Staphylococcus aureus", "E. coli"),  # "E. coli" is an organism, not option E
    ],
)
def test_multiple_choice_false_positives(verifier, pred, ref):
    assert one(verifier, pred, ref) < 0.3


@pytest.mark.parametrize("pred,ref", [("", REF), ("   ", REF), (REF, ""), (None, REF), (REF, None)])
def test_blank_or_missing_scores_zero(verifier, pred, ref):
    assert one(verifier, pred, ref) == 0.0


def test_scale_lands_in_reward_tiers(verifier):
    """Exact 1.0 -> top tier, containment 0.8 -> second tier, contained 0.6 -> third, unrelated -> below."""
    scores = verifier.score([REF, f"a {REF} in a child", "Parvovirus B19", "Lead poisoning"], [REF] * 4)
    assert [DEFAULT_TIERS.reward(p) for p in scores] == [5.0, 3.5, 2.0, -2.5]


def test_length_mismatch_raises_naming_argument(verifier):
    with pytest.raises(ValueError, match="references"):
        verifier.score(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="questions"):
        verifier.score(["a"], ["a"], ["q1", "q2"])
    check_score_inputs(["a"], ["b"], None)  # equal lengths: no error


def test_questions_are_accepted_and_ignored(verifier):
    assert verifier.score([REF, "x"], [REF, REF], ["q1", "q2"]) == verifier.score([REF, "x"], [REF, REF])


def test_never_none(verifier):
    assert None not in verifier.score(["a", "", "B"], ["b", "c", "B"])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_probability_in_unit_interval(pred, ref):
    (p,) = RuleBasedVerifier().score([pred], [ref])
    assert isinstance(p, float) and 0.0 <= p <= 1.0


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=40).filter(lambda s: any(c.isalnum() for c in s)))
def test_identical_answers_score_one(text):
    (p,) = RuleBasedVerifier().score([text], [text])
    assert p == 1.0


@pytest.mark.parametrize(
    "pred,ref,expected",
    [
        ("Answer: B", "B. Folate", 1.0),  # the letter named by a statement, nothing contradicting it
        ("The correct answer is B", "B. Folate", 1.0),
        ("(B) Folate deficiency", "B. Folate deficiency", 1.0),
        ("B. Iron deficiency", "B. Folate deficiency", None),  # right letter, contradicting text: not 1.0
    ],
)
def test_option_label_reference_needs_the_letter_and_no_contradicting_text(verifier, pred, ref, expected):
    score = one(verifier, pred, ref)
    if expected is None:
        assert score < 1.0
    else:
        assert score == expected
