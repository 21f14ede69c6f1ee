"""The Theta forecaster: SES intervals (checked by simulation) and a load that runs no optimiser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from statsmodels.tsa.forecasting.theta import ThetaModel

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
