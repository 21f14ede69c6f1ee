"""Pictures of candidates and their backtests, as matplotlib figures (building one saves nothing).

The tracking adapter logs them to MLflow as SVG (:func:`save_chart`): each candidate's run gets its
:func:`fan_chart` and :func:`errors_by_horizon`, the parent run :func:`comparison_chart`, so a
person browsing MLflow sees at a glance why the champion won. Figures are built with the
object-oriented API on a non-interactive canvas: no global pyplot state, safe in a worker.

Building a figure and drawing its axes the first time is most of what a chart costs (matplotlib
creates every tick's lines and labels then). Inside :func:`reusing_figures`, :func:`new_figure`
hands out pooled figures, one per chart kind and layout, cleared of the previous chart's
artists: the same chart drawn on a pooled figure saves to the same SVG bytes as on a new one
(``tests/test_plots.py``) in about half the time. :func:`warm_up` draws every kind once,
so a process that forks tasks (:mod:`pipeline.preload`) hands them a warm pool.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import textwrap
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from pipeline.backtest import CandidateResult, Evaluation
from pipeline.models.base import Forecast

BAND_ALPHA = {80: 0.35, 95: 0.18}

#: How every chart is saved: SVG with its text kept as text. Against PNG at 100 dpi it skips the
#: rasterising and the PNG compression: a series' pictures cost about a quarter less to save,
#: the files are smaller, and they stay sharp at any zoom in the MLflow UI (which shows SVG).
#: No timestamp and fixed element ids (``svg.hashsalt``): the same chart gives the same bytes.
SVG_RC = {"svg.fonttype": "none", "svg.hashsalt": "co2cast"}
SVG_SAVE = {"format": "svg", "metadata": {"Date": None}}


#: Each thread's pooled figures and their axes, by chart kind and layout (:func:`new_figure`): two
#: threads drawing at once never share a figure. A forked process keeps the forking thread's.
_LOCAL = threading.local()
_REUSING: contextvars.ContextVar[bool] = contextvars.ContextVar("co2cast_reusing_figures", default=False)


@contextlib.contextmanager
def reusing_figures() -> Iterator[None]:
    """Within the block, charts are drawn on pooled figures (:func:`new_figure`).

    A figure a chart function returns inside the block is only valid until the next chart of the
    same kind: save it first, as the MLflow logging does. Outside the block every chart gets a
    new figure.
    """
    token = _REUSING.set(True)
    try:
        yield
    finally:
        _REUSING.reset(token)


def new_figure(kind: str, figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, sharex: bool = False) -> tuple[Figure, Any]:
    """A figure with an ``nrows`` x ``ncols`` grid of axes: new, or pooled inside :func:`reusing_figures`.

    Args:
        kind: the chart kind (the pool never hands one kind's figure to another).
        figsize: width and height in inches.
        nrows: rows of axes.
        ncols: columns of axes.
        sharex: whether the axes share the x axis.

    Returns:
        ``(figure, axes)``, ``axes`` as :meth:`matplotlib.figure.Figure.subplots` returns them.
    """
    if not _REUSING.get():
        figure = Figure(figsize=figsize)
        return figure, figure.subplots(nrows, ncols, sharex=sharex)
    key = (kind, tuple(float(v) for v in figsize), nrows, ncols, sharex)
    pool = pooled_figures()
    pooled = pool.get(key)
    if pooled is None:
        figure = Figure(figsize=figsize)
        pooled = pool[key] = (figure, figure.subplots(nrows, ncols, sharex=sharex))
    else:
        _clear(pooled[0])
    return pooled


def pooled_figures() -> dict[tuple[Any, ...], tuple[Figure, Any]]:
    """This thread's pool: ``(kind, figsize, nrows, ncols, sharex)`` -> ``(figure, axes)``."""
    pool = getattr(_LOCAL, "figures", None)
    if pool is None:
        pool = _LOCAL.figures = {}
    return pool


def _clear(figure: Figure) -> None:
    """Remove what a chart drew, keep the axes and their ticks: the figure as a chart function gets it new."""
    for ax in figure.axes:
        for artist in [*ax.lines, *ax.collections, *ax.patches, *ax.texts, *ax.images]:
            artist.remove()
        if ax.legend_ is not None:
            ax.legend_.remove()
        ax.set_prop_cycle(None)
        ax.dataLim.set_points(Bbox.null().get_points())
        ax.set_autoscale_on(True)
        for loc in ("left", "center", "right"):
            ax.set_title("", loc=loc)
        ax.set_xlabel("")
        ax.set_ylabel("")
    suptitle = figure._suptitle  # reused by the next suptitle() call, so emptied, not removed
    for text in [text for text in figure.texts if text is not suptitle]:
        text.remove()
    if suptitle is not None:
        suptitle.set_text("")


def warm_up() -> None:
    """Draw every chart kind once into the pool (synthetic data), for the processes forked after."""
    from pipeline.backtest import evaluate_candidates
    from pipeline.diagnostics import compute_diagnostics
    from pipeline.diagnostics_plots import draw_diagnostics
    from pipeline.models.baselines import DriftForecaster, NaiveForecaster

    years = np.arange(1960, 2015)
    values = 50 + np.cumsum(np.random.default_rng(0).normal(0.5, 1.0, years.size))
    evaluation = evaluate_candidates({"naive": NaiveForecaster(), "drift": DriftForecaster()}, years, values)
    forecast = DriftForecaster().fit(values, years).predict(21)
    with reusing_figures():
        # The kinds a series' MLflow logging draws (the comparison chart's height varies with the
        # candidates, and there is one per series).
        charts = [fan_chart(years, values, forecast), errors_by_horizon(evaluation.results["drift"])]
        charts += draw_diagnostics(years, values, compute_diagnostics(years, values), "").values()
        for figure in charts:
            save_chart(figure, io.BytesIO())


def save_chart(figure: Figure, target: Any) -> None:
    """Save a chart as SVG (see :data:`SVG_SAVE`) to a path or a binary file object."""
    import matplotlib

    with matplotlib.rc_context(SVG_RC):
        figure.savefig(target, **SVG_SAVE)


def fixed_margins(
    figure: Figure,
    *,
    left: float = 0.9,
    right: float = 0.25,
    bottom: float = 0.6,
    top: float = 0.45,
    hspace: float = 0.3,
    wspace: float = 0.3,
) -> Figure:
    """Place the axes with fixed margins (in inches), the same for every figure of a kind.

    Tight and constrained layout measure every tick label before the real draw: they were
    half the cost of the 15-20 pictures each series logs to MLflow. Fixed margins sized for
    the labels these charts carry draw once.
    """
    width, height = figure.get_size_inches()
    figure.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height, hspace=hspace, wspace=wspace
    )
    return figure


def fan_chart(
    years: np.ndarray, values: np.ndarray, forecast: Forecast, title: str = "", history: int | None = 40, unit: str = ""
) -> Figure:
    """History, point forecast and its interval bands.

    Args:
        years: the observed years.
        values: the observed values.
        forecast: the forecast (bands drawn for every level it has, widest first).
        title: the figure title.
        history: how many trailing years of history to draw (``None``: all).
        unit: the values' unit, the y axis's label (``pipeline.series.unit_of``).

    Returns:
        The figure.
    """
    figure, ax = new_figure("fan", (8, 4.5))
    years, values = np.asarray(years), np.asarray(values, dtype=np.float64)
    if history is not None:
        years, values = years[-history:], values[-history:]
    ax.plot(years, values, color="black", linewidth=1.5, label="observed")
    # Join the last observation to the forecast so the fan starts where the data end.
    fc_years = np.concatenate([[years[-1]], forecast.years])
    for level in sorted(forecast.lower, reverse=True):
        lower = np.concatenate([[values[-1]], forecast.lower[level]])
        upper = np.concatenate([[values[-1]], forecast.upper[level]])
        alpha = BAND_ALPHA.get(level, 0.25)
        ax.fill_between(fc_years, lower, upper, color="tab:blue", alpha=alpha, linewidth=0, label=f"{level} % interval")
    ax.plot(fc_years, np.concatenate([[values[-1]], forecast.mean]), color="tab:blue", linewidth=2, label="forecast")
    ax.set_xlabel("year")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    return fixed_margins(figure)


def errors_by_horizon(result: CandidateResult, title: str = "", unit: str = "") -> Figure:
    """A candidate's backtest errors by horizon step: every error, the MAE and the coverage.

    Args:
        result: the candidate's backtest.
        title: the figure title (default: the candidate's name).
        unit: the errors' unit (``pipeline.series.unit_of``).

    Returns:
        The figure: errors (actual - forecast) per step on the left, coverage per step on the
        right: of the candidate's own bands, before the calibration that widens the published ones.
    """
    figure, (left, right) = new_figure("errors_by_horizon", (10, 4), ncols=2)
    rows = result.forecasts
    errors = rows["actual"] - rows["mean"]
    left.axhline(0, color="grey", linewidth=1)
    left.scatter(rows["step"], errors, s=14, alpha=0.6, color="tab:red", label="actual − forecast")
    steps = sorted(result.by_horizon)
    left.plot(steps, [result.by_horizon[s]["mae"] for s in steps], marker="o", color="black", label="MAE")
    left.set_xlabel("horizon (years)")
    left.set_ylabel(f"error ({unit})" if unit else "error")
    left.legend(fontsize="small")
    levels = sorted(int(c.removeprefix("coverage_")) for c in result.metrics if c.startswith("coverage_"))
    for level in levels:
        line = right.plot(steps, [result.by_horizon[s][f"coverage_{level}"] for s in steps], marker="o", label=f"{level} % coverage")
        right.axhline(level / 100, linestyle="--", color=line[0].get_color(), linewidth=1)
    right.set_ylim(-0.02, 1.02)
    right.set_xlabel("horizon (years)")
    right.set_title("coverage of its own bands, before calibration", fontsize="small")
    right.legend(fontsize="small")
    figure.suptitle(title or f"{result.name}: backtest errors by horizon")
    return fixed_margins(figure, top=0.55, wspace=0.2)


#: The comparison chart's axis ends at this many times the larger of the benchmark's score and the
#: median score: one very bad candidate (the mean on a trending series, MASE 30 and more) squeezed
#: every useful bar into the first few pixels.
CAP_FACTOR = 3.0
#: Room right of the longest bar (a share of the axis) for its value.
VALUE_ROOM = 0.15


def comparison_cap(scores: np.ndarray, benchmark: float = np.nan) -> float | None:
    """Where the comparison chart's axis is cut, or ``None`` when no finite score is beyond it.

    Args:
        scores: the candidates' finite scores.
        benchmark: the benchmark's score (naive's), ``nan`` when it has none.

    Returns:
        :data:`CAP_FACTOR` times the larger of ``benchmark`` and the median score, when a score is beyond it.
    """
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        return None
    reference = max(float(np.median(scores)), float(benchmark) if np.isfinite(benchmark) else 0.0)
    cap = CAP_FACTOR * reference
    return cap if cap > 0 and float(scores.max()) > cap else None


def _value(score: float) -> str:
    """A score as the comparison chart labels it."""
    return f"{score:.3f}" if abs(score) < 1000 else f"{score:,.0f}"


def comparison_chart(
    evaluation: Evaluation, metric: str = "mase", winner: str | None = None, benchmark: str = "naive", caption: str = ""
) -> Figure:
    """Every candidate's backtest score on one metric, best first; the winner and naive marked.

    Args:
        evaluation: the candidates' backtests.
        metric: the metric to compare.
        winner: the family that holds ``@champion`` after the run (drawn in a strong colour).
        benchmark: the benchmark (its score drawn as a vertical line).
        caption: why it holds it (the champion gate's reason), one line under the title.

    Returns:
        The figure: each bar labelled with its score; the axis cut at :func:`comparison_cap` when a
        score is beyond it, such a bar drawn to the axis's edge with its score inside; dropped
        candidates and their reasons listed beneath.
    """
    items = sorted(((name, r.metrics.get(metric, np.nan)) for name, r in evaluation.results.items()), key=lambda p: (np.isnan(p[1]), p[1]))
    names = [name for name, _ in items]
    scores = np.array([score for _, score in items], dtype=np.float64)
    figure, ax = new_figure("comparison", (8, 0.35 * len(names) + 1.8))
    colours = ["tab:orange" if name == winner else "tab:blue" for name in names]
    # A score can be infinite or undefined (MASE on a flat history: naive's in-sample error is
    # 0): no bar, and a word instead. nan_to_num made an infinite score a bar of 1.8e308, which
    # overflowed matplotlib's transforms (RuntimeWarnings in the task log, a useless axis).
    finite = np.isfinite(scores)
    base = evaluation.results[benchmark].metrics.get(metric, np.nan) if benchmark in evaluation.results else np.nan
    cap = comparison_cap(scores[finite], base)
    edge = (cap if cap is not None else max(float(scores[finite].max(initial=0.0)), 0.0) or 1.0) * (1 + VALUE_ROOM)
    widths = np.where(finite, scores, 0.0)
    beyond = finite & (widths > cap) if cap is not None else np.zeros_like(finite)
    ax.barh(np.arange(len(names)), np.where(beyond, edge, widths), color=colours)
    for row in np.flatnonzero(~finite):
        ax.text(0, row, " not finite" if np.isinf(scores[row]) else " undefined", va="center", fontsize="x-small")
    for row in np.flatnonzero(finite):  # every bar's value; a bar beyond the cap reaches the edge, its value inside it
        if beyond[row]:
            ax.text(edge, row, f"{_value(scores[row])} → ", va="center", ha="right", fontsize="x-small", color="white")
        else:
            ax.text(widths[row], row, f" {_value(scores[row])}", va="center", ha="left", fontsize="x-small")
    ax.set_xlim(0.0, edge)
    ax.set_yticks(np.arange(len(names)), names)
    ax.yaxis.set_inverted(True)  # best first, at the top (idempotent on a pooled figure)
    if np.isfinite(base):
        ax.axvline(base, color="black", linestyle="--", linewidth=1, label=benchmark)
        ax.legend(fontsize="small", loc="upper right")  # beside the best, shortest bars (the worst are at the bottom)
    cut = f"; axis cut: bars beyond {_value(cap)} reach the edge, their value inside" if beyond.any() else ""
    ax.set_xlabel(f"backtest {metric} (lower is better{cut})")
    title = f"candidates on {len(evaluation.plan.splits)} backtest windows" + (f"; champion: {winner}" if winner else "")
    ax.set_title(title + (f"\n{textwrap.shorten(caption, 110, placeholder=' …')}" if caption else ""), fontsize="medium")
    if evaluation.failed:
        dropped = "; ".join(f"{name} ({reason[:60]})" for name, reason in evaluation.failed.items())
        figure.text(0.01, 0.01, f"dropped: {dropped}", fontsize="x-small", wrap=True)
    label_width = 0.3 + 0.075 * max((len(name) for name in names), default=4)  # the candidates' names, at 10 pt
    return fixed_margins(figure, left=label_width, bottom=1.0 if evaluation.failed else 0.6, top=0.65 if caption else 0.45)


def forecasts_chart(years: np.ndarray, values: np.ndarray, forecasts: Mapping[str, Forecast], history: int | None = 40) -> Figure:
    """Several candidates' point forecasts over the same history (one line each).

    Args:
        years: observed years.
        values: observed values.
        forecasts: name -> forecast.
        history: trailing years of history drawn (``None``: all).

    Returns:
        The figure.
    """
    figure, ax = new_figure("forecasts", (8, 4.5))
    years, values = np.asarray(years), np.asarray(values, dtype=np.float64)
    if history is not None:
        years, values = years[-history:], values[-history:]
    ax.plot(years, values, color="black", linewidth=1.5, label="observed")
    for name, forecast in forecasts.items():
        ax.plot(np.concatenate([[years[-1]], forecast.years]), np.concatenate([[values[-1]], forecast.mean]), linewidth=1, label=name)
    ax.set_xlabel("year")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    return fixed_margins(figure)
