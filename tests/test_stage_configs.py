"""Stage configs and YAML recipes: every recipe parses into its config, overrides merge, bad values are
named, help text on every field, and what the trainers are built from (real TRL config objects)."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from medreason_utils.config import (
    MACHINE_CLASSES,
    STAGES,
    EvalStageConfig,
    GRPOStageConfig,
    SFTStageConfig,
    load_stage_config,
    read_recipe,
    recipe_for_runtime,
    recipe_path,
    recipes_dir,
)
from medreason_utils.rewards import RewardSettings

CPU = SimpleNamespace(device="cpu", gpu_kind="cpu", on_gpu=False, bf16=False)
T4 = SimpleNamespace(device="cuda", gpu_kind="t4", on_gpu=True, bf16=False)
A100 = SimpleNamespace(device="cuda", gpu_kind="a100", on_gpu=True, bf16=True)


@pytest.mark.parametrize("stage", sorted(STAGES))
@pytest.mark.parametrize("machine", MACHINE_CLASSES)
def test_every_recipe_sets_every_field_and_round_trips(stage, machine):
    path = recipe_path(stage, machine)
    assert path == recipes_dir() / machine / f"{stage}.yaml"
    raw = read_recipe(path)
    fields = [f.name for f in dataclasses.fields(STAGES[stage]) if f.name != "recipe"]
    assert sorted(raw) == sorted(fields), f"{path} should set every setting (a reader sees the whole recipe in one file)"
    config = load_stage_config(stage, machine)
    assert type(config) is STAGES[stage] and config.recipe == f"recipes/{machine}/{stage}.yaml"
    again = type(config).from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize("cls", [SFTStageConfig, GRPOStageConfig, EvalStageConfig])
def test_every_field_has_help_text_and_the_table_shows_it(cls):
    for f in dataclasses.fields(cls):
        assert len(f.metadata.get("help", "")) > 10, f"{cls.__name__}.{f.name} has no help text"
    config = load_stage_config(cls.stage, "cpu")
    table = config._repr_markdown_()
    for f in dataclasses.fields(cls):
        if f.name != "recipe":
            assert f"`{f.name}" in table and cls.help(f.name)[:30] in table


def test_recipe_follows_the_runtime():
    assert [recipe_for_runtime(r) for r in (CPU, T4, A100, SimpleNamespace(gpu_kind="other"))] == ["cpu", "t4", "a100", "a100"]
    assert load_stage_config("sft", None, T4).lora_rank == 16 and load_stage_config("sft", None, A100).lora_rank == 32
    assert load_stage_config("sft", None, CPU).data == "sample:medical_o1_sft"


def test_the_cpu_recipes_hold_the_cpu_profile_the_shipped_checkpoint_was_trained_with():
    """The CPU recipes' values: SFT as the former CPU profile (config.PROFILES, commit cb33495); GRPO as sized by
    the sweep of docs/cpu-path.md (multiple-choice prompts, 16 steps of 8 completions, lr 3e-4, temperature 0.8)."""
    sft = load_stage_config("sft", "cpu")
    assert (sft.n_train, sft.n_heldout, sft.max_reasoning_tokens, sft.max_response_tokens, sft.epochs, sft.max_steps) == (96, 40, 64, 48, 2, -1)
    assert (sft.learning_rate, sft.batch_size, sft.grad_accum, sft.lora_rank, sft.max_seq_length) == (5e-4, 4, 1, 16, 512)
    assert (sft.eval_max_new_tokens, sft.eval_batch_size, sft.seed, sft.warmup_steps, sft.optim) == (256, 20, 3407, 2, "adamw_torch")
    grpo = load_stage_config("grpo", "cpu")
    assert (grpo.n_prompts, grpo.max_steps, grpo.num_generations, grpo.batch_size, grpo.grad_accum) == (64, 16, 4, 8, 1)
    assert (grpo.max_completion_length, grpo.learning_rate, grpo.temperature, grpo.loss_type, grpo.beta) == (96, 3e-4, 0.8, "dr_grpo", 0.0)
    # strict format and the MCQ reward, 3.0 each, batch-std scaling; two multiple-choice sources
    assert grpo.rewards == RewardSettings(rewards=("strict_format", "mcq_exact_match"), mcq_value=3.0)
    assert grpo.data == {"sample:medical_o1_mcq": 0.5, "sample:medmcqa_train": 0.5}
    assert (grpo.reward_eval_prompts, grpo.reward_eval_k) == (32, 2)
    ev = load_stage_config("eval", "cpu")
    assert (ev.limit, ev.max_new_tokens, ev.batch_size, ev.benchmarks) == (100, 160, 20, ("medqa", "medmcqa"))
    assert ev.base_styles == ("plain",)  # on CPU the base model only with its own chat template (its fair baseline)


def test_base_styles_gpu_recipes_score_the_base_model_both_ways():
    for machine in ("t4", "a100"):
        assert load_stage_config("eval", machine).base_styles == ("suite", "plain")
    assert load_stage_config("eval", "cpu", overrides={"base_styles": ["suite", "plain"]}).base_styles == ("suite", "plain")
    with pytest.raises(ValueError, match="base_styles"):
        load_stage_config("eval", "cpu", overrides={"base_styles": ["lenient"]})
    from medreason_utils.config.stages import BASE_STYLES
    from medreason_utils.evaluation import PROMPT_STYLES

    assert set(BASE_STYLES) == set(PROMPT_STYLES)


def test_overrides_merge_and_are_recorded():
    c = load_stage_config("grpo", "cpu", overrides={"max_steps": 2, "rewards": {"verifier": {"kind": "rule"}}, "rewards.weights": [1, 2]})
    assert c.max_steps == 2 and c.rewards.verifier == {"kind": "rule"} and c.rewards.weights == (1.0, 2.0)
    assert c.rewards.strict_value == 3.0  # the rest of the section is kept
    assert c.recipe.startswith("recipes/cpu/grpo.yaml + overrides") and "max_steps=2" in c.recipe
    e = load_stage_config("eval", "cpu", overrides={"data": {"medqa": "x.jsonl"}})
    assert e.data == {"medqa": "x.jsonl"}  # a mapping setting is replaced, not merged


def test_run_dir_fills_the_runs_own_paths():
    assert load_stage_config("grpo", "cpu", run_dir="R").sft_adapter == "R/sft_adapter"
    assert load_stage_config("eval", "cpu", run_dir="R").adapters == {"base": None, "sft": "R/sft_adapter", "grpo": "R/grpo_adapter"}
    assert load_stage_config("grpo", "cpu", overrides={"sft_adapter": "mine"}, run_dir="R").sft_adapter == "mine"


def test_bad_recipes_and_overrides_are_named(tmp_path):
    with pytest.raises(KeyError, match=r"overrides: SFTStageConfig has no setting\(s\) \['n_epochs'\]"):
        load_stage_config("sft", "cpu", overrides={"n_epochs": 3})
    with pytest.raises(TypeError, match="max_steps must be an integer"):
        load_stage_config("sft", "cpu", overrides={"max_steps": "many"})
    with pytest.raises(TypeError, match="learning_rate must be a number"):
        load_stage_config("sft", "cpu", overrides={"learning_rate": "fast"})
    assert load_stage_config("sft", "cpu", overrides={"learning_rate": "5e-4"}).learning_rate == 5e-4  # PyYAML reads 5e-4 as a string
    with pytest.raises(ValueError, match="not a multiple of num_generations"):
        load_stage_config("grpo", "cpu", overrides={"batch_size": 6})
    with pytest.raises(KeyError, match="unknown stage 'rl'"):
        load_stage_config("rl", "cpu")
    with pytest.raises(FileNotFoundError, match="tpu"):
        load_stage_config("sft", "tpu")
    mine = tmp_path / "mine.yaml"
    mine.write_text("data: x.jsonl\nn_train: 8\n")
    with pytest.raises(TypeError, match=r"mine.yaml: SFTStageConfig needs a value for \['n_heldout'"):
        load_stage_config("sft", str(mine))
    mine.write_text("- a list\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        load_stage_config("sft", str(mine))
    full = read_recipe(recipe_path("sft", "cpu"))
    mine.write_text(json.dumps({**full, "max_stpes": 2}))  # JSON is YAML
    with pytest.raises(KeyError, match="max_stpes"):
        load_stage_config("sft", str(mine))


def test_trainer_configs_built_from_the_cpu_recipes_are_real_trl_configs(tmp_path):
    from medreason_utils.training import grpo_config, sft_config

    sft = sft_config(load_stage_config("sft", "cpu"), output_dir=tmp_path / "s", runtime=CPU)
    assert (sft.num_train_epochs, sft.learning_rate, sft.max_length, sft.warmup_steps, sft.seed) == (2, 5e-4, 512, 2, 3407)
    assert sft.bf16 is False and sft.fp16 is False and sft.lr_scheduler_type == "linear"
    grpo = grpo_config(load_stage_config("grpo", "cpu"), output_dir=tmp_path / "g", runtime=CPU)
    assert (grpo.loss_type, grpo.beta, grpo.scale_rewards, grpo.reward_weights) == ("dr_grpo", 0.0, "batch", [1.0, 1.0])
    assert (grpo.num_generations, grpo.max_completion_length, grpo.per_device_train_batch_size) == (4, 96, 8)
    # checkpoints every save_steps (RESUME), completions logged, TRL shuffles the prompts (no curriculum)
    assert (grpo.save_strategy, grpo.save_steps, grpo.save_total_limit) == ("steps", 8, 2)
    assert grpo.log_completions is True and grpo.shuffle_dataset is True
    assert grpo.chat_template_kwargs == {"enable_thinking": False}


@pytest.mark.parametrize("machine,runtime", [("t4", T4), ("a100", A100)])
def test_trl_accepts_every_keyword_the_gpu_recipes_pass(machine, runtime, tmp_path):
    """On a CPU, TrainingArguments refuses fp16/bf16, so the GPU recipes are checked by keyword
    (every keyword a field of the installed TRL's config) and by value."""
    import trl

    from medreason_utils.training import grpo_config_kwargs, sft_config_kwargs

    for cls, kwargs in (
        (trl.SFTConfig, sft_config_kwargs(load_stage_config("sft", machine), output_dir=tmp_path, runtime=runtime)),
        (trl.GRPOConfig, grpo_config_kwargs(load_stage_config("grpo", machine), output_dir=tmp_path, runtime=runtime)),
    ):
        unknown = sorted(set(kwargs) - {f.name for f in dataclasses.fields(cls)})
        assert not unknown, f"{cls.__name__} (trl {trl.__version__}) has no {unknown}"
        assert kwargs["bf16"] is runtime.bf16 and kwargs["fp16"] is (not runtime.bf16)
