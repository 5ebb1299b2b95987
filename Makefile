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
# The declared lower bounds (pyproject.toml), on the Python the pinned torch is built for.
FLOORS := .venv-floors
FLOORS_PYTHON ?= python3.11
FLOORS_TORCH ?= 2.13.0
FLOORS_TESTS := tests/export/test_export.py tests/e2e/test_parity.py tests/export/test_fp16_export.py
EXTRAS := cpu,openvino,export,server,ray,test
CHECKED := src tests benchmarks examples

.PHONY: install demo lint typecheck test test-oldest test-floors

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
	$(PY) tests/e2e/serve_on_oldest_python.py --python $(OLDEST)/bin/python

test: lint typecheck test-oldest
	$(PY) -m pytest -q

# Every ">=" floor of the base dependencies and the cpu and export extras, pinned with ==, torch
# excepted (only its FLOORS_TORCH CPU build is on this project's machines: torch 2.11, the export
# floor, ran on the GPU machine); then the export, parity and fp16 tests. The venv is rebuilt from
# scratch when pyproject.toml changes: about 8 minutes then, 5 without the install, so it is not
# part of `make test` (see docs/gpu.md, "Tested floors").
$(FLOORS)/.embedrt-installed: pyproject.toml tests/e2e/floor_constraints.py
	rm -rf $(FLOORS)
	$(FLOORS_PYTHON) -m venv $(FLOORS)
	$(FLOORS)/bin/python -m pip install -q packaging
	$(FLOORS)/bin/python tests/e2e/floor_constraints.py cpu export --pin torch==$(FLOORS_TORCH) > $(FLOORS)/constraints.txt
	cat $(FLOORS)/constraints.txt
	$(FLOORS)/bin/python -m pip install -q -c $(FLOORS)/constraints.txt torch==$(FLOORS_TORCH)
	$(FLOORS)/bin/python -m pip install -q -c $(FLOORS)/constraints.txt -e ".[cpu,export,test]"
	touch $@

test-floors: $(FLOORS)/.embedrt-installed
	$(FLOORS)/bin/python -m pip freeze | grep -i -E '^(numpy|tokenizers|tqdm|onnxruntime|torch|transformers|sentence-transformers|onnx|nncf)=='
	$(FLOORS)/bin/python -m pytest -q -p no:cacheprovider $(FLOORS_TESTS)
