"""The run key follows the series' own history; the `all` set with and without aggregates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core import history_hash
from pipeline.plan import PlanError, plan_run, series_data_ids, without_aggregates
from pipeline.series import prepare_series


def _tidy(entities: dict[str, str | None], years: range = range(1960, 2001)) -> pd.DataFrame:
    rows = []
    for n, (entity, code) in enumerate(entities.items()):
        for year in years:
            value = 10.0 + n + 0.1 * (year - years[0])
            row = {"entity": entity, "iso_code": code, "year": year, "variable": "co2", "value": value}
            rows.append({**row, "provisional": year == years[-1]})
    return pd.DataFrame(rows)


ENTITIES = {"Canada": "CAN", "World": "OWID_WRL", "Kosovo": "OWID_KOS", "Africa": None}


def _plan(tidy: pd.DataFrame, spec: str = "Canada:co2,World:co2", as_of_year: int = 1995):
    return plan_run(tidy, vintage="v", as_of_year=as_of_year, series_spec=spec, horizon_end=2050, cfg_hash="c", min_points=30)


def test_the_run_key_changes_with_the_series_history_only() -> None:
    tidy = _tidy(ENTITIES)
    keys = {item.series_id: item.run_key for item in _plan(tidy).series}
    spec = "Canada:co2,World:co2"
    other = plan_run(tidy, vintage="another", as_of_year=1995, series_spec=spec, horizon_end=2050, cfg_hash="c", min_points=30)
    assert {item.series_id: item.run_key for item in other.series} == keys  # a new vintage id alone changes nothing

    revised = tidy.copy()
    revised.loc[(revised["entity"] == "Canada") & (revised["year"] == 1980), "value"] *= 1.0 + 1e-12
    after = {item.series_id: item.run_key for item in _plan(revised).series}
    assert after["canada.co2"] != keys["canada.co2"] and after["world.co2"] == keys["world.co2"]

    future = tidy.copy()  # a change after the as-of year is not part of the history it uses
    future.loc[(future["entity"] == "Canada") & (future["year"] == 1999), "value"] = np.pi
    assert {item.series_id: item.run_key for item in _plan(future).series} == keys


def test_the_provisional_flag_of_the_as_of_year_enters_the_run_key() -> None:
    tidy = _tidy(ENTITIES)
    final = tidy.assign(provisional=False)
    assert [i.run_key for i in _plan(tidy, as_of_year=2000).series] != [i.run_key for i in _plan(final, as_of_year=2000).series]
    assert [i.run_key for i in _plan(tidy).series] == [i.run_key for i in _plan(final).series]  # 1995 was never provisional


def test_all_without_aggregates_keeps_countries_and_kosovo() -> None:
    tidy = _tidy(ENTITIES)
    everything = [item.entity for item in _plan(tidy, "all").series]
    countries = [item.entity for item in _plan(without_aggregates(tidy), "all").series]
    assert sorted(everything) == sorted(ENTITIES)
    assert sorted(countries) == ["Canada", "Kosovo"]


def test_the_run_key_hashes_the_modelled_stretch_only() -> None:
    """A gap leaves the early years out of the model, so a revision there does not retrain."""
    tidy = _tidy(ENTITIES, years=range(1900, 2001))
    gapped = tidy.loc[~((tidy["entity"] == "Canada") & tidy["year"].isin([1930, 1931]))].reset_index(drop=True)
    keys = {item.series_id: item.run_key for item in _plan(gapped).series}
    canada = (gapped["entity"] == "Canada") & (gapped["variable"] == "co2")

    early = gapped.copy()  # a revision before the gap: not what the model saw
    early.loc[canada & (early["year"] == 1910), "value"] += 5.0
    assert {item.series_id: item.run_key for item in _plan(early).series} == keys

    modelled = gapped.copy()  # a revision inside the modelled stretch 1932-1995: retrain
    modelled.loc[canada & (modelled["year"] == 1950), "value"] += 5.0
    after = {item.series_id: item.run_key for item in _plan(modelled).series}
    assert after["canada.co2"] != keys["canada.co2"] and after["world.co2"] == keys["world.co2"]

    # Filling the gap makes the whole history the modelled one: a new key.
    assert {item.series_id: item.run_key for item in _plan(tidy).series}["canada.co2"] != keys["canada.co2"]


def test_plan_and_training_hash_the_same_history() -> None:
    """The plan's data id is the history hash of exactly what prepare_series hands the model."""
    tidy = _tidy(ENTITIES, years=range(1900, 2001))
    gapped = tidy.loc[~((tidy["entity"] == "Canada") & tidy["year"].isin([1930, 1931, 1960]))].reset_index(drop=True)
    pairs = [("Canada", "co2"), ("World", "co2")]
    ids = series_data_ids(gapped, pairs, 1995)
    for entity, variable in pairs:
        series = prepare_series(gapped, entity, variable, as_of_year=1995)
        assert ids[(entity, variable)] == history_hash(series.years, series.values, provisional_last=False)
    assert prepare_series(gapped, "Canada", "co2", as_of_year=1995).first_year == 1961
    # The as-of year flagged provisional enters both the same way.
    series = prepare_series(gapped, "Canada", "co2", as_of_year=2000)
    assert series_data_ids(gapped, pairs, 2000)[("Canada", "co2")] == history_hash(series.years, series.values, provisional_last=True)


def test_all_includes_a_series_whose_recent_stretch_is_long_enough() -> None:
    tidy = _tidy(ENTITIES, years=range(1900, 2001))
    # Canada misses 1960 (stretch 1961-1995: 35 years); Kosovo misses 1970 (stretch 1971-1995: 25 years).
    gapped = tidy.loc[~(((tidy["entity"] == "Canada") & (tidy["year"] == 1960)) | ((tidy["entity"] == "Kosovo") & (tidy["year"] == 1970)))]
    assert sorted(item.entity for item in _plan(gapped, "all").series) == ["Africa", "Canada", "World"]


def test_an_as_of_year_before_the_data_names_the_years_there_are() -> None:
    """``--as-of-year 1700`` said only 'before the first year of vintage v': now which years a run may take."""
    tidy = _tidy(ENTITIES)
    with pytest.raises(
        PlanError,
        match=r"^as-of year 1700 is before the first year 1960 of vintage v: give a year from 1960 to 2000 \(leave it out for 2000\)$",
    ):
        _plan(tidy, as_of_year=1700)
