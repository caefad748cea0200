# The two commands: `make run` (set up + quickstart job) and `make test` (set up + test suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test install data test-tools bench clean compose-check

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch first (a local wheel here; other versions download gigabytes)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# the `run` packages of scripts/apt-packages.txt (datasets)
data:
	./scripts/get-data.sh

# everything the tests need: the `run` and `test` packages, and the dashboard's npm schema check
test-tools:
	./scripts/install-test-tools.sh

run: $(STAMP) data
	./scripts/quickstart.sh examples/quickstart.yaml

# Two worker processes, each taking whole test files (--dist loadfile: a module's server and
# fixtures stay in one process): most of the suite's time is servers and Ray starting and jobs
# waiting on timeouts, which two workers overlap on a 2-core machine. `pytest -q` alone runs
# the same tests one at a time.
test: $(STAMP) test-tools
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# docker-compose.yml for real: a private dockerd, images built from a debootstrapped base, the
# cluster up, a job submitted and checked, everything torn down (scripts/compose-check.sh; root)
compose-check: $(STAMP)
	./scripts/compose-check.sh

bench: $(STAMP) data
	$(BIN)/python bench/round_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache
