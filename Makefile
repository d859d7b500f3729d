# One command for the demo, one for the tests. Each installs what it needs first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
# Offline: no guideline download, no version check (the scan needs no network).
CHECKOV_ENV := BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE

.PHONY: install demo test bench bench-latency bench-large chaos lint scan clean chromium

$(STAMP): pyproject.toml requirements.txt package.json
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	npm install --no-audit --no-fund --loglevel=error
	touch $(STAMP)

# The security scan of infra/ (tests/test_infra_scan.py runs it). Checkov pins its own Bicep parser
# (pycep-parser 0.5.1; the tests use 0.7.1), so it gets a venv of its own.
$(CHECKOV_STAMP): requirements-checkov.txt
	$(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $(CHECKOV_STAMP)

install: $(STAMP) $(CHECKOV_STAMP)

demo: $(STAMP)
	$(BIN)/entra-assets demo

# The status page test drives a real headless Chromium (Debian's package, through Playwright); the demo does
# not need it. Installing it needs root (CI images run as root); elsewhere: sudo apt-get install chromium.
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium)

test: $(STAMP) $(CHECKOV_STAMP) chromium
	$(BIN)/python -m pytest -q -n 2

# COMPARE=DIR syncs with DIR's code too, against the same sandbox in the same run (git worktree add DIR main).
bench: $(STAMP)
	$(BIN)/python -m sandbox.tools.bench $(if $(COMPARE),--compare $(COMPARE))

# A full sync against 50 ms Graph / 100 ms Assets latency on a 20,000-user tenant, against its page chains.
bench-latency: $(STAMP)
	$(BIN)/python -m sandbox.tools.bench_latency

# A full run of a 1,000,000-user tenant in segments, one killed midway; producer, worker and emulators each in
# a process of their own (USERS=... for another size).
bench-large: $(STAMP)
	$(BIN)/python -m sandbox.tools.bench_large $(if $(USERS),--users $(USERS))

# Crash recovery, long: 50 SIGKILLs of `sync` at random points, each followed by a checked recovery run.
chaos: $(STAMP)
	$(BIN)/python -m sandbox.tools.chaos --kills 50

lint: $(STAMP)
	$(BIN)/ruff check .

scan: $(CHECKOV_STAMP)
	$(CHECKOV_ENV) $(CHECKOV_VENV)/bin/checkov -d infra --framework bicep --skip-download --compact

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .entra-assets
