# pbs: `make run` (the main job, CPU, offline) and `make test` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
TORCH_CPU := torch==2.13.0
TRITON := triton==3.9.0
RUN_DIR := results/default
EVAL := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline \
	$(PY) -m experiments.eval -m model=proxy task=ruler "task.lengths=[2048]" task.samples=2 results_dir=$(RUN_DIR) \
	name=make-run hydra.sweep.dir=outputs/make-run/$$(date +%s)

.PHONY: help setup run demo reproduce-tables test test-full test-gpu lint clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: $(VENV)/.installed  ## build .venv (CPU: torch 2.13.0 CPU wheel pinned; CUDA machine: its torch is kept)

$(VENV)/.installed: pyproject.toml Makefile
	@if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then \
		echo "CUDA torch found: keeping it (venv with system site-packages)"; \
		python3 -m venv --system-site-packages $(VENV); \
		$(PIP) install -e ".[dev,eval]"; \
	else \
		python3 -m venv $(VENV); \
		$(PIP) install "$(TORCH_CPU)" "$(TRITON)" && $(PIP) install "$(TORCH_CPU)" -e ".[dev,triton,eval]"; \
	fi
	@touch $@

run: setup  ## the main job: every method on the embedded proxy model over the RULER-style suite at 2K tokens (CPU, offline)
	@rm -rf $(RUN_DIR)
	$(EVAL) method=full,pbs,meanpool,xattention,flexprefill,oracle
	$(EVAL) method=pbs method.permute=none,query
	$(EVAL) method=minference method.vertical_size=64 method.slash_size=256
	$(PY) -m pbs.eval.report $(RUN_DIR)

reproduce-tables: setup  ## rebuild results/tables/ from the committed results
	$(PY) scripts/make_tables.py

demo: setup  ## every method on structured synthetic attention inputs: density and error vs dense (CPU)
	$(PY) scripts/demo.py

.PHONY: bench-speed
bench-speed: setup  ## end-to-end prefill speed (TTFT) per model, SDPA backend and method (CUDA; results/speed/README.md)
	$(PY) -m experiments.speed

test: setup  ## the test suite without the slow tests (CPU; Triton kernels under TRITON_INTERPRET=1)
	$(PY) -m pytest -q -n 2

test-full: setup  ## the test suite including the slow tests (CPU)
	$(PY) -m pytest -q -n 2 -m "not gpu"

test-gpu: setup  ## the GPU correctness tests (tests/gpu; on a CUDA machine, Triton compiled for the GPU)
	$(PY) -m pytest -q -m gpu

lint: setup  ## ruff check (settings: pyproject.toml [tool.ruff])
	$(PY) -m ruff check .

clean:  ## remove .venv, caches and outputs/ (runs outside results/), and make run's results/default
	rm -rf $(VENV) .pytest_cache .ruff_cache outputs $(RUN_DIR)
