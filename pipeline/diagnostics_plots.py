"""Plots of a series' diagnostics, and the ``diagnostics/`` folder an MLflow run carries.

The numbers come from :func:`pipeline.diagnostics.compute_diagnostics` (pure); this module only
draws them with matplotlib (``Figure`` objects on an Agg canvas: no pyplot, no global state, safe
in worker threads) and writes the SVG files and ``diagnostics.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.diagnostics import DEFAULT_PERIOD, compute_diagnostics, decompose, moving_average


def _figure(width: float = 8.0, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))  # fixed margins at save (pipeline.plots.fixed_margins)
    FigureCanvasAgg(figure)
    return figure


def plot_diagnostics(years: np.ndarray, values: np.ndarray, report: dict[str, Any], out_dir: str | Path, title: str = "") -> dict[str, str]:
    """Draw the diagnostics of a series as SVG files in ``out_dir`` (:func:`pipeline.plots.save_chart`).

    Args:
        years: consecutive years.
        values: one value per year.
        report: what :func:`pipeline.diagnostics.compute_diagnostics` returned for them.
        out_dir: directory for the SVG files (created if missing).
        title: plot title prefix, e.g. the series id.

    Returns:
        Plot name -> file name: ``series``, ``decomposition_additive`` (and
        ``decomposition_multiplicative`` for a strictly positive series), ``lag_plot``, ``acf``,
        ``pacf``, ``differences``.
    """
    import matplotlib

    # Agg: no display on workers. Set here, not at import, so importing the module has no effect.
    matplotlib.use("Agg", force=False)
    from statsmodels.graphics.tsaplots import plot_acf, plot_pacf

    from pipeline.plots import fixed_margins, save_chart

    year_arr = np.asarray(years, dtype=np.int64)
    y = np.asarray(values, dtype=np.float64)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"{title}: " if title else ""
    plots: dict[str, str] = {}

    def save(figure: Any, name: str) -> None:
        save_chart(fixed_margins(figure, hspace=0.25), out / f"{name}.svg")
        plots[name] = f"{name}.svg"

    trend = report["linear_trend"]
    window = report["moving_average"]["window"]
    figure = _figure()
    ax = figure.add_subplot()
    ax.plot(year_arr, y, label="series", lw=1)
    ax.plot(year_arr, moving_average(y, window), label=f"{window}-year moving average", lw=2)
    ax.plot(year_arr, trend["intercept"] + trend["slope"] * year_arr, "--", label="linear trend (OLS)")
    ax.set(title=f"{prefix}series, moving average, linear trend", xlabel="year")
    ax.legend()
    save(figure, "series")

    period = report["decomposition"]["period"]
    for model, result in decompose(y, period)[1].items():
        figure = _figure(8, 7)
        axes = figure.subplots(4, 1, sharex=True)
        components = [("observed", y), ("trend", result.trend), ("seasonal", result.seasonal), ("residual", result.resid)]
        for axis, (name, component) in zip(axes, components, strict=True):
            axis.plot(year_arr, component, lw=1)
            axis.set_ylabel(name)
        axes[0].set_title(f"{prefix}{model} decomposition, period {period} years")
        save(figure, f"decomposition_{model}")

    figure = _figure(5, 5)
    ax = figure.add_subplot()
    ax.scatter(y[:-1], y[1:], s=8)
    ax.set(title=f"{prefix}lag plot", xlabel="y(t-1)", ylabel="y(t)")
    save(figure, "lag_plot")

    lags = report["acf"]["nlags"]
    for name, plotter, kwargs in (("acf", plot_acf, {}), ("pacf", plot_pacf, {"method": "ywm"})):
        figure = _figure()
        plotter(y, lags=lags, ax=figure.add_subplot(), title=f"{prefix}{name.upper()}", **kwargs)
        save(figure, name)

    d = report["stationarity"]["implied_d"]
    max_d = max(row["d"] for row in report["stationarity"]["tests"])
    figure = _figure(8, 6)
    axes = np.atleast_1d(figure.subplots(max_d + 1, 1, sharex=True))
    for order, axis in enumerate(axes):
        axis.plot(year_arr[order:], np.diff(y, order), lw=1)
        axis.set_ylabel("levels" if order == 0 else f"diff {order}")
    axes[0].set_title(f"{prefix}levels and differences (implied d = {d})")
    save(figure, "differences")
    return plots


def write_diagnostics(
    years: np.ndarray,
    values: np.ndarray,
    out_dir: str | Path,
    title: str = "",
    report: dict[str, Any] | None = None,
    period: int = DEFAULT_PERIOD,
) -> dict[str, Any]:
    """Compute (unless given) and draw a series' diagnostics; write them to ``out_dir``.

    Args:
        years: consecutive years.
        values: one value per year.
        out_dir: directory for the SVG files and ``diagnostics.json``.
        title: plot title prefix, e.g. the series id.
        report: an already computed report (the per-series core computes one); computed here
            with :func:`pipeline.diagnostics.compute_diagnostics` when ``None``.
        period: decomposition cycle in years, when the report is computed here.

    Returns:
        The report plus ``plots`` (name -> file name), as written to ``diagnostics.json``.
    """
    report = report if report is not None else compute_diagnostics(years, values, period=period)
    full = {**report, "plots": plot_diagnostics(years, values, report, out_dir, title)}
    (Path(out_dir) / "diagnostics.json").write_text(json.dumps(full, indent=2))
    return full
