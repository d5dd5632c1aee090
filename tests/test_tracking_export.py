"""Tracking (TRL's report_to into the run folder) and export (merged 16-bit model, Unsloth's savers, Hub push)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from conftest import needs_cpu_grpo  # noqa: E402  (TRL 1.15, the GPU lock's, trains GRPO on GPUs only)

from medreason_utils.training import export, tracking

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "medreason-smollm2-135m-grpo"


def test_report_to_normalises_and_drops_wandb_without_a_key():
    assert tracking.report_to(None, env={}) == ["none"]
    assert tracking.report_to("none", env={}) == ["none"]
    assert tracking.report_to("tensorboard", env={}) == ["tensorboard"]
    assert tracking.report_to(["tensorboard", "wandb"], env={}) == ["tensorboard"]
    with pytest.raises(ValueError, match="all"):
        tracking.report_to("all", env={})


def _tiny_model_and_tokenizer():
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(SHIPPED))
    tok.pad_token = tok.pad_token or tok.eos_token
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    return LlamaForCausalLM(cfg), tok


@pytest.mark.slow
@needs_cpu_grpo
def test_a_real_trl_step_with_tensorboard_writes_event_files_into_the_run_folder(tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    run_dir = tmp_path / "run"
    model, tok = _tiny_model_and_tokenizer()
    ds = Dataset.from_list([{"prompt": f"Question {i}: what is {i} + 1?"} for i in range(4)])

    def length_reward(completions, **_):
        return [float(len(c)) / 10 for c in completions]

    args = GRPOConfig(output_dir=str(run_dir / "grpo_trainer"), max_steps=2, per_device_train_batch_size=4,
                      num_generations=2, max_completion_length=6, logging_steps=1, use_cpu=True, save_strategy="no",
                      report_to=tracking.report_to(["tensorboard", "wandb"], env={}), seed=0)
    GRPOTrainer(model=model, args=args, reward_funcs=[length_reward], train_dataset=ds, processing_class=tok).train()

    logs = tracking.tracker_logs(run_dir)
    assert logs["event_files"] >= 1 and all(f.startswith("grpo_trainer/runs/") for f in logs["tensorboard"]), logs
    assert logs["command"] == f"tensorboard --logdir {run_dir}"
    # the events hold TRL's logged reward, one scalar per step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / logs["tensorboard"][0]))
    acc.Reload()
    assert "train/reward" in acc.Tags()["scalars"], acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("train/reward")] == [1, 2]
    assert "tensorboard --logdir" in tracking.tracker_help(run_dir)
    assert "No tracker logs" in tracking.tracker_help(tmp_path / "empty")


def _greedy(model, tok, prompts, n=24):
    import torch

    from medreason_utils.prompts import question_prompt

    out = []
    for p in prompts:
        ids = tok.apply_chat_template(question_prompt(p), add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=n, do_sample=False)
        out.append(gen[0, ids["input_ids"].shape[1]:].tolist())
    return out


PROMPTS = ["A 45-year-old presents with crushing chest pain radiating to the left arm. Most likely diagnosis?",
           "Which vitamin deficiency causes scurvy?"]


def assert_merged_generates_as_the_adapter(folder, adapter=SHIPPED):
    """``folder`` loads with plain transformers (no peft) in the float16 it was saved in, and its first 16 greedy
    tokens on :data:`PROMPTS` are the adapter's (loaded by the suite with transformers + peft)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medreason_utils.models import load_model

    merged = AutoModelForCausalLM.from_pretrained(str(folder), torch_dtype="auto")  # plain transformers, no peft; the saved dtype
    assert merged.dtype == torch.float16 and not hasattr(merged, "peft_config")
    merged = merged.float()
    tok = AutoTokenizer.from_pretrained(str(folder))
    adapter_model, atok = load_model(adapter=adapter, engine="transformers")
    a, m = _greedy(adapter_model, atok, PROMPTS), _greedy(merged, tok, PROMPTS)
    # fp16 rounding of the merged weights may flip a late near-tie; the first 16 greedy tokens must agree
    assert [x[:16] for x in m] == [x[:16] for x in a]


@pytest.mark.slow
def test_merged_16bit_model_loads_with_plain_transformers_and_generates_as_the_adapter(tmp_path):
    out = export.save_merged(SHIPPED, tmp_path / "merged", dtype="float16")
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert "merge_and_unload" in card and "not a medical tool" in card  # the adapter's card text kept
    assert json.loads((out / "medreason_export.json").read_text())["dtype"] == "float16"
    assert_merged_generates_as_the_adapter(out)


def test_unsloth_savers_raise_clearly_on_cpu():
    class NotUnsloth:
        pass

    with pytest.raises(RuntimeError, match="save_merged"):
        export.save_merged_unsloth(NotUnsloth(), None, "x")
    with pytest.raises(RuntimeError, match="save_pretrained_gguf"):
        export.save_gguf_unsloth(NotUnsloth(), None, "x")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_hub_push_of_the_adapter_with_its_card_up_to_the_network(tmp_path):
    import shutil

    folder = tmp_path / "adapter"
    shutil.copytree(SHIPPED, folder)
    export.model_card(folder, base_model="HuggingFaceTB/SmolLM2-135M-Instruct", kind="adapter", source=SHIPPED)
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: peft" in card and "not a medical tool" in card

    with pytest.raises(PermissionError, match="HF_TOKEN"):
        export.hub_push_plan(folder, "me/medreason", env={})
    with pytest.raises(ValueError, match="owner/name"):
        export.hub_push_plan(folder, "medreason", env={"HF_TOKEN": "hf_x"})
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        export.hub_push_plan(tmp_path, "me/medreason", env={"HF_TOKEN": "hf_x"})

    plan = export.hub_push_plan(folder, "me/medreason", env={"HF_TOKEN": "hf_secret"})
    assert "hf_secret" not in repr(plan)
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors"} <= set(plan.files)
    assert plan.create_repo_kwargs() == {"repo_id": "me/medreason", "repo_type": "model", "private": True, "exist_ok": True}
    assert plan.upload_folder_kwargs()["folder_path"] == str(folder)
    # the real huggingface_hub client against a closed loopback port: a clear error naming the endpoint
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(ConnectionError, match="127.0.0.1"):
        export.push_to_hub(plan, endpoint=endpoint)
