"""The Theta method (Assimakopoulos & Nikolopoulos 2000) on statsmodels' ``ThetaModel``.

Yearly data have no season, so the series is not deseasonalised. The forecast is SES with a
drift of half the slope of the linear trend (Hyndman & Billah 2003); intervals are those of
statsmodels' ``prediction_intervals`` (the SES model's, centred on the Theta forecast).

Persistence: the fit is deterministic (OLS for the slope, SES for the level), so loading refits
on the saved series and checks the parameters match the saved ones.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
from statsmodels.tsa.forecasting.theta import ThetaModel

from pipeline.blas import single_threaded_blas
from pipeline.models.base import Forecaster


class ThetaForecaster(Forecaster):
    """Theta method forecasts with 80/95 % intervals.

    Args:
        theta: the Theta coefficient (2 is the classic method).

    Attributes:
        params_: ``b0`` (trend slope) and ``alpha`` (SES smoothing).
    """

    family: ClassVar[str] = "theta"
    min_obs: ClassVar[int] = 5

    def __init__(self, theta: float = 2.0) -> None:
        self.theta = theta

    def _fit(self, y: np.ndarray) -> None:
        self.results_ = self._results(y)
        self.params_ = {str(k): float(v) for k, v in self.results_.params.items()}

    def _results(self, y: np.ndarray) -> Any:
        with warnings.catch_warnings(), single_threaded_blas():
            warnings.simplefilter("ignore")
            return ThetaModel(y, period=1, deseasonalize=False).fit()

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        with warnings.catch_warnings(), single_threaded_blas():
            warnings.simplefilter("ignore")
            mean = np.asarray(self.results_.forecast(h, theta=float(self.theta)), dtype=np.float64)
            bounds = {}
            for level in levels:
                frame = self.results_.prediction_intervals(h, theta=float(self.theta), alpha=1 - level / 100)
                interval = np.asarray(frame, dtype=np.float64)
                bounds[level] = (interval[:, 0], interval[:, 1])
        return mean, bounds

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"params": self.params_}, {}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.results_ = self._results(self.y_)
        self.params_ = {str(k): float(v) for k, v in self.results_.params.items()}
        if not all(np.isclose(self.params_[k], v, rtol=1e-9, atol=1e-12) for k, v in state["params"].items()):
            raise ValueError(f"refitting the saved series gave Theta parameters {self.params_}, not the saved {state['params']}")
