"""GPU check of the Unsloth path without network or hub weights (issue 19): tiny models built from configs.

What it runs, each step reported as ran / failed / skipped (with the reason) and the peak GPU memory:
for each architecture (Qwen3, Llama; random weights, the suite's tokenizer from the shipped checkpoint,
hidden size 128, 2 layers), saved to a local folder, then

1. Unsloth ``FastLanguageModel.from_pretrained`` in 16-bit and in 4-bit (bitsandbytes), ``fast_inference=False``;
2. LoRA on every linear projection (``FastLanguageModel.get_peft_model``, the suite's targets);
3. two SFT steps (TRL ``SFTTrainer``, Unsloth-patched) on rows of the shipped sample in the suite's grammar;
4. two GRPO steps (TRL ``GRPOTrainer``, Unsloth-patched, ``use_vllm=False``: Hugging Face generation) with the
   suite's strict and partial format rewards;
5. save of the adapter and reload with ``FastLanguageModel.from_pretrained(<adapter folder>)``, one generate.

Precision by compute capability: bf16 from 8.0 (A100, L4, H100), fp16 below (T4), as the suite's
``precision_kwargs``. ``--dry-run`` (also on a CPU) builds and saves the tiny models with transformers only and
prints the plan; the tests run it. Exit status 1 when a step failed, 0 otherwise (skips included).
Run through ``scripts/gpu_check.sh``, which installs the uploaded wheels first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: architecture -> (transformers config class name, extra config fields)
ARCHS = {
    "qwen3": ("Qwen3Config", {"head_dim": 32}),
    "llama": ("LlamaConfig", {"head_dim": 32}),
}
#: The tiny models' shape: small enough for any GPU and a CPU, dims multiples of 64 for bitsandbytes' 4-bit.
TINY = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)
#: The suite's tokenizer (SmolLM2's, with the suite's chat template), shipped with the checkpoint.
TOKENIZER = ROOT / "checkpoints" / "medreason-smollm2-135m-grpo"
STEPS = ("load-16bit", "load-4bit", "lora", "sft", "grpo", "save-reload")


@dataclass
class Report:
    """One line per (architecture, precision, step): ``status`` ran / failed / skipped, ``detail``, peak MiB."""

    rows: list[dict] = field(default_factory=list)

    def add(self, arch: str, step: str, status: str, detail: str = "", peak_mib: float | None = None, seconds: float | None = None):
        self.rows.append({"arch": arch, "step": step, "status": status, "detail": detail[:300],
                          "peak_mib": None if peak_mib is None else round(peak_mib, 1),
                          "seconds": None if seconds is None else round(seconds, 2)})

    @property
    def failed(self) -> bool:
        return any(r["status"] == "failed" for r in self.rows)

    def table(self) -> str:
        lines = ["| arch | step | status | peak MiB | s | detail |", "|---|---|---|---:|---:|---|"]
        for r in self.rows:
            lines.append(f"| {r['arch']} | {r['step']} | {r['status']} | {r['peak_mib'] if r['peak_mib'] is not None else ''} | "
                         f"{r['seconds'] if r['seconds'] is not None else ''} | {r['detail']} |")
        return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line. Raises ``SystemExit(2)`` (argparse) for an unknown architecture or step, or
    ``--steps-sft`` / ``--steps-grpo`` below 1."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="qwen3,llama", help=f"comma-separated, of {sorted(ARCHS)}")
    p.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps, of {list(STEPS)}")
    p.add_argument("--steps-sft", type=int, default=2)
    p.add_argument("--steps-grpo", type=int, default=2)
    p.add_argument("--out", default="/tmp/medreason-gpu-check", help="folder for the tiny models, adapters and report.json")
    p.add_argument("--tokenizer", default=str(TOKENIZER))
    p.add_argument("--dry-run", action="store_true", help="build and save the tiny models only (no Unsloth; runs on a CPU)")
    args = p.parse_args(argv)
    args.archs = [a.strip().lower() for a in args.archs.split(",") if a.strip()]
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [a for a in args.archs if a not in ARCHS]
    if bad or not args.archs:
        p.error(f"--archs {bad or args.archs}: known {sorted(ARCHS)}")
    bad = [s for s in args.only if s not in STEPS]
    if bad:
        p.error(f"--only {bad}: known {list(STEPS)}")
    for name in ("steps_sft", "steps_grpo"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def build_tiny_model(arch: str, tokenizer_dir: str | Path, out_dir: str | Path, *, seed: int = 0) -> Path:
    """A model of ``arch`` (:data:`ARCHS`) with random weights, shaped :data:`TINY`, its vocabulary the
    tokenizer's, saved with that tokenizer to ``out_dir/arch`` (safetensors, float32). Returns the folder."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    cls_name, extra = ARCHS[arch]
    config = getattr(transformers, cls_name)(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                             pad_token_id=tok.pad_token_id, **TINY, **extra)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    folder = Path(out_dir) / arch
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    return folder


def precision() -> dict[str, bool]:
    """``{"bf16", "fp16"}`` by compute capability: bf16 from 8.0, else fp16 (the suite's rule)."""
    import torch

    major, _ = torch.cuda.get_device_capability()
    return {"bf16": major >= 8, "fp16": major < 8}


def _peak_mib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def _sft_rows(tokenizer, n: int = 8):
    from medreason_utils.data import load_rows, to_sft_conversations

    rows = load_rows("sample:medical_o1_sft").select(range(n))
    ds, _ = to_sft_conversations(rows, max_reasoning_tokens=24, max_response_tokens=12, tokenizer=tokenizer,
                                 output_format="prompt_completion", on_bad_row="skip")
    return ds


def _grpo_rows(n: int = 4):
    import datasets

    from medreason_utils.data import load_rows, to_question_prompts

    ds, _ = to_question_prompts(load_rows("sample:medical_o1_verifiable").select(range(n)), on_bad_row="skip")
    return datasets.Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in ds])


def _step(report: Report, arch: str, step: str, fn):
    import torch

    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:  # every failure is reported, the next step still runs
        report.add(arch, step, "failed", f"{type(exc).__name__}: {exc} | {traceback.format_exc(limit=2).splitlines()[-1]}",
                   _peak_mib(), time.perf_counter() - t0)
        return None
    report.add(arch, step, "ran", "", _peak_mib(), time.perf_counter() - t0)
    return out if out is not None else True


def run_on_gpu(args: argparse.Namespace, folders: dict[str, Path], report: Report) -> None:
    """Steps 1-5 of the module docstring for each folder, on the GPU (needs unsloth, trl, bitsandbytes)."""
    import torch

    try:
        import unsloth  # noqa: F401  before trl/transformers, as in the notebooks
        from unsloth import FastLanguageModel
    except Exception as exc:
        for arch in folders:
            report.add(arch, "import unsloth", "failed", f"{type(exc).__name__}: {exc}")
        return
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from medreason_utils.models import LORA_TARGETS_ALL
    from medreason_utils.rewards import partial_format_reward, strict_format_reward

    prec = precision()
    dtype = torch.bfloat16 if prec["bf16"] else torch.float16
    out = Path(args.out)
    for arch, folder in folders.items():
        for bits in ("16bit", "4bit"):
            label = f"{arch}/{bits}"
            if f"load-{bits}" not in args.only:
                report.add(label, f"load-{bits}", "skipped", "not in --only")
                continue
            loaded = _step(report, label, f"load-{bits}", lambda: FastLanguageModel.from_pretrained(
                str(folder), max_seq_length=256, dtype=dtype, load_in_4bit=bits == "4bit", fast_inference=False))
            if not loaded:
                for s in STEPS[2:]:
                    report.add(label, s, "skipped", "the model did not load")
                continue
            model, tok = loaded
            todo = [s for s in STEPS[2:] if s in args.only]
            if "lora" not in todo:
                continue
            model = _step(report, label, "lora", lambda: FastLanguageModel.get_peft_model(
                model, r=8, lora_alpha=16, target_modules=list(LORA_TARGETS_ALL), use_gradient_checkpointing="unsloth", random_state=0))
            if not model:
                continue
            common = dict(per_device_train_batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-4, logging_steps=1,
                          report_to="none", save_strategy="no", seed=0, **prec)
            if "sft" in todo:
                _step(report, label, "sft", lambda: SFTTrainer(
                    model=model, processing_class=tok, train_dataset=_sft_rows(tok),
                    args=SFTConfig(output_dir=str(out / "sft" / label), max_steps=args.steps_sft, max_length=256, **common)).train())
            if "grpo" in todo:
                _step(report, label, "grpo", lambda: GRPOTrainer(
                    model=model, processing_class=tok, train_dataset=_grpo_rows(), reward_funcs=[strict_format_reward, partial_format_reward],
                    args=GRPOConfig(output_dir=str(out / "grpo" / label), max_steps=args.steps_grpo, num_generations=2,
                                    max_completion_length=16, use_vllm=False, loss_type="dr_grpo", beta=0.0, **common)).train())
            if "save-reload" in todo:
                adapter = out / "adapters" / label

                def save_reload():
                    model.save_pretrained(str(adapter))
                    tok.save_pretrained(str(adapter))
                    again, tok2 = FastLanguageModel.from_pretrained(str(adapter), max_seq_length=256, dtype=dtype,
                                                                    load_in_4bit=bits == "4bit", fast_inference=False)
                    FastLanguageModel.for_inference(again)
                    ids = tok2("<|im_start|>user\nWhich nerve?<|im_end|>\n", return_tensors="pt").to(again.device)
                    n = again.generate(**ids, max_new_tokens=4, do_sample=False).shape[1] - ids["input_ids"].shape[1]
                    if n < 1:
                        raise RuntimeError("the reloaded adapter generated no token")

                _step(report, label, "save-reload", save_reload)
            del model
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = Report()
    folders = {}
    for arch in args.archs:
        try:
            folders[arch] = build_tiny_model(arch, args.tokenizer, out / "models")
            report.add(arch, "build from config", "ran", str(folders[arch]))
        except Exception as exc:
            report.add(arch, "build from config", "failed", f"{type(exc).__name__}: {exc}")
    try:
        import torch

        gpu = torch.cuda.is_available()
    except Exception:
        gpu = False
    if args.dry_run or not gpu:
        why = "--dry-run" if args.dry_run else "no CUDA GPU"
        for arch in folders:
            for s in STEPS:
                report.add(arch, s, "skipped", why)
    else:
        name = torch.cuda.get_device_name()
        cap = ".".join(map(str, torch.cuda.get_device_capability()))
        print(f"GPU: {name} (compute capability {cap}) -> {'bf16' if precision()['bf16'] else 'fp16'}")
        run_on_gpu(args, folders, report)
    versions = {}
    for dist in ("torch", "transformers", "trl", "peft", "unsloth", "unsloth_zoo", "bitsandbytes", "accelerate"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:
            versions[dist] = None
    print(" | ".join(f"{k} {v}" for k, v in versions.items()))
    print(report.table())
    (out / "report.json").write_text(json.dumps({"versions": versions, "rows": report.rows}, indent=1))
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
