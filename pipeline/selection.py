"""Choosing the model to publish, and the champion gate: pure functions on backtest scores.

* :func:`select` publishes the default choice (the combination) unless another candidate
  beats it clearly on the backtest metric (MASE by default); whatever is chosen must beat the
  naive benchmark when the backtest has enough windows to tell, otherwise the fallback (the
  short-series combination below) is published if it beats naive, else naive.
  Why a default with a margin rather than the plain backtest winner: on a validation run
  (``benchmarks/accuracy.py --train-end 2006``) picking each series' backtest winner among all
  candidates had an OWA of 0.97 (full histories) and 1.02 (last 20 points) against naive, the
  fixed combination 0.83 and 0.90: five windows are too few to tell sixteen models apart,
  and the winner's score is the luckiest of sixteen. A series too short for ``min_windows``
  windows (e.g. 20 points: two windows) publishes the short-series default instead, the
  mean of naive and drift (:data:`~pipeline.models.registry.SHORT_SERIES_CHOICE`): half the
  drift, which shrinks toward naive where a trend can hardly be tested.
  The chosen model comes back wrapped in
  :class:`~pipeline.models.calibrated.CalibratedForecaster`, with its interval factors from
  the same backtest and a floor at zero.
* :func:`best_k_combination` adds the mean (or median) of the ``k`` best candidates, scored
  from their own backtest forecasts (no refit; note its members were chosen on the same
  windows, so its score is slightly optimistic).
* :func:`champion_gate` decides whether a challenger replaces the current champion, both
  scored on the same windows.

Nothing here touches MLflow, the store or Airflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from pipeline.backtest import CandidateResult, Evaluation, NoCandidateError, calibration_factors, score, step_scores
from pipeline.models.base import Forecaster, from_spec, to_spec
from pipeline.models.calibrated import CalibratedForecaster
from pipeline.models.combination import AGGREGATES, CombinationForecaster
from pipeline.models.registry import BENCHMARK, DEFAULT_CHOICE, FALLBACK_CHOICE, SHORT_SERIES_CHOICE

#: Metrics where lower is better: the ones a selection or a gate may use.
METRICS = ("mase", "smape", "mae", "rmse", "mape", "msis_80", "msis_95")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"cannot select on {metric!r}; choose one of {', '.join(METRICS)}")


def ranking(evaluation: Evaluation, metric: str = "mase") -> list[tuple[str, float]]:
    """Candidates from best to worst on ``metric`` (ties by name; non-finite scores last).

    Args:
        evaluation: the backtest of every candidate.
        metric: a lower-is-better metric from :data:`METRICS`.

    Returns:
        ``(name, score)`` pairs.
    """
    _check_metric(metric)
    scores = [(name, float(result.metrics.get(metric, math.nan))) for name, result in evaluation.results.items()]
    return sorted(scores, key=lambda pair: (not math.isfinite(pair[1]), pair[1] if math.isfinite(pair[1]) else 0.0, pair[0]))


def best_k_combination(
    evaluation: Evaluation, k: int = 3, method: str = "mean", metric: str = "mase", exclude: tuple[str, ...] = ()
) -> Evaluation:
    """The evaluation with one more candidate: the combination of the ``k`` best.

    The combination's backtest rows are the mean (or median) of its members' rows, exactly what
    :class:`~pipeline.models.combination.CombinationForecaster` forecasts in each window.

    Args:
        evaluation: the backtest of every candidate.
        k: members (the ``k`` best on ``metric`` that are not combinations or excluded).
        method: ``"mean"`` or ``"median"``.
        metric: the ranking metric.
        exclude: candidate names never used as members (e.g. ``("mean",)``).

    Returns:
        A new :class:`~pipeline.backtest.Evaluation` with ``best<k>_<method>`` added (the
        same one when fewer than two members are available).
    """
    if method not in AGGREGATES:
        raise ValueError(f"unknown combination {method!r}; choose one of {sorted(AGGREGATES)}")
    names = [
        name
        for name, value in ranking(evaluation, metric)
        if math.isfinite(value) and name not in exclude and evaluation.results[name].family != CombinationForecaster.family
    ][: int(k)]
    if len(names) < 2:
        return evaluation
    members = [evaluation.results[name] for name in names]
    model = CombinationForecaster(members=[from_spec(m.spec) for m in members], method=method)
    forecasts = _combine_rows([m.forecasts for m in members], method)
    levels = evaluation.levels
    name = f"best{int(k)}_{method}"
    result = CandidateResult(
        name=name,
        family=model.family,
        spec=to_spec(model),
        metrics=score(forecasts, levels),
        by_horizon=step_scores(forecasts, levels),
        forecasts=forecasts,
        calibration=calibration_factors(forecasts, levels),
        fit_seconds=float(sum(m.fit_seconds for m in members)),
    )
    return replace(evaluation, results={**evaluation.results, name: result})


def _combine_rows(frames: list[pd.DataFrame], method: str) -> pd.DataFrame:
    out = frames[0].copy()
    aggregate = AGGREGATES[method]
    value_columns = [c for c in out.columns if c == "mean" or c.startswith(("lo_", "hi_"))]
    for column in value_columns:
        out[column] = aggregate(np.stack([f[column].to_numpy() for f in frames]), axis=0)
    return out


@dataclass(frozen=True)
class Selection:
    """The candidate chosen to forecast a series, and why.

    Attributes:
        winner: the chosen candidate's name.
        metric: the metric it was chosen on.
        score: its backtest score.
        benchmark: the benchmark's name (``naive``).
        benchmark_score: the benchmark's score on the same windows.
        reason: one line a person can read.
        ranking: every candidate's score, best first.
        model: the unfitted model to fit on the whole series and publish (calibrated, floored).
        result: the winner's backtest.
    """

    winner: str
    metric: str
    score: float
    benchmark: str
    benchmark_score: float
    reason: str
    ranking: tuple[tuple[str, float], ...]
    model: Forecaster
    result: CandidateResult

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the model as its spec)."""
        return {
            "winner": self.winner,
            "metric": self.metric,
            "score": self.score,
            "benchmark": self.benchmark,
            "benchmark_score": self.benchmark_score,
            "reason": self.reason,
            "ranking": [[name, value if math.isfinite(value) else None] for name, value in self.ranking],
            "model": to_spec(self.model),
        }


def publishable(result: CandidateResult, calibrate: bool = True, floor: float | None = 0.0) -> CalibratedForecaster:
    """The model a backtest result describes, wrapped with its interval factors and a floor.

    Args:
        result: a candidate's backtest.
        calibrate: scale the intervals by the backtest factors (else keep the model's own).
        floor: lowest value a forecast may take (``None``: none).

    Returns:
        An unfitted :class:`~pipeline.models.calibrated.CalibratedForecaster`.
    """
    factors = {int(level): [float(f) for f in values] for level, values in result.calibration.items()} if calibrate else None
    return CalibratedForecaster(from_spec(result.spec), factors=factors, floor=floor)


def select(
    evaluation: Evaluation,
    metric: str = "mase",
    benchmark: str = BENCHMARK,
    default: str | None = DEFAULT_CHOICE,
    margin: float = 0.5,
    min_windows: int = 4,
    calibrate: bool = True,
    floor: float | None = 0.0,
    short_default: str | None = SHORT_SERIES_CHOICE,
    refused: Mapping[str, str] | None = None,
    fallback: str | None = FALLBACK_CHOICE,
) -> Selection:
    """Choose the candidate to publish on ``metric``; it must beat the benchmark when that can be told.

    1. Start from ``default`` (if it was evaluated; otherwise the best-scoring candidate).
    2. With at least ``min_windows`` backtest windows, the best-scoring candidate replaces it
       when its score is below ``(1 - margin)`` times the default's (``margin=0``: the plain
       backtest winner), and the choice must score below the benchmark; when it does not,
       ``fallback`` is published if it does (by default the short-series combination, a
       trend shrunk toward naive), else the benchmark. With fewer windows (a short series)
       the challengers' scores are too noisy: ``short_default`` is published when it was
       evaluated (by default a combination that shrinks toward naive) and scores below the
       benchmark on the windows there are (else the benchmark); without one, the default is
       published untested (naive when there is no default), and the reason says so.
    3. A choice named in ``refused`` (its forecast on the whole series broke the output bounds,
       :func:`pipeline.series.beyond_bounds`) is replaced by the benchmark, and the reason says why.

    Args:
        evaluation: every candidate on the same windows (:func:`best_k_combination` can add a
            combination of the best first).
        metric: a lower-is-better metric from :data:`METRICS` (MASE by default).
        benchmark: the candidate everything must beat.
        default: the candidate published unless another beats it clearly (``None``: none).
        margin: how much lower (relative) another candidate's score must be to replace the default.
        min_windows: fewest backtest windows for the benchmark comparison.
        calibrate: calibrate the chosen model's intervals on its backtest errors.
        floor: floor of the published forecasts (0: emissions are never negative).
        short_default: the candidate published when there are fewer than ``min_windows``
            windows (``None``, or not evaluated: ``default`` as for a long series).
        refused: candidate -> why its forecast cannot be published (see step 3).
        fallback: the candidate tried when the choice does not beat the benchmark on a series
            with ``min_windows`` windows or more (``None``: the benchmark directly).

    Returns:
        The :class:`Selection`.

    Raises:
        ValueError: on an unknown metric, or when the benchmark is missing from the evaluation.
        NoCandidateError: the benchmark itself is refused.
    """
    refused = dict(refused or {})
    if benchmark in refused:
        raise NoCandidateError(f"no forecast can be published: {benchmark} is the last resort and {refused[benchmark]}")
    order = ranking(evaluation, metric)
    if benchmark not in evaluation.results:
        raise ValueError(f"the benchmark {benchmark!r} is not among the evaluated candidates {sorted(evaluation.results)}")
    scores = dict(order)
    bench_score = scores[benchmark]
    best, best_score = order[0]
    windows = len(evaluation.plan.splits)
    if not math.isfinite(bench_score):
        # Nothing can be shown to beat it: a flat training part in every window leaves MASE
        # and MSIS undefined (see pipeline.backtest.score).
        winner, winner_score = benchmark, bench_score
        reason = f"{benchmark}'s backtest {metric} is undefined, so no candidate can be shown to beat it; {benchmark} is published"
    elif windows < min_windows and short_default in scores and math.isfinite(scores[short_default]):
        winner, winner_score = short_default, scores[short_default]
        reason = f"the short-series default {short_default} ({metric} {winner_score:.4g}; best single {best} {best_score:.4g})"
    elif default in scores and math.isfinite(scores[default]):
        winner, winner_score = default, scores[default]
        # Fewer windows than min_windows cannot tell candidates apart: the default stays.
        if best != default and windows >= min_windows and best_score < (1.0 - float(margin)) * winner_score:
            reason = f"{best}'s backtest {metric} {best_score:.4g} beats the default {default}'s {winner_score:.4g}"
            reason += f" by more than {margin:.0%}"
            winner, winner_score = best, best_score
        else:
            reason = f"the default {default} ({metric} {winner_score:.4g}; best single {best} {best_score:.4g})"
    elif windows < min_windows:
        # No default and too few windows to trust a backtest winner: the benchmark is safest.
        winner, winner_score = benchmark, bench_score
        reason = f"no default candidate and only {windows} backtest window(s); {benchmark} is published"
    else:
        winner, winner_score = best, best_score
        reason = f"{best} has the best backtest {metric} ({best_score:.4g})"
    if winner != benchmark:
        if windows < min_windows and winner != short_default:
            reason += f"; {windows} backtest window(s) are too few to test it against {benchmark}"
        elif math.isfinite(winner_score) and winner_score < bench_score:
            reason += f", beating {benchmark} ({bench_score:.4g})"
        else:
            lost = f"{winner} ({metric} {winner_score:.4g}) did not beat {benchmark} ({bench_score:.4g})"
            backup = scores.get(fallback, math.nan) if fallback not in (None, winner) and windows >= min_windows else math.nan
            if math.isfinite(backup) and backup < bench_score:
                reason = f"{lost}; the fallback {fallback} ({metric} {backup:.4g}) does and is published"
                winner, winner_score = fallback, backup
            else:
                reason = f"{lost}; {benchmark} is published"
                winner = benchmark
    if winner in refused:
        reason = f"{winner} was chosen ({reason}) but {refused[winner]}; {benchmark} is published"
        winner = benchmark
    result = evaluation.results[winner]
    return Selection(
        winner=winner,
        metric=metric,
        score=float(result.metrics[metric]),
        benchmark=benchmark,
        benchmark_score=bench_score,
        reason=reason,
        ranking=tuple(order),
        model=publishable(result, calibrate=calibrate, floor=floor),
        result=result,
    )


@dataclass(frozen=True)
class Decision:
    """The champion gate's verdict.

    Attributes:
        promote: whether the challenger takes ``@champion``.
        reason: one line a person can read (goes into the alias history).
        metric: the metric compared.
        current: the current champion's score (``None``: there is no champion yet).
        challenger: the challenger's score.
        naive: the naive benchmark's score on the same windows.
    """

    promote: bool
    reason: str
    metric: str
    current: float | None
    challenger: float
    naive: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "promote": self.promote,
            "reason": self.reason,
            "metric": self.metric,
            "current": self.current,
            "challenger": self.challenger,
            "naive": self.naive,
        }


def _score(scores: Mapping[str, float], metric: str) -> float:
    value = scores.get(metric)
    return float("nan") if value is None else float(value)


def champion_gate(
    current_scores: Mapping[str, float] | None,
    challenger_scores: Mapping[str, float],
    naive_scores: Mapping[str, float],
    metric: str = "mase",
) -> Decision:
    """Whether a challenger replaces the current champion; all three scored on the same windows.

    The challenger is promoted only when it is strictly better than the current champion on
    ``metric`` and no worse than naive (a naive challenger ties naive and passes). With no
    champion yet, a challenger that is no worse than naive is promoted.

    Args:
        current_scores: the current champion's backtest metrics, or ``None`` when none exists.
        challenger_scores: the challenger's backtest metrics.
        naive_scores: the naive benchmark's backtest metrics.
        metric: a lower-is-better metric from :data:`METRICS`.

    Returns:
        The :class:`Decision`.
    """
    _check_metric(metric)
    # A metric can be undefined on a series (MASE of a constant history: naive's in-sample
    # error is zero); it is then missing from the scores and counts as not finite.
    challenger = _score(challenger_scores, metric)
    naive = _score(naive_scores, metric)
    current = None if current_scores is None else _score(current_scores, metric)

    def decide(promote: bool, reason: str) -> Decision:
        return Decision(promote=promote, reason=reason, metric=metric, current=current, challenger=challenger, naive=naive)

    if not math.isfinite(challenger):
        return decide(False, f"the challenger's {metric} is not finite")
    if math.isfinite(naive) and challenger > naive:
        return decide(False, f"the challenger's {metric} {challenger:.4g} is worse than naive's {naive:.4g}")
    if current is None:
        return decide(True, f"no champion yet; the challenger's {metric} {challenger:.4g} is no worse than naive's {naive:.4g}")
    if not math.isfinite(current):
        return decide(True, f"the champion's {metric} is not finite; the challenger's is {challenger:.4g}")
    if challenger < current:
        return decide(True, f"the challenger's {metric} {challenger:.4g} beats the champion's {current:.4g} on the same windows")
    return decide(False, f"the challenger's {metric} {challenger:.4g} does not beat the champion's {current:.4g}; the champion stays")
