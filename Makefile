# The two commands: `make run` (set up + quickstart job) and `make test` (set up + test suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test install data bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch first (a local wheel here; other versions download gigabytes)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

data:
	./scripts/get-data.sh

run: $(STAMP) data
	./scripts/quickstart.sh examples/quickstart.yaml

test: $(STAMP)
	./scripts/install-test-tools.sh
	$(BIN)/python -m pytest -q

bench: $(STAMP) data
	$(BIN)/python bench/round_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache
