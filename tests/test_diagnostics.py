"""Diagnostics: stationarity conclusions on series with a known answer, and the study series.

Why the trend-stationary case looks the way it does: ``y_t = a + b t + u_t`` with stationary
``u`` has no unit root, so ADF with a trend term (``"ct"``) rejects the unit root and KPSS
around a trend does not reject, giving ``d = 0``. With only a constant (``"c"``) the trend is
unexplained: ADF has next to no power to reject and KPSS around a level rejects, so the
``ndiffs`` rule (whose default is ``"c"``, like R's) asks for one difference; after differencing,
``b + Δu`` is stationary around the constant ``b``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from statsmodels.tools.sm_exceptions import InterpolationWarning
from statsmodels.tsa.stattools import adfuller, kpss

from pipeline.config import EMBEDDED_SOURCE
from pipeline.diagnostics import compute_diagnostics, decompose
from pipeline.diagnostics_plots import write_diagnostics
from pipeline.ingest import read_tidy_file
from pipeline.series import prepare_series
from pipeline.stationarity import adf_test, implied_d, kpss_test, ndiffs

OWID_CSV = EMBEDDED_SOURCE  # the repository's own OWID release (gzip)


def _ar1(n: int, phi: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n)
    u = np.zeros(n)
    for t in range(1, n):
        u[t] = phi * u[t - 1] + e[t]
    return u


def test_random_walk_needs_one_difference() -> None:
    walk = np.cumsum(np.random.default_rng(1).normal(size=300))
    assert not adf_test(walk)["reject"]
    assert kpss_test(walk)["reject"]
    assert ndiffs(walk) == 1


def test_white_noise_needs_none() -> None:
    assert ndiffs(np.random.default_rng(2).normal(size=300)) == 0


def test_double_integration_needs_two() -> None:
    assert ndiffs(np.cumsum(np.cumsum(np.random.default_rng(4).normal(size=300)))) == 2


def test_trend_stationary_series() -> None:
    t = np.arange(300)
    y = 5.0 + 0.05 * t + _ar1(300, 0.5, seed=7)
    assert adf_test(y, "ct")["reject"]
    assert not kpss_test(y, "ct")["reject"]
    assert not adf_test(y, "c")["reject"]
    assert kpss_test(y, "c")["reject"]
    assert ndiffs(y, regression="ct") == 0
    assert ndiffs(y, regression="c") == 1


def test_kpss_bound_is_recorded_not_warned() -> None:
    walk = np.cumsum(np.random.default_rng(1).normal(size=300))
    with_bound = kpss_test(walk)
    assert with_bound["p_value_bound"] == "<0.01" and with_bound["p_value"] == 0.01
    noise = kpss_test(np.random.default_rng(2).normal(size=300))
    assert noise["p_value_bound"] == ">0.1"


def test_the_kpss_lag_rule_of_thumb_takes_over_where_the_automatic_bandwidth_is_undefined() -> None:
    """A population rounded to thousands (Falkland Islands: 2000 for 20 years, then 3000): its second
    difference is zero but for two spikes, and statsmodels' automatic bandwidth divides by zero."""
    step = np.diff(np.r_[np.full(20, 2000.0), np.full(25, 3000.0)], 2)
    row = kpss_test(step)
    with warnings.catch_warnings():  # the statistic is beyond the p-value table: pipeline.stationarity reports a bound
        warnings.simplefilter("ignore", InterpolationWarning)
        legacy = kpss(step, nlags="legacy", result_object=True)  # what the rule of thumb gives, from statsmodels itself
    assert row["statistic"] == pytest.approx(legacy.statistic) and row["lags"] == legacy.lags
    assert "rule of thumb" in row["note"] and "note" not in kpss_test(np.random.default_rng(2).normal(size=300))


@pytest.mark.parametrize(
    ("values", "d"),
    [
        (np.zeros(30), 0),  # Gibraltar's gas CO2: no gas, every year
        (np.r_[np.full(20, 2000.0), np.full(25, 3000.0)], 1),  # a step
        (np.r_[np.full(20, 0.004), np.full(5, 0.007)], 1),  # Bahamas' coal CO2 since 1990, rounded
    ],
    ids=["constant", "step", "short-step"],
)
def test_flat_and_stepped_series_get_diagnostics_and_an_order_not_an_error(values: np.ndarray, d: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning either: the degenerate values are what they are
        report = compute_diagnostics(np.arange(1970, 1970 + values.size), values)
    assert report["stationarity"]["implied_d"] == ndiffs(values) == d
    json.dumps(report, allow_nan=False)  # NaN statistics are reported as null
    if d == 0:
        rows = report["stationarity"]["tests"]
        assert all(r["statistic"] is None and r["stationary"] and "constant" in r["note"] for r in rows)


def test_a_flat_series_plots_without_a_warning_per_lag(tmp_path: Path) -> None:
    # statsmodels' own warnings are "always": the PACF of a flat history repeated a
    # SingularMatrixWarning for each of its 20 lags in every task log, besides 0/0 RuntimeWarnings.
    values = np.full(65, 5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = write_diagnostics(np.arange(1950, 2015), values, tmp_path, title="flat")
    assert {"acf", "pacf"} <= set(report["plots"])


@pytest.mark.parametrize(
    "values",
    [1.1 ** np.arange(60), 10 + 2 * (np.arange(60) % 2), np.logspace(-8, 4, 60), 1e30 * (10 + 0.3 * np.arange(60))],
    ids=["exponential", "alternating", "12-orders", "1e30"],
)
def test_deterministic_and_huge_series_repeat_no_warning_in_the_unit_root_tests(values: np.ndarray) -> None:
    # The ARIMA search runs ndiffs (ADF + KPSS) in every backtest window: on such series each of
    # ADF's lag regressions is rank-deficient, and statsmodels printed ~200 warnings a series.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = ndiffs(values)
        row = adf_test(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = adfuller(values, regression="c", autolag="AIC")
    assert 0 <= d <= 2 and row["statistic"] == pytest.approx(expected[0], nan_ok=True) and row["lags"] == expected[2]


def test_implied_d_resolves_disagreement_with_kpss() -> None:
    rows = [
        {"d": 0, "test": "adf", "stationary": False},
        {"d": 0, "test": "kpss", "stationary": False},
        {"d": 1, "test": "adf", "stationary": False},
        {"d": 1, "test": "kpss", "stationary": True},
        {"d": 2, "test": "adf", "stationary": True},
        {"d": 2, "test": "kpss", "stationary": False},
    ]
    assert implied_d(rows) == (1, "kpss")
    rows[3]["stationary"] = False
    assert implied_d(rows) == (2, "max_d")


def test_multiplicative_skipped_for_non_positive_series() -> None:
    summary, results = decompose(np.r_[0.0, np.linspace(1, 5, 39)])
    assert summary["multiplicative"] is None and summary["better"] == "additive"
    assert set(results) == {"additive"}


def test_a_series_shorter_than_two_periods_is_diagnosed_without_a_decomposition(tmp_path: Path) -> None:
    # The core forecasts series from 12 values (backtest.MIN_POINTS); a decade's decomposition
    # needs 20. The rest of the report and the plots are still made.
    years, values = np.arange(2003, 2015), 5 + 0.5 * np.arange(12) + np.random.default_rng(1).normal(scale=0.1, size=12)
    summary, results = decompose(values)
    assert summary["additive"] is None and summary["multiplicative"] is None and summary["better"] is None
    assert "needs at least 20 values, the series has 12" in summary["note"] and results == {}
    report = write_diagnostics(years, values, tmp_path, title="short")
    assert report["decomposition"]["additive"] is None and report["series"]["n"] == 12
    assert {"series", "lag_plot", "acf", "pacf", "differences"} <= set(report["plots"])
    assert not any(name.startswith("decomposition") for name in report["plots"])


def test_multiplicative_wins_when_swings_grow_with_the_level() -> None:
    t = np.arange(120)
    level = np.exp(0.03 * t)
    cycle = 1 + 0.2 * np.sin(2 * np.pi * t / 10)
    noise = 1 + 0.02 * np.random.default_rng(5).normal(size=t.size)
    summary, _ = decompose(level * cycle * noise)
    assert summary["better"] == "multiplicative"
    summary, _ = decompose(50 + 0.1 * t + 3 * np.sin(2 * np.pi * t / 10) + np.random.default_rng(5).normal(size=t.size) * 0.2)
    assert summary["better"] == "additive"


@pytest.fixture(scope="module")
def canada(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    tidy = read_tidy_file(OWID_CSV)
    series = prepare_series(tidy, "Canada", "co2_per_capita", as_of_year=2014)
    out = tmp_path_factory.mktemp("diagnostics")
    return write_diagnostics(series.years, series.values, out, title=series.series_id), out


def test_study_series_is_integrated(canada: tuple[dict[str, Any], Path]) -> None:
    report, _ = canada
    stationarity = report["stationarity"]
    assert stationarity["implied_d"] >= 1
    levels = {(row["test"], row["regression"]): row for row in stationarity["tests"] if row["d"] == 0}
    assert not levels[("adf", "c")]["reject"]  # the study: ADF p > 0.05 on the levels
    assert levels[("kpss", "c")]["reject"]
    assert {row["d"] for row in stationarity["tests"]} == {0, 1, 2}


def test_study_series_report_and_plots(canada: tuple[dict[str, Any], Path]) -> None:
    report, out = canada
    raw = _canada_raw()  # the summary from the CSV itself, not from the pipeline's reading of it
    assert report["series"] == {
        "n": len(raw),
        "first_year": int(raw["year"].min()),
        "last_year": int(raw["year"].max()),
        "min": float(raw["co2_per_capita"].min()),
        "max": float(raw["co2_per_capita"].max()),
        "strictly_positive": bool((raw["co2_per_capita"] > 0).all()),
    }
    assert (report["series"]["n"], report["series"]["first_year"], report["series"]["last_year"]) == (215, 1800, 2014)  # no gap
    decomposition = report["decomposition"]
    assert decomposition["period"] == 10
    assert decomposition["better"] in {"additive", "multiplicative"}
    for model in ("additive", "multiplicative"):
        assert decomposition[model]["relative_residual_median"] > 0
    assert report["linear_trend"]["slope"] > 0 and report["linear_trend"]["slope_p_value"] < 0.05
    assert report["lag1_correlation"] > 0.9
    assert len(report["acf"]["values"]) == report["acf"]["nlags"] + 1 == 21
    assert report["acf"]["values"][0] == pytest.approx(1.0)
    ma = report["moving_average"]["values"]
    assert ma[:9] == [None] * 9 and ma[9] == pytest.approx(raw["co2_per_capita"].iloc[:10].mean())
    for name in report["plots"].values():
        assert (out / name).stat().st_size > 1000
    assert set(report["plots"]) >= {"series", "decomposition_additive", "decomposition_multiplicative", "lag_plot", "acf", "pacf"}
    assert json.loads((out / "diagnostics.json").read_text()) == report


def _canada_raw() -> pd.DataFrame:
    """Canada's CO2 per person up to 2014, read from the embedded CSV with pandas alone, by year."""
    raw = pd.read_csv(OWID_CSV, usecols=["country", "year", "co2_per_capita"])
    return raw.loc[(raw["country"] == "Canada") & (raw["year"] <= 2014)].dropna().sort_values("year")


def _canada_values() -> np.ndarray:
    tidy = read_tidy_file(OWID_CSV)
    return prepare_series(tidy, "Canada", "co2_per_capita", as_of_year=2014).values


def test_compute_is_pure_and_matches_the_written_report(canada: tuple[dict[str, Any], Path]) -> None:
    report, _ = canada
    values = _canada_values()
    computed = compute_diagnostics(np.arange(1800, 2015), values)
    assert {**computed, "plots": report["plots"]} == report


def test_stationarity_and_compute_import_no_plotting() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pipeline.stationarity, pipeline.diagnostics, pipeline.models.arima;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]"
