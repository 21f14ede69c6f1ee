"""Plots of a series' diagnostics, and the ``diagnostics/`` folder an MLflow run carries.

The numbers come from :func:`pipeline.diagnostics.compute_diagnostics` (pure); this module only
draws them with matplotlib (``Figure`` objects from :func:`pipeline.plots.new_figure`: no pyplot,
pooled inside :func:`pipeline.plots.reusing_figures`) and writes the SVG files and
``diagnostics.json``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from statsmodels.tools.sm_exceptions import SingularMatrixWarning

from pipeline.diagnostics import DEFAULT_PERIOD, compute_diagnostics, decompose, moving_average


def draw_diagnostics(years: np.ndarray, values: np.ndarray, report: dict[str, Any], title: str = "") -> dict[str, Any]:
    """Draw the diagnostics of a series (:func:`pipeline.plots.new_figure`: pooled when reusing).

    Args:
        years: consecutive years.
        values: one value per year.
        report: what :func:`pipeline.diagnostics.compute_diagnostics` returned for them.
        title: plot title prefix, e.g. the series id.

    Returns:
        Plot name -> figure: ``series``, ``decomposition_additive`` (none for a series shorter than two periods; and
        ``decomposition_multiplicative`` for a strictly positive series), ``lag_plot``, ``acf``,
        ``pacf``, ``differences``.
    """
    import matplotlib

    # Agg: no display on workers. Set here, not at import, so importing the module has no effect.
    matplotlib.use("Agg", force=False)
    from statsmodels.graphics.tsaplots import plot_acf, plot_pacf

    from pipeline.plots import fixed_margins, new_figure

    year_arr = np.asarray(years, dtype=np.int64)
    y = np.asarray(values, dtype=np.float64)
    prefix = f"{title}: " if title else ""
    figures: dict[str, Any] = {}

    trend = report["linear_trend"]
    window = report["moving_average"]["window"]
    figure, ax = new_figure("diagnostics.series", (8, 4))
    ax.plot(year_arr, y, label="series", lw=1)
    ax.plot(year_arr, moving_average(y, window), label=f"{window}-year moving average", lw=2)
    ax.plot(year_arr, trend["intercept"] + trend["slope"] * year_arr, "--", label="linear trend (OLS)")
    ax.set(title=f"{prefix}series, moving average, linear trend", xlabel="year")
    ax.legend()
    figures["series"] = figure

    period = report["decomposition"]["period"]
    for model, result in decompose(y, period)[1].items():
        figure, axes = new_figure(f"diagnostics.decomposition_{model}", (8, 7), nrows=4, sharex=True)
        components = [("observed", y), ("trend", result.trend), ("seasonal", result.seasonal), ("residual", result.resid)]
        for axis, (name, component) in zip(axes, components, strict=True):
            axis.plot(year_arr, component, lw=1)
            axis.set_ylabel(name)
        axes[0].set_title(f"{prefix}{model} decomposition, period {period} years")
        figures[f"decomposition_{model}"] = figure

    figure, ax = new_figure("diagnostics.lag_plot", (5, 5))
    ax.scatter(y[:-1], y[1:], s=8)
    ax.set(title=f"{prefix}lag plot", xlabel="y(t-1)", ylabel="y(t)")
    figures["lag_plot"] = figure

    lags = report["acf"]["nlags"]
    for name, plotter, kwargs in (("acf", plot_acf, {}), ("pacf", plot_pacf, {"method": "ywm"})):
        figure, ax = new_figure(f"diagnostics.{name}", (8, 4))
        # A flat history's correlations are 0/0 (NaN, an empty plot) and its Yule-Walker
        # system singular; statsmodels repeats a SingularMatrixWarning per lag (its warnings
        # are "always"), 20 lines per series in the task log: compute_diagnostics already
        # silences the same computation.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", SingularMatrixWarning)
            plotter(y, lags=lags, ax=ax, title=f"{prefix}{name.upper()}", **kwargs)
        figures[name] = figure

    d = report["stationarity"]["implied_d"]
    max_d = max(row["d"] for row in report["stationarity"]["tests"])
    figure, axes = new_figure("diagnostics.differences", (8, 6), nrows=max_d + 1, sharex=True)
    axes = np.atleast_1d(axes)
    for order, axis in enumerate(axes):
        axis.plot(year_arr[order:], np.diff(y, order), lw=1)
        axis.set_ylabel("levels" if order == 0 else f"diff {order}")
    axes[0].set_title(f"{prefix}levels and differences (implied d = {d})")
    figures["differences"] = figure
    return {name: fixed_margins(figure, hspace=0.25) for name, figure in figures.items()}


def plot_diagnostics(years: np.ndarray, values: np.ndarray, report: dict[str, Any], out_dir: str | Path, title: str = "") -> dict[str, str]:
    """Draw the diagnostics of a series as SVG files in ``out_dir`` (:func:`pipeline.plots.save_chart`).

    Args:
        years: consecutive years.
        values: one value per year.
        report: what :func:`pipeline.diagnostics.compute_diagnostics` returned for them.
        out_dir: directory for the SVG files (created if missing).
        title: plot title prefix, e.g. the series id.

    Returns:
        Plot name -> file name (the names of :func:`draw_diagnostics`).
    """
    from pipeline.plots import save_chart

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    for name, figure in draw_diagnostics(years, values, report, title).items():
        save_chart(figure, out / f"{name}.svg")
        plots[name] = f"{name}.svg"
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
