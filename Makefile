# Two entry points for a fresh clone: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REPO ?= .
QUESTION ?= where are files discovered and skipped before parsing

.PHONY: demo test install install-dev lint

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'

# Index REPO (default: this checkout) on the bundled model, then answer QUESTION.
demo: install
	$(BIN)/ctxsvc index $(REPO)
	$(BIN)/ctxsvc query $(REPO) "$(QUESTION)" --budget 2000

lint: install-dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest
