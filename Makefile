# Two commands set up everything on a fresh machine with Python 3.11:
#   make demo   - run the main job on the embedded defaults
#   make test   - run the whole test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo up test test-fast lint clean

venv: $(STAMP)

# Reinstalled only when a requirements file changes, so TensorFlow is not fetched every run.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

demo: venv
	$(BIN)/python platform/stack.py demo

up: venv
	$(BIN)/python platform/stack.py up

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf var .pytest_cache .ruff_cache
