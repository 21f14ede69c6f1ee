"""Study: selection policies replayed on saved validation backtests (``accuracy.py --dump``).

Each dump holds, per series, the backtest of every candidate and each candidate's forecast of the
held-out years, so a policy (which combination is the default, what replaces a choice that
does not beat naive) can be scored without refitting anything. The current policy and each
fallback are chosen by :func:`pipeline.selection.select` itself on the dumped backtest; a
searched combination was never evaluated as one candidate, so :func:`published` replays the
same rule from its members' backtest forecasts (the default unless another candidate's
backtest MASE is below half of it; whatever is chosen must beat naive on the windows), and the
script stops if that replay and ``select`` disagree on the current policy. It also replays
the default moved toward naive by a factor, and other margins. Each is scored on the floored
point forecast with OWA against naive, per validation period and variable. Of the core's refusals
only the fall to the zero floor is replayed (:func:`guarded`, on the held-out years, which are
within the backtest horizon); the upper output bounds are not (on the four validation runs
no choice's uncalibrated forecast of four years broke them).

Run from the repository root, on dumps of validation runs only (never the 2011–2014 test)::

    python benchmarks/accuracy.py --train-end 1994 --panels full --dump /tmp/v1994.pkl
    python benchmarks/accuracy.py --train-end 1998 --panels full --dump /tmp/v1998.pkl
    python benchmarks/accuracy.py --train-end 2002 --panels full --dump /tmp/v2002.pkl
    python benchmarks/accuracy.py --train-end 2006 --panels full --dump /tmp/v2006.pkl
    python benchmarks/policy_study.py 1995-1998=/tmp/v1994.pkl 1999-2002=/tmp/v1998.pkl \
        2003-2006=/tmp/v2002.pkl 2007-2010=/tmp/v2006.pkl
    python benchmarks/policy_study.py ... --search     # every combination of 2-5 (tens of minutes)

It prints the current policy, each fallback, each shrinkage factor and each margin by which
another candidate must beat the default to replace it; with three periods or more, the factor
and the margin chosen on all periods but one, judged on that one (leave one period out), and
with ``--search`` the best combinations on the mean of all cells, and for each period the best
chosen on the others (or, with two periods, on the other).
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the package

from pipeline import metrics
from pipeline.candidates import ZooSelection
from pipeline.models.registry import BENCHMARK, COMBINATION_MEMBERS, DEFAULT_CHOICE, FALLBACK_CHOICE
from pipeline.selection import select
from pipeline.series import falls_to_floor

VARIABLES = ("co2", "co2_per_capita")
COMBINATIONS = ("combo_mean", "combo_median", "combo_short")
#: Candidates a searched combination may draw on (the default set without its combinations,
#: the mean and the quadratic trend, which never ranked well).
POOL = ("naive", "drift", "ses", "holt", "holt_damped", "ets", "theta", "arima", "ridge", "ar", "lasso", "lstm", "trend_linear")
FALLBACKS = ("ses", "holt_damped", "theta", "ets", FALLBACK_CHOICE)
AGGREGATE = {"mean": np.mean, "median": np.median}
#: How much better another candidate must score to replace the default (the production policy's).
DEFAULT_MARGIN = ZooSelection.margin
#: Margins replayed beside it (0: the plain backtest winner; 1: the default is never replaced).
MARGINS = (0.0, 0.3, 0.4, 0.5, 0.7, 1.0)


class Series:
    """One dumped series: backtest point forecasts and held-out forecasts per candidate."""

    def __init__(self, record: dict) -> None:
        self.variable = record["variable"]
        self.train = np.asarray(record["values"], dtype=np.float64)
        self.test = np.asarray(record["test"], dtype=np.float64)
        self.held_out = {name: np.asarray(f.mean, dtype=np.float64) for name, f in record["raw"].items()}
        self.evaluation = record["evaluation"]
        results = self.evaluation.results
        first = next(iter(results.values())).forecasts
        self.actual, self.scale = first["actual"].to_numpy(), first["scale"].to_numpy()
        self.backtest = {name: r.forecasts["mean"].to_numpy() for name, r in results.items() if name in self.held_out}
        self.mase = {name: self.backtest_mase(mean) for name, mean in self.backtest.items()}

    def backtest_mase(self, mean: np.ndarray) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.mean(np.abs(self.actual - mean) / self.scale))

    def errors(self, mean: np.ndarray) -> tuple[float, float]:
        """sMAPE and MASE of a floored point forecast of the held-out years."""
        mean = np.maximum(mean, 0.0)
        return metrics.smape(self.test, mean), metrics.mase(self.test, mean, self.train)


Fallback = Callable[[Series], str | None]


def guarded(s: Series, forecast: np.ndarray) -> np.ndarray:
    """Naive in place of a held-out forecast that falls to the zero floor, as the core refuses it (:func:`falls_to_floor`)."""
    return s.held_out[BENCHMARK] if falls_to_floor(np.arange(forecast.size), forecast, s.train) else forecast


def production(s: Series, fallback: str | None) -> np.ndarray:
    """The held-out point forecast :func:`pipeline.selection.select` publishes with this fallback."""
    return guarded(s, s.held_out[select(s.evaluation, fallback=fallback).winner])


def best_beating_naive(s: Series) -> str | None:
    """The single candidate with the best backtest MASE, when it beats naive."""
    scores = {k: v for k, v in s.mase.items() if np.isfinite(v) and k not in COMBINATIONS and k != BENCHMARK}
    best = min(scores, key=scores.get, default=None)
    return best if best is not None and scores[best] < s.mase[BENCHMARK] else None


def challengers(s: Series) -> dict[str, float]:
    """Backtest MASE of every candidate that may replace a searched default: all but the production default, as select ranks them."""
    return {k: v for k, v in s.mase.items() if k != DEFAULT_CHOICE and np.isfinite(v)}


def published(
    s: Series, members: tuple[str, ...], method: str, fallback: Fallback | None, margin: float = DEFAULT_MARGIN, alpha: float = 1.0
) -> np.ndarray:
    """The held-out point forecast the policy publishes on a series with enough windows.

    The default is the members' combination moved toward naive by ``alpha``
    (``naive + alpha * (default - naive)``; 1: not moved), scored like a candidate of its own:
    another candidate replaces it when its backtest MASE is below ``1 - margin`` times the
    default's, and whatever is chosen must beat naive on the backtest; when it does not,
    ``fallback``'s pick is published (naive when it names none).
    """
    present = [m for m in members if m in s.backtest]
    naive_bt, naive = s.backtest[BENCHMARK], s.held_out[BENCHMARK]
    if len(present) < 2:
        return naive
    aggregate = AGGREGATE[method]
    chosen_bt = naive_bt + alpha * (aggregate(np.stack([s.backtest[m] for m in present]), axis=0) - naive_bt)
    chosen = naive + alpha * (aggregate(np.stack([s.held_out[m] for m in present]), axis=0) - naive)
    score = s.backtest_mase(chosen_bt)
    scores = challengers(s)
    if not scores or not np.isfinite(score):
        return naive
    best = min(scores, key=scores.get)
    if scores[best] < (1 - margin) * score:
        chosen, score = s.held_out[best], scores[best]
    if score < s.mase[BENCHMARK]:
        return guarded(s, chosen)
    backup = fallback(s) if fallback is not None else None
    return guarded(s, s.held_out[backup]) if backup is not None else naive


def half_drift(s: Series) -> str | None:
    """The production fallback when it beats naive on the backtest."""
    return FALLBACK_CHOICE if s.mase.get(FALLBACK_CHOICE, np.inf) < s.mase[BENCHMARK] else None


def leave_one_period_out(names: list[str], table: dict[str, np.ndarray], current: str) -> None:
    """For each period: the policy best on the others (mean OWA of their cells), scored on it, beside ``current``.

    ``table`` maps a policy to its :func:`cells` (periods in the order of ``names``).
    """
    picked, fixed = [], []
    for held, period in enumerate(names):
        on = [i for i in range(2 * len(names)) if i // 2 != held]
        off = slice(2 * held, 2 * held + 2)
        best = min(table, key=lambda label: table[label][on].mean())
        picked.append(table[best][off].mean())
        fixed.append(table[current][off].mean())
        print(f"  {period}: best on the others {best} -> {table[best][off].mean():.4f}; {current} -> {table[current][off].mean():.4f}")
    print(f"  mean over held-out periods: chosen on the others {np.mean(picked):.4f}, {current} {np.mean(fixed):.4f}")


def owa(series: list[Series], policy: Callable[[Series], np.ndarray]) -> list[float]:
    """OWA against naive per variable (M4's: the mean of the sMAPE and MASE ratios)."""
    out = []
    for variable in VARIABLES:
        group = [s for s in series if s.variable == variable]
        ours = np.array([s.errors(policy(s)) for s in group])
        naive = np.array([s.errors(s.held_out[BENCHMARK]) for s in group])
        ratio = ours.mean(axis=0) / naive.mean(axis=0)
        out.append(float(ratio.mean()))
    return out


def cells(periods: dict[str, list[Series]], policy: Callable[[Series], np.ndarray]) -> np.ndarray:
    """OWA of every (period, variable) cell, periods in order."""
    return np.array([value for series in periods.values() for value in owa(series, policy)])


def line(label: str, values: np.ndarray) -> str:
    return f"{label:56s} " + " ".join(f"{v:.4f}" for v in values) + f"   mean {values.mean():.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dumps", nargs="+", help="PERIOD=PATH of an accuracy.py --dump (full panel)")
    parser.add_argument("--search", action="store_true", help="also score every combination of 2-5 candidates")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    periods = {}
    for item in args.dumps:
        period, _, path = item.partition("=")
        records = pickle.loads(Path(path).read_bytes())  # a throw-away study file written by accuracy.py
        periods[period] = [Series(r) for r in records if r.get("panel", "full") == "full"]
    header = " ".join(f"{p[:9]}:{v[:6]}" for p in periods for v in ("co2", "capita"))
    print(f"{'policy (OWA against naive)':56s} {header}")
    current = tuple(COMBINATION_MEMBERS)
    base = cells(periods, lambda s: production(s, None))
    replayed = cells(periods, lambda s: published(s, current, "median", None))
    if not np.allclose(base, replayed, rtol=0, atol=1e-12, equal_nan=True):
        raise SystemExit(f"the replay of the selection rule no longer matches pipeline.selection.select: {replayed} against {base}")
    print(line(f"median of {'+'.join(current)}, naive fallback", base))
    for name in FALLBACKS:
        print(line(f"  fallback {name}", cells(periods, lambda s, n=name: production(s, n))))
    print(line("  fallback: best candidate beating naive", cells(periods, lambda s: published(s, current, "median", best_beating_naive))))
    with_fallback = cells(periods, lambda s: published(s, current, "median", half_drift))
    fallback_base = cells(periods, lambda s: production(s, FALLBACK_CHOICE))
    if not np.allclose(with_fallback, fallback_base, rtol=0, atol=1e-12, equal_nan=True):
        raise SystemExit(f"the replay with the fallback no longer matches select's: {with_fallback} against {fallback_base}")
    alphas = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    shrinks = {f"alpha {a:.1f}": (lambda s, a=a: published(s, current, "median", half_drift, alpha=a)) for a in alphas}
    shrink_cells = {label: cells(periods, policy) for label, policy in shrinks.items()}
    for label, values in shrink_cells.items():
        print(line(f"  default shrunk toward naive, {label}", values))
    margins = {f"margin {m:.1f}": (lambda s, m=m: published(s, current, "median", half_drift, margin=m)) for m in MARGINS}
    margin_cells = {label: cells(periods, policy) for label, policy in margins.items()}
    for label, values in margin_cells.items():
        print(line(f"  another candidate replaces the default, {label}", values))
    if len(periods) >= 3:
        print("\nshrink toward naive, chosen on the other periods (leave one period out):")
        leave_one_period_out(list(periods), shrink_cells, "alpha 1.0")
        print("\nthe margin, chosen on the other periods (leave one period out):")
        leave_one_period_out(list(periods), margin_cells, f"margin {DEFAULT_MARGIN:.1f}")
    if not args.search:
        return
    rows = []
    for k in range(2, 6):
        for members in itertools.combinations(POOL, k):
            for method in ("mean",) if k == 2 else ("mean", "median"):
                rows.append((members, method, cells(periods, lambda s, m=members, a=method: published(s, m, a, None))))
    print(f"\n{len(rows)} combinations (naive fallback), best on the mean of all cells:")
    for members, method, values in sorted(rows, key=lambda r: r[2].mean())[:10]:
        print(line(f"{method} of {'+'.join(members)}", values))
    names = list(periods)
    if len(names) >= 3:
        print("\ncombinations (naive fallback), chosen on the other periods (leave one period out):")
        table = {f"{method} of {'+'.join(members)}": values for members, method, values in rows}
        leave_one_period_out(names, table, f"median of {'+'.join(current)}")
    if len(names) == 2:
        print("\nchosen on one period, judged on the other (mean of the two variables):")
        for pick, judge in ((0, 1), (1, 0)):
            on, off = slice(2 * pick, 2 * pick + 2), slice(2 * judge, 2 * judge + 2)
            top = sorted(rows, key=lambda r: r[2][on].mean())[:10]
            best = top[0]
            print(
                f"  best on {names[pick]} ({best[1]} of {'+'.join(best[0])}): {best[2][off].mean():.4f} on {names[judge]};"
                f" ten best: {np.mean([r[2][off].mean() for r in top]):.4f}; current: {base[off].mean():.4f}"
            )


if __name__ == "__main__":
    main()
