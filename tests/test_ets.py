"""ETS forecasters (pipeline.models.ets) against independent statsmodels fits and the closed-form ETS recursions.

Two references: statsmodels' ``ETSModel`` fitted here, on its own, with the options ets.py
uses (additive errors, ``fit(disp=False, maxiter=1000)``, a pandas Series); and the additive-
error ETS equations written out in numpy (Hyndman et al. 2008, class 1), run from the
model's fitted parameters: the level/trend recursion, the mean ``l + φ_h b`` and the
variance ``σ² (1 + Σ_{j<h} c_j²)`` with ``c_j = α + β φ_j``, ``φ_j = φ + … + φ^j``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

from pipeline.models.ets import AutoEtsForecaster, HoltForecaster, SesForecaster

FORMS = {"ANN": (None, False), "AAN": ("add", False), "AAdN": ("add", True)}
H = 8


def _trending(seed: int = 3, n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 300 + np.cumsum(2 + rng.normal(0, 3, n))


def _level(seed: int = 5, n: int = 40) -> np.ndarray:
    """Noise around a constant: no trend to find."""
    rng = np.random.default_rng(seed)
    return 50 + rng.normal(0, 2, n)


def _statsmodels_fit(y: np.ndarray, form: str):
    trend, damped = FORMS[form]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ETSModel(pd.Series(y), error="add", trend=trend, damped_trend=damped).fit(disp=False, maxiter=1000)


def _closed_form(y: np.ndarray, form: str, params: np.ndarray, h: int, level: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and bounds of ETS(A,·,N) from its parameters, by the recursion and class-1 variance."""
    trend, damped = FORMS[form]
    names = ETSModel(pd.Series(y), error="add", trend=trend, damped_trend=damped).param_names
    p = dict(zip(names, params, strict=True))
    alpha, beta = p["smoothing_level"], p.get("smoothing_trend", 0.0)
    phi = p.get("damping_trend", 1.0)
    lvl, slope = p["initial_level"], p.get("initial_trend", 0.0)
    errors = []
    for obs in y:
        e = obs - (lvl + phi * slope)
        lvl, slope = lvl + phi * slope + alpha * e, phi * slope + beta * e
        errors.append(e)
    sigma2 = float(np.mean(np.square(errors)))
    phi_j = np.cumsum(phi ** np.arange(1, h + 1))  # φ_1 .. φ_h
    mean = lvl + phi_j * slope
    c = alpha + beta * phi_j[: h - 1]  # c_1 .. c_{h-1}
    var = sigma2 * (1 + np.r_[0.0, np.cumsum(c**2)])
    half = stats.norm.ppf(0.5 + level / 200) * np.sqrt(var)
    return mean, mean - half, mean + half


@pytest.mark.parametrize("series", [_trending, _level], ids=["trending", "level"])
def test_auto_ets_keeps_the_form_with_the_lowest_aicc(series) -> None:
    y = series()
    aicc = {form: float(_statsmodels_fit(y, form).aicc) for form in FORMS}
    model = AutoEtsForecaster().fit(y)
    np.testing.assert_allclose([model.candidates_[f] for f in FORMS], [aicc[f] for f in FORMS], rtol=1e-9)
    assert model.spec_ == min(aicc, key=aicc.get), aicc
    assert model.aicc_ == pytest.approx(min(aicc.values()), rel=1e-9)


def test_the_two_series_choose_different_forms() -> None:
    """The argmin check is only sharp if the candidates' AICc differ; here they also lead to different forms."""
    chosen = {AutoEtsForecaster().fit(series()).spec_ for series in (_trending, _level)}
    assert len(chosen) == 2, chosen


@pytest.mark.parametrize(("damped", "form"), [(False, "AAN"), (True, "AAdN")])
def test_holt_fits_the_damped_form_only_when_asked(damped: bool, form: str) -> None:
    model = HoltForecaster(damped=damped).fit(_trending())
    assert model.spec_ == form
    assert list(model.candidates_) == [form]
    reference = _statsmodels_fit(_trending(), form)
    np.testing.assert_allclose(model.params_, np.asarray(reference.params), rtol=1e-9)


@pytest.mark.parametrize(
    ("make", "form"),
    [(SesForecaster, "ANN"), (HoltForecaster, "AAN"), (lambda: HoltForecaster(damped=True), "AAdN")],
    ids=["ses", "holt", "damped-holt"],
)
def test_mean_and_bounds_are_statsmodels_and_the_closed_form(make, form: str) -> None:
    y = _trending()
    n = y.size
    forecast = make().fit(y).predict(H, levels=(80, 95))
    reference = _statsmodels_fit(y, form)
    prediction = reference.get_prediction(start=n, end=n + H - 1)
    np.testing.assert_allclose(forecast.mean, prediction.predicted_mean, rtol=1e-10)
    for level in (80, 95):
        frame = prediction.summary_frame(alpha=1 - level / 100)
        np.testing.assert_allclose(forecast.lower[level], frame["pi_lower"], rtol=1e-10)
        np.testing.assert_allclose(forecast.upper[level], frame["pi_upper"], rtol=1e-10)
        mean, lower, upper = _closed_form(y, form, np.asarray(reference.params), H, level)
        np.testing.assert_allclose(forecast.mean, mean, rtol=1e-10)
        # Half-widths, not bounds: a relative check on a bound near 300 would hide a 1 % error in the width.
        np.testing.assert_allclose(forecast.upper[level] - forecast.mean, upper - mean, rtol=1e-8)
        np.testing.assert_allclose(forecast.mean - forecast.lower[level], mean - lower, rtol=1e-8)
    if form == "ANN":
        assert np.all(forecast.mean == forecast.mean[0])
    if form == "AAdN":  # damped: the steps shrink
        assert np.all(np.diff(np.diff(forecast.mean)) < 0)
