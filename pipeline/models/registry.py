"""The candidate set: family name -> model class, and the default candidates for a series.

The forecast core takes model *instances*: :func:`default_candidates` returns a fresh,
unfitted instance per candidate name, sized for the shortest series it will be fitted on.
Everything a family needs to know about itself (its minimum history, how it persists, how
its intervals are made) lives in its class; this module only lists them and holds the
defaults, so no code elsewhere branches on a family name.

Left out of the study's list, on purpose: Prophet, LightGBM and XGBoost. Prophet needs a Stan
toolchain and is built for daily/weekly seasonality that yearly emissions do not have; tree
ensembles on lags cannot extrapolate beyond the values they were trained on (a tree predicts
an average of seen targets), which is exactly what a trending yearly series needs, and with
12–60 points per series they have almost nothing to learn from. The "machine learning on lags"
idea is covered by Ridge and Lasso on lagged differences.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from pipeline.models.arima import ArForecaster, ArimaForecaster, ArmaForecaster
from pipeline.models.base import Forecaster
from pipeline.models.baselines import DriftForecaster, MeanForecaster, NaiveForecaster
from pipeline.models.calibrated import CalibratedForecaster
from pipeline.models.combination import CombinationForecaster
from pipeline.models.ets import AutoEtsForecaster, HoltForecaster, SesForecaster
from pipeline.models.lstm import LSTMForecaster
from pipeline.models.regression import LassoForecaster, RidgeForecaster, TrendForecaster
from pipeline.models.rnn import RNNForecaster
from pipeline.models.theta import ThetaForecaster
from pipeline.models.transformed import TransformedForecaster
from pipeline.transforms import allowed

#: Every forecaster class by family name (the ``family`` class attribute).
FAMILIES: dict[str, type[Forecaster]] = {
    cls.family: cls
    for cls in (
        NaiveForecaster,
        DriftForecaster,
        MeanForecaster,
        TrendForecaster,
        SesForecaster,
        HoltForecaster,
        AutoEtsForecaster,
        ArForecaster,
        ArmaForecaster,
        ArimaForecaster,
        ThetaForecaster,
        RidgeForecaster,
        LassoForecaster,
        LSTMForecaster,
        RNNForecaster,
        CombinationForecaster,
        TransformedForecaster,
        CalibratedForecaster,
    )
}

#: The benchmark every candidate must beat (selection and the champion gate use it).
BENCHMARK = "naive"

#: Members of the fixed combinations: drift, ETS with automatic selection and the numpy LSTM,
#: models that err differently (the whole history's average change; a smoothed level and
#: trend; a nonlinear fit of recent windows). Their median is the middle one of the three each
#: year; on a series too short for the LSTM, the mean of drift and ETS. Chosen on four
#: validation runs of benchmarks/accuracy.py (forecasting 1995-1998, 1999-2002, 2003-2006 and
#: 2007-2010 from the years before; never the 2011-2014 years the benchmark reports) among
#: 4,654 means and medians of 2-5 of thirteen candidates, by the mean OWA of the eight cells
#: (period by variable) under pipeline.selection.select with the fallback: 0.907, against
#: 0.938 for the median of naive, damped Holt, ARIMA and Ridge before it, which had been chosen
#: on 2007-2010 alone. Choosing on several periods carried over where choosing on one had not:
#: picked on three periods and judged on the fourth (naive as the only fallback), the search's
#: choice averaged 0.928 against 0.943 for the old four (better on 1995-1998 and 1999-2002,
#: level on 2003-2006, worse on 2007-2010), and it was the mean or median of drift, ETS and
#: LSTM in three of the four folds (docs/benchmarks.md, "Forecast accuracy";
#: benchmarks/policy_study.py --search).
COMBINATION_MEMBERS = ("drift", "ets", "lstm")

#: The candidate published unless another beats it clearly (see pipeline.selection.select).
DEFAULT_CHOICE = "combo_median"

#: Members of the combination published on series too short to backtest properly (fewer
#: windows than selection needs to compare candidates with naive), and how they are combined:
#: the mean of naive and drift, i.e. half the drift (the last value plus half the average
#: yearly change so far per year ahead). Chosen on the validation run (train to 2006, the last
#: 20 points of each series, 2 backtest windows; naive where the combination does not beat
#: naive on them) among 106 combinations of naive with SES, drift, Theta, ETS, ARIMA and Ridge,
#: by the sum of the two variables' OWA: 0.930 (total CO2) and 0.972 (per capita), where the
#: median of naive, Theta, ETS and ARIMA before it had 0.934 and 1.007. Replayed once on
#: 2011-2014: 0.955 and 0.999, against 0.964 and 1.017. A short history says little about a
#: trend, so its slope is halved rather than trusted or ignored.
SHORT_COMBINATION_MEMBERS = ("naive", "drift")

#: How the short-series combination aggregates its members (``"mean"`` or ``"median"``).
SHORT_COMBINATION_METHOD = "mean"

#: The candidate published on such short series (see pipeline.selection.select).
SHORT_SERIES_CHOICE = "combo_short"

#: The candidate published on a long series when the choice does not beat naive on the
#: backtest but this one does (see pipeline.selection.select): the short-series combination,
#: half the drift, a trend shrunk toward naive. Chosen on the two validation runs (train to
#: 2002 and to 2006) among six fallbacks (SES, damped Holt, Theta, ETS, this, and the best
#: candidate beating naive): OWA 0.865/0.944 (total/per capita, 2003-2006) and 0.849/0.966
#: (2007-2010), against 0.876/0.954 and 0.850/0.964 with naive as the only fallback; every
#: single smoothing model and the best candidate beating naive made the mean of the four worse.
FALLBACK_CHOICE = SHORT_SERIES_CHOICE

#: Fewest points a neural model trains on: below this it is left out of the candidates.
NEURAL_MIN_POINTS = 20


def _neural_params(n_points: int) -> dict[str, int]:
    """LSTM/RNN settings that fit a history of ``n_points``: a shorter window and fewer epochs."""
    window = int(np.clip(n_points // 4, 4, 10))
    return {"window": window, "hidden": 8, "epochs": 200, "patience": 20, "min_origins": min(10, max(3, n_points // 4))}


def default_candidates(n_points: int) -> dict[str, Forecaster]:
    """The default candidate set for a series, as fresh unfitted instances.

    Args:
        n_points: the fewest points any candidate will be fitted on (for a backtest, the
            training length of its earliest window; see
            :func:`pipeline.backtest.plan_windows`).

    Returns:
        Candidate name -> forecaster, every one able to fit ``n_points`` values. ``naive`` is
        always there: selection and the champion gate measure everything against it. ARMA
        (:class:`~pipeline.models.arima.ArmaForecaster`) is a family but not a default
        candidate: it cost a third of the backtest time and never ranked well on the OWID series.
    """
    statistical: dict[str, Forecaster] = {
        "naive": NaiveForecaster(),
        "drift": DriftForecaster(),
        "mean": MeanForecaster(),
        "trend_linear": TrendForecaster(degree=1),
        "trend_quadratic": TrendForecaster(degree=2),
        "ses": SesForecaster(),
        "holt": HoltForecaster(),
        "holt_damped": HoltForecaster(damped=True),
        "ets": AutoEtsForecaster(),
        "theta": ThetaForecaster(),
        "ar": ArForecaster(),
        "arima": ArimaForecaster(max_p=2, max_q=2, search="stepwise"),
        "ridge": RidgeForecaster(),
        "lasso": LassoForecaster(),
    }
    if n_points >= NEURAL_MIN_POINTS:
        statistical["lstm"] = LSTMForecaster(**_neural_params(n_points))
        statistical["rnn"] = RNNForecaster(**_neural_params(n_points))
    candidates = {name: model for name, model in statistical.items() if model.min_obs <= n_points}
    members = [candidates[name] for name in COMBINATION_MEMBERS if name in candidates]
    if len(members) >= 2:
        candidates["combo_mean"] = CombinationForecaster(members=members, method="mean")
        candidates["combo_median"] = CombinationForecaster(members=members, method="median")
    short = [candidates[name] for name in SHORT_COMBINATION_MEMBERS if name in candidates]
    if len(short) >= 2:
        candidates[SHORT_SERIES_CHOICE] = CombinationForecaster(members=short, method=SHORT_COMBINATION_METHOD)
    return candidates


def transformed_variants(
    candidates: Mapping[str, Forecaster], values: np.ndarray, transforms: Iterable[str] = ("log", "sqrt", "boxcox")
) -> dict[str, Forecaster]:
    """The candidates on transformed scales, where the series allows the transform.

    Not in the default set: on the OWID series a log transform made forecasts worse
    (exponential extrapolation). Offered for studies and for series where it helps.

    Args:
        candidates: name -> forecaster to wrap.
        values: the series (its domain decides: log and Box–Cox need all values > 0).
        transforms: elementwise transform names.

    Returns:
        ``"<name>_<transform>"`` -> :class:`TransformedForecaster` for each allowed pair.
    """
    out: dict[str, Forecaster] = {}
    for transform in transforms:
        if not allowed(transform, values):
            continue
        for name, model in candidates.items():
            out[f"{name}_{transform}"] = TransformedForecaster(model, transform=transform)
    return out
