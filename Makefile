# Two commands do everything on a fresh machine: `make demo` and `make test`.
# TORCH_SPEC: this machine has a CPU build of torch 2.13.0 on disk; GPU users set their own,
# e.g. `make test TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: venv test demo bench clean data ui readme-check

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

data: $(STAMP)
	$(BIN)/gauntlet data prepare

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# Prefect's temporary local API keeps its runs in data/prefect; `make ui` shows them.
export PREFECT_HOME ?= $(CURDIR)/data/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

demo: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/gauntlet demo

# Every `gauntlet` command of the README, run as written against the demo's network (made first
# if there is none); prints what it skipped and why. CI runs it after `make test`.
readme-check: $(STAMP)
	test -f data/localnet/manifest.json || $(MAKE) demo
	OMP_NUM_THREADS=1 $(BIN)/python -m tests.readme_check

ui: $(STAMP)
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

# `make bench` writes to benchmarks/.work/results/ (git-ignored); the tracked figures the README
# quotes change only on purpose: `make bench BENCH_ARGS=--write-results`.
bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# Removes what make created: the venv, the demo's network and its Prefect runs (data/prefect: they
# name a network that no longer exists), the tests' Prefect home and the benchmarks' scratch.
# The prepared corpus and tokenizer (data/corpus, data/tokenizer) are kept for the next `make demo`.
clean:
	rm -rf $(VENV) data/localnet data/prefect .prefect-test benchmarks/.work
