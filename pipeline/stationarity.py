"""Stationarity tests and the differencing order they imply: ADF, KPSS, ``implied_d``, ``ndiffs``.

A leaf module (numpy and ``statsmodels.tsa.stattools`` only, no plotting): the ARIMA search
calls :func:`ndiffs` inside every fit of a backtest, and the diagnostics report uses the same
functions, so both apply one rule.

The rule: ADF (null: unit root) and KPSS (null: stationary) are run on the levels and on the
1st and 2nd differences. The implied order is the smallest ``d`` at which ADF rejects at 5 %
*and* KPSS does not reject at 5 %. When no ``d <= max_d`` satisfies both (the tests disagree at
every order), the KPSS-only answer is used (smallest ``d`` where KPSS does not reject, as R's
``forecast::ndiffs`` and pmdarima do), because over-differencing is the safer error for
forecasting trending emissions; if KPSS rejects everywhere, ``max_d``.

``regression="c"`` (level stationarity) is the default, as in ``ndiffs``: a trend-stationary
series then counts as needing ``d = 1``, and the ARIMA gets a drift term. With
``regression="ct"`` the tests allow a deterministic trend, and a trend-stationary series gets
``d = 0``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from statsmodels.tools.sm_exceptions import InterpolationWarning, SingularMatrixWarning
from statsmodels.tsa.stattools import adfuller, kpss

ALPHA = 0.05


def adf_test(x: np.ndarray, regression: str = "c", alpha: float = ALPHA) -> dict[str, Any]:
    """Augmented Dickey–Fuller test (null: unit root), lag chosen by AIC.

    Args:
        x: the series.
        regression: deterministic terms, ``"c"`` (constant) or ``"ct"`` (constant and trend).
        alpha: significance level.

    Returns:
        A row: ``test, regression, statistic, p_value, p_value_bound (None), lags, nobs,
        critical_values, reject (unit root rejected), stationary``.
    """
    x = np.asarray(x, dtype=np.float64)
    if np.ptp(x) == 0:
        return _constant_row("adf", regression, x)
    with warnings.catch_warnings():
        # A deterministic stretch (an exact exponential, an alternation, values of 1e30 or
        # spanning many orders of magnitude) makes the lag regressions rank-deficient or fit
        # exactly (log of a zero residual sum): statsmodels then solves by pseudo-inverse and
        # repeats the warning for every lag it tries ("always"), about 200 lines a series when
        # the ARIMA search runs this in each backtest window. The statistic is what it is.
        warnings.simplefilter("ignore", SingularMatrixWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = adfuller(x, regression=regression, autolag="AIC", result_object=True)
    statistic, p_value, lags, nobs, critical = result.statistic, result.pvalue, result.lags, result.nobs, result.critical_values
    reject = bool(p_value < alpha)
    return {
        "test": "adf",
        "regression": regression,
        "statistic": float(statistic),
        "p_value": float(p_value),
        "p_value_bound": None,
        "lags": int(lags),
        "nobs": int(nobs),
        "critical_values": {k: float(v) for k, v in critical.items()},
        "reject": reject,
        "stationary": reject,
    }


def kpss_test(x: np.ndarray, regression: str = "c", alpha: float = ALPHA) -> dict[str, Any]:
    """KPSS test (null: stationary around a level, or a trend for ``"ct"``).

    statsmodels interpolates the p-value in a table that stops at 0.01 and 0.10 and warns when
    the statistic falls outside it. The warning is caught and the fact recorded in
    ``p_value_bound`` (``"<0.01"`` or ``">0.1"``): the reported ``p_value`` is then a bound, not
    a value, which is all the decision at 5 % needs.

    Args:
        x: the series.
        regression: ``"c"`` or ``"ct"``.
        alpha: significance level.

    Returns:
        A row like :func:`adf_test`'s; ``reject`` means stationarity is rejected.
    """
    x = np.asarray(x, dtype=np.float64)
    if np.ptp(x) == 0:
        return _constant_row("kpss", regression, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InterpolationWarning)
        note = None
        try:
            result = kpss(x, regression=regression, nlags="auto", result_object=True)
        except (OverflowError, ZeroDivisionError):
            # The automatic bandwidth (Hobijn et al.) divides by the residuals' autocovariances,
            # which vanish on a series that is constant but for a step or two (a population
            # rounded to thousands): then the rule of thumb ceil(12 (n/100)^(1/4)) decides.
            result = kpss(x, regression=regression, nlags="legacy", result_object=True)
            note = "the automatic bandwidth is undefined (the autocovariances vanish): lags by the rule of thumb"
    statistic, p_value, lags, critical = result.statistic, result.pvalue, result.lags, result.critical_values
    bound = None
    if any(issubclass(w.category, InterpolationWarning) for w in caught):
        bound = "<0.01" if p_value <= 0.01 else ">0.1"
    reject = bool(p_value < alpha)
    return {
        "test": "kpss",
        "regression": regression,
        "statistic": float(statistic),
        "p_value": float(p_value),
        "p_value_bound": bound,
        "lags": int(lags),
        "nobs": int(np.asarray(x).size),
        "critical_values": {k: float(v) for k, v in critical.items()},
        "reject": reject,
        "stationary": not reject,
        **({"note": note} if note else {}),
    }


def _constant_row(test: str, regression: str, x: np.ndarray) -> dict[str, Any]:
    """The row of a test on a constant series: undefined (no variance), and stationary by definition."""
    return {
        "test": test,
        "regression": regression,
        "statistic": float("nan"),
        "p_value": float("nan"),
        "p_value_bound": None,
        "lags": 0,
        "nobs": int(x.size),
        "critical_values": {},
        "reject": test == "adf",
        "stationary": True,
        "note": "constant: the test is undefined (no variance), and a constant is stationary",
    }


def stationarity_table(values: np.ndarray, max_d: int = 2, regression: str = "c", alpha: float = ALPHA) -> list[dict[str, Any]]:
    """ADF and KPSS on the levels and on each difference up to ``max_d``.

    Args:
        values: the series in levels.
        max_d: highest differencing order tested.
        regression: deterministic terms for every test of the rule.
        alpha: significance level.

    Returns:
        Rows (see :func:`adf_test`) with an extra ``d`` key, ADF then KPSS for each ``d``.
    """
    rows: list[dict[str, Any]] = []
    y = np.asarray(values, dtype=np.float64)
    for d in range(max_d + 1):
        x = np.diff(y, d)
        rows.append({"d": d, **adf_test(x, regression, alpha)})
        rows.append({"d": d, **kpss_test(x, regression, alpha)})
    return rows


def implied_d(rows: list[dict[str, Any]], max_d: int = 2) -> tuple[int, str]:
    """The differencing order the rule picks from a :func:`stationarity_table`.

    Args:
        rows: the table.
        max_d: highest order considered.

    Returns:
        ``(d, how)`` where ``how`` is ``"adf+kpss"`` (both tests agree), ``"kpss"`` (they
        disagree at every order, KPSS decides) or ``"max_d"`` (KPSS rejects at every order).
    """
    by_d: dict[int, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_d.setdefault(int(row["d"]), {})[row["test"]] = row
    orders = [d for d in sorted(by_d) if d <= max_d]
    for d in orders:
        if by_d[d]["adf"]["stationary"] and by_d[d]["kpss"]["stationary"]:
            return d, "adf+kpss"
    for d in orders:
        if by_d[d]["kpss"]["stationary"]:
            return d, "kpss"
    return max_d, "max_d"


def ndiffs(values: np.ndarray, max_d: int = 2, regression: str = "c", alpha: float = ALPHA) -> int:
    """Differencing order from ADF + KPSS (see the module docstring for the rule).

    Stops testing at the first order where both tests agree, so it is cheap enough to run
    inside every ARIMA fit of a backtest.

    Args:
        values: the series in levels.
        max_d: highest order considered.
        regression: ``"c"`` or ``"ct"``.
        alpha: significance level.

    Returns:
        The order ``d`` in ``0 .. max_d``.
    """
    y = np.asarray(values, dtype=np.float64)
    rows: list[dict[str, Any]] = []
    for d in range(max_d + 1):
        x = np.diff(y, d)
        if x.size < 10 or np.ptp(x) == 0:
            # too short or constant: the tests are undefined; what we have is as stationary as it gets.
            return d
        kpss_row = {"d": d, **kpss_test(x, regression, alpha)}
        adf_row = {"d": d, **adf_test(x, regression, alpha)}
        rows += [adf_row, kpss_row]
        if adf_row["stationary"] and kpss_row["stationary"]:
            return d
    return implied_d(rows, max_d)[0]
