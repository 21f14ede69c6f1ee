"""Intervals calibrated on backtest errors, and a floor under the forecasts.

A model's own intervals rest on its assumptions (normal errors, a correct model); in the
backtest ARIMA's 95 % bands held only 75–88 % of the later actuals. This wrapper keeps the
inner model's point forecast and the *shape* of its bands (widening with the horizon,
asymmetric if they are) and multiplies each half-width by a factor learnt from the backtest:
split-conformal calibration of normalised errors. For a backtest point with actual ``y``,
forecast ``m`` and bounds ``[lo, hi]`` at a level, the score is ``(y - m) / (hi - m)`` above the
mean and ``(m - y) / (m - lo)`` below; the factor is the ``⌈(n + 1) · level / 100⌉``-th smallest of
the ``n`` scores (:func:`pipeline.backtest.calibration_factors` computes it, per horizon step
where a step has enough points, pooled otherwise). A level whose rank is past the ``n`` scores
(95 % with fewer than 19) takes at least the factor of the highest lower level whose rank fits,
on its own wider bands (:data:`pipeline.backtest.BORROW_UNSUPPORTED_LEVELS`). The wrapper accepts a factor below 1
(it narrows bands that were too wide), but the backtest never learns one by default
(:data:`pipeline.backtest.MIN_CALIBRATION_FACTOR`): a few windows are too little evidence to
make a model's bands narrower than its own. Nor does it learn one above
:data:`pipeline.backtest.MAX_CALIBRATION_FACTOR`: a backtest point that far outside the bands
is a break or an outlier, which the final fit has already seen in its own training years.

The floor: CO2 emissions are never negative, so the mean and both bounds are clipped at
``floor`` (0 by default) in levels, and the publish gate never sees a negative forecast.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from pipeline.models.base import Forecaster, clone


class CalibratedForecaster(Forecaster):
    """Wrap a forecaster: scale its interval half-widths by backtest factors; floor the levels.

    Args:
        model: the inner forecaster (a template: each fit works on a fresh clone).
        factors: level -> multipliers by horizon step (``factors[level][j]`` for step
            ``j + 1``; steps beyond the list use its last value). ``None`` or a missing level
            leaves that level's bands as the model gives them.
        floor: lowest value a forecast or bound may take (``None``: no floor).

    Attributes:
        model_: the fitted clone of ``model``.
    """

    family: ClassVar[str] = "calibrated"

    def __init__(self, model: Forecaster, factors: Mapping[int, Sequence[float]] | None = None, floor: float | None = 0.0) -> None:
        self.model = model
        self.factors = factors
        self.floor = floor

    @property
    def min_obs(self) -> int:  # type: ignore[override]
        """The inner model's minimum."""
        return int(self.model.min_obs)

    def _fit(self, y: np.ndarray) -> None:
        self.model_ = clone(self.model).fit(y)

    def factor(self, level: int, h: int) -> np.ndarray:
        """The multipliers for steps ``1 .. h`` at ``level`` (ones when none were learnt)."""
        # JSON turns integer keys into strings: accept both.
        known = {int(k): list(v) for k, v in (self.factors or {}).items()}
        if level not in known or not known[level]:
            return np.ones(h)
        values = np.asarray(known[level], dtype=np.float64)
        if h <= values.size:
            return values[:h].copy()
        return np.concatenate([values, np.full(h - values.size, values[-1])])

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        inner = self.model_.predict(h, levels)
        mean = inner.mean
        bounds = {}
        for level in levels:
            k = self.factor(level, h)
            lo = mean - k * (mean - inner.lower[level])
            hi = mean + k * (inner.upper[level] - mean)
            bounds[level] = (lo, hi)
        if self.floor is not None:
            floor = float(self.floor)
            mean = np.maximum(mean, floor)
            bounds = {level: (np.maximum(lo, floor), np.maximum(hi, floor)) for level, (lo, hi) in bounds.items()}
        # Narrowed bands must still nest: the 80 % inside the 95 %.
        ordered = sorted(levels)
        for small, large in itertools.pairwise(ordered):
            lo_s, hi_s = bounds[small]
            lo_l, hi_l = bounds[large]
            bounds[large] = (np.minimum(lo_l, lo_s), np.maximum(hi_l, hi_s))
        return mean, bounds

    def _fitted_children(self) -> dict[str, Forecaster]:
        return {"model": self.model_}

    def _set_children(self, children: dict[str, Forecaster]) -> None:
        self.model_ = children["model"]
