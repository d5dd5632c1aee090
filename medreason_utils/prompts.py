"""Prompts and chat messages for the response grammar ``<THINK>...</THINK><ANSWER>...</ANSWER>``.

Every stage builds its messages here, so SFT rows, GRPO prompts and evaluation prompts
use one system prompt and one set of tag names. Messages are lists of
``{"role": ..., "content": ...}`` dicts, the conversational format TRL and
``tokenizer.apply_chat_template`` take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

__all__ = [
    "DEFAULT_CHAT_TEMPLATE_KWARGS",
    "Tags",
    "DEFAULT_TAGS",
    "OPTION_LETTERS",
    "system_prompt",
    "format_response",
    "sft_messages",
    "question_prompt",
    "render_options",
    "normalise_options",
    "MCQ_INSTRUCTION",
    "PLAIN_INSTRUCTION",
    "mcq_prompt",
]

#: Passed to chat templates when prompts are rendered (generation, data length checks): Qwen3
#: templates otherwise open their own ``<think>`` block.
DEFAULT_CHAT_TEMPLATE_KWARGS = {"enable_thinking": False}

#: Letters used to label multiple-choice options (MedXpertQA and MMLU-Pro have ten).
OPTION_LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Tags:
    """Tag names of the response grammar.

    ``Tags("THINK", "ANSWER")`` gives the tags ``<THINK>``, ``</THINK>``, ``<ANSWER>``,
    ``</ANSWER>``. Names are case-sensitive and must be non-empty words without ``<``,
    ``>`` or ``/`` (raises ``ValueError`` otherwise).
    """

    think: str = "THINK"
    answer: str = "ANSWER"

    def __post_init__(self) -> None:
        for field_name in ("think", "answer"):
            name = getattr(self, field_name)
            if not isinstance(name, str) or not name.strip() or any(c in name for c in "<>/ \t\n"):
                raise ValueError(f"Tags.{field_name} must be a non-empty word without '<', '>', '/' or spaces, got {name!r}")
        if self.think == self.answer:
            raise ValueError(f"Tags.think and Tags.answer must differ, both are {self.think!r}")

    @property
    def think_open(self) -> str:
        return f"<{self.think}>"

    @property
    def think_close(self) -> str:
        return f"</{self.think}>"

    @property
    def answer_open(self) -> str:
        return f"<{self.answer}>"

    @property
    def answer_close(self) -> str:
        return f"</{self.answer}>"

    @property
    def all(self) -> tuple[str, str, str, str]:
        """The four tags in grammar order: think open/close, answer open/close."""
        return (self.think_open, self.think_close, self.answer_open, self.answer_close)


DEFAULT_TAGS = Tags()


def system_prompt(tags: Tags = DEFAULT_TAGS) -> str:
    """The system prompt that states the response grammar.

    Adapted from the reference GRPO medical-reasoning notebook (reasoning between two tags,
    then the answer between two tags); the tag names follow ``tags``.
    """
    return (
        "You are a careful medical reasoning assistant. "
        f"First think through the problem step by step between {tags.think_open} and {tags.think_close}. "
        f"Then give your final answer between {tags.answer_open} and {tags.answer_close}. "
        "Write nothing after the answer."
    )


def format_response(reasoning: str, answer: str, tags: Tags = DEFAULT_TAGS) -> str:
    """The assistant turn in the grammar: ``<THINK>\\n{reasoning}\\n</THINK>\\n<ANSWER>\\n{answer}\\n</ANSWER>``.

    ``reasoning`` and ``answer`` are stripped; either blank raises ``ValueError``.
    """
    reasoning, answer = (reasoning or "").strip(), (answer or "").strip()
    if not reasoning or not answer:
        raise ValueError("format_response needs a non-blank reasoning and a non-blank answer")
    return (
        f"{tags.think_open}\n{reasoning}\n{tags.think_close}\n"
        f"{tags.answer_open}\n{answer}\n{tags.answer_close}"
    )


def _base_messages(user: str, system: str | None, tags: Tags) -> list[dict]:
    if not isinstance(user, str) or not user.strip():
        raise ValueError("the question (user message) must be a non-blank string")
    sys_text = system_prompt(tags) if system is None else system
    messages = [{"role": "system", "content": sys_text}] if sys_text else []
    messages.append({"role": "user", "content": user.strip()})
    return messages


def sft_messages(
    question: str, reasoning: str, answer: str, *, tags: Tags = DEFAULT_TAGS, system: str | None = None
) -> list[dict]:
    """A full SFT conversation: system, user question, assistant answer in the grammar.

    Returns a list of three messages (two when ``system=""``). ``system=None`` uses
    :func:`system_prompt`.
    """
    messages = _base_messages(question, system, tags)
    messages.append({"role": "assistant", "content": format_response(reasoning, answer, tags)})
    return messages


def question_prompt(question: str, *, tags: Tags = DEFAULT_TAGS, system: str | None = None) -> list[dict]:
    """A generation prompt for an open question: system (the grammar) and user messages, no assistant turn.

    What GRPO trains on, what format compliance is measured on, what the playground and the demo ask.
    Raises ``ValueError`` for a blank question.
    """
    return _base_messages(question, system, tags)


def render_options(options: Mapping[str, str | None] | Sequence[str]) -> str:
    """Render options one per line as ``A. text``.

    ``options`` is a mapping letter -> text (``None`` values, as a merged datasets struct
    gives for absent letters, are skipped) or a sequence of texts lettered A, B, ...
    Raises ``ValueError`` when there is no option or more than ten.
    """
    items = normalise_options(options)
    return "\n".join(f"{letter}. {text}" for letter, text in items.items())


def normalise_options(options: Mapping[str, str | None] | Sequence[str]) -> dict[str, str]:
    """Options as an ordered ``{letter: text}`` dict, ``None``/blank entries dropped (in a
    sequence the others keep their positional letters: ``["x", None, "z"]`` gives A and C).

    Raises ``ValueError`` for no options, more than ten, or a key that is not one of A-J.
    """
    if isinstance(options, Mapping):
        items = {str(k).strip().upper(): str(v).strip() for k, v in options.items() if v is not None and str(v).strip()}
        bad = [k for k in items if k not in OPTION_LETTERS or len(k) != 1]
        if bad:
            raise ValueError(f"option keys must be letters A-J, got {bad}")
        items = dict(sorted(items.items()))
    else:
        texts = ["" if t is None else str(t).strip() for t in options]
        if len(texts) > len(OPTION_LETTERS):
            raise ValueError(f"at most {len(OPTION_LETTERS)} options are supported, got {len(texts)}")
        items = {OPTION_LETTERS[i]: t for i, t in enumerate(texts) if t}
    if not items:
        raise ValueError("no options given")
    return items


MCQ_INSTRUCTION = "Choose the single best option. In the answer, give the letter of the option and its text."
#: Instruction of the plain prompt (no grammar, no system prompt): scores a model with its own chat template.
PLAIN_INSTRUCTION = "Answer with the letter of the correct option."


def mcq_prompt(
    question: str,
    options: Mapping[str, str | None] | Sequence[str],
    *,
    tags: Tags = DEFAULT_TAGS,
    system: str | None = None,
    context: str | None = None,
    plain: bool = False,
) -> list[dict]:
    """A multiple-choice prompt: the question, optional context (e.g. a PubMedQA abstract), options as ``A. text``.

    ``plain=False`` (the suite's prompt): the system prompt with the response grammar, then the
    user message ending with :data:`MCQ_INSTRUCTION`. ``plain=True``: one user message ending
    with :data:`PLAIN_INSTRUCTION`, no system prompt and no grammar (``tags`` and ``system`` are
    not used), so a base model is scored with its own chat template and the gain of training is
    not confused with the gain of the suite's template.

    Raises ``ValueError`` when the question is not a non-blank string, or for bad options (see
    :func:`normalise_options`).
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"the question of a multiple-choice prompt must be a non-blank string, got {question!r}")
    parts = []
    if isinstance(context, str) and context.strip():
        parts.append(f"Context: {context.strip()}")
    parts.append(question.strip())
    parts.append(render_options(options))
    parts.append(PLAIN_INSTRUCTION if plain else MCQ_INSTRUCTION)
    if plain:
        return [{"role": "user", "content": "\n\n".join(parts)}]
    return _base_messages("\n\n".join(parts), system, tags)
