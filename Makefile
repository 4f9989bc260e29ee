# Two commands do all set-up on a fresh machine (Python, pip and apt only):
#   make demo   train the default spec on the bundled digits data set
#   make test   run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The demo's environment: netspec and its runtime dependencies only (144 MB, no torch,
# scikit-learn or matplotlib: docs/performance.md); `make test` adds the rest to the same venv.
RUNTIME := $(VENV)/.runtime

.PHONY: demo test bench setup editor

$(RUNTIME): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e . -c constraints.txt
	touch $(RUNTIME)

$(STAMP): $(RUNTIME) pyproject.toml constraints.txt editors/vscode/package-lock.json editors/web/package-lock.json
	$(PY) -m pip install -q -e '.[test]' -c constraints.txt
	@command -v dot >/dev/null 2>&1 || { \
	  echo "installing Graphviz (dot) with apt-get"; \
	  (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null) || \
	  (sudo apt-get update -qq && sudo apt-get install -y -qq graphviz >/dev/null) || \
	  echo "warning: could not install Graphviz; netspec draw writes .dot only and its tests skip"; }
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing Node.js and npm with apt-get (the TextMate grammar's tests run VS Code's engine)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null) || \
	  (sudo apt-get update -qq && sudo apt-get install -y -qq nodejs npm >/dev/null) || \
	  echo "warning: could not install npm; the TextMate grammar's engine test skips"; }
	@! command -v npm >/dev/null 2>&1 || \
	  (cd editors/vscode && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || \
	  echo "warning: npm ci failed in editors/vscode; the TextMate grammar's engine test skips"
	@! command -v npm >/dev/null 2>&1 || \
	  (cd editors/web && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || \
	  echo "warning: npm ci failed in editors/web; the web editor's rebuild test skips"
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Chromium with apt-get (the web view's tests run it headless)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  (sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null) || \
	  echo "warning: could not install Chromium; the web view's browser tests skip"; }
	touch $(STAMP)

setup: $(STAMP)

demo: $(RUNTIME)
	$(VENV)/bin/netspec train

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# Rebuild the web view's editor (netspec/web/editor.js, committed) from editors/web's lock file.
editor: $(STAMP)
	cd editors/web && npm ci --no-audit --no-fund --loglevel=error && npm run build
