"""The shared rolling-origin backtest: identical windows for every model, known MASE."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.backtest import Split, backtest, grouped_scores, rolling_origin_splits, step_scores, study_split
from pipeline.models.arima import ArimaForecaster
from pipeline.models.baselines import DriftForecaster, MeanForecaster, NaiveForecaster


def test_splits_end_at_the_last_value() -> None:
    assert rolling_origin_splits(30, 5, 3, min_train=10) == [Split(15, 20), Split(20, 25), Split(25, 30)]
    assert rolling_origin_splits(30, 5, 3, min_train=10, step=1) == [Split(23, 28), Split(24, 29), Split(25, 30)]
    split = Split(15, 20)
    assert (split.train, split.test) == (slice(0, 15), slice(15, 20))


def test_splits_drop_origins_without_enough_history() -> None:
    with pytest.warns(RuntimeWarning, match="only 2 of 4 origins"):
        assert rolling_origin_splits(30, 5, 4, min_train=16) == [Split(20, 25), Split(25, 30)]
    with pytest.raises(ValueError, match="cannot give one origin"):
        rolling_origin_splits(12, 5, 2, min_train=10)


def test_identical_windows_for_every_model() -> None:
    rng = np.random.default_rng(3)
    values = 10 + np.cumsum(rng.normal(0.2, 1.0, 80))
    years = np.arange(1940, 2020)
    results = [
        backtest(make, years, values, horizon=4, n_origins=3)
        for make in (NaiveForecaster, DriftForecaster, MeanForecaster, lambda: ArimaForecaster(order=(1, 1, 0)))
    ]
    reference = results[0]
    assert reference.splits == [Split(68, 72), Split(72, 76), Split(76, 80)]
    for result in results[1:]:
        assert result.splits == reference.splits
        pd.testing.assert_frame_equal(
            result.forecasts[["origin_year", "year", "step", "actual", "scale"]],
            reference.forecasts[["origin_year", "year", "step", "actual", "scale"]],
        )
    assert list(reference.per_origin.index) == [2007, 2011, 2015]
    assert list(reference.forecasts["year"]) == list(range(2008, 2020))


def test_naive_mase_by_hand() -> None:
    values = np.arange(10, dtype=float) ** 2  # 0 1 4 9 ... 81
    result = backtest(NaiveForecaster, np.arange(10), values, horizon=2, n_origins=2, min_train=3)
    # origin 1: train 0..25, naive scale mean(1,3,5,7,9) = 5, forecast 25 vs 36, 49 -> 11/5, 24/5
    # origin 2: train 0..49, scale mean(1,3,...,13) = 7, forecast 49 vs 64, 81 -> 15/7, 32/7
    scaled = np.array([11 / 5, 24 / 5, 15 / 7, 32 / 7])
    assert result.metrics["mase"] == pytest.approx(scaled.mean(), rel=1e-12)
    assert result.metrics["mase"] == pytest.approx(24 / 7, rel=1e-12)
    assert result.by_horizon.loc[1, "mase"] == pytest.approx((11 / 5 + 15 / 7) / 2)
    assert result.by_horizon.loc[2, "mae"] == pytest.approx((24 + 32) / 2)
    assert result.metrics["rmse"] == pytest.approx(np.sqrt(np.mean(np.square([11, 24, 15, 32]))))
    assert set(result.metrics) == {"rmse", "mae", "mape", "smape", "mase", "coverage_80", "coverage_95", "msis_80", "msis_95"}
    summary = result.to_dict()
    assert summary["origins"] == [5, 7] and summary["horizon"] == 2


def test_a_window_with_a_flat_training_part_is_left_out_of_the_scaled_metrics_only() -> None:
    # Zeros, then growth: the first window trains on 0 0 0 (no naive error to scale by).
    values = np.array([0, 0, 0, 1, 3, 6, 10, 15, 21], dtype=float)
    result = backtest(NaiveForecaster, np.arange(9), values, horizon=2, n_origins=3, min_train=3)
    assert list(result.per_origin.index) == [2, 4, 6]
    # By hand, the windows that can be scaled: origin 4 (train 0 0 0 1 3, scale 3/4, forecast 3
    # vs 6, 10) and origin 6 (train to 10, scale 10/6, forecast 10 vs 15, 21).
    assert result.metrics["mase"] == pytest.approx(np.mean([3 / 0.75, 7 / 0.75, 5 / (10 / 6), 11 / (10 / 6)]), rel=1e-12)
    assert np.isfinite(result.metrics["msis_95"])
    # The unscaled metrics keep every window (origin 2: forecast 0 vs 1, 3).
    assert result.metrics["mae"] == pytest.approx(np.mean([1, 3, 3, 7, 5, 11]), rel=1e-12)
    assert np.isnan(result.per_origin.loc[2, "mase"]) and np.isfinite(result.per_origin.loc[4, "mase"])


def test_scaled_metrics_are_undefined_when_no_window_can_be_scaled() -> None:
    result = backtest(NaiveForecaster, np.arange(8), np.full(8, 5.0), horizon=2, n_origins=2, min_train=3)
    assert np.isnan(result.metrics["mase"]) and np.isnan(result.metrics["msis_80"])
    assert result.metrics["mae"] == 0.0


def test_study_split_is_first_200_then_the_rest() -> None:
    years = np.arange(1800, 2015)
    values = np.linspace(0.0, 10.0, years.size) + np.sin(years)
    result = study_split(NaiveForecaster, years, values, train=200)
    assert result.splits == [Split(200, 215)]
    assert list(result.forecasts["year"]) == list(range(2000, 2015))
    assert (result.forecasts["mean"] == values[199]).all()
    assert result.metrics["mae"] == pytest.approx(np.mean(np.abs(values[200:] - values[199])))
    with pytest.raises(ValueError, match="train must be between"):
        study_split(NaiveForecaster, years, values, train=215)


def test_step_scores_are_the_grouped_scores_by_horizon() -> None:
    rng = np.random.default_rng(11)
    years, values = np.arange(1950, 2015), 30 + np.cumsum(rng.normal(0.4, 1.5, 65))
    result = backtest(DriftForecaster, years, values, horizon=4, n_origins=5)
    by_horizon, _ = grouped_scores(result.forecasts, (80, 95))  # pandas groupby, one frame per step
    fast = step_scores(result.forecasts, (80, 95))
    assert sorted(fast) == [1, 2, 3, 4] == by_horizon.index.tolist()
    for step, row in by_horizon.iterrows():
        assert list(fast[step]) == list(row.index)
        np.testing.assert_allclose([fast[step][k] for k in row.index], row.to_numpy(dtype=float), rtol=0, atol=0)
