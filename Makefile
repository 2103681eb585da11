# The two commands of the README: `make run` and `make test`. Both install what is
# missing first (Debian packages as root, then a virtualenv in .venv).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test system venv lint bench clean

run: system venv
	$(BIN)/nova up

test: venv
	scripts/install-system.sh --test
	$(BIN)/ruff check nova tests
	$(BIN)/pytest -v --durations=15

system:
	scripts/install-system.sh

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,postgres]'
	touch $@

lint: venv
	$(BIN)/ruff check nova tests
	$(BIN)/ruff format --check nova tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
