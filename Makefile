# One command for the demo, one for the tests. Each installs what it needs first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean

$(STAMP): pyproject.toml requirements.txt package.json
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	npm install --no-audit --no-fund --loglevel=error
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/entra-assets demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python -m sandbox.bench

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) node_modules .entra-assets
