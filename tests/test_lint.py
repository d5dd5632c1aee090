"""The lint rules of pyproject.toml (``[tool.ruff.lint]``): ruff passes on the repository, notebooks included,
and each banned API is caught however it is reached (the rules are run on small files that break them).

Banned (``flake8-tidy-imports.banned-api``, TID251): asking torch or Unsloth whether bf16 is supported.
``torch.cuda.is_bf16_supported()`` also counts emulated bf16, so it says True on a T4; every bf16 decision
goes through the compute capability (``RuntimeInfo.bf16``, tested in test_gpu_settings.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "json", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_ruff_passes_on_the_repository_notebooks_included():
    proc = _ruff(".")
    found = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and found == [], "\n".join(f"{f['filename']}:{f['location']['row']}: {f['code']} {f['message']}"
                                                          for f in found) or proc.stderr
    listed = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--show-files", "."], capture_output=True,
                            text=True, cwd=ROOT, timeout=120).stdout
    for name in ("medreason_utils/models/runtime.py", "notebooks/01_sft_format.ipynb", "scripts/gpu_check.py"):
        assert str(ROOT / name) in listed, f"ruff does not check {name}"


@pytest.mark.parametrize(
    "source",
    [
        "import torch\n\nUSE_BF16 = torch.cuda.is_bf16_supported()\n",
        "import torch as t\n\nUSE_BF16 = t.cuda.is_bf16_supported(including_emulation=False)\n",
        "from torch.cuda import is_bf16_supported\n",
        "from unsloth import is_bfloat16_supported\n\nbf16 = is_bfloat16_supported()\n",
        "import unsloth\n\nbf16 = unsloth.is_bfloat16_supported()\n",
    ],
)
def test_asking_whether_bf16_is_supported_is_a_lint_error(tmp_path, source):
    (tmp_path / "module.py").write_text(source)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# a notebook"), nbformat.v4.new_code_cell(source)])
    nbformat.write(nb, str(tmp_path / "notebook.ipynb"))
    proc = _ruff("--config", str(ROOT / "pyproject.toml"), str(tmp_path), cwd=tmp_path)
    found = {(Path(f["filename"]).name, f["code"]) for f in json.loads(proc.stdout)}
    assert proc.returncode == 1 and found == {("module.py", "TID251"), ("notebook.ipynb", "TID251")}, proc.stdout + proc.stderr
    assert "compute capability" in proc.stdout  # the message says what to use instead
