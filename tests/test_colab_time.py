"""The header's expected Colab times follow the recipes' token counts (issue 19: time on Colab)."""

from __future__ import annotations

import shutil

import yaml

from medreason_utils.config import read_recipe, recipes_dir
from medreason_utils.pipeline import colab_time, notebook_cells


def _recipes_with(tmp_path, gpu_dir, stage, **changes):
    shutil.copytree(recipes_dir(), tmp_path / "recipes")
    path = tmp_path / "recipes" / gpu_dir / f"{stage}.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return tmp_path / "recipes"


def test_sft_time_scales_with_rows(tmp_path):
    base = colab_time.estimate("01_sft_format.ipynb", "T4")
    recipe = read_recipe(recipes_dir() / "t4" / "sft.yaml")
    rows = recipe["n_train"]
    doubled = colab_time.estimate("01_sft_format.ipynb", "T4", _recipes_with(tmp_path, "t4", "sft", n_train=2 * rows))
    held = base.seconds - colab_time._train_s(1.7e9, rows * (colab_time.PROMPT_TOKENS + recipe["max_reasoning_tokens"] + recipe["max_response_tokens"] + colab_time.ROW_OVERHEAD), colab_time.GPUS["T4"])
    assert abs((doubled.seconds - held) - 2 * (base.seconds - held)) < 1e-6 * base.seconds
    assert f"{2 * rows:,}" in doubled.arithmetic


def test_grpo_time_is_linear_in_steps_and_a100_is_faster(tmp_path):
    t4 = colab_time.estimate("02_grpo_training.ipynb", "T4")
    a100 = colab_time.estimate("02_grpo_training.ipynb", "A100")
    assert a100.seconds < t4.seconds
    zero = colab_time.estimate("02_grpo_training.ipynb", "T4", _recipes_with(tmp_path, "t4", "grpo", max_steps=0))
    twice = colab_time.estimate("02_grpo_training.ipynb", "T4", _recipes_with(tmp_path / "b", "t4", "grpo", max_steps=600))
    assert abs((twice.seconds - zero.seconds) - 2 * (t4.seconds - zero.seconds)) < 1e-6 * t4.seconds


def test_headers_state_an_estimate_with_its_arithmetic():
    for name in ("01_sft_format.ipynb", "02_grpo_training.ipynb", "03_evaluation.ipynb"):
        head = notebook_cells.header_source(name)
        assert "an estimate" in head and "T4 ~" in head and "A100 ~" in head and "The arithmetic" in head
    assert "Expected time" not in notebook_cells.header_source("04_inference_demo.ipynb")
