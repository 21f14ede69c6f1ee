"""Any forecaster on a transformed and/or differenced series, forecasting in levels.

The study's transforms (:mod:`pipeline.transforms`: log, sqrt, reciprocal, Box–Cox, then
differencing of order ``d``) are available to every candidate through this wrapper. Elementwise
transforms are monotone, so a quantile of the transformed forecast maps to the same quantile in
levels exactly; intervals of differenced forecasts are integrated as a linear process whose
impulse weights are read off the inner model's growing standard deviations (exact for non-negative
weights: naive on ``d = 1`` is ARIMA(0,2,0); see :meth:`pipeline.transforms.Difference.integrate_std`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from pipeline.maths import z
from pipeline.models.base import Forecaster, clone
from pipeline.transforms import Difference, make_transform, transform_from_dict


class TransformedForecaster(Forecaster):
    """Run a forecaster on ``transform(y)`` differenced ``d`` times; forecast in levels.

    The inner model is a template: each fit works on a fresh clone of it (``model_``), so two
    wrappers built around the same instance never share fitted state.

    Args:
        model: the inner forecaster (a template; it is never fitted itself).
        transform: elementwise transform applied first: ``identity``, ``log``, ``sqrt``,
            ``reciprocal`` or ``boxcox``.
        d: differencing order applied after the transform.
        boxcox_lambda: Box–Cox lambda (``None`` estimates it on fit).
    """

    family: ClassVar[str] = "transformed"

    def __init__(self, model: Forecaster, transform: str = "identity", d: int = 0, boxcox_lambda: float | None = None) -> None:
        self.model = model
        self.transform = transform
        self.d = d
        self.boxcox_lambda = boxcox_lambda

    @property
    def min_obs(self) -> int:  # type: ignore[override]
        """The inner model's minimum plus the values differencing uses up."""
        return int(self.model.min_obs) + int(self.d)

    def _fit(self, y: np.ndarray) -> None:
        kwargs = {"lmbda": self.boxcox_lambda} if self.transform == "boxcox" else {}
        self.transform_ = make_transform(self.transform, **kwargs).fit(y)
        scaled = self.transform_.transform(y)
        self.difference_ = Difference(int(self.d)).fit(scaled)
        self.model_ = clone(self.model).fit(self.difference_.transform(scaled))

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        inner = self.model_.predict(h, levels)
        centre = self.difference_.inverse_forecast(inner.mean)
        mean = self.transform_.inverse_transform(centre)
        bounds = {}
        for level in levels:
            if int(self.d) == 0:
                lo, hi = inner.lower[level], inner.upper[level]
            else:
                std = (inner.upper[level] - inner.lower[level]) / (2 * z(level))
                half = z(level) * self.difference_.integrate_std(std)
                lo, hi = centre - half, centre + half
            # Clipped to the transform's range and ordered (the reciprocal is decreasing);
            # a forecast with no level refuses here, so the backtest drops the candidate with the reason.
            mean, lo, hi = self.transform_.inverse_interval(centre, lo, hi)
            bounds[level] = (lo, hi)
        return mean, bounds

    # -- persistence: the fitted inner model is saved as a child ---------------------------
    def _fitted_children(self) -> dict[str, Forecaster]:
        return {"model": self.model_}

    def _set_children(self, children: dict[str, Forecaster]) -> None:
        self.model_ = children["model"]

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"transform": self.transform_.to_dict()}, {"heads": self.difference_.heads_, "tails": self.difference_.tails_}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.transform_ = transform_from_dict(state["transform"])
        self.difference_ = Difference(int(self.d))
        self.difference_.heads_, self.difference_.tails_ = arrays["heads"], arrays["tails"]
