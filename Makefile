# twotower — `make demo` runs the main job on offline data; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= out

.PHONY: setup test test-all demo bench docs lock clean

# Creates or refreshes .venv from the lock (constraints.txt). Idempotent: does nothing
# when neither pyproject.toml nor constraints.txt changed since the last install.
setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,bench,docs]"
	@touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

# Includes the slow end-to-end checks that CI skips.
test-all: setup
	$(BIN)/python -m pytest -q -m ""

# The design notes and the API reference (docstrings, read by griffe, not imported) as a
# static site in site/, built offline; any warning fails it. Open site/index.html.
docs: setup
	$(BIN)/python -m mkdocs build --strict --site-dir site

demo: setup
	$(BIN)/python -m twotower.cli demo --out $(OUT)/demo --overwrite

# Regenerates the lock from the current .venv (run after changing pyproject.toml).
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -vi '^twotower' > constraints.txt

clean:
	rm -rf $(VENV) build site *.egg-info $(OUT)
