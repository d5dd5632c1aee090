"""Perplexity reward: the tests every reward has (stable name, never raises, bounded, conversational and plain
completions, None for what it cannot score), batching, the registry, the playground, and on the real
SmolLM2-135M-Instruct that reasoning naming the reference answer scores higher than unrelated reasoning."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from medreason_utils.rewards.perplexity import NORMALISATIONS, make_perplexity_reward  # noqa: E402
from medreason_utils.prompts import DEFAULT_TAGS, question_prompt  # noqa: E402
from medreason_utils.rewards import REWARD_REGISTRY, RewardSettings, get_reward_funcs  # noqa: E402

Q = "Which vitamin deficiency causes scurvy?"
GOOD = "<THINK>Scurvy is caused by a lack of vitamin C (ascorbic acid) in the diet.</THINK><ANSWER>Vitamin C</ANSWER>"
BAD = "<THINK>The weather today is sunny and warm.</THINK><ANSWER>Iron</ANSWER>"


@functools.lru_cache(maxsize=2)
def _tiny(vocab_size: int | None = None):
    """A tiny random Llama with SmolLM2's config and tokenizer (``vocab_size`` smaller than the tokenizer's makes
    the embedding lookup fail: a real model error)."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    from medreason_utils.models import default_model_dir

    path = default_model_dir()
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    cfg = AutoConfig.from_pretrained(path)
    cfg.update(dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16))
    if vocab_size is not None:
        cfg.vocab_size = vocab_size
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval(), tok


@pytest.fixture(scope="module")
def tiny(default_model_path):
    return _tiny()


def conversational(text):
    return [{"role": "assistant", "content": text}]


@pytest.mark.slow  # needs the converted SmolLM2 tokenizer and config (~20 s to convert once per machine)
def test_name_range_and_settings_checked(tiny):
    model, tok = tiny
    fn = make_perplexity_reward(model, tok)
    assert fn.__name__ == "perplexity_reward" and fn.bounds == (0.0, 1.0)
    assert make_perplexity_reward(model, tok, name="ppl").__name__ == "ppl"
    assert "Example" in fn.__doc__
    with pytest.raises(ValueError, match="normalisation"):
        make_perplexity_reward(model, tok, normalisation="perplexity")
    with pytest.raises(ValueError, match="value"):
        make_perplexity_reward(model, tok, value=0.0)


@pytest.mark.slow  # needs the converted SmolLM2 tokenizer and config (~20 s to convert once per machine)
def test_registry_builds_it_by_name(tiny):
    model, tok = tiny
    assert "perplexity" in REWARD_REGISTRY
    (fn,) = get_reward_funcs(RewardSettings(rewards=("perplexity",), weights=(1.0,)), model=model, tokenizer=tok)
    assert fn.__name__ == "perplexity_reward" and fn.value == 1.0
    out = fn([GOOD], answer=["Vitamin C"], question=[Q])
    assert 0.0 < out[0] <= 1.0
    with pytest.raises(ValueError, match="reference model"):
        get_reward_funcs(RewardSettings(rewards=("perplexity",), weights=(1.0,)))


@pytest.mark.slow  # needs the converted SmolLM2 tokenizer and config (~20 s to convert once per machine)
@pytest.mark.parametrize("normalisation", NORMALISATIONS)
def test_plain_and_conversational_completions_agree_and_none_cases(tiny, normalisation):
    model, tok = tiny
    fn = make_perplexity_reward(model, tok, normalisation=normalisation)
    n = 6
    completions = [GOOD, conversational(GOOD), "no tags at all", "<THINK>unclosed reasoning", GOOD, GOOD]
    answers = ["Vitamin C", "Vitamin C", "Vitamin C", "Vitamin C", None, "  "]
    out = fn(completions, answer=answers, question=[Q] * n)
    assert out[0] == pytest.approx(out[1], abs=1e-9)  # the same text, plain or conversational
    assert 0.0 < out[0] <= 1.0
    assert out[2] == 0.0 and out[3] == 0.0  # no complete THINK block: no reasoning, bottom of the range
    assert out[4] is None and out[5] is None  # no reference answer: cannot score
    # TRL's prompts (conversational) are used when given; the question column otherwise
    assert fn([GOOD], answer=["Vitamin C"], prompts=[question_prompt(Q)]) == pytest.approx([out[0]])
    assert fn([GOOD], answer=["Vitamin C"], prompts=["plain text prompt: "]) != [None]
    assert fn([GOOD], answer=["Vitamin C"]) == [None]  # nothing to condition on
    assert fn([GOOD]) == [None]  # no answer column
    assert fn([]) == []


@pytest.mark.slow  # needs the converted SmolLM2 tokenizer and config (~20 s to convert once per machine)
def test_mean_prob_is_at_least_inverse_perplexity(tiny):
    """Arithmetic mean of the token probabilities >= their geometric mean (1 / perplexity), item by item."""
    model, tok = tiny
    kw = dict(answer=["Vitamin C", "Iron deficiency anemia"], question=[Q, Q])
    am = make_perplexity_reward(model, tok, normalisation="mean_prob")([GOOD, BAD], **kw)
    gm = make_perplexity_reward(model, tok, normalisation="inverse_perplexity")([GOOD, BAD], **kw)
    assert all(a >= g - 1e-12 for a, g in zip(am, gm))


@pytest.mark.slow  # needs the converted SmolLM2 tokenizer and config (~20 s to convert once per machine)
def test_batched_scores_equal_one_at_a_time(tiny):
    """Right padding and length sorting do not change any score."""
    model, tok = tiny
    completions = [GOOD, BAD, "<THINK>x</THINK>", "<THINK>" + "long reasoning " * 30 + "</THINK><ANSWER>a</ANSWER>"]
    kw = dict(answer=["Vitamin C", "Iron", "a much longer reference answer than the others", "b"], question=[Q] * 4)
    batched = make_perplexity_reward(model, tok, batch_size=4)(completions, **kw)
    single = make_perplexity_reward(model, tok, batch_size=1)(completions, **kw)
    assert batched == pytest.approx(single, abs=1e-6)


@pytest.mark.slow  # needs the converted SmolLM2 tokenizer and config (~20 s to convert once per machine)
def test_too_long_and_model_errors_give_none_not_exceptions(tiny, default_model_path):
    model, tok = tiny
    assert make_perplexity_reward(model, tok, max_length=20)([GOOD], answer=["Vitamin C"], question=[Q]) == [None]
    broken_model, _ = _tiny(vocab_size=100)  # token ids beyond the embedding table: the forward pass raises
    fn = make_perplexity_reward(broken_model, tok)
    assert fn([GOOD, "no tags"], answer=["Vitamin C"] * 2, question=[Q] * 2) == [None, 0.0]
    assert fn.last_error and "index" in fn.last_error.lower()


@pytest.mark.slow  # needs the converted SmolLM2 tokenizer and config (~20 s to convert once per machine)
def test_adapter_is_disabled_while_scoring(default_model_path):
    """With a peft model the frozen base scores (use_base_model=True): a LoRA with large random weights does not
    change the reward, while use_base_model=False does."""
    from peft import LoraConfig, get_peft_model

    base, tok = _tiny()
    torch.manual_seed(1)
    peft_model = get_peft_model(_fresh_copy(base), LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                                              init_lora_weights=False))
    kw = dict(answer=["Vitamin C"], question=[Q])
    plain = make_perplexity_reward(base, tok)([GOOD], **kw)[0]
    via_base = make_perplexity_reward(peft_model, tok)([GOOD], **kw)[0]
    via_adapter = make_perplexity_reward(peft_model, tok, use_base_model=False)([GOOD], **kw)[0]
    assert via_base == pytest.approx(plain, abs=1e-6)
    assert abs(via_adapter - plain) > 1e-6


def _fresh_copy(model):
    import copy

    return copy.deepcopy(model)


TAGS = list(DEFAULT_TAGS.all)
FRAGMENT = st.one_of(st.sampled_from(TAGS + ["<", ">", " ", "\n", "Vitamin C", "é", "日本", "\u0000"]), st.text(max_size=6))
TEXT = st.lists(FRAGMENT, max_size=10).map("".join)
COMPLETION = st.one_of(TEXT, TEXT.map(conversational), st.none(), st.integers(), TEXT.map(lambda t: f"<THINK>{t}</THINK><ANSWER>{t}"))
REFERENCE = st.one_of(TEXT, st.none(), st.integers())


@pytest.mark.slow  # needs the converted SmolLM2 tokenizer and config (~20 s to convert once per machine)
@settings(max_examples=40, deadline=None)
@given(st.lists(COMPLETION, min_size=1, max_size=4), st.lists(REFERENCE, min_size=1, max_size=4), st.booleans())
def test_never_raises_and_stays_in_bounds(completions, references, with_question):
    model, tok = _tiny()
    fn = make_perplexity_reward(model, tok, value=3.0)
    n = len(completions)
    refs = (references * n)[:n]
    kwargs = {"answer": refs}
    if with_question:
        kwargs["question"] = [Q] * n
    out = fn(completions, **kwargs)
    assert len(out) == n
    assert all(v is None or (isinstance(v, float) and 0.0 <= v <= 3.0) for v in out)


@pytest.mark.slow  # needs the converted SmolLM2 tokenizer and config (~20 s to convert once per machine)
def test_playground_shows_and_totals_the_extra_reward(tiny):
    from medreason_utils.ui.playground import RewardPlayground, score_completions

    model, tok = tiny
    ppl = make_perplexity_reward(model, tok)
    table = score_completions([GOOD, BAD], "Vitamin C", Q, extra_rewards=[(ppl, 2.0)])
    assert table.names[-1] == "perplexity_reward"
    for rec, row in zip(table.records(), table.rewards):
        assert 0.0 < rec["perplexity_reward"] <= 1.0
        assert rec["total"] == pytest.approx(sum(row[:3]) + 2.0 * row[3])
    assert "<th>perplexity</th>" in table.to_html()
    pg = RewardPlayground(extra_rewards=[(ppl, 1.0)])
    assert pg.table is not None and pg.table.names[-1] == "perplexity_reward" and "<th>perplexity</th>" in pg.output.value


@pytest.mark.slow
def test_real_model_prefers_reasoning_that_leads_to_the_answer(default_model_path):
    from medreason_utils.models import load_model

    model, tok = load_model()
    fn = make_perplexity_reward(model, tok)
    good, bad = fn([GOOD, BAD], answer=["Vitamin C"] * 2, question=[Q] * 2)
    assert 0.0 < bad < good <= 1.0
