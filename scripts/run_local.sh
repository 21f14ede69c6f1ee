#!/usr/bin/env bash
# `make run`: the main job through Airflow on the embedded defaults (no Docker, no servers).
# Airflow's own log goes to a file; a short summary is printed at the end.
set -euo pipefail
: "${CO2CAST_HOME:?run through make}"
BIN=.venv/bin
logs="$CO2CAST_HOME/logs"
mkdir -p "$logs"
stamp=$(date -u +%Y%m%dT%H%M%SZ)

run_step() {
  local name=$1; shift
  local log="$logs/$stamp-$name.log"
  echo "==> $name (log: $log)"
  if ! "$@" >"$log" 2>&1; then
    echo "!! $name failed. Last lines of $log:" >&2
    grep -E "ERROR|Error|error:|rejected|Exception" "$log" | tail -n 20 >&2 || tail -n 30 "$log" >&2
    exit 1
  fi
}

# Fail in seconds, not after Airflow's retries, when the source cannot be reached.
echo "==> source: ${CO2CAST_SOURCE:-(the embedded OWID release, data up to 2014)}"
"$BIN/co2cast" check-source || exit 1
# Two first runs on one home would migrate the same database at once (a traceback): one at a time.
run_step airflow-db flock "$CO2CAST_HOME/.airflow-migrate.lock" "$BIN/airflow" db migrate
run_step co2_ingest "$BIN/airflow" dags test co2_ingest
grep -h "source unchanged\|new vintage" "$logs/$stamp-co2_ingest.log" | grep -v "Returned value" | tail -n 1 || true
if [ -f dags/co2_forecast.py ]; then
  run_step co2_forecast "$BIN/airflow" dags test co2_forecast
fi
echo
"$BIN/co2cast" summary
