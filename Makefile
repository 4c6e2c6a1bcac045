# `make run` and `make test` create the environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel here; on a GPU machine use e.g. `make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`
TORCH ?= torch==2.13.0
ARGS ?=

.PHONY: install run test test-slow lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,sweeps,bm3d]"
	touch $@

run: install
	$(PY) run.py $(ARGS)

# the test files spread over the cores (each file on one worker, so a module's fixtures run once); ARGS="-n 0" runs them in one process
test: install
	$(PY) -m pytest -q -m "not slow" -n auto --dist loadfile $(ARGS)

test-slow: install
	$(PY) -m pytest -q -m slow $(ARGS)

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
