"""Scoring (exact match, format compliance, strict subset, lenient, plain reading, fair score), intervals and McNemar."""

import math

import pytest
from scipy.stats import binomtest, chi2

from medreason_utils.evaluation import compare_runs, format_compliance, score_mcq
from medreason_utils.parsing import find_choice_anywhere, plain_choice
from medreason_utils.evaluation.stats import mcnemar_paired, mean_and_spread, wilson_interval

OPTS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Alteplase"}
ITEMS = [{"id": f"q{i}", "options": OPTS, "answer": "B", "subject": "cardio" if i % 2 else "heme"} for i in range(6)]


def test_score_tells_wrong_format_from_wrong_answer():
    completions = [
        "<THINK>Bleeding risk is low.</THINK><ANSWER>B. Heparin</ANSWER>",  # strict, right
        "<THINK>Thrombolysis.</THINK><ANSWER>D. Alteplase</ANSWER>",  # strict, wrong
        "Heparin is needed.<ANSWER>B</ANSWER>",  # not strict, right letter in the ANSWER block
        "<THINK>unfinished reasoning that never closes",  # no answer
        "The answer is B.",  # no tags: wrong for exact match, right for lenient
        [{"role": "assistant", "content": "<THINK>x</THINK><ANSWER>(B)</ANSWER>"}],  # conversational completion
    ]
    r = score_mcq(completions, ITEMS, benchmark="toy", model="m")
    assert [x.predicted for x in r.items] == ["B", "D", "B", None, None, "B"]
    assert [x.strict for x in r.items] == [True, True, False, False, False, True]
    assert r.n == 6 and r.correct == 3 and r.exact_match == pytest.approx(3 / 6)
    assert r.format_compliance == pytest.approx(3 / 6) == format_compliance(completions)
    assert r.n_strict == 3 and r.strict_exact_match == pytest.approx(2 / 3)
    assert r.lenient_correct == 4 and r.lenient_match == pytest.approx(4 / 6)
    assert r.answered == pytest.approx(4 / 6)
    assert r.ci_low < r.exact_match < r.ci_high
    s = r.summary()
    assert "items" not in s and s["exact_match"] == r.exact_match
    # the suite's prompt is read by the grammar: its fair score is exact match; the plain reading is shown beside it
    assert [x.plain for x in r.items] == ["B", "D", "B", None, "B", "B"]
    assert r.reading == "grammar" and r.score == r.exact_match and (r.score_ci_low, r.score_ci_high) == (r.ci_low, r.ci_high)
    assert r.plain_correct == 4 and r.plain_match == pytest.approx(4 / 6)
    plain = score_mcq(completions, ITEMS, benchmark="toy", model="m (plain prompt)", reading="plain")
    assert plain.reading == "plain" and plain.score == pytest.approx(4 / 6) and plain.exact_match == r.exact_match
    assert plain.score_ci_low < plain.score < plain.score_ci_high
    with pytest.raises(ValueError, match="reading"):
        score_mcq(completions, ITEMS, reading="lenient")


def test_score_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 completions for 6 items"):
        score_mcq(["a", "b"], ITEMS)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<THINK>r</THINK><ANSWER>C. Warfarin</ANSWER>", "C"),  # the ANSWER block first
        ("Let me think. The answer is (D).", "D"),  # "answer is X"
        ("the answer is: b", "B"),
        ("A 60-year-old man with AF. I would pick C here.", "C"),  # article "A " and pronoun "I " are not letters
        ("Options A or B... I'd say **B**", "B"),  # the last letter standing alone
        ("<THINK>Maybe A. The answer is A</THINK> Final choice: C", "C"),  # only after the reasoning
        ("Warfarin would be my choice over aspirin here", "A"),  # option text occurring last
        ("answer is Aspirin", "A"),  # not the letter A of "Aspirin": the option text
        ("No idea at all.", None),  # no guessing from similarity
        (None, None),
    ],
)
def test_lenient_reading_after_huatuogpt_o1_rules(text, expected):
    assert find_choice_anywhere(text, OPTS) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        # answers of the kind SmolLM2-135M-Instruct writes to the plain prompt
        ("The answer is B.", "B"),
        ("B) Heparin", "B"),
        ("I think (C)", "C"),
        ("A patient with a DVT should be anticoagulated first.", None),  # the article, not option A
        ("A. Aspirin", "A"),  # a label: the letter and a full stop
        ("**B.** Heparin is given first", "B"),
        ("Answer: D", "D"),
        ("Final Answer: **C**", "C"),  # lm-eval-harness's MedQA regex
        ("c", "C"),  # nothing but a letter, either case
        # the first stated answer wins (lm-eval's take_first): the explanation names other options
        ("B. Heparin. A is wrong because aspirin is an antiplatelet drug, and the answer is not C.", "B"),
        ("The correct answer is C: Warfarin. Option A would be too weak.", "C"),
        ("The answer is a vitamin deficiency.", None),  # a lower-case article after "answer is" is not option A
        ("Answer B is not right here, so I pick (D).", "D"),  # "answer B" states nothing; the letter standing alone
        ("Heparin, because it acts at once.", "B"),  # the option's text
        ("<THINK>r</THINK><ANSWER>C. Warfarin</ANSWER>", "C"),  # the grammar read as well
        ("I do not know.", None),
        (None, None),
    ],
)
def test_plain_reading_of_free_answers(text, expected):
    assert plain_choice(text, OPTS) == expected


def test_lenient_pronoun_i_with_ten_options():
    ten = {L: f"option {L.lower()}{L.lower()}" for L in "ABCDEFGHIJ"}
    assert find_choice_anywhere("I think the best is F, not I.", ten) == "I"
    assert find_choice_anywhere("I think the best is F.", ten) == "F"


def _wilson_closed_form(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(629, 1273), (1927, 4183), (0, 40), (40, 40), (17, 41)])
def test_wilson_matches_the_closed_form(k, n):
    lo, hi = wilson_interval(k, n)
    elo, ehi = _wilson_closed_form(k, n)
    assert lo == pytest.approx(max(0, elo), abs=1e-9) and hi == pytest.approx(min(1, ehi), abs=1e-9)
    assert 0 <= lo <= k / n <= hi <= 1


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_mcnemar_exact_is_the_binomial_test_on_discordant_pairs():
    a = [True] * 30 + [True] * 3 + [False] * 12 + [False] * 15
    b = [True] * 30 + [False] * 3 + [True] * 12 + [False] * 15
    m = mcnemar_paired(a, b)
    assert (m.both, m.only_a, m.only_b, m.neither, m.n) == (30, 3, 12, 15, 60)
    assert m.exact and m.difference == pytest.approx(9 / 60)
    assert m.p_value == pytest.approx(binomtest(3, 15, 0.5).pvalue)
    assert m.significant(0.05)


def test_mcnemar_chi2_with_continuity_correction_for_many_discordant_pairs():
    a = [True] * 20 + [False] * 40 + [True] * 10
    b = [False] * 20 + [True] * 40 + [True] * 10
    m = mcnemar_paired(a, b)
    stat = (abs(20 - 40) - 1) ** 2 / 60
    assert not m.exact and m.statistic == pytest.approx(stat)
    assert m.p_value == pytest.approx(chi2.sf(stat, 1))
    same = mcnemar_paired([True, False], [True, False])
    assert same.p_value == 1.0 and not same.significant()
    with pytest.raises(ValueError, match="same items"):
        mcnemar_paired([True], [True, False])


def _run(model, completions, reading):
    items = [{"id": f"q{i}", "options": OPTS, "answer": "B"} for i in range(len(completions))]
    return score_mcq(completions, items, benchmark="toy", model=model, reading=reading)


def test_comparisons_pair_each_run_on_its_fair_score():
    """The base model asked with the plain prompt is right on 12 of 20 items by the plain reading
    (0 by the grammar, which it was never asked for); the trained model on 4 by the grammar. The
    comparison pairs 12 against 4, says which reading each side used, and keeps the grammar's figures beside."""
    base = _run("base (plain prompt)", ["The answer is B."] * 12 + ["The answer is A."] * 8, "plain")
    sft = _run("sft", ["<THINK>r</THINK><ANSWER>B</ANSWER>"] * 4 + ["<THINK>r</THINK><ANSWER>D</ANSWER>"] * 16, "grammar")
    assert (base.exact_match, base.score, sft.score) == (0.0, 0.6, 0.2)
    [c] = compare_runs([base, sft])
    assert (c["reading_a"], c["reading_b"], c["score_a"], c["score_b"]) == ("plain", "grammar", 0.6, 0.2)
    assert (c["only_a"], c["only_b"], c["difference"]) == (8, 0, pytest.approx(-0.4))
    assert c["p_value"] == pytest.approx(binomtest(0, 8, 0.5).pvalue) and c["test"] == "McNemar exact"
    assert (c["exact_match_a"], c["exact_match_b"]) == (0.0, 0.2)
    # read by the grammar, the base model would lose every item: the unfair comparison the reading avoids
    as_grammar = _run("base", [x.completion for x in base.items], "grammar")
    [unfair] = compare_runs([as_grammar, sft])
    assert (unfair["reading_a"], unfair["score_a"], unfair["only_b"]) == ("grammar", 0.0, 4)
    # format compliance is compared only where both prompts ask for the grammar
    assert (c["format_a"], c["format_b"], c["format_p_value"]) == (0.0, 1.0, None)


def test_comparisons_pair_format_compliance_of_grammar_runs():
    """SFT closes its answer on 6 of 20 items, GRPO on all 20: format compliance differs on 14 items,
    all one way (McNemar exact p = 2 * 0.5**14)."""
    cut = "<THINK>r</THINK><ANSWER>B"  # no closing tag: not in the strict grammar
    sft = _run("sft", ["<THINK>r</THINK><ANSWER>B</ANSWER>"] * 6 + [cut] * 14, "grammar")
    grpo = _run("grpo", ["<THINK>r</THINK><ANSWER>B</ANSWER>"] * 20, "grammar")
    [c] = compare_runs([sft, grpo])
    assert (c["format_a"], c["format_b"], c["format_only_a"], c["format_only_b"]) == (0.3, 1.0, 0, 14)
    assert c["format_p_value"] == pytest.approx(binomtest(0, 14, 0.5).pvalue)


def test_mean_and_spread():
    m, s = mean_and_spread([0.5, 0.6, 0.7])
    assert m == pytest.approx(0.6) and s == pytest.approx(0.1)
    assert mean_and_spread([0.4]) == (0.4, 0.0)
