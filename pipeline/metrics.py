"""Forecast accuracy metrics shared by the backtest, the study split and the scorecard.

All functions take array-likes of equal length and return a Python ``float``. Percentage
metrics (MAPE, sMAPE) are in percent. Zeros are handled explicitly rather than producing
``inf``: MAPE skips points whose actual value is zero (and returns NaN if every actual is zero),
sMAPE counts a point where actual and forecast are both zero as a perfect 0 %.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    actual = np.asarray(y_true, dtype=np.float64).ravel()
    predicted = np.asarray(y_pred, dtype=np.float64).ravel()
    if actual.shape != predicted.shape:
        raise ValueError(f"y_true has {actual.size} values but y_pred has {predicted.size}")
    if actual.size == 0:
        raise ValueError("metrics need at least one value")
    return actual, predicted


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error.

    Args:
        y_true: actual values.
        y_pred: forecasts.

    Returns:
        ``sqrt(mean((y_true - y_pred)**2))``.
    """
    actual, predicted = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean(np.square(actual - predicted))))


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error.

    Args:
        y_true: actual values.
        y_pred: forecasts.

    Returns:
        ``mean(|y_true - y_pred|)``.
    """
    actual, predicted = _pair(y_true, y_pred)
    return float(np.mean(np.abs(actual - predicted)))


def mape(y_true: Any, y_pred: Any) -> float:
    """Mean absolute percentage error, in percent, over the points whose actual is not zero.

    A zero actual makes the percentage error undefined, and early CO2 series do have zeros, so
    those points are skipped (with a warning saying how many) instead of turning the whole
    metric into ``inf``.

    Args:
        y_true: actual values.
        y_pred: forecasts.

    Returns:
        ``100 * mean(|y_true - y_pred| / |y_true|)`` over non-zero actuals; NaN when every actual
        is zero.
    """
    actual, predicted = _pair(y_true, y_pred)
    keep = actual != 0
    if not keep.all():
        warnings.warn(f"mape: skipped {int((~keep).sum())} point(s) whose actual value is zero", RuntimeWarning, stacklevel=2)
    if not keep.any():
        return float("nan")
    return float(100.0 * np.mean(np.abs(actual[keep] - predicted[keep]) / np.abs(actual[keep])))


def smape(y_true: Any, y_pred: Any) -> float:
    """Symmetric MAPE in percent (0–200), Hyndman & Koehler's form.

    Args:
        y_true: actual values.
        y_pred: forecasts.

    Returns:
        ``100 * mean(2 |y_true - y_pred| / (|y_true| + |y_pred|))``; a point where both are zero
        counts as 0.
    """
    actual, predicted = _pair(y_true, y_pred)
    denominator = np.abs(actual) + np.abs(predicted)
    numerator = 2.0 * np.abs(actual - predicted)
    # 0/0 is a perfect forecast of zero, not an undefined point.
    ratio = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)
    return float(100.0 * np.mean(ratio))


def naive_scale(y_train: Any, m: int = 1) -> float:
    """In-sample MAE of the (seasonal) naive one-step forecast: the MASE denominator.

    Args:
        y_train: the training series.
        m: seasonal period; 1 (yearly data) means the plain naive forecast.

    Returns:
        ``mean(|y_t - y_{t-m}|)`` over the training series.
    """
    train = np.asarray(y_train, dtype=np.float64).ravel()
    if train.size <= m:
        raise ValueError(f"the MASE scale needs more than {m} training values, got {train.size}")
    return float(np.mean(np.abs(train[m:] - train[:-m])))


def mase(y_true: Any, y_pred: Any, y_train: Any, m: int = 1) -> float:
    """Mean absolute scaled error (Hyndman & Koehler 2006).

    Args:
        y_true: actual values over the forecast horizon.
        y_pred: forecasts.
        y_train: the training series the forecast was made from.
        m: seasonal period of the naive scale; 1 for yearly data.

    Returns:
        ``MAE(y_true, y_pred) / naive_scale(y_train, m)``; ``inf`` when the training series is
        constant and the forecast is not exact, NaN when both are zero.
    """
    scale = naive_scale(y_train, m)
    error = mae(y_true, y_pred)
    if scale == 0:
        return float("nan") if error == 0 else float("inf")
    return float(error / scale)


def coverage(y_true: Any, lower: Any, upper: Any) -> float:
    """Share of actual values inside their prediction interval (bounds included).

    Args:
        y_true: actual values.
        lower: lower interval bounds.
        upper: upper interval bounds.

    Returns:
        A fraction in [0, 1]; compare it with the nominal level / 100.
    """
    actual, low = _pair(y_true, lower)
    _, high = _pair(y_true, upper)
    return float(np.mean((actual >= low) & (actual <= high)))


def interval_score(y_true: Any, lower: Any, upper: Any, level: float) -> np.ndarray:
    """Pointwise interval score of Gneiting & Raftery (2007), the numerator of MSIS.

    Args:
        y_true: actual values.
        lower: lower bounds of the ``level`` % interval.
        upper: upper bounds.
        level: the interval's nominal coverage in percent, e.g. 95.

    Returns:
        ``(u - l) + (2 / α) (l - y) 1{y < l} + (2 / α) (y - u) 1{y > u}`` per point, with
        ``α = 1 - level / 100``: the width plus a penalty for each miss.
    """
    actual, low = _pair(y_true, lower)
    _, high = _pair(y_true, upper)
    alpha = 1.0 - float(level) / 100.0
    if not 0 < alpha < 1:
        raise ValueError(f"level must be in (0, 100), got {level}")
    below = np.where(actual < low, low - actual, 0.0)
    above = np.where(actual > high, actual - high, 0.0)
    return (high - low) + (2.0 / alpha) * (below + above)


def msis(y_true: Any, lower: Any, upper: Any, y_train: Any, level: float = 95, m: int = 1) -> float:
    """Mean scaled interval score (M4 competition): interval score over the naive MAE.

    Args:
        y_true: actual values over the forecast horizon.
        lower: lower bounds of the ``level`` % interval.
        upper: upper bounds.
        y_train: the training series (its naive one-step MAE is the scale, as in MASE).
        level: nominal coverage in percent.
        m: seasonal period of the naive scale; 1 for yearly data.

    Returns:
        ``mean(interval_score) / naive_scale(y_train, m)``; lower is better, and a narrow
        interval that misses is punished by ``2 / α`` times the miss.
    """
    scale = naive_scale(y_train, m)
    total = float(np.mean(interval_score(y_true, lower, upper, level)))
    if scale == 0:
        return float("nan") if total == 0 else float("inf")
    return total / scale
