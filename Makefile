# Two commands do everything on a fresh machine: `make demo` and `make test`.
# TORCH_SPEC: this machine has a CPU build of torch 2.13.0 on disk; GPU users set their own,
# e.g. `make test TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test demo bench clean data ui

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

ui: $(STAMP)
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) data/localnet .prefect-test
