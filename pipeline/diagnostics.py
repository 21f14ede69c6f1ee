"""Study one yearly series: decomposition, trend, autocorrelation and stationarity, as numbers.

Pure computation: :func:`compute_diagnostics` takes years and values and returns a JSON-able
report; it writes nothing and imports no plotting library. The plots of the same facts are
drawn by :mod:`pipeline.diagnostics_plots`. The stationarity tests and the differencing rule
live in the leaf module :mod:`pipeline.stationarity` (the ARIMA search uses them too).

Choices made here, and why:

* **Decomposition period.** Yearly data has no calendar season, so a "seasonal" component can
  only be a cycle of several years. The default is a decade (``period=10``), matching the
  10-year moving average of the study; it is a parameter. The point is less the seasonal
  component than whether deviations from the trend grow with the level.
* **Additive or multiplicative.** Both are fitted (multiplicative only for a strictly positive
  series). The one with the smaller *median absolute relative residual* wins: for the additive
  model ``|resid| / |trend|``, for the multiplicative one ``|resid - 1|`` (its residual is
  already a ratio). Both measure how far the decomposition misses, as a fraction of the level,
  so they are comparable; the median keeps a few years with a near-zero trend (early history)
  from deciding alone. Residual variance and lag-1 autocorrelation are reported alongside.
* **Stationarity.** See :mod:`pipeline.stationarity`: the table holds ADF and KPSS with the
  rule's ``regression`` on every order, plus the other regression on the levels.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats
from statsmodels.regression.linear_model import OLS
from statsmodels.tools.sm_exceptions import SingularMatrixWarning
from statsmodels.tsa.seasonal import seasonal_decompose
from statsmodels.tsa.stattools import acf, pacf

from pipeline.maths import json_default
from pipeline.stationarity import ALPHA, adf_test, implied_d, kpss_test, stationarity_table

DEFAULT_PERIOD = 10
MOVING_AVERAGE_WINDOW = 10


def jsonable(value: Any) -> Any:
    """A value with numpy types made plain and NaN/inf made ``None`` (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = json_default(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def _decomposition_summary(result: Any, model: str) -> dict[str, Any]:
    resid = np.asarray(result.resid, dtype=np.float64)
    trend = np.asarray(result.trend, dtype=np.float64)
    seasonal = np.asarray(result.seasonal, dtype=np.float64)
    ok = np.isfinite(resid) & np.isfinite(trend)
    if model == "additive":
        relative = np.abs(resid[ok]) / np.maximum(np.abs(trend[ok]), np.finfo(float).tiny)
    else:
        relative = np.abs(resid[ok] - 1.0)
    r = resid[ok]
    acf1 = float(np.corrcoef(r[:-1], r[1:])[0, 1]) if r.size > 2 and np.std(r) > 0 else float("nan")
    return {
        "relative_residual_median": float(np.median(relative)),
        "residual_variance": float(np.var(r, ddof=1)),
        "residual_acf1": acf1,
        "seasonal_amplitude": float(np.ptp(seasonal)),
    }


def decompose(values: np.ndarray, period: int = DEFAULT_PERIOD) -> tuple[dict[str, Any], dict[str, Any]]:
    """Additive and (for a strictly positive series) multiplicative decomposition.

    Args:
        values: the series.
        period: cycle length in years (see the module docstring).

    Returns:
        ``(summary, results)``: a JSON-able summary with ``period``, ``additive``,
        ``multiplicative`` (``None`` when not strictly positive), ``better`` and ``criterion``;
        and the statsmodels results by model name, for plotting. A series shorter than two
        cycles (a short series the core still forecasts, from 12 values) has no decomposition:
        ``additive``, ``multiplicative`` and ``better`` are ``None``, a ``note`` says why, and
        there are no results.
    """
    y = np.asarray(values, dtype=np.float64)
    summary: dict[str, Any] = {
        "period": period,
        "criterion": "smaller median absolute relative residual: |resid|/|trend| (additive) vs |resid - 1| (multiplicative)",
        "additive": None,
        "multiplicative": None,
        "better": None,
    }
    if y.size < 2 * period:
        summary["note"] = f"decomposition skipped: a period of {period} years needs at least {2 * period} values, the series has {y.size}"
        return summary, {}
    results = {"additive": seasonal_decompose(y, model="additive", period=period)}
    summary["additive"] = _decomposition_summary(results["additive"], "additive")
    summary["better"] = "additive"
    if np.all(y > 0):
        results["multiplicative"] = seasonal_decompose(y, model="multiplicative", period=period)
        summary["multiplicative"] = _decomposition_summary(results["multiplicative"], "multiplicative")
        if summary["multiplicative"]["relative_residual_median"] < summary["additive"]["relative_residual_median"]:
            summary["better"] = "multiplicative"
    else:
        summary["note"] = "multiplicative decomposition skipped: the series has zeros or negatives"
    return summary, results


def linear_trend(years: np.ndarray, values: np.ndarray) -> dict[str, Any]:
    """OLS fit of ``value = intercept + slope * year``.

    Args:
        years: the years.
        values: the values.

    Returns:
        ``slope`` (units per year), ``intercept``, ``slope_p_value``, ``slope_ci95`` and
        ``r_squared``.
    """
    x = np.asarray(years, dtype=np.float64)
    # centre the years so the intercept is not an extrapolation to year 0 (better conditioned).
    centre = float(x.mean())
    design = np.column_stack([np.ones_like(x), x - centre])
    fit = OLS(np.asarray(values, dtype=np.float64), design).fit()
    ci = fit.conf_int(0.05)
    return {
        "slope": float(fit.params[1]),
        "intercept": float(fit.params[0] - fit.params[1] * centre),
        "slope_p_value": float(fit.pvalues[1]),
        "slope_ci95": [float(ci[1, 0]), float(ci[1, 1])],
        "r_squared": float(fit.rsquared),
        "significant": bool(fit.pvalues[1] < ALPHA),
    }


def moving_average(values: np.ndarray, window: int = MOVING_AVERAGE_WINDOW) -> np.ndarray:
    """Trailing moving average, NaN for the first ``window - 1`` years."""
    y = np.asarray(values, dtype=np.float64)
    moving = np.convolve(y, np.ones(window) / window, mode="valid") if y.size >= window else np.array([])
    return np.concatenate([np.full(min(window - 1, y.size), np.nan), moving])


def compute_diagnostics(
    years: np.ndarray,
    values: np.ndarray,
    period: int = DEFAULT_PERIOD,
    max_d: int = 2,
    regression: str = "c",
    nlags: int = 20,
) -> dict[str, Any]:
    """Study a yearly series; return the facts as a JSON-able dict (writes nothing).

    Args:
        years: consecutive years.
        values: one value per year.
        period: decomposition cycle in years.
        max_d: highest differencing order tested.
        regression: deterministic terms of the ADF/KPSS rule (``"c"`` or ``"ct"``).
        nlags: ACF/PACF lags (capped at ``n // 2 - 1``).

    Returns:
        Keys ``series`` (n, first_year, last_year, min, max, strictly_positive),
        ``decomposition`` (see :func:`decompose`), ``moving_average`` (window, values),
        ``linear_trend`` (see :func:`linear_trend`), ``lag1_correlation``, ``acf`` and ``pacf``
        (nlags, values, confint_halfwidth), and ``stationarity`` (alpha, regression, tests: the
        ADF/KPSS table with ``regression`` on every order plus the other regression on the
        levels, implied_d, decided_by, rule).

    Raises:
        ValueError: years and values are not 1-D arrays of the same length.
    """
    year_arr = np.asarray(years, dtype=np.int64)
    y = np.asarray(values, dtype=np.float64)
    if y.shape != year_arr.shape or y.ndim != 1:
        raise ValueError("years and values must be 1-D arrays of the same length")
    n = y.size
    decomposition, _ = decompose(y, period)
    lags = max(1, min(nlags, n // 2 - 1))
    halfwidth = float(stats.norm.ppf(1 - ALPHA / 2) / math.sqrt(n))
    # A flat stretch (a constant series, or one that only steps: a population rounded to
    # thousands) makes the correlations 0/0 and the regressions singular: the values come out as
    # NaN (null in the report) or by pseudo-inverse, which is what they are; no warning to repeat.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", SingularMatrixWarning)
        table = stationarity_table(y, max_d=max_d, regression=regression)
        other = "ct" if regression == "c" else "c"
        table += [{"d": 0, **adf_test(y, other)}, {"d": 0, **kpss_test(y, other)}]
        correlations = {"acf": acf(y, nlags=lags, fft=True), "pacf": pacf(y, nlags=lags, method="ywm")}
        trend = linear_trend(year_arr, y)
    d, decided_by = implied_d(table[:-2], max_d)
    return jsonable(
        {
            "series": {
                "n": n,
                "first_year": int(year_arr[0]),
                "last_year": int(year_arr[-1]),
                "min": float(y.min()),
                "max": float(y.max()),
                "strictly_positive": bool(np.all(y > 0)),
            },
            "decomposition": decomposition,
            "moving_average": {"window": MOVING_AVERAGE_WINDOW, "values": moving_average(y)},
            "linear_trend": trend,
            "lag1_correlation": float(np.corrcoef(y[:-1], y[1:])[0, 1]) if np.std(y) > 0 else float("nan"),
            "acf": {"nlags": lags, "values": correlations["acf"], "confint_halfwidth": halfwidth},
            "pacf": {"nlags": lags, "values": correlations["pacf"], "confint_halfwidth": halfwidth},
            "stationarity": {
                "alpha": ALPHA,
                "regression": regression,
                "tests": table,
                "implied_d": d,
                "decided_by": decided_by,
                "rule": (
                    "smallest d where ADF rejects a unit root and KPSS does not reject stationarity "
                    f"(alpha {ALPHA}, regression {regression!r}); if no d <= {max_d} satisfies both, "
                    "the smallest d where KPSS does not reject; else max_d"
                ),
            },
        }
    )
