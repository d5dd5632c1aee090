"""The one completion parser: parse_completion, extract_choice and friends."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medreason_utils.parsing import (
    choice_from_completion,
    completion_text,
    extract_choice,
    find_choice_anywhere,
    normalize_answer,
    parse_completion,
)
from medreason_utils.prompts import DEFAULT_TAGS, Tags, format_response

TAGS = list(DEFAULT_TAGS.all)

# --------------------------------------------------------------------------------------------
# parse_completion
# --------------------------------------------------------------------------------------------

# (completion, think, answer, is_strict, is_strict with prefilled_think=True)
CASES = [
    ("<THINK>r</THINK><ANSWER>a</ANSWER>", "r", "a", True, False),
    ("\n  <THINK>\n r \n</THINK>\n\n<ANSWER>\n a b \n</ANSWER>\n ", "r", "a b", True, False),
    # something after, before or between the blocks
    ("<THINK>r</THINK><ANSWER>a</ANSWER> more", "r", "a", False, False),
    ("so <THINK>r</THINK><ANSWER>a</ANSWER>", "r", "a", False, False),
    ("<THINK>r</THINK> so <ANSWER>a</ANSWER>", "r", "a", False, False),
    # empty blocks
    ("<THINK></THINK><ANSWER>a</ANSWER>", None, "a", False, False),
    ("<THINK>r</THINK><ANSWER>  </ANSWER>", "r", None, False, False),
    # truncated
    ("<THINK>r</THINK><ANSWER>a", "r", None, False, False),
    ("<THINK>r", None, None, False, False),
    ("<THINK>r</THINK><ANSWER>a</ANS", "r", None, False, False),
    # wrong order
    ("<ANSWER>a</ANSWER><THINK>r</THINK>", "r", "a", False, False),
    # duplicated
    ("<THINK>r</THINK><ANSWER>a</ANSWER><ANSWER>b</ANSWER>", "r", "b", False, False),
    ("<THINK>r</THINK><THINK>s</THINK><ANSWER>a</ANSWER>", "r", "a", False, False),
    ("<THINK>r</THINK><ANSWER>a</ANSWER></ANSWER>", "r", "a", False, False),
    ("<THINK>r</THINK><ANSWER>a</ANSWER> x <ANSWER>b", "r", "a", False, False),
    # nested
    ("<THINK>r<THINK>s</THINK></THINK><ANSWER>a</ANSWER>", "s", "a", False, False),
    ("<THINK>r</THINK><ANSWER>a<ANSWER>b</ANSWER></ANSWER>", "r", "b", False, False),
    ("<THINK>r<ANSWER>x</ANSWER></THINK><ANSWER>a</ANSWER>", "r<ANSWER>x</ANSWER>", "a", False, False),
    # no tags, empty
    ("The answer is B.", None, None, False, False),
    ("", None, None, False, False),
    # prefilled: the completion starts inside the reasoning
    ("r</THINK><ANSWER>a</ANSWER>", None, "a", False, True),
    ("  r \n</THINK>\n<ANSWER>a</ANSWER>\n", None, "a", False, True),
    ("</THINK><ANSWER>a</ANSWER>", None, "a", False, False),
    # other case of the tag names is not the grammar
    ("<think>r</think><answer>a</answer>", None, None, False, False),
    # unicode
    ("<THINK>Fièvre → 39 °C; 发热</THINK><ANSWER>Паровирус B19 ✓</ANSWER>", "Fièvre → 39 °C; 发热", "Паровирус B19 ✓", True, False),
    ("\u3000<THINK>r</THINK>\u00a0<ANSWER>a</ANSWER>\u2003", "r", "a", True, False),
]


@pytest.mark.parametrize("text,think,answer,strict,strict_prefilled", CASES)
def test_parse_completion_cases(text, think, answer, strict, strict_prefilled):
    parsed = parse_completion(text)
    assert parsed.think == think
    assert parsed.answer == answer
    assert parsed.is_strict is strict
    assert parse_completion(text, prefilled_think=True).is_strict is strict_prefilled
    assert parsed.tag_counts == {tag: text.count(tag) for tag in TAGS}


def test_prefilled_think_reads_reasoning_before_first_close():
    parsed = parse_completion("  step 1. step 2. </THINK><ANSWER>B</ANSWER>", prefilled_think=True)
    assert parsed.think == "step 1. step 2."
    assert parsed.answer == "B" and parsed.is_strict


def test_prefilled_think_blank_reasoning_not_strict():
    assert not parse_completion("  </THINK><ANSWER>B</ANSWER>", prefilled_think=True).is_strict


@pytest.mark.parametrize("value", [None, 3, 2.5, object(), [None, 1], {"content": None}, b"<ANSWER>a</ANSWER>"])
def test_non_string_completions_read_as_empty(value):
    parsed = parse_completion(value)
    assert (parsed.think, parsed.answer, parsed.is_strict) == (None, None, False)
    assert completion_text(value) == ""


def test_conversational_completions():
    text = "<THINK>r</THINK><ANSWER>a</ANSWER>"
    assert completion_text([{"role": "assistant", "content": text}]) == text
    assert completion_text({"role": "assistant", "content": text}) == text
    parts = {"role": "assistant", "content": [{"type": "text", "text": "<THINK>r</THINK>"}, {"type": "text", "text": "<ANSWER>a</ANSWER>"}]}
    assert completion_text([parts]) == text
    assert parse_completion([{"role": "assistant", "content": text}]).is_strict
    assert parse_completion([parts]).answer == "a"


def test_custom_tags():
    tags = Tags("reasoning", "final")
    parsed = parse_completion("<reasoning>r</reasoning><final>a</final>", tags=tags)
    assert parsed.is_strict and parsed.answer == "a" and parsed.think == "r"
    assert parse_completion("<THINK>r</THINK><ANSWER>a</ANSWER>", tags=tags).answer is None


# --------------------------------------------------------------------------------------------
# Property tests
# --------------------------------------------------------------------------------------------

# Text built from the tags and short fragments hits the parser's edge cases far more often
# than random unicode alone.
FRAGMENT = st.one_of(
    st.sampled_from(TAGS + ["<", ">", "</", "/", " ", "\n", "THINK", "ANSWER", "B", "é", "日本"]),
    st.text(max_size=8),
)
TAGGY_TEXT = st.lists(FRAGMENT, max_size=20).map("".join)
TAGLESS = st.text(min_size=1, max_size=40).filter(lambda s: "<" not in s and ">" not in s and s.strip())


@settings(max_examples=300, deadline=None)
@given(TAGGY_TEXT, st.booleans())
def test_parse_never_raises_and_is_consistent(text, prefilled):
    parsed = parse_completion(text, prefilled_think=prefilled)
    assert isinstance(parsed.is_strict, bool)
    if parsed.answer is not None:
        assert parsed.answer == parsed.answer.strip() and parsed.answer
        assert DEFAULT_TAGS.answer_open not in parsed.answer
        assert DEFAULT_TAGS.answer_close not in parsed.answer
    if parsed.is_strict:
        assert parsed.answer is not None
        assert parsed.think is not None
        expected = {tag: 1 for tag in TAGS}
        if prefilled:
            expected[DEFAULT_TAGS.think_open] = 0
        assert parsed.tag_counts == expected


@settings(max_examples=200, deadline=None)
@given(TAGLESS, TAGLESS)
def test_format_response_round_trip(reasoning, answer):
    parsed = parse_completion(format_response(reasoning, answer))
    assert parsed.is_strict
    assert parsed.think == reasoning.strip()
    assert parsed.answer == answer.strip()
    # the same body, prefilled: drop the opening tag
    body = format_response(reasoning, answer)[len(DEFAULT_TAGS.think_open) :]
    assert parse_completion(body, prefilled_think=True).is_strict


# --------------------------------------------------------------------------------------------
# extract_choice and friends
# --------------------------------------------------------------------------------------------

OPTS = {
    "A": "Iron deficiency anemia",
    "B": "Vitamin B12 deficiency",
    "C": "Parvovirus B19 infection",
    "D": "Lead poisoning",
}


@pytest.mark.parametrize(
    "answer,letter",
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("[C]", "C"),
        ("c", "C"),
        (" (b) ", "B"),
        ("a.", "A"),
        ("B. Vitamin B12 deficiency", "B"),
        ("C) Parvovirus B19 infection", "C"),
        ("D: Lead poisoning", "D"),
        ("B - Vitamin B12 deficiency", "B"),
        ("Option C", "C"),
        ("The answer is D", "D"),
        ("answer: (A)", "A"),
        ("The answer is b", "B"),
        ("I choose (C) because of the reticulocytes", "C"),
        # option text only, any case and punctuation
        ("Vitamin B12 deficiency", "B"),
        ("parvovirus b19 infection.", "C"),
        ("It is most likely a parvovirus B19 infection causing aplastic crisis", "C"),
        # an article is not an option letter
        ("A deficiency of vitamin B12", None),
        ("The answer is a vitamin deficiency", None),
        ("The best choice is a blood transfusion", None),
        ("A lead poisoning", "D"),
        # two options named
        ("B or C", None),
        ("(B) and (C)", None),
        ("Iron deficiency anemia or lead poisoning", None),
        # none named
        ("Thalassemia", None),
        ("E", None),
        ("", None),
        ("   ", None),
        (None, None),
        (5, None),
    ],
)
def test_extract_choice(answer, letter):
    assert extract_choice(answer, OPTS) == letter


def test_extract_choice_option_inside_longer_option():
    opts = {"A": "Anemia", "B": "Iron deficiency anemia", "C": "Lead poisoning"}
    assert extract_choice("iron deficiency anemia", opts) == "B"
    assert extract_choice("anemia", opts) == "A"


def test_extract_choice_list_options_and_bad_options():
    assert extract_choice("second", ["first", "second"]) == "B"
    assert extract_choice("B", {}) is None
    assert extract_choice("B", {"Z": "x"}) is None
    assert extract_choice("B", None) is None


def test_extract_choice_letter_outside_options():
    assert extract_choice("E", {"A": "x", "B": "y"}) is None
    assert extract_choice("E. Staph aureus", OPTS) is None


def test_extract_choice_ten_options():
    opts = [f"drug {i}" for i in range(10)]
    assert extract_choice("J", opts) == "J"
    assert extract_choice("drug 7", opts) == "H"


@settings(max_examples=300, deadline=None)
@given(TAGGY_TEXT)
def test_extract_choice_never_raises(text):
    letter = extract_choice(text, OPTS)
    assert letter is None or letter in OPTS


def test_choice_from_completion_reads_answer_block_only():
    letter, parsed = choice_from_completion("<THINK>maybe A</THINK><ANSWER>C. Parvovirus B19 infection</ANSWER>", OPTS)
    assert letter == "C" and parsed.is_strict
    letter, parsed = choice_from_completion("The answer is C.", OPTS)
    assert letter is None and parsed.answer is None
    letter, _ = choice_from_completion([{"role": "assistant", "content": "r</THINK><ANSWER>(D)</ANSWER>"}], OPTS, prefilled_think=True)
    assert letter == "D"


def test_find_choice_anywhere_reads_answer_block_first():
    # the lenient reading's own rules are tested with the evaluation (tests/test_eval_scoring.py)
    assert find_choice_anywhere("<THINK>maybe D</THINK><ANSWER>B</ANSWER>", OPTS) == "B"
    assert find_choice_anywhere("long text... so the answer is (C).", OPTS) == "C"
    assert find_choice_anywhere(None, OPTS) is None


@pytest.mark.parametrize(
    "text,norm",
    [
        ("The  Answer, is: B12!", "answer is b12"),
        ("ＡＢＣ", "abc"),  # NFKC full-width
        ("an apple a day", "apple day"),
        ("Crohn's disease", "crohn s disease"),
        ("", ""),
        (None, ""),
        (3, ""),
    ],
)
def test_normalize_answer(text, norm):
    assert normalize_answer(text) == norm
