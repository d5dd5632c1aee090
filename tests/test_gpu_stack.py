"""The Colab GPU stack (issue 8, defect 1 and "The GPU stack, pinned"; defect 2, the package's source).

* The two lock files pin every key package exactly and respect the incompatibilities found in the
  review (torchao vs torch, sentence-transformers vs transformers, the Jupyter layer left to Colab).
* ``network`` tests resolve both locks with uv for Colab (Python 3.12, x86_64, glibc 2.35) against the
  package index, and show that a conflicting pin (the old ``triton==3.2.0``) fails resolution.
  Offline: ``-m "not network"``.
* The set-up cell uses the locks through ``gpu_stack.install_on_colab`` and, run as on Colab, stops
  with a message naming ``MEDREASON_SOURCE`` or the runtime setting before installing anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from medreason_utils.pipeline import gpu_stack, notebook_cells
from medreason_utils.pipeline.gpu_stack import (
    LOCK_DEFAULT,
    LOCK_T4,
    LOCKS,
    NOT_EMITTED,
    Gpu,
    GpuStackError,
    cpu_requirements_with_lock,
    imported_distributions,
    installed_mismatches,
    lock_file_for,
    query_gpu,
    read_pins,
    run_checked,
    verify_lock,
)

ROOT = Path(__file__).resolve().parents[1]
KEY = ("unsloth", "unsloth-zoo", "vllm", "torch", "triton", "trl", "transformers", "peft", "datasets", "accelerate", "bitsandbytes")
#: what Colab itself runs on; a lock that replaced these could break the Colab kernel after a restart
JUPYTER_LAYER = ("ipython", "ipykernel", "jupyter-client", "jupyter-core", "tornado", "traitlets", "ipywidgets", "notebook")


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()))


@pytest.mark.parametrize("lock", list(LOCKS))
def test_lock_pins_every_key_package_exactly(lock):
    pins = read_pins(ROOT / lock)  # raises on any line that is not name==version
    missing = [k for k in KEY if k not in pins]
    assert not missing, f"{lock} lacks {missing}"
    assert pins["unsloth"] == "2026.10.5"  # the version the Unsloth contract test reads
    assert pins["vllm"] == ("0.11.2" if lock == LOCK_T4 else "0.15.1")


@pytest.mark.parametrize("lock", list(LOCKS))
def test_lock_respects_the_known_incompatibilities(lock):
    pins = read_pins(ROOT / lock)
    torch, torchao = _major_minor(pins["torch"]), _major_minor(pins["torchao"])
    assert torchao >= (0, 16), "peft >= 0.19 refuses torchao < 0.16"
    if torch < (2, 10):
        assert torchao < (0, 18), f"torchao {pins['torchao']} imports ScalingType, absent from torch {pins['torch']}"
    if _major_minor(pins["transformers"]) < (5, 0):
        assert _major_minor(pins["sentence-transformers"]) < (6, 0), "sentence-transformers 6 requires transformers 5"
    assert pins["torchvision"], "torchvision must come from the same torch release as torch"
    left = [n for n in JUPYTER_LAYER + NOT_EMITTED if n in pins]
    assert not left, f"{lock} pins {left}: Colab's kernel runs on its own copies"


def test_locks_come_from_their_in_files_which_differ_only_in_vllm():
    texts = {}
    for lock, in_file in LOCKS.items():
        header = (ROOT / lock).read_text().splitlines()[:2]
        assert header[1].strip("# ") == gpu_stack.REGENERATE, f"{lock} was not written by `make lock-gpu`"
        reqs = [l for l in (ROOT / in_file).read_text().splitlines() if l.strip() and not l.startswith("#")]
        names = {gpu_stack._norm(l.split("==")[0].split("<")[0].split(">")[0]) for l in reqs}
        assert names <= set(read_pins(ROOT / lock)), f"{lock} misses requirements of {in_file}"
        texts[lock] = [l for l in reqs if not l.startswith("vllm")]
    assert texts[LOCK_T4] == texts[LOCK_DEFAULT]


@pytest.mark.parametrize(
    "gpu, lock",
    [
        (Gpu("Tesla T4", (7, 5)), LOCK_T4),
        (Gpu("Tesla V100-SXM2-16GB", (7, 0)), LOCK_T4),
        (Gpu("NVIDIA A100-SXM4-40GB", (8, 0)), LOCK_DEFAULT),
        (Gpu("NVIDIA L4", (8, 9)), LOCK_DEFAULT),
        (Gpu("NVIDIA H100 80GB HBM3", (9, 0)), LOCK_DEFAULT),
        (Gpu("Tesla T4", None), LOCK_T4),
        (Gpu("NVIDIA A100-SXM4-40GB", None), LOCK_DEFAULT),
    ],
)
def test_lock_file_for_picks_by_compute_capability(gpu, lock):
    assert lock_file_for(gpu) == lock


def test_query_gpu_parses_nvidia_smi_csv(tmp_path):
    # nvidia-smi's documented `--query-gpu=name,compute_cap --format=csv,noheader` line, as a T4 prints it
    exe = tmp_path / "nvidia-smi"
    exe.write_text('#!/bin/sh\necho "Tesla T4, 7.5"\n')
    exe.chmod(0o755)
    gpu = query_gpu(str(exe))
    assert gpu == Gpu("Tesla T4", (7, 5))
    assert lock_file_for(gpu) == LOCK_T4


def test_query_gpu_without_a_gpu_names_the_runtime_setting():
    with pytest.raises(GpuStackError, match="Change runtime type"):
        query_gpu("nvidia-smi-that-does-not-exist")


def test_run_checked_raises_with_the_command_and_the_output_tail():
    cmd = [sys.executable, "-c", "import sys; print('resolving...'); print('No solution found', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(GpuStackError) as info:
        run_checked(cmd, what="installing requirements-gpu-t4.txt")
    text = str(info.value)
    assert "installing requirements-gpu-t4.txt failed (exit 3)" in text
    assert "No solution found" in text and sys.executable in text
    assert run_checked([sys.executable, "-c", "print('ok')"], what="x").strip() == "ok"


def test_read_pins_rejects_a_floating_requirement(tmp_path):
    lock = tmp_path / "requirements-gpu.txt"
    lock.write_text("torch==2.9.1\n    # via vllm\nvllm>=0.15\n")
    with pytest.raises(ValueError, match=r"requirements-gpu.txt:3: not an exact"):
        read_pins(lock)


def test_installed_mismatches_and_imported_distributions_read_this_interpreter(tmp_path):
    import pytest as _pytest

    lock = tmp_path / "lock.txt"
    lock.write_text(f"pytest=={_pytest.__version__}\nno-such-package-medreason==1.0\n")
    assert installed_mismatches(read_pins(lock)) == {"no-such-package-medreason": ("1.0", None)}
    assert imported_distributions()["pytest"] == _pytest.__version__


def test_cpu_requirements_take_the_lock_libraries_but_keep_cpu_torch():
    requirements, constraints = cpu_requirements_with_lock(ROOT / "requirements-cpu.txt", ROOT / LOCK_DEFAULT)
    lock = read_pins(ROOT / LOCK_DEFAULT)
    req_pins = {gpu_stack._norm(l.split("==")[0].split("[")[0]): l.split("==")[1].split()[0] for l in requirements.splitlines() if "==" in l}
    for name in gpu_stack.GPU_LIBS:
        assert req_pins[name] == lock[name], name
    assert req_pins["torch"] == read_pins(ROOT / "requirements-cpu.txt")["torch"]
    both = set(req_pins) | {l.split("==")[0] for l in constraints.splitlines() if l}
    assert not {"vllm", "unsloth", "unsloth-zoo", "bitsandbytes", "triton", "xformers"} & both
    assert not any(n.startswith("nvidia-") for n in both)


def test_install_cell_installs_from_the_locks_and_imports_unsloth_first():
    src = notebook_cells.install_source()
    assert "install_on_colab(SOURCE_DIR)" in src
    assert "!" not in "".join(line.lstrip()[:1] for line in src.splitlines()), "a failing !pip line does not stop a cell"
    assert "vllm==" not in src and "triton==" not in src, "versions live in the lock files only"
    assert src.index("import unsloth") < src.index("import medreason_utils\n")
    for lock in LOCKS:
        assert (ROOT / lock).is_file()


@pytest.mark.parametrize("gpu, lock", [(Gpu("Tesla T4", (7, 5)), LOCK_T4), (Gpu("NVIDIA A100-SXM4-40GB", (8, 0)), LOCK_DEFAULT)])
def test_install_on_colab_installs_the_lock_of_the_gpu_nvidia_smi_reports(monkeypatch, capsys, gpu, lock):
    """install_on_colab run with nvidia-smi's answer and the install commands recorded (not run): it installs
    the lock of that GPU (lock_file_for), checks the pins, then the package without dependencies."""
    commands, missing = [], [{"torch": ("x", None)}, {}]  # before the install a pin is missing, after it none
    monkeypatch.setattr(gpu_stack, "query_gpu", lambda *a, **k: gpu)
    monkeypatch.setattr(gpu_stack, "run_checked", lambda cmd, what: commands.append((what, cmd)) or "")
    monkeypatch.setattr(gpu_stack, "installed_mismatches", lambda pins: missing.pop(0))
    monkeypatch.setattr(gpu_stack, "imported_distributions", dict)
    assert gpu_stack.install_on_colab(ROOT) == lock
    installs = [(what, cmd[cmd.index("install"):]) for what, cmd in commands if what != "installing uv"]
    assert installs == [(f"installing {lock}", ["install", "--python", sys.executable, "-r", str(ROOT / lock)]),
                        ("installing medreason_utils", ["install", "--python", sys.executable, "--no-deps", "-e", str(ROOT)])]
    assert f"-> {lock}" in capsys.readouterr().out


def _run_cell_as_on_colab(tmp_path, **env) -> subprocess.CompletedProcess:
    script = tmp_path / "setup_cell.py"
    script.write_text(notebook_cells.install_source())
    full = {k: v for k, v in os.environ.items() if k != notebook_cells.SOURCE_SETTING}
    full.update(COLAB_RELEASE_TAG="test", **env)
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=full, cwd=tmp_path, timeout=120)


def test_setup_cell_on_colab_without_source_names_the_setting(tmp_path):
    proc = _run_cell_as_on_colab(tmp_path)
    assert proc.returncode != 0
    assert "Set MEDREASON_SOURCE at the top of this cell" in proc.stderr


def test_setup_cell_on_colab_with_a_folder_that_is_no_checkout(tmp_path):
    proc = _run_cell_as_on_colab(tmp_path, MEDREASON_SOURCE=str(tmp_path))
    assert proc.returncode != 0
    assert "holds no medreason checkout" in proc.stderr and "MEDREASON_SOURCE" in proc.stderr


def test_setup_cell_on_colab_without_gpu_stops_before_installing(tmp_path):
    proc = _run_cell_as_on_colab(tmp_path, MEDREASON_SOURCE=str(ROOT), PATH=str(tmp_path))
    assert proc.returncode != 0
    assert "GpuStackError" in proc.stderr and "no NVIDIA GPU" in proc.stderr
    assert "GPU:" not in proc.stdout  # no lock chosen, nothing installed


def test_header_badge_follows_the_repository_setting(monkeypatch):
    name = next(iter(notebook_cells.NOTEBOOKS))
    monkeypatch.setattr(notebook_cells, "GITHUB_REPO", None)
    assert "colab-badge" not in notebook_cells.header_source(name)
    assert "MEDREASON_SOURCE" in notebook_cells.header_source(name)
    assert 'MEDREASON_SOURCE = ""' in notebook_cells.install_source()
    monkeypatch.setattr(notebook_cells, "GITHUB_REPO", "someone/medreason")
    assert f"colab.research.google.com/github/someone/medreason/blob/main/notebooks/{name}" in notebook_cells.header_source(name)
    assert 'MEDREASON_SOURCE = "https://github.com/someone/medreason"' in notebook_cells.install_source()


@pytest.mark.network
@pytest.mark.parametrize("lock", list(LOCKS))
def test_lock_resolves_for_colab(lock):
    problems = verify_lock(ROOT / lock)
    assert problems == [], "\n".join(problems)


@pytest.mark.network
def test_a_conflicting_pin_fails_resolution(tmp_path):
    # defect 1: the old install cell's triton==3.2.0 beside vLLM's torch
    lock = tmp_path / LOCK_T4
    text = (ROOT / LOCK_T4).read_text()
    triton = read_pins(ROOT / LOCK_T4)["triton"]
    lock.write_text(text.replace(f"\ntriton=={triton}\n", "\ntriton==3.2.0\n"))
    problems = verify_lock(lock, ROOT / LOCKS[LOCK_T4])
    assert len(problems) == 1 and "does not resolve" in problems[0] and "triton" in problems[0]


CHECKPOINT = ROOT / "checkpoints" / "medreason-smollm2-135m-grpo"


def test_shipped_checkpoint_tokenizer_loads_with_the_installed_transformers():
    # runs under transformers 5 (make test) and 4.57 (make test-gpu-libs): the folder must load in both
    transformers = pytest.importorskip("transformers")
    import json

    assert json.loads((CHECKPOINT / "tokenizer_config.json").read_text())["tokenizer_class"] != "TokenizersBackend"
    tok = transformers.AutoTokenizer.from_pretrained(str(CHECKPOINT))
    assert tok.eos_token == "<|im_end|>"
    enc = tok("<|im_start|>user\nWhich nerve?<|im_end|>")
    assert set(enc) == {"input_ids", "attention_mask"}  # no token_type_ids, which generate() rejects
    ids = enc["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    text = tok.apply_chat_template([{"role": "user", "content": "Which nerve?"}], tokenize=False, add_generation_prompt=True)
    assert text.rstrip().endswith("<|im_start|>assistant")


def test_portable_tokenizer_config_rewrites_only_the_transformers5_backend(tmp_path):
    import json
    import shutil

    from medreason_utils.models import portable_tokenizer_config

    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(CHECKPOINT / name, tmp_path / name)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg.pop("model_input_names", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**cfg, "tokenizer_class": "TokenizersBackend"}))
    assert portable_tokenizer_config(tmp_path) is True
    assert json.loads((tmp_path / "tokenizer_config.json").read_text()) == {
        **cfg, "tokenizer_class": "PreTrainedTokenizerFast", "model_input_names": ["input_ids", "attention_mask"]
    }
    assert portable_tokenizer_config(tmp_path) is False  # idempotent
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**cfg, "tokenizer_class": "Qwen2Tokenizer"}))
    assert portable_tokenizer_config(tmp_path) is False


@pytest.mark.network
def test_install_on_colab_installs_the_lock_and_the_package_skips_a_rerun_and_stops_when_it_must(tmp_path):
    """The set-up cell's installer for real, in a fresh venv, with a one-package lock in place of the GPU
    stack (which would replace torch): install, re-run, a replaced library already imported, a failed install."""
    import shutil

    source = tmp_path / "medreason"
    shutil.copytree(ROOT / "medreason_utils", source / "medreason_utils", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    lock = source / LOCK_T4
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    cell = (
        f"import sys; sys.path.insert(0, {str(source)!r}); from medreason_utils.pipeline.gpu_stack import Gpu, install_on_colab; "
        f"install_on_colab({str(source)!r}, gpu=Gpu('Tesla T4', (7, 5)))"
    )

    def run(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)

    lock.write_text("six==1.17.0\n")
    first = run(cell)
    assert first.returncode == 0, first.stderr
    assert "Tesla T4 (compute capability 7.5) -> requirements-gpu-t4.txt" in first.stdout
    installed = run("import six, importlib.metadata as m; print(six.__version__, m.version('medreason-utils'))")
    assert installed.stdout.split() == ["1.17.0", "0.1.0"], installed.stderr

    again = run(cell)
    assert again.returncode == 0 and "requirements-gpu-t4.txt: already installed" in again.stdout, again.stderr

    lock.write_text("six==1.16.0\n")
    replaced = run("import six; " + cell)
    assert replaced.returncode != 0
    assert "six 1.17.0 -> 1.16.0" in replaced.stderr and "Restart the session" in replaced.stderr

    lock.write_text("medreason-no-such-package==0.0.1\n")
    failed = run(cell)
    assert failed.returncode != 0
    assert "installing requirements-gpu-t4.txt failed (exit" in failed.stderr and "medreason-no-such-package" in failed.stderr
