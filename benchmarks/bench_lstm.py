"""Benchmark the numpy LSTM: full training time, one pass against torch, study backtest.

Prints (a) the time to fit :class:`~pipeline.models.lstm.LSTMForecaster` with its defaults
on the study series (Canada, CO2 per capita, 1800-2014), (b) the time of one forward +
backward pass (loss on a dense layer over the last output) of our LSTM and of
``torch.nn.LSTM`` on CPU for a batch of windows, measured in interleaved rounds, as median
and minimum with the ratios on both, against torch on one thread and on its default
threads, and (c) the LSTM's errors on the study's 200/15 split. Issue targets: (a) under 3 s; (b) ours at least 1.5x faster.
Machine-dependent, so a benchmark rather than a test. Run from the repository root::

    python benchmarks/bench_lstm.py [--data PATH]   (default: the embedded OWID release)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.blas import single_threaded_blas
from pipeline.config import EMBEDDED_SOURCE
from pipeline.models.lstm import LSTMForecaster, LSTMNet

DEFAULT_DATA = EMBEDDED_SOURCE


def load_study_series(path: Path, country: str = "Canada", start: int = 1800, end: int = 2014) -> tuple[np.ndarray, np.ndarray]:
    """The study series: one country's ``co2_per_capita`` by year.

    Args:
        path: the OWID CSV (columns ``country, year, co2_per_capita``).
        country: the entity.
        start: first year kept.
        end: last year kept.

    Returns:
        ``(values, years)``.
    """
    frame = pd.read_csv(path, usecols=["country", "year", "co2_per_capita"])
    rows = frame[(frame["country"] == country) & frame["year"].between(start, end)].sort_values("year")
    return rows["co2_per_capita"].to_numpy(dtype=np.float64), rows["year"].to_numpy()


def bench_training(y: np.ndarray, years: np.ndarray, repeat: int) -> None:
    """(a) Full training (fit, including the interval table) on the study series."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        model = LSTMForecaster().fit(y, years)
        times.append(time.perf_counter() - start)
    print(
        f"(a) full LSTM training on {y.size} points: median {statistics.median(times):.3f} s "
        f"(min {min(times):.3f}, max {max(times):.3f}, {repeat} fits; "
        f"{model.epochs_run_} epochs, best epoch {model.best_epoch_}); target < 3 s"
    )


def _our_pass(hidden: int, dtype: str, x64: np.ndarray, target64: np.ndarray) -> Callable[[], object]:
    """One forward + backward pass of our LSTM (run it with BLAS on one thread, as ``fit`` does)."""
    net = LSTMNet(n_in=1, hidden=hidden, dtype=dtype)
    theta = net.init_params(np.random.default_rng(1))
    x, target = x64.astype(net.dtype), target64.astype(net.dtype)
    return lambda: net.loss_and_grad(theta, x, target)


def _torch_pass(torch: Any, hidden: int, dtype: str, x64: np.ndarray, target64: np.ndarray) -> Callable[[], object]:
    """One forward + backward pass of ``torch.nn.LSTM`` + a linear layer on the last output, MSE."""
    torch_dtype = getattr(torch, dtype)
    lstm = torch.nn.LSTM(1, hidden, batch_first=True).to(torch_dtype)
    dense = torch.nn.Linear(hidden, 1).to(torch_dtype)
    tx, tt = torch.from_numpy(x64.astype(dtype)), torch.from_numpy(target64.astype(dtype))

    def one_pass() -> None:
        lstm.zero_grad()
        dense.zero_grad()
        out, _ = lstm(tx)
        loss = torch.mean((dense(out[:, -1]) - tt) ** 2)
        loss.backward()

    return one_pass


def _time_calls(fn: Callable[[], object], n: int) -> list[float]:
    """Wall times of ``n`` calls of ``fn``, in seconds."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleaved_times(contenders: dict[str, Callable[[], list[float]]], rounds: int) -> dict[str, list[float]]:
    """Time several contenders in alternating rounds so a load change hits them all alike.

    Args:
        contenders: name -> a function that runs one round and returns its call times.
        rounds: how many rounds; the order of the contenders alternates between rounds.

    Returns:
        name -> all call times of all rounds.
    """
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name] += contenders[name]()
    return times


def bench_pass(batch: int, window: int, hiddens: tuple[int, ...], repeat: int, rounds: int, target: float = 1.5) -> None:
    """(b) One forward + backward pass, ours vs ``torch.nn.LSTM``, per hidden size and dtype.

    Ours runs with BLAS on one thread, which is how :class:`LSTMForecaster` trains; torch is
    timed with one intra-op thread and with its default. The three are measured in
    ``rounds`` alternating rounds of ``repeat // rounds`` calls each (after a warm-up), and
    the ratios torch / ours are given on the medians and on the minimums of all calls.
    """
    try:
        import torch
    except ImportError:
        print("(b) torch is not installed (pip install torch==2.13.0): skipping the comparison")
        return
    rng = np.random.default_rng(0)
    x64 = rng.standard_normal((batch, window, 1))
    target64 = rng.standard_normal((batch, 1))
    default_threads = torch.get_num_threads()
    per_round = max(1, repeat // rounds)
    print(
        f"(b) one forward+backward pass, batch {batch}, window {window}, CPU, torch {torch.__version__}; "
        f"{rounds} interleaved rounds x {per_round} calls; times in ms as median / min; ratio = torch / ours"
    )
    verdicts = []
    for dtype in ("float64", "float32"):
        for hidden in hiddens:
            ours = _our_pass(hidden, dtype, x64, target64)
            theirs = _torch_pass(torch, hidden, dtype, x64, target64)

            def run_ours(fn: Callable[[], object] = ours) -> list[float]:
                with single_threaded_blas():
                    return _time_calls(fn, per_round)

            def run_torch(threads: int, fn: Callable[[], object] = theirs) -> list[float]:
                torch.set_num_threads(threads)
                try:
                    return _time_calls(fn, per_round)
                finally:
                    torch.set_num_threads(default_threads)

            contenders = {
                "ours": run_ours,
                "torch 1 thread": lambda: run_torch(1),
                f"torch {default_threads} threads": lambda: run_torch(default_threads),
            }
            for run in contenders.values():  # warm-up: caches, allocators, lazy init
                run()
            times = interleaved_times(contenders, rounds)
            med = {name: statistics.median(t) for name, t in times.items()}
            low = {name: min(t) for name, t in times.items()}
            parts = [f"ours {med['ours'] * 1e3:6.3f} / {low['ours'] * 1e3:6.3f}"]
            for name in list(contenders)[1:]:
                r_med, r_min = med[name] / med["ours"], low[name] / low["ours"]
                parts.append(f"{name} {med[name] * 1e3:6.3f} / {low[name] * 1e3:6.3f} (ratio {r_med:4.2f}x / {r_min:4.2f}x)")
                verdicts.append((f"{dtype} hidden {hidden} vs {name}", r_med, r_min))
            print(f"    {dtype} hidden {hidden:>2}: " + " | ".join(parts))
    for label, r_med, r_min in verdicts:
        met = "met" if min(r_med, r_min) >= target else ("met on one statistic only" if max(r_med, r_min) >= target else "NOT met")
        print(f"    target >= {target}x, {label}: {met} (median {r_med:4.2f}x, min {r_min:4.2f}x)")


def bench_backtest(y: np.ndarray, years: np.ndarray, n_train: int = 200) -> None:
    """(c) The study's split: train on the first ``n_train`` years, forecast the rest."""
    h = y.size - n_train
    forecast = LSTMForecaster().fit(y[:n_train], years[:n_train]).predict(h)
    err = y[n_train:] - forecast.mean
    naive = y[n_train:] - y[n_train - 1]
    covered = np.mean((y[n_train:] >= forecast.lower[80]) & (y[n_train:] <= forecast.upper[80]))
    print(
        f"(c) backtest {n_train}/{h} ({years[n_train]}-{years[-1]}): RMSE {np.sqrt(np.mean(err**2)):.4f}, "
        f"MAE {np.mean(np.abs(err)):.4f} (naive last value: RMSE {np.sqrt(np.mean(naive**2)):.4f}, "
        f"MAE {np.mean(np.abs(naive)):.4f}); 80% interval covers {covered:.0%} of the test years"
    )


def main() -> None:
    """Parse the options and run the three measurements."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="OWID CSV with country, year, co2_per_capita")
    parser.add_argument("--repeat", type=int, default=400, help="timed calls per contender per pass measurement")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds the calls are split into")
    parser.add_argument("--fits", type=int, default=5, help="timed repetitions of the full training")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--window", type=int, default=10)
    args = parser.parse_args()
    y, years = load_study_series(args.data)
    bench_training(y, years, args.fits)
    bench_pass(args.batch, args.window, (16, 32), args.repeat, args.rounds)
    bench_backtest(y, years)


if __name__ == "__main__":
    main()
