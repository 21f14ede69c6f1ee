"""Preparing a series: truncation to the as-of year and every refusal with its message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import EMBEDDED_SOURCE
from pipeline.ingest import read_tidy_file
from pipeline.series import DEFAULT_SERIES, SeriesError, prepare_series, resolve_series, series_id

OWID_CSV = EMBEDDED_SOURCE  # the repository's own OWID release (gzip)


def _rows(entity: str, variable: str, years: range, skip: tuple[int, ...] = (), nan: tuple[int, ...] = ()) -> list[dict]:
    return [
        {
            "entity": entity,
            "iso_code": entity[:3].upper(),
            "year": y,
            "variable": variable,
            "value": np.nan if y in nan else float(y - 1900),
        }
        for y in years
        if y not in skip
    ]


@pytest.fixture
def tidy() -> pd.DataFrame:
    rows = (
        _rows("Canada", "co2_per_capita", range(1900, 2021), nan=(1900, 1901, 1902))
        + _rows("World", "co2", range(1900, 2021))
        + _rows("Gapland", "co2_per_capita", range(1900, 2021), skip=(1950, 1951, 1980))
        + _rows("Tiny", "co2_per_capita", range(2000, 2021))
        + _rows("Canada", "co2", range(1900, 2021))
    )
    return pd.DataFrame(rows)


def test_series_id() -> None:
    assert series_id("Canada", "co2_per_capita") == "canada.co2_per_capita"
    assert series_id("United States", "co2 per-capita") == "united_states.co2_per_capita"
    assert series_id("Côte d'Ivoire", "co2") == "c_te_d_ivoire.co2"


def test_truncates_to_as_of_and_drops_leading_nans(tidy: pd.DataFrame) -> None:
    series = prepare_series(tidy, "Canada", "co2_per_capita", as_of_year=2010)
    assert series.series_id == "canada.co2_per_capita"
    assert series.first_year == 1903 and series.last_year == 2010
    np.testing.assert_array_equal(series.years, np.arange(1903, 2011))
    np.testing.assert_array_equal(series.values, np.arange(3, 111, dtype=float))
    assert series.years.dtype == np.int64 and series.values.dtype == np.float64


def test_gap_is_refused_naming_missing_years(tidy: pd.DataFrame) -> None:
    with pytest.raises(SeriesError, match=r"gapland\.co2_per_capita.*gap.*1950-1951, 1980"):
        prepare_series(tidy, "Gapland", "co2_per_capita", as_of_year=2020)


def test_gap_after_as_of_is_irrelevant(tidy: pd.DataFrame) -> None:
    rows = tidy.loc[~((tidy["entity"] == "World") & (tidy["year"] == 2019))]
    assert prepare_series(rows, "World", "co2", as_of_year=2018).last_year == 2018
    with pytest.raises(SeriesError, match="no value for 2019"):
        prepare_series(rows, "World", "co2", as_of_year=2020)


def test_inner_nan_counts_as_a_gap(tidy: pd.DataFrame) -> None:
    rows = tidy.copy()
    rows.loc[(rows["entity"] == "World") & (rows["year"] == 1960), "value"] = np.nan
    with pytest.raises(SeriesError, match="no value for 1960"):
        prepare_series(rows, "World", "co2", as_of_year=2020)


def test_too_short_is_refused(tidy: pd.DataFrame) -> None:
    with pytest.raises(SeriesError, match=r"only 21 yearly values \(2000-2020\).*fewer than the 30 needed"):
        prepare_series(tidy, "Tiny", "co2_per_capita", as_of_year=2020)
    assert len(prepare_series(tidy, "Tiny", "co2_per_capita", as_of_year=2020, min_points=20)) == 21


def test_unknown_names_suggest_close_ones(tidy: pd.DataFrame) -> None:
    with pytest.raises(SeriesError, match=r"unknown entity 'Canda'; did you mean 'Canada'"):
        prepare_series(tidy, "Canda", "co2_per_capita", as_of_year=2020)
    with pytest.raises(SeriesError, match=r"unknown entity 'canada'; did you mean 'Canada'"):
        prepare_series(tidy, "canada", "co2_per_capita", as_of_year=2020)
    with pytest.raises(SeriesError, match=r"unknown variable 'co2_per_capital'; did you mean 'co2_per_capita'"):
        prepare_series(tidy, "Canada", "co2_per_capital", as_of_year=2020)
    with pytest.raises(SeriesError, match=r"unknown entity 'Atlantis'$"):
        prepare_series(tidy, "Atlantis", "co2", as_of_year=2020)


def test_nothing_before_as_of(tidy: pd.DataFrame) -> None:
    with pytest.raises(SeriesError, match="no values up to the as-of year 1950"):
        prepare_series(tidy, "Tiny", "co2_per_capita", as_of_year=1950)


def test_duplicate_years_refused(tidy: pd.DataFrame) -> None:
    rows = pd.concat([tidy, tidy.iloc[[0]]], ignore_index=True)
    with pytest.raises(SeriesError, match=r"more than one value for the year\(s\) \[1900\]"):
        prepare_series(rows, "Canada", "co2_per_capita", as_of_year=2020)


def test_resolve_series(tidy: pd.DataFrame) -> None:
    assert resolve_series(tidy, "default") == DEFAULT_SERIES
    assert resolve_series(tidy, "all") == [("Canada", "co2"), ("World", "co2"), ("Canada", "co2_per_capita")]
    assert resolve_series(tidy, "all", min_points=20) == [
        ("Canada", "co2"),
        ("World", "co2"),
        ("Canada", "co2_per_capita"),
        ("Tiny", "co2_per_capita"),
    ]
    assert resolve_series(tidy, "World:co2, canada.co2_per_capita,World:co2") == [("World", "co2"), ("Canada", "co2_per_capita")]
    with pytest.raises(SeriesError, match=r"no series 'Wrld:co2'; did you mean 'world\.co2'"):
        resolve_series(tidy, "Wrld:co2")
    with pytest.raises(SeriesError, match=r"no series with id 'mars\.co2'"):
        resolve_series(tidy, "mars.co2")
    with pytest.raises(SeriesError, match="names no series"):
        resolve_series(tidy, " , ")


def test_study_series_from_owid() -> None:
    tidy = read_tidy_file(OWID_CSV)
    series = prepare_series(tidy, "Canada", "co2_per_capita", as_of_year=2014)
    assert (series.first_year, series.last_year, len(series)) == (1800, 2014, 215)
    assert prepare_series(tidy, "Canada", "co2_per_capita", as_of_year=1999).last_year == 1999
