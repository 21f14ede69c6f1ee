"""Rolling-origin backtest shared by every model, and the original study's 200/15 split.

Every candidate is scored on the same windows: :func:`rolling_origin_splits` depends only on
the series length and the settings, never on the model, so two models backtested with the
same arguments see identical training and test years. Each origin refits a fresh model from
``make_model()`` on an expanding window (all years up to the origin) and forecasts the next
``horizon`` years.

Aggregate metrics pool every (origin, step) point. MASE scales each point's absolute error by
the in-sample naive one-step MAE of *its own* training window, then averages, so origins with
different histories are comparable; interval coverage is the share of actual values inside
the interval.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline import metrics
from pipeline.models.base import DEFAULT_LEVELS, Forecaster, check_levels, check_series


@dataclass(frozen=True)
class Split:
    """One origin: train on ``values[:train_end]``, test on ``values[train_end:test_end]``.

    Attributes:
        train_end: number of training values (exclusive end index).
        test_end: exclusive end index of the test window.
    """

    train_end: int
    test_end: int

    @property
    def train(self) -> slice:
        """Slice of the training values."""
        return slice(0, self.train_end)

    @property
    def test(self) -> slice:
        """Slice of the test values."""
        return slice(self.train_end, self.test_end)


def rolling_origin_splits(n: int, horizon: int, n_origins: int, min_train: int = 10, step: int | None = None) -> list[Split]:
    """Expanding-window splits whose last test window ends at the last value.

    The origins are ``step`` years apart (default ``horizon``: test windows that do not
    overlap, so ``n_origins`` origins cover the last ``n_origins * horizon`` years). Origins that
    would leave fewer than ``min_train`` training values are dropped, earliest first, with a
    warning.

    Args:
        n: series length.
        horizon: test years per origin.
        n_origins: origins wanted.
        min_train: fewest training values accepted.
        step: years between origins (default ``horizon``).

    Returns:
        The splits, earliest origin first.

    Raises:
        ValueError: when not even one origin leaves ``min_train`` training values.
    """
    if horizon < 1 or n_origins < 1:
        raise ValueError(f"horizon and n_origins must be positive, got {horizon} and {n_origins}")
    step = horizon if step is None else int(step)
    if step < 1:
        raise ValueError(f"step must be positive, got {step}")
    ends = [n - horizon - k * step for k in reversed(range(n_origins))]
    splits = [Split(train_end=end, test_end=end + horizon) for end in ends if end >= min_train]
    if not splits:
        raise ValueError(f"a series of {n} values cannot give one origin with horizon {horizon} and at least {min_train} training values")
    if len(splits) < n_origins:
        warnings.warn(f"only {len(splits)} of {n_origins} origins leave {min_train} training values", RuntimeWarning, stacklevel=2)
    return splits


@dataclass
class BacktestResult:
    """Forecasts and scores of one model on a set of origins.

    Attributes:
        model: the model's ``repr`` (family and hyperparameters).
        family: the model family.
        splits: the windows used.
        forecasts: one row per (origin, step): ``origin_year`` (last training year), ``year``,
            ``step`` (1..horizon), ``actual``, ``mean``, ``lo_<level>``, ``hi_<level>``,
            ``scale`` (that origin's naive MAE).
        metrics: pooled ``rmse, mae, mape, smape, mase, coverage_<level>``.
        by_horizon: the same metrics per step (index ``step``).
        per_origin: the same metrics per origin (index ``origin_year``).
        fit_seconds: total wall time spent in fit + predict, summed over origins.
    """

    model: str
    family: str
    splits: list[Split]
    forecasts: pd.DataFrame
    metrics: dict[str, float]
    by_horizon: pd.DataFrame
    per_origin: pd.DataFrame
    fit_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary for MLflow / XCom (no per-point forecasts)."""
        return {
            "model": self.model,
            "family": self.family,
            "origins": [int(y) for y in self.per_origin.index],
            "horizon": int(self.forecasts["step"].max()),
            "metrics": {k: _finite(v) for k, v in self.metrics.items()},
            "by_horizon": {int(step): {k: _finite(v) for k, v in row.items()} for step, row in self.by_horizon.to_dict("index").items()},
            "fit_seconds": self.fit_seconds,
        }


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None


def score(frame: pd.DataFrame, levels: tuple[int, ...]) -> dict[str, float]:
    """Pooled metrics of a forecast frame (columns as in :attr:`BacktestResult.forecasts`).

    Args:
        frame: rows with ``actual, mean, scale`` and ``lo_<level>, hi_<level>``.
        levels: interval levels present in the frame.

    Returns:
        ``rmse, mae, mape, smape, mase`` and ``coverage_<level>`` per level.
    """
    actual = frame["actual"].to_numpy()
    mean = frame["mean"].to_numpy()
    with warnings.catch_warnings():
        # zero actuals: mape skips them by design; the warning adds nothing per group.
        warnings.simplefilter("ignore", RuntimeWarning)
        mape = metrics.mape(actual, mean)
    scale = frame["scale"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.abs(actual - mean) / scale
    result = {
        "rmse": metrics.rmse(actual, mean),
        "mae": metrics.mae(actual, mean),
        "mape": mape,
        "smape": metrics.smape(actual, mean),
        "mase": float(np.mean(scaled)),
    }
    for level in levels:
        result[f"coverage_{level}"] = metrics.coverage(actual, frame[f"lo_{level}"], frame[f"hi_{level}"])
    return result


def _run(
    make_model: Callable[[], Forecaster],
    years: np.ndarray,
    values: np.ndarray,
    splits: list[Split],
    levels: tuple[int, ...],
) -> BacktestResult:
    frames = []
    seconds = 0.0
    description = family = ""
    for split in splits:
        model = make_model()
        description, family = repr(model), model.family
        train_y, train_years = values[split.train], years[split.train]
        horizon = split.test_end - split.train_end
        start = time.perf_counter()
        forecast = model.fit(train_y, train_years).predict(horizon, levels)
        seconds += time.perf_counter() - start
        frame = forecast.to_frame()
        frame.insert(0, "origin_year", int(train_years[-1]))
        frame.insert(2, "step", np.arange(1, horizon + 1))
        frame.insert(3, "actual", values[split.test])
        frame["scale"] = metrics.naive_scale(train_y)
        frames.append(frame)
    forecasts = pd.concat(frames, ignore_index=True)
    by_horizon = pd.DataFrame({step: score(group, levels) for step, group in forecasts.groupby("step")}).T
    by_horizon.index.name = "step"
    per_origin = pd.DataFrame({origin: score(group, levels) for origin, group in forecasts.groupby("origin_year")}).T
    per_origin.index.name = "origin_year"
    return BacktestResult(
        model=description,
        family=family,
        splits=list(splits),
        forecasts=forecasts,
        metrics=score(forecasts, levels),
        by_horizon=by_horizon,
        per_origin=per_origin,
        fit_seconds=seconds,
    )


def backtest(
    make_model: Callable[[], Forecaster],
    years: Any,
    values: Any,
    horizon: int = 5,
    n_origins: int = 5,
    levels: Any = DEFAULT_LEVELS,
    min_train: int = 10,
    step: int | None = None,
) -> BacktestResult:
    """Rolling-origin backtest of one model.

    Args:
        make_model: returns a fresh, unfitted model (called once per origin).
        years: consecutive years.
        values: one value per year.
        horizon: years forecast from each origin.
        n_origins: number of origins (see :func:`rolling_origin_splits`).
        levels: interval levels in percent.
        min_train: fewest training values for an origin.
        step: years between origins (default ``horizon``).

    Returns:
        The :class:`BacktestResult`.
    """
    y, year_arr = check_series(values, years)
    checked = check_levels(levels)
    splits = rolling_origin_splits(y.size, horizon, n_origins, min_train=min_train, step=step)
    return _run(make_model, year_arr, y, splits, checked)


def study_split(
    make_model: Callable[[], Forecaster],
    years: Any,
    values: Any,
    train: int = 200,
    levels: Any = DEFAULT_LEVELS,
) -> BacktestResult:
    """The original study's evaluation: fit on the first ``train`` years, forecast the rest.

    For Canada 1800–2014 that is 1800–1999 for training and 2000–2014 (15 years) for testing.

    Args:
        make_model: returns a fresh, unfitted model.
        years: consecutive years.
        values: one value per year.
        train: number of training years.
        levels: interval levels in percent.

    Returns:
        A :class:`BacktestResult` with a single origin.
    """
    y, year_arr = check_series(values, years)
    if not 0 < train < y.size:
        raise ValueError(f"train must be between 1 and {y.size - 1} for a series of {y.size} values, got {train}")
    return _run(make_model, year_arr, y, [Split(train_end=train, test_end=y.size)], check_levels(levels))
