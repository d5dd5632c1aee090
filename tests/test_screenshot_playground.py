"""The reward playground's score table, rendered by a real headless Chromium.

The table the playground shows is plain HTML (it also shows in a saved notebook); the test opens it in
Debian's ``chromium``, takes a screenshot and checks by colour that positive advantages are shown green
and negative ones red, and that a change of setting (all weights 0: no advantage) changes the picture.
With ``MEDREASON_UPDATE_SCREENSHOT=1`` the picture is copied to ``docs/playground.png``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_screenshot_demo import CHROMIUM_FLAGS, ROOT, _chromium, _count

from medreason_utils.ui.playground import RewardPlayground

pytestmark = pytest.mark.browser

POSITIVE = (0xD8, 0xF3, 0xDC)
NEGATIVE = (0xFF, 0xD6, 0xD6)
ZERO = (0xF1, 0xF1, 0xF1)


def _shoot(chromium: str, html: str, folder: Path, name: str):
    from PIL import Image

    page = folder / f"{name}.html"
    page.write_text(f"<html><body style='font-family:sans-serif'>{html}</body></html>", encoding="utf-8")
    png = folder / f"{name}.png"
    proc = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={folder / 'profile'}", "--window-size=1100,560",
         "--virtual-time-budget=5000", f"--screenshot={png}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0 and png.is_file(), f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return png, Image.open(png).convert("RGB")


def test_playground_table_screenshot(tmp_path):
    chromium = _chromium()
    pg = RewardPlayground()
    pg.scale_rewards.value = "group"
    n_pos = sum(a > 0 for a in pg.table.advantages)
    n_neg = sum(a < 0 for a in pg.table.advantages)
    assert n_pos and n_neg
    png, img = _shoot(chromium, pg.status.value + pg.output.value, tmp_path, "ranked")
    pos, neg = _count(img, POSITIVE), _count(img, NEGATIVE)
    assert pos > 1000 * n_pos and neg > 1000 * n_neg, (pos, neg)
    if os.environ.get("MEDREASON_UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(png, ROOT / "docs" / "playground.png")

    for weight in pg.weights:  # every reward off: every total is 0, so is every advantage
        weight.value = 0.0
    assert all(a == 0 for a in pg.table.advantages)
    _, img = _shoot(chromium, pg.output.value, tmp_path, "flat")
    assert _count(img, POSITIVE) == 0 and _count(img, NEGATIVE) == 0 and _count(img, ZERO) > 1000 * len(pg.table.advantages)
