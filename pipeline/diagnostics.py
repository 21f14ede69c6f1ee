"""Study one yearly series: decomposition, trend, autocorrelation and stationarity tests.

This is the "study" half of the original CO2 analysis made repeatable: :func:`diagnose` writes
PNG plots and ``diagnostics.json`` to a directory and returns the same facts as a JSON-able
dict, including the differencing order that ADF and KPSS agree on (:func:`ndiffs`), which the
ARIMA search uses when it is not told ``d``.

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
* **Stationarity rule.** ADF (null: unit root) and KPSS (null: stationary) are run on the levels
  and on the 1st and 2nd differences. The implied order is the smallest ``d`` at which ADF
  rejects at 5 % *and* KPSS does not reject at 5 %. When no ``d <= max_d`` satisfies both (the
  tests disagree at every order), the KPSS-only answer is used (smallest ``d`` where KPSS does
  not reject, as R's ``forecast::ndiffs`` and pmdarima do), because over-differencing is the
  safer error for forecasting trending emissions; if KPSS rejects everywhere, ``max_d``.
* **Deterministic terms of the tests.** ``regression="c"`` (level stationarity) is the default for
  the rule, as in ``ndiffs``: a trend-stationary series then counts as needing ``d = 1``, and the
  ARIMA gets a drift term, which reproduces a linear trend while keeping honest, widening
  intervals. With ``regression="ct"`` the tests allow a deterministic trend, and a
  trend-stationary series gets ``d = 0``. The table reports both on the levels.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from statsmodels.regression.linear_model import OLS
from statsmodels.tools.sm_exceptions import InterpolationWarning
from statsmodels.tsa.seasonal import seasonal_decompose
from statsmodels.tsa.stattools import acf, adfuller, kpss, pacf

ALPHA = 0.05
DEFAULT_PERIOD = 10
MOVING_AVERAGE_WINDOW = 10


def _clean(value: Any) -> Any:
    """Make numpy scalars/arrays and NaN/inf JSON-able (NaN and inf become ``None``)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


# -- stationarity ----------------------------------------------------------------------------


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
    result = adfuller(np.asarray(x, dtype=np.float64), regression=regression, autolag="AIC", result_object=True)
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InterpolationWarning)
        result = kpss(np.asarray(x, dtype=np.float64), regression=regression, nlags="auto", result_object=True)
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


# -- decomposition and the rest --------------------------------------------------------------


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
        and the statsmodels results by model name, for plotting.
    """
    y = np.asarray(values, dtype=np.float64)
    if y.size < 2 * period:
        raise ValueError(f"decomposition with period {period} needs at least {2 * period} values, got {y.size}")
    results = {"additive": seasonal_decompose(y, model="additive", period=period)}
    summary: dict[str, Any] = {
        "period": period,
        "criterion": "smaller median absolute relative residual: |resid|/|trend| (additive) vs |resid - 1| (multiplicative)",
        "additive": _decomposition_summary(results["additive"], "additive"),
        "multiplicative": None,
        "better": "additive",
    }
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


def _figure(width: float = 8.0, height: float = 4.0) -> Any:
    # Figure objects without pyplot: no global state, safe in worker threads, Agg canvas.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def diagnose(
    years: np.ndarray,
    values: np.ndarray,
    out_dir: str | Path,
    period: int = DEFAULT_PERIOD,
    max_d: int = 2,
    regression: str = "c",
    nlags: int = 20,
    title: str = "",
) -> dict[str, Any]:
    """Study a yearly series and write the plots and ``diagnostics.json`` to ``out_dir``.

    Args:
        years: consecutive years.
        values: one value per year.
        out_dir: directory for the PNG files and ``diagnostics.json`` (created if missing).
        period: decomposition cycle in years.
        max_d: highest differencing order tested.
        regression: deterministic terms of the ADF/KPSS rule (``"c"`` or ``"ct"``).
        nlags: ACF/PACF lags (capped at ``n // 2 - 1``).
        title: plot title prefix, e.g. the series id.

    Returns:
        A JSON-able dict with keys ``series`` (n, first_year, last_year, min, max,
        strictly_positive), ``decomposition`` (see :func:`decompose`), ``moving_average``
        (window, values), ``linear_trend`` (see :func:`linear_trend`), ``lag1_correlation``,
        ``acf`` and ``pacf`` (nlags, values, confint_halfwidth), ``stationarity`` (alpha,
        regression, tests: the ADF/KPSS table with ``regression`` on every order plus the other
        regression on the levels, implied_d, decided_by, rule) and ``plots`` (name -> file name).
    """
    import matplotlib

    # Agg: no display on workers. Set here, not at import, so importing the module has no effect.
    matplotlib.use("Agg", force=False)
    from statsmodels.graphics.tsaplots import plot_acf, plot_pacf

    year_arr = np.asarray(years, dtype=np.int64)
    y = np.asarray(values, dtype=np.float64)
    if y.shape != year_arr.shape or y.ndim != 1:
        raise ValueError("years and values must be 1-D arrays of the same length")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"{title}: " if title else ""
    n = y.size
    plots: dict[str, str] = {}

    # trend: moving average and OLS line
    window = MOVING_AVERAGE_WINDOW
    moving = np.convolve(y, np.ones(window) / window, mode="valid") if n >= window else np.array([])
    moving_full = np.concatenate([np.full(min(window - 1, n), np.nan), moving])
    trend = linear_trend(year_arr, y)
    figure = _figure()
    ax = figure.add_subplot()
    ax.plot(year_arr, y, label="series", lw=1)
    ax.plot(year_arr, moving_full, label=f"{window}-year moving average", lw=2)
    ax.plot(year_arr, trend["intercept"] + trend["slope"] * year_arr, "--", label="linear trend (OLS)")
    ax.set(title=f"{prefix}series, moving average, linear trend", xlabel="year")
    ax.legend()
    figure.savefig(out / "series.png", dpi=100)
    plots["series"] = "series.png"

    # decomposition
    decomposition, results = decompose(y, period)
    for model, result in results.items():
        figure = _figure(8, 7)
        axes = figure.subplots(4, 1, sharex=True)
        for axis, (name, component) in zip(
            axes, [("observed", y), ("trend", result.trend), ("seasonal", result.seasonal), ("residual", result.resid)], strict=True
        ):
            axis.plot(year_arr, component, lw=1)
            axis.set_ylabel(name)
        axes[0].set_title(f"{prefix}{model} decomposition, period {period} years")
        figure.savefig(out / f"decomposition_{model}.png", dpi=100)
        plots[f"decomposition_{model}"] = f"decomposition_{model}.png"

    # lag plot
    figure = _figure(5, 5)
    ax = figure.add_subplot()
    ax.scatter(y[:-1], y[1:], s=8)
    ax.set(title=f"{prefix}lag plot", xlabel="y(t-1)", ylabel="y(t)")
    figure.savefig(out / "lag_plot.png", dpi=100)
    plots["lag_plot"] = "lag_plot.png"
    lag1 = float(np.corrcoef(y[:-1], y[1:])[0, 1]) if np.std(y) > 0 else float("nan")

    # ACF / PACF
    lags = max(1, min(nlags, n // 2 - 1))
    acf_values = acf(y, nlags=lags, fft=True)
    pacf_values = pacf(y, nlags=lags, method="ywm")
    for name, plotter in (("acf", plot_acf), ("pacf", plot_pacf)):
        figure = _figure()
        ax = figure.add_subplot()
        kwargs = {"method": "ywm"} if name == "pacf" else {}
        plotter(y, lags=lags, ax=ax, title=f"{prefix}{name.upper()}", **kwargs)
        figure.savefig(out / f"{name}.png", dpi=100)
        plots[name] = f"{name}.png"
    halfwidth = float(stats.norm.ppf(1 - ALPHA / 2) / math.sqrt(n))

    # stationarity
    table = stationarity_table(y, max_d=max_d, regression=regression)
    d, decided_by = implied_d(table, max_d)
    other = "ct" if regression == "c" else "c"
    table += [{"d": 0, **adf_test(y, other)}, {"d": 0, **kpss_test(y, other)}]
    figure = _figure(8, 6)
    axes = figure.subplots(max_d + 1, 1, sharex=True)
    for order, axis in enumerate(np.atleast_1d(axes)):
        axis.plot(year_arr[order:], np.diff(y, order), lw=1)
        axis.set_ylabel("levels" if order == 0 else f"diff {order}")
    np.atleast_1d(axes)[0].set_title(f"{prefix}levels and differences (implied d = {d})")
    figure.savefig(out / "differences.png", dpi=100)
    plots["differences"] = "differences.png"

    report = _clean(
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
            "moving_average": {"window": window, "values": moving_full},
            "linear_trend": trend,
            "lag1_correlation": lag1,
            "acf": {"nlags": lags, "values": acf_values, "confint_halfwidth": halfwidth},
            "pacf": {"nlags": lags, "values": pacf_values, "confint_halfwidth": halfwidth},
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
            "plots": plots,
        }
    )
    (out / "diagnostics.json").write_text(json.dumps(report, indent=2))
    return report
