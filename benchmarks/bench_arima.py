"""Benchmark: co2cast's ARIMA search against ``pmdarima.auto_arima`` on the study series.

Times the order search on the study's training window and the shared rolling-origin backtest
(each origin refits, so it re-runs the search), for both, and prints the backtest MASE and the
study split's RMSE/MAE. The machine is shared and noisy, so each timing is repeated
(``--repeats``, interleaving the two methods) and the minimum and median are printed.

pmdarima is a benchmark-only extra (``requirements-bench.txt``); it is wrapped as a
:class:`~pipeline.models.base.Forecaster` here only.

Run from the repository root::

    python benchmarks/bench_arima.py [--data PATH]   (default: the embedded OWID release)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the package

from pipeline.backtest import BacktestResult, backtest, study_split
from pipeline.config import EMBEDDED_SOURCE
from pipeline.ingest import read_tidy_file
from pipeline.models.arima import ArimaForecaster
from pipeline.models.base import Forecaster
from pipeline.series import prepare_series

DEFAULT_DATA = EMBEDDED_SOURCE


class AutoArimaForecaster(Forecaster):
    """``pmdarima.auto_arima`` with its defaults (stepwise, KPSS for d), as a Forecaster."""

    family: ClassVar[str] = "auto_arima"
    min_obs: ClassVar[int] = 10

    def __init__(self) -> None:
        pass

    def _fit(self, y: np.ndarray) -> None:
        import pmdarima

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model_ = pmdarima.auto_arima(y, suppress_warnings=True, error_action="ignore")
        self.order_ = tuple(self.model_.order)

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        bounds = {}
        mean = None
        for level in levels:
            mean, interval = self.model_.predict(n_periods=h, return_conf_int=True, alpha=1 - level / 100)
            bounds[level] = (np.asarray(interval[:, 0]), np.asarray(interval[:, 1]))
        return np.asarray(mean), bounds


def _time(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="OWID CSV (default: %(default)s)")
    parser.add_argument("--entity", default="Canada")
    parser.add_argument("--variable", default="co2_per_capita")
    parser.add_argument("--first-year", type=int, default=1800)
    parser.add_argument("--as-of", type=int, default=2014)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--origins", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    tidy = read_tidy_file(args.data)
    tidy = tidy.loc[tidy["year"] >= args.first_year]
    series = prepare_series(tidy, args.entity, args.variable, args.as_of)
    years, values = series.years, series.values
    train = values[:200]
    import pmdarima
    import statsmodels

    print(f"{series.series_id}: {series.first_year}-{series.last_year}, {len(series)} values; study split 200/{len(series) - 200}")
    print(
        f"statsmodels {statsmodels.__version__}, pmdarima {pmdarima.__version__}, {args.repeats} interleaved repeats, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')} (co2cast's ARIMA limits BLAS to 1 thread itself)"
    )

    candidates: dict[str, Callable[[], Forecaster]] = {
        "co2cast ArimaForecaster (stepwise)": ArimaForecaster,
        "co2cast ArimaForecaster (grid 0..3)": lambda: ArimaForecaster(search="grid"),
        "pmdarima.auto_arima": AutoArimaForecaster,
    }
    # warm up imports and caches once so the first timed run is not penalised.
    for make in candidates.values():
        make().fit(train)

    search_times: dict[str, list[float]] = {name: [] for name in candidates}
    backtest_times: dict[str, list[float]] = {name: [] for name in candidates}
    results: dict[str, tuple[Forecaster, BacktestResult, BacktestResult]] = {}
    for _ in range(args.repeats):
        for name, make in candidates.items():  # interleaved: load changes hit both alike
            seconds, model = _time(lambda make=make: make().fit(train))
            search_times[name].append(seconds)
            seconds, rolling = _time(lambda make=make: backtest(make, years, values, horizon=args.horizon, n_origins=args.origins))
            backtest_times[name].append(seconds)
            results[name] = (model, rolling, results[name][2] if name in results else study_split(make, years, values, train=200))

    header = (
        f"{'model':38} {'order':>10} {'search s (min/med)':>19} {'backtest s (min/med)':>21} "
        f"{'bt MASE':>8} {'bt RMSE':>8} {'cov80':>6} {'cov95':>6} {'study RMSE':>10} {'study MAE':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in candidates:
        model, rolling, study = results[name]
        order = str(tuple(getattr(model, "order_", ())))
        st, bt = search_times[name], backtest_times[name]
        m, s = rolling.metrics, study.metrics
        print(
            f"{name:38} {order:>10} {min(st):8.3f}/{statistics.median(st):<9.3f}  {min(bt):8.3f}/{statistics.median(bt):<9.3f}  "
            f"{m['mase']:8.3f} {m['rmse']:8.3f} {m['coverage_80']:6.2f} {m['coverage_95']:6.2f} {s['rmse']:10.3f} {s['mae']:9.3f}"
        )
    print(f"backtest: {args.origins} origins x {args.horizon} years, origins {[int(y) for y in results[name][1].per_origin.index]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
