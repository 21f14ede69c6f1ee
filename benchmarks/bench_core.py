"""Benchmark the per-series core: one series from prepare to forecast, no MLflow or Airflow.

Prints the wall time of :func:`pipeline.core.run_series` + :func:`pipeline.core.forecast_frame`
(a) on a 40-year synthetic series with the three baselines (what ``tests/test_core.py`` runs),
median of 20 runs, and (b) on the study series (Canada, CO2 per capita, 1800-2014) with the
production line-up (the model zoo with :class:`~pipeline.candidates.ZooSelection`), once. Machine-dependent, so a benchmark
rather than a test. Run from the repository root::

    python benchmarks/bench_core.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pandas as pd

from pipeline import core
from pipeline.candidates import ZooSelection, zoo_candidates
from pipeline.config import EMBEDDED_SOURCE
from pipeline.core import CandidateResult, ForecastSpec, Selection
from pipeline.ingest import read_tidy_file
from pipeline.models.baselines import DriftForecaster, MeanForecaster, NaiveForecaster


def _best(results: dict[str, CandidateResult]) -> Selection:
    best = min(results, key=lambda name: results[name].scores["mase"])
    return Selection(champion=best, best=best, register=(best,), fit=(best,), reason="best")


def main() -> None:
    years = np.arange(1950, 1990)
    values = 10 + 0.5 * np.arange(years.size) + np.random.default_rng(3).normal(scale=0.05, size=years.size)
    tidy = pd.DataFrame({"entity": "Testland", "iso_code": "TST", "year": years, "variable": "co2", "value": values})
    spec = ForecastSpec(horizon_end=2000, backtest_horizon=3, backtest_origins=3, min_points=20)
    baselines = {"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster()}
    times = []
    for _ in range(20):
        start = time.perf_counter()
        result = core.run_series(core.prepare(tidy, "Testland", "co2", 1989, spec), baselines, _best, spec)
        core.forecast_frame(result.champion, 1989, spec.horizon_end, spec.levels)
        times.append(time.perf_counter() - start)
    print(f"synthetic 40-year series, 3 baselines: median {statistics.median(times) * 1000:.0f} ms, min {min(times) * 1000:.0f} ms")

    study = read_tidy_file(EMBEDDED_SOURCE)
    spec = ForecastSpec(horizon_end=2050)
    start = time.perf_counter()
    series = core.prepare(study, "Canada", "co2_per_capita", 2014, spec)
    result = core.run_series(series, zoo_candidates, ZooSelection(), spec)
    core.forecast_frame(result.champion, 2014, 2050, spec.levels)
    elapsed = time.perf_counter() - start
    mase = ", ".join(f"{name} {r.scores['mase']:.3f}" for name, r in result.candidates.items())
    print(f"Canada co2_per_capita 1800-2014, production line-up: {elapsed:.1f} s, champion {result.selection.champion}")
    print(f"  backtest MASE: {mase}")


if __name__ == "__main__":
    main()
