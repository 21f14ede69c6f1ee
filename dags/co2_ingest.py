"""
### co2_ingest

Nightly: fetch the emissions release named by `CO2CAST_SOURCE` (or the `source` param), stop
early when its bytes were already curated (a quarantined release is gated again), snapshot the
raw bytes (content-addressed by sha256), gate them with the Great Expectations suites in `expectations/`, and curate them
into `curated/<vintage>/` in the object store. `curated/latest.json` moves last; the Asset
`co2_emissions_curated` is updated with the vintage id and its latest year, which starts
`co2_forecast`.

A rejected release is quarantined in `quarantine/<vintage>/` (input, GX result, report) and the
`validate_raw` task fails with the summary; nothing is curated and the previous vintage stays.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, Param, dag, task

from pipeline.config import task_timeout

CURATED = Asset("co2_emissions_curated")


@dag(
    dag_id="co2_ingest",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5), "execution_timeout": task_timeout()},
    params={"source": Param(None, type=["null", "string"], description="path or URL of the release; default CO2CAST_SOURCE")},
    doc_md=__doc__,
    tags=["co2cast", "ingest"],
)
def co2_ingest() -> None:
    # multiple_outputs=False: the dicts go to XCom whole, not also key by key (see co2_forecast).
    @task(multiple_outputs=False)
    def fetch_source() -> dict[str, Any]:
        from pipeline import runner, tasks

        return runner.call(tasks.fetch_source, runner.param("source"))

    @task.short_circuit
    def check_new_vintage(fetched: dict[str, Any]) -> bool:
        print(fetched["message"])
        return bool(fetched["changed"])

    @task(multiple_outputs=False)
    def snapshot_raw(fetched: dict[str, Any]) -> dict[str, Any]:
        from pipeline import runner, tasks

        return runner.call(tasks.snapshot_raw, fetched)

    @task(multiple_outputs=False)
    def validate_raw(snapshot: dict[str, Any]) -> dict[str, Any]:
        from pipeline import runner, tasks

        return runner.call(tasks.validate_raw, snapshot)

    @task(outlets=[CURATED], multiple_outputs=False)
    def curate_vintage(validated: dict[str, Any]) -> dict[str, Any]:
        from pipeline import runner, tasks

        return runner.call(tasks.curate_vintage, validated, outlet=CURATED)

    fetched = fetch_source()
    snapshot = snapshot_raw(fetched)
    check_new_vintage(fetched) >> snapshot
    curate_vintage(validate_raw(snapshot))


co2_ingest_dag = co2_ingest()
