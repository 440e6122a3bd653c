# Two entry points from a fresh machine: `make demo` and `make test`.
#
# They use the newest CPython >= 3.11 found (python3.14 ... python3.11 on PATH, else
# pyenv's versions, else python3): the newest Python installs the newest JAX (on
# Python 3.11, pip stops at jax 0.10.2; the suite runs about 3x faster on 0.12).
# PY=/path/to/python overrides; VENV=DIR picks the virtual environment's folder;
# `make which-python PY_VERSIONS=3.11` prints the Python 3.11 found (CI uses it).
PY_VERSIONS ?= 3.14 3.13 3.12 3.11
NEWEST_PY := $(shell for v in $(PY_VERSIONS); do \
	for p in python$$v $$(pyenv root 2>/dev/null)/versions/$$v*/bin/python$$v; do \
	  "$$p" -c 'import sys, venv; assert sys.version_info >= (3, 11)' >/dev/null 2>&1 \
	    && { command -v "$$p"; exit 0; }; \
	done; done; echo python3)
PY ?= $(NEWEST_PY)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install bench lint clean which-python notebooks

$(BIN)/specdyn: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/specdyn

which-python:
	@echo "$(PY)"

demo: install
	$(BIN)/specdyn demo

# PYTEST_ARGS: extra pytest arguments, e.g. PYTEST_ARGS="-m 'not notebook'" (CI's 3.11 pass).
PYTEST_ARGS ?=
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests $(PYTEST_ARGS)

# Execute the notebooks from their jupytext sources (notebooks/NN_*.py) and write the
# executed notebooks/NN_*.ipynb: SIZE=smoke (the committed size) or SIZE=full;
# NOTEBOOK=01_phase_retrieval for one.
SIZE ?= smoke
NOTEBOOK ?=
notebooks: install
	$(BIN)/python notebooks/execute.py $(if $(NOTEBOOK),$(NOTEBOOK),--all) --size $(SIZE)

bench: install
	$(BIN)/python bench/sweep.py

lint: install
	$(BIN)/ruff check specdyn tests bench notebooks

clean:
	rm -rf $(VENV) .venv-* build *.egg-info
