"""Benchmark the numpy LSTM: full training time, one pass against torch, study backtest.

Prints (a) the time to fit :class:`~pipeline.models.lstm.LSTMForecaster` with its defaults
on the study series (Canada, CO2 per capita, 1800-2014), (b) the median time of one
forward + backward pass (loss on a dense layer over the last output) of our LSTM and of
``torch.nn.LSTM`` on CPU for a batch of windows, and their ratio, and (c) the LSTM's errors
on the study's 200/15 split. Issue targets: (a) under 3 s; (b) ours at least 1.5x faster.
Machine-dependent, so a benchmark rather than a test. Run from the repository root::

    python benchmarks/bench_lstm.py [--data ../shared/data/owid-co2-data-to-2014.csv]
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

from pipeline.models.lstm import LSTMForecaster, LSTMNet
from pipeline.models.neural import single_threaded_blas

DEFAULT_DATA = Path("../shared/data/owid-co2-data-to-2014.csv")


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


def median_time(fn: Callable[[], object], repeat: int, warmup: int = 3) -> float:
    """Median wall time of ``fn`` in seconds over ``repeat`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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


def _our_pass_time(hidden: int, dtype: str, x64: np.ndarray, target64: np.ndarray, repeat: int) -> float:
    """Median time of one forward + backward pass of our LSTM, BLAS on one thread as in ``fit``."""
    net = LSTMNet(n_in=1, hidden=hidden, dtype=dtype)
    theta = net.init_params(np.random.default_rng(1))
    x, target = x64.astype(net.dtype), target64.astype(net.dtype)
    with single_threaded_blas():
        return median_time(lambda: net.loss_and_grad(theta, x, target), repeat)


def _torch_pass_time(torch: Any, hidden: int, dtype: str, x64: np.ndarray, target64: np.ndarray, repeat: int) -> float:
    """Median time of one forward + backward pass of ``torch.nn.LSTM`` + a linear layer, MSE."""
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

    return median_time(one_pass, repeat)


def bench_pass(batch: int, window: int, hiddens: tuple[int, ...], repeat: int) -> None:
    """(b) One forward + backward pass, ours vs ``torch.nn.LSTM``, per hidden size and dtype.

    Torch is timed with its default intra-op threads and with one thread; ours runs with BLAS
    on one thread, which is how :class:`LSTMForecaster` trains.
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
    print(f"(b) one forward+backward pass, batch {batch}, window {window}, CPU, torch {torch.__version__}")
    for dtype in ("float64", "float32"):
        for hidden in hiddens:
            ours = _our_pass_time(hidden, dtype, x64, target64, repeat)
            torch.set_num_threads(default_threads)
            theirs = _torch_pass_time(torch, hidden, dtype, x64, target64, repeat)
            torch.set_num_threads(1)
            theirs_1 = _torch_pass_time(torch, hidden, dtype, x64, target64, repeat)
            torch.set_num_threads(default_threads)
            print(
                f"    {dtype} hidden {hidden:>2}: ours {ours * 1e3:6.3f} ms | torch ({default_threads} threads) {theirs * 1e3:6.3f} ms, "
                f"ratio {theirs / ours:4.2f}x | torch (1 thread) {theirs_1 * 1e3:6.3f} ms, ratio {theirs_1 / ours:4.2f}x (target >= 1.5x)"
            )


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
    parser.add_argument("--repeat", type=int, default=200, help="timed repetitions per pass measurement")
    parser.add_argument("--fits", type=int, default=5, help="timed repetitions of the full training")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--window", type=int, default=10)
    args = parser.parse_args()
    y, years = load_study_series(args.data)
    bench_training(y, years, args.fits)
    bench_pass(args.batch, args.window, (16, 32), args.repeat)
    bench_backtest(y, years)


if __name__ == "__main__":
    main()
