# co2cast: `make run` runs the pipeline on the embedded defaults, `make test` runs the tests.
# Both create .venv and install what is missing on their own.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

export CO2CAST_HOME ?= $(CURDIR)/.co2cast
export AIRFLOW_HOME ?= $(CO2CAST_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export GX_ANALYTICS_ENABLED := false

.PHONY: run test install install-dev lint bench lock mlflow-ui clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	bash scripts/run_local.sh

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: install-dev
	$(BIN)/ruff check .

$(VENV)/.installed-bench: $(VENV)/.installed-dev requirements-bench.txt
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/pip install -q torch==2.13.0  # the CPU build on this kind of machine; benchmarks only
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench_arima.py
	$(BIN)/python benchmarks/bench_lstm.py
	$(BIN)/python benchmarks/bench_ingest_memory.py

# Re-resolve the pinned runtime set from pyproject.toml's direct dependencies.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip
	.venv-lock/bin/pip install -q .
	{ echo "# The whole resolved runtime set, pinned (pip freeze of a fresh venv with the direct"; \
	  echo "# dependencies of pyproject.toml). Regenerate with: make lock"; \
	  .venv-lock/bin/pip freeze --exclude co2cast; } > requirements.txt
	rm -rf .venv-lock

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CO2CAST_HOME)/mlflow/mlflow.db" --port 5000

clean:
	rm -rf $(CO2CAST_HOME)
