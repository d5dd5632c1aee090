"""Defect 2 of issue 19: the prompt budget applied where the notebooks read their data
(``training.sft.sft_data``, ``training.grpo.source_prompts`` / ``grpo_prompts``): long rows are skipped and
counted, the counts are what ``summary.json`` gets. The suite's real tokenizer (the shipped checkpoint's),
the shipped samples; no model."""

from __future__ import annotations

from pathlib import Path

import pytest

from medreason_utils.config import MAX_PROMPT_TOKENS, check_prompt_lengths, load_stage_config
from medreason_utils.training import grpo_prompts, prompt_budget_counts, sft_data, source_prompts

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "medreason-smollm2-135m-grpo"


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(CHECKPOINT))


def _lengths(tok, prompts):
    return [k for _, _, k in check_prompt_lengths(list(prompts), tok, 0, enforce=False)["over"]]


@pytest.mark.parametrize("source", ["sample:medical_o1_verifiable", "sample:medmcqa"])
def test_grpo_source_skips_and_counts_prompts_over_the_budget(tok, source):
    everything, full_report, _, _ = source_prompts(source)
    lengths = _lengths(tok, everything["prompt"])
    limit = sorted(lengths)[len(lengths) // 2]  # the median: about half the rows are longer
    longer = sum(k > limit for k in lengths)
    assert 0 < longer < len(lengths)
    ds, report, keys, _ = source_prompts(source, tokenizer=tok, max_prompt_tokens=limit)
    assert len(ds) == len(keys) == len(everything) - longer == report.kept
    assert max(_lengths(tok, ds["prompt"])) <= limit
    counts = prompt_budget_counts(report)
    assert counts["rows_over_prompt_budget"] == longer
    assert counts["rows_skipped"] == full_report.n_skipped + longer
    assert all(f"more than max_prompt_tokens={limit}" in why for _, why in report.skipped[full_report.n_skipped:])


def test_grpo_prompts_default_budget_is_the_stage_budget(tok):
    config = load_stage_config("grpo", "cpu", overrides={"data": "sample:medical_o1_verifiable", "n_prompts": 8})
    grpo = grpo_prompts(config, tokenizer=tok)
    assert max(_lengths(tok, grpo.prompts["prompt"])) <= MAX_PROMPT_TOKENS["grpo"]
    assert grpo.sources["sample:medical_o1_verifiable"]["over_prompt_budget"] == sum(
        k > MAX_PROMPT_TOKENS["grpo"] for k in _lengths(tok, source_prompts("sample:medical_o1_verifiable")[0]["prompt"]))


def test_sft_rows_longer_than_max_seq_length_are_skipped_and_counted(tok):
    roomy = sft_data(load_stage_config("sft", "cpu", overrides={"max_seq_length": 4096}), tok)
    assert prompt_budget_counts(roomy.train_report)["rows_over_max_seq_length"] == 0
    tight = sft_data(load_stage_config("sft", "cpu", overrides={"max_seq_length": 200}), tok)
    counts = prompt_budget_counts(tight.train_report)
    assert counts["rows_over_max_seq_length"] > 0
    assert counts["rows_kept"] == len(tight.train) == len(roomy.train) - counts["rows_over_max_seq_length"] - counts["rows_over_prompt_budget"]
    for row in tight.train:
        text = tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        assert len(tok(text, add_special_tokens=False)["input_ids"]) <= 200


def test_sft_prompt_budget(tok):
    config = load_stage_config("sft", "cpu", overrides={"max_seq_length": 4096})
    roomy = sft_data(config, tok)
    lengths = _lengths(tok, roomy.train["prompt"])
    limit = sorted(lengths)[len(lengths) // 2]
    data = sft_data(config, tok, max_prompt_tokens=limit)
    counts = prompt_budget_counts(data.train_report)
    assert counts["rows_over_prompt_budget"] == sum(k > limit for k in lengths) > 0
    assert max(_lengths(tok, data.train["prompt"])) <= limit
