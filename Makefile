# Every target sets itself up: a virtualenv in .venv with the project and its dev tools.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
# Test processes (pytest-xdist): 2 fits the 2-core CI machine (make test: ~10 min instead of ~14.5).
# TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

.PHONY: run test test-fast lint typecheck proto proto-check bench bench-expiry bench-cluster load config-doc deploy-check clean

$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv && $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -e '.[dev]' && touch $(VENV_STAMP)

run: $(VENV_STAMP)
	$(PY) -m session_store serve

test: $(VENV_STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS)

test-fast: $(VENV_STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) -m 'not slow'

lint: $(VENV_STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

typecheck: $(VENV_STAMP)
	$(PY) -m mypy

proto: $(VENV_STAMP)
	$(PY) scripts/gen_proto.py

proto-check: $(VENV_STAMP)
	$(PY) scripts/gen_proto.py --check

bench: $(VENV_STAMP)
	$(PY) scripts/bench.py

bench-expiry: $(VENV_STAMP)
	$(PY) scripts/bench_expiry.py

bench-cluster: $(VENV_STAMP)
	$(PY) scripts/bench_cluster.py

load: $(VENV_STAMP)
	$(PY) scripts/load.py --start

config-doc: $(VENV_STAMP)
	$(PY) scripts/gen_config_doc.py

deploy-check: $(VENV_STAMP)
	bash scripts/check_deploy.sh

.PHONY: cluster-up cluster-down cluster-status cluster-test cluster-test-ci

cluster-up: $(VENV_STAMP)
	$(PY) scripts/cluster.py up --shards 3 --nodes 3

cluster-down: $(VENV_STAMP)
	$(PY) scripts/cluster.py down

cluster-status: $(VENV_STAMP)
	$(PY) scripts/cluster.py status

cluster-test: $(VENV_STAMP)
	$(PY) -m cluster_tests run full

cluster-test-ci: $(VENV_STAMP)
	$(PY) -m cluster_tests run ci

clean:
	rm -rf .venv .run .pytest_cache .mypy_cache .ruff_cache .hypothesis
