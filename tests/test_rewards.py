"""Reward functions: values on well-formed, truncated, nested, duplicated, empty and unicode
completions, both TRL completion formats, bounds, and the correctness reward's tiers and
unscored items (with small verifiers written here: real classes implementing the protocol)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medreason_utils.rewards import (
    DEFAULT_TIERS,
    REWARD_REGISTRY,
    CorrectnessTiers,
    RewardSettings,
    UnscoredError,
    get_reward_funcs,
    make_correctness_reward,
    make_mcq_exact_match_reward,
    make_partial_format_reward,
    make_strict_format_reward,
    mcq_exact_match_reward,
    partial_format_reward,
    strict_format_reward,
)
from medreason_utils.prompts import DEFAULT_TAGS
from medreason_utils.verifiers import RuleBasedVerifier, Verifier

TAGS = list(DEFAULT_TAGS.all)

# name -> (completion, strict reward, partial reward); partial = +0.5 per tag exactly once, -0.5 otherwise
COMPLETIONS = {
    "well_formed": ("<THINK>low retics</THINK>\n<ANSWER>Parvovirus B19 infection</ANSWER>", 3.0, 2.0),
    "well_formed_padded": ("\n <THINK>\nr\n</THINK>\n<ANSWER>\na\n</ANSWER>\n\n", 3.0, 2.0),
    "trailing_text": ("<THINK>r</THINK><ANSWER>a</ANSWER> Hope this helps!", 0.0, 2.0),
    "truncated_in_answer": ("<THINK>r</THINK><ANSWER>Parvo", 0.0, 1.0),
    "truncated_in_think": ("<THINK>reasoning goes on and on", 0.0, -1.0),
    "nested_think": ("<THINK>r<THINK>s</THINK></THINK><ANSWER>a</ANSWER>", 0.0, 0.0),
    "nested_answer": ("<THINK>r</THINK><ANSWER>a<ANSWER>b</ANSWER></ANSWER>", 0.0, 0.0),
    "duplicated_answer": ("<THINK>r</THINK><ANSWER>a</ANSWER><ANSWER>b</ANSWER>", 0.0, 0.0),
    "duplicated_all": ("<THINK>r</THINK><ANSWER>a</ANSWER>" * 2, 0.0, -2.0),
    "empty_blocks": ("<THINK></THINK><ANSWER></ANSWER>", 0.0, 2.0),
    "empty": ("", 0.0, -2.0),
    "no_tags": ("The answer is parvovirus B19.", 0.0, -2.0),
    "wrong_order": ("<ANSWER>a</ANSWER><THINK>r</THINK>", 0.0, 2.0),
    "unicode": ("<THINK>Fièvre 39 °C, 发热 → ?</THINK><ANSWER>Паровирус B19 ✓</ANSWER>", 3.0, 2.0),
    "lower_case_tags": ("<think>r</think><answer>a</answer>", 0.0, -2.0),
}
IDS = list(COMPLETIONS)


def conversational(text):
    return [{"role": "assistant", "content": text}]


def test_reward_names_are_stable():
    assert strict_format_reward.__name__ == "strict_format_reward"
    assert partial_format_reward.__name__ == "partial_format_reward"
    assert mcq_exact_match_reward.__name__ == "mcq_exact_match_reward"
    assert make_correctness_reward(RuleBasedVerifier()).__name__ == "correctness_reward"
    assert make_strict_format_reward(prefilled_think=True).__name__ == "strict_format_reward"
    assert make_partial_format_reward(name="pf").__name__ == "pf"


@pytest.mark.parametrize("key", IDS)
def test_strict_format_reward(key):
    text, strict, _ = COMPLETIONS[key]
    assert strict_format_reward([text]) == [strict]
    assert strict_format_reward([conversational(text)]) == [strict]


@pytest.mark.parametrize("key", IDS)
def test_partial_format_reward(key):
    text, _, partial = COMPLETIONS[key]
    assert partial_format_reward([text]) == [partial]
    assert partial_format_reward([conversational(text)]) == [partial]


def test_format_rewards_batch_order_and_kwargs_ignored():
    texts = [COMPLETIONS[k][0] for k in IDS]
    out = strict_format_reward(texts, prompts=["p"] * len(texts), answer=["x"] * len(texts), trainer_state=None)
    assert out == [COMPLETIONS[k][1] for k in IDS]
    assert partial_format_reward(texts) == [COMPLETIONS[k][2] for k in IDS]
    assert strict_format_reward([]) == [] and partial_format_reward([]) == []


def test_prefilled_think_format_rewards():
    strict = make_strict_format_reward(prefilled_think=True)
    partial = make_partial_format_reward(prefilled_think=True)
    assert strict(["r</THINK><ANSWER>a</ANSWER>"]) == [3.0]
    assert strict(["<THINK>r</THINK><ANSWER>a</ANSWER>"]) == [0.0]  # opened the reasoning again
    assert partial(["r</THINK><ANSWER>a</ANSWER>"]) == [1.5]
    # the opening THINK tag is in the prompt and not counted, even when the completion repeats it
    assert partial(["<THINK>r</THINK><ANSWER>a</ANSWER>"]) == [1.5]
    assert partial([""]) == [-1.5]
    assert partial(["r</THINK><ANSWER>a"]) == [0.5]


def test_format_reward_custom_values():
    assert make_strict_format_reward(2.0)(["<THINK>r</THINK><ANSWER>a</ANSWER>"]) == [2.0]
    assert make_partial_format_reward(0.25)(["<THINK>r</THINK>"]) == [0.0]


@pytest.mark.parametrize("bad", [None, 3, {"content": None}, [None], [{"role": "assistant"}], b"<THINK>"])
def test_format_rewards_on_malformed_completions(bad):
    assert strict_format_reward([bad]) == [0.0]
    assert partial_format_reward([bad]) == [-2.0]


# --------------------------------------------------------------------------------------------
# Correctness
# --------------------------------------------------------------------------------------------


class TableVerifier:
    """A verifier that gives the probability written in the prediction ("p=0.75"), ``None`` for
    "unscorable", and records what it was asked."""

    def __init__(self):
        self.calls: list[tuple[list, list, list | None]] = []

    def score(self, predictions, references, questions=None):
        self.calls.append((list(predictions), list(references), None if questions is None else list(questions)))
        out = []
        for p in predictions:
            if p == "unscorable":
                out.append(None)
            elif p == "nan":
                out.append(float("nan"))
            else:
                out.append(float(p.split("=", 1)[1]))
        return out


class BrokenVerifier:
    """A verifier whose backend is down: every call raises."""

    def score(self, predictions, references, questions=None):
        raise ConnectionError("verifier server at 127.0.0.1:9 refused the connection")


class ShortVerifier:
    """A verifier that returns one score too few."""

    def score(self, predictions, references, questions=None):
        return [1.0] * (len(predictions) - 1)


def answer(text):
    return f"<THINK>r</THINK><ANSWER>{text}</ANSWER>"


def test_test_verifiers_implement_the_protocol():
    assert isinstance(TableVerifier(), Verifier)
    assert isinstance(BrokenVerifier(), Verifier)


@pytest.mark.parametrize(
    "p,reward",
    [(1.0, 5.0), (0.95, 5.0), (0.9, 3.5), (0.8, 3.5), (0.7, 2.0), (0.6, 2.0), (0.5, 1.5), (0.4, 1.5), (0.3, -2.5), (0.1, -2.5), (0.0, -2.5),
     (1.7, 5.0), (-0.4, -2.5)],  # out-of-range probabilities are clipped to [0, 1]
)
def test_correctness_tiers(p, reward):
    fn = make_correctness_reward(TableVerifier())
    assert fn([answer(f"p={p}")], answer=["ref"]) == [reward]


def test_correctness_no_answer_skips_verifier():
    verifier = TableVerifier()
    fn = make_correctness_reward(verifier)
    completions = ["no tags at all", answer("p=0.95"), "<THINK>r</THINK><ANSWER>trunc", answer("  "), conversational(answer("p=0.6"))]
    out = fn(completions, answer=["r1", "r2", "r3", "r4", "r5"], question=["q1", "q2", "q3", "q4", "q5"])
    assert out == [-2.0, 5.0, -2.0, -2.0, 2.0]
    assert verifier.calls == [(["p=0.95", "p=0.6"], ["r2", "r5"], ["q2", "q5"])]


def test_correctness_unscored_item_is_none_and_counted():
    fn = make_correctness_reward(TableVerifier(), max_unscored_fraction=1.0)
    metrics = {}
    out = fn(
        [answer("p=0.95"), answer("unscorable"), answer("nan"), "x"],
        answer=["a"] * 4,
        log_metric=lambda k, v: metrics.__setitem__(k, v),
    )
    assert out == [5.0, None, None, -2.0]
    assert fn.counter.unscored == 2 and fn.counter.items == 4 and fn.counter.calls == 1
    assert metrics == {"correctness/unscored_fraction": 0.5, "correctness/unscored": 2.0,
                       "correctness/verifier_fallbacks": 0.0}


def test_correctness_verifier_failure_gives_none_not_zero():
    fn = make_correctness_reward(BrokenVerifier(), max_unscored_fraction=1.0)  # 1.0: never stop the run
    out = fn([answer("a"), "no answer", answer("b")], answer=["a", "b", "c"])
    assert out == [None, -2.0, None]
    assert fn.counter.unscored == 2
    assert "ConnectionError" in fn.counter.last_error and "127.0.0.1:9" in fn.counter.last_error


def test_correctness_wrong_length_from_verifier_is_unscored():
    fn = make_correctness_reward(ShortVerifier(), max_unscored_fraction=1.0)
    assert fn([answer("a"), answer("b")], answer=["a", "b"]) == [None, None]
    assert "2 items" in fn.counter.last_error


def test_correctness_max_unscored_fraction_raises():
    fn = make_correctness_reward(BrokenVerifier(), max_unscored_fraction=0.5)
    with pytest.raises(UnscoredError, match="127.0.0.1:9"):
        fn([answer("a"), answer("b")], answer=["a", "b"])
    # at or below the allowed fraction it does not raise
    assert fn([answer("a"), "x"], answer=["a", "b"]) == [None, -2.0]


def test_correctness_missing_answer_column_names_it():
    fn = make_correctness_reward(TableVerifier(), answer_key="solution")
    with pytest.raises(KeyError, match="solution"):
        fn([answer("p=1")], answer=["x"])


def test_correctness_custom_tiers():
    tiers = CorrectnessTiers(thresholds=((0.5, 1.0),), below=0.0, no_answer=-1.0)
    fn = make_correctness_reward(TableVerifier(), tiers=tiers)
    assert fn([answer("p=0.6"), answer("p=0.5"), "x"], answer=["a"] * 3) == [1.0, 0.0, -1.0]
    assert tiers.bounds == (-1.0, 1.0)
    assert DEFAULT_TIERS.bounds == (-2.5, 5.0)
    with pytest.raises(ValueError):
        CorrectnessTiers(thresholds=((1.5, 1.0),))


def test_correctness_with_rule_based_verifier():
    fn = make_correctness_reward(RuleBasedVerifier())
    out = fn(
        [answer("Parvovirus B19 infection"), answer("parvovirus B19 infection."), answer("Iron deficiency"), "Parvovirus B19 infection"],
        answer=["Parvovirus B19 infection"] * 4,
    )
    assert out == [5.0, 5.0, -2.5, -2.0]


def test_correctness_prefilled_think():
    fn = make_correctness_reward(TableVerifier(), prefilled_think=True)
    assert fn(["r</THINK><ANSWER>p=0.95</ANSWER>"], answer=["a"]) == [5.0]


# --------------------------------------------------------------------------------------------
# Multiple-choice exact match
# --------------------------------------------------------------------------------------------

OPTS = {"A": "Iron deficiency anemia", "B": "Vitamin B12 deficiency", "C": "Parvovirus B19 infection", "D": "Lead poisoning"}


def test_mcq_exact_match_reward():
    completions = [
        answer("C"),
        answer("C. Parvovirus B19 infection"),
        answer("parvovirus b19 infection"),
        answer("B"),
        answer("B or C"),
        "The answer is C",  # no ANSWER block
        "<THINK>r</THINK><ANSWER>C",  # truncated
        answer("C") + answer("B"),  # duplicated: the last block counts
        conversational(answer("(C)")),
        "",
    ]
    n = len(completions)
    out = mcq_exact_match_reward(completions, answer=["C"] * n, options=[OPTS] * n)
    assert out == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def test_mcq_exact_match_reward_not_applicable_rows_are_none():
    out = mcq_exact_match_reward([answer("C"), answer("C"), answer("C")], answer=["C", "C", None], options=[OPTS, None, OPTS])
    assert out == [1.0, None, None]
    assert mcq_exact_match_reward([answer("C")]) == [None]  # an open-ended dataset: no options column


def test_mcq_exact_match_reward_gold_letter_case_and_dataset_struct_options():
    struct = {**OPTS, "E": None}  # datasets merges 4- and 5-option rows with None for the absent letter
    assert mcq_exact_match_reward([answer("c")], answer=[" c "], options=[struct]) == [1.0]
    assert mcq_exact_match_reward([answer("E")], answer=["E"], options=[struct]) == [0.0]


def test_mcq_exact_match_reward_column_length_mismatch_raises():
    with pytest.raises(ValueError, match="answer"):
        mcq_exact_match_reward([answer("C")] * 3, answer=["C"], options=[OPTS] * 3)
    with pytest.raises(ValueError, match="options"):
        mcq_exact_match_reward([answer("C")] * 2, answer=["C"] * 2, options=[OPTS])


def test_mcq_exact_match_reward_malformed_options_never_raise():
    out = mcq_exact_match_reward([answer("C")] * 4, answer=["C"] * 4, options=[{"Z": "x"}, 5, "CD", {}])
    assert all(v in (0.0, 1.0, None) for v in out)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_registry_builds_functions_by_name_from_one_settings_object():
    assert set(REWARD_REGISTRY) == {"strict_format", "partial_format", "correctness", "mcq_exact_match", "perplexity"}
    settings = RewardSettings(rewards=("strict_format", "correctness"), strict_value=2.0)
    funcs = get_reward_funcs(settings, TableVerifier())
    assert [f.__name__ for f in funcs] == ["strict_format_reward", "correctness_reward"] == settings.func_names
    assert funcs[0]([answer("p=0.95")], answer=["x"]) == [2.0]
    assert isinstance(funcs[1].verifier, TableVerifier)
    assert [f.__name__ for f in settings.reward_funcs(TableVerifier())] == settings.func_names  # the same path
    mcq = RewardSettings(rewards=("mcq_exact_match",), mcq_value=3.0).reward_funcs()
    assert mcq[0]([answer("A")], answer=["A"], options=[{"A": "x", "B": "y"}]) == [3.0]
    with pytest.raises(ValueError, match="mystery"):
        RewardSettings(rewards=("mystery",))
    with pytest.raises(KeyError, match="mystery"):
        get_reward_funcs(type("S", (), {"rewards": ["mystery"]})())


def _run_docstring_examples(fn) -> "doctest.TestResults":
    import doctest

    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = doctest.DocTestFinder().find(fn, fn.__name__, globs={fn.__name__: fn})
    for t in tests:
        runner.run(t)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("prefilled", [False, True])
def test_every_reward_function_has_a_docstring_example_that_holds(prefilled):
    # rewards that need a reference model (perplexity) carry an example too, run with the model in test_perplexity_reward.py
    names = tuple(n for n, entry in REWARD_REGISTRY.items() if not entry.needs_model)
    built = RewardSettings(rewards=names, prefilled_think=prefilled, strict_value=2.5).reward_funcs()
    for fn in [strict_format_reward, partial_format_reward, mcq_exact_match_reward, *built]:
        doc = fn.__doc__ or ""
        assert "Example:" in doc and ">>>" in doc, f"{fn.__name__} has no example in its docstring"
        result = _run_docstring_examples(fn)
        assert result.attempted >= 1 and result.failed == 0, f"{fn.__name__}: {result}"
    assert "2.5" in built[0].__doc__  # the docstring states the settings the function was built with


# --------------------------------------------------------------------------------------------
# Properties: on arbitrary text, tags included, no reward raises and each stays in its bounds
# --------------------------------------------------------------------------------------------

FRAGMENT = st.one_of(
    st.sampled_from(TAGS + ["<", ">", "</", " ", "\n", "A", "B", "C. Parvovirus B19 infection", "é", "日本", "\u0000"]),
    st.text(max_size=8),
)
TEXT = st.lists(FRAGMENT, max_size=16).map("".join)
COMPLETION = st.one_of(TEXT, TEXT.map(conversational), st.none(), st.integers())

PARTIAL_PREFILLED = make_partial_format_reward(prefilled_think=True)
STRICT_PREFILLED = make_strict_format_reward(prefilled_think=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(COMPLETION, min_size=1, max_size=6), TEXT)
def test_rewards_never_raise_and_stay_in_bounds(completions, reference):
    n = len(completions)
    for fn, low, high in [
        (strict_format_reward, 0.0, 3.0),
        (STRICT_PREFILLED, 0.0, 3.0),
        (partial_format_reward, -2.0, 2.0),
        (PARTIAL_PREFILLED, -1.5, 1.5),
    ]:
        out = fn(completions)
        assert len(out) == n
        assert all(isinstance(v, float) and low <= v <= high for v in out)
    correctness = make_correctness_reward(RuleBasedVerifier())
    out = correctness(completions, answer=[reference] * n, question=[reference] * n)
    low, high = DEFAULT_TIERS.bounds
    assert len(out) == n and all(v is not None and not math.isnan(v) and low <= v <= high for v in out)
    out = mcq_exact_match_reward(completions, answer=["C"] * n, options=[OPTS] * n)
    assert len(out) == n and all(v in (0.0, 1.0) for v in out)
