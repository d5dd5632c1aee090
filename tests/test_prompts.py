"""Prompts: tag names, the system prompt, SFT rows, GRPO and multiple-choice prompts."""

from __future__ import annotations

import pytest

from medreason_utils.parsing import parse_completion
from medreason_utils.prompts import (
    DEFAULT_TAGS,
    MCQ_INSTRUCTION,
    Tags,
    format_response,
    question_prompt,
    mcq_prompt,
    normalise_options,
    render_options,
    sft_messages,
    system_prompt,
)


def test_default_tags_text():
    assert DEFAULT_TAGS.all == ("<THINK>", "</THINK>", "<ANSWER>", "</ANSWER>")


def test_custom_tags_follow_names():
    tags = Tags("reasoning", "final")
    assert tags.all == ("<reasoning>", "</reasoning>", "<final>", "</final>")
    text = system_prompt(tags)
    for tag in tags.all:
        assert tag in text
    assert "<THINK>" not in text


@pytest.mark.parametrize("think,answer", [("", "A"), ("a b", "A"), ("<X>", "A"), ("a/b", "A"), ("T", "T"), (None, "A")])
def test_bad_tag_names_raise(think, answer):
    with pytest.raises(ValueError):
        Tags(think, answer)


def test_system_prompt_names_all_four_tags():
    text = system_prompt()
    for tag in DEFAULT_TAGS.all:
        assert tag in text


def test_format_response_is_strict_and_round_trips():
    text = format_response("  step one. step two.  ", "\n Parvovirus B19 infection \n")
    parsed = parse_completion(text)
    assert parsed.is_strict
    assert parsed.think == "step one. step two."
    assert parsed.answer == "Parvovirus B19 infection"


@pytest.mark.parametrize("reasoning,answer", [("", "x"), ("x", ""), ("  ", "x"), ("x", "\n"), (None, "x")])
def test_format_response_blank_raises(reasoning, answer):
    with pytest.raises(ValueError):
        format_response(reasoning, answer)


def test_sft_messages_roles_and_grammar():
    msgs = sft_messages("  What causes aplastic crisis?  ", "Think.", "Parvovirus B19")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[0]["content"] == system_prompt()
    assert msgs[1]["content"] == "What causes aplastic crisis?"
    parsed = parse_completion(msgs[2]["content"])
    assert parsed.is_strict and parsed.answer == "Parvovirus B19"


def test_sft_messages_without_system():
    msgs = sft_messages("Q?", "r", "a", system="")
    assert [m["role"] for m in msgs] == ["user", "assistant"]


def test_question_prompt_has_no_assistant_turn():
    msgs = question_prompt("Q?")
    assert [m["role"] for m in msgs] == ["system", "user"]
    custom = question_prompt("Q?", system="Be brief.")
    assert custom[0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize("question", ["", "   ", None, 3])
def test_blank_question_raises(question):
    with pytest.raises(ValueError):
        question_prompt(question)
    with pytest.raises(ValueError):
        sft_messages(question, "r", "a")
    with pytest.raises(ValueError):
        mcq_prompt(question, ["x", "y"])


def test_normalise_options_mapping_sorted_and_nones_dropped():
    opts = normalise_options({"c": " third ", "A": "first", "B": None, "D": "  "})
    assert opts == {"A": "first", "C": "third"}
    assert list(opts) == ["A", "C"]


def test_normalise_options_sequence_letters_positions():
    assert normalise_options(["x", "", "z"]) == {"A": "x", "C": "z"}
    assert normalise_options(["x", None, "z"]) == {"A": "x", "C": "z"}
    assert list(normalise_options([str(i) for i in range(10)])) == list("ABCDEFGHIJ")


@pytest.mark.parametrize("options", [{}, [], ["", " "], {"K": "x"}, {"AB": "x"}, [str(i) for i in range(11)]])
def test_normalise_options_bad_raise(options):
    with pytest.raises(ValueError):
        normalise_options(options)


def test_render_options():
    assert render_options({"B": "beta", "A": "alpha"}) == "A. alpha\nB. beta"


def test_mcq_prompt_layout():
    msgs = mcq_prompt(" Which vitamin? ", {"A": "B12", "B": "C"}, context="An abstract.")
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    assert user.split("\n\n") == ["Context: An abstract.", "Which vitamin?", "A. B12\nB. C", MCQ_INSTRUCTION]


def test_mcq_prompt_without_context():
    user = mcq_prompt("Q?", ["x", "y"])[1]["content"]
    assert user.startswith("Q?\n\nA. x\nB. y")
    assert "Context" not in user


def test_plain_mcq_prompt_is_one_user_message_without_the_grammar():
    from medreason_utils.prompts import PLAIN_INSTRUCTION

    msgs = mcq_prompt(" Which vitamin? ", {"A": "B12", "B": "C"}, context="An abstract.", plain=True)
    assert [m["role"] for m in msgs] == ["user"]
    assert msgs[0]["content"].split("\n\n") == ["Context: An abstract.", "Which vitamin?", "A. B12\nB. C", PLAIN_INSTRUCTION]
    assert "THINK" not in msgs[0]["content"]
    # the suite's prompt asks the same question in the same words, only the instruction and the system prompt differ
    suite = mcq_prompt(" Which vitamin? ", {"A": "B12", "B": "C"}, context="An abstract.")[1]["content"]
    assert suite.replace(MCQ_INSTRUCTION, PLAIN_INSTRUCTION) == msgs[0]["content"]
