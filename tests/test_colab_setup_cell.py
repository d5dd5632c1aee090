"""The set-up cell's Colab branch, run as on Colab: ``COLAB_RELEASE_TAG`` set, a stand-in ``google.colab``
(``drive.mount`` makes ``MyDrive`` in a temporary folder, ``userdata.get`` returns a fake token), a real local
git repository or a real local HTTP server as the fork. Checks that the Drive run folder is chosen (or the
user is told what is lost), and that the fork token reaches git but appears in no output."""

from __future__ import annotations

import base64
import http.server
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from medreason_utils.config import paths
from medreason_utils.pipeline import notebook_cells

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "ghp_FAKEtoken0123456789abcdefDoNotPrint"

pytestmark = pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="the cell would install the GPU stack here")


def _stand_in_colab(tmp_path: Path, *, decline_drive: bool = False) -> Path:
    """A ``google.colab`` namespace package (no ``google/__init__.py``, so Google's real packages still import)."""
    pkg = tmp_path / "standin" / "google" / "colab"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    mount = "raise RuntimeError('credential propagation was unsuccessful')" if decline_drive else "os.makedirs(os.path.join(path, 'MyDrive'), exist_ok=True)"
    (pkg / "drive.py").write_text(f"import os\ndef mount(path, **kw):\n    print('stand-in drive.mount', path)\n    {mount}\n")
    (pkg / "userdata.py").write_text(textwrap.dedent(f"""
        class SecretNotFoundError(Exception):
            pass
        def get(key):
            if key == {notebook_cells.TOKEN_SETTING!r}:
                return {TOKEN!r}
            raise SecretNotFoundError(key)
    """))
    return tmp_path / "standin"


def _fork_repo(tmp_path: Path) -> Path:
    """A real git repository holding the files the cell checks for (the real gpu_stack.py)."""
    repo = tmp_path / "fork"
    (repo / "medreason_utils" / "pipeline").mkdir(parents=True)
    (repo / "medreason_utils" / "__init__.py").write_text("")
    (repo / "medreason_utils" / "pipeline" / "__init__.py").write_text("")
    shutil.copy(ROOT / "medreason_utils" / "pipeline" / "gpu_stack.py", repo / "medreason_utils" / "pipeline")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "fork"], check=True)
    return repo


def _run_cell(tmp_path: Path, source: str, *, decline_drive: bool = False, use_drive: bool = True) -> tuple[subprocess.CompletedProcess, Path]:
    cell = notebook_cells.install_source()
    if not use_drive:
        cell = cell.replace("USE_DRIVE = True", "USE_DRIVE = False", 1)
    work = tmp_path / "content"
    work.mkdir()
    wrapper = work / "run_cell.py"
    wrapper.write_text(
        "import os, traceback\n"
        f"try:\n    exec(compile({cell!r}, 'setup_cell', 'exec'))\n"
        "except Exception:\n    traceback.print_exc()\n"
        "print('MEDREASON_RUNS=' + os.environ.get('MEDREASON_RUNS', '<unset>'))\n"
    )
    drive = tmp_path / "drive"
    env = {k: v for k, v in os.environ.items() if k not in (notebook_cells.SOURCE_SETTING, notebook_cells.TOKEN_SETTING, paths.RUNS_SETTING)}
    env.update(COLAB_RELEASE_TAG="test", MEDREASON_SOURCE=source, MEDREASON_DRIVE_MOUNT=str(drive),
               PYTHONPATH=str(_stand_in_colab(tmp_path, decline_drive=decline_drive)), GIT_TERMINAL_PROMPT="0")
    proc = subprocess.run([sys.executable, str(wrapper)], capture_output=True, text=True, env=env, cwd=work, timeout=120)
    return proc, drive


def _assert_no_token(proc: subprocess.CompletedProcess, *places: Path) -> None:
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    for secret in (TOKEN, basic):
        assert secret not in proc.stdout and secret not in proc.stderr
        for place in places:
            for f in place.rglob("*"):
                if f.is_file() and ".git" not in f.parts:
                    assert secret.encode() not in f.read_bytes(), f
    assert TOKEN not in notebook_cells.install_source()


def test_colab_cell_clones_the_fork_and_keeps_runs_on_drive(tmp_path, monkeypatch):
    fork = _fork_repo(tmp_path)
    proc, drive = _run_cell(tmp_path, f"file://{fork}")
    out = proc.stdout + proc.stderr
    runs = drive / "MyDrive" / "medreason" / "runs"
    assert "stand-in drive.mount" in out and f"run folders on Drive: {runs}/<RUN_NAME>" in out
    assert f"MEDREASON_RUNS={runs}" in proc.stdout
    assert (tmp_path / "content" / "medreason" / "medreason_utils" / "pipeline" / "gpu_stack.py").is_file()  # cloned
    assert "no NVIDIA GPU" in out  # the install step was reached (this machine has no GPU)
    _assert_no_token(proc, tmp_path / "content")
    monkeypatch.setenv(paths.RUNS_SETTING, str(runs))
    assert paths.default_run_dir("latest") == runs / "latest"


@pytest.mark.parametrize("how", ["declined", "switched off"])
def test_colab_cell_without_drive_says_what_is_lost(tmp_path, how):
    fork = _fork_repo(tmp_path)
    proc, _ = _run_cell(tmp_path, str(fork), decline_drive=how == "declined", use_drive=how != "switched off")
    assert "the run folder is NOT on Drive" in proc.stdout and "lost when this runtime ends" in proc.stdout
    assert "MEDREASON_RUNS=<unset>" in proc.stdout
    assert ("Drive not mounted (RuntimeError)" in proc.stdout) == (how == "declined")


class _Refusing(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        _Refusing.seen.append(self.headers.get("Authorization", ""))
        self.send_response(403)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_failed_clone_with_a_token_shows_no_token(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc, _ = _run_cell(tmp_path, f"http://127.0.0.1:{server.server_address[1]}/someone/private-fork.git")
    finally:
        server.shutdown()
    assert "git clone http://127.0.0.1" in proc.stderr and "failed" in proc.stderr and "403" in proc.stderr
    assert notebook_cells.TOKEN_SETTING in proc.stderr  # says where the token goes
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert f"Basic {basic}" in _Refusing.seen  # the secret reached git's request ...
    _assert_no_token(proc, tmp_path / "content")  # ... and no output


def test_a_token_inside_the_url_is_refused_without_echoing_it(tmp_path):
    proc, _ = _run_cell(tmp_path, f"https://x-access-token:{TOKEN}@github.com/someone/medreason")
    assert "holds credentials" in proc.stderr and notebook_cells.TOKEN_SETTING in proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr


def test_default_run_dir_outside_colab_and_bad_names(monkeypatch):
    monkeypatch.delenv(paths.RUNS_SETTING, raising=False)
    assert paths.default_run_dir() == Path("..") / "runs" / "latest"
    assert paths.default_run_dir("qwen3-t4") == Path("..") / "runs" / "qwen3-t4"
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError, match="RUN_NAME"):
            paths.default_run_dir(bad)


def test_demo_adapter_is_the_runs_grpo_adapter_when_there_is_one(tmp_path):
    assert paths.default_demo_adapter(None) == paths.default_checkpoint()
    assert paths.default_demo_adapter(tmp_path) == paths.default_checkpoint()
    (tmp_path / "grpo_adapter").mkdir()
    assert paths.default_demo_adapter(tmp_path) == paths.default_checkpoint()  # no adapter_config.json: not written
    (tmp_path / "grpo_adapter" / "adapter_config.json").write_text("{}")
    assert paths.default_demo_adapter(tmp_path) == tmp_path / "grpo_adapter"
