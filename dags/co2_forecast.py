"""
### co2_forecast

Runs when `co2_ingest` updates the Asset `co2_emissions_curated`, and yearly (so a backfill
over years reproduces what would have been forecast at each point in time).

1. `resolve_run`: the vintage (param `vintage`, else the one the triggering asset event names,
   else the latest), the as-of year (the `as_of_year` param wins; a scheduled or backfill run in
   year Y uses Y-1; any other run uses the vintage's latest year), the series (param `series`:
   `default`, `all`, or `Canada:co2_per_capita,World:co2`) and the run key of each series.
2. `forecast_series`, mapped over the series, one task per series (`pipeline.tasks.forecast_series`),
   so one failing series fails its own task and does not hold back the others:
   - train (`pipeline.tasks.train_series`): diagnostics, rolling-origin backtest of every
     candidate, fits, MLflow runs, registration with `@arima`, `@lstm` and `@champion`;
   - publish (`pipeline.tasks.publish_series`): forecast with the registered champion to the
     horizon end, gate the table with the GX suite `forecast_output`, publish to
     `forecasts/<series_id>/` atomically, then score every earlier forecast of the series against
     this vintage (`scorecards/<series_id>.parquet`).
   A retry after a transient failure (S3, a busy MLflow store) repeats neither: a trained run key
   is reused from MLflow and a published one is skipped with one read. At most
   `CO2CAST_MAX_ACTIVE_SERIES` run at once (default 2, `max_active_tis_per_dag`).
3. `summarize`: one line per series, read from what was published for this run's keys.

Rerunning the same run key creates no MLflow version and rewrites no file.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from pipeline.config import max_active_series, task_timeout

# Assets are identified by name: this is the Asset that co2_ingest's curate_vintage updates.
CURATED = Asset("co2_emissions_curated")

# Task bodies call pipeline.tasks through pipeline.runner, which reads Airflow's context, maps
# permanent errors to "fail, no retry" and transient ones to a retry, and returns plain dicts.


@dag(
    dag_id="co2_forecast",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 6 1 1 *", timezone="UTC"), assets=[CURATED]),
    start_date=pendulum.datetime(2000, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2), "execution_timeout": task_timeout()},
    params={
        "as_of_year": Param(None, type=["null", "integer"], description="last year of data to use"),
        "series": Param(None, type=["null", "string"], description="default | all | Entity:variable,…"),
        "vintage": Param(None, type=["null", "string"], description="a curated vintage id; default: the latest"),
    },
    doc_md=__doc__,
    tags=["co2cast", "forecast"],
)
def co2_forecast() -> None:
    # multiple_outputs=False: a task annotated as returning a dict would otherwise also push each
    # key as its own XCom (one more call to the API server per key); nothing reads them by key.
    @task(multiple_outputs=False)
    def resolve_run() -> dict[str, Any]:
        from pipeline import runner, tasks

        return runner.call(tasks.plan_run, runner.trigger(CURATED))

    # Only series with work left: an unchanged rerun maps no task (the summary still lists them).
    @task
    def list_series(run: dict[str, Any]) -> list[dict[str, Any]]:
        from pipeline import runner, tasks

        return runner.call(tasks.pending_series, run)

    # One task per series, train then publish: half the task instances of a task per step, whose
    # scheduling and start-up cost CPU on a two-core machine. CO2CAST_MAX_ACTIVE_SERIES (default 2:
    # one per core of a LocalExecutor machine); raise it with Celery/Kubernetes workers.
    @task(max_active_tis_per_dag=max_active_series(), multiple_outputs=False)
    def forecast_series(item: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
        from pipeline import runner, tasks

        return runner.call(tasks.forecast_series, run, item, airflow=runner.airflow_ids())

    # all_done: report every series, published or not; fails when one went unpublished.
    @task(trigger_rule="all_done")
    def summarize(run: dict[str, Any]) -> list[dict[str, Any]]:
        from pipeline import runner, tasks

        return runner.call(tasks.summarize_run, run)

    run = resolve_run()
    forecast_series.partial(run=run).expand(item=list_series(run)) >> summarize(run)


co2_forecast_dag = co2_forecast()
