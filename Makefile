# Two entry points: `make demo` (needs Python 3.11+ only) and `make test`
# (also Node 20, for anvil and solc). Each installs what it needs into the
# project, .venv and node_modules, and does nothing more on a second run.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.a402-runtime
TEST_STAMP    := $(VENV)/.a402-test
NODE_STAMP    := node_modules/.a402-installed

.PHONY: demo test lint format contracts devnet bench clean browser

demo: $(RUNTIME_STAMP)
	$(BIN)/a402 demo

test: $(TEST_STAMP) $(NODE_STAMP) browser
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(TEST_STAMP)
	$(BIN)/ruff check --fix src tests bench

contracts: $(NODE_STAMP)
	node scripts/compile_contracts.mjs

devnet: $(RUNTIME_STAMP) $(NODE_STAMP)
	$(BIN)/a402 devnet --port 8545

bench: $(TEST_STAMP) $(NODE_STAMP)
	$(BIN)/python bench/exact.py
	$(BIN)/python bench/crypto.py
	$(BIN)/python bench/asc.py

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "a402 needs Python 3.11 or newer; run make with PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	@touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@ $(RUNTIME_STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

# The console's browser tests drive Debian's chromium through chromedriver. As root with
# apt (CI), a missing browser is installed; elsewhere `make test` says how and the browser
# tests skip, unless A402_REQUIRE_BROWSER is set (CI sets it), and then they fail.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	  else \
	    echo "note: no chromium/chromedriver: the console's browser tests will skip" \
	         "(install them: apt-get install chromium chromium-driver)"; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache .mypy_cache .hypothesis
