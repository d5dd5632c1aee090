"""Expected wall time of each notebook on a Colab T4 and A100, computed from the recipes' token counts.

An estimate until measured on those GPUs (no GPU has run the GPU recipes yet), stated with its arithmetic so
that it can be checked and corrected. The model, for a base of ``N`` parameters (the recipe's ``base_model``;
1.7B when unknown):

* training: ``8 * N`` FLOPs per token (forward 2N, backward 4N, gradient checkpointing's second forward 2N;
  LoRA's own weights are negligible), at :data:`GPUS` ``peak_tflops * mfu``;
* generation (vLLM, Unsloth ``fast_inference``): decoding is bound by reading the weights once per step,
  ``2 * N`` bytes (16-bit) over the memory bandwidth, or by ``2 * N * batch`` FLOPs at the training MFU,
  whichever is slower; one step per generated token of the longest sequence (every completion counted at
  its cap: an upper bound);
* prompts: :data:`PROMPT_TOKENS` each (the median of medical-o1 questions with the system prompt is 101
  tokens, SmolLM2 tokenizer; :mod:`medreason_utils.config.budget`).

Peak figures are the vendors' data sheets (T4: 65 TFLOPS fp16 tensor, 320 GB/s; A100 40 GB: 312 TFLOPS
bf16 tensor, 1,555 GB/s); the MFU values are assumptions (LoRA fine-tuning of a 1-2B model typically
reaches 25-40% of peak), not measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = ["GPUS", "PROMPT_TOKENS", "Estimate", "estimate", "header_line"]

#: GPU -> peak tensor TFLOPS (fp16 on T4, bf16 on A100), memory bandwidth GB/s, assumed model FLOPs utilisation.
GPUS: dict[str, dict[str, float]] = {
    "T4": {"peak_tflops": 65.0, "bandwidth_gbs": 320.0, "mfu": 0.25},
    "A100": {"peak_tflops": 312.0, "bandwidth_gbs": 1555.0, "mfu": 0.35},
}
#: Tokens of one prompt (system + question + template), the medical-o1 median rounded up.
PROMPT_TOKENS = 110
#: Tokens of an SFT row besides reasoning and response (tags, end of turn): config.budget.COMPLETION_OVERHEAD_TOKENS.
ROW_OVERHEAD = 32
_RECIPE_DIR = {"T4": "t4", "A100": "a100"}


@dataclass
class Estimate:
    """``seconds`` of one notebook on one GPU and ``arithmetic``: the terms that make it up, in words."""

    seconds: float
    arithmetic: str


def _get(recipe: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for n in names:  # the stage fields are being renamed to TRL's names; read either
        if recipe.get(n) is not None:
            return recipe[n]
    return default


def _params_b(recipe: Mapping[str, Any]) -> float:
    from ..models import BASE_MODELS, MODEL_PARAMS_B

    name = str(_get(recipe, "base_model", default="qwen3-1.7b"))
    hub = BASE_MODELS.get(name.lower(), name)
    return float(MODEL_PARAMS_B.get(hub, 1.7))


def _decode_s(n: float, batch: int, gpu: Mapping[str, float]) -> float:
    """Seconds of one decoding step for ``batch`` sequences of a model of ``n`` parameters."""
    memory = 2 * n / (gpu["bandwidth_gbs"] * 1e9)
    compute = 2 * n * batch / (gpu["peak_tflops"] * 1e12 * gpu["mfu"])
    return max(memory, compute)


def _train_s(n: float, tokens: float, gpu: Mapping[str, float]) -> float:
    return 8 * n * tokens / (gpu["peak_tflops"] * 1e12 * gpu["mfu"])


def _read(gpu: str, stage: str, recipes: Path | None) -> dict[str, Any]:
    from ..config import read_recipe, recipes_dir

    return read_recipe((recipes or recipes_dir()) / _RECIPE_DIR[gpu] / f"{stage}.yaml")


def estimate(notebook: str, gpu: str, recipes: Path | None = None) -> Estimate | None:
    """The expected wall time of ``notebook`` (a file name of :data:`~.notebook_cells.NOTEBOOKS`) on ``gpu``
    (``"T4"`` or ``"A100"``) from the recipes under ``recipes`` (default: the checkout's ``recipes/``).

    Returns None for a notebook without a GPU recipe to size (04, the demo; 05 sizes itself). Raises
    ``KeyError`` for an unknown GPU and what :func:`medreason_utils.config.read_recipe` raises.
    """
    g = GPUS[gpu]
    if notebook.startswith("01"):
        r = _read(gpu, "sft", recipes)
        n = _params_b(r) * 1e9
        rows = int(_get(r, "n_train", default=0)) * float(_get(r, "num_train_epochs", "epochs", default=1))
        row = PROMPT_TOKENS + int(_get(r, "max_reasoning_tokens", default=0)) + int(_get(r, "max_response_tokens", default=0)) + ROW_OVERHEAD
        train = _train_s(n, rows * row, g)
        held = int(_get(r, "n_heldout", default=0))
        batch = int(_get(r, "eval_batch_size", default=64))
        new = int(_get(r, "eval_max_new_tokens", default=256))
        check = 2 * -(-held // batch) * new * _decode_s(n, min(batch, held), g)  # before and after
        return Estimate(train + check, (
            f"SFT {rows:,.0f} rows x {row} tokens (prompt {PROMPT_TOKENS} + caps + {ROW_OVERHEAD}) x 8 x {n / 1e9:g}B FLOPs "
            f"/ ({g['peak_tflops']:g} TFLOPS x {g['mfu']:g}) = {train / 60:.0f} min; format check 2 x {held} questions x "
            f"{new} tokens = {check / 60:.0f} min"))
    if notebook.startswith("02"):
        r = _read(gpu, "grpo", recipes)
        n = _params_b(r) * 1e9
        steps = int(_get(r, "max_steps", default=0))
        per_step = int(_get(r, "per_device_train_batch_size", "batch_size", default=8)) * int(
            _get(r, "gradient_accumulation_steps", "grad_accum", default=1))
        comp = int(_get(r, "max_completion_length", default=256))
        gen = comp * _decode_s(n, per_step, g)
        train = _train_s(n, per_step * (PROMPT_TOKENS + comp), g)
        ev = int(_get(r, "reward_eval_prompts", default=0))
        k = int(_get(r, "num_generations", default=8))
        evaluation = 2 * -(-ev * k // 64) * comp * _decode_s(n, min(64, ev * k), g)
        return Estimate(steps * (gen + train) + evaluation, (
            f"GRPO {steps} steps x ({per_step} completions decoded for {comp} tokens at {_decode_s(n, per_step, g) * 1e3:.1f} ms/token "
            f"= {gen:.1f} s + training {per_step} x {PROMPT_TOKENS + comp} tokens = {train:.1f} s) = {steps * (gen + train) / 60:.0f} min; "
            f"reward evaluation 2 x {ev} prompts x {k} = {evaluation / 60:.0f} min"))
    if notebook.startswith("03"):
        from ..evaluation.benchmarks import BENCHMARKS

        r = _read(gpu, "eval", recipes)
        n = _params_b(_read(gpu, "sft", recipes)) * 1e9
        names = _get(r, "benchmarks", default=["medqa", "medmcqa"])
        names = [names] if isinstance(names, str) else list(names)
        items = sum(int(BENCHMARKS[b].n_full or 0) if _get(r, "limit") is None else int(_get(r, "limit")) for b in names)
        runs = len(_get(r, "base_styles", default=["suite"])) + 2  # base (each style), SFT, GRPO
        batch = int(_get(r, "batch_size", default=64))
        new = int(_get(r, "max_new_tokens", default=1024))
        secs = runs * -(-items // batch) * new * _decode_s(n, batch, g)
        return Estimate(secs, (
            f"{runs} models x {items:,} items / batch {batch} x {new} tokens x {_decode_s(n, batch, g) * 1e3:.1f} ms/token "
            f"= {secs / 60:.0f} min (greedy; completions counted at the cap)"))
    return None


def header_line(notebook: str, recipes: Path | None = None) -> str:
    """The header's paragraph of expected wall times (``... T4 ~50 min, A100 ~10 min.``) followed by the
    arithmetic of each as a list; ``""`` when :func:`estimate` has none."""
    parts, sums = [], []
    for gpu in GPUS:
        e = estimate(notebook, gpu, recipes)
        if e is None:
            return ""
        minutes = round(e.seconds / 60)
        parts.append(f"{gpu} ~{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{gpu} ~{max(minutes, 1)} min")
        sums.append(f"{gpu}: {e.arithmetic}")
    assumptions = ", ".join(f"{k} {v['peak_tflops']:g} TFLOPS, {v['bandwidth_gbs']:g} GB/s, MFU {v['mfu']:g} (assumed)" for k, v in GPUS.items())
    return (f"**Expected time on Colab (an estimate from the recipe's token counts, not yet measured):** {', '.join(parts)}. "
            "The arithmetic:\n\n" + "\n".join(f"- {s}" for s in sums) +
            f"\n- peak figures: {assumptions}; decoding at max(weights' bytes / bandwidth, FLOPs / (peak x MFU)) per token "
            "(medreason_utils/pipeline/colab_time.py)")
