"""The per-series core: prepare → diagnose → backtest candidates → select → fit → forecast.

Pure: it takes a tidy table (or a prepared series), model instances and a selection policy, and
returns results. It knows nothing of MLflow, the object store, GX or Airflow; the task layer
(:mod:`pipeline.tasks`) feeds it and hands its results to the adapters. A whole series runs
through :func:`run_series` in milliseconds with cheap candidates, which is how it is tested.

Candidates are ``name -> Forecaster`` *instances* (unfitted prototypes); every fit uses a fresh
clone (:func:`clone`), so a prototype is never mutated. A selection policy is any callable that
takes the candidates' results and returns a :class:`Selection`; the production policy is
:class:`pipeline.candidates.ZooSelection` (on the shared-window evaluation, :func:`run_zoo`) and
:class:`pipeline.candidates.NewestFamilyChampion` is the fixed one tests use.

The run key's configuration hash (:func:`config_hash`) is built here from the same objects the
core runs: each candidate's class and *effective* hyperparameters (``get_params()``, defaults
included; a factory's at every series length, :func:`describe_candidates`), the policy's
fields, the :class:`ForecastSpec`, the tuned constants of :func:`forecast_rules` and the
package version.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline import __version__
from pipeline.backtest import MIN_TRAIN_SHORT, BacktestResult, backtest, study_split
from pipeline.diagnostics import compute_diagnostics
from pipeline.maths import json_default
from pipeline.models.base import Forecaster, from_spec, to_spec
from pipeline.series import PreparedSeries, beyond_bounds, falls_to_floor, prepare_series

#: What the core runs on a series: name -> unfitted model, or a factory ``n_points -> candidates``
#: sized for the earliest backtest window (:func:`pipeline.candidates.zoo_candidates`).
Candidates = Mapping[str, Forecaster] | Callable[[int], Mapping[str, Forecaster]]

logger = logging.getLogger(__name__)

#: The study's series: it gets the study's own 200/15 split besides the rolling backtest.
STUDY_SERIES = "canada.co2_per_capita"


@dataclass(frozen=True)
class ForecastSpec:
    """Everything besides the candidates and the policy that shapes a series' forecast.

    Attributes:
        horizon_end: last forecast year.
        levels: interval levels in percent.
        backtest_horizon: years forecast from each backtest origin.
        backtest_origins: number of rolling origins.
        min_points: fewest consecutive years a series needs.
        study_series: the series that also gets the study's split.
        study_train: training years of the study's split.
    """

    horizon_end: int
    levels: tuple[int, ...] = (80, 95)
    backtest_horizon: int = 5
    backtest_origins: int = 5
    min_points: int = 30
    study_series: str = STUDY_SERIES
    study_train: int = 200


@dataclass(frozen=True)
class CandidateResult:
    """One candidate on one series: its shared-window backtest and, when selected, its fit.

    Attributes:
        name: the candidate's name (``arima``, ``lstm``, …): its alias in the registry.
        prototype: the unfitted instance the candidate was given as.
        backtest: the rolling-origin backtest on the windows every candidate shares.
        study: the study's 200/15 split, for the study series only.
        model: a fitted clone on the whole history, or ``None`` when the policy did not ask for one.
    """

    name: str
    prototype: Forecaster
    backtest: BacktestResult
    study: BacktestResult | None = None
    model: Forecaster | None = None

    @property
    def metrics(self) -> dict[str, float]:
        """Finite metrics, prefixed ``backtest_`` and ``study_`` (MLflow's metric names)."""
        out = {f"backtest_{k}": float(v) for k, v in self.backtest.metrics.items() if _finite(v)}
        if self.study is not None:
            out.update({f"study_{k}": float(v) for k, v in self.study.metrics.items() if _finite(v)})
        return out

    @property
    def scores(self) -> dict[str, float]:
        """The backtest metrics unprefixed (``mase``, ``rmse``, …) plus the ``study_*`` ones."""
        return {k.removeprefix("backtest_"): v for k, v in self.metrics.items()}


@dataclass(frozen=True)
class Selection:
    """What a selection policy decided for one series.

    Attributes:
        champion: the candidate that serves forecasts (``@champion``).
        best: the candidate with the best backtest score.
        register: candidates to register, in order (each gets its own alias).
        fit: candidates to fit on the whole history (a superset of ``register``).
        reason: why the champion is the champion, for the alias history.
    """

    champion: str
    best: str
    register: tuple[str, ...]
    fit: tuple[str, ...]
    reason: str


#: A selection policy: candidates' backtest results (in candidate order) -> a :class:`Selection`.
SelectPolicy = Callable[[Mapping[str, CandidateResult]], Selection]


@dataclass(frozen=True)
class SeriesResult:
    """A series run through the core.

    Attributes:
        series: the prepared series.
        diagnostics: :func:`pipeline.diagnostics.compute_diagnostics` of it.
        candidates: every candidate's result, in candidate order; selected ones are fitted.
        selection: the policy's decision.
        evaluation: the shared-window :class:`~pipeline.backtest.Evaluation` (policies that
            use one, e.g. :class:`pipeline.candidates.ZooSelection`), else ``None``.
    """

    series: PreparedSeries
    diagnostics: dict[str, Any]
    candidates: dict[str, CandidateResult] = field(default_factory=dict)
    selection: Selection | None = None
    evaluation: Any = None

    @property
    def champion(self) -> Forecaster:
        """The fitted champion."""
        assert self.selection is not None
        model = self.candidates[self.selection.champion].model
        assert model is not None, "a policy must fit its champion"
        return model

    def scores(self) -> dict[str, dict[str, float]]:
        """Candidate name -> its scores (see :attr:`CandidateResult.scores`)."""
        return {name: result.scores for name, result in self.candidates.items()}


def _finite(value: Any) -> bool:
    return value is not None and bool(np.isfinite(float(value)))


def clone(prototype: Forecaster) -> Forecaster:
    """A fresh, unfitted copy of a model with the same hyperparameters (scikit-learn's ``clone``).

    Parameters are deep-copied, so a wrapper's inner model is not shared with the prototype.
    """
    return type(prototype)(**copy.deepcopy(prototype.get_params()))


def prepare(tidy: pd.DataFrame, entity: str, variable: str, as_of_year: int, spec: ForecastSpec) -> PreparedSeries:
    """Cut one series out of the tidy table, truncated to the as-of year (see :func:`prepare_series`)."""
    return prepare_series(tidy, entity, variable, as_of_year, min_points=spec.min_points)


def evaluate(name: str, prototype: Forecaster, series: PreparedSeries, spec: ForecastSpec) -> CandidateResult:
    """Backtest one candidate on the rolling-origin windows every candidate shares.

    The study series also gets the study's own split when it is long enough.
    """
    factory = lambda: clone(prototype)  # noqa: E731
    result = backtest(
        factory, series.years, series.values, levels=spec.levels, horizon=spec.backtest_horizon, n_origins=spec.backtest_origins
    )
    study = None
    if series.series_id == spec.study_series and len(series.values) > spec.study_train:
        study = study_split(factory, series.years, series.values, train=spec.study_train, levels=spec.levels)
    return CandidateResult(name=name, prototype=prototype, backtest=result, study=study)


def run_series(
    series: PreparedSeries,
    candidates: Candidates,
    select: SelectPolicy,
    spec: ForecastSpec,
) -> SeriesResult:
    """Diagnose a prepared series, backtest every candidate, select, fit what was selected.

    Args:
        series: the prepared series (see :func:`prepare`).
        candidates: name -> unfitted model instance, never mutated (a policy on the shared-window
            evaluation, ``uses_evaluation``, may also take a factory: see :func:`run_zoo`).
        select: the selection policy.
        spec: horizon, levels, backtest windows.

    Returns:
        The :class:`SeriesResult`; candidates named in ``selection.fit`` carry a fitted model.
    """
    if getattr(select, "uses_evaluation", False):
        return run_zoo(series, candidates, select, spec)
    if not candidates:
        raise ValueError("no candidates to run")
    diagnostics = compute_diagnostics(series.years, series.values)
    evaluated = {name: evaluate(name, prototype, series, spec) for name, prototype in candidates.items()}
    selection = select(evaluated)
    unknown = set(selection.fit) - set(evaluated)
    if unknown or selection.champion not in selection.fit or not set(selection.register) <= set(selection.fit):
        raise ValueError(f"the selection {selection} names candidates that are not fitted or do not exist")
    fitted = {
        name: dataclasses.replace(result, model=clone(result.prototype).fit(series.values, series.years))
        if name in selection.fit
        else result
        for name, result in evaluated.items()
    }
    return SeriesResult(series=series, diagnostics=diagnostics, candidates=fitted, selection=selection)


def run_zoo(series: PreparedSeries, candidates: Candidates, select: Any, spec: ForecastSpec) -> SeriesResult:
    """Every candidate on one rolling-origin backtest, then the policy's choice fitted calibrated.

    Args:
        series: the prepared series.
        candidates: name -> unfitted model, or a callable ``n_points -> candidates`` sized
            for the earliest backtest window (see :func:`pipeline.candidates.zoo_candidates`).
        select: a policy with ``choose(evaluation) -> (Selection, name -> unfitted model)``.
        spec: horizon, levels, backtest windows.

    Returns:
        The :class:`SeriesResult`; the candidates the policy fits (``selection.fit``: the
        registered ones and the overlay) carry their fitted publishable model.

    Raises:
        SeriesTooShortError: fewer points than the backtest needs.
        NoCandidateError: every candidate failed.
    """
    from pipeline.backtest import evaluate_candidates, plan_windows

    windows = plan_windows(len(series.values), spec.backtest_horizon, spec.backtest_origins)
    prototypes = candidates(windows.min_train) if callable(candidates) else dict(candidates)
    if not prototypes:
        raise ValueError("no candidates to run")
    diagnostics = compute_diagnostics(series.years, series.values)
    evaluation = evaluate_candidates(
        prototypes, series.years, series.values, horizon=spec.backtest_horizon, n_origins=spec.backtest_origins, levels=spec.levels
    )
    selection, models = select.choose(evaluation)
    fitted: dict[str, Forecaster] = {}
    refused: dict[str, str] = {}
    while True:  # each pass refuses one more choice, so this ends (naive refused: NoCandidateError)
        for name, model in models.items():
            if name not in fitted:  # the same name is the same publishable model: fitted once
                fitted[name] = clone(model).fit(series.values, series.years)
        problem = forecast_beyond_bounds(fitted[selection.champion], series, spec)
        if problem is None:
            break
        refused[selection.champion] = problem
        selection, models = select.choose(evaluation, refused=refused)
    studied = study_splits(series, selection.register, evaluation, spec)
    results = {
        name: CandidateResult(
            name=name,
            prototype=models.get(name, prototypes[name]),
            backtest=outcome,  # type: ignore[arg-type]  # same metrics/to_dict surface
            study=studied.get(name),
            model=fitted[name] if name in models else None,
        )
        for name, outcome in evaluation.results.items()
    }
    return SeriesResult(series=series, diagnostics=diagnostics, candidates=results, selection=selection, evaluation=evaluation)


def study_splits(series: PreparedSeries, names: tuple[str, ...], evaluation: Any, spec: ForecastSpec) -> dict[str, BacktestResult]:
    """The study's own split (Canada: 1800–1999, then 2000–2014) of the registered candidates.

    For the study series only, so its MLflow runs carry ``study_*`` metrics to set beside the
    study's table. Each candidate is scored as it was backtested (its spec, uncalibrated: the
    calibration factors come from windows inside the study's test years). Informational: a
    candidate that cannot be fitted on the study's training years is logged and gets none.
    """
    if series.series_id != spec.study_series or len(series.values) <= spec.study_train:
        return {}
    out = {}
    for name in names:
        prototype = from_spec(evaluation.results[name].spec)
        try:
            out[name] = study_split(lambda p=prototype: clone(p), series.years, series.values, train=spec.study_train, levels=spec.levels)
        except Exception as error:  # the forecast does not depend on it
            logger.warning("%s: no study split for %s: %s: %s", series.series_id, name, type(error).__name__, error)
    return out


def forecast_beyond_bounds(model: Forecaster, series: PreparedSeries, spec: ForecastSpec) -> str | None:
    """Why a fitted model's forecast to the horizon end cannot be published, or ``None``.

    The bounds the ``forecast_output`` gate enforces (:func:`pipeline.series.beyond_bounds`),
    checked where another choice can still be made: a trend extrapolated from one jump year
    (Mozambique's CO2, 4.1 Mt in 2013 and 8.3 in 2014) would otherwise be chosen, registered,
    and refused at publishing, leaving the series without a forecast. And a forecast of a
    positive history that falls to the zero floor within the backtest horizon
    (:func:`pipeline.series.falls_to_floor`: a collapse extrapolated, Tajikistan's CO2 per
    capita from 2.1 t in 1989 to 0.41 in 1994, forecast below zero from 1995): the gate would publish
    it, floored, but it is not a forecast anyone should read. The champion gate checks a kept
    champion's recipe, refitted on newer data, the same way (:func:`pipeline.tasks.champion_gate`).
    """
    steps = spec.horizon_end - int(series.years[-1])
    if steps < 1:
        return None
    forecast = model.predict(steps, levels=spec.levels)
    hi_95 = forecast.upper.get(95)
    within = slice(0, spec.backtest_horizon)
    return beyond_bounds(forecast.years, forecast.mean, hi_95, float(np.max(series.values))) or falls_to_floor(
        forecast.years[within], forecast.mean[within], series.values
    )


def forecast_frame(model: Forecaster, as_of_year: int, horizon_end: int, levels: tuple[int, ...]) -> pd.DataFrame:
    """A fitted model's forecast of the years ``as_of_year + 1 .. horizon_end``.

    When a series ends before the as-of year the model still forecasts from its last year;
    only the years after the as-of year are returned.

    Returns:
        Columns ``year, mean, lo_<level>, hi_<level>`` (one row per year).
    """
    last = int(model.years_[-1])
    if horizon_end <= max(last, as_of_year):
        raise ValueError(f"the horizon end {horizon_end} is not after the data ({last}) and the as-of year ({as_of_year})")
    frame = model.predict(horizon_end - last, levels=levels).to_frame()
    return frame[frame["year"] > as_of_year].reset_index(drop=True)


def candidate_forecasts(result: SeriesResult, as_of_year: int, horizon_end: int, levels: tuple[int, ...]) -> pd.DataFrame:
    """Every fitted candidate's forecast of ``as_of_year + 1 .. horizon_end`` in one table.

    What is published beside the champion's forecast (``candidates.parquet``), so a person can
    see the challengers' forecasts next to it.

    Returns:
        Columns ``family, year, mean, lo_<level>, hi_<level>``; one row per fitted candidate and
        year, candidates in the series' candidate order.
    """
    frames = [
        forecast_frame(candidate.model, as_of_year, horizon_end, levels).assign(family=name)
        for name, candidate in result.candidates.items()
        if candidate.model is not None
    ]
    if not frames:
        raise ValueError(f"{result.series.series_id}: no candidate was fitted")
    table = pd.concat(frames, ignore_index=True)
    return table[["family", *[c for c in table.columns if c != "family"]]]


# -- identity ----------------------------------------------------------------------------------


#: Training lengths a candidate factory (``n_points -> candidates``) is described at for the run
#: key: every length the earliest backtest window can have, from the shortest
#: (:data:`~pipeline.backtest.MIN_TRAIN_SHORT`) to more yearly values than a record that starts in
#: 1750 (the raw suite's earliest year) holds before 2150.
FACTORY_SIZES = range(MIN_TRAIN_SHORT, 401)


def describe_candidates(candidates: Candidates) -> Any:
    """The candidates' identity: each one's class and effective hyperparameters (defaults included).

    A factory sized per series (:func:`pipeline.candidates.zoo_candidates`) is described at every
    length in :data:`FACTORY_SIZES`, as runs of lengths that get the same candidates, so a change
    that only touches short series (a neural window, a family's minimum history) moves the key too.
    """
    if not callable(candidates):
        # to_spec describes nested forecasters (a combination's members) by class and params too.
        return {name: to_spec(model) for name, model in candidates.items()}
    runs: list[dict[str, Any]] = []
    for n in FACTORY_SIZES:
        described = describe_candidates(candidates(n))
        if runs and runs[-1]["candidates"] == described:
            runs[-1]["points"][1] = n
        else:
            runs.append({"points": [n, n], "candidates": described})
    return runs


def describe_policy(select: SelectPolicy) -> Any:
    """A policy's identity: a dataclass's class and fields, else the callable's qualified name."""
    if dataclasses.is_dataclass(select) and not isinstance(select, type):
        return {"class": f"{type(select).__module__}.{type(select).__qualname__}", "fields": dataclasses.asdict(select)}
    return f"{getattr(select, '__module__', '?')}.{getattr(select, '__qualname__', repr(select))}"


#: What the code makes of the same data, candidates and settings. Raise it in any change that
#: moves a published forecast, its intervals or its backtest scores (a fix in a model, the
#: backtest or the calibration): it is part of the run key, so the next run after an upgrade
#: trains every series again instead of keeping the old code's forecasts, scores and bands.
#: ``tests/test_core.py::test_the_default_forecast_changes_only_with_a_new_forecast_revision``
#: holds the forecasts of two series to it. 1: up to 5 December 2026. 2: from 6 December 2026
#: (ARIMA(0,2,0) fitted, a zero-width band's miss counted in the conformal factor, differenced
#: intervals integrated as a linear process). 3: a 95 % band the backtest errors cannot support
#: borrows the 80 % factor (:data:`pipeline.backtest.BORROW_UNSUPPORTED_LEVELS`; 12-29-point series).
FORECAST_REVISION = 3


def forecast_rules() -> dict[str, Any]:
    """The tuned constants that shape a forecast besides the candidates, the policy and the spec.

    How short a series and its earliest window may be, how the backtest calibrates intervals
    (:func:`pipeline.backtest.calibration_factors`: the factor's bounds, and whether a level the
    errors cannot support borrows a lower level's factor) and the output bounds that make the
    core choose another model (:func:`forecast_beyond_bounds`). A change of code, not of a
    constant, raises :data:`FORECAST_REVISION` instead.
    """
    from pipeline import backtest, series

    return {
        "min_points": backtest.MIN_POINTS,
        "min_train_short": backtest.MIN_TRAIN_SHORT,
        "calibration": [
            backtest.MIN_POINTS_PER_STEP,
            backtest.MIN_CALIBRATION_FACTOR,
            backtest.MAX_CALIBRATION_FACTOR,
            backtest.BORROW_UNSUPPORTED_LEVELS,
        ],
        "bounds": [series.MAX_MEAN_FACTOR, series.MAX_HI95_FACTOR, series.MIN_MEAN_SHARE],
    }


def run_config(candidates: Candidates, select: SelectPolicy, spec: ForecastSpec) -> dict[str, Any]:
    """Everything that shapes a forecast, as JSON-able data; its hash is part of the run key.

    Args:
        candidates: name -> unfitted model, or a factory ``n_points -> candidates``.
        select: the selection policy.
        spec: horizon, levels, backtest windows.
    """
    return {
        "package_version": __version__,
        "forecast_revision": FORECAST_REVISION,
        "spec": dataclasses.asdict(spec),
        "candidates": describe_candidates(candidates),
        "selection": describe_policy(select),
        "rules": forecast_rules(),
    }


def config_hash(config: Mapping[str, Any]) -> str:
    """A short stable hash of a run config (numpy values and tuples written as JSON numbers/lists)."""
    text = json.dumps(config, sort_keys=True, default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_key(series_id: str, data_id: str, as_of_year: int, cfg_hash: str) -> str:
    """The identity of a forecast run: ``(series_id, data_id, as_of_year, config hash)``.

    ``data_id`` is :func:`history_hash` of the series' own history up to the as-of year (not
    the vintage id): a new vintage that leaves a series untouched keeps its run key (the run
    is skipped), one that revises it gets a new key (the series retrains).
    """
    return hashlib.sha256(f"{series_id}|{data_id}|{as_of_year}|{cfg_hash}".encode()).hexdigest()[:16]


def history_hash(years: Any, values: Any, provisional_last: bool = False) -> str:
    """A digest of a series' history: every (year, value) exactly (float hex), and whether its last year is provisional."""
    digest = hashlib.sha256()
    for year, value in zip(years, values, strict=True):
        digest.update(f"{int(year)}:{float(value).hex()};".encode())
    digest.update(b"provisional" if provisional_last else b"final")
    return digest.hexdigest()[:16]
