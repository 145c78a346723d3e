# ringside: `make test` sets everything up and runs every check; `make demo` runs ringside on a
# local three-member etcd cluster. Both work on a fresh Debian/Ubuntu machine.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint typecheck pytest etcd demo bench test-compose clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "ringside needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

etcd:
	@scripts/ensure-etcd.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict sidecar bench tests

pytest: $(STAMP) etcd
	$(BIN)/pytest

test: lint typecheck pytest

demo: $(STAMP) etcd
	$(BIN)/python -m sidecar.demo $(DEMO_ARGS)

# Benchmarks report figures (bench/results/latest.json, docs/benchmarks.md); they never fail
# on a slow machine. BENCH_ARGS=--quick runs a few trials only, to check the harness.
bench: $(STAMP) etcd
	@scripts/ensure-bench-tools.sh
	$(BIN)/python -m bench $(BENCH_ARGS)

# compose/local-cluster.yml end to end in real containers (tests/compose), apart from `make test`:
# starts dockerd if none answers, installs what is missing, builds the stand-in images and
# ringside's (scripts/build-images.sh; no registry needed). Needs root.
test-compose: $(STAMP)
	@scripts/docker-up.sh
	@scripts/build-images.sh
	$(BIN)/pytest -s -m compose tests/compose $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
