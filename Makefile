# Two commands set up everything on a fresh machine with Python 3.11:
#   make demo   - run the main job on the embedded defaults
#   make test   - run the whole test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv browser demo up test test-fast lint clean

venv: $(STAMP)

# Reinstalled only when a requirements file (or the SDK's pyproject) changes, so TensorFlow is not fetched every run.
$(STAMP): requirements.txt requirements-dev.txt requirements/api.txt requirements/ml.txt clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# Debian's Chromium for the browser tests (installed once; needs root or sudo).
browser:
	@sh platform/install-chromium.sh

demo: venv
	$(BIN)/python platform/stack.py demo

up: venv
	$(BIN)/python platform/stack.py up

# pytest's exit code 5 (no test collected) is a failure here, never a silent pass.
RUN_PYTEST = $(BIN)/python -m pytest $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test: venv browser
	@$(call RUN_PYTEST,$(PYTEST_ARGS))

test-fast: venv
	@$(call RUN_PYTEST,-m "not slow" $(PYTEST_ARGS))

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf var .pytest_cache .ruff_cache
