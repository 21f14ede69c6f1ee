"""The run key follows the series' own history; the `all` set with and without aggregates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.plan import plan_run, without_aggregates


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
