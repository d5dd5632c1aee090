"""Defect 4 of issue 19: vLLM got rendered chat strings and tokenized them with a BOS again (Llama 3.x and
Gemma 3 templates render their BOS). ``prompt_token_ids`` gives vLLM the ids the transformers path uses.
The suite's real tokenizer, made Llama-like: a post-processor adding BOS and a template rendering it."""

from __future__ import annotations

from pathlib import Path

import pytest

from medreason_utils.generation import render_prompts
from medreason_utils.generation.vllm_engine import prompt_token_ids
from medreason_utils.prompts import DEFAULT_TAGS, question_prompt

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "medreason-smollm2-135m-grpo"


@pytest.fixture(scope="module")
def llama_like():
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(CHECKPOINT))
    bos = "<|endoftext|>"
    bos_id = tok.convert_tokens_to_ids(bos)
    tok.backend_tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bos_id)])
    tok.bos_token = bos
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    return tok, bos_id


def test_prompt_ids_start_with_one_bos(llama_like):
    tok, bos_id = llama_like
    texts = render_prompts(tok, [question_prompt("Which nerve supplies the deltoid?", tags=DEFAULT_TAGS)])
    assert tok(texts[0])["input_ids"][:2] == [bos_id, bos_id]  # what vLLM did with the text: two BOS
    ids = prompt_token_ids(tok, texts)[0]["prompt_token_ids"]
    assert ids[0] == bos_id and ids[1] != bos_id
    assert ids == tok(texts[0], add_special_tokens=False)["input_ids"]  # the transformers path's ids
    assert tok.decode(ids) == texts[0]
