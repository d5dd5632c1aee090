"""The widgets inside a running JupyterLab, driven in a real browser (``make lab``'s front end).

The test starts JupyterLab from this venv on loopback (a free port, a random token), opens a notebook
made of the real cells of notebook 02 (set-up, parameters, config, the reward playground) and notebook 04
(set-up, parameters, the demo), with the smallest settings, in Debian's ``chromium`` through Playwright's
Python package (``executable_path``: no browser download), runs every cell, changes a reward weight in
the playground and sees the scores table change, and asks the demo a question and sees the reasoning
(THINK) shown apart from the answer (ANSWER). Screenshots: ``docs/jupyterlab_playground.png`` and
``docs/jupyterlab_demo.png`` (rewritten with ``MEDREASON_UPDATE_SCREENSHOT=1``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cells(name: str, picks) -> list[str]:
    """Sources of the cells of a real notebook: by tag ("shared:install", "parameters") or by a line they start with."""
    import nbformat

    nb = nbformat.read(str(NOTEBOOKS / name), as_version=4)
    out = []
    for pick in picks:
        found = [c for c in nb.cells if c.cell_type == "code" and (pick in c.metadata.get("tags", []) or c.source.startswith(pick))]
        assert found, f"{name}: no code cell {pick!r} (the notebook changed: update this test)"
        out.append(found[0].source)
    return out


def _test_notebook(folder: Path, run_dir: Path) -> Path:
    import nbformat

    setup, params02, config02, prompts02, playground = _cells("02_grpo_training.ipynb", [
        "shared:install", "parameters", "from medreason_utils.config import default_run_dir, load_stage_config",
        "stages.load_grpo_prompts(grpo)", "from medreason_utils.ui.playground import RewardPlayground"])
    params04, load04, index04, app04 = _cells("04_inference_demo.ipynb", [
        "parameters", "from medreason_utils.config import default_demo_adapter, default_run_dir",
        "from medreason_utils.ui.retrieval import PassageIndex", "app = DemoApp("])
    sources = [
        setup,
        params02, f"RUN_DIR = {str(run_dir)!r}\nRECIPE = 'cpu'",  # papermill-style injected parameters
        config02, prompts02,
        "from types import SimpleNamespace\n"  # the playground scores the recipe's rows' example completions; sampling needs the model
        "grpo.loaded = SimpleNamespace(adapter_dir=None)",
        playground,
        params04, f"RUN_DIR = {str(run_dir)!r}\nMAX_NEW_TOKENS = 96  # the length the shipped adapter was trained to close its blocks in",
        load04, index04, app04,
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    path = folder / "widgets.ipynb"
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def jupyterlab(tmp_path):
    pytest.importorskip("jupyterlab")
    token, port = secrets.token_hex(16), _free_port()
    # user settings: every cell rendered (JupyterLab 4 leaves off-screen cells out of the page), no news pop-up
    settings = tmp_path / "jsettings"
    for plugin, value in {"notebook-extension/tracker": {"windowingMode": "none"},
                          "apputils-extension/notification": {"fetchNews": "false"}}.items():
        target = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JUPYTER_CONFIG_DIR": str(tmp_path / "jcfg"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "jws"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrt"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}", "--LabApp.expose_app_in_browser=True",
         "--ServerApp.open_browser=False", *(["--allow-root"] if os.geteuid() == 0 else [])], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer in 60 s:\n" + (tmp_path / "lab.log").read_text()[-3000:])
        assert proc.poll() is None, "JupyterLab exited:\n" + (tmp_path / "lab.log").read_text()[-3000:]
        yield url, token, tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_playground_and_demo_widgets_work_in_jupyterlab(jupyterlab):
    from test_screenshot_demo import _chromium

    playwright = pytest.importorskip("playwright.sync_api")
    url, token, folder = jupyterlab
    nb = _test_notebook(folder, folder / "run")
    shots = folder / "shots"
    shots.mkdir()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}/lab/tree/{nb.name}?token={token}")
            page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext.session", timeout=90_000)
            page.wait_for_function("window.jupyterapp.shell.currentWidget.sessionContext.kernelDisplayStatus === 'idle'",
                                   timeout=90_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

            # notebook 02's playground: the scores table, then a weight changed in the widget
            table = page.locator("table.medreason-scores").first
            table.wait_for(timeout=120_000)
            before = table.inner_text()
            weights = page.locator(".widget-vbox:has(> .widget-html :text('Weights and advantage')) .widget-text input")
            assert weights.count() >= 2, weights.count()
            table.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "jupyterlab_playground.png"))
            weights.first.fill("0")
            weights.first.press("Enter")
            page.wait_for_function("(b) => { const t = document.querySelector('table.medreason-scores');"
                                   " return t && t.innerText !== b; }", arg=before, timeout=30_000)
            assert table.inner_text() != before

            # notebook 04's demo: ask, then the reasoning apart from the answer
            ask = page.locator("button:has-text('Ask')").first
            try:
                ask.wait_for(timeout=180_000)
            except playwright.TimeoutError:
                page.screenshot(path=str(ROOT / ".pytest-jupyterlab-failure.png"), full_page=True)
                outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
                outputs.append(str(page.evaluate("window.jupyterapp.shell.currentWidget.content.widgets.map("
                                                 "c => [c.model.type, c.model.executionCount, c.model.sharedModel.source.slice(0, 40)])")))
                outputs.append(str(page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.kernelDisplayStatus")))
                pytest.fail("no Ask button; cell outputs:\n" + "\n---\n".join(o[-1500:] for o in outputs)[-6000:])
            ask.scroll_into_view_if_needed()
            ask.click()
            answer = page.locator(".medreason-demo .medreason-answer, .medreason-demo .medreason-malformed").first
            answer.wait_for(timeout=300_000)
            demo = page.locator(".medreason-demo").last
            demo.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "jupyterlab_demo.png"))
            assert demo.locator("details.medreason-reasoning").count() == 1, demo.inner_html()[:2000]
            assert demo.locator(".medreason-answer").count() == 1, demo.inner_html()[:2000]
            think = demo.locator("details.medreason-reasoning").inner_text()
            said = demo.locator(".medreason-answer").inner_text()
            assert think.strip() and said.strip() and said.strip() not in think
            errors = page.evaluate("window.jupyterapp.shell.currentWidget.content.widgets.flatMap(c => c.model.type !== 'code' ? [] "
                                   ": c.model.outputs.toJSON().filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue))")
            assert errors == []
        finally:
            browser.close()
    if os.environ.get("MEDREASON_UPDATE_SCREENSHOT") == "1":
        for png in shots.glob("*.png"):
            shutil.copyfile(png, ROOT / "docs" / png.name)
