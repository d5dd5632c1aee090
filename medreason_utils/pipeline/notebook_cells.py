"""The cells every notebook shares (header and set-up), kept in one place.

``python -m medreason_utils.pipeline.notebook_cells --write`` stamps them into the notebooks (and strips
outputs); ``--check`` exits 1 when a notebook has drifted or carries outputs (a test runs it).
After Unsloth's notebooks, where one install cell template is stamped into every notebook.
Shared cells are found by their metadata tag (``shared:header``, ``shared:install``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["NOTEBOOKS", "GITHUB_REPO", "SOURCE_SETTING", "TOKEN_SETTING", "DRIVE_MOUNT", "header_source", "install_source", "stamp", "check", "main"]

#: ``"owner/name"`` of a public GitHub repository holding this suite, or None while there is none.
#: When set (then ``make stamp``), the header gets an *Open in Colab* badge and the set-up cell's
#: ``MEDREASON_SOURCE`` defaults to that repository; while None, users set ``MEDREASON_SOURCE``
#: to their fork or Drive folder (README: "Running from a fork / from Drive").
GITHUB_REPO: str | None = None
#: The set-up cell's setting naming where the package comes from on Colab (also read from the environment).
SOURCE_SETTING = "MEDREASON_SOURCE"
#: Colab secret (or environment variable) holding a GitHub token for cloning a private fork.
TOKEN_SETTING = "MEDREASON_GIT_TOKEN"
#: Where the set-up cell mounts Google Drive on Colab (``$MEDREASON_DRIVE_MOUNT`` overrides it, for tests).
DRIVE_MOUNT = "/content/drive"

#: notebook file -> (title, what it does)
NOTEBOOKS: dict[str, tuple[str, str]] = {
    "01_sft_format.ipynb": (
        "1. SFT: teach the response grammar",
        "Supervised fine-tuning with LoRA on medical-o1-reasoning-SFT so the model reasons in "
        "`<THINK>...</THINK>` and answers in `<ANSWER>...</ANSWER>`; format compliance before and after.",
    ),
    "02_grpo_training.ipynb": (
        "2. GRPO: reward the grammar and correct answers",
        "GRPO (Dr. GRPO loss, no KL, batch-std advantages) on a mix of sources: open-ended questions of "
        "medical-o1-verifiable-problem, graded by a verifier (correctness), and multiple-choice questions, graded by "
        "the option letter (MCQ exact match); with strict and partial format rewards. The GPU recipes train on the "
        "open-ended questions, the CPU recipe on multiple choice (a 135M model can reach that signal); then the "
        "rewards are measured on held-out prompts, SFT adapter against GRPO adapter.",
    ),
    "03_evaluation.ipynb": (
        "3. Evaluation: exact match and format compliance",
        "Base, SFT and GRPO adapters on the same MedQA-USMLE and MedMCQA items, greedy decoding.",
    ),
    "04_inference_demo.ipynb": (
        "4. Inference demo on a LoRA checkpoint",
        "Loads a LoRA checkpoint (default: the run's GRPO adapter when notebook 02 wrote one, else the one in "
        "`checkpoints/`) and answers medical questions, "
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
    """Markdown of the header cell of notebook ``name`` (title, Colab badge, purpose, the expected time on a
    T4 and an A100 with its arithmetic (:func:`medreason_utils.pipeline.colab_time.header_line`), disclaimer)."""
    from .colab_time import header_line

    title, what = NOTEBOOKS[name]
    if GITHUB_REPO:
        opening = (
            f'<a href="https://colab.research.google.com/github/{GITHUB_REPO}/blob/main/notebooks/{name}">'
            '<img src="https://colab.research.google.com/assets/colab-badge.svg" alt="Open In Colab"/></a>'
        )
    else:
        opening = (
            "On Colab: *File > Open notebook > GitHub* (your fork) or *Upload*, then set "
            f"`{SOURCE_SETTING}` at the top of the set-up cell (README: *Running from a fork / from Drive*)."
        )
    return (
        f"# {title}\n\n"
        f"{opening}\n\n"
        f"{what}\n\n"
        "Runs on a Colab T4 or A100 (Unsloth + vLLM) and, with the same cells, on a CPU "
        "(transformers + peft + TRL, SmolLM2-135M, shipped data): `make run` executes the notebooks headless.\n\n"
        + (f"{timing}\n\n" if (timing := header_line(name)) else "")
        + f"{_DISCLAIMER}"
    )


def install_source() -> str:
    """Code of the set-up cell. On Colab: keeps the run folders on Drive (mounts it at
    :data:`DRIVE_MOUNT`, sets ``$MEDREASON_RUNS`` to ``MyDrive/medreason/runs`` for
    :func:`medreason_utils.config.paths.default_run_dir`; declined, it says what will be lost), fetches this
    suite from ``MEDREASON_SOURCE`` (a git URL: the token of a private fork from the Colab secret or the
    environment variable :data:`TOKEN_SETTING`, sent as an HTTP header through git's environment, never in the
    URL, the cell or its output) and installs the GPU stack from the lock file of the GPU
    (``medreason_utils.pipeline.gpu_stack.install_on_colab``); elsewhere it installs nothing. Every failure
    raises with a message naming what to do (no ``!pip``: a failing ``!pip`` line does not stop a cell)."""
    default = f"https://github.com/{GITHUB_REPO}" if GITHUB_REPO else ""
    return f'''# Set-up: a shared cell, stamped from medreason_utils/pipeline/notebook_cells.py (edit it there, then `make stamp`).
# On Colab: where this suite's code comes from, a git URL of your fork ("https://github.com/<you>/medreason")
# or a folder you uploaded or keep on Drive ("/content/drive/MyDrive/medreason"); the environment variable
# {SOURCE_SETTING} is read when this is empty. A private fork: add a Colab secret (key icon) named {TOKEN_SETTING}
# holding a GitHub token; never put a token in the URL. Not used elsewhere (`make run` / `make test` set up a CPU venv).
{SOURCE_SETTING} = "{default}"  # @param {{type:"string"}}
# Keep the run folder (adapters, checkpoints, summary.json) on Drive, MyDrive/medreason/runs/<RUN_NAME>: each
# notebook runs on its own runtime and /content is wiped when a runtime ends, so notebook 02 finds notebook 01's
# adapter, and a run resumes after a disconnect, only through Drive.
USE_DRIVE = True  # @param {{type:"boolean"}}
import os, re, subprocess, sys
IN_COLAB = "COLAB_RELEASE_TAG" in os.environ
if IN_COLAB:
    _mount = os.environ.get("MEDREASON_DRIVE_MOUNT", "{DRIVE_MOUNT}")
    if USE_DRIVE and not os.path.isdir(os.path.join(_mount, "MyDrive")):
        try:
            from google.colab import drive
            drive.mount(_mount)
        except Exception as exc:  # declined, or no Drive
            print(f"Drive not mounted ({{type(exc).__name__}}).")
    if USE_DRIVE and os.path.isdir(os.path.join(_mount, "MyDrive")):
        os.environ["MEDREASON_RUNS"] = os.path.join(_mount, "MyDrive", "medreason", "runs")
        print(f"run folders on Drive: {{os.environ['MEDREASON_RUNS']}}/<RUN_NAME>")
    else:
        os.environ.pop("MEDREASON_RUNS", None)
        print("WARNING: the run folder is NOT on Drive: adapters, checkpoints and summary.json are written under "
              "/content and are lost when this runtime ends (a disconnect, a timeout, a new session); notebooks "
              "02-04 on another runtime will not find notebook 01's adapter and GRPO cannot resume. "
              "Set USE_DRIVE and accept the Drive prompt to keep them.")
    {SOURCE_SETTING} = {SOURCE_SETTING} or os.environ.get("{SOURCE_SETTING}", "")
    if not {SOURCE_SETTING}:
        raise RuntimeError(
            "Set {SOURCE_SETTING} at the top of this cell to a git URL of your fork of medreason "
            "(https://github.com/<you>/medreason) or to a folder holding it (uploaded, or on Drive: "
            "/content/drive/MyDrive/medreason), then run the cell again."
        )
    if "://" in {SOURCE_SETTING} or {SOURCE_SETTING}.startswith("git@"):
        if re.search(r"://[^/@]*@", {SOURCE_SETTING}):
            raise RuntimeError("{SOURCE_SETTING} holds credentials (user:token@): remove them, revoke that token, and add "
                               "a Colab secret named {TOKEN_SETTING} instead.")
        _token = None
        try:
            from google.colab import userdata
            _token = userdata.get("{TOKEN_SETTING}")
        except Exception:  # no such secret, or access not granted
            pass
        _token = _token or os.environ.get("{TOKEN_SETTING}")
        _env = dict(os.environ)
        _secrets = []
        if _token:
            import base64
            _basic = base64.b64encode(f"x-access-token:{{_token}}".encode()).decode()
            _secrets = [_token, _basic]
            # git reads this from its environment (GIT_CONFIG_COUNT, git >= 2.31): not in argv, URL or output
            _env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                        GIT_CONFIG_VALUE_0=f"Authorization: Basic {{_basic}}", GIT_TERMINAL_PROMPT="0")
        SOURCE_DIR = "/content/medreason" if os.path.isdir("/content") else os.path.abspath("medreason")
        if not os.path.isdir(SOURCE_DIR):
            clone = subprocess.run(["git", "clone", "-q", "--depth", "1", "--", {SOURCE_SETTING}, SOURCE_DIR],
                                   capture_output=True, text=True, env=_env)
            if clone.returncode != 0:
                _said = clone.stderr.strip()
                for _s in _secrets:
                    _said = _said.replace(_s, "***")
                raise RuntimeError(f"git clone {{{SOURCE_SETTING}}} failed: {{_said}}\\nCheck {SOURCE_SETTING}; a private fork "
                                   "needs a Colab secret {TOKEN_SETTING} (a GitHub token that can read it).")
        del _token, _env, _secrets
    else:
        SOURCE_DIR = os.path.abspath(os.path.expanduser({SOURCE_SETTING}))
    if not os.path.isfile(os.path.join(SOURCE_DIR, "medreason_utils", "pipeline", "gpu_stack.py")):
        raise RuntimeError(f"{{SOURCE_DIR}} holds no medreason checkout (no medreason_utils/pipeline/gpu_stack.py): check {SOURCE_SETTING}.")
    sys.path.insert(0, SOURCE_DIR)
    from medreason_utils.pipeline.gpu_stack import install_on_colab
    # T4 (compute capability < 8.0) -> requirements-gpu-t4.txt, A100/L4/H100 -> requirements-gpu.txt; raises on failure
    install_on_colab(SOURCE_DIR)
    os.chdir(os.path.join(SOURCE_DIR, "notebooks"))
import importlib.util, torch
if torch.cuda.is_available() and importlib.util.find_spec("unsloth") is not None:  # the GPU stack is installed
    # Unsloth's standby: vLLM sleeps while the trainer runs and shares the weights' memory (Unsloth's GRPO notebooks set it)
    os.environ.setdefault("UNSLOTH_VLLM_STANDBY", "1")
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
    from ..config import repo_root

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
