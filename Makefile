# dlmi course package. Two commands do all the set-up on a fresh machine with Python 3.11:
#   make course   build the release, execute every lecture and solution notebook, print the table
#   make test     run the whole test suite (what CI runs)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first and on its own, so that the rest never replaces it. The default is the
# torch/torchvision pair that ships as one compatible build; override on other platforms, e.g.
#   make course TORCH="torch torchvision --index-url https://download.pytorch.org/whl/cpu"
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.dlmi-installed
PIP    := $(PY) -m pip --disable-pip-version-check

.PHONY: help venv course test release lab bench map autograde clean

help:
	@echo "make course   - install into $(VENV), regenerate course/, execute every notebook, print the table"
	@echo "make test     - install into $(VENV) and run the test suite (CI)"
	@echo "make release  - regenerate course/ from solutions/ with nbgrader"
	@echo "make lab      - JupyterLab on course/"
	@echo "make bench    - run the benchmarks in bench/"
	@echo "make map      - regenerate the README course map (Binder/Colab links)"
	@echo "make autograde UNIT=01 - grade submitted/*/<unit> in parallel sandboxes (dlmi-course autograde)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch, torchvision" 2>/dev/null || $(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[all]"
	@touch $(STAMP)

release: $(STAMP)
	$(VENV)/bin/dlmi-course release

course: release
	$(VENV)/bin/dlmi-course run --build build

test: $(STAMP)
	$(PY) -m pytest tests solutions --nbval-lax --timeout=900

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=course

bench: $(STAMP)
	@set -e; for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

UNIT ?= 01
autograde: $(STAMP)
	$(VENV)/bin/dlmi-course autograde $(UNIT)

map: $(STAMP)
	$(VENV)/bin/dlmi-course map

clean:
	rm -rf build
