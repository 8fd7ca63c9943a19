# The two commands the README promises: `make quickstart` (main job on SQLite) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup quickstart test test-fast lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

quickstart: setup
	scripts/ensure-data.sh
	$(BIN)/hpo run studies/quickstart.toml --workers 2
	$(BIN)/hpo best studies/quickstart.toml

lint: setup
	$(BIN)/ruff check hpo tests benchmarks
	$(BIN)/ruff format --check hpo tests benchmarks

test: setup lint
	@# the tests find the data where hpo does, and in the project's shared copy beside the checkout
	[ -f ../shared/data/fashion-mnist/FashionMNIST/raw/train-images-idx3-ubyte ] || scripts/ensure-data.sh
	scripts/ensure-test-tools.sh
	$(BIN)/python -m pytest

# The edit loop: no training on real data, no worker processes (tests marked slow are left out).
test-fast: setup lint
	$(BIN)/python -m pytest -m "not slow" -q
