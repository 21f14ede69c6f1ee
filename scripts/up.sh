#!/usr/bin/env bash
# `make up`: the Airflow 3 UI and services (api-server, scheduler, dag-processor, triggerer;
# LocalExecutor on SQLite) and the MLflow UI on the co2cast home, on 127.0.0.1 only.
#
# Everything `make run` wrote shows up: Airflow uses the same AIRFLOW_HOME (its SQLite
# database), MLflow the same store. State lives in $CO2CAST_HOME/up/ (pids, logs, urls.env);
# `make down` stops what this started. Ports: CO2CAST_AIRFLOW_PORT / CO2CAST_MLFLOW_PORT, or
# free ports picked at start. The Airflow login is SimpleAuthManager's (development only): user
# `admin`, a generated password kept in $CO2CAST_HOME/airflow-passwords.json (mode 600).
set -euo pipefail
: "${CO2CAST_HOME:?run through make (make up)}"
: "${AIRFLOW_HOME:?run through make (make up)}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/.venv/bin"
STATE="$CO2CAST_HOME/up"
mkdir -p "$STATE/logs" "$CO2CAST_HOME/mlflow/artifacts"
CO2CAST_HOME=$(cd "$CO2CAST_HOME" && pwd)
export CO2CAST_HOME PATH="$BIN:$PATH"

# shellcheck source=scripts/pidfile.sh
. "$ROOT/scripts/pidfile.sh"
# alive NAME: the process make up recorded for NAME still runs (a stale pid file is removed);
# status 2 when an older make up's pid file names a process that may be NAME (kept, see pidfile.sh).
alive() { live_pid "$STATE/$1.pid" >/dev/null; }

for name in airflow-api-server mlflow; do
  status=0
  alive "$name" || status=$?
  if [ $status -eq 0 ]; then
    echo "already up (make down to stop):"
    cat "$STATE/urls.txt" 2>/dev/null || true
    exit 0
  fi
  if [ $status -eq 2 ]; then
    echo "!! not starting a second stack: stop that process or remove its pid file first" >&2
    exit 1
  fi
done

free_port() { "$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
AIRFLOW_PORT=${CO2CAST_AIRFLOW_PORT:-$(free_port)}
MLFLOW_PORT=${CO2CAST_MLFLOW_PORT:-$(free_port)}
AIRFLOW_URL="http://127.0.0.1:$AIRFLOW_PORT"
MLFLOW_URL="http://127.0.0.1:$MLFLOW_PORT"
MLFLOW_DB="sqlite:///$CO2CAST_HOME/mlflow/mlflow.db"

# SimpleAuthManager: one admin user, its password generated once and kept beside the state.
PASSWORDS="$CO2CAST_HOME/airflow-passwords.json"
if [ ! -s "$PASSWORDS" ]; then
  (umask 077 && "$BIN/python" -c 'import json, secrets; print(json.dumps({"admin": secrets.token_urlsafe(12)}))' >"$PASSWORDS")
fi

export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-4}
export AIRFLOW__CORE__AUTH_MANAGER=airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$PASSWORDS"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="$AIRFLOW_URL/execution/"
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="$AIRFLOW_PORT"
export AIRFLOW__API__WORKERS=1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false MLFLOW_DISABLE_TELEMETRY=true
# co2cast's airflow_local_settings: the scheduler pre-imports the pipeline once, so the tasks it
# forks do not each import pandas, statsmodels, MLflow and GX (pipeline/preload.py).
export PYTHONPATH="$ROOT/deploy/airflow${PYTHONPATH:+:$PYTHONPATH}"

# start NAME COMMAND...: in its own session (process group), so `make down` stops it whole.
start() {
  local name=$1; shift
  setsid "$@" >"$STATE/logs/$name.log" 2>&1 < /dev/null &
  write_pid "$STATE/$name.pid" $!
}

stop_all() { bash "$ROOT/scripts/down.sh" >/dev/null 2>&1 || true; }

# wait_for NAME URL: until URL answers (any HTTP status below 500), or the process died.
wait_for() {
  local name=$1 url=$2 deadline=$((SECONDS + ${CO2CAST_UP_TIMEOUT:-180}))
  until curl -s -o /dev/null --max-time 5 -w '%{http_code}' "$url" | grep -q '^[234]'; do
    if ! alive "$name"; then
      echo "!! $name exited. Last lines of $STATE/logs/$name.log:" >&2
      tail -n 20 "$STATE/logs/$name.log" >&2
      stop_all; exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "!! $name did not answer at $url in time; see $STATE/logs/$name.log" >&2
      stop_all; exit 1
    fi
    sleep 1
  done
}

echo "==> Airflow database (log: $STATE/logs/airflow-db.log)"
"$BIN/airflow" db migrate >"$STATE/logs/airflow-db.log" 2>&1 || { tail -n 20 "$STATE/logs/airflow-db.log" >&2; exit 1; }

# Older stores were created without the experiment kind: tag them so the UI opens on runs.
"$BIN/python" - "$MLFLOW_DB" <<'EOF' >>"$STATE/logs/airflow-db.log" 2>&1 || true
import sys
from mlflow import MlflowClient
client = MlflowClient(tracking_uri=sys.argv[1])
experiment = client.get_experiment_by_name("co2cast")
if experiment is not None and experiment.tags.get("mlflow.experimentKind") != "custom_model_development":
    client.set_experiment_tag(experiment.experiment_id, "mlflow.experimentKind", "custom_model_development")
EOF

echo "==> starting MLflow and Airflow (logs: $STATE/logs/)"
# One worker: MLflow's default of four makes the UI take ~50 s to answer on a small machine.
start mlflow "$BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
  --backend-store-uri "$MLFLOW_DB" --registry-store-uri "$MLFLOW_DB" \
  --default-artifact-root "$CO2CAST_HOME/mlflow/artifacts"
start airflow-api-server "$BIN/airflow" api-server --host 127.0.0.1 --port "$AIRFLOW_PORT" --workers 1
# Log servers would listen on every interface; the api-server reads the task logs from disk.
start airflow-scheduler "$BIN/airflow" scheduler --skip-serve-logs
start airflow-dag-processor "$BIN/airflow" dag-processor
start airflow-triggerer "$BIN/airflow" triggerer --skip-serve-logs

wait_for mlflow "$MLFLOW_URL/health"
wait_for airflow-api-server "$AIRFLOW_URL/api/v2/monitor/health"

# New DAGs start paused: unpause them once the DAG processor has parsed them.
deadline=$((SECONDS + 120))
for dag in co2_ingest co2_forecast; do
  until "$BIN/airflow" dags unpause "$dag" -y >>"$STATE/logs/unpause.log" 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "!! $dag was not parsed; see $STATE/logs/airflow-dag-processor.log" >&2; stop_all; exit 1; }
    sleep 3
  done
done

experiment=$("$BIN/python" -c 'import sys; from mlflow import MlflowClient; e = MlflowClient(tracking_uri=sys.argv[1]).get_experiment_by_name("co2cast"); print(e.experiment_id if e else "")' "$MLFLOW_DB" 2>/dev/null || true)
mlflow_runs="$MLFLOW_URL/#/experiments${experiment:+/$experiment/runs}?workflowType=machine_learning"
{
  echo "Airflow UI:  $AIRFLOW_URL   (user admin, password: $("$BIN/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' "$PASSWORDS"))"
  echo "             SimpleAuthManager, development only; the password is in $PASSWORDS"
  echo "MLflow UI:   $mlflow_runs"
  echo "             models: $MLFLOW_URL/#/models"
  echo "stop with:   make down   (state and logs: $STATE)"
} >"$STATE/urls.txt"
cat >"$STATE/urls.env" <<EOF
AIRFLOW_URL=$AIRFLOW_URL
MLFLOW_URL=$MLFLOW_URL
MLFLOW_EXPERIMENT_URL=$mlflow_runs
AIRFLOW_PASSWORDS_FILE=$PASSWORDS
EOF
echo
cat "$STATE/urls.txt"
