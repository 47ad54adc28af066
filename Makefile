# Everything installs into .venv; only Python 3.11 is needed beforehand.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install run cluster test lint bench clean browser redis

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; install Python 3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m uvicorn examples.demo:app --host 127.0.0.1 --port $(PORT)

# Redis plus two demo processes (8000, 8001) that act as one service.
cluster: $(STAMP) redis
	$(BIN)/python -m examples.cluster

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict asgistream examples benchmarks

# Debian's Chromium for the tests that need a real browser's EventSource.
browser:
	@test -x /usr/bin/chromium || { \
		echo "installing Debian's chromium for the browser tests"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# Debian's redis-server for the scale-out tests (they start their own, on free ports).
redis:
	@command -v redis-server >/dev/null || { \
		echo "installing Debian's redis-server for the scale-out tests"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server >/dev/null; }

test: lint browser redis
	$(BIN)/python -m pytest -W error

bench: $(STAMP) redis
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
