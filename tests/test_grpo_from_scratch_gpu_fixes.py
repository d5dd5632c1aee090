"""Defect 3 of issue 19, the parts that run on a CPU: notebook 05's check compares with TRL's own classes even
when Unsloth has put its generated ones in their place; float16 training gets fp32 master weights and loss
scaling; the GPU default of the training loop's steps."""

from __future__ import annotations

import pytest
import torch

from medreason_utils.models import RuntimeInfo
from medreason_utils.training import grpo_from_scratch as gs


def test_trl_classes_are_trls_own_after_a_patch_like_unsloths(monkeypatch):
    import trl
    import trl.trainer.grpo_trainer as grpo_module

    original_cfg, original_trainer = trl.GRPOConfig, trl.GRPOTrainer
    assert gs.trl_grpo_classes() == (original_cfg, original_trainer)  # not patched: TRL's as imported

    class UnslothGRPOConfig(original_cfg):  # what PatchFastRL installs (generated, defined elsewhere)
        pass

    class UnslothGRPOTrainer(original_trainer):
        def compute_loss(self, *args, **kwargs):  # Unsloth's own loss
            raise AssertionError("Unsloth's loss was used")

    for where in (trl, grpo_module):
        monkeypatch.setattr(where, "GRPOConfig", UnslothGRPOConfig)
        monkeypatch.setattr(where, "GRPOTrainer", UnslothGRPOTrainer)
    cfg, trainer = gs.trl_grpo_classes()
    assert cfg.__name__ == "GRPOConfig" and trainer.__name__ == "GRPOTrainer"
    assert not issubclass(trainer, UnslothGRPOTrainer) and not issubclass(cfg, UnslothGRPOConfig)
    assert trainer.compute_loss.__code__.co_filename == original_trainer.compute_loss.__code__.co_filename
    args = cfg(output_dir="/tmp/x", use_cpu=True, per_device_train_batch_size=2, num_generations=2, report_to=[])
    assert args.num_generations == 2 and not args.use_vllm


def _lora_like():
    base = torch.nn.Linear(4, 4).half().requires_grad_(False)
    lora = torch.nn.Linear(4, 4, bias=False).half()
    return torch.nn.ModuleDict({"base": base, "lora": lora})


def test_fp16_model_gets_fp32_masters_and_a_scaler():
    model = _lora_like()
    config = gs.GRPOScratchConfig(prompts_per_step=1, num_generations=2, max_completion_length=4, learning_rate=1e-3)
    gs.make_optimizer(model.parameters(), config)
    assert model["lora"].weight.dtype == torch.float32 and model["base"].weight.dtype == torch.float16
    scaler = gs.fp16_scaler(model)
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    assert gs.fp16_scaler(torch.nn.Linear(2, 2).requires_grad_(False)) is None  # float32: none
    assert gs.fp16_scaler(torch.nn.Linear(2, 2).bfloat16().requires_grad_(False)) is None


def test_tiny_fp16_gradient_survives_with_the_scaler():
    w = torch.nn.Parameter(torch.ones(1, dtype=torch.float32))  # an fp32 master weight, used in float16
    x = torch.tensor([1e-4], dtype=torch.float16)
    opt = torch.optim.SGD([w], lr=1.0)

    def loss():
        return (w.half() * x).sum() * 1e-4  # d loss / d w = 1e-8: below float16's smallest subnormal (6e-8)

    loss().backward()
    assert float(w.grad) == 0.0  # lost without scaling
    w.grad = None
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)  # 2**16 overflows float16 (max 65504): the scaler would halve it
    scaler.scale(loss()).backward()
    scaler.unscale_(opt)
    assert float(w.grad) == pytest.approx(1e-8, rel=0.05)


def test_scratch_steps_on_gpu_and_cpu():
    gpu, cpu = RuntimeInfo("cuda", "t4", "T4", 14.7), RuntimeInfo("cpu", "cpu")
    assert gs.scratch_max_steps(300, gpu) == gs.GPU_SCRATCH_MAX_STEPS
    assert gs.scratch_max_steps(300, cpu) == 300 and gs.scratch_max_steps(300, gpu, 50) == 50
    with pytest.raises(ValueError, match="MAX_STEPS"):
        gs.scratch_max_steps(300, cpu, 0)
