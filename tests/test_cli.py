"""The command line (``medreason sft|grpo|eval``) and the scale-out recipes.

* overrides in TRL's style reach the stage config with their types, bad ones are named (exit 2);
* the multi-GPU recipes parse into the stage configs and into the installed TRL's ``GRPOConfig``
  (vLLM server and colocate mode); the accelerate configs load with accelerate's loader; the
  DeepSpeed configs, their ``"auto"`` values filled from the recipe's TRL config by transformers,
  load with DeepSpeed's own config parser (which also rejects a misspelt key);
* ``medreason eval`` against a real loopback OpenAI-compatible server: bounded concurrency, the
  run folder, a rerun resumes without a request;
* (slow) ``accelerate launch`` of two CPU processes: GRPO finishes, one adapter saved by the main
  process, and the logged rewards are those of the completions of both processes.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from medreason_utils.config import STAGES, GRPOStageConfig, load_stage_config, recipes_dir
from medreason_utils.pipeline import cli
from conftest import needs_cpu_grpo

ROOT = Path(__file__).resolve().parents[1]
MULTI_GPU = sorted((ROOT / "recipes" / "multi_gpu").glob("*.yaml"))
CPU = SimpleNamespace(device="cpu", gpu_kind="cpu", on_gpu=False, bf16=False)


def _stage_of(path: Path) -> str:
    return path.stem.split("_")[0]


# -- parsing -------------------------------------------------------------------------------------

def test_overrides_in_trl_style_reach_the_config_with_their_types(tmp_path):
    inv = cli.parse(["grpo", "--config", "recipes/cpu/grpo.yaml", "--max_steps", "2", "--output_dir", str(tmp_path),
                     "--learning_rate", "5e-6", "--rewards.verifier", "rule", "--rewards.strict_value=2.5",
                     "--log_completions", "true", "--sft_adapter", "checkpoints/medreason-smollm2-135m-grpo"])
    c = inv.config
    assert isinstance(c, GRPOStageConfig) and inv.stage == "grpo" and inv.run_dir == tmp_path
    assert (c.max_steps, c.learning_rate, c.log_completions, c.rewards.strict_value) == (2, 5e-6, True, 2.5)
    assert c.sft_adapter == "checkpoints/medreason-smollm2-135m-grpo"
    assert "max_steps=2" in c.recipe and c.recipe.startswith("recipes/cpu/grpo.yaml")
    # everything else is the recipe's
    recipe = load_stage_config("grpo", "cpu")
    assert (c.num_generations, c.per_device_train_batch_size, c.rewards.weights) == (recipe.num_generations, recipe.per_device_train_batch_size, recipe.rewards.weights)


def test_the_run_folder_supplies_the_sft_adapter_and_the_adapters(tmp_path):
    grpo = cli.parse(["grpo", "--config", "cpu", "--output_dir", str(tmp_path)]).config
    assert grpo.sft_adapter == f"{tmp_path}/sft_adapter"
    ev = cli.parse(["eval", "--config", "cpu", "--output_dir", str(tmp_path), "--benchmarks", "[medqa]", "--limit", "null"]).config
    assert ev.adapters == {"base": None, "sft": f"{tmp_path}/sft_adapter", "grpo": f"{tmp_path}/grpo_adapter"}
    assert ev.benchmarks == ("medqa",) and ev.limit is None


def test_mapping_settings_take_dotted_keys_and_trls_own_fields_pass_by_their_names():
    c = cli.parse(["grpo", "--config", "recipes/multi_gpu/grpo.yaml", "--vllm_mode", "colocate",
                   "--vllm_gpu_memory_utilization=0.4", "--rewards.strict_value", "2.0", "--mask_truncated_completions", "true"]).config
    assert c.trl_args["vllm_mode"] == "colocate" and c.trl_args["vllm_gpu_memory_utilization"] == 0.4
    assert c.trl_args["vllm_server_base_url"] == "http://127.0.0.1:8000"  # the recipe's, kept
    assert c.trl_args["mask_truncated_completions"] is True and c.rewards.strict_value == 2.0


@pytest.mark.parametrize("argv, message", [
    (["grpo", "--config", "cpu", "--max_stepz", "2"], "has no setting 'max_stepz'; did you mean 'max_steps'?"),
    (["grpo", "--config", "cpu", "--bogus.key", "2"], "has no setting 'bogus'"),
    (["grpo", "--config", "cpu", "--max_steps", "two"], "GRPOStageConfig.max_steps must be an integer, got 'two'"),
    (["grpo", "--config", "cpu", "--use_vllm", "true", "--vllm_mode", "sidecar"], "vllm_mode must be 'colocate' or 'server'"),
    (["grpo", "--config", "recipes/nope.yaml"], "recipe file recipes/nope.yaml does not exist"),
    (["eval", "--config", "cpu", "--server", "{base_url: 'http://127.0.0.1:1/v1'}"], "server needs base_url and models"),
])
def test_bad_options_and_settings_exit_2_naming_them(argv, message, capsys):
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    assert rc == 2
    assert message in capsys.readouterr().err


def test_help_lists_every_setting_with_its_help_text(capsys):
    for stage, cls in STAGES.items():
        with pytest.raises(SystemExit) as exc:
            cli.main([stage, "--help"])
        assert exc.value.code == 0
        out = " ".join(capsys.readouterr().out.split())
        for f in dataclasses.fields(cls):
            if f.name not in ("recipe", "trl_args"):
                assert f"--{f.name}" in out and " ".join(cls.help(f.name).split())[:25] in out, (stage, f.name)
    with pytest.raises(SystemExit):
        cli.main(["grpo", "--help"])
    assert "--rewards.verifier" in capsys.readouterr().out


def test_dry_run_prints_the_resolved_settings_and_loads_nothing(capsys, tmp_path):
    assert cli.main(["sft", "--config", "cpu", "--n_train", "8", "--dry_run", "--output_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "**SFTStageConfig** (recipes/cpu/sft.yaml + the command line {n_train=8})" in out and "| `n_train` | `8` |" in out
    assert not any(tmp_path.iterdir())


def test_console_script_is_declared():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["medreason"] == "medreason_utils.pipeline.cli:main"


# -- multi-GPU recipes, accelerate and DeepSpeed configs ---------------------------------------------

def test_there_are_multi_gpu_recipes_for_every_stage_and_both_vllm_modes():
    names = {p.name for p in MULTI_GPU}
    assert {"sft.yaml", "grpo.yaml", "grpo_colocate.yaml", "eval.yaml"} <= names


@pytest.mark.parametrize("path", MULTI_GPU, ids=lambda p: p.name)
def test_multi_gpu_recipes_parse_into_the_stage_configs(path):
    stage = _stage_of(path)
    config = load_stage_config(stage, path)
    assert type(config) is STAGES[stage]
    if stage in ("sft", "grpo"):
        assert config.engine == "transformers" and config.load_in_4bit is False
    if stage == "eval":
        assert config.server["base_url"].endswith("/v1") and config.server["concurrency"] > 1
        assert set(config.server["models"]) == {"base", "sft", "grpo"}


@pytest.mark.parametrize("name, mode", [("grpo.yaml", "server"), ("grpo_colocate.yaml", "colocate")])
def test_the_vllm_mode_of_the_recipe_reaches_trls_grpo_config(name, mode, tmp_path):
    import trl

    from medreason_utils.training import grpo_config, grpo_config_kwargs

    config = load_stage_config("grpo", recipes_dir() / "multi_gpu" / name)
    kwargs = grpo_config_kwargs(config, output_dir=tmp_path, runtime=CPU)
    unknown = sorted(set(kwargs) - {f.name for f in dataclasses.fields(trl.GRPOConfig)})
    assert not unknown, f"GRPOConfig (trl {trl.__version__}) has no {unknown}"
    args = grpo_config(config, output_dir=tmp_path, runtime=CPU)  # a real TRL config (vLLM itself is needed only to train)
    assert args.use_vllm is True and args.vllm_mode == mode and args.log_completions is True
    if mode == "server":
        assert args.vllm_server_base_url == "http://127.0.0.1:8000"
    else:
        assert args.vllm_gpu_memory_utilization == 0.3 and args.vllm_enable_sleep_mode is True
    # per step, whole groups on the node's training processes (7 beside a vLLM server GPU, else 8)
    procs = 7 if mode == "server" else 8
    assert (config.per_device_train_batch_size * config.gradient_accumulation_steps * procs) % config.num_generations == 0


def test_the_cpu_and_colab_recipes_keep_trls_vllm_off(tmp_path):
    from medreason_utils.training import grpo_config_kwargs

    for machine in ("cpu", "t4", "a100"):
        kwargs = grpo_config_kwargs(load_stage_config("grpo", machine), output_dir=tmp_path, runtime=CPU)
        assert "use_vllm" not in kwargs and not any(k.startswith("vllm_") for k in kwargs), machine


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED")])
def test_accelerate_configs_load_with_accelerates_loader(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "recipes" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.value == kind and config.num_processes == 8 and not config.use_cpu
    if kind == "DEEPSPEED":
        ds_file = config.deepspeed_config["deepspeed_config_file"]
        assert (ROOT / ds_file).is_file() and ds_file == f"recipes/deepspeed/{name}.json"


def _filled_deepspeed_config(stage: int, tmp_path: Path) -> dict:
    """recipes/deepspeed/zero<stage>.json with its "auto" values filled as the trainer fills them: by transformers'
    HfTrainerDeepSpeedConfig from the multi-GPU GRPO recipe's TRL config (hidden size 2048: Qwen3-1.7B's)."""
    from transformers import Qwen3Config
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from medreason_utils.training import grpo_config

    args = grpo_config(load_stage_config("grpo", recipes_dir() / "multi_gpu" / "grpo.yaml"), output_dir=tmp_path, runtime=CPU)
    raw = json.loads((ROOT / "recipes" / "deepspeed" / f"zero{stage}.json").read_text())
    hf = HfTrainerDeepSpeedConfig(raw)
    hf.trainer_config_process(args)
    hf.trainer_config_finalize(args, SimpleNamespace(config=Qwen3Config(hidden_size=2048)), num_training_steps=args.max_steps)
    return hf.config


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_load_with_deepspeeds_parser(stage, tmp_path):
    pytest.importorskip("deepspeed", reason="DeepSpeed is in requirements-cpu.txt (make setup); absent here")
    from deepspeed.runtime.config import DeepSpeedConfig

    filled = _filled_deepspeed_config(stage, tmp_path)
    assert "auto" not in json.dumps(filled)
    ds = DeepSpeedConfig(copy.deepcopy(filled))
    assert ds.zero_optimization_stage == stage
    assert ds.train_micro_batch_size_per_gpu == 8 and ds.gradient_accumulation_steps == 1  # the recipe's batch_size, grad_accum
    if stage == 3:
        assert ds.zero_config.gather_16bit_weights_on_model_save is True  # the adapter is saved whole
    # the parser is strict: a misspelt key is refused, so the check above means something
    bad = copy.deepcopy(filled)
    bad["zero_optimization"]["overlap_comms"] = True
    with pytest.raises(Exception, match="overlap_comms"):
        DeepSpeedConfig(bad)


@pytest.mark.parametrize("stage", [2, 3])
def test_accelerate_reads_the_deepspeed_files_as_the_launcher_will(stage):
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(hf_ds_config=str(ROOT / "recipes" / "deepspeed" / f"zero{stage}.json"))
    assert plugin.zero_stage == stage


def test_several_gpu_processes_need_the_transformers_engine():
    from medreason_utils.pipeline.stages import _check_engine_for_processes

    gpu = SimpleNamespace(on_gpu=True)
    eight = SimpleNamespace(num_processes=8)
    with pytest.raises(ValueError, match="need engine: transformers"):
        _check_engine_for_processes(load_stage_config("grpo", "a100"), eight, gpu)
    _check_engine_for_processes(load_stage_config("grpo", recipes_dir() / "multi_gpu" / "grpo.yaml"), eight, gpu)
    _check_engine_for_processes(load_stage_config("grpo", "cpu"), eight, CPU)  # CPU processes: transformers anyway


# -- evaluation against a served model -------------------------------------------------------------

class _ChatHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802 - http.server API
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            srv.requests.append(body)
        try:
            time.sleep(0.03)
            # the served "grpo" model answers in the grammar, the base model with a bare letter
            text = "<THINK>\nThe findings fit.\n</THINK>\n<ANSWER>\nA\n</ANSWER>" if body["model"] == "grpo" else "A"
            data = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": text}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            with srv.lock:
                srv.in_flight -= 1


@pytest.fixture()
def served():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    srv.lock, srv.in_flight, srv.max_in_flight, srv.requests = threading.Lock(), 0, 0, []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv, f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        srv.shutdown()
        srv.server_close()


def test_eval_against_a_served_model_is_bounded_writes_the_run_folder_and_resumes(served, tmp_path, capsys):
    srv, url = served
    argv = ["eval", "--config", "cpu", "--output_dir", str(tmp_path), "--limit", "6", "--max_new_tokens", "32",
            "--base_styles", "[suite, plain]",  # the CPU recipe's default is [plain]
            "--server", json.dumps({"base_url": url, "models": {"base": "base-model", "grpo": "grpo"}, "concurrency": 3})]
    assert cli.main(argv) == 0
    # 2 benchmarks x 6 items x (base suite + base plain + grpo), at most 3 in flight (a request the client
    # retried after a dropped connection is counted once)
    distinct = {(r["model"], json.dumps(r["messages"])) for r in srv.requests}
    assert len(distinct) == 2 * 6 * 3, (len(distinct), len(srv.requests))
    assert 1 <= srv.max_in_flight <= 3, srv.max_in_flight
    assert {r["model"] for r in srv.requests} == {"base-model", "grpo"}
    assert all(r["max_tokens"] == 32 and r["temperature"] == 0.0 for r in srv.requests)
    assert all(r["chat_template_kwargs"] == {"enable_thinking": False} for r in srv.requests)
    summary = json.loads((tmp_path / "summary.json").read_text())["eval"]
    rows = {(r["model"], r["benchmark"]): r for r in summary["table"]}
    assert rows[("grpo", "medqa")]["format_compliance"] == 1.0 and rows[("base", "medqa")]["format_compliance"] == 0.0
    assert rows[("base (plain prompt)", "medqa")]["n"] == 6
    assert [rows[(m, "medqa")]["reading"] for m in ("base", "base (plain prompt)", "grpo")] == ["grammar", "plain", "grammar"]
    assert summary["config"]["server"]["concurrency"] == 3
    assert (tmp_path / "eval" / "results.md").is_file() and (tmp_path / "eval" / "results.png").is_file()
    # a rerun finds every record and sends nothing
    srv.requests.clear()
    assert cli.main(argv) == 0
    assert srv.requests == [], f"{len(srv.requests)} requests on a rerun"
    assert json.loads((tmp_path / "summary.json").read_text())["eval"]["table"] == summary["table"]


# -- two processes (slow) ----------------------------------------------------------------------------

@pytest.mark.slow
@needs_cpu_grpo  # TRL 1.15 (make test-gpu-libs) computes GRPO log-probs with a CUDA-only kernel
def test_grpo_in_two_cpu_processes_saves_one_adapter_and_logs_the_rewards_of_both(tmp_path, default_model_path):
    """accelerate's torchrun launcher starts two CPU processes (gloo: TRL's config has use_cpu): 2 steps of one group
    of 4 completions per process, 16 tokens each, from the shipped adapter."""
    import pandas as pd

    run = tmp_path / "run"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "medreason_utils.pipeline.cli", "grpo", "--config", "recipes/cpu/grpo.yaml",
           "--sft_adapter", "checkpoints/medreason-smollm2-135m-grpo", "--max_steps", "2", "--n_prompts", "8",
           "--max_completion_length", "16", "--per_device_train_batch_size", "4", "--log_completions", "true", "--reward_eval_prompts", "0", "--output_dir", str(run)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    # one adapter, saved by the main process only (the trainer's own checkpoints, for RESUME, aside)
    adapters = [p.relative_to(run) for p in run.rglob("adapter_model.safetensors") if not p.parent.name.startswith("checkpoint-")]
    assert adapters == [Path("grpo_adapter/adapter_model.safetensors")]
    saved = [line for line in log.splitlines() if "adapter saved:" in line]
    assert saved == [f"[process 0 of 2] adapter saved: {run / 'grpo_adapter'}"], saved
    grpo = json.loads((run / "summary.json").read_text())["grpo"]
    assert grpo["processes"] == 2 and grpo["steps"] == 2 and grpo["completions_per_step"] == 8
    assert (run / "grpo_rewards.png").is_file()
    # TRL's completion log (main process, gathered): per step 2 processes x 4 completions, two prompts (one group each)
    history = grpo["reward_history"]
    for i, step in enumerate(history["step"]):
        df = pd.read_parquet(run / "grpo_trainer" / "completions" / f"completions_{step:05d}.parquet")
        assert len(df) == 8 and df["prompt"].astype(str).nunique() == 2, df
        # the logged reward means are the means over those 8 completions: the rewards of both processes
        for name in load_stage_config("grpo", "cpu").rewards.func_names:  # the recipe's rewards
            assert history[name][i] == pytest.approx(df[name].mean(), abs=1e-6), (step, name)


# -- the SLURM script, with stand-ins for the cluster's commands ---------------------------------------

_FAKE_SRUN = r"""#!/bin/bash
# stand-in for SLURM's srun: runs the command once per task with SLURM_PROCID set
n=1; args=("$@")
for a in "$@"; do case $a in --ntasks=*) n=${a#--ntasks=};; esac; done
while [[ ${args[0]} == --* ]]; do args=("${args[@]:1}"); done
printf '%s\n' "$*" >> "$FAKE_LOG/srun"
for ((i = 0; i < n; i++)); do SLURM_PROCID=$i "${args[@]}"; done
"""
_RECORD = r"""#!/bin/bash
printf '%s\0' "$@" > "$FAKE_LOG/$(basename "$0").${SLURM_PROCID:-x}"
"""


def test_the_slurm_script_serves_vllm_on_the_last_node_and_launches_medreason_on_the_others(tmp_path):
    """SLURM itself is not here: srun, scontrol, trl and accelerate are stand-ins that record their arguments;
    what is checked is the script's plan and that the command it builds parses as ``medreason grpo``."""
    env, log = _slurm_stand_ins(tmp_path)
    out = subprocess.run(["bash", "scripts/slurm_grpo.sh", "runs/multi", "--max_steps", "7", "--rewards.verifier", "rule"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    srun = (log / "srun").read_text().splitlines()
    assert any("--nodelist=gpu-c" in line and "vllm-serve" in line for line in srun)
    assert any("--nodes=2 --ntasks=2 --nodelist=gpu-a,gpu-b" in line for line in srun)
    trl = (log / "trl.0").read_text().split("\0")[:-1]
    assert trl[:3] == ["vllm-serve", "--model", "unsloth/Qwen3-1.7B"] and "--data_parallel_size" in trl
    for rank in (0, 1):
        argv = (log / f"accelerate.{rank}").read_text().split("\0")[:-1]
        launch, medreason = argv[: argv.index("-m")], argv[argv.index("-m") + 2 :]
        assert launch[launch.index("--machine_rank") + 1] == str(rank) and launch[launch.index("--num_processes") + 1] == "16"
        assert launch[launch.index("--main_process_ip") + 1] == "gpu-a"
        assert launch[launch.index("--config_file") + 1] == "recipes/accelerate/zero3.yaml"
        inv = cli.parse(medreason)
        assert inv.stage == "grpo" and inv.run_dir == Path("runs/multi")
        assert inv.config.trl_args["vllm_server_base_url"] == "http://gpu-c:8000" and inv.config.trl_args["vllm_mode"] == "server"
        assert inv.config.max_steps == 7 and inv.config.engine == "transformers"


def test_the_slurm_script_needs_two_nodes(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho gpu-a\n")
    (bin_dir / "scontrol").chmod(0o755)
    out = subprocess.run(["bash", "scripts/slurm_grpo.sh", "runs/x"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-a"})
    assert out.returncode == 1 and "needs 2 nodes or more" in out.stderr


def test_engine_names_are_checked_before_anything_loads():
    from medreason_utils.models import RuntimeInfo, load_model

    cpu = RuntimeInfo("cpu", "cpu")
    with pytest.raises(ValueError, match="engine must be 'auto', 'unsloth' or 'transformers', got 'vllm'"):
        load_model(engine="vllm", runtime=cpu)
    with pytest.raises(ValueError, match="engine 'unsloth' needs a CUDA GPU"):
        load_model(engine="unsloth", runtime=cpu)
    with pytest.raises(ValueError, match="SFTStageConfig.engine must be one of"):
        load_stage_config("sft", "cpu", overrides={"engine": "deepspeed"})


# -- exit codes of the real command: a user error is one line and status 2, a bug a traceback and status 1 ------------


def _medreason(*args, run_dir, code=None, timeout=300):
    """The real ``medreason`` command in a subprocess (``python -m medreason_utils.pipeline.cli``); ``code`` runs
    before it, in the same process (to plant a bug)."""
    prog = (code or "") + "\nimport sys\nfrom medreason_utils.pipeline.cli import main\nraise SystemExit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("MEDREASON_TRACEBACK", None)
    return subprocess.run([sys.executable, "-c", prog, *args, "--output_dir", str(run_dir)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _one_error_line(out, *needles):
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [ln for ln in out.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), out.stderr[-3000:]
    return lines[0]


def test_cli_benchmarks_given_as_a_scalar_exits_2_saying_it_must_be_a_list(tmp_path):
    line = _one_error_line(_medreason("eval", "--config", "cpu", "--benchmarks", "medqa", "--dry_run", run_dir=tmp_path),
                           "benchmarks must be a list", "'medqa'")
    assert "unknown benchmark 'm'" not in line


def test_cli_unknown_benchmark_exits_2_naming_it(tmp_path):
    _one_error_line(_medreason("eval", "--config", "cpu", "--benchmarks", "[medqaa]", run_dir=tmp_path), "medqaa", "known:")


def test_cli_grpo_without_the_sft_adapter_exits_2_naming_the_folder(tmp_path):
    _one_error_line(_medreason("grpo", "--config", "cpu", "--max_steps", "1", run_dir=tmp_path),
                    "medreason grpo: error:", str(tmp_path / "sft_adapter"), "does not exist")


def test_cli_sft_data_file_whose_every_row_is_bad_exits_2_naming_the_file(tmp_path):
    bad = tmp_path / "bad sft.jsonl"
    bad.write_text("".join(json.dumps({"Question": f"q{k}", "Complex_CoT": "", "Response": "r"}) + "\n" for k in range(6)))
    _one_error_line(_medreason("sft", "--config", "cpu", "--data", str(bad), "--n_heldout", "2", "--max_steps", "1",
                               run_dir=tmp_path / "run"), "no usable row", str(bad))


def test_cli_eval_with_a_truncated_summary_json_exits_2_naming_the_file(tmp_path):
    (tmp_path / "summary.json").write_text('{"sft": {"config": {"data": "sample:medical_o1_sft"')  # cut off mid-write
    _one_error_line(_medreason("eval", "--config", "cpu", "--limit", "2", run_dir=tmp_path),
                    str(tmp_path / "summary.json"), "not valid JSON")


def test_cli_bug_after_parsing_keeps_its_traceback_and_exits_1(tmp_path):
    plant = ("import medreason_utils.pipeline.stages as s\n"
             "def run_sft(*a, **k):\n    raise KeyError('a bug in our code')\ns.run_sft = run_sft")
    out = _medreason("sft", "--config", "cpu", "--max_steps", "1", run_dir=tmp_path, code=plant)
    assert out.returncode == 1 and "Traceback" in out.stderr and "KeyError: 'a bug in our code'" in out.stderr, out.stderr[-3000:]


def _slurm_stand_ins(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir(), log.mkdir()
    for name, text in {"srun": _FAKE_SRUN, "scontrol": "#!/bin/bash\nprintf 'gpu-a\\ngpu-b\\ngpu-c\\n'\n",
                       "trl": _RECORD, "accelerate": _RECORD}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log), "SLURM_JOB_NODELIST": "gpu-[a-c]"}, log


def test_slurm_script_run_dir_recipe_and_option_with_spaces_and_shell_characters_reach_medreason_intact(tmp_path):
    """Paths are arguments of their own through srun and the task's bash -c (no word splitting, no injection)."""
    env, log = _slurm_stand_ins(tmp_path)
    env["RECIPE"] = "recipes/multi_gpu/grpo.yaml"  # a real recipe, so the argv must parse
    run_dir = "runs/my run; touch INJECTED $(id)"
    conf = tmp_path / "my configs" / "zero 3.yaml"
    env["ACCELERATE_CONFIG"] = str(conf)
    out = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_grpo.sh"), run_dir, "--max_steps", "7", "--rewards.verifier", "rule"],
                         cwd=tmp_path, env={**env, "PATH": env["PATH"]}, capture_output=True, text=True, timeout=60)
    # the script runs from the repository in real use; here cwd is tmp_path to see that nothing is created by injection
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "INJECTED").exists()
    trl = (log / "trl.0").read_text().split("\0")[:-1]
    assert trl[trl.index("--host") + 1] == "gpu-c"  # the vLLM node's own address, not 0.0.0.0
    for rank in (0, 1):
        argv = (log / f"accelerate.{rank}").read_text().split("\0")[:-1]
        launch, medreason = argv[: argv.index("-m")], argv[argv.index("-m") + 2 :]
        assert launch[launch.index("--config_file") + 1] == str(conf) and launch[launch.index("--machine_rank") + 1] == str(rank)
        assert medreason[medreason.index("--output_dir") + 1] == run_dir
        inv = cli.parse([a if a != "recipes/multi_gpu/grpo.yaml" else str(ROOT / a) for a in medreason])
        assert inv.run_dir == Path(run_dir) and inv.config.max_steps == 7


def test_slurm_script_dry_run_prints_quoted_commands_and_refuses_to_serve_on_all_interfaces(tmp_path):
    import shlex

    env, log = _slurm_stand_ins(tmp_path)
    out = subprocess.run(["bash", "scripts/slurm_grpo.sh", "runs/a b"], cwd=ROOT, env={**env, "DRY_RUN": "1"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not (log / "srun").exists(), out.stderr  # nothing ran
    serve, train = out.stdout.strip().splitlines()
    serve_argv, train_argv = shlex.split(serve.rstrip("&")), shlex.split(train)
    assert serve_argv[serve_argv.index("--host") + 1] == "gpu-c"
    assert train_argv[train_argv.index("--output_dir") + 1] == "runs/a b"
    out = subprocess.run(["bash", "scripts/slurm_grpo.sh", "runs/x"], cwd=ROOT, env={**env, "VLLM_HOST": "0.0.0.0"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "every interface" in out.stderr and not (log / "srun").exists()


def test_slurm_script_passes_shellcheck():
    import shutil

    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    out = subprocess.run(["shellcheck", "--severity=style", "scripts/slurm_grpo.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout
