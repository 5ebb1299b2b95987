# Two commands from a fresh clone: `make demo` and `make test` (CI runs `make test`).
# Both use the active virtual environment, or create .venv when none is active, and install once:
# again only when pyproject.toml changes. torch is pinned and installed first: 2.13.0 is a CPU build
# on this project's machines, while an unpinned torch pulls a multi-GB CUDA build.

PYTHON ?= python3
# The oldest Python embedrt claims (requires-python): make test serves a bundle with it. The first
# python3.10 that runs: on PATH, else one pyenv installed (its shim runs only when pyenv selects 3.10).
OLDEST_PYTHON ?= $(firstword $(foreach p,python3.10 $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python3.10),\
	$(shell $(p) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null && echo $(p))))
VENV := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.embedrt-installed
OLDEST := .venv-oldest
EXTRAS := cpu,openvino,export,server,ray,test
CHECKED := src tests benchmarks examples

.PHONY: install demo lint typecheck test test-oldest

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[$(EXTRAS)]"
	touch $@

install: $(STAMP)

demo: install
	$(PY) examples/demo.py --bundle bundles/demo

lint: install
	$(PY) -m ruff check $(CHECKED)
	$(PY) -m ruff format --check $(CHECKED)

typecheck: install
	$(PY) -m mypy

$(OLDEST)/bin/python:
	@test -n "$(OLDEST_PYTHON)" || { echo "no Python 3.10 found: install one or pass OLDEST_PYTHON=/path/to/python3.10"; exit 1; }
	$(OLDEST_PYTHON) -m venv $(OLDEST)

# Only the runtime and the server, as a deployment has them: no torch (none is built for it here).
$(OLDEST)/.embedrt-installed: pyproject.toml | $(OLDEST)/bin/python
	$(OLDEST)/bin/python -m pip install -e ".[cpu,server]"
	touch $@

test-oldest: install $(OLDEST)/.embedrt-installed
	$(PY) tests/serve_on_oldest_python.py --python $(OLDEST)/bin/python

test: lint typecheck test-oldest
	$(PY) -m pytest -q
