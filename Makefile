# The two commands of the README: `make run` and `make test`. Both install what is
# missing first (Debian packages as root, then a virtualenv in .venv).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# The lock files: the exact versions the tests ran with, compiled from setup.cfg by uv.
# requirements.lock (the app, with the postgres extra) is what the Dockerfile installs;
# requirements-test.lock (with the test extra too) is what the virtualenv installs. Both
# pin the same versions: the app's lock is compiled under the test lock's constraints.
UV_VERSION := 0.13.8
LOCK_COMPILE := --python-version 3.11 --python-platform x86_64-manylinux_2_36 --quiet \
	--custom-compile-command 'make lock'

.PHONY: run test test-unit system venv lint lock bench clean

run: system venv
	$(BIN)/nova up

test: venv
	scripts/install-system.sh --test
	$(BIN)/ruff check nova tests
	$(BIN)/lint-imports
	$(BIN)/pytest -v --durations=15

# The inner loop: the unit tier only (pure functions, no services), well under a minute.
test-unit: venv
	$(BIN)/pytest -q tests/unit

system:
	scripts/install-system.sh

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml requirements-test.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-test.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# Refresh both lock files to the newest versions setup.cfg allows (then run make test).
# UV_NATIVE_TLS: uv trusts the system's certificates (a TLS-intercepting proxy's CA too).
lock:
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	UV_NATIVE_TLS=1 $(BIN)/uv pip compile setup.cfg --extra postgres --extra test \
		--upgrade $(LOCK_COMPILE) -o requirements-test.lock
	UV_NATIVE_TLS=1 $(BIN)/uv pip compile setup.cfg --extra postgres \
		-c requirements-test.lock $(LOCK_COMPILE) -o requirements.lock

# lint-imports: the import contracts in setup.cfg (the house's layers).
lint: venv
	$(BIN)/ruff check nova tests
	$(BIN)/ruff format --check nova tests
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
