"""The CPU path's choice of generation engine (medreason_utils.generation.cpu_engine).

Without a model: the choice and its reason under ``MEDREASON_ENGINE`` (a real environment variable,
read by the real function). Marked ``vllm``: a real in-process vLLM CPU engine attached to the
transformers + peft model of the shipped adapter generates, through ``generate_completions``, the
same greedy tokens as transformers + peft, and is reused; ``load_for_generation`` (the adapter merged into a
new engine, one live engine per process); seeded groups on long batches.
"""

from __future__ import annotations

import importlib.util
import math
import os

import pytest

from medreason_utils.generation.cpu_engine import (
    release_engines,
    attach_engine,
    cpu_engine,
    cpu_vllm_status,
    engine_choice_line,
    engine_name,
)


def test_forced_transformers_builds_no_engine_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDREASON_ENGINE", "transformers")
    assert cpu_vllm_status() == (False, "MEDREASON_ENGINE=transformers is set")
    assert cpu_engine(tmp_path) is None
    assert engine_choice_line() == "generation engine: transformers (MEDREASON_ENGINE=transformers is set)"


def test_unknown_engine_value_is_named(monkeypatch):
    monkeypatch.setenv("MEDREASON_ENGINE", "sglang")
    with pytest.raises(ValueError, match="MEDREASON_ENGINE='sglang'"):
        cpu_vllm_status()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_without_vllm_the_transformers_path_is_chosen_and_forcing_vllm_raises(monkeypatch, tmp_path):
    monkeypatch.delenv("MEDREASON_ENGINE", raising=False)
    ok, why = cpu_vllm_status()
    assert not ok and ("not installed" in why or "no wheel" in why)
    assert cpu_engine(tmp_path) is None
    monkeypatch.setenv("MEDREASON_ENGINE", "vllm")
    with pytest.raises(RuntimeError, match="vLLM cannot run here"):
        cpu_engine(tmp_path)


def test_engine_name_of_a_model_without_engine_and_detaching(tmp_path):
    class Model:  # any object without a vLLM engine: transformers generates
        pass

    m = Model()
    assert engine_name(m) == "transformers"
    m.vllm_engine = object()  # no generate(): not an engine
    assert engine_name(m) == "transformers"
    assert engine_name(attach_engine(m, None)) == "transformers" and not hasattr(m, "vllm_engine")



@pytest.fixture(autouse=True, scope="module")
def _no_live_engine_after_this_module():
    """The module's in-process engine is shut down at its end: the next module's own engines start clean."""
    yield
    release_engines()


@pytest.mark.vllm
@pytest.mark.slow
def test_attached_cpu_engine_generates_the_adapters_tokens_like_transformers_peft(monkeypatch, tmp_path):
    pytest.importorskip("vllm")
    monkeypatch.delenv("MEDREASON_ENGINE", raising=False)
    os.environ.setdefault("VLLM_CACHE_ROOT", str(tmp_path / "vllm-cache"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-cache"))
    from medreason_utils.config import default_checkpoint
    from medreason_utils.data import load_rows
    from medreason_utils.evaluation.benchmarks import to_mcq_items
    from medreason_utils.generation import generate_completions
    from medreason_utils.models import default_model_dir, load_model

    ds, _ = to_mcq_items(load_rows("sample:medqa", limit=4), "medqa")
    prompts = [dict(r)["prompt"] for r in ds]
    adapter = default_checkpoint()
    loaded = load_model(adapter=adapter)
    model, tok = (loaded if isinstance(loaded, tuple) else (loaded.model, loaded.tokenizer))
    ref = generate_completions(model, tok, prompts, max_new_tokens=32, batch_size=4, progress=False)
    assert engine_name(model) == "transformers"

    engine = cpu_engine(default_model_dir(), max_model_len=1024)
    assert engine is not None and cpu_engine(default_model_dir(), max_model_len=1024) is engine
    attach_engine(model, engine, adapter)
    assert engine_name(model) == "vllm"
    out = generate_completions(model, tok, prompts, max_new_tokens=32, progress=False)
    ids = lambda t: tok(t, add_special_tokens=False)["input_ids"][:24]  # noqa: E731
    assert sum(ids(a) == ids(b) for a, b in zip(out, ref)) >= 3, (out, ref)
    base = generate_completions(engine, tok, prompts, max_new_tokens=32, progress=False)
    assert base != out  # the adapter was attached, not the base weights


@pytest.mark.vllm
@pytest.mark.slow
def test_load_for_generation_merges_the_adapter_into_a_vllm_engine_on_cpu(monkeypatch, tmp_path):
    """What every CPU stage generates with: vLLM on the base (one engine per process) or on the adapter merged
    (a new engine, no LoRA request needed for that adapter, another adapter refused); the completions are the
    adapter's (the same first greedy tokens as transformers + peft); under MEDREASON_ENGINE=transformers the
    transformers path, said by engine_name."""
    pytest.importorskip("vllm")
    monkeypatch.delenv("MEDREASON_ENGINE", raising=False)
    os.environ.setdefault("VLLM_CACHE_ROOT", str(tmp_path / "vllm-cache"))
    from medreason_utils.config import default_checkpoint
    from medreason_utils.data import load_rows
    from medreason_utils.evaluation.benchmarks import to_mcq_items
    from medreason_utils.generation import generate_completions
    from medreason_utils.generation.vllm_engine import AdapterNotAttachableError, lora_request
    from medreason_utils.models import load_for_generation, load_model, save_adapter

    ds, _ = to_mcq_items(load_rows("sample:medqa", limit=4), "medqa")
    prompts = [dict(r)["prompt"] for r in ds]
    adapter = default_checkpoint()

    base = load_for_generation()
    assert base.engine == "vllm" and engine_name(base.model) == "vllm" and base.lora_request() is None
    assert load_for_generation().model is base.model  # the base engine is built once per process

    merged = load_for_generation(adapter=adapter)
    assert merged.engine == "vllm" and merged.merged and merged.model is not base.model
    assert merged.lora_request() is None and lora_request(merged.model, adapter) is None  # its weights hold it
    out = generate_completions(merged.model, merged.tokenizer, prompts, max_new_tokens=32, progress=False)
    # one live in-process engine: building the merged one shut the base engine down, which now says so
    from medreason_utils.generation.vllm_engine import RetiredEngineError, is_retired

    assert is_retired(base.model) and not is_retired(merged.model)
    with pytest.raises(RetiredEngineError, match="load_for_generation"):
        generate_completions(base.model, base.tokenizer, prompts, max_new_tokens=4, progress=False)

    ref_loaded = load_model(adapter=adapter)
    ref = generate_completions(ref_loaded.model, ref_loaded.tokenizer, prompts, max_new_tokens=32, batch_size=4, progress=False)
    ids = lambda t: merged.tokenizer(t, add_special_tokens=False)["input_ids"][:24]  # noqa: E731
    assert sum(ids(a) == ids(b) for a, b in zip(out, ref)) >= 3, (out, ref)
    base = load_for_generation()  # a new base engine (the merged one is shut down in turn)
    assert generate_completions(base.model, base.tokenizer, prompts, max_new_tokens=32, progress=False) != out

    other = save_adapter(ref_loaded.model, ref_loaded.tokenizer, tmp_path / "other")  # same weights, another file
    with pytest.raises(AdapterNotAttachableError, match="another adapter merged"):
        lora_request(merged.model, other)

    monkeypatch.setenv("MEDREASON_ENGINE", "transformers")
    fallback = load_for_generation(adapter=adapter)
    assert fallback.engine == "transformers" and engine_name(fallback.model) == "transformers" and fallback.merged


@pytest.mark.vllm
@pytest.mark.slow
def test_seeded_groups_on_more_prompt_tokens_than_one_step_prefills(monkeypatch, tmp_path):
    """The reward evaluation's sampling on the CPU engine: 64 prompts of ~300 tokens (more than the 4,096 tokens one
    step prefills), 2 seeded samples each. With vLLM's chunked prefill a CPU generator raised "CPU Generator does not
    use offset" (the make run of 2026-12-04 stopped in notebook 02 so); the engines are built without it. The same
    seed gives the same groups."""
    pytest.importorskip("vllm")
    monkeypatch.delenv("MEDREASON_ENGINE", raising=False)
    os.environ.setdefault("VLLM_CACHE_ROOT", str(tmp_path / "vllm-cache"))
    from medreason_utils.evaluation.reward_eval import sample_groups
    from medreason_utils.models import load_for_generation

    gen = load_for_generation()
    prompts = [[{"role": "user", "content": "Patient history: " + "fever and cough, " * 75 + f"case {i}. Diagnosis?"}]
               for i in range(64)]
    texts = [gen.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    assert sum(len(gen.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts) > 4096
    groups = sample_groups(gen.model, gen.tokenizer, prompts, 2, temperature=0.8, max_new_tokens=8, seed=7, progress=False)
    assert [len(g) for g in groups] == [2] * 64
    assert sample_groups(gen.model, gen.tokenizer, prompts[:3], 2, temperature=0.8, max_new_tokens=8, seed=7,
                         progress=False) == groups[:3]
