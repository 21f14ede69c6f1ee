"""Preparing a series: truncation to the as-of year and every refusal with its message."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from pipeline import series as series_module
from pipeline.config import EMBEDDED_SOURCE
from pipeline.ingest import read_tidy_file
from pipeline.series import (
    DEFAULT_SERIES,
    LeftOut,
    SeriesError,
    StaleSeries,
    beyond_bounds,
    falls_to_floor,
    prepare_series,
    resolve_series,
    series_id,
)

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


def test_a_gap_keeps_the_stretch_after_the_last_gap_and_records_what_was_left_out(tidy: pd.DataFrame) -> None:
    # Gapland misses 1950-1951 and 1980: the stretch after the last gap, 1981-2020, is modelled.
    series = prepare_series(tidy, "Gapland", "co2_per_capita", as_of_year=2020)
    np.testing.assert_array_equal(series.years, np.arange(1981, 2021))
    np.testing.assert_array_equal(series.values, np.arange(81, 121, dtype=float))
    assert series.left_out == LeftOut(first_year=1900, last_year=1979, n_values=78, gap_first=1980, gap_last=1980)
    assert series.describe_history() == "modelled 1981-2020; left out 1900-1979 (78 values) before a gap in 1980"
    assert LeftOut.from_dict(series.left_out.to_dict()) == series.left_out
    # As of 1979 the last gap is 1950-1951, and 1952-1979 is too short for 30 points.
    with pytest.raises(
        SeriesError,
        match=r"^gapland\.co2_per_capita: only 28 yearly values \(1952-1979\) after the gap in 1950-1951 up to 1979, "
        r"fewer than the 30 needed; the 50 values of 1900-1949 before the gap",
    ):
        prepare_series(tidy, "Gapland", "co2_per_capita", as_of_year=1979)
    assert prepare_series(tidy, "Gapland", "co2_per_capita", as_of_year=1979, min_points=28).first_year == 1952
    # Without a gap nothing is left out.
    whole = prepare_series(tidy, "World", "co2", as_of_year=2020)
    assert whole.left_out is None and whole.describe_history() == "modelled 1900-2020"


def test_gap_after_as_of_is_irrelevant(tidy: pd.DataFrame) -> None:
    rows = tidy.loc[~((tidy["entity"] == "World") & (tidy["year"] == 2019))]
    assert prepare_series(rows, "World", "co2", as_of_year=2018).left_out is None
    # As of 2020 the gap is the year before: a stretch of one value, refused with the gap named.
    with pytest.raises(SeriesError, match=r"only 1 yearly value \(2020\) after the gap in 2019 up to 2020, fewer than the 30"):
        prepare_series(rows, "World", "co2", as_of_year=2020)


def test_a_missing_last_year_is_a_stale_end_not_a_gap(tidy: pd.DataFrame) -> None:
    rows = tidy.loc[~((tidy["entity"] == "World") & (tidy["year"] == 2020))]
    with pytest.raises(StaleSeries, match=r"world\.co2: its data end in 2019, before the as-of year 2020"):
        prepare_series(rows, "World", "co2", as_of_year=2020)
    # A gap earlier does not change that: stale is what the person must know first.
    gapped = rows.loc[~((rows["entity"] == "World") & (rows["year"] == 1960))]
    with pytest.raises(StaleSeries, match="its data end in 2019"):
        prepare_series(gapped, "World", "co2", as_of_year=2020)


def test_inner_nan_counts_as_a_gap(tidy: pd.DataFrame) -> None:
    rows = tidy.copy()
    rows.loc[(rows["entity"] == "World") & (rows["year"] == 1960), "value"] = np.nan
    series = prepare_series(rows, "World", "co2", as_of_year=2020)
    assert series.first_year == 1961 and series.left_out is not None
    assert (series.left_out.first_year, series.left_out.last_year, series.left_out.gap_text()) == (1900, 1959, "1960")


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
    entities = tidy["entity"].nunique()
    with pytest.raises(SeriesError, match=rf"unknown entity 'Atlantis' in this release \({entities} entities\): set --series or CO2CAST_"):
        prepare_series(tidy, "Atlantis", "co2", as_of_year=2020)
    with pytest.raises(SeriesError, match=r"unknown variable 'methane' in this release \(it has co2, co2_per_capita\): set --series"):
        prepare_series(tidy, "Canada", "methane", as_of_year=2020)


def test_nothing_before_as_of(tidy: pd.DataFrame) -> None:
    with pytest.raises(SeriesError, match="no values up to the as-of year 1950"):
        prepare_series(tidy, "Tiny", "co2_per_capita", as_of_year=1950)


def test_a_year_that_is_not_whole_is_refused_not_truncated(tidy: pd.DataFrame) -> None:
    rows = tidy.astype({"year": "float64"})
    rows.loc[(rows["entity"] == "World") & (rows["year"] == 2020), "year"] = 2019.5
    with pytest.raises(SeriesError, match=r"^world\.co2: year 2019\.5 is not a whole number; every year must be one$"):
        prepare_series(rows, "World", "co2", as_of_year=2020)
    assert prepare_series(rows, "Canada", "co2", as_of_year=2020).last_year == 2020  # 2020.0 is a whole year


def test_duplicate_years_refused(tidy: pd.DataFrame) -> None:
    rows = pd.concat([tidy, tidy.iloc[[0]]], ignore_index=True)
    with pytest.raises(SeriesError, match=r"more than one value for the year\(s\) \[1900\]"):
        prepare_series(rows, "Canada", "co2_per_capita", as_of_year=2020)


@pytest.mark.parametrize(("scale", "shown"), [(1e-300, "1e-300"), (1e200, "1e+200"), (np.finfo(float).max / 200, "8.99e+305")])
def test_a_value_too_large_or_too_small_to_compute_with_is_refused(tidy: pd.DataFrame, scale: float, shown: str) -> None:
    # A history divided by 1e300 passed the raw gate (any tiny positive value does) and failed in
    # the diagnostics with "ValueError: cannot convert float NaN to integer": squares underflow.
    rows = tidy.loc[(tidy["entity"] == "World") & (tidy["variable"] == "co2")].copy()  # 0, 1, 2, ... from 1900
    rows["value"] = rows["value"].mul(scale)
    with pytest.raises(SeriesError, match=rf"world\.co2: its value {re.escape(shown)} in 1901 cannot be modelled") as raised:
        prepare_series(rows, "World", "co2", as_of_year=2020)  # 1900's 0 is a value like any other
    assert "between 1e-100 and 1e+100 in size; 120 are not" in str(raised.value) and "\n" not in str(raised.value)
    rows["value"] = rows["value"].div(scale).mul(1e-9)  # tiny, but within what float64 computes with
    assert prepare_series(rows, "World", "co2", as_of_year=2020).values[-1] == pytest.approx(120e-9)


def test_resolve_series(tidy: pd.DataFrame) -> None:
    assert resolve_series(tidy, "default") == DEFAULT_SERIES
    # Gapland's stretch after its last gap (1981-2020, 40 years) is long enough for "all".
    assert resolve_series(tidy, "all") == [("Canada", "co2"), ("World", "co2"), ("Canada", "co2_per_capita"), ("Gapland", "co2_per_capita")]
    assert resolve_series(tidy, "all", min_points=20) == [
        ("Canada", "co2"),
        ("World", "co2"),
        ("Canada", "co2_per_capita"),
        ("Gapland", "co2_per_capita"),
        ("Tiny", "co2_per_capita"),
    ]
    # As of 1979 its stretch (1952-1979) is 28 years: in "all" for 28 points, not for 30.
    assert ("Gapland", "co2_per_capita") not in resolve_series(tidy, "all", as_of_year=1979)
    assert ("Gapland", "co2_per_capita") in resolve_series(tidy, "all", min_points=28, as_of_year=1979)
    # Every series "all" names prepares (the two rules agree), and Tiny is out for 30 points.
    named = resolve_series(tidy, "all", as_of_year=1979)
    assert ("Canada", "co2") in named and ("Tiny", "co2_per_capita") not in named
    for entity, variable in named:
        assert len(prepare_series(tidy, entity, variable, as_of_year=1979)) >= 30
    assert resolve_series(tidy, "World:co2, canada.co2_per_capita,World:co2") == [("World", "co2"), ("Canada", "co2_per_capita")]
    with pytest.raises(SeriesError, match=r"no series 'Wrld:co2'; did you mean 'world\.co2'"):
        resolve_series(tidy, "Wrld:co2")
    with pytest.raises(SeriesError, match=r"no series with id 'mars\.co2'"):
        resolve_series(tidy, "mars.co2")
    with pytest.raises(SeriesError, match="names no series"):
        resolve_series(tidy, " , ")
    # A huge param (a paste gone wrong) is named, not repeated whole: the message stays one short line.
    for huge in ("x" * 1_000_000, "Canada:" + "co2" * 100_000, ", " * 100_000):
        with pytest.raises(SeriesError) as raised:
            resolve_series(tidy, huge)
        assert len(str(raised.value)) < 200 and "…'" in str(raised.value)


def test_a_series_spec_that_names_nothing_says_what_a_spec_may_be(tidy: pd.DataFrame) -> None:
    """A typo of ``all`` or ``default``, or a name like nothing in the release, says what to type (it said only 'no series')."""
    with pytest.raises(SeriesError, match=r"^no series with id 'al'; did you mean 'all'\?$"):
        resolve_series(tidy, "al")
    with pytest.raises(SeriesError, match=r"^no series with id 'defualt'; did you mean 'default'\?$"):
        resolve_series(tidy, "defualt")
    with pytest.raises(SeriesError, match=r"^no series with id 'xyzzy'; use 'default', 'all', or Entity:variable pairs such as "):
        resolve_series(tidy, "xyzzy")
    with pytest.raises(
        SeriesError, match=r"^no series 'Xyzzy:qq'; name an entity as the release writes it and one of co2, co2_per_capita$"
    ):
        resolve_series(tidy, "Xyzzy:qq")
    # The words inside a list: it said "no series with id 'default'; did you mean 'default'?".
    with pytest.raises(SeriesError, match=r"^'default' stands alone: give it as the whole series spec, not in a list \('default,all'\)$"):
        resolve_series(tidy, "default,all")
    with pytest.raises(SeriesError, match=r"^'ALL' stands alone"):
        resolve_series(tidy, "World:co2, ALL")


def test_study_series_from_owid() -> None:
    tidy = read_tidy_file(OWID_CSV)
    series = prepare_series(tidy, "Canada", "co2_per_capita", as_of_year=2014)
    assert (series.first_year, series.last_year, len(series)) == (1800, 2014, 215)
    assert prepare_series(tidy, "Canada", "co2_per_capita", as_of_year=1999).last_year == 1999


@pytest.mark.parametrize(("entity", "variable"), [("India", "co2"), ("France", "co2"), ("Norway", "co2_per_capita")])
def test_owid_series_with_an_early_gap_model_their_recent_stretch(entity: str, variable: str) -> None:
    """The stretch starts the year after the last missing year, found here from the raw CSV."""
    raw = pd.read_csv(OWID_CSV, usecols=["country", "year", variable])
    raw = raw.loc[(raw["country"] == entity) & (raw["year"] <= 2014)]
    present = raw.dropna(subset=[variable]).sort_values("year")
    span = np.arange(int(present["year"].min()), 2015)
    missing = sorted(set(span) - set(present["year"]))
    assert missing, f"{entity}:{variable} has no gap in the raw file any more; this test needs one"
    start = int(missing[-1]) + 1

    series = prepare_series(read_tidy_file(OWID_CSV), entity, variable, as_of_year=2014, min_points=30)
    assert (series.first_year, series.last_year) == (start, 2014)
    expected = present.loc[present["year"] >= start, variable].to_numpy(dtype=float)
    np.testing.assert_array_equal(series.values, expected)
    assert series.left_out is not None
    assert series.left_out.gap_last == int(missing[-1]) and series.left_out.first_year == int(present["year"].min())
    assert series.left_out.n_values == int((present["year"] < start).sum())
    assert series.left_out.last_year == int(present.loc[present["year"] < start, "year"].max())


def test_falls_to_floor_names_the_first_year_at_the_floor(monkeypatch) -> None:
    years = np.arange(2015, 2020)
    history = np.array([5.0, 4.0, 3.0])
    mean = np.array([2.0, 1.0, 0.0, 0.0, 0.0])  # a falling line, floored at zero
    assert falls_to_floor(years, mean, history) == (
        "its forecast mean falls to 0 in 2017, 3 year(s) ahead, at or below zero (every historic value is positive; the last 3)"
    )
    assert falls_to_floor(years, np.array([2.0, -1.0, 0.5, 1, 1]), history).startswith("its forecast mean falls to -1 in 2016")
    assert falls_to_floor(years[:2], mean[:2], history) is None  # only the years given are checked
    assert falls_to_floor(years, mean, np.array([5.0, 0.0, 3.0])) is None  # zero was seen: no lower bound
    assert falls_to_floor(years, mean, np.array([5.0, -1.0, 3.0])) is None
    assert falls_to_floor(years, np.array([1.0, np.nan, 1, 1, 1]), history).startswith("its forecast mean falls to nan in 2016")
    monkeypatch.setattr(series_module, "MIN_MEAN_SHARE", 0.5)  # at or below half the last value (1.5)
    assert falls_to_floor(years, mean, history).startswith(
        "its forecast mean falls to 1 in 2016, 2 year(s) ahead, at or below 0.5 of the last value"
    )


def test_beyond_bounds_names_the_first_year_out_of_bounds() -> None:
    years = np.arange(2015, 2020)
    mean = np.array([10.0, 20.0, 41.0, 50.0, 60.0])
    # Mean above 4 times the maximum 10 from 2017 on: the first such year is named.
    assert beyond_bounds(years, mean, None, 10.0) == "its forecast mean reaches 41 in 2017, above 4 times the historic maximum 10"
    assert beyond_bounds(years, mean, None, 15.0) is None  # 60 <= 4 * 15
    hi_95 = np.array([20.0, 100.0, 301.0, 302.0, 303.0])
    assert beyond_bounds(years, mean, hi_95, 15.0) == (
        "its forecast 95 % upper bound reaches 301 in 2017, above 20 times the historic maximum 15"
    )
    assert beyond_bounds(years, np.array([1.0, np.nan, 1, 1, 1]), None, 10.0) == "its forecast is not finite"
    assert beyond_bounds(years, np.array([1.0, 1, 1, 1, np.nan]), np.full(5, np.nan), 10.0) == "its forecast is not finite"
    # A history without a positive maximum bounds nothing (as the forecast_output gate).
    assert beyond_bounds(years, mean, hi_95, 0.0) is None and beyond_bounds(years, mean, hi_95, float("nan")) is None
    # A non-finite upper bound is out of bounds when the history bounds it.
    assert "95 % upper bound reaches inf in 2015" in beyond_bounds(years, mean, np.full(5, np.inf), 15.0)
