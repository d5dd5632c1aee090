"""The GPU branch's settings, checked on CPU (issue 8): bf16 detection (defect 12), presets by model size
and GPU memory (8), vLLM's LoRA rank from the adapters in play (5), length budgets that fit
``max_seq_length`` (7), the base model of notebook 03's adapters (9) and the ``scale_rewards`` guard (10).

A T4, an L4 and A100s are simulated with :class:`~medreason_utils.models.RuntimeInfo` (and, for
:func:`~medreason_utils.models.detect_runtime`, by replacing ``torch.cuda``'s query functions with what
those GPUs report); adapters, tokenizer and data are real (the shipped checkpoint, SmolLM2's tokenizer,
the shipped samples). That no code asks torch or Unsloth whether bf16 is supported is a lint rule
(ruff's banned-api in pyproject.toml, run by tests/test_lint.py).
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from medreason_utils import config, models
from medreason_utils.config import (
    COMPLETION_OVERHEAD_TOKENS,
    MAX_PROMPT_TOKENS,
    check_length_budget,
    check_prompt_lengths,
    load_stage_config,
)
from medreason_utils.models import (
    BASE_MODELS,
    DEFAULT_GPU_MODEL,
    NOMINAL_GPU_MEMORY_GIB,
    OFFLINE_BASE_ID,
    OFFLINE_MODEL_NAME,
    RuntimeInfo,
    adapter_rank,
    base_model_of,
    gpu_preset,
    load_settings,
    max_lora_rank_for,
    model_params_b,
    preset_for,
    preset_table_markdown,
)
from medreason_utils.ui.playground import SCALE_OPTIONS, RewardSettings

REPO = config.repo_root()
SHIPPED = config.default_checkpoint()  # r=16, base HuggingFaceTB/SmolLM2-135M-Instruct


def gpu(kind: str, mem_gib: float, bf16: bool) -> RuntimeInfo:
    return RuntimeInfo("cuda", kind, f"simulated {kind}", mem_gib, bf16, preset={})


T4 = gpu("t4", NOMINAL_GPU_MEMORY_GIB["t4"], False)
L4 = gpu("other", NOMINAL_GPU_MEMORY_GIB["l4"], True)
A100_40 = gpu("a100", NOMINAL_GPU_MEMORY_GIB["a100"], True)
A100_80 = gpu("a100", NOMINAL_GPU_MEMORY_GIB["a100-80gb"], True)
CPU = RuntimeInfo("cpu", "cpu", preset=dict(models.GPU_PRESETS["cpu"]))


def copy_adapter(tmp_path: Path, name: str, **changes) -> Path:
    """A copy of the shipped adapter with ``adapter_config.json`` fields changed."""
    out = tmp_path / name
    shutil.copytree(SHIPPED, out)
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(changes)
    cfg_path.write_text(json.dumps(cfg))
    return out


# ---------------------------------------------------------------------------------------------
# Defect 12: bf16 from the compute capability
# ---------------------------------------------------------------------------------------------


def _simulate_cuda(monkeypatch, name: str, mem_gib: float, capability: tuple[int, int]) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(total_memory=int(mem_gib * 2**30)))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # what torch says on a T4 once bf16 emulation counts (or before Unsloth patches it): True everywhere
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.mark.parametrize(
    "name, mem, capability, bf16, kind",
    [
        ("Tesla T4", 14.7, (7, 5), False, "t4"),
        ("Tesla V100-SXM2-16GB", 15.8, (7, 0), False, "other"),
        ("NVIDIA L4", 22.0, (8, 9), True, "other"),
        ("NVIDIA A100-SXM4-40GB", 39.4, (8, 0), True, "a100"),
        ("NVIDIA H100 80GB HBM3", 79.2, (9, 0), True, "other"),
    ],
)
def test_detect_runtime_takes_bf16_from_compute_capability_not_is_bf16_supported(monkeypatch, name, mem, capability, bf16, kind):
    _simulate_cuda(monkeypatch, name, mem, capability)
    rt = models.detect_runtime()
    assert rt.on_gpu and rt.gpu_kind == kind and rt.gpu_memory_gib == mem
    assert rt.bf16 is bf16
    assert rt.preset == {k: v for k, v in gpu_preset(models.MODEL_PARAMS_B[DEFAULT_GPU_MODEL], mem).items()}


# ---------------------------------------------------------------------------------------------
# Defect 8: presets by model size and GPU memory
# ---------------------------------------------------------------------------------------------


def test_every_short_name_has_a_size():
    for short, hub_id in BASE_MODELS.items():
        assert model_params_b(short) == model_params_b(hub_id) > 0


@pytest.mark.parametrize(
    "model, runtime, four_bit",
    [
        ("qwen3-1.7b", T4, False),  # the default: 16-bit on a T4 (4-bit only where needed)
        ("gemma-3-1b-it", T4, False),
        ("qwen3-4b", T4, False),  # 16-bit, as Unsloth's Qwen3-4B T4 notebook (with standby)
        ("qwen2.5-3b-instruct", T4, True),  # 4-bit, as Unsloth's Qwen2.5-3B notebook, though 16-bit would fit the rule
        ("llama-3.1-8b-instruct", T4, True),
        ("phi-4", T4, True),
        ("qwen3-4b", L4, False),
        ("qwen2.5-7b-instruct", L4, True),
        ("llama-3.1-8b-instruct", A100_40, False),
        ("phi-4", A100_40, True),  # 16-bit: ~27 GiB of weights against vLLM's 0.7 x 39.4 GiB
        ("phi-4", A100_80, False),
    ],
)
def test_preset_quantisation_by_model_size_and_gpu_memory(model, runtime, four_bit):
    p = preset_for(model, runtime)
    assert p["load_in_4bit"] is four_bit
    # vLLM's share holds the weights and leaves at least a quarter of the GPU for the KV cache
    assert p["weights_gib"] + 0.25 * runtime.gpu_memory_gib <= p["gpu_memory_utilization"] * runtime.gpu_memory_gib + 0.05
    assert p["max_seq_length"] in (512, 1024, 2048, 4096) and p["lora_rank"] in (8, 16, 32, 64)


def test_models_with_an_unsloth_t4_notebook_take_its_settings_on_a_t4_and_a_scaled_estimate_above():
    """Each model of UNSLOTH_T4_PRESETS: on a T4 the notebook's own settings, its path and commit as the source; on
    larger GPUs an estimate that says so, never 4-bit where the notebook is 16-bit, never shorter than on the T4,
    with room for the KV cache; Unsloth's 4-bit uploads and short names find the same entry."""
    nbs = models.UNSLOTH_T4_PRESETS
    assert nbs and len(models.UNSLOTH_NOTEBOOKS_COMMIT) == 40
    for hub_id, nb in nbs.items():
        t4 = preset_for(hub_id, T4)
        for key in ("load_in_4bit", "max_seq_length", "lora_rank"):
            assert t4[key] == nb[key], (hub_id, key)
        assert t4["gpu_memory_utilization"] == (nb["gpu_memory_utilization"] or gpu_preset(model_params_b(hub_id), T4.gpu_memory_gib)["gpu_memory_utilization"])
        assert t4["source"] == nb["source"] and models.UNSLOTH_NOTEBOOKS_COMMIT[:12] in t4["source"] and t4["source"].endswith(".ipynb")
        assert preset_for(hub_id + "-bnb-4bit", T4) == t4
        for runtime in (L4, A100_40, A100_80):
            big = preset_for(hub_id, runtime)
            assert big["source"].startswith("estimate: ") and nb["source"] in big["source"]
            assert big["load_in_4bit"] <= nb["load_in_4bit"] and big["max_seq_length"] >= nb["max_seq_length"]
            assert big["lora_rank"] == nb["lora_rank"]
            assert big["weights_gib"] + 0.25 * runtime.gpu_memory_gib <= big["gpu_memory_utilization"] * runtime.gpu_memory_gib
    short = {v: k for k, v in BASE_MODELS.items()}
    assert preset_for(short["unsloth/Qwen3-4B"], T4)["max_seq_length"] == nbs["unsloth/Qwen3-4B"]["max_seq_length"]
    # a model without a notebook keeps the rule, and says so
    assert preset_for("qwen3-1.7b", T4)["source"].startswith("rule") and preset_for("qwen3-1.7b", A100_40)["source"].startswith("rule")


def test_phi4_16bit_is_never_chosen_on_a_40gb_gpu_and_sizes_that_cannot_fit_raise():
    assert preset_for("phi-4", A100_40)["load_in_4bit"] is True
    assert gpu_preset(14.7, 39.4)["weights_gib"] < 10  # the 4-bit weights
    with pytest.raises(ValueError, match="does not fit"):
        gpu_preset(70.0, NOMINAL_GPU_MEMORY_GIB["t4"])


def test_small_gpus_get_shorter_contexts_and_lower_ranks():
    t4, a100 = preset_for(None, T4), preset_for(None, A100_40)
    assert (t4["max_seq_length"], t4["lora_rank"]) == (1024, 16)
    assert (a100["max_seq_length"], a100["lora_rank"]) == (2048, 32)
    assert preset_for("phi-4", T4)["max_seq_length"] == 512  # as Unsloth's Phi-4 notebook on a T4


def test_unknown_model_size_is_an_explicit_error_and_a_local_folder_is_counted(default_model_path):
    with pytest.raises(ValueError, match="MODEL_PARAMS_B"):
        preset_for("someone/unknown-model", T4)
    # a local folder of safetensors: counted from the headers (SmolLM2-135M: 134.5 M parameters)
    assert 0.13 < model_params_b(str(default_model_path)) < 0.14
    assert model_params_b("unsloth/Qwen3-1.7B-unsloth-bnb-4bit") == 1.7
    # every setting given: the size is not needed
    s = load_settings("someone/unknown-model", max_seq_length=1024, load_in_4bit=True, lora_rank=16,
                      gpu_memory_utilization=0.6, runtime=T4)
    assert s["load_in_4bit"] is True and s["max_lora_rank"] == 16


def test_readme_preset_table_is_the_one_the_code_uses():
    readme = (REPO / "README.md").read_text()
    assert preset_table_markdown() in readme, "README's preset table differs from models.preset_table_markdown()"


# ---------------------------------------------------------------------------------------------
# Defect 5: vLLM's max_lora_rank from the adapters in play
# ---------------------------------------------------------------------------------------------


def test_adapter_rank_reads_real_adapters(tmp_path):
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    assert adapter_rank(SHIPPED) == 16
    # a real r=32 adapter, saved by peft from a tiny Llama
    tiny = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    lora = peft.get_peft_model(tiny, peft.LoraConfig(r=32, lora_alpha=32, target_modules=["q_proj", "v_proj"], rank_pattern={"v_proj": 48}))
    lora.save_pretrained(tmp_path / "r32")
    assert adapter_rank(tmp_path / "r32") == 48  # the largest of r and rank_pattern
    bad = copy_adapter(tmp_path, "bad", r="sixteen")
    with pytest.raises(ValueError, match="'r'"):
        adapter_rank(bad)


def test_max_lora_rank_is_the_largest_rank_in_play(tmp_path):
    r32 = copy_adapter(tmp_path, "a100-adapter", r=32, lora_alpha=32)
    assert max_lora_rank_for([SHIPPED, None, r32]) == 32
    assert max_lora_rank_for([SHIPPED], lora_rank=16) == 16
    assert max_lora_rank_for([], lora_rank=None) is None
    # an A100 adapter (r=32) on a T4, whose preset rank is 16: the engine takes 32
    s = load_settings(None, adapter=r32, runtime=T4)
    assert preset_for(None, T4)["lora_rank"] == 16 and s["max_lora_rank"] == 32
    # notebook 03: one engine for several adapters
    s = load_settings(None, adapters_in_play=[None, SHIPPED, r32], runtime=T4)
    assert s["max_lora_rank"] == 32


# ---------------------------------------------------------------------------------------------
# Defect 9: the adapters' own base model
# ---------------------------------------------------------------------------------------------


def test_base_model_of_adapters(tmp_path):
    other = copy_adapter(tmp_path, "other-base", base_model_name_or_path="unsloth/Qwen3-1.7B")
    assert base_model_of([None, SHIPPED, SHIPPED], T4) == OFFLINE_BASE_ID
    assert base_model_of([SHIPPED], CPU) == OFFLINE_MODEL_NAME  # the same weights, from the shipped GGUF
    assert base_model_of([None], T4) is None
    with pytest.raises(ValueError, match="different base models") as err:
        base_model_of([SHIPPED, other], T4)
    assert "unsloth/Qwen3-1.7B" in str(err.value) and OFFLINE_BASE_ID in str(err.value)
    nameless = copy_adapter(tmp_path, "nameless", base_model_name_or_path=None)
    with pytest.raises(ValueError, match="name no base"):
        base_model_of([nameless], T4)


def test_notebook03_gpu_base_is_the_adapters_base_not_the_default(tmp_path):
    """BASE_MODEL=None with adapters: load_model takes their base (was: the default Qwen3-1.7B)."""
    s = load_settings(None, adapters_in_play=[None, SHIPPED, SHIPPED], runtime=T4)
    assert s["model_name"] == OFFLINE_BASE_ID != DEFAULT_GPU_MODEL
    assert load_settings(None, runtime=T4)["model_name"] == DEFAULT_GPU_MODEL
    assert load_settings("qwen3-1.7b", adapters_in_play=[SHIPPED], runtime=T4)["model_name"] == DEFAULT_GPU_MODEL  # explicit wins
    other = copy_adapter(tmp_path, "other-base", base_model_name_or_path="unsloth/Qwen3-1.7B")
    with pytest.raises(ValueError, match="different base models"):
        load_settings(None, adapters_in_play=[SHIPPED, other], runtime=T4)


# ---------------------------------------------------------------------------------------------
# Defect 7: prompt + completion <= max_seq_length
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("machine", ["cpu", "t4", "a100"])
@pytest.mark.parametrize("stage", ["sft", "grpo", "eval"])
def test_recipe_budgets_fit_max_seq_length(stage, machine):
    """Every shipped recipe fits its machine's context: check_length_budget raises on a GPU otherwise."""
    runtime = {"cpu": CPU, "t4": T4, "a100": A100_40}[machine]
    line = check_length_budget(stage, load_stage_config(stage, machine), runtime, model="qwen3-1.7b")
    assert line.startswith("length budget (tokens): max_seq_length ")


def test_t4_budget_values():
    """The T4 recipes (1024 tokens) used to ask for 1024-token completions and 768 + 256-token SFT rows."""
    g = load_stage_config("grpo", "t4")
    line = check_length_budget("grpo", g, T4, model="qwen3-1.7b")
    assert "max_seq_length 1024" in line and "prompt <= 256" in line and "completion <= 768" in line
    assert g.max_completion_length == 768
    s = load_stage_config("sft", "t4")
    assert s.max_reasoning_tokens + s.max_response_tokens == 1024 - 256 - COMPLETION_OVERHEAD_TOKENS
    assert s.eval_max_new_tokens == 768 and s.lora_rank == 16
    assert "reasoning <= 552" in check_length_budget("sft", s, T4)


def test_settings_that_overflow_raise_on_gpu_only():
    with pytest.raises(ValueError, match="max_completion_length=1024 > 768"):
        check_length_budget("grpo", load_stage_config("grpo", "t4", overrides={"max_completion_length": 1024}), T4, model="qwen3-1.7b")
    with pytest.raises(ValueError, match="max_new_tokens=2000"):
        check_length_budget("eval", load_stage_config("eval", "t4", overrides={"max_new_tokens": 2000}), T4)
    big_sft = load_stage_config("sft", "t4", overrides={"max_reasoning_tokens": 768, "max_response_tokens": 256})
    with pytest.raises(ValueError, match="max_reasoning_tokens 768 \\+ max_response_tokens 256"):
        check_length_budget("sft", big_sft, T4)
    # fits when the context is raised with it
    assert check_length_budget("grpo", load_stage_config("grpo", "t4", overrides={"max_completion_length": 1024}), T4, max_seq_length=1280)
    # CPU: transformers has no max_model_len, the line is printed and nothing raises
    assert "SFT rows" in check_length_budget("sft", big_sft, CPU)


def test_every_stage_checks_its_budget_before_loading_anything(tmp_path):
    """The stage's first step (what notebooks 01-03 and the CLI both call) raises on a GPU when a completion
    cannot fit, before any model loads."""
    from medreason_utils.pipeline import stages

    with pytest.raises(ValueError, match="max_completion_length=1024 > 768"):
        stages.start_grpo(load_stage_config("grpo", "t4", overrides={"max_completion_length": 1024, "sft_adapter": str(SHIPPED)}),
                          tmp_path, T4)
    with pytest.raises(ValueError, match="max_new_tokens=2000"):
        stages.start_eval(load_stage_config("eval", "t4", overrides={"max_new_tokens": 2000}), tmp_path, T4)
    assert "length budget" in stages.start_sft(load_stage_config("sft", "t4"), tmp_path, T4).budget


class _Loaded(Exception):
    """Raised by the recording stand-in for load_model: the GPU load is where both paths must agree."""


def _record_gpu_load(monkeypatch, runtime):
    """Stand-ins for what needs a GPU: detect_runtime returns ``runtime``; load_model records its arguments, then stops."""
    calls = []

    def load_model(*args, **kwargs):
        calls.append((args, kwargs))
        raise _Loaded()

    monkeypatch.setattr(models, "load_model", load_model)
    monkeypatch.setattr(models, "detect_runtime", lambda *a, **k: runtime)
    return calls


EVAL_OVERRIDES = {"data": {"medqa": "sample:medqa", "medmcqa": "sample:medmcqa"}, "limit": 4}


@pytest.mark.parametrize("machine, runtime", [("t4", T4), ("a100", A100_40)])
def test_the_clis_evaluation_asks_load_model_for_exactly_what_notebook_03_asks(machine, runtime, tmp_path, monkeypatch):
    """On simulated T4 and A100 runtimes: notebook 03's code cells (executed in order, as a kernel would) and
    `medreason eval` reach load_model with the same arguments: the adapters in play, the evaluation's context,
    the runtime (the defect: the CLI loaded the default base with the training context)."""
    import nbformat

    from medreason_utils.pipeline import cli

    for label in ("sft", "grpo"):
        shutil.copytree(SHIPPED, tmp_path / "run" / f"{label}_adapter")
    trained = {"sft": {"config": {"data": "sample:medical_o1_sft"}}, "grpo": {"config": {"data": "sample:medical_o1_mcq"}}}
    (tmp_path / "run" / "summary.json").write_text(json.dumps(trained))  # what the run trained on (no hub here)
    calls = _record_gpu_load(monkeypatch, runtime)
    nb = nbformat.read(str(REPO / "notebooks" / "03_evaluation.ipynb"), as_version=4)
    namespace = {"RUN_DIR": str(tmp_path / "run"), "RECIPE": machine, "OVERRIDES": EVAL_OVERRIDES, "RUNTIME": runtime,
                 "display": print}
    code = [c.source for c in nb.cells if c.cell_type == "code" and not c.metadata.get("tags")]  # after set-up and parameters
    with pytest.raises(_Loaded):
        for source in code:
            exec(compile(source, "notebook 03", "exec"), namespace)  # noqa: S102 - the notebook's own cells
    notebook_call = calls.pop()
    argv = ["eval", "--config", machine, "--output_dir", str(tmp_path / "run"), "--limit", "4",
            "--data", json.dumps(EVAL_OVERRIDES["data"])]
    with pytest.raises(_Loaded):
        cli.main(argv)
    cli_call = calls.pop()
    assert cli_call == notebook_call
    args, kwargs = cli_call
    assert kwargs["max_seq_length"] == config.EVAL_MAX_SEQ_LENGTH and kwargs["runtime"] is runtime
    assert sorted(map(str, filter(None, kwargs["adapters_in_play"]))) == sorted(str(tmp_path / "run" / f"{x}_adapter") for x in ("grpo", "sft"))


def test_t4_sft_rows_really_fit_with_a_real_tokenizer(default_model_path):
    """The arithmetic holds for real rows: every kept SFT row, rendered with the chat template, is at most
    max_seq_length tokens, and its prompt at most max_prompt_tokens (SmolLM2's tokenizer, shipped sample)."""
    from transformers import AutoTokenizer

    from medreason_utils.data import load_rows, to_question_prompts, to_sft_conversations

    tok = AutoTokenizer.from_pretrained(str(default_model_path))
    cfg = load_stage_config("sft", "t4")
    s = {"max_seq_length": cfg.max_seq_length, "max_prompt_tokens": MAX_PROMPT_TOKENS["sft"]}
    ds, report = to_sft_conversations(load_rows("sample:medical_o1_sft"), tokenizer=tok, output_format="prompt_completion",
                                      max_reasoning_tokens=cfg.max_reasoning_tokens, max_response_tokens=cfg.max_response_tokens,
                                      max_prompt_tokens=s["max_prompt_tokens"], max_total_tokens=s["max_seq_length"], on_bad_row="skip")
    assert len(ds) > 0
    n = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    for row in ds:
        assert n(tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)) <= s["max_seq_length"]
        assert n(tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)) <= s["max_prompt_tokens"]
        assert row["completion"][0]["content"].rstrip().endswith("</ANSWER>")
    # a tighter budget skips rows, naming why
    from medreason_utils.data import DataError

    with pytest.raises(DataError, match="no usable row .*max_prompt_tokens=60"):  # every row over: an error naming why
        to_sft_conversations(load_rows("sample:medical_o1_sft"), tokenizer=tok, max_prompt_tokens=60, on_bad_row="skip")
    prompts, rep = to_question_prompts(load_rows("sample:medical_o1_verifiable"), tokenizer=tok, max_prompt_tokens=120, on_bad_row="skip")
    assert rep.n_skipped > 0 and len(prompts) > 0 and "max_prompt_tokens=120" in rep.skipped[0][1]
    with pytest.raises(ValueError, match="tokenizer"):
        to_question_prompts(load_rows("sample:medical_o1_verifiable"), max_prompt_tokens=60)


def test_evaluation_prompts_checked_against_the_budget(default_model_path):
    from transformers import AutoTokenizer

    from medreason_utils.evaluation.benchmarks import load_benchmark

    tok = AutoTokenizer.from_pretrained(str(default_model_path))
    items = {name: load_benchmark(name, f"sample:{name}", limit=None)[0] for name in ("medqa", "medmcqa")}
    stats = check_prompt_lengths(items, tok, MAX_PROMPT_TOKENS["eval"])
    assert stats["n"] == sum(len(v) for v in items.values()) and 0 < stats["longest"] <= 1536 and stats["over"] == []
    with pytest.raises(ValueError, match="longer than max_prompt_tokens=100"):
        check_prompt_lengths(items, tok, 100)
    assert check_prompt_lengths(items, tok, 100, enforce=False)["over"]


# ---------------------------------------------------------------------------------------------
# Defect 10: scale_rewards="group" under Dr. GRPO
# ---------------------------------------------------------------------------------------------


def test_group_scaling_is_refused_under_dr_grpo_and_the_rest_passes_to_trl(tmp_path):
    with pytest.raises(ValueError, match="silently turns it into"):
        RewardSettings(scale_rewards="group").grpo_config_kwargs(loss_type="dr_grpo")
    with pytest.raises(ValueError):
        RewardSettings(scale_rewards=True).grpo_config_kwargs()  # True is "group"; dr_grpo is the default
    assert RewardSettings(scale_rewards="group").grpo_config_kwargs(loss_type="grpo")["scale_rewards"] == "group"
    trl = pytest.importorskip("trl")
    for value in set(SCALE_OPTIONS) - {"group"}:
        kwargs = RewardSettings(scale_rewards=value).grpo_config_kwargs()
        cfg = trl.GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], **kwargs)
        assert cfg.loss_type == "dr_grpo" and cfg.scale_rewards == value
