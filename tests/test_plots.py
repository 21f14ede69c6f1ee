"""The pictures: real figures that render, with what a reader needs on them."""

from __future__ import annotations

import dataclasses
import io
import math
import warnings

import numpy as np
from matplotlib.collections import PolyCollection

from pipeline.backtest import evaluate_candidates
from pipeline.models.arima import ArForecaster
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


def test_a_comparison_with_infinite_and_undefined_scores_draws_no_bar_for_them() -> None:
    # A flat history: naive's in-sample error is 0 in every window, so MASE is undefined for
    # every candidate. An infinite score (a metric divided by zero) is set by hand: its bar was
    # 1.8e308 wide (nan_to_num), which overflowed matplotlib's transforms with RuntimeWarnings
    # in every such series' task log.
    years, values = np.arange(1960, 2015), np.full(55, 5.0)
    candidates = {"naive": NaiveForecaster(), "mean": MeanForecaster(), "ar": ArForecaster()}
    evaluation = evaluate_candidates(candidates, years, values)
    assert all(np.isnan(result.metrics["mase"]) for result in evaluation.results.values())
    ar = evaluation.results["ar"]
    infinite = dataclasses.replace(ar, metrics={**ar.metrics, "mase": math.inf})
    evaluation = dataclasses.replace(evaluation, results={**evaluation.results, "ar": infinite})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = comparison_chart(evaluation, winner="naive")
        svg = _svg(figure)
    widths = {tick.get_text(): bar.get_width() for tick, bar in zip(figure.axes[0].get_yticklabels(), figure.axes[0].patches, strict=True)}
    assert widths == {"naive": 0.0, "mean": 0.0, "ar": 0.0}
    assert b"not finite" in svg and b"undefined" in svg


def test_charts_are_svg_with_their_text_as_text_and_no_timestamp() -> None:
    years, values = np.arange(1970, 2015), np.linspace(10, 20, 45)
    forecast = DriftForecaster().fit(values, years).predict(6)
    first, second = (_svg(fan_chart(years, values, forecast, title="Testland: drift")) for _ in range(2))
    assert first.startswith(b"<?xml") and b"<svg" in first
    # The title is searchable text in the file (svg.fonttype "none"), not glyph outlines ...
    assert b"Testland: drift" in first and b"80 % interval" in first
    # ... and the same chart gives the same bytes (no creation date in the metadata).
    assert first == second and b"<dc:date>" not in first


def _every_chart(seed: int, n: int) -> dict[str, bytes]:
    """Every chart kind (the diagnostics too) of one synthetic series, saved as SVG, in drawing order."""
    from pipeline.diagnostics import compute_diagnostics
    from pipeline.diagnostics_plots import draw_diagnostics

    rng = np.random.default_rng(seed)
    years = np.arange(2015 - n, 2015)
    values = 20 + np.cumsum(rng.normal(0.2 * seed, 1 + seed, n)) + 10 * seed
    evaluation = evaluate_candidates({"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster()}, years, values)
    forecast = DriftForecaster().fit(values, years).predict(5 + seed)
    charts = {
        "fan": _svg(fan_chart(years, values, forecast, title=f"series {seed}")),
        "errors naive": _svg(errors_by_horizon(evaluation.results["naive"], title=f"naive {seed}")),
        "errors drift": _svg(errors_by_horizon(evaluation.results["drift"])),
        "comparison": _svg(comparison_chart(evaluation, winner=["drift", "mean"][seed % 2])),
        "forecasts": _svg(forecasts_chart(years, values, {"drift": forecast})),
    }
    for name, figure in draw_diagnostics(years, values, compute_diagnostics(years, values), title=f"series {seed}").items():
        charts[f"diagnostics {name}"] = _svg(figure)
    return charts


def test_a_pooled_figure_saves_the_same_bytes_as_a_new_one() -> None:
    from pipeline import plots

    new = {seed: _every_chart(seed, n) for seed, n in ((1, 60), (2, 35))}
    with plots.reusing_figures():
        pooled_first = _every_chart(1, 60)
        pooled_again = _every_chart(2, 35)  # drawn on figures the first series' charts used
        assert plots.pooled_figures(), "nothing was pooled"
    assert new[1] != new[2]  # the two series' charts differ, so a leftover would show
    assert pooled_first == new[1]
    for name in new[2]:
        assert pooled_again[name] == new[2][name], name


def test_outside_reusing_figures_every_chart_gets_a_new_figure() -> None:
    years, values = np.arange(1970, 2015), np.linspace(10, 20, 45)
    forecast = DriftForecaster().fit(values, years).predict(6)
    assert fan_chart(years, values, forecast) is not fan_chart(years, values, forecast)


def test_warm_up_pools_every_chart_kind_and_changes_no_chart() -> None:
    from pipeline import plots

    new = _every_chart(3, 50)
    plots.pooled_figures().clear()
    plots.warm_up()
    kinds = {key[0] for key in plots.pooled_figures()}
    assert {"fan", "errors_by_horizon", "diagnostics.series", "diagnostics.acf", "diagnostics.differences"} <= kinds
    with plots.reusing_figures():
        assert _every_chart(3, 50) == new


def test_threads_drawing_at_once_never_share_a_pooled_figure() -> None:
    import threading

    from pipeline import plots

    years, values = np.arange(1970, 2015), np.linspace(10, 20, 45)
    forecast = DriftForecaster().fit(values, years).predict(6)
    figures = []

    def draw() -> None:
        with plots.reusing_figures():
            figures.append(fan_chart(years, values, forecast))

    with plots.reusing_figures():
        figures.append(fan_chart(years, values, forecast))
    thread = threading.Thread(target=draw)
    thread.start()
    thread.join()
    with plots.reusing_figures():
        figures.append(fan_chart(years, values, forecast))
    assert figures[0] is figures[2]  # this thread's pool hands its figure out again
    assert figures[1] is not figures[0]  # the other thread drew on its own


def test_charts_carry_the_series_unit_the_gates_reason_and_what_the_coverage_measures() -> None:
    """A person in the MLflow UI told Mt from t per person only by the axis range; the coverage panel read as the
    published bands'; the comparison did not say why its champion holds @champion."""
    rng = np.random.default_rng(1)
    years, values = np.arange(1960, 2015), 50 + np.cumsum(rng.normal(0.3, 1, 55))
    evaluation = evaluate_candidates({"naive": NaiveForecaster(), "drift": DriftForecaster()}, years, values)
    fan = fan_chart(years, values, DriftForecaster().fit(values, years).predict(6), unit="Mt CO2")
    assert fan.axes[0].get_ylabel() == "Mt CO2"
    errors = errors_by_horizon(evaluation.results["drift"], unit="Mt CO2")
    assert errors.axes[0].get_ylabel() == "error (Mt CO2)"
    assert errors.axes[1].get_title() == "coverage of its own bands, before calibration"
    comparison = comparison_chart(evaluation, winner="naive", caption="the challenger's mase 1.2 does not beat the champion's 1.1")
    title = comparison.axes[0].get_title()
    assert title.endswith("champion: naive\nthe challenger's mase 1.2 does not beat the champion's 1.1")
    assert b"does not beat the champion" in _svg(comparison)


def test_one_very_bad_candidate_does_not_squeeze_the_comparison_and_every_bar_carries_its_value() -> None:
    """The mean on a trending series (MASE 30 and more) took the whole axis: the useful bars were a few pixels wide and
    no bar said its score. Now the axis ends at 3 times the larger of naive's and the median score, the mean's bar
    reaches the edge with its true value inside, and every bar is labelled."""
    from pipeline.plots import CAP_FACTOR, comparison_cap

    years, values = np.arange(1900, 2015), np.linspace(10, 400, 115) + np.sin(np.arange(115))
    candidates = {"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster(), "ar": ArForecaster()}
    evaluation = evaluate_candidates(candidates, years, values)
    mase = {name: result.metrics["mase"] for name, result in evaluation.results.items()}
    assert mase["mean"] > 10 * mase["naive"], f"precondition: the mean is very bad on a trend: {mase}"
    figure = comparison_chart(evaluation, winner="drift")
    ax = figure.axes[0]
    cap = comparison_cap(np.array(list(mase.values())), mase["naive"])
    assert cap == CAP_FACTOR * max(mase["naive"], float(np.median(list(mase.values()))))
    left, right = ax.get_xlim()
    assert left == 0 and cap < right < mase["mean"]
    widths = {tick.get_text(): bar.get_width() for tick, bar in zip(ax.get_yticklabels(), ax.patches, strict=True)}
    assert widths["mean"] == right  # to the edge
    assert all(widths[name] == mase[name] for name in mase if name != "mean")  # the others true to scale
    assert max(widths[name] for name in ("naive", "drift")) > 0.15 * right  # not squeezed against the axis
    labels = [text.get_text().strip() for text in ax.texts]
    for name, score in mase.items():
        assert any(label.startswith(f"{score:.3f}") for label in labels), (name, labels)
    assert f"axis cut: bars beyond {cap:.3f} reach the edge" in ax.get_xlabel()
    assert b"%.3f" % mase["mean"] in _svg(figure)

    # Without an outlier nothing is cut, and the values are still there.
    calm = dataclasses.replace(evaluation, results={k: v for k, v in evaluation.results.items() if k != "mean"})
    figure = comparison_chart(calm, winner="drift")
    assert comparison_cap(np.array([mase[k] for k in calm.results]), mase["naive"]) is None
    assert "axis cut" not in figure.axes[0].get_xlabel() and len(figure.axes[0].texts) == len(calm.results)
