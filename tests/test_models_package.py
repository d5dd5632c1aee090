"""The models package without the 135M model: bad names and bad adapter files give errors that name them,
adapters save atomically and are compared tensor by tensor, generation leaves the caller's tokenizer alone.

Real components: the shipped adapter (``checkpoints/medreason-smollm2-135m-grpo``) and its tokenizer, and a
tiny randomly initialised Llama (2 layers, hidden 16) with a real peft LoRA trained by real optimizer steps.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medreason_utils.models import (
    LoadedModel,
    adapter_nonzero,
    adapter_weights_changed,
    load_model,
    looks_like_path,
    save_adapter,
)

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "medreason-smollm2-135m-grpo"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(SHIPPED))


def tiny_lora(tokenizer, rank=2, targets=("q_proj", "v_proj"), seed=0):
    """A 2-layer Llama with the tokenizer's vocabulary and a fresh LoRA (peft), in float32."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(cfg)
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), task_type="CAUSAL_LM"))


def train_steps(model, tokenizer, n, lr=0.5):
    enc = tokenizer(["Aplastic crisis in sickle cell disease", "Vitamin B12 deficiency"], return_tensors="pt",
                    padding=True, padding_side="right")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(n):
        opt.zero_grad()
        model(**enc, labels=labels).loss.backward()
        opt.step()


def copy_shipped(tmp_path) -> Path:
    return Path(shutil.copytree(SHIPPED, tmp_path / "adapter"))


# --- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["runs/sft_adapter", "./runs/sft_adapter", "~/no-such-dir-medreason/x", "/no/such/adapter",
                                  "a/b/c", "runs/sft_adapter/"])
def test_a_mistyped_local_path_is_a_missing_folder_not_a_hub_id(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # the run folder exists, the adapter inside it is mistyped
    assert looks_like_path(name)
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        load_model(adapter=name)
    assert "hub" not in str(err.value).split("(")[0]
    with pytest.raises(FileNotFoundError, match=f"model folder {name} does not exist"):
        load_model(name)


def test_runs_sft_adapter_as_base_model_is_a_missing_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match=r"model folder runs/sft_adapter does not exist \(relative to "):
        load_model("runs/sft_adapter")


def test_a_hub_id_is_not_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_like_path("HuggingFaceTB/SmolLM2-135M-Instruct") and not looks_like_path("unsloth/Qwen3-1.7B")


def test_a_model_id_that_does_not_exist_offline_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="someone/no-such-model-medreason.*hub id"):
        load_model("someone/no-such-model-medreason")


def test_an_adapter_hub_id_that_does_not_exist_offline_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="'someone/no-such-adapter-medreason' is not a local folder and could not be fetched"):
        load_model(adapter="someone/no-such-adapter-medreason")


# --- truncated adapter files ----------------------------------------------------------------


def test_a_truncated_adapter_config_json_names_the_file(tmp_path):
    folder = copy_shipped(tmp_path)
    cfg = folder / "adapter_config.json"
    cfg.write_text(cfg.read_text()[:40])
    with pytest.raises(ValueError, match=rf"{cfg}: not valid JSON .*truncated"):
        load_model(adapter=folder)


def test_an_empty_adapter_config_json_names_the_file(tmp_path):
    folder = copy_shipped(tmp_path)
    (folder / "adapter_config.json").write_text("")
    with pytest.raises(ValueError, match="adapter_config.json: not valid JSON"):
        load_model(adapter=folder)


@pytest.mark.parametrize("keep", [0.5, 0.99, 4 / 1e9])
def test_a_truncated_adapter_model_safetensors_names_the_file(tmp_path, keep):
    folder = copy_shipped(tmp_path)
    weights = folder / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: max(1, int(len(data) * keep))])
    for call in (lambda: load_model(adapter=folder), lambda: adapter_nonzero(folder),
                 lambda: adapter_weights_changed(SHIPPED, folder)):
        with pytest.raises(ValueError, match=rf"{weights}: truncated safetensors file"):
            call()


# --- saving and comparing adapters -------------------------------------------------------------


def test_save_adapter_interrupted_keeps_the_earlier_adapter(tokenizer, tmp_path):
    model = tiny_lora(tokenizer)
    out = save_adapter(model, tokenizer, tmp_path / "sft_adapter")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= set(before)
    train_steps(model, tokenizer, 1)

    class Interrupted(KeyboardInterrupt):
        pass

    class FailingTokenizer:  # the disconnect comes after the weights were written
        def save_pretrained(self, folder):
            raise Interrupted

    with pytest.raises(Interrupted):
        save_adapter(model, FailingTokenizer(), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["sft_adapter"]  # no temporary folder left


def test_adapter_weights_changed_after_real_steps_from_a_trained_adapter(tokenizer, tmp_path):
    """GRPO continues the SFT adapter: lora_B is non-zero before it starts, so "lora_B is not all zero"
    cannot fail; the before/after comparison does (TRL's trainer tests compare parameters the same way)."""
    model = tiny_lora(tokenizer)
    train_steps(model, tokenizer, 2)  # "SFT": lora_B already non-zero
    sft = save_adapter(model, tokenizer, tmp_path / "sft")
    assert adapter_nonzero(sft)["lora_B_abs_sum"] > 0

    same = adapter_weights_changed(sft, save_adapter(model, tokenizer, tmp_path / "copy"))
    assert same["changed"] == 0 and same["max_abs_diff"] == 0.0 and len(same["unchanged"]) == same["tensors"] == 8

    train_steps(model, tokenizer, 1)  # "GRPO": one more real step
    grpo = save_adapter(model, tokenizer, tmp_path / "grpo")
    diff = adapter_weights_changed(sft, grpo)
    assert diff["tensors"] == 8 and diff["changed"] == 8 and diff["unchanged"] == [], diff
    assert diff["max_abs_diff"] == max(diff["per_tensor"].values()) > 0


def test_adapter_weights_changed_refuses_adapters_of_different_shapes(tokenizer, tmp_path):
    a = save_adapter(tiny_lora(tokenizer, rank=2), tokenizer, tmp_path / "r2")
    b = save_adapter(tiny_lora(tokenizer, rank=4), tokenizer, tmp_path / "r4")
    c = save_adapter(tiny_lora(tokenizer, rank=2, targets=("q_proj",)), tokenizer, tmp_path / "q_only")
    with pytest.raises(ValueError, match=rf"{a / 'adapter_model.safetensors'} and {b / 'adapter_model.safetensors'}: 8 tensors differ in shape"):
        adapter_weights_changed(a, b)
    with pytest.raises(ValueError, match="hold different tensors: 4 only in the first"):
        adapter_weights_changed(a, c)
    with pytest.raises(FileNotFoundError, match="no adapter_model.safetensors"):
        adapter_weights_changed(a, tmp_path)


# --- the record --------------------------------------------------------------------------------


def test_loaded_model_unpacks_as_model_and_tokenizer(tokenizer):
    from medreason_utils.models import detect_runtime

    model = tiny_lora(tokenizer)
    rec = LoadedModel(model, tokenizer, detect_runtime(), "transformers", SHIPPED, 512)
    m, t = rec
    assert (m, t) == (rec[0], rec[1]) == (model, tokenizer) and len(rec) == 2
    assert rec.lora_request() is None  # no vLLM engine: the adapter is in the model's weights
    with pytest.raises(AttributeError):
        rec.adapter_dir = None  # frozen


# --- generation leaves the tokenizer alone -----------------------------------------------------


def test_generation_leaves_a_right_padding_tokenizer_as_it_is(tokenizer):
    from medreason_utils.generation import _left_padded, generate_completions

    model = tiny_lora(tokenizer)
    tokenizer.padding_side = "right"  # as a trainer leaves it
    pad = tokenizer.pad_token
    prompts = [[{"role": "user", "content": q}] for q in ("Hi", "Which vitamin deficiency causes scurvy in sailors?", "Why?")]
    try:
        batched = generate_completions(model, tokenizer, prompts, max_new_tokens=6, batch_size=3, progress=False)
        assert tokenizer.padding_side == "right" and tokenizer.pad_token == pad
        one_by_one = [generate_completions(model, tokenizer, [p], max_new_tokens=6, batch_size=1, progress=False)[0] for p in prompts]
        assert batched == one_by_one and all(batched)
        # the padding is the tokenizer's own left padding
        texts = ["a b c d", "a"]
        ref = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        got = _left_padded([tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], tokenizer.pad_token_id, "cpu")
        assert torch.equal(got["input_ids"], ref["input_ids"]) and torch.equal(got["attention_mask"], ref["attention_mask"])
    finally:
        tokenizer.padding_side = "left"


def test_generation_with_a_tokenizer_without_pad_token_does_not_set_one(tokenizer):
    from transformers import AutoTokenizer

    from medreason_utils.generation import generate_completions

    tok = AutoTokenizer.from_pretrained(str(SHIPPED))
    tok.pad_token = None
    model = tiny_lora(tokenizer)
    out = generate_completions(model, tok, ["Hello there", "Hi"], max_new_tokens=4, batch_size=2, progress=False)
    assert len(out) == 2 and tok.pad_token is None
