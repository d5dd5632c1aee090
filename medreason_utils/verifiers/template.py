"""The HuatuoGPT-o1 verifier instruction, shared by the HuatuoGPT-o1 classifier and the LLM judge.

Source: the HuatuoGPT-o1 RL code (repository FreedomIntelligence/HuatuoGPT-o1,
``ppo_utils/ppo_trainer_medo1.py``, function ``get_reward_o1``; paper: Chen et al. 2024,
"HuatuoGPT-o1, Towards Medical Complex Reasoning with LLMs", arXiv:2412.18925).
"""

from __future__ import annotations

__all__ = ["HUATUO_VERIFIER_TEMPLATE", "format_verifier_input"]

#: The verifier input, fields ``response``, ``reference``, ``eos``. Source: FreedomIntelligence/HuatuoGPT-o1,
#: ``ppo_utils/ppo_trainer_medo1.py`` (``get_reward_o1``); the spaces before the full stops are in the original.
HUATUO_VERIFIER_TEMPLATE = (
    "<Model Response>\n{response}\n</Model Response>\n\n"
    "<Reference Answer>\n{reference}\n</Reference Answer>\n\n"
    "Your task is to evaluate the model response by comparing it to the reference answer. "
    'If the model response is correct and aligns with the reference answer, output "True" . '
    'If it is incorrect or fails to select the correct option (if options are provided), output "False" . {eos}'
)


def format_verifier_input(prediction: str, reference: str, eos_token: str) -> str:
    """The verifier input text for one pair: :data:`HUATUO_VERIFIER_TEMPLATE` filled in (characters, not tokens)."""
    return HUATUO_VERIFIER_TEMPLATE.format(response=str(prediction), reference=str(reference), eos=eos_token)
