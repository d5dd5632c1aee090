"""The executed demo notebook, exported to HTML and opened in a real headless Chromium.

Executes ``notebooks/04_inference_demo.ipynb`` (or ``$MEDREASON_DEMO_NOTEBOOK``) with papermill on
the offline default model and a tiny LoRA adapter made here, exports it with nbconvert's HTML
exporter, takes a screenshot with Debian's ``chromium`` and checks that the picture shows the demo
(the disclaimer banner and the answer or malformed-output box, by their colours). With
``MEDREASON_UPDATE_SCREENSHOT=1`` the picture is copied to ``docs/demo.png`` (the README's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = Path(os.environ.get("MEDREASON_DEMO_NOTEBOOK", ROOT / "notebooks" / "04_inference_demo.ipynb"))
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--force-device-scale-factor=1",
]
# colours of medreason_utils.ui.html boxes (RGB)
DISCLAIMER_BG = (0xFD, 0xEC, 0xEA)
ANSWER_BG = (0xFF, 0xF3, 0xB0)
MALFORMED_BG = (0xFD, 0xE2, 0xC8)


def _chromium() -> str:
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if exe is None:
        pytest.fail("Debian's chromium is needed for the screenshot test: `make test` installs it (apt-get install -y chromium)")
    return exe


def _tiny_adapter(folder: Path) -> Path:
    from medreason_utils.models import add_lora, load_model, save_adapter

    model, tokenizer = load_model()
    model = add_lora(model, rank=4, target_modules=["q_proj", "v_proj"])
    return save_adapter(model, tokenizer, folder / "checkpoints" / "tiny-lora")


def _count(img, rgb, tol=3) -> int:
    """Pixels of ``img`` within ``tol`` of colour ``rgb`` in every channel."""
    return sum(
        n for n, c in img.getcolors(maxcolors=1 << 24) if all(abs(a - b) <= tol for a, b in zip(c, rgb))
    )


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.browser
def test_demo_notebook_screenshot(tmp_path):
    if not NOTEBOOK.is_file():
        pytest.skip(f"{NOTEBOOK} does not exist yet (the lead creates notebooks/04_inference_demo.ipynb)")
    chromium = _chromium()
    import nbformat
    import papermill
    from nbconvert import HTMLExporter
    from PIL import Image

    from medreason_utils.config import default_checkpoint

    # the shipped checkpoint when there is one (the README picture then shows the trained model)
    adapter = default_checkpoint() if (default_checkpoint() / "adapter_config.json").is_file() else _tiny_adapter(tmp_path)
    executed = tmp_path / "04_executed.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(executed), cwd=str(ROOT), kernel_name="python3", progress_bar=False,
        parameters={"RUN_DIR": str(tmp_path / "run"), "CHECKPOINT": str(adapter), "MAX_NEW_TOKENS": 160, "GREEDY": True,
                    "USE_RETRIEVAL": False},  # the notebook's default: the checkpoint was not trained with passages
    )
    nb = nbformat.read(str(executed), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    assert "medreason-disclaimer" in body and "Research demonstration only" in body
    assert "medreason-passages" not in body, "retrieval was off: no passages should be in the exported page"
    (tmp_path / "notebook.html").write_text(body, encoding="utf-8")

    # The picture: the executed notebook's demo output(s) alone, exported the same way without inputs
    # (widgets need their JavaScript from a CDN, so the static page shows the demo's HTML output).
    view = nbformat.from_dict(nb)
    view.cells = [c for c in nb.cells if c.cell_type == "code" and "medreason-demo" in json.dumps(c.get("outputs", []))]
    assert view.cells, "no cell of the executed notebook shows the demo's answer (medreason-demo)"
    shown, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(view)
    page = tmp_path / "demo.html"
    page.write_text(shown, encoding="utf-8")

    png = tmp_path / "demo.png"
    profile = tmp_path / "chromium-profile"
    proc = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1200,800",
         "--virtual-time-budget=10000", f"--screenshot={png}", page.as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0 and png.is_file(), f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    img = Image.open(png).convert("RGB")
    assert img.size == (1200, 800)
    small = img.resize((600, 400), Image.NEAREST)  # fewer pixels to scan, colours kept
    disclaimer = _count(small, DISCLAIMER_BG)
    answer_or_malformed = _count(small, ANSWER_BG) + _count(small, MALFORMED_BG)
    assert disclaimer > 500, f"the disclaimer banner is not in the screenshot ({disclaimer} pixels of its colour)"
    assert answer_or_malformed > 500, f"neither an answer box nor a malformed-output box in the screenshot ({answer_or_malformed} pixels)"
    if os.environ.get("MEDREASON_UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(png, ROOT / "docs" / "demo.png")
