"""The Theta method (Assimakopoulos & Nikolopoulos 2000) on statsmodels' ``ThetaModel``.

Yearly data have no season, so the series is not deseasonalised. The forecast is SES with a
drift of half the slope of the linear trend (Hyndman & Billah 2003). Intervals are the SES
model's, ARIMA(0,1,1): the ``h``-step variance is ``σ² (1 + (h - 1) α²)``, centred on the Theta
forecast. statsmodels' own ``prediction_intervals`` uses ``σ² (1 + (h - 1)(1 + (α - 1)²))``,
which agrees only at ``α = 1`` and is far too wide for small ``α`` (95 % bands held every
future from step 2 on in a simulation with ``α = 0.4``; see the tests).

Persistence: the fitted parameters (the slope ``b0``, ``alpha``, the variance and the SES
one-step level) are saved, and loading rebuilds statsmodels' results from them without running
an optimiser: refitting gave an ``alpha`` that differs in the 8th digit on another CPU's BLAS
kernel, so a model trained on one machine could not be loaded on another.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
from statsmodels.tsa.forecasting.theta import ThetaModel, ThetaModelResults

from pipeline.blas import single_threaded_blas
from pipeline.maths import z
from pipeline.models.base import Forecaster


class ThetaForecaster(Forecaster):
    """Theta method forecasts with 80/95 % intervals.

    Args:
        theta: the Theta coefficient (2 is the classic method).

    Attributes:
        params_: ``b0`` (trend slope) and ``alpha`` (SES smoothing).
        sigma2_: the one-step variance (statsmodels': an ARIMA(0,1,1) fit with a constant).
        one_step_: the SES forecast of the next value (the level the Theta drift is added to).
    """

    family: ClassVar[str] = "theta"
    min_obs: ClassVar[int] = 5

    def __init__(self, theta: float = 2.0) -> None:
        self.theta = theta

    def _fit(self, y: np.ndarray) -> None:
        with warnings.catch_warnings(), single_threaded_blas():
            warnings.simplefilter("ignore")
            results = ThetaModel(y, period=1, deseasonalize=False).fit()
            self.params_ = {str(k): float(v) for k, v in results.params.items()}
            self.sigma2_ = float(results.sigma2)
            self.one_step_ = float(np.asarray(results.forecast(1, theta=1.0))[0])  # theta 1: the SES part alone
        self.results_ = results

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mean = np.asarray(self.results_.forecast(h, theta=float(self.theta)), dtype=np.float64)
        spread = np.sqrt(self.sigma2_ * (1.0 + np.arange(h) * self.params_["alpha"] ** 2))
        bounds = {}
        for level in levels:
            half = z(level) * spread
            bounds[level] = (mean - half, mean + half)
        return mean, bounds

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"params": self.params_, "sigma2": self.sigma2_, "one_step": self.one_step_}, {}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if "one_step" not in state:  # saved before the state was complete: refit, as it was then loaded
            self._fit(self.y_)
            if not all(np.isclose(self.params_[k], v, rtol=1e-6, atol=1e-12) for k, v in state["params"].items()):
                raise ValueError(f"refitting the saved series gave Theta parameters {self.params_}, not the saved {state['params']}")
            return
        self.params_ = {str(k): float(v) for k, v in state["params"].items()}
        self.sigma2_, self.one_step_ = float(state["sigma2"]), float(state["one_step"])
        model = ThetaModel(self.y_, period=1, deseasonalize=False)
        self.results_ = ThetaModelResults(self.params_["b0"], self.params_["alpha"], self.sigma2_, self.one_step_, None, False, model)
