"""Property tests: every transform inverts exactly; differencing continues a polynomial exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.transforms import BoxCox, Difference, Log, Reciprocal, Sqrt, Transform

SETTINGS = settings(max_examples=60, deadline=None)


def _series(low: float, high: float, min_size: int = 2) -> st.SearchStrategy[np.ndarray]:
    return arrays(
        np.float64,
        st.integers(min_size, 40),
        elements=st.floats(low, high, allow_nan=False, allow_infinity=False),
    )


@SETTINGS
@given(_series(1e-6, 1e6))
def test_log_inverts(y: np.ndarray) -> None:
    log = Log().fit(y)
    np.testing.assert_allclose(log.inverse_transform(log.transform(y)), y, rtol=1e-12)


@SETTINGS
@given(_series(0.0, 1e6))
def test_sqrt_inverts(y: np.ndarray) -> None:
    sqrt = Sqrt().fit(y)
    np.testing.assert_allclose(sqrt.inverse_transform(sqrt.transform(y)), y, rtol=1e-12, atol=1e-300)


@SETTINGS
@given(_series(1e-6, 1e6), st.booleans())
def test_reciprocal_inverts(y: np.ndarray, negate: bool) -> None:
    y = -y if negate else y
    reciprocal = Reciprocal().fit(y)
    np.testing.assert_allclose(reciprocal.inverse_transform(reciprocal.transform(y)), y, rtol=1e-12)


@pytest.mark.filterwarnings("ignore:The optimal lambda:UserWarning")  # scipy capping an extreme MLE lambda
@SETTINGS
@given(_series(1e-3, 1e3, min_size=3), st.one_of(st.none(), st.floats(-2.0, 2.0)))
def test_boxcox_inverts(y: np.ndarray, lmbda: float | None) -> None:
    if lmbda is None and np.ptp(y) == 0:
        return  # the MLE of lambda is undefined for a constant series
    boxcox = BoxCox(lmbda).fit(y)
    # The MLE of lambda is unbounded: for y = [0.5, 1, 1, ...] it is about 33, where
    # (y**lambda - 1) / lambda loses ~8 digits and no inverse can be exact. Exactness is a
    # property of well-conditioned lambdas (forecast::BoxCox.lambda searches [-1, 2]).
    assume(abs(boxcox.lmbda_) <= 3)
    np.testing.assert_allclose(boxcox.inverse_transform(boxcox.transform(y)), y, rtol=1e-8)


@pytest.mark.parametrize("lmbda", [5e-324, -5e-324, 1e-300, 1e-13])
def test_boxcox_with_a_vanishing_lambda_is_the_log(lmbda: float) -> None:
    y = np.array([0.5, 0.5, 2.0, 7.25])
    boxcox = BoxCox(lmbda).fit(y)
    np.testing.assert_allclose(boxcox.transform(y), np.log(y), rtol=1e-9)
    np.testing.assert_allclose(boxcox.inverse_transform(boxcox.transform(y)), y, rtol=1e-12)


@SETTINGS
@given(_series(-1e3, 1e3, min_size=5), st.integers(0, 3))
def test_difference_inverts(y: np.ndarray, order: int) -> None:
    difference = Difference(order).fit(y)
    z = difference.transform(y)
    assert z.size == y.size - order
    np.testing.assert_allclose(difference.inverse_transform(z), y, rtol=1e-9, atol=1e-9 * (1 + np.abs(y).max()) * 8**order)


@SETTINGS
@given(arrays(np.int64, st.integers(5, 40), elements=st.integers(-(10**6), 10**6)), st.integers(0, 3))
def test_difference_inverts_integers_exactly(y: np.ndarray, order: int) -> None:
    # integers below 2**53: every difference and cumulative sum is exact in float64.
    values = y.astype(np.float64)
    difference = Difference(order).fit(values)
    np.testing.assert_array_equal(difference.inverse_transform(difference.transform(values)), values)


@SETTINGS
@given(
    st.integers(0, 3),
    st.lists(st.integers(-50, 50), min_size=4, max_size=4),
    st.integers(5, 30),
    st.integers(1, 15),
)
def test_inverse_forecast_continues_polynomial(order: int, coefficients: list[int], n: int, h: int) -> None:
    # A polynomial of degree d has a constant d-th difference; forecasting that constant and
    # inverting must continue the polynomial exactly (integer arithmetic in float64).
    coefficients = coefficients[: order + 1]
    if order == 0:
        coefficients = [coefficients[0]]
    t = np.arange(n + h, dtype=np.float64)
    poly = sum(c * t**k for k, c in enumerate(coefficients))
    history, future = poly[:n], poly[n:]
    difference = Difference(order).fit(history)
    z = difference.transform(history)
    constant = z[-1] if order > 0 else None
    forecast_z = np.full(h, constant) if order > 0 else future.copy()
    np.testing.assert_array_equal(difference.inverse_forecast(forecast_z), future)


def test_inverse_forecast_random_walk_by_hand() -> None:
    difference = Difference(1).fit(np.array([1.0, 3.0, 6.0]))
    np.testing.assert_array_equal(difference.inverse_forecast(np.array([1.0, 2.0])), [7.0, 9.0])
    second = Difference(2).fit(np.array([1.0, 3.0, 6.0]))  # diffs 2, 3; second diff 1
    np.testing.assert_array_equal(second.inverse_forecast(np.array([1.0, 1.0])), [10.0, 15.0])


@pytest.mark.parametrize(
    ("transform", "values", "message"),
    [
        (Log(), [1.0, 0.0], "strictly positive"),
        (Log(), [1.0, -2.0], "strictly positive"),
        (Sqrt(), [1.0, -0.5], "non-negative"),
        (Reciprocal(), [1.0, 0.0], "non-zero"),
        (BoxCox(), [1.0, 0.0, 2.0], "strictly positive"),
        (BoxCox(0.5), [1.0, -1.0, 2.0], "strictly positive"),
    ],
)
def test_domain_errors(transform: Transform, values: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        transform.fit(np.array(values))
    with pytest.raises(ValueError, match=message):
        transform.transform(np.array(values))


def test_difference_refuses_bad_orders() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        Difference(-1).fit(np.arange(5.0))
    with pytest.raises(ValueError, match="more than 3 values"):
        Difference(3).fit(np.arange(3.0))


def test_transformed_forecaster_round_trip_and_levels(tmp_path) -> None:
    """Log + first differences around a naive model: levels out, exact save/load, nested intervals."""
    from pipeline.models.base import load_forecaster
    from pipeline.models.baselines import NaiveForecaster
    from pipeline.models.transformed import TransformedForecaster

    years = np.arange(1950, 2015)
    y = np.exp(0.03 * (years - 1950)) * (1 + 0.01 * np.sin(years))
    model = TransformedForecaster(NaiveForecaster(), transform="log", d=1).fit(y, years)
    forecast = model.predict(10)
    # A naive model on log-differences repeats the last log-growth: levels grow geometrically.
    growth = y[-1] / y[-2]
    np.testing.assert_allclose(forecast.mean, y[-1] * growth ** np.arange(1, 11), rtol=1e-12)
    assert np.all(forecast.lower[95] <= forecast.lower[80]) and np.all(forecast.lower[80] <= forecast.mean)
    assert np.all(forecast.mean <= forecast.upper[80]) and np.all(forecast.upper[80] <= forecast.upper[95])
    restored = load_forecaster(model.save(tmp_path / "wrapped"))
    again = restored.predict(10)
    np.testing.assert_array_equal(again.mean, forecast.mean)
    np.testing.assert_array_equal(again.upper[95], forecast.upper[95])


def test_boxcox_lambda_is_bounded() -> None:
    from pipeline.transforms import LAMBDA_BOUNDS, BoxCox

    y = np.array([0.5] + [1.0] * 30)
    transform = BoxCox().fit(y)
    assert LAMBDA_BOUNDS[0] <= transform.lmbda_ <= LAMBDA_BOUNDS[1]
    np.testing.assert_allclose(transform.inverse_transform(transform.transform(y)), y, rtol=1e-12)
