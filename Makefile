# Two entry points for a fresh clone: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REPO ?= .
QUESTION ?= where are files discovered and skipped before parsing

.PHONY: demo test install install-demo install-dev lint test-deps docs

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e .

# What `make demo` installs: the package with the bench extra, so that `ctxsvc bench` runs too.
install-demo: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[bench]'

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'

# Index REPO (default: this checkout) on the bundled model, then answer QUESTION.
# (`ctxsvc bench REPO` works afterwards: the demo installs the bench extra.)
demo: install-demo
	$(BIN)/ctxsvc index $(REPO)
	$(BIN)/ctxsvc query $(REPO) "$(QUESTION)" --budget 2000

# The documentation site (mkdocs.yml, docs/) into site/; any warning fails the build.
docs: install-dev
	$(BIN)/mkdocs build --strict --site-dir site

lint: install-dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# What the tests start besides Python: the PostgreSQL server binaries (a throwaway cluster
# for the state-store tests) and Chromium (the inspector's browser tests), Debian's packages,
# installed here when absent and this runs as root.
test-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; } || \
	  echo "note: no PostgreSQL server binaries: the PostgreSQL tests are skipped"
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  echo "note: no Chromium: the inspector's browser tests are skipped"

# The suite in parallel processes, a test file to each (its module fixtures built once),
# as many as cores up to 4 (each may load the model); TEST_PROCESSES=0 runs it in one.
TEST_PROCESSES ?= auto
test: lint docs test-deps
	$(BIN)/pytest -n $(TEST_PROCESSES) --maxprocesses 4 --dist loadfile
