"""Ridge/Lasso on lagged differences: interval widths against statsmodels' ARIMA(p,1,0) with the same coefficients."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from statsmodels.tsa.statespace.sarimax import SARIMAX

from pipeline.maths import z
from pipeline.models.regression import LassoForecaster, RidgeForecaster


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
