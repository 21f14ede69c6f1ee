"""The pictures: real figures that render, with what a reader needs on them."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.collections import PolyCollection

from pipeline.backtest import evaluate_candidates
from pipeline.models.baselines import DriftForecaster, MeanForecaster, NaiveForecaster
from pipeline.plots import comparison_chart, errors_by_horizon, fan_chart, forecasts_chart, save_chart


def _svg(figure) -> bytes:
    buffer = io.BytesIO()
    save_chart(figure, buffer)
    return buffer.getvalue()


def test_fan_chart_has_history_mean_and_one_band_per_level() -> None:
    years, values = np.arange(1970, 2015), np.linspace(10, 20, 45)
    forecast = DriftForecaster().fit(values, years).predict(6)
    figure = fan_chart(years, values, forecast, title="x")
    ax = figure.axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_array_equal(lines["forecast"].get_ydata()[1:], forecast.mean)
    assert lines["forecast"].get_xdata()[0] == 2014  # the fan starts at the last observation
    assert _svg(figure).startswith(b"<?xml")


def test_backtest_and_comparison_charts_render_every_candidate() -> None:
    rng = np.random.default_rng(0)
    years, values = np.arange(1960, 2015), 50 + np.cumsum(rng.normal(0.3, 1, 55))
    evaluation = evaluate_candidates({"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster()}, years, values)
    errors = errors_by_horizon(evaluation.results["drift"])
    assert len(errors.axes) == 2 and _svg(errors).startswith(b"<?xml")
    scatter = errors.axes[0].collections[0]
    assert len(scatter.get_offsets()) == len(evaluation.results["drift"].forecasts)
    comparison = comparison_chart(evaluation, winner="drift")
    labels = [tick.get_text() for tick in comparison.axes[0].get_yticklabels()]
    assert sorted(labels) == ["drift", "mean", "naive"]
    assert labels[0] == min(evaluation.results, key=lambda n: evaluation.results[n].metrics["mase"])
    assert _svg(comparison).startswith(b"<?xml")
    lines = forecasts_chart(years, values, {"naive": NaiveForecaster().fit(values, years).predict(3)})
    assert _svg(lines).startswith(b"<?xml")


def test_charts_are_svg_with_their_text_as_text_and_no_timestamp() -> None:
    years, values = np.arange(1970, 2015), np.linspace(10, 20, 45)
    forecast = DriftForecaster().fit(values, years).predict(6)
    first, second = (_svg(fan_chart(years, values, forecast, title="Testland: drift")) for _ in range(2))
    assert first.startswith(b"<?xml") and b"<svg" in first
    # The title is searchable text in the file (svg.fonttype "none"), not glyph outlines ...
    assert b"Testland: drift" in first and b"80 % interval" in first
    # ... and the same chart gives the same bytes (no creation date in the metadata).
    assert first == second and b"<dc:date>" not in first
