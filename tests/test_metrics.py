"""Metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from pipeline import metrics

ACTUAL = np.array([3.0, -0.5, 2.0, 7.0, 4.2])
PREDICTED = np.array([2.5, 0.0, 2.1, 7.8, 3.0])


def test_rmse_mae_match_sklearn() -> None:
    assert metrics.rmse(ACTUAL, PREDICTED) == pytest.approx(np.sqrt(skm.mean_squared_error(ACTUAL, PREDICTED)), rel=1e-12)
    assert metrics.mae(ACTUAL, PREDICTED) == pytest.approx(skm.mean_absolute_error(ACTUAL, PREDICTED), rel=1e-12)


def test_by_hand() -> None:
    assert metrics.rmse([1, 2], [2, 4]) == pytest.approx(np.sqrt(2.5))
    assert metrics.mae([1, 2], [2, 4]) == pytest.approx(1.5)
    assert metrics.mape([2, 4], [1, 5]) == pytest.approx(37.5)  # (50 % + 25 %) / 2
    assert metrics.smape([1, 3], [3, 3]) == pytest.approx(50.0)  # (2*2/4 + 0) / 2 * 100


def test_mape_matches_sklearn_in_percent() -> None:
    assert metrics.mape(ACTUAL, PREDICTED) == pytest.approx(100 * skm.mean_absolute_percentage_error(ACTUAL, PREDICTED), rel=1e-12)


def test_mape_skips_zero_actuals_with_a_warning() -> None:
    with pytest.warns(RuntimeWarning, match="skipped 1 point"):
        value = metrics.mape([0.0, 2.0, 4.0], [1.0, 1.0, 5.0])
    assert value == pytest.approx(37.5)
    with pytest.warns(RuntimeWarning):
        assert np.isnan(metrics.mape([0.0, 0.0], [1.0, 2.0]))


def test_smape_zero_over_zero_is_perfect() -> None:
    assert metrics.smape([0.0, 2.0], [0.0, 2.0]) == 0.0
    assert metrics.smape([0.0], [5.0]) == pytest.approx(200.0)


def test_mase_by_hand() -> None:
    train = [1.0, 3.0, 2.0, 5.0]  # naive errors 2, 1, 3 -> scale 2
    assert metrics.naive_scale(train) == pytest.approx(2.0)
    assert metrics.mase([6.0, 4.0], [5.0, 5.0], train) == pytest.approx(0.5)  # MAE 1 / 2
    assert metrics.naive_scale([1.0, 2.0, 3.0, 5.0], m=2) == pytest.approx(2.5)


def test_mase_constant_training_series() -> None:
    assert metrics.mase([1.0], [2.0], [3.0, 3.0, 3.0]) == float("inf")
    assert np.isnan(metrics.mase([3.0], [3.0], [3.0, 3.0, 3.0]))


def test_coverage_counts_bounds_as_inside() -> None:
    assert metrics.coverage([1.0, 2.0, 3.0, 4.0], [1.0, 0.0, 3.5, 0.0], [2.0, 1.0, 4.0, 4.0]) == pytest.approx(0.5)


def test_length_mismatch_refused() -> None:
    with pytest.raises(ValueError, match="y_true has 2 values"):
        metrics.rmse([1.0, 2.0], [1.0])


def test_msis_by_hand() -> None:
    from pipeline.metrics import interval_score, msis

    # 95 %: alpha = 0.05, penalty 2 / alpha = 40 per unit of miss.
    actual = [10.0, 15.0, 3.0]
    lower = [8.0, 9.0, 4.0]
    upper = [12.0, 13.0, 6.0]
    # widths 4, 4, 2; misses: 0, 15 - 13 = 2 above, 4 - 3 = 1 below
    np.testing.assert_allclose(interval_score(actual, lower, upper, 95), [4.0, 4.0 + 40 * 2, 2.0 + 40 * 1])
    train = [1.0, 3.0, 2.0, 6.0]  # naive MAE (2 + 1 + 4) / 3 = 7 / 3
    assert msis(actual, lower, upper, train, level=95) == pytest.approx((4 + 84 + 42) / 3 / (7 / 3))
    with pytest.raises(ValueError, match="level"):
        interval_score(actual, lower, upper, 100)
