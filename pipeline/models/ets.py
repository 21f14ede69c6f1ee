"""Exponential smoothing on statsmodels' ``ETSModel``: SES, Holt, damped Holt and automatic ETS.

Each class is one ETS specification with additive errors, fitted by maximum likelihood
(``ETSModel.fit``); :class:`AutoEtsForecaster` fits several and keeps the lowest AICc, as
R's ``forecast::ets`` and statsforecast's ``AutoETS`` do. Intervals are statsmodels' analytic
ones for additive-error models (Hyndman et al. 2008, class 1), so they are deterministic.

Persistence: the fitted parameters go to JSON; loading runs ``ETSModel.smooth(params)``,
which rebuilds the states from the data without optimising. Forecasts always come from that
smoothed result (also right after fitting), so a loaded model forecasts bit-for-bit the same.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

from pipeline.blas import single_threaded_blas
from pipeline.models.base import Forecaster

#: ``(trend, damped)`` of the three additive-error, non-seasonal ETS forms: (A,N,N), (A,A,N), (A,Ad,N).
SPECS: dict[str, tuple[str | None, bool]] = {"ANN": (None, False), "AAN": ("add", False), "AAdN": ("add", True)}


def _model(y: np.ndarray, spec: str) -> ETSModel:
    trend, damped = SPECS[spec]
    # A pandas Series: statsmodels 0.15's prediction summary needs an index on the data.
    return ETSModel(pd.Series(y), error="add", trend=trend, damped_trend=damped)


class _EtsBase(Forecaster):
    """Shared fitting, forecasting and persistence of the ETS forecasters."""

    min_obs: ClassVar[int] = 6

    def _specs(self) -> list[str]:
        raise NotImplementedError

    def _fit(self, y: np.ndarray) -> None:
        fits = []
        with warnings.catch_warnings(), single_threaded_blas():
            # Convergence chatter and bounds warnings of the optimiser: the AICc decides.
            warnings.simplefilter("ignore")
            for spec in self._specs():
                try:
                    result = _model(y, spec).fit(disp=False, maxiter=int(self.maxiter))
                except (ValueError, np.linalg.LinAlgError) as error:
                    fits.append((spec, math.inf, None, f"{type(error).__name__}: {error}"))
                    continue
                aicc = float(result.aicc)
                fits.append((spec, aicc if math.isfinite(aicc) else math.inf, result, None))
        usable = [fit for fit in fits if fit[2] is not None]
        if not usable:
            raise RuntimeError("no ETS model could be fitted: " + "; ".join(f"{s}: {e}" for s, _, _, e in fits))
        spec, aicc, result, _ = min(usable, key=lambda fit: fit[1])
        self.spec_ = spec
        self.aicc_ = aicc
        self.params_ = np.asarray(result.params, dtype=np.float64)
        self.candidates_ = {s: (None if not math.isfinite(a) else a) for s, a, _, _ in fits}
        self.results_ = self._rebuild(y)

    def _rebuild(self, y: np.ndarray) -> Any:
        with warnings.catch_warnings(), single_threaded_blas():
            warnings.simplefilter("ignore")
            return _model(y, self.spec_).smooth(self.params_)

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        n = self.y_.size
        with warnings.catch_warnings(), single_threaded_blas():
            warnings.simplefilter("ignore")
            prediction = self.results_.get_prediction(start=n, end=n + h - 1)
            mean = np.asarray(prediction.predicted_mean, dtype=np.float64)
            bounds = {}
            for level in levels:
                frame = prediction.summary_frame(alpha=1 - level / 100)
                bounds[level] = (frame["pi_lower"].to_numpy(dtype=np.float64), frame["pi_upper"].to_numpy(dtype=np.float64))
        return mean, bounds

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"spec": self.spec_, "aicc": self.aicc_, "params": [float(v) for v in self.params_], "candidates": self.candidates_}, {}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.spec_ = str(state["spec"])
        self.aicc_ = float(state["aicc"])
        self.params_ = np.asarray(state["params"], dtype=np.float64)
        self.candidates_ = dict(state["candidates"])
        self.results_ = self._rebuild(self.y_)


class SesForecaster(_EtsBase):
    """Simple exponential smoothing, ETS(A,N,N): a flat forecast at the smoothed level.

    Args:
        maxiter: optimiser iterations.
    """

    family: ClassVar[str] = "ses"

    def __init__(self, maxiter: int = 1000) -> None:
        self.maxiter = maxiter

    def _specs(self) -> list[str]:
        return ["ANN"]


class HoltForecaster(_EtsBase):
    """Holt's linear trend, ETS(A,A,N), or its damped form ETS(A,Ad,N).

    Args:
        damped: damp the trend (forecasts level off instead of extending a line).
        maxiter: optimiser iterations.
    """

    family: ClassVar[str] = "holt"

    def __init__(self, damped: bool = False, maxiter: int = 1000) -> None:
        self.damped = damped
        self.maxiter = maxiter

    def _specs(self) -> list[str]:
        return ["AAdN" if self.damped else "AAN"]


class AutoEtsForecaster(_EtsBase):
    """ETS with automatic selection: the lowest AICc among additive-error forms.

    Args:
        specs: the forms tried, from ``ANN``, ``AAN``, ``AAdN``.
        maxiter: optimiser iterations per form.

    Attributes:
        spec_: the chosen form.
        candidates_: AICc of every form tried (``None`` when it failed).
    """

    family: ClassVar[str] = "ets"

    def __init__(self, specs: tuple[str, ...] | list[str] = ("ANN", "AAN", "AAdN"), maxiter: int = 1000) -> None:
        self.specs = specs
        self.maxiter = maxiter

    def _specs(self) -> list[str]:
        unknown = [spec for spec in self.specs if spec not in SPECS]
        if unknown:
            raise ValueError(f"unknown ETS forms {unknown}; choose from {sorted(SPECS)}")
        return list(self.specs)
