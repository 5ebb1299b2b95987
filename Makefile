# Two commands from a fresh clone: `make demo` and `make test` (CI runs `make test`).
# Both use the active virtual environment, or create .venv when none is active, and install once:
# again only when pyproject.toml changes. torch is pinned and installed first: 2.13.0 is a CPU build
# on this project's machines, while an unpinned torch pulls a multi-GB CUDA build.

PYTHON ?= python3
VENV := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.embedrt-installed
EXTRAS := cpu,openvino,export,server,ray,test
CHECKED := src tests benchmarks examples

.PHONY: install demo lint typecheck test

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

test: lint typecheck
	$(PY) -m pytest -q
