"""Benchmark forecasters every real model has to beat: naive, drift and mean.

Intervals follow Hyndman & Athanasopoulos, *Forecasting: Principles and Practice* (3rd ed.,
section 5.5), assuming normal residuals: ``mean ± z · σ_h`` with ``z`` the normal quantile of
the level and ``σ_h`` the h-step standard deviation given in each class.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from pipeline.maths import z
from pipeline.models.base import Forecaster


def normal_bands(mean: np.ndarray, sigma_h: np.ndarray, levels: tuple[int, ...]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``mean ± z(level) · σ_h`` for each level: normal prediction intervals.

    Args:
        mean: point forecasts.
        sigma_h: forecast standard deviation per step.
        levels: interval levels in percent.

    Returns:
        ``{level: (lower, upper)}``.
    """
    return {level: (mean - z(level) * sigma_h, mean + z(level) * sigma_h) for level in levels}


class NaiveForecaster(Forecaster):
    """Random walk: every future year equals the last observed one.

    ``σ̂² = mean((y_t - y_{t-1})²)`` over the ``T - 1`` one-step naive residuals (nothing is
    estimated, so no degrees of freedom are lost) and ``σ_h = σ̂ √h``.
    """

    family: ClassVar[str] = "naive"

    def __init__(self) -> None:
        pass

    def _fit(self, y: np.ndarray) -> None:
        residuals = np.diff(y)
        self.last_ = float(y[-1])
        self.sigma_ = float(np.sqrt(np.mean(np.square(residuals))))

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        steps = np.arange(1, h + 1, dtype=np.float64)
        mean = np.full(h, self.last_)
        return mean, normal_bands(mean, self.sigma_ * np.sqrt(steps), levels)

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"last": self.last_, "sigma": self.sigma_}, {}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.last_ = float(state["last"])
        self.sigma_ = float(state["sigma"])


class DriftForecaster(Forecaster):
    """Random walk with drift: the line through the first and last observations, extended.

    Drift ``c = (y_T - y_1) / (T - 1)``, the mean of the differences. Residuals
    ``e_t = y_t - y_{t-1} - c``; ``σ̂² = Σ e_t² / (T - 2)`` (one estimated parameter) and
    ``σ_h = σ̂ √(h (1 + h / (T - 1)))``, where the second term is the uncertainty of ``c``.
    """

    family: ClassVar[str] = "drift"

    def __init__(self) -> None:
        pass

    def _fit(self, y: np.ndarray) -> None:
        differences = np.diff(y)
        self.drift_ = float(np.mean(differences))
        residuals = differences - self.drift_
        self.sigma_ = float(np.sqrt(np.sum(np.square(residuals)) / (differences.size - 1)))
        self.last_ = float(y[-1])
        self.n_ = int(y.size)

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        steps = np.arange(1, h + 1, dtype=np.float64)
        mean = self.last_ + self.drift_ * steps
        sigma_h = self.sigma_ * np.sqrt(steps * (1.0 + steps / (self.n_ - 1)))
        return mean, normal_bands(mean, sigma_h, levels)

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"drift": self.drift_, "sigma": self.sigma_, "last": self.last_, "n": self.n_}, {}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.drift_ = float(state["drift"])
        self.sigma_ = float(state["sigma"])
        self.last_ = float(state["last"])
        self.n_ = int(state["n"])


class MeanForecaster(Forecaster):
    """Every future year equals the historical mean; ``σ_h = s √(1 + 1/T)`` with ``s`` the sample sd."""

    family: ClassVar[str] = "mean"

    def __init__(self) -> None:
        pass

    def _fit(self, y: np.ndarray) -> None:
        self.mean_ = float(np.mean(y))
        self.sigma_ = float(np.std(y, ddof=1))
        self.n_ = int(y.size)

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        mean = np.full(h, self.mean_)
        sigma_h = np.full(h, self.sigma_ * np.sqrt(1.0 + 1.0 / self.n_))
        return mean, normal_bands(mean, sigma_h, levels)

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"mean": self.mean_, "sigma": self.sigma_, "n": self.n_}, {}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.mean_ = float(state["mean"])
        self.sigma_ = float(state["sigma"])
        self.n_ = int(state["n"])
