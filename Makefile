# Two entry points from a fresh machine with python3: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install bench lint clean

$(BIN)/specdyn: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/specdyn

demo: install
	$(BIN)/specdyn demo

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

bench: install
	$(BIN)/python bench/sweep.py

lint: install
	$(BIN)/ruff check specdyn tests bench

clean:
	rm -rf $(VENV) build *.egg-info
