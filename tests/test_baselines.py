"""Baseline forecasts and intervals against values worked out by hand (fpp3 section 5.5)."""

from __future__ import annotations

import numpy as np
from scipy import stats

from pipeline.models.baselines import DriftForecaster, MeanForecaster, NaiveForecaster

Y = np.array([1.0, 2.0, 4.0, 7.0])  # differences 1, 2, 3
Z95 = stats.norm.ppf(0.975)


def test_naive_by_hand() -> None:
    forecast = NaiveForecaster().fit(Y).predict(2)
    np.testing.assert_array_equal(forecast.mean, [7.0, 7.0])
    sigma = np.sqrt(14 / 3)  # mean of squared differences 1, 4, 9
    np.testing.assert_allclose(forecast.upper[95] - forecast.mean, Z95 * sigma * np.sqrt([1, 2]), rtol=1e-12)


def test_drift_by_hand() -> None:
    forecast = DriftForecaster().fit(Y).predict(2)
    np.testing.assert_allclose(forecast.mean, [9.0, 11.0], rtol=1e-12)  # drift (7 - 1) / 3 = 2
    # residuals -1, 0, 1 -> sigma^2 = 2 / (3 - 1) = 1; sigma_h = sqrt(h (1 + h / (T - 1))), T = 4
    np.testing.assert_allclose(forecast.upper[95] - forecast.mean, Z95 * np.sqrt([4 / 3, 10 / 3]), rtol=1e-12)
    np.testing.assert_allclose(forecast.mean - forecast.lower[80], stats.norm.ppf(0.9) * np.sqrt([4 / 3, 10 / 3]), rtol=1e-12)


def test_mean_by_hand() -> None:
    forecast = MeanForecaster().fit(Y).predict(3)
    np.testing.assert_allclose(forecast.mean, [3.5] * 3)
    np.testing.assert_allclose(forecast.upper[95] - forecast.mean, Z95 * np.sqrt(7 * 1.25), rtol=1e-12)
