"""The Theta forecaster: SES intervals (by simulation and against the ARIMA(0,1,1) filter) and a load that runs no optimiser."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from statsmodels.tsa.forecasting.theta import ThetaModel
from statsmodels.tsa.statespace.sarimax import SARIMAX

from pipeline.maths import z
from pipeline.models.theta import ThetaForecaster


def _ima(rng: np.random.Generator, n: int, alpha: float, drift: float = 0.3) -> np.ndarray:
    """ARIMA(0,1,1) with MA coefficient alpha - 1 (SES with smoothing alpha is its optimal forecast)."""
    e = rng.normal(size=n + 1)
    return 100 + np.cumsum(drift + e[1:] + (alpha - 1) * e[:-1])


def test_intervals_cover_what_they_claim_on_the_model_theta_assumes() -> None:
    rng = np.random.default_rng(4)
    steps = np.array([1, 2, 5, 10])
    hits, reps = np.zeros(steps.size), 200
    for _ in range(reps):
        path = _ima(rng, 110, alpha=0.4)
        forecast = ThetaForecaster().fit(path[:100], np.arange(100)).predict(10, levels=(95,))
        future = path[100:][steps - 1]
        hits += (future >= forecast.lower[95][steps - 1]) & (future <= forecast.upper[95][steps - 1])
    coverage = hits / reps
    # statsmodels' own formula gave 1.00 from step 2 on here: bands about twice too wide.
    assert np.all((coverage > 0.88) & (coverage < 0.99)), coverage


@pytest.mark.parametrize("alpha", [0.3, 0.7])
def test_band_widths_are_the_ses_models_forecast_errors(alpha: float) -> None:
    """SES with smoothing alpha is ARIMA(0,1,1) with MA coefficient alpha - 1: the state-space
    filter of that model, run with the fitted alpha and one-step variance, gives the step-h
    forecast standard errors the bands must have (an exact reference, unlike the simulation)."""
    y = _ima(np.random.default_rng(7), 60, alpha=alpha)
    model = ThetaForecaster().fit(y, np.arange(60))
    h = 10
    forecast = model.predict(h, levels=(80, 95))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = SARIMAX(y, order=(0, 1, 1)).filter(np.array([model.params_["alpha"] - 1.0, model.sigma2_]))
    se = np.asarray(reference.get_forecast(h).se_mean)
    for level in (80, 95):
        np.testing.assert_allclose((forecast.upper[level] - forecast.mean) / z(level), se, rtol=1e-8)
        np.testing.assert_allclose((forecast.mean - forecast.lower[level]) / z(level), se, rtol=1e-8)
    assert 0.05 < model.params_["alpha"] < 0.95  # an interior alpha: se grows, but slower than a random walk's
    assert se[-1] < np.sqrt(model.sigma2_ * h)


def test_the_mean_is_statsmodels_theta_forecast() -> None:
    y = _ima(np.random.default_rng(1), 40, alpha=0.7)
    expected = ThetaModel(y, period=1, deseasonalize=False).fit().forecast(8, theta=2.0)
    np.testing.assert_allclose(ThetaForecaster().fit(y, np.arange(40)).predict(8).mean, np.asarray(expected), rtol=1e-12)


def test_loading_rebuilds_the_fit_without_an_optimiser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    y = _ima(np.random.default_rng(2), 40, alpha=0.6)
    model = ThetaForecaster().fit(y, np.arange(40))
    before = model.predict(12).to_frame()
    model.save(tmp_path / "m")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading must not refit: another CPU's optimiser lands on another alpha")

    monkeypatch.setattr(ThetaModel, "fit", refuse)
    loaded = ThetaForecaster.load(tmp_path / "m")
    assert loaded.predict(12).to_frame().equals(before)


def test_a_model_saved_with_its_parameters_only_still_loads(tmp_path: Path) -> None:
    y = _ima(np.random.default_rng(3), 40, alpha=0.5)
    model = ThetaForecaster().fit(y, np.arange(40))
    before = model.predict(6).to_frame()
    document_path = model.save(tmp_path / "m") / "model.json"
    document = json.loads(document_path.read_text())
    document["state"] = {"params": document["state"]["params"]}  # the format before sigma2 and the level were kept
    document_path.write_text(json.dumps(document))
    np.testing.assert_allclose(ThetaForecaster.load(tmp_path / "m").predict(6).to_frame().to_numpy(), before.to_numpy(), rtol=1e-9)
