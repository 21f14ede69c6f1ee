"""Benchmark: the whole candidate set + selection against statsforecast, on held-out OWID years.

On the repository's OWID release (``pipeline.config.EMBEDDED_SOURCE``): every series of
``co2`` and ``co2_per_capita`` with at least 30 contiguous yearly values up to 2010 is trained
on those years and forecast for 2011–2014, which no model saw. Two panels: the whole
contiguous history ("full") and the same series cut to their last 20 points ("last20").

For each series co2cast runs what the forecast core runs: the default candidates on one
rolling-origin backtest (:func:`pipeline.backtest.evaluate_candidates`), selection on MASE
(:func:`pipeline.selection.select`: the default combination unless another candidate beats it
clearly, the short-series combination on series with few windows; a choice that does not beat
naive on the backtest gives way to the fallback, half the drift, if that does, else to naive;
a choice whose forecast breaks the output bounds or falls to the zero floor within the backtest
horizon gives way to naive, :func:`pipeline.core.forecast_beyond_bounds`), then fits the
calibrated, floored winner on the whole training series and forecasts. Its seconds per series
cover all of that. Beside it, statsforecast's Naive, RandomWalkWithDrift, AutoETS, AutoTheta
and AutoARIMA (a benchmark-only extra, ``requirements-bench.txt``) forecast the same series.
Each of co2cast's single candidates is also fitted on the whole series and scored, outside the
timer, so coverage can be read per model.

Printed per panel and variable: sMAPE (%), MASE, OWA against naive (M4's: the mean of the
sMAPE and MASE ratios to naive's), 80/95 % coverage of the 2011–2014 actuals, MSIS (95 %),
and seconds per series (median), as wall time and as CPU time of this single-threaded
process (BLAS limited to one thread, the process pinned to one CPU): on a shared machine the
CPU time is what one dedicated core would take. Last, a paired bootstrap over series of
co2cast's OWA and of its gap to each statsforecast method, to tell a gap from the luck of
which series are in the panel.

Run from the repository root::

    python benchmarks/accuracy.py                       # everything (tens of minutes)
    python benchmarks/accuracy.py --limit 20            # the first 20 series per variable
    python benchmarks/accuracy.py --variables co2 --save /tmp/co2.csv
    python benchmarks/accuracy.py --load /tmp/co2.csv /tmp/pc.csv   # print saved results
    python benchmarks/accuracy.py --train-end 2006 --dump /tmp/val.pkl  # keep every backtest
    python benchmarks/accuracy.py --train-end 2006 --origins 8          # more backtest origins

``--dump`` pickles each series' backtest (:class:`pipeline.backtest.Evaluation`) and every
candidate's uncalibrated forecast of the held-out years, so selection and calibration rules can
be compared offline on the validation run without refitting anything (the pickle is a
throw-away study file, never a model store).
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the package

from pipeline import metrics  # noqa: E402
from pipeline.backtest import evaluate_candidates, plan_windows  # noqa: E402
from pipeline.config import EMBEDDED_SOURCE  # noqa: E402
from pipeline.core import ForecastSpec, forecast_beyond_bounds  # noqa: E402
from pipeline.ingest import read_tidy_file  # noqa: E402
from pipeline.models.base import Forecast  # noqa: E402
from pipeline.models.registry import default_candidates  # noqa: E402
from pipeline.selection import publishable, select  # noqa: E402
from pipeline.series import PreparedSeries, recent_stretch_start  # noqa: E402

TRAIN_END, TEST_YEARS = 2010, (2011, 2012, 2013, 2014)
H = len(TEST_YEARS)
MIN_YEARS, SHORT = 30, 20
LEVELS = (80, 95)
#: The core's rolling-origin backtest (``--origins`` changes the number of origins for a study).
BACKTEST = {"horizon": ForecastSpec.backtest_horizon, "n_origins": ForecastSpec.backtest_origins}
STATSFORECAST = ("Naive", "RandomWalkWithDrift", "AutoETS", "AutoTheta", "AutoARIMA")
CHAMPION = "co2cast"
#: With ``--dump``: every series' backtest and raw candidate forecasts, for offline policy studies.
DUMP: list | None = None
DUMP_PATH: Path | None = None


Series = tuple[str, str, np.ndarray, np.ndarray, np.ndarray]


def load_series(variables: list[str], limit: int | None, train_end: int = TRAIN_END) -> list[Series]:
    """``(variable, entity, years, train values, test values)`` for every qualifying series."""
    tidy = read_tidy_file(EMBEDDED_SOURCE)
    test_years = [train_end + step for step in range(1, H + 1)]
    out = []
    for variable in variables:
        frame = tidy[(tidy["variable"] == variable)].dropna(subset=["value"])
        count = 0
        for entity, group in frame.groupby("entity", sort=True):
            by_year = group.set_index("year")["value"].astype(float).sort_index()
            test = by_year.reindex(test_years)
            if test.isna().any():
                continue
            train = by_year[by_year.index <= train_end]
            years = train.index.to_numpy()
            if years.size == 0 or years[-1] != train_end:
                continue
            # The most recent contiguous stretch, as the pipeline models it: an early gap is left out.
            start = recent_stretch_start(years)
            years, values = years[start:], train.to_numpy()[start:]
            if years.size < MIN_YEARS:
                continue
            out.append((variable, str(entity), years.astype(int), values, test.to_numpy()))
            count += 1
            if limit is not None and count >= limit:
                break
    return out


def co2cast_forecast(years: np.ndarray, values: np.ndarray) -> tuple[Forecast, tuple[float, float], str, dict[str, Forecast]]:
    """The pipeline's selection and its published forecast, with (wall, CPU) seconds; every candidate, untimed."""
    start, cpu = time.perf_counter(), time.process_time()
    plan = plan_windows(values.size, **BACKTEST)
    evaluation = evaluate_candidates(default_candidates(plan.min_train), years, values, levels=LEVELS, **BACKTEST)
    # As the core does: a choice whose forecast breaks the output bounds or falls to the zero
    # floor within the backtest horizon is refused and the selection asked again.
    series = PreparedSeries(series_id="benchmark", entity="benchmark", variable="benchmark", years=years, values=values)
    spec = ForecastSpec(
        horizon_end=int(years[-1]) + H, levels=LEVELS, backtest_horizon=BACKTEST["horizon"], backtest_origins=BACKTEST["n_origins"]
    )
    refused: dict[str, str] = {}
    while True:
        selection = select(evaluation, metric="mase", refused=refused)
        fitted = selection.model.fit(values, years)
        problem = forecast_beyond_bounds(fitted, series, spec)
        if problem is None:
            break
        refused[selection.winner] = problem
    forecast = fitted.predict(H, LEVELS)
    seconds = (time.perf_counter() - start, time.process_time() - cpu)
    per_candidate, raw = {}, {}
    for name, result in evaluation.results.items():
        try:
            fitted = publishable(result).fit(values, years)
            per_candidate[name] = fitted.predict(H, LEVELS)
            raw[name] = fitted.model_.predict(H, LEVELS)
        except Exception as error:  # a candidate failing on the whole series is reported, not fatal
            print(f"  {name} failed on the whole series: {error}", file=sys.stderr)
    if DUMP is not None:
        DUMP.append({"evaluation": evaluation, "raw": raw, "years": years, "values": values})
    return forecast, seconds, selection.winner, per_candidate


def statsforecast_forecasts(values: np.ndarray) -> dict[str, tuple[Forecast, tuple[float, float]]]:
    """statsforecast's models on the same training values, each with its (wall, CPU) seconds."""
    from statsforecast import models as sf

    out = {}
    for name in STATSFORECAST:
        start, cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = getattr(sf, name)().forecast(y=values.astype(np.float64), h=H, level=list(LEVELS))
        seconds = (time.perf_counter() - start, time.process_time() - cpu)
        forecast = Forecast(
            years=np.arange(1, H + 1),
            mean=np.asarray(result["mean"], dtype=np.float64),
            lower={lv: np.asarray(result[f"lo-{lv}"], dtype=np.float64) for lv in LEVELS},
            upper={lv: np.asarray(result[f"hi-{lv}"], dtype=np.float64) for lv in LEVELS},
        )
        out[f"sf_{name}"] = (forecast, seconds)
    return out


def score_row(panel: str, variable: str, entity: str, method: str, train: np.ndarray, test: np.ndarray, forecast: Forecast) -> dict:
    """One (series, method) row of errors on the held-out years."""
    row = {
        "panel": panel,
        "variable": variable,
        "entity": entity,
        "method": method,
        "smape": metrics.smape(test, forecast.mean),
        "mase": metrics.mase(test, forecast.mean, train),
        "msis_95": metrics.msis(test, forecast.lower[95], forecast.upper[95], train, level=95),
    }
    for level in LEVELS:
        inside = (test >= forecast.lower[level]) & (test <= forecast.upper[level])
        row[f"hits_{level}"] = int(inside.sum())
    row["points"] = int(test.size)
    row["negative"] = bool(np.any(forecast.mean < 0) or np.any(forecast.lower[95] < 0))
    return row


def run(series: list, panels: tuple[str, ...]) -> pd.DataFrame:
    """Every series through co2cast and statsforecast; one row per (panel, series, method)."""
    rows = []
    # Warm statsforecast's JIT-compiled code once, outside every timer.
    statsforecast_forecasts(np.linspace(1.0, 2.0, 40))
    for i, (variable, entity, years, values, test) in enumerate(series, 1):
        for panel in panels:
            y, yrs = (values, years) if panel == "full" else (values[-SHORT:], years[-SHORT:])
            champion, (wall, cpu), winner, candidates = co2cast_forecast(yrs, y)
            if DUMP is not None:
                DUMP[-1].update(panel=panel, variable=variable, entity=entity, test=test)
            rows.append({**score_row(panel, variable, entity, CHAMPION, y, test, champion), "seconds": wall, "cpu": cpu, "winner": winner})
            for name, forecast in candidates.items():
                row = score_row(panel, variable, entity, f"c_{name}", y, test, forecast)
                rows.append({**row, "seconds": np.nan, "cpu": np.nan, "winner": ""})
            for name, (forecast, (wall, cpu)) in statsforecast_forecasts(y).items():
                rows.append({**score_row(panel, variable, entity, name, y, test, forecast), "seconds": wall, "cpu": cpu, "winner": ""})
        if i % 20 == 0 or i == len(series):
            print(f"  {i}/{len(series)} series done", file=sys.stderr, flush=True)
            if DUMP_PATH is not None:
                import pickle

                DUMP_PATH.write_bytes(pickle.dumps(DUMP))
    return pd.DataFrame(rows)


def summarise(rows: pd.DataFrame, group: pd.DataFrame) -> pd.DataFrame:
    """sMAPE, MASE, OWA vs naive, coverage, MSIS and median seconds per method."""
    table = group.groupby("method").agg(
        series=("entity", "nunique"),
        smape=("smape", "mean"),
        mase=("mase", "mean"),
        msis_95=("msis_95", "mean"),
        msis_95_median=("msis_95", "median"),
        hits_80=("hits_80", "sum"),
        hits_95=("hits_95", "sum"),
        points=("points", "sum"),
        seconds=("seconds", "median"),
        cpu=("cpu", "median"),
        negative=("negative", "sum"),
    )
    table["owa"] = pd.Series({method: _owa(rows_of, group) for method, rows_of in group.groupby("method")})
    table["cov_80"] = table["hits_80"] / table["points"]
    table["cov_95"] = table["hits_95"] / table["points"]
    columns = ["series", "smape", "mase", "owa", "cov_80", "cov_95", "msis_95", "msis_95_median", "seconds", "cpu", "negative"]
    return table[columns].sort_values("owa")


def _owa(mine: pd.DataFrame, group: pd.DataFrame) -> float:
    """A method's OWA against naive on the series it has: its mean sMAPE and MASE over naive's on those same series.

    A candidate of ours that fails on a series leaves no row there (``--candidates``); over all of
    naive's series its ratios would compare two sets of series (a hard series missing made it look better).
    """
    key = ["variable", "entity"]
    naive = group[group["method"] == "sf_Naive"].set_index(key)
    ratios = []
    for metric in ("smape", "mase"):
        scored = mine.set_index(key)[metric].dropna()
        ratios.append(scored.mean() / naive.loc[scored.index, metric].mean())
    return 0.5 * sum(ratios)


def bootstrap(group: pd.DataFrame, draws: int = 2000, seed: int = 0) -> tuple[tuple[float, float, float], pd.DataFrame]:
    """co2cast's OWA and its gap to each statsforecast method, with a paired bootstrap over series.

    Series are drawn with replacement, the same draw for every method, and OWA against naive is
    recomputed on each draw. Returns co2cast's OWA with its 5 % and 95 % quantiles and, per
    statsforecast method, the gap on the data (negative: co2cast is better), its quantiles and
    the share of draws on which co2cast is below. This is the noise from which series happen to
    be in the panel, not from which years are held out.
    """
    smape = group.pivot(index="entity", columns="method", values="smape")
    mase = group.pivot(index="entity", columns="method", values="mase")[smape.columns]
    methods = list(smape.columns)
    naive, ours = methods.index("sf_Naive"), methods.index(CHAMPION)
    draw = np.random.default_rng(seed).integers(0, len(smape), size=(draws, len(smape)))

    def owa(index: np.ndarray) -> np.ndarray:
        s, m = np.nanmean(smape.to_numpy()[index], axis=-2), np.nanmean(mase.to_numpy()[index], axis=-2)
        return 0.5 * (s / s[..., naive, None] + m / m[..., naive, None])

    point, drawn = owa(np.arange(len(smape))), owa(draw)
    low, high = np.quantile(drawn[:, ours], [0.05, 0.95])
    gaps = {}
    for j, name in enumerate(methods):
        if name.startswith("sf_") and name != "sf_Naive":
            gap = drawn[:, ours] - drawn[:, j]
            q5, q95 = np.quantile(gap, [0.05, 0.95])
            gaps[name] = {"gap": point[ours] - point[j], "gap_5%": q5, "gap_95%": q95, "share_below": float(np.mean(gap < 0))}
    return (float(point[ours]), float(low), float(high)), pd.DataFrame.from_dict(gaps, orient="index").sort_values("gap")


def report(rows: pd.DataFrame, all_candidates: bool) -> None:
    """Print the tables and the targets."""
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 200)
    keep = rows if all_candidates else rows[~rows["method"].str.startswith("c_")]
    for (panel, variable), group in keep.groupby(["panel", "variable"]):
        print(f"\n== panel {panel}, {variable} ==")
        print(summarise(rows, group).round(4).to_string())
    for panel, group in keep.groupby("panel"):
        print(f"\n== panel {panel}, both variables ==")
        print(summarise(rows, group).round(4).to_string())
    print("\n== targets ==")
    for (panel, variable), group in rows.groupby(["panel", "variable"]):
        table = summarise(rows, group)
        ours = table.loc[CHAMPION]
        best_sf = table[table.index.str.startswith("sf_")]["owa"].min()
        print(
            f"{panel:7s} {variable:15s} OWA {ours['owa']:.3f} (best statsforecast {best_sf:.3f}: "
            f"{'below' if ours['owa'] < best_sf else 'NOT below'}); cov95 {ours['cov_95']:.3f}; cov80 {ours['cov_80']:.3f}"
        )
    print("\n== co2cast's OWA minus each statsforecast method's, paired bootstrap over series (2,000 draws) ==")
    for (panel, variable), group in rows.groupby(["panel", "variable"]):
        (value, low, high), gaps = bootstrap(group)
        print(f"{panel} {variable}: co2cast OWA {value:.3f} (5-95 %: {low:.3f}-{high:.3f})\n" + gaps.round(3).to_string())
    timed = rows[rows["method"] == CHAMPION]
    wall, cpu = statistics.median(timed["seconds"]), statistics.median(timed["cpu"])
    print(f"co2cast seconds per series (candidate set + selection + final fit), median: wall {wall:.3f}, CPU {cpu:.3f}")
    winners = rows[rows["method"] == CHAMPION].groupby("panel")["winner"].value_counts()
    print("\nwinners by panel:\n" + winners.to_string())


def main() -> None:
    """Parse arguments, run or load, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variables", nargs="+", default=["co2", "co2_per_capita"])
    parser.add_argument("--limit", type=int, default=None, help="series per variable (default: all)")
    parser.add_argument("--panels", nargs="+", default=["full", "last20"], choices=["full", "last20"])
    parser.add_argument("--save", type=Path, help="write the per-series rows to this CSV")
    parser.add_argument("--load", type=Path, nargs="+", help="print saved rows instead of running")
    parser.add_argument("--candidates", action="store_true", help="also print every single candidate")
    parser.add_argument("--train-end", type=int, default=TRAIN_END, help="last training year (2006: a validation run on 2007-2010)")
    parser.add_argument("--dump", type=Path, help="pickle every series' backtest and raw candidate forecasts here (policy studies)")
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU (default: the first allowed)")
    parser.add_argument("--origins", type=int, default=BACKTEST["n_origins"], help="backtest origins (default: the core's)")
    args = parser.parse_args()
    BACKTEST["n_origins"] = args.origins
    if args.load:
        rows = pd.concat([pd.read_csv(path) for path in args.load], ignore_index=True)
    else:
        if hasattr(os, "sched_setaffinity"):
            allowed = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {args.cpu if args.cpu is not None else allowed[0]})
        series = load_series(args.variables, args.limit, args.train_end)
        print(f"{len(series)} series ({', '.join(args.variables)}), panels {args.panels}", file=sys.stderr)
        global DUMP, DUMP_PATH
        DUMP, DUMP_PATH = ([], args.dump) if args.dump else (None, None)
        rows = run(series, tuple(args.panels))
        if args.save:
            rows.to_csv(args.save, index=False)
    report(rows, args.candidates)


if __name__ == "__main__":
    main()
