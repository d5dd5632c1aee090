"""Where the code runs: CUDA or CPU, the GPU class, bf16, Colab."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from .names import DEFAULT_GPU_MODEL
from .presets import GPU_PRESETS, MODEL_PARAMS_B, gpu_preset

@dataclass(frozen=True)
class RuntimeInfo:
    """Where the notebook runs: ``device`` ("cuda"/"cpu"), ``gpu_kind`` ("t4", "a100", "other", "cpu"),
    the GPU name and memory (GiB), whether bf16 is used (compute capability >= 8), and whether this is Colab."""

    device: str
    gpu_kind: str
    gpu_name: str | None = None
    gpu_memory_gib: float | None = None
    bf16: bool = False
    in_colab: bool = False
    preset: dict = field(default_factory=dict)

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda"


def detect_runtime() -> RuntimeInfo:
    """Detect CUDA, the GPU kind (T4, A100, other) and Colab; returns :class:`RuntimeInfo` with its preset
    (the settings of :func:`preset_for` for the default GPU model on this GPU, empty when it does not fit;
    :func:`load_model` takes the preset of the model it loads).

    bf16 is reported when the GPU's compute capability is 8.0 or more (Ampere: A100, L4, H100), the
    first with bf16 tensor cores. ``torch.cuda.is_bf16_supported()`` is not used: it also counts
    emulated bf16 and says True on a T4 (7.5), where training in bf16 is slow or fails; fp16 is used there.
    """
    in_colab = "COLAB_RELEASE_TAG" in os.environ or "google.colab" in sys.modules
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a hard requirement
        cuda = False
    if not cuda:
        return RuntimeInfo("cpu", "cpu", in_colab=in_colab, preset=dict(GPU_PRESETS["cpu"]))
    name = torch.cuda.get_device_name(0)
    mem = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    major, _minor = torch.cuda.get_device_capability(0)
    kind = "t4" if "T4" in name else "a100" if "A100" in name else "other"
    try:
        preset = gpu_preset(MODEL_PARAMS_B[DEFAULT_GPU_MODEL], mem, DEFAULT_GPU_MODEL)
    except ValueError:  # the default model does not fit this GPU: load_model says so when asked to load it
        preset = {}
    return RuntimeInfo("cuda", kind, name, mem, major >= 8, in_colab, preset)


