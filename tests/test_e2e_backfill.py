"""A real backfill of ``co2_forecast`` through a running scheduler (LocalExecutor).

Starts ``airflow api-server`` (Airflow 3 workers talk to it), ``airflow scheduler`` and
``airflow dag-processor`` in a temporary AIRFLOW_HOME on a SQLite metadata database (Airflow 3
runs the LocalExecutor on SQLite, as ``airflow standalone`` does), forecasts as of 2014 from the
command line first, then backfills 2011-2013 (as-of years 2010-2012) and checks the forecasts
under each ``asof=``, that ``@champion`` and ``latest.json`` stayed on the 2014 forecast and agree,
and that the scorecard holds every backfilled forecast's scored years. Every process it starts is
stopped, also on failure.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import airflow_env
from tests.stack.scheduler import airflow_services, dag_runs, local_executor_settings
from tests.stack.stack import free_port

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
SERIES = "Canada:co2_per_capita"
SID = "canada.co2_per_capita"
BACKFILL = ("2011-01-01", "2013-12-31")  # yearly logical dates 2011, 2012, 2013 -> as of 2010, 2011, 2012
AS_OF_BACKFILLED = (2010, 2011, 2012)
LATEST_YEAR = 2014


def _run(env: dict[str, str], *command: str, timeout: float = 600) -> str:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _alive(processes: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    for name, process in processes.items():
        if process.poll() is not None:
            pytest.fail(f"airflow {name} exited with {process.returncode}:\n{(logs / f'{name}.log').read_text(errors='replace')[-3000:]}")


def _task_errors(root: Path) -> str:
    """The error lines of every task log (for a failure message)."""
    lines = []
    for path in sorted(root.rglob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if '"level":"error"' in line or "Error" in line:
                lines.append(f"{path.relative_to(root)}: {line[:600]}")
    return "\n".join(lines[-40:])


def test_backfill_through_a_scheduler(tmp_path: Path, owid_csv: Path) -> None:
    home, logs = tmp_path / "co2cast", tmp_path / "logs"
    logs.mkdir()
    env = airflow_env(
        tmp_path / "airflow",
        {
            "CO2CAST_HOME": str(home),
            "CO2CAST_SERIES": SERIES,
            "CO2CAST_DATA_DIRS": f"{tmp_path},{owid_csv.parent}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow/mlflow.db",
            **local_executor_settings(free_port(), parallelism=2, logs=logs),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        },
    )
    (home / "mlflow").mkdir(parents=True)
    co2cast = str(BIN / "co2cast")
    _run(env, str(BIN / "airflow"), "db", "migrate")
    _run(env, co2cast, "ingest", "--source", str(owid_csv))
    _run(env, co2cast, "forecast", "--as-of-year", str(LATEST_YEAR))
    store = home / "store"
    pointer_before = json.loads((store / "forecasts" / SID / "latest.json").read_text())
    assert pointer_before["as_of_year"] == LATEST_YEAR

    # Serialize the DAG and create the backfill before the services start: SQLite takes one
    # writer at a time, and the scheduler then picks the backfill's runs up.
    airflow = str(BIN / "airflow")
    _run(env, airflow, "dags", "reserialize")
    _run(env, airflow, "dags", "unpause", "co2_forecast")
    # One backfill run at a time: the test's MLflow store is a SQLite file.
    dates = ["--from-date", BACKFILL[0], "--to-date", BACKFILL[1]]
    _run(env, airflow, "backfill", "create", "--dag-id", "co2_forecast", *dates, "--max-active-runs", "1")
    with airflow_services(env, logs) as processes:
        deadline = time.monotonic() + 600
        while True:
            _alive(processes, logs)
            backfilled = [run for run in dag_runs(env, "co2_forecast") if run["run_id"].startswith("backfill__")]
            states = sorted(run["state"] for run in backfilled)
            if len(backfilled) == len(AS_OF_BACKFILLED) and all(s in ("success", "failed") for s in states):
                break
            assert time.monotonic() < deadline, f"backfill not finished in time: {backfilled}"
            time.sleep(5)
        assert states == ["success"] * len(AS_OF_BACKFILLED), f"{backfilled}\n{_task_errors(logs / 'tasks')}"

    # A forecast under every backfilled as-of year, each read through its manifest.
    for year in AS_OF_BACKFILLED:
        manifests = sorted((store / "forecasts" / SID / f"asof={year}").glob("*/manifest.json"))
        assert len(manifests) == 1, f"as of {year}: {manifests}"
        manifest = json.loads(manifests[0].read_text())
        assert manifest["as_of_year"] == year and manifest["first_year"] == year + 1
        assert manifest["airflow"]["dag_id"] == "co2_forecast"

    # latest.json and @champion stayed on the 2014 forecast and agree.
    pointer = json.loads((store / "forecasts" / SID / "latest.json").read_text())
    assert pointer == pointer_before
    import mlflow

    # Both URIs explicit: an earlier test in this process may have set a global registry URI.
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias(f"co2cast.{SID}", "champion")
    manifest = json.loads((store / pointer["manifest"]).read_text())
    assert str(champion.version) == str(manifest["model_version"]) == str(pointer["model_version"])
    assert manifest["as_of_year"] == LATEST_YEAR

    # The scorecard: each backfilled forecast scored for the years up to the data's last one.
    card = pd.read_parquet(io.BytesIO((store / "scorecards" / f"{SID}.parquet").read_bytes()))
    counts = card.groupby("as_of_year").size().to_dict()
    assert {year: counts.get(year, 0) for year in AS_OF_BACKFILLED} == {year: LATEST_YEAR - year for year in AS_OF_BACKFILLED}
    assert (card["horizon"] == card["year"] - card["as_of_year"]).all()
