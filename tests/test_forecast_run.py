"""Resolving a forecast run: vintage, as-of year rules, series, run keys."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipeline import forecast, ingest
from pipeline.config import Settings
from pipeline.series import SeriesError
from pipeline.store import LocalStore


@pytest.fixture
def settings(tmp_path: Path, small_owid: Path) -> Settings:
    settings = Settings(home=tmp_path / "home", store_uri=(tmp_path / "store").as_uri())
    ingest.ingest(settings, LocalStore(tmp_path / "store"), str(small_owid))
    return settings


def test_as_of_year_rules(settings: Settings) -> None:
    assert forecast.resolve_run(settings, as_of_year=1990)["as_of_year"] == 1990  # explicit wins
    assert forecast.resolve_run(settings)["as_of_year"] == 2014  # data-triggered / manual: latest year
    scheduled = forecast.resolve_run(settings, logical_date=dt.datetime(2001, 1, 1, 6, tzinfo=dt.UTC), triggered_by_data=False)
    assert scheduled["as_of_year"] == 2000  # backfill in year Y forecasts from Y - 1
    late = forecast.resolve_run(settings, logical_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), triggered_by_data=False)
    assert late["as_of_year"] == 2014  # capped at the data the vintage has


def test_run_keys_are_stable_and_distinct(settings: Settings) -> None:
    run = forecast.resolve_run(settings)
    assert [s["series_id"] for s in run["series"]] == ["canada.co2_per_capita", "world.co2"]
    again = forecast.resolve_run(settings)
    assert [s["run_key"] for s in again["series"]] == [s["run_key"] for s in run["series"]]
    older = forecast.resolve_run(settings, as_of_year=2000)
    assert {s["run_key"] for s in older["series"]}.isdisjoint({s["run_key"] for s in run["series"]})
    other = forecast.run_key("canada.co2_per_capita", run["vintage"], 2014, "another-config")
    assert other not in {s["run_key"] for s in run["series"]}


def test_series_spec_and_refusals(settings: Settings, tmp_path: Path) -> None:
    chosen = forecast.resolve_run(settings, series="Germany:co2,france.co2_per_capita")
    assert [s["series_id"] for s in chosen["series"]] == ["germany.co2", "france.co2_per_capita"]
    with pytest.raises(SeriesError, match="Canada"):
        forecast.resolve_run(settings, series="Canadaa:co2")
    with pytest.raises(ValueError, match="not curated"):
        forecast.resolve_run(settings, vintage="0000000000000000")
    with pytest.raises(ValueError, match="horizon end"):
        forecast.resolve_run(settings, as_of_year=2050)
    empty = Settings(home=tmp_path / "empty", store_uri=(tmp_path / "empty-store").as_uri())
    with pytest.raises(ValueError, match="run co2_ingest"):
        forecast.resolve_run(empty)
