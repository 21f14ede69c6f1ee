"""End to end: `co2_ingest` runs for real under `airflow dags test`, on the local store and on S3.

Three runs per backend: the shared OWID file is curated; the same bytes again add no vintage;
a bad file is quarantined, the run fails, and `curated/latest.json` does not move.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.ingest import LATEST_KEY, vintage_id
from tests.conftest import run_dag

pytestmark = pytest.mark.e2e


def test_ingest_dag_curates_skips_and_quarantines(dag_backend, airflow_home: Path, owid_csv: Path, tmp_path: Path) -> None:
    env, store = dag_backend
    vintage, digest = vintage_id(owid_csv.read_bytes())

    first = run_dag(airflow_home, "co2_ingest", {**env, "CO2CAST_SOURCE": str(owid_csv)})
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    latest = store.read_json(LATEST_KEY)
    assert latest["vintage"] == vintage and latest["sha256"] == digest and latest["latest_year"] == 2014
    assert store.read_bytes(f"raw/{vintage}/{owid_csv.name}") == owid_csv.read_bytes()
    assert store.read_json(f"raw/{vintage}/meta.json")["size"] == owid_csv.stat().st_size
    assert store.exists(f"curated/{vintage}/emissions.parquet")
    keys_after_first = {k: store.read_bytes(k) for k in store.list()}

    second = run_dag(airflow_home, "co2_ingest", {**env, "CO2CAST_SOURCE": str(owid_csv)})
    assert second.returncode == 0, second.stdout[-4000:]
    assert "source unchanged" in second.stdout + second.stderr
    assert {k: store.read_bytes(k) for k in store.list()} == keys_after_first, "an unchanged source must write nothing"

    bad = tmp_path / "owid-bad.csv"
    bad.write_text(owid_csv.read_text().replace(",Canada,1990,", ",Canada,2999,"))
    bad_vintage, _ = vintage_id(bad.read_bytes())
    third = run_dag(airflow_home, "co2_ingest", {**env, "CO2CAST_SOURCE": str(bad)})
    assert third.returncode != 0, "a rejected release must fail the run"
    assert "rejected and quarantined" in third.stdout + third.stderr
    # The task log shows the message as an error line; the traceback under it is Airflow's alone.
    assert "direct cause of the following exception" not in third.stdout + third.stderr
    assert any("[pipeline.runner]" in line and "rejected and quarantined" in line for line in (third.stdout + third.stderr).splitlines())
    assert "max_value" in store.read_bytes(f"quarantine/{bad_vintage}/report.md").decode()
    assert store.read_bytes(LATEST_KEY) == keys_after_first[LATEST_KEY]
    assert not any(k.startswith(f"curated/{bad_vintage}/") for k in store.list())
