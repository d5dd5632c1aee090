"""Format rewards: the whole response grammar (strict) and each tag on its own (partial).

Values after the reference GRPO medical-reasoning project: strict format 3.0 / 0.0; partial
format +0.5 per tag present exactly once, -0.5 per tag that is not.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..parsing import completion_text, parse_completion
from ..prompts import DEFAULT_TAGS, Tags
from .base import RewardFunc, named

__all__ = ["make_strict_format_reward", "make_partial_format_reward", "strict_format_reward", "partial_format_reward"]

_STRICT_DOC = """Reward {value} for a completion in the strict grammar, else 0.0.

    Strict (``parse_completion(c{prefilled}).is_strict``): the whole completion is one non-empty
    {think_open}...{think_close} block then one non-empty {answer_open}...{answer_close} block,
    each tag exactly once, nothing else but whitespace.{prefilled_note}

    Args:
        completions: plain strings or conversational completions (``[{{"role": "assistant",
            "content": ...}}]``), as TRL's ``GRPOTrainer`` passes them.
        **kwargs: dataset columns; not used, accepted for TRL.

    Returns:
        ``list[float]``, one of {{0.0, {value}}} per completion. Never raises.

    Example:
    >>> completions = [
    ...     [{{"role": "assistant", "content": "{example_ok}"}}],
    ...     [{{"role": "assistant", "content": "{example_bad}"}}],
    ... ]
    >>> {name}(completions, answer=["measles", "measles"])  # TRL passes the dataset columns too
    [{value}, 0.0]
    """

_PARTIAL_DOC = """+{per_tag} for each grammar tag that occurs exactly once, -{per_tag} for each that does not.

    Tags counted: {counted}{prefilled_note} Range [{low}, {high}].

    Args:
        completions: plain strings or conversational completions, as TRL passes them.
        **kwargs: dataset columns; not used, accepted for TRL.

    Returns:
        ``list[float]``, one per completion. Never raises.

    Example:
    >>> {name}(["{example_ok}", "{example_half}"], answer=["measles", "measles"])
    [{high}, {half}]
    """


def _examples(tags: Tags, prefilled_think: bool) -> tuple[str, str, str]:
    think = "" if prefilled_think else tags.think_open
    ok = f"{think}Fever and rash.{tags.think_close}{tags.answer_open}Measles{tags.answer_close}"
    bad = f"{think}Fever and rash.{tags.think_close} Measles"
    half = f"{think}Fever and rash. Measles"
    return ok, bad, half


def make_strict_format_reward(
    value: float = 3.0, *, prefilled_think: bool = False, tags: Tags = DEFAULT_TAGS, name: str = "strict_format_reward"
) -> RewardFunc:
    """Reward ``value`` when ``parse_completion(c).is_strict``, else 0.0. Range {0, value}.

    The returned function's docstring states its settings and shows an example.
    """

    def strict_format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [
            float(value) if parse_completion(c, prefilled_think=prefilled_think, tags=tags).is_strict else 0.0
            for c in completions
        ]

    ok, bad, _ = _examples(tags, prefilled_think)
    doc = _STRICT_DOC.format(
        value=float(value), name=name, think_open=tags.think_open, think_close=tags.think_close,
        answer_open=tags.answer_open, answer_close=tags.answer_close, example_ok=ok, example_bad=bad,
        prefilled=", prefilled_think=True" if prefilled_think else "",
        prefilled_note=(f" The prompt ends with {tags.think_open}, so the completion must not open it again." if prefilled_think else ""),
    )
    return named(strict_format_reward, name, doc=doc, value=value, prefilled_think=prefilled_think, tags=tags)


def make_partial_format_reward(
    per_tag: float = 0.5, *, prefilled_think: bool = False, tags: Tags = DEFAULT_TAGS, name: str = "partial_format_reward"
) -> RewardFunc:
    """``+per_tag`` for each tag that occurs exactly once, ``-per_tag`` for each that does not.

    Four tags give a range of [-4 per_tag, +4 per_tag] ([-2, 2] by default); with
    ``prefilled_think`` the opening THINK tag is already in the prompt and is not counted
    (three tags, [-1.5, 1.5]). The returned function's docstring states its settings and shows an example.
    """
    counted = tags.all[1:] if prefilled_think else tags.all

    def partial_format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        out = []
        for c in completions:
            s = completion_text(c)
            out.append(sum(per_tag if s.count(t) == 1 else -per_tag for t in counted))
        return out

    ok, _, half = _examples(tags, prefilled_think)
    n = len(counted)
    doc = _PARTIAL_DOC.format(
        per_tag=float(per_tag), name=name, counted=", ".join(counted), low=-n * float(per_tag), high=n * float(per_tag),
        half=partial_format_reward([half])[0], example_ok=ok, example_half=half,
        prefilled_note=(f" ({tags.think_open} is prefilled in the prompt and not counted.)" if prefilled_think else "."),
    )
    return named(partial_format_reward, name, doc=doc, per_tag=per_tag, prefilled_think=prefilled_think, tags=tags)


strict_format_reward = make_strict_format_reward()
partial_format_reward = make_partial_format_reward()
