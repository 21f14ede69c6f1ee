"""ARIMA: same forecasts as statsmodels, AIC-minimal choice, exact save/load, nested intervals."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from statsmodels.tsa.arima.model import ARIMA

from pipeline.config import EMBEDDED_SOURCE
from pipeline.ingest import read_tidy_file
from pipeline.models.arima import ArimaForecaster, default_trend
from pipeline.models.base import Forecast
from pipeline.series import prepare_series

OWID_CSV = EMBEDDED_SOURCE  # the repository's own OWID release (gzip)


@pytest.fixture(scope="module")
def canada() -> tuple[np.ndarray, np.ndarray]:
    tidy = read_tidy_file(OWID_CSV)
    series = prepare_series(tidy, "Canada", "co2_per_capita", as_of_year=1999)  # the study's 200 training years
    return series.years, series.values


@pytest.fixture(scope="module")
def fitted(canada: tuple[np.ndarray, np.ndarray]) -> ArimaForecaster:
    years, values = canada
    return ArimaForecaster().fit(values, years)


def _best_converged(search: list[dict]) -> tuple[int, int, int]:
    usable = [row for row in search if row["converged"] and row["aic"] is not None]
    best = min(usable, key=lambda row: row["aic"])
    return (best["p"], best["d"], best["q"])


def test_matches_statsmodels_for_the_chosen_order(fitted: ArimaForecaster, canada: tuple[np.ndarray, np.ndarray]) -> None:
    _, values = canada
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ARIMA(values, order=fitted.order_, trend=fitted.trend_, concentrate_scale=True).fit()
    expected = reference.get_forecast(15)
    ours = fitted.predict(15)
    np.testing.assert_allclose(ours.mean, expected.predicted_mean, rtol=0, atol=1e-8)
    for level in (80, 95):
        interval = expected.conf_int(alpha=1 - level / 100)
        np.testing.assert_allclose(ours.lower[level], interval[:, 0], rtol=0, atol=1e-8)
        np.testing.assert_allclose(ours.upper[level], interval[:, 1], rtol=0, atol=1e-8)
    np.testing.assert_allclose(fitted.params_, reference.params, rtol=0, atol=1e-8)
    assert fitted.aic_ == pytest.approx(reference.aic, abs=1e-8)


def test_study_series_is_differenced_once_with_drift(fitted: ArimaForecaster) -> None:
    assert fitted.order_[1] == 1
    assert fitted.trend_ == "t"
    assert fitted.param_names_[0] == "x1"  # the drift coefficient on the time trend


def test_search_picks_the_aic_minimum_of_its_table(fitted: ArimaForecaster) -> None:
    assert fitted.order_ == _best_converged(fitted.search_)
    assert fitted.aic_ == min(row["aic"] for row in fitted.search_ if row["converged"])
    assert len({(row["p"], row["q"]) for row in fitted.search_}) == len(fitted.search_)  # no order fitted twice


def test_grid_search_tries_every_order() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(size=150)
    y = np.zeros(150)
    for t in range(1, 150):
        y[t] = 0.7 * y[t - 1] + e[t]
    model = ArimaForecaster(search="grid", max_p=2, max_q=1, d=0).fit(y)
    assert sorted((row["p"], row["q"]) for row in model.search_) == [(p, q) for p in range(3) for q in range(2)]
    assert model.order_ == _best_converged(model.search_)
    assert model.trend_ == "c"
    assert model.order_[0] >= 1  # an AR(1) with phi 0.7 is not white noise


def test_stepwise_stays_inside_the_bounds() -> None:
    y = np.cumsum(np.random.default_rng(6).normal(0.1, 1.0, 120))
    model = ArimaForecaster(max_p=1, max_q=1).fit(y)
    assert all(row["p"] <= 1 and row["q"] <= 1 for row in model.search_)


def test_fixed_order_fits_only_that_order() -> None:
    y = np.cumsum(np.random.default_rng(8).normal(0.5, 1.0, 80))
    model = ArimaForecaster(order=[1, 1, 0]).fit(y)  # a list, as it comes back from JSON
    assert model.order_ == (1, 1, 0) and len(model.search_) == 1 and model.trend_ == "t"
    assert ArimaForecaster(order=(0, 2, 1)).fit(y).trend_ == "n"


def test_default_trend() -> None:
    assert [default_trend(d) for d in (0, 1, 2, 3)] == ["c", "t", "n", "n"]


def test_unknown_search_is_refused_on_fit_not_init() -> None:
    model = ArimaForecaster(search="random")  # __init__ validates nothing
    with pytest.raises(ValueError, match="unknown search 'random'"):
        model.fit(np.arange(30.0) + np.random.default_rng(0).normal(size=30))


def test_save_load_is_exact(fitted: ArimaForecaster, tmp_path: Path) -> None:
    before = fitted.predict(36)
    loaded = ArimaForecaster.load(fitted.save(tmp_path / "arima"))
    after = loaded.predict(36)
    np.testing.assert_array_equal(after.mean, before.mean)
    for level in (80, 95):
        np.testing.assert_array_equal(after.lower[level], before.lower[level])
        np.testing.assert_array_equal(after.upper[level], before.upper[level])
    assert loaded.order_ == fitted.order_ and loaded.search_ == fitted.search_
    assert "pickle" not in (tmp_path / "arima" / "model.json").read_text()


def test_intervals_are_nested(fitted: ArimaForecaster) -> None:
    frame = fitted.predict(51).to_frame()
    assert (frame["lo_95"] <= frame["lo_80"]).all()
    assert (frame["lo_80"] <= frame["mean"]).all()
    assert (frame["mean"] <= frame["hi_80"]).all()
    assert (frame["hi_80"] <= frame["hi_95"]).all()
    assert list(frame["year"]) == list(range(2000, 2051))
    assert np.all(np.diff(frame["hi_95"] - frame["lo_95"]) > 0)  # an integrated model: widening


def test_aic_values_are_finite_or_recorded_as_failures(fitted: ArimaForecaster) -> None:
    assert len(fitted.search_) > 1, "the stepwise search tried no alternative: the checks below would be empty"
    for row in fitted.search_:
        if row["error"] is not None:
            assert row["aic"] is None and not row["converged"]
        else:
            assert row["aic"] is not None and math.isfinite(row["aic"])


def _assert_same_forecast(ours: Forecast, expected: Any, atol: float) -> None:
    np.testing.assert_allclose(ours.mean, expected.predicted_mean, rtol=0, atol=atol)
    for level in (80, 95):
        interval = expected.conf_int(alpha=1 - level / 100)
        np.testing.assert_allclose(ours.lower[level], interval[:, 0], rtol=0, atol=atol)
        np.testing.assert_allclose(ours.upper[level], interval[:, 1], rtol=0, atol=atol)


@pytest.mark.parametrize("order", [(0, 2, 0), (0, 1, 0)])
def test_variance_only_model_is_fitted_and_matches_statsmodels(order: tuple[int, int, int], tmp_path: Path) -> None:
    # p = q = 0 with no trend leaves sigma2 as the only parameter, which statsmodels cannot
    # concentrate out ("not enough values to unpack"): such a model used to be unfittable.
    y = np.cumsum(np.cumsum(np.random.default_rng(5).normal(0, 1, 60))) + 500
    model = ArimaForecaster(order=order, trend="n").fit(y)
    assert model.order_ == order and model.search_[0]["error"] is None and model.search_[0]["converged"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ARIMA(y, order=order, trend="n").fit()
    assert model.aic_ == pytest.approx(reference.aic, abs=1e-8)
    np.testing.assert_allclose(model.params_, reference.params, rtol=0, atol=1e-10)
    _assert_same_forecast(model.predict(12), reference.get_forecast(12), atol=1e-8)
    before = model.predict(30)
    after = ArimaForecaster.load(model.save(tmp_path / "arima")).predict(30)
    np.testing.assert_array_equal(after.mean, before.mean)
    for level in (80, 95):
        np.testing.assert_array_equal(after.lower[level], before.lower[level])
        np.testing.assert_array_equal(after.upper[level], before.upper[level])


def test_stepwise_can_pick_its_variance_only_start() -> None:
    # Georgia's CO2 (1959-2014 in the embedded release) is differenced twice and ARIMA(0,2,0) has
    # the lowest AIC of the walk; with that start failing, the search settled on (1,2,0).
    series = prepare_series(read_tidy_file(OWID_CSV), "Georgia", "co2", as_of_year=2014)
    model = ArimaForecaster().fit(series.values, series.years)
    assert model.order_ == (0, 2, 0) and model.trend_ == "n"
    assert model.order_ == _best_converged(model.search_)
    assert all(row["error"] is None for row in model.search_)
