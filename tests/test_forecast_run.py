"""Planning a forecast run: the as-of rule, vintage choice, series, run keys, payloads at XCom."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipeline import ingest, tasks
from pipeline.config import Settings
from pipeline.core import run_key
from pipeline.payloads import PayloadError, RunPlan, RunTrigger, WorkItem
from pipeline.plan import PlanError, as_of_year_for, normalize_run_type
from pipeline.series import SeriesError
from pipeline.store import LocalStore

JAN_2001 = dt.datetime(2001, 1, 1, 6, tzinfo=dt.UTC)


@pytest.fixture
def settings(tmp_path: Path, small_owid: Path) -> Settings:
    settings = Settings(home=tmp_path / "home", store_uri=(tmp_path / "store").as_uri())
    ingest.ingest(settings, LocalStore(tmp_path / "store"), str(small_owid))
    return settings


@pytest.mark.parametrize(
    ("run_type", "logical_date", "requested", "expected"),
    [
        ("scheduled", JAN_2001, None, 2000),  # a yearly run in 2001 forecasts from 2000
        ("backfill", dt.datetime(1991, 1, 1, tzinfo=dt.UTC), None, 1990),  # a backfill reproduces that point in time
        ("backfill", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), None, 2014),  # capped at the vintage's data
        ("manual", JAN_2001, None, 2014),  # by hand: the vintage's latest year
        ("asset_triggered", JAN_2001, None, 2014),  # new data: its latest year
        ("cli", None, None, 2014),
        ("scheduled", None, None, 2014),  # no logical date: nothing to go back from
        ("scheduled", JAN_2001, 1990, 1990),  # an explicit year wins over every rule
        ("asset_triggered", None, 1995, 1995),
        ("DagRunType.BACKFILL_JOB", JAN_2001, None, 2000),  # the enum's str() form
    ],
)
def test_as_of_rule(run_type: str, logical_date: dt.datetime | None, requested: int | None, expected: int) -> None:
    assert as_of_year_for(run_type, logical_date, latest_year=2014, requested=requested) == expected


def test_run_type_normalization_accepts_airflow_enums() -> None:
    from airflow.utils.types import DagRunType

    assert normalize_run_type(DagRunType.BACKFILL_JOB) == "backfill"
    assert normalize_run_type(DagRunType.ASSET_TRIGGERED) == "asset_triggered"
    assert normalize_run_type("DagRunType.SCHEDULED") == "scheduled"


def test_plan_follows_the_trigger(settings: Settings) -> None:
    assert tasks.plan_run(settings, RunTrigger(as_of_year=1990)).as_of_year == 1990
    assert tasks.plan_run(settings).as_of_year == 2014
    assert tasks.plan_run(settings, RunTrigger(run_type="scheduled", logical_date=JAN_2001)).as_of_year == 2000
    # A plain dict, as it comes back from XCom, is validated into the same trigger.
    assert tasks.plan_run(settings, {"run_type": "backfill", "logical_date": "1991-01-01T00:00:00Z"}).as_of_year == 1990
    vintage = tasks.latest_vintage(settings)["vintage"]
    assert tasks.plan_run(settings, RunTrigger(run_type="asset_triggered", asset_vintage=vintage)).vintage == vintage
    with pytest.raises(PlanError, match="not curated"):
        tasks.plan_run(settings, RunTrigger(run_type="asset_triggered", asset_vintage="ffffffffffffffff"))


def test_run_keys_are_stable_and_distinct(settings: Settings) -> None:
    run = tasks.plan_run(settings)
    assert [s.series_id for s in run.series] == ["canada.co2_per_capita", "world.co2"]
    again = tasks.plan_run(settings)
    assert [s.run_key for s in again.series] == [s.run_key for s in run.series]
    older = tasks.plan_run(settings, RunTrigger(as_of_year=2000))
    assert {s.run_key for s in older.series}.isdisjoint({s.run_key for s in run.series})
    other = run_key("canada.co2_per_capita", run.vintage, 2014, "another-config")
    assert other not in {s.run_key for s in run.series}


def test_plan_crosses_xcom_as_a_plain_dict(settings: Settings) -> None:
    import json

    run = tasks.plan_run(settings)
    wire = json.loads(json.dumps(run.to_xcom()))  # what XCom stores
    assert RunPlan.of(wire) == run
    assert WorkItem.of(wire["series"][0]) == run.series[0]
    broken = {**wire, "as_of_year": "last year"}
    with pytest.raises(PayloadError, match="as_of_year"):
        RunPlan.of(broken)
    with pytest.raises(PayloadError, match="surprise: Extra inputs"):
        RunPlan.of({**wire, "surprise": 1})


def test_series_spec_and_refusals(settings: Settings, tmp_path: Path) -> None:
    chosen = tasks.plan_run(settings, RunTrigger(series="Germany:co2,france.co2_per_capita"))
    assert [s.series_id for s in chosen.series] == ["germany.co2", "france.co2_per_capita"]
    with pytest.raises(SeriesError, match="Canada"):
        tasks.plan_run(settings, RunTrigger(series="Canadaa:co2"))
    with pytest.raises(PlanError, match="not curated"):
        tasks.plan_run(settings, RunTrigger(vintage="0000000000000000"))
    # A param typed by a person is checked before it becomes a store key ('invalid object key' said nothing to act on).
    for typed in ("../../etc", "4c65ff5f1d6d21a5/..", "latest", "4C65FF5F1D6D21A5"):
        with pytest.raises(PlanError, match=r"is not a vintage id: 16 hex digits, as `co2cast status` prints"):
            tasks.plan_run(settings, RunTrigger(vintage=typed))
    with pytest.raises(PlanError, match="horizon end"):
        tasks.plan_run(settings, RunTrigger(as_of_year=2050))
    with pytest.raises(PlanError, match="before the first year"):
        tasks.plan_run(settings, RunTrigger(as_of_year=1000))
    empty = Settings(home=tmp_path / "empty", store_uri=(tmp_path / "empty-store").as_uri())
    with pytest.raises(PlanError, match="run co2_ingest"):
        tasks.plan_run(empty)
