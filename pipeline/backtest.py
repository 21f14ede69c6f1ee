"""Rolling-origin backtest shared by every model, and the original study's 200/15 split.

Every candidate is scored on the same windows: :func:`rolling_origin_splits` depends only on
the series length and the settings, never on the model, so two models backtested with the
same arguments see identical training and test years. Each origin refits a fresh model from
``make_model()`` on an expanding window (all years up to the origin) and forecasts the next
``horizon`` years.

Aggregate metrics pool every (origin, step) point. MASE scales each point's absolute error by
the in-sample naive one-step MAE of *its own* training window, then averages, so origins with
different histories are comparable (MSIS scales the interval score the same way); interval
coverage is the share of actual values inside the interval.

Many candidates at once: :func:`evaluate_candidates` runs every candidate on the same
windows (:func:`plan_windows`, which also copes with short series), drops a candidate that
fails in any window with the reason recorded while the others go on, reuses member forecasts
for combinations, and learns each candidate's interval calibration
(:func:`calibration_factors`) from its backtest errors.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from pipeline import metrics
from pipeline.errors import PermanentError
from pipeline.models.base import DEFAULT_LEVELS, Forecast, Forecaster, check_levels, check_series, clone, to_spec
from pipeline.models.combination import CombinationForecaster, combine

#: Fewest yearly points a series needs to be backtested (and forecast) at all.
MIN_POINTS = 12
#: Fewest training points the earliest window of a short series may keep.
MIN_TRAIN_SHORT = 7
#: A horizon step needs this many backtest points for its own calibration factor;
#: otherwise all steps share one pooled factor.
MIN_POINTS_PER_STEP = 20
#: Smallest interval multiplier the backtest may set: it widens a model's own bands when they
#: missed, but never narrows them. On the validation run of ``benchmarks/accuracy.py``
#: (train to 2006, forecast 2007-2010) the narrowing factors learnt on a handful of windows
#: cost coverage and MSIS on every panel (95 % coverage on the last-20-point series fell
#: from 0.81-0.90 to 0.76-0.83 with factors below 1 allowed).
MIN_CALIBRATION_FACTOR = 1.0
#: Largest interval multiplier the backtest may set. With 5 windows of 5 steps the 95 % factor
#: is the largest of 25 scores, so one point decides it: a level shift or a one-year spike in a
#: test window, against the narrow bands of a model that had never seen one, gives a score of
#: 20-7,000 (OWID's "Statistical Difference": one spike of 478 in a series of +-0.004, a factor
#: of 7,570). That is not a band too narrow by a factor but a break, and the final fit, trained
#: on the years with the break, already widens its own bands for it: multiplying them again made
#: 95 % bands thousands of times too wide (mean MSIS 1185 against AutoETS's 45 on the total CO2
#: series, train to 2010; 547 on the validation run, train to 2006). On that validation run
#: (total CO2, full histories) a cap of 3 began to cost coverage and 5, 10 or 20 changed no
#: covered point; 10 (a miss by ten of the model's own half-widths) keeps a wide margin, and on
#: the test run it changed no covered point on any panel (mean MSIS on total CO2, full
#: histories: 1185 -> 37).
MAX_CALIBRATION_FACTOR = 10.0
#: A level whose conformal rank ``⌈(n + 1) · level / 100⌉`` exceeds the ``n`` backtest scores
#: (95 % with fewer than 19: series of 12-29 points, one to three windows of 5 scores) gets at
#: least the factor of the highest lower level whose rank fits, applied to its own wider bands:
#: the backtest sets the scale, the model's bands the tail beyond it. Without it the factor was
#: the largest score alone: with 5 scores the 95 % band was the 80 % band (both as wide as the
#: widest miss), and on Gaussian errors it held 5/6 = 83 % of new errors (10 scores: 10/11 =
#: 91 %); with it, 94 % and 95 % (``tests/test_evaluate.py``). Levels whose rank fits, and every
#: series with 4+ windows, are unchanged. Part of the run key (:func:`pipeline.core.forecast_rules`); the
#: rule's arrival raised :data:`pipeline.core.FORECAST_REVISION` to 3.
BORROW_UNSUPPORTED_LEVELS = True


class SeriesTooShortError(PermanentError, ValueError):
    """A series with fewer than :data:`MIN_POINTS` values: too short to backtest or forecast."""


class NoCandidateError(PermanentError, RuntimeError):
    """Every candidate failed in the backtest of a series: there is nothing to select."""


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


def score(frame: pd.DataFrame | Mapping[str, np.ndarray], levels: tuple[int, ...]) -> dict[str, float]:
    """Pooled metrics of a forecast frame (columns as in :attr:`BacktestResult.forecasts`).

    Args:
        frame: rows with ``actual, mean, scale`` and ``lo_<level>, hi_<level>`` (a data frame,
            or a mapping of those columns to arrays).
        levels: interval levels present in the frame.

    Returns:
        ``rmse, mae, mape, smape, mase``, and ``coverage_<level>`` and ``msis_<level>`` per
        level. The scaled metrics (``mase``, ``msis_*``) leave out rows whose scale is zero
        (NaN when every row's is).
    """
    actual = np.asarray(frame["actual"])
    mean = np.asarray(frame["mean"])
    with warnings.catch_warnings():
        # zero actuals: mape skips them by design; the warning adds nothing per group.
        warnings.simplefilter("ignore", RuntimeWarning)
        mape = metrics.mape(actual, mean)
    scale = np.asarray(frame["scale"])
    # A window whose training part is flat has no naive error to scale by: its scaled errors
    # are undefined (x / 0), and one such window would make every candidate's pooled MASE and
    # MSIS infinite, leaving the selection nothing to compare. They are left out of both.
    scaled_rows = scale > 0
    result = {
        "rmse": metrics.rmse(actual, mean),
        "mae": metrics.mae(actual, mean),
        "mape": mape,
        "smape": metrics.smape(actual, mean),
        "mase": _mean_or_nan(np.abs(actual - mean)[scaled_rows] / scale[scaled_rows]),
    }
    for level in levels:
        result[f"coverage_{level}"] = metrics.coverage(actual, np.asarray(frame[f"lo_{level}"]), np.asarray(frame[f"hi_{level}"]))
    for level in levels:
        interval = metrics.interval_score(actual, np.asarray(frame[f"lo_{level}"]), np.asarray(frame[f"hi_{level}"]), level)
        result[f"msis_{level}"] = _mean_or_nan(interval[scaled_rows] / scale[scaled_rows])
    return result


def _mean_or_nan(values: np.ndarray) -> float:
    """The mean, or NaN for no values (every window's scale was zero) without numpy's warning."""
    return float(np.mean(values)) if values.size else math.nan


def step_scores(forecasts: pd.DataFrame, levels: tuple[int, ...]) -> dict[int, dict[str, float]]:
    """:func:`score` of the backtest rows of each horizon step: the ``by_horizon`` of a candidate.

    The same numbers as ``grouped_scores(forecasts, levels)[0]``, from column arrays rather
    than one data frame per group (the backtest of a series scores some twenty candidates).
    """
    names = ("actual", "mean", "scale", *(f"{side}_{level}" for level in levels for side in ("lo", "hi")))
    columns = {name: forecasts[name].to_numpy() for name in names}
    steps = forecasts["step"].to_numpy()
    return {int(step): score({name: values[steps == step] for name, values in columns.items()}, levels) for step in np.unique(steps)}


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
        start = time.perf_counter()
        forecast = model.fit(train_y, train_years).predict(split.test_end - split.train_end, levels)
        seconds += time.perf_counter() - start
        frames.append(window_frame(forecast, split, values, years))
    forecasts = pd.concat(frames, ignore_index=True)
    by_horizon, per_origin = grouped_scores(forecasts, levels)
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


def window_frame(forecast: Forecast, split: Split, values: np.ndarray, years: np.ndarray) -> pd.DataFrame:
    """One window's forecast as backtest rows (columns of :attr:`BacktestResult.forecasts`).

    Args:
        forecast: the forecast made at the split's origin.
        split: the window.
        values: the whole series.
        years: its years.

    Returns:
        ``origin_year, year, step, actual, mean, lo_*, hi_*, scale``, one row per step.
    """
    return pd.DataFrame(_window_columns(forecast, split, values, years))


def _window_columns(forecast: Forecast, split: Split, values: np.ndarray, years: np.ndarray) -> dict[str, np.ndarray]:
    """The columns of :func:`window_frame`, as arrays in their order."""
    horizon = split.test_end - split.train_end
    columns = {
        "origin_year": np.full(horizon, int(years[split.train_end - 1]), dtype=np.int64),
        "year": np.asarray(forecast.years).astype(int),
        "step": np.arange(1, horizon + 1),
        "actual": values[split.test],
        "mean": forecast.mean,
    }
    for level in sorted(forecast.lower):
        columns[f"lo_{level}"] = forecast.lower[level]
        columns[f"hi_{level}"] = forecast.upper[level]
    columns["scale"] = np.full(horizon, metrics.naive_scale(values[split.train]), dtype=np.float64)
    return columns


def grouped_scores(forecasts: pd.DataFrame, levels: tuple[int, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics of backtest rows by horizon step and by origin (see :func:`score`).

    Args:
        forecasts: backtest rows.
        levels: interval levels present.

    Returns:
        ``(by_horizon, per_origin)`` frames indexed by ``step`` and ``origin_year``.
    """
    by_horizon = pd.DataFrame({step: score(group, levels) for step, group in forecasts.groupby("step")}).T
    by_horizon.index.name = "step"
    per_origin = pd.DataFrame({origin: score(group, levels) for origin, group in forecasts.groupby("origin_year")}).T
    per_origin.index.name = "origin_year"
    return by_horizon, per_origin


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


# -- many candidates on one set of windows ---------------------------------------------------
@dataclass(frozen=True)
class WindowPlan:
    """The backtest windows of one series, shared by every candidate.

    Attributes:
        splits: the windows, earliest origin first.
        horizon: test years per window.
        n_origins: origins asked for (``len(splits)`` may be fewer on a short series).
        notes: why the plan differs from what was asked (fewer origins, shorter training).
    """

    splits: tuple[Split, ...]
    horizon: int
    n_origins: int
    notes: tuple[str, ...] = ()

    @property
    def min_train(self) -> int:
        """Training points of the earliest window: the fewest any candidate is fitted on."""
        return self.splits[0].train_end

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "splits": [[s.train_end, s.test_end] for s in self.splits],
            "horizon": self.horizon,
            "n_origins": self.n_origins,
            "notes": list(self.notes),
        }


def plan_windows(n: int, horizon: int = 5, n_origins: int = 5, min_train: int = 10, step: int | None = None) -> WindowPlan:
    """Rolling-origin windows for a series of ``n`` points, shrunk for short series.

    A long series gets :func:`rolling_origin_splits` as asked. A short one (as few as
    :data:`MIN_POINTS`) keeps at least one window: the earliest training window may shrink to
    :data:`MIN_TRAIN_SHORT` points, then the horizon shrinks; each reduction is noted.

    Args:
        n: series length.
        horizon: test years per window.
        n_origins: origins wanted.
        min_train: fewest training points wanted for a window.
        step: years between origins (default ``horizon``).

    Returns:
        The :class:`WindowPlan`.

    Raises:
        SeriesTooShortError: when ``n < MIN_POINTS``.
    """
    if n < MIN_POINTS:
        raise SeriesTooShortError(f"the series has {n} yearly values; at least {MIN_POINTS} are needed to backtest and forecast it")
    notes = []
    if n - horizon < min_train:
        shorter = max(MIN_TRAIN_SHORT, n - horizon)
        notes.append(f"short series ({n} values): earliest training window reduced from {min_train} to {shorter} values")
        min_train = shorter
    if n - horizon < min_train:
        new_horizon = n - min_train
        notes.append(f"short series ({n} values): backtest horizon reduced from {horizon} to {new_horizon} years")
        horizon = new_horizon
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = rolling_origin_splits(n, horizon, n_origins, min_train=min_train, step=step)
    if len(splits) < n_origins:
        notes.append(f"{len(splits)} of {n_origins} backtest origins fit in {n} values ({min_train}+ training values each)")
    del caught
    return WindowPlan(splits=tuple(splits), horizon=horizon, n_origins=n_origins, notes=tuple(notes))


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's backtest on the shared windows.

    Attributes:
        name: the candidate's name in the candidate set.
        family: its model family.
        spec: class and every hyperparameter (:func:`pipeline.models.base.to_spec`).
        metrics: pooled metrics (see :func:`score`).
        by_horizon: step -> metrics at that step.
        forecasts: the per-point rows (see :attr:`BacktestResult.forecasts`).
        calibration: level -> interval multipliers by step (:func:`calibration_factors`).
        fit_seconds: wall time in fit + predict over all windows.
    """

    name: str
    family: str
    spec: dict[str, Any]
    metrics: dict[str, float]
    by_horizon: dict[int, dict[str, float]]
    forecasts: pd.DataFrame
    calibration: dict[int, list[float]]
    fit_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no per-point rows)."""
        return {
            "name": self.name,
            "family": self.family,
            "spec": self.spec,
            "metrics": {k: _finite(v) for k, v in self.metrics.items()},
            "by_horizon": {int(step): {k: _finite(v) for k, v in row.items()} for step, row in self.by_horizon.items()},
            "calibration": {int(level): [float(f) for f in factors] for level, factors in self.calibration.items()},
            "fit_seconds": self.fit_seconds,
        }


@dataclass(frozen=True)
class Evaluation:
    """Every candidate of one series on the same windows.

    Attributes:
        plan: the windows.
        levels: interval levels scored.
        results: name -> result of each candidate that ran in every window.
        failed: name -> why it was dropped for this series (one line).
    """

    plan: WindowPlan
    levels: tuple[int, ...]
    results: dict[str, CandidateResult]
    failed: dict[str, str]

    def table(self, columns: tuple[str, ...] = ("mase", "smape", "coverage_80", "coverage_95", "msis_95")) -> pd.DataFrame:
        """One row per candidate (index ``name``), the chosen metric columns, best MASE first."""
        frame = pd.DataFrame({name: {c: r.metrics.get(c, math.nan) for c in columns} for name, r in self.results.items()}).T
        frame.index.name = "name"
        return frame.sort_values(columns[0]) if columns and not frame.empty else frame

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary for MLflow / XCom."""
        return {
            "plan": self.plan.to_dict(),
            "levels": list(self.levels),
            "results": {name: result.to_dict() for name, result in self.results.items()},
            "failed": dict(self.failed),
        }


def calibration_factors(
    forecasts: pd.DataFrame,
    levels: tuple[int, ...],
    min_points_per_step: int = MIN_POINTS_PER_STEP,
    min_factor: float = MIN_CALIBRATION_FACTOR,
    max_factor: float = MAX_CALIBRATION_FACTOR,
    borrow: bool = BORROW_UNSUPPORTED_LEVELS,
) -> dict[int, list[float]]:
    """Split-conformal multipliers of interval half-widths, from backtest rows.

    For each point the score is the error divided by the half-width on its side of the mean
    (``(y - m) / (hi - m)`` above, ``(m - y) / (m - lo)`` below): the interval scaled by ``k``
    contains the point exactly when ``score <= k``. The factor for a level is the
    ``⌈(n + 1) · level / 100⌉``-th smallest of the ``n`` scores, per horizon step when every step
    has ``min_points_per_step`` points, else pooled over all steps, and kept within
    ``[min_factor, max_factor]``.

    When that rank exceeds ``n`` (fewer than 19 scores for 95 %: 5 on a series with one backtest
    window, 10 with two) the errors cannot support the level, and its factor is the largest
    score; with ``borrow`` it is at least the factor of the highest lower level whose rank fits
    in the same group, applied to this level's own (wider) bands: the backtest sets the scale,
    the model's bands the tail beyond it (see :data:`BORROW_UNSUPPORTED_LEVELS`). Levels whose
    rank fits are never changed by ``borrow``, and a borrowed factor only widens.

    Args:
        forecasts: backtest rows with ``step, actual, mean, lo_<level>, hi_<level>``.
        levels: interval levels.
        min_points_per_step: points a step needs for a factor of its own.
        min_factor: smallest factor returned (1: the backtest may widen the model's bands,
            never narrow them; 0: the plain conformal factor).
        max_factor: largest factor returned (``inf``: no cap): a score far beyond the model's
            bands is a break or an outlier, not a spread the bands misjudged by that factor
            (see :data:`MAX_CALIBRATION_FACTOR`). A miss by a zero-width band scores ``inf``
            and is ranked like any other score, so with no cap the factor can be ``inf``.
        borrow: a level the scores cannot support takes at least the factor of the highest
            lower level they do support (``False``: the largest score only).

    Returns:
        level -> factors by step (one pooled factor when steps are pooled).

    Raises:
        ValueError: when ``max_factor < min_factor``.
    """
    counts = forecasts.groupby("step").size()
    per_step = bool(len(counts)) and int(counts.min()) >= min_points_per_step
    groups = [group for _, group in forecasts.groupby("step")] if per_step else [forecasts]
    floor, cap = float(min_factor), float(max_factor)
    if cap < floor:
        raise ValueError(f"max_factor {cap} is below min_factor {floor}")
    factors: dict[int, list[float]] = {int(level): [] for level in levels}
    for group in groups:
        supported: float | None = None  # the factor of the highest level below whose rank fits
        for level in sorted(factors):
            factor, fits = _conformal_factor(group, level)
            factor = min(cap, max(floor, factor))
            if fits:
                supported = factor
            elif borrow and supported is not None:
                factor = max(factor, supported)
            factors[level].append(factor)
    return {int(level): factors[int(level)] for level in levels}


def _conformal_factor(rows: pd.DataFrame, level: int) -> tuple[float, bool]:
    """The conformal factor of ``level`` on ``rows``, and whether its rank fits in the scores (``False``: the largest)."""
    actual = rows["actual"].to_numpy(dtype=np.float64)
    mean = rows["mean"].to_numpy(dtype=np.float64)
    upper_half = rows[f"hi_{level}"].to_numpy(dtype=np.float64) - mean
    lower_half = mean - rows[f"lo_{level}"].to_numpy(dtype=np.float64)
    error = actual - mean
    half = np.where(error >= 0, upper_half, lower_half)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(error == 0, 0.0, np.abs(error) / half)
    # A zero-width band that missed scores +inf: no multiplier covers it, so it ranks above
    # every finite score (dropping it would bias the factor down) and the cap bounds the result.
    # Only undefined scores (NaN) and inverted bands (half < 0) are left out.
    scores = np.sort(scores[~np.isnan(scores) & (half >= 0)])
    if scores.size == 0:
        return 1.0, False
    rank = math.ceil((scores.size + 1) * level / 100)
    return float(scores[min(rank, scores.size) - 1]), rank <= scores.size


def evaluate_candidates(
    candidates: Mapping[str, Forecaster],
    years: Any,
    values: Any,
    horizon: int = 5,
    n_origins: int = 5,
    levels: Any = DEFAULT_LEVELS,
    min_train: int = 10,
    step: int | None = None,
) -> Evaluation:
    """Backtest every candidate on the same rolling-origin windows.

    A candidate that raises, or forecasts a non-finite value, in any window is dropped for this
    series with the reason in :attr:`Evaluation.failed`; the others go on. Combinations are
    scored from their members' forecasts in each window (members already run as candidates
    are not refitted). The candidates passed in are never fitted: each window fits a clone.

    Args:
        candidates: name -> unfitted forecaster.
        years: consecutive years.
        values: one value per year.
        horizon: years forecast from each origin.
        n_origins: origins wanted (fewer on a short series; see :func:`plan_windows`).
        levels: interval levels in percent.
        min_train: fewest training values wanted for a window.
        step: years between origins (default ``horizon``).

    Returns:
        The :class:`Evaluation`.

    Raises:
        SeriesTooShortError: the series has fewer than :data:`MIN_POINTS` values.
        NoCandidateError: every candidate failed.
    """
    y, year_arr = check_series(values, years, min_obs=1)
    checked = check_levels(levels)
    plan = plan_windows(y.size, horizon, n_origins, min_train=min_train, step=step)
    keys = {name: _key(model) for name, model in candidates.items()}
    # Plain models first, so a combination finds its members' forecasts in the cache.
    order = sorted(candidates, key=lambda name: isinstance(candidates[name], CombinationForecaster))
    rows: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in candidates}
    seconds = dict.fromkeys(candidates, 0.0)
    failed: dict[str, str] = {}
    for split in plan.splits:
        window = _Window(y[split.train], year_arr[split.train], split.test_end - split.train_end, checked)
        for name in order:
            if name in failed:
                continue
            model = candidates[name]
            start = time.perf_counter()
            try:
                if isinstance(model, CombinationForecaster):
                    forecast = combine([window.forecast(member, _key(member)) for member in model.members], str(model.method))
                else:
                    forecast = window.forecast(model, keys[name])
            except _CandidateFailed as failure:
                failed[name] = f"{failure} (window {int(window.years[0])}-{int(window.years[-1])})"
                continue
            finally:
                seconds[name] += time.perf_counter() - start
            rows[name].append(_window_columns(forecast, split, y, year_arr))
    results = {}
    for name, model in candidates.items():
        if name in failed:
            continue
        # One frame per candidate from its windows' arrays (a frame per window, concatenated, cost more than the scores).
        forecasts = pd.DataFrame({column: np.concatenate([window[column] for window in rows[name]]) for column in rows[name][0]})
        results[name] = CandidateResult(
            name=name,
            family=model.family,
            spec=to_spec(model),
            metrics=score(forecasts, checked),
            by_horizon=step_scores(forecasts, checked),
            forecasts=forecasts,
            calibration=calibration_factors(forecasts, checked),
            fit_seconds=seconds[name],
        )
    if not results:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in failed.items())
        raise NoCandidateError(f"every candidate failed in the backtest: {reasons}")
    flat = [int(year_arr[split.train_end - 1]) for split in plan.splits if metrics.naive_scale(y[split.train]) == 0]
    if flat:
        origins = ", ".join(map(str, flat))
        note = f"MASE and MSIS leave out the window(s) from origin {origins}: a flat training part has no naive error to scale by"
        plan = replace(plan, notes=(*plan.notes, note))
    return Evaluation(plan=plan, levels=checked, results=results, failed=failed)


def _key(model: Forecaster) -> str:
    return json.dumps(to_spec(model), sort_keys=True)


class _Window:
    """One training window; forecasts each distinct model (by spec) once, failures included."""

    def __init__(self, y: np.ndarray, years: np.ndarray, h: int, levels: tuple[int, ...]) -> None:
        self.y, self.years, self.h, self.levels = y, years, h, levels
        self.cache: dict[str, Forecast | str] = {}

    def forecast(self, model: Forecaster, key: str) -> Forecast:
        if key not in self.cache:
            try:
                forecast = clone(model).fit(self.y, self.years).predict(self.h, self.levels)
                _check_finite(forecast)
                self.cache[key] = forecast
            except Exception as error:
                # Any failure drops this candidate for the series, never the series itself.
                self.cache[key] = f"{type(error).__name__}: {error}"
        outcome = self.cache[key]
        if isinstance(outcome, str):
            raise _CandidateFailed(outcome)
        return outcome


class _CandidateFailed(Exception):
    """A candidate (or a combination's member) failed in a window; the message says why."""


def _check_finite(forecast: Forecast) -> None:
    arrays = [forecast.mean, *forecast.lower.values(), *forecast.upper.values()]
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise ValueError("the forecast has non-finite values")
