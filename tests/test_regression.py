"""Regression forecasters against independent answers.

Ridge/Lasso: interval widths against statsmodels' ARIMA(p,1,0) with the same coefficients, point
forecasts against scikit-learn refitted here on the standardised lagged differences. Trend: bands
against the closed-form OLS prediction interval of a new observation.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import Lasso, Ridge
from statsmodels.tsa.statespace.sarimax import SARIMAX

from pipeline.maths import z
from pipeline.models.regression import LassoForecaster, RidgeForecaster, TrendForecaster


@pytest.mark.parametrize("make", [lambda: RidgeForecaster(lags=3, alpha=0.5), lambda: LassoForecaster(lags=2, alpha=0.01)])
def test_band_widths_are_those_of_the_fitted_autoregression_integrated(make) -> None:
    rng = np.random.default_rng(8)
    diffs = np.zeros(80)
    for t in range(1, 80):  # AR(1) differences, phi 0.6: the errors are autocorrelated
        diffs[t] = 0.5 + 0.6 * (diffs[t - 1] - 0.5) + rng.normal()
    y = 50 + np.cumsum(diffs)
    model = make().fit(y, np.arange(80))
    h = 12
    forecast = model.predict(h, levels=(95,))
    # The same AR coefficients (most recent lag first) and one-step variance in statsmodels'
    # state-space ARIMA(p,1,0): its forecast standard errors are the level errors' spread.
    phi = model.coef_[::-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = SARIMAX(y, order=(phi.size, 1, 0), trend="n").filter(np.r_[phi, model.sigma_**2])
    se = np.asarray(reference.get_forecast(h).se_mean)
    np.testing.assert_allclose((forecast.upper[95] - forecast.mean) / z(95), se, rtol=1e-6)
    assert se[-1] > model.sigma_ * np.sqrt(h)  # positive autocorrelation: wider than a random walk's


# -- point forecasts against scikit-learn, rebuilt here ------------------------------------------
def _ar_differences(seed: int = 8, n: int = 80, drift: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    diffs = np.zeros(n)
    for t in range(1, n):
        diffs[t] = drift + 0.6 * (diffs[t - 1] - drift) + rng.normal()
    return 50 + np.cumsum(diffs)


@pytest.mark.parametrize(
    ("make", "estimator"),
    [
        (lambda: RidgeForecaster(lags=3, alpha=0.5), lambda: Ridge(alpha=0.5)),
        (lambda: LassoForecaster(lags=2, alpha=0.01), lambda: Lasso(alpha=0.01, max_iter=10_000)),
    ],
    ids=["ridge", "lasso"],
)
def test_point_forecasts_are_the_recursive_sklearn_forecast_on_standardised_differences(make, estimator) -> None:
    y = _ar_differences()
    model = make().fit(y, np.arange(y.size))
    h, p = 10, model.lags
    # Features: the previous p standardised differences (oldest first); target: the next one.
    d = np.diff(y)
    loc, scale = d.mean(), d.std()
    zs = (d - loc) / scale
    X = np.array([zs[i : i + p] for i in range(zs.size - p)])
    reference = estimator().fit(X, zs[p:])
    window, level, expected = list(zs[-p:]), y[-1], []
    for _ in range(h):
        nxt = float(reference.predict(np.array([window[-p:]]))[0])
        window.append(nxt)
        level += nxt * scale + loc
        expected.append(level)
    forecast = model.predict(h)
    np.testing.assert_allclose(forecast.mean, expected, rtol=1e-10)
    assert np.count_nonzero(reference.coef_) > 0  # a fit that kept nothing would only test the drift


@pytest.mark.parametrize("make", [RidgeForecaster, LassoForecaster], ids=["ridge", "lasso"])
def test_an_exact_line_is_continued(make) -> None:
    t = np.arange(30)
    y = 2 + 0.5 * t
    forecast = make().fit(y, t).predict(6)
    np.testing.assert_allclose(forecast.mean, 2 + 0.5 * np.arange(30, 36), rtol=1e-12)


# -- trend intervals against the closed-form OLS prediction interval -----------------------------
@pytest.mark.parametrize("degree", [1, 2])
def test_trend_bands_are_the_ols_prediction_interval_of_a_new_observation(degree: int) -> None:
    rng = np.random.default_rng(11)
    n, h = 30, 7
    t = np.arange(n, dtype=float)
    y = 10 + 0.8 * t - 0.01 * t**2 + rng.normal(0, 1.5, n)
    forecast = TrendForecaster(degree=degree).fit(y, np.arange(n)).predict(h, levels=(80, 95))
    # Raw powers of t: the same column space as the model's centred and scaled time, so the same fit.
    X = np.vander(t, degree + 1, increasing=True)
    X0 = np.vander(np.arange(n, n + h, dtype=float), degree + 1, increasing=True)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    k = degree + 1
    s = np.sqrt(np.sum((y - X @ beta) ** 2) / (n - k))
    leverage = np.einsum("ij,jk,ik->i", X0, np.linalg.inv(X.T @ X), X0)
    mean = X0 @ beta
    np.testing.assert_allclose(forecast.mean, mean, rtol=1e-10)
    for level in (80, 95):
        half = stats.t.ppf(0.5 + level / 200, n - k) * s * np.sqrt(1 + leverage)
        np.testing.assert_allclose(forecast.upper[level] - forecast.mean, half, rtol=1e-8)
        np.testing.assert_allclose(forecast.mean - forecast.lower[level], half, rtol=1e-8)
