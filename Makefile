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

.PHONY: run test install install-dev lint bench lock mlflow-ui up down stack-test ui-test viewer clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "error: co2cast needs Python 3.11; $(PYTHON) is " + sys.version.split()[0] + ": run make PYTHON=python3.11 ...")'
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
	$(BIN)/pip install -q --no-deps -r requirements-bench.txt  # see the file's header
	$(BIN)/pip install -q torch==2.13.0  # the CPU build on this kind of machine; benchmarks only
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench_arima.py
	$(BIN)/python benchmarks/bench_lstm.py
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/accuracy.py
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

# The MLflow UI alone, in the foreground (make up starts it with Airflow, in the background).
mlflow-ui: install
	$(BIN)/mlflow server --host 127.0.0.1 --port 5000 --workers 1 \
	  --backend-store-uri "sqlite:///$(CO2CAST_HOME)/mlflow/mlflow.db" --default-artifact-root "$(CO2CAST_HOME)/mlflow/artifacts"

# Airflow 3 (api-server, scheduler, dag-processor, triggerer) and the MLflow UI on 127.0.0.1,
# on the same home as make run; make down stops them.
up: install
	bash scripts/up.sh

down:
	bash scripts/down.sh

$(VENV)/.installed-stack: $(VENV)/.installed-dev requirements-stack.txt
	$(BIN)/pip install -q -r requirements-stack.txt
	touch $@

# The services docker-compose declares, natively (PostgreSQL and Redis from Debian packages,
# moto for S3, MLflow with basic auth, Airflow with the CeleryExecutor and two workers).
stack-test: $(VENV)/.installed-stack
	$(BIN)/pytest -m stack tests/stack

# Headless Chromium against make run + make up on a fresh home (Debian: chromium chromium-driver).
ui-test: install-dev
	$(BIN)/pytest -m browser tests/test_browser_ui.py

# The forecast viewer on what `make run` published: http://127.0.0.1:$(VIEWER_PORT)
VIEWER_PORT ?= 8501
viewer: install
	$(BIN)/co2cast view --port $(VIEWER_PORT)

clean:
	rm -rf $(CO2CAST_HOME)
