"""Selection on the shared backtest and the champion gate: pure functions, independent answers."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pandas as pd
import pytest

from pipeline import selection as selection_module
from pipeline.backtest import NoCandidateError, evaluate_candidates
from pipeline.candidates import ZooSelection
from pipeline.core import describe_policy
from pipeline.models.base import to_spec
from pipeline.models.baselines import DriftForecaster, MeanForecaster, NaiveForecaster
from pipeline.models.calibrated import CalibratedForecaster
from pipeline.models.combination import CombinationForecaster
from pipeline.models.registry import (
    COMBINATION_MEMBERS,
    DEFAULT_CHOICE,
    FALLBACK_CHOICE,
    SHORT_COMBINATION_MEMBERS,
    SHORT_COMBINATION_METHOD,
    SHORT_SERIES_CHOICE,
    default_candidates,
)
from pipeline.selection import best_k_combination, champion_gate, ranking, select


@pytest.fixture(scope="module")
def trending() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return np.arange(1961, 2015), 100 + np.cumsum(rng.normal(2.0, 1.0, 54))


def _evaluation(years: np.ndarray, values: np.ndarray, **candidates):
    return evaluate_candidates(candidates, years, values, horizon=4, n_origins=4)


def test_without_a_default_the_best_mase_that_beats_naive_wins(trending) -> None:
    years, values = trending
    evaluation = _evaluation(years, values, naive=NaiveForecaster(), drift=DriftForecaster(), mean=MeanForecaster())
    mase = {name: result.metrics["mase"] for name, result in evaluation.results.items()}
    # A steady upward drift: drift beats naive beats mean (checked, not assumed).
    assert mase["drift"] < mase["naive"] < mase["mean"]
    selection = select(evaluation, default=None)
    assert selection.winner == "drift" and selection.score == mase["drift"] and selection.benchmark_score == mase["naive"]
    assert [name for name, _ in selection.ranking] == ["drift", "naive", "mean"]
    assert "beating naive" in selection.reason
    # The published model is the winner, calibrated on its own backtest, floored at zero.
    assert isinstance(selection.model, CalibratedForecaster)
    assert to_spec(selection.model.model) == to_spec(DriftForecaster())
    assert selection.model.factors == evaluation.results["drift"].calibration and selection.model.floor == 0.0
    assert selection.to_dict()["winner"] == "drift"


def test_a_flat_early_window_does_not_leave_the_selection_blind() -> None:
    # Tuvalu-like: a history reported as 0 for years, then a rising trend.
    rng = np.random.default_rng(3)
    values = np.concatenate([np.zeros(25), np.cumsum(rng.normal(1.0, 0.3, 15))])
    evaluation = _evaluation(np.arange(1975, 2015), values, naive=NaiveForecaster(), drift=DriftForecaster(), mean=MeanForecaster())
    assert evaluation.plan.splits[0].train_end <= 25  # the first window's training part is flat
    mase = {name: result.metrics["mase"] for name, result in evaluation.results.items()}
    assert all(np.isfinite(list(mase.values())))
    first_origin = str(1975 + evaluation.plan.splits[0].train_end - 1)
    assert any("flat training part" in note and first_origin in note for note in evaluation.plan.notes)
    selection = select(evaluation, default=None)
    assert selection.winner == min(mase, key=mase.get) == "drift"


def test_naive_is_published_with_the_reason_when_the_metric_is_undefined_everywhere() -> None:
    values = np.concatenate([np.full(30, 2.0), [2.5]])
    evaluation = _evaluation(np.arange(1984, 2015), values, naive=NaiveForecaster(), drift=DriftForecaster(), mean=MeanForecaster())
    assert np.isnan(evaluation.results["naive"].metrics["mase"])
    selection = select(evaluation, default="drift")
    assert selection.winner == "naive"
    assert "naive's backtest mase is undefined" in selection.reason


def test_the_default_stays_unless_another_beats_it_by_the_margin(trending) -> None:
    years, values = trending
    combo = CombinationForecaster([DriftForecaster(), MeanForecaster()], "mean")
    evaluation = _evaluation(years, values, naive=NaiveForecaster(), drift=DriftForecaster(), mean=MeanForecaster(), combo=combo)
    mase = {name: result.metrics["mase"] for name, result in evaluation.results.items()}
    ratio = mase["drift"] / mase["combo"]
    assert ratio < 1  # drift is better than its blend with the mean
    # margin 0 is the plain backtest winner; a margin larger than drift's lead keeps the default.
    assert select(evaluation, default="combo", margin=0.0).winner == "drift"
    kept = select(evaluation, default="combo", margin=(1 - ratio) + 0.01)
    assert kept.winner == ("combo" if mase["combo"] < mase["naive"] else "naive")
    assert select(evaluation, default="combo", margin=(1 - ratio) - 0.01).winner == "drift"
    # Too few windows to tell candidates apart: the default stays whatever the scores, and
    # without a default the benchmark is published rather than a lucky backtest winner.
    assert select(evaluation, default="combo", margin=0.0, min_windows=5).winner == "combo"
    fallback = select(evaluation, default="absent", min_windows=5)
    assert fallback.winner == "naive" and "no default candidate" in fallback.reason


def test_a_short_series_publishes_the_short_series_default(trending) -> None:
    years, values = trending
    shrunk = CombinationForecaster([NaiveForecaster(), DriftForecaster()], "median")
    candidates = {"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster(), "shrunk": shrunk}
    evaluation = _evaluation(years, values, **candidates)
    assert len(evaluation.plan.splits) == 4
    # 4 windows are enough at min_windows=4: the short-series default plays no part.
    assert select(evaluation, default="drift", short_default="shrunk", margin=0.0).winner == "drift"
    # Fewer windows than min_windows: the short-series default is published whatever the
    # scores (drift scores better here), and the reason says why.
    assert evaluation.results["drift"].metrics["mase"] < evaluation.results["shrunk"].metrics["mase"]
    short = select(evaluation, default="drift", short_default="shrunk", margin=0.0, min_windows=5)
    assert short.winner == "shrunk" and "short-series default shrunk" in short.reason and "beating naive" in short.reason
    # ... but it must still beat naive on the windows there are: a short-series default
    # worse than naive (the mean, on a trending series) gives way to naive.
    assert evaluation.results["mean"].metrics["mase"] > evaluation.results["naive"].metrics["mase"]
    worse = select(evaluation, default="drift", short_default="mean", min_windows=5)
    assert worse.winner == "naive" and "did not beat naive" in worse.reason
    assert to_spec(short.model.model) == to_spec(shrunk)
    # A short-series default that was not evaluated falls back to the default.
    assert select(evaluation, default="drift", short_default="absent", min_windows=5).winner == "drift"


def test_the_default_candidates_include_the_short_series_combination() -> None:
    candidates = default_candidates(12)
    short = candidates[SHORT_SERIES_CHOICE]
    assert isinstance(short, CombinationForecaster) and short.method == SHORT_COMBINATION_METHOD == "mean"
    assert [to_spec(m) for m in short.members] == [to_spec(candidates[name]) for name in SHORT_COMBINATION_MEMBERS]
    assert candidates["naive"] in short.members


def test_the_short_series_combination_forecasts_half_the_drift() -> None:
    """Independent answer: the last value plus half the mean yearly change, per year ahead."""
    values = np.array([3.0, 3.4, 3.1, 3.9, 4.2, 4.0, 4.6, 5.1, 4.8, 5.5, 5.9, 6.3])
    years = np.arange(2003, 2015)
    short = default_candidates(values.size)[SHORT_SERIES_CHOICE]
    forecast = short.fit(values, years).predict(4, levels=(80, 95))
    slope = (values[-1] - values[0]) / (values.size - 1)
    np.testing.assert_allclose(forecast.mean, values[-1] + 0.5 * slope * np.arange(1, 5), rtol=1e-12)
    assert forecast.years.tolist() == [2015, 2016, 2017, 2018]


def test_naive_is_published_when_the_choice_does_not_beat_it(trending) -> None:
    years, values = trending
    evaluation = _evaluation(years, values, naive=NaiveForecaster(), mean=MeanForecaster())
    assert evaluation.results["mean"].metrics["mase"] > evaluation.results["naive"].metrics["mase"]
    selection = select(evaluation, default="mean", margin=1.0)
    assert selection.winner == "naive" and "mean (mase" in selection.reason and "did not beat naive" in selection.reason
    # On a short series (fewer windows than min_windows) the comparison is skipped, and said so.
    short = select(evaluation, default="mean", margin=1.0, min_windows=5)
    assert short.winner == "mean" and "too few to test it against naive" in short.reason
    with pytest.raises(ValueError, match="benchmark"):
        select(_evaluation(years, values, mean=MeanForecaster()))
    with pytest.raises(ValueError, match="cannot select on 'coverage_95'"):
        select(evaluation, metric="coverage_95")


def test_the_fallback_is_published_when_the_choice_loses_to_naive_and_it_wins(trending) -> None:
    years, values = trending
    evaluation = _evaluation(years, values, naive=NaiveForecaster(), drift=DriftForecaster(), mean=MeanForecaster())
    mase = {name: result.metrics["mase"] for name, result in evaluation.results.items()}
    assert mase["drift"] < mase["naive"] < mase["mean"]
    # The default (the mean) loses to naive; the fallback (drift) beats it and is published.
    chosen = select(evaluation, default="mean", margin=1.0, fallback="drift")
    assert chosen.winner == "drift" and chosen.score == mase["drift"]
    assert chosen.reason == (
        f"mean (mase {mase['mean']:.4g}) did not beat naive ({mase['naive']:.4g}); the fallback drift (mase {mase['drift']:.4g})"
        " does and is published"
    )
    assert to_spec(chosen.model.model) == to_spec(DriftForecaster())
    # A fallback that loses to naive too, or none, or one that was not evaluated: naive.
    for fallback in ("mean", None, "absent"):
        assert select(evaluation, default="mean", margin=1.0, fallback=fallback).winner == "naive"
    # A choice that beats naive is never replaced by the fallback.
    assert select(evaluation, default="drift", margin=1.0, fallback="mean").winner == "drift"
    # Too few windows for the comparison: the short-series rule decides, not the fallback.
    short = select(evaluation, default="drift", short_default="mean", min_windows=5, fallback="drift")
    assert short.winner == "naive"
    # A fallback whose forecast breaks the output bounds gives way to naive like any choice.
    refused = select(evaluation, default="mean", margin=1.0, fallback="drift", refused={"drift": "its forecast is not finite"})
    assert refused.winner == "naive" and refused.reason.endswith("its forecast is not finite; naive is published")


def test_the_production_policy_passes_its_fallback_on(trending) -> None:
    years, values = trending
    # Named as the registry's default and fallback: the default (the mean) loses to naive.
    evaluation = _evaluation(
        years, values, naive=NaiveForecaster(), **{DEFAULT_CHOICE: MeanForecaster(), FALLBACK_CHOICE: DriftForecaster()}
    )
    chosen, models = ZooSelection(always_register=(), margin=1.0, overlay=0).choose(evaluation)
    assert chosen.champion == FALLBACK_CHOICE and "the fallback" in chosen.reason
    assert to_spec(models[FALLBACK_CHOICE].model) == to_spec(DriftForecaster())
    assert ZooSelection(always_register=(), margin=1.0, overlay=0, fallback=None).choose(evaluation)[0].champion == "naive"


def test_the_default_fallback_is_a_default_candidate() -> None:
    candidates = default_candidates(30)
    assert FALLBACK_CHOICE in candidates and DEFAULT_CHOICE in candidates
    assert [to_spec(m) for m in candidates[DEFAULT_CHOICE].members] == [to_spec(candidates[name]) for name in COMBINATION_MEMBERS]
    assert candidates[DEFAULT_CHOICE].method == "median"
    # The production policy uses the registry's fallback, and it is part of the policy's identity (the run key).
    assert ZooSelection().fallback == FALLBACK_CHOICE
    assert describe_policy(ZooSelection())["fields"]["fallback"] == FALLBACK_CHOICE
    assert describe_policy(ZooSelection(fallback=None)) != describe_policy(ZooSelection())


#: select()'s parameters that are inputs of one decision, not settings of the policy.
_INPUTS = {"evaluation", "refused"}


def test_every_selection_setting_is_a_field_of_the_production_policy() -> None:
    """So the run key, which hashes the policy's fields, moves with every setting of select()."""
    settings = {name: p.default for name, p in inspect.signature(select).parameters.items() if name not in _INPUTS}
    fields = {f.name: f.default for f in dataclasses.fields(ZooSelection)}
    assert {name: fields.get(name, "missing") for name in settings} == settings
    assert (settings["default"], settings["short_default"], settings["fallback"]) == (DEFAULT_CHOICE, SHORT_SERIES_CHOICE, FALLBACK_CHOICE)


def test_the_production_policy_passes_every_setting_on(trending, monkeypatch) -> None:
    years, values = trending
    evaluation = _evaluation(years, values, naive=NaiveForecaster(), drift=DriftForecaster())
    policy = ZooSelection(
        metric="rmse", benchmark="drift", default=None, margin=0.2, min_windows=2, calibrate=False, floor=1.0, short_default=None
    )
    seen = {}

    def spy(evaluation, **settings):
        seen.update(settings)
        return select(evaluation, **settings)

    monkeypatch.setattr(selection_module, "select", spy)
    chosen, _ = policy.choose(evaluation, refused={"naive": "why not"})
    expected = {name: getattr(policy, name) for name in inspect.signature(select).parameters if name not in _INPUTS}
    assert seen == {**expected, "refused": {"naive": "why not"}}
    assert chosen.champion == "drift"  # naive refused; drift is the benchmark and the last resort here


def test_a_refused_choice_gives_way_to_naive(trending) -> None:
    years, values = trending
    evaluation = _evaluation(years, values, naive=NaiveForecaster(), drift=DriftForecaster())
    assert select(evaluation, default=None).winner == "drift"
    why = "its forecast mean reaches 500 in 2050, above 4 times the historic maximum 120"
    refused = select(evaluation, default=None, refused={"drift": why})
    assert refused.winner == "naive" and to_spec(refused.model.model) == to_spec(NaiveForecaster())
    assert refused.reason.startswith("drift was chosen (drift has the best backtest mase")
    assert refused.reason.endswith(f"{why}; naive is published")
    # A refused candidate that was not the choice changes nothing.
    assert select(evaluation, default=None, refused={"mean": why}).winner == "drift"
    with pytest.raises(NoCandidateError, match="naive is the last resort and its forecast is not finite"):
        select(evaluation, default=None, refused={"naive": "its forecast is not finite"})


def test_the_metric_is_configurable(trending) -> None:
    years, values = trending
    evaluation = _evaluation(years, values, naive=NaiveForecaster(), drift=DriftForecaster(), mean=MeanForecaster())
    by_rmse = ranking(evaluation, "rmse")
    expected = sorted(evaluation.results, key=lambda name: evaluation.results[name].metrics["rmse"])
    assert [name for name, _ in by_rmse] == expected
    assert select(evaluation, metric="rmse", default=None).winner == expected[0]


def test_best_k_combination_equals_fitting_the_combination(trending) -> None:
    years, values = trending
    evaluation = _evaluation(years, values, naive=NaiveForecaster(), drift=DriftForecaster(), mean=MeanForecaster())
    extended = best_k_combination(evaluation, k=2, method="mean")
    combo = extended.results["best2_mean"]
    # Independent answer: the two best by MASE are drift and naive, and the mean of their
    # forecasts is exactly what a fitted CombinationForecaster of the two forecasts per window.
    assert [m["class"].rsplit(".", 1)[1] for m in (p["$forecaster"] for p in combo.spec["params"]["members"])] == [
        "DriftForecaster",
        "NaiveForecaster",
    ]
    direct = _evaluation(years, values, combo=CombinationForecaster([DriftForecaster(), NaiveForecaster()], "mean")).results["combo"]
    pd.testing.assert_frame_equal(combo.forecasts, direct.forecasts)
    assert combo.metrics == pytest.approx(direct.metrics)
    np.testing.assert_allclose(
        combo.forecasts["mean"], (evaluation.results["drift"].forecasts["mean"] + evaluation.results["naive"].forecasts["mean"]) / 2
    )
    assert set(evaluation.results) == {"naive", "drift", "mean"}  # the input is not modified


@pytest.mark.parametrize(
    ("current", "challenger", "naive", "promote", "words"),
    [
        (0.8, 0.9, 1.0, False, "does not beat the champion"),
        (0.8, 0.8, 1.0, False, "does not beat the champion"),
        (0.9, 0.8, 1.0, True, "beats the champion"),
        (1.3, 1.1, 1.0, False, "worse than naive"),
        (None, 0.95, 1.0, True, "no champion yet"),
        (None, 1.05, 1.0, False, "worse than naive"),
        (1.2, 1.0, 1.0, True, "beats the champion"),  # a naive challenger ties naive and may win
        (0.9, float("nan"), 1.0, False, "not finite"),
    ],
)
def test_champion_gate(current, challenger, naive, promote, words) -> None:
    decision = champion_gate(
        None if current is None else {"mase": current, "smape": 0.0}, {"mase": challenger, "smape": 5.0}, {"mase": naive, "smape": 9.0}
    )
    assert decision.promote is promote and words in decision.reason
    assert (decision.current, decision.naive, decision.metric) == (current, naive, "mase")


def test_champion_gate_on_another_metric() -> None:
    decision = champion_gate({"mase": 0.5, "smape": 9.0}, {"mase": 0.9, "smape": 8.0}, {"mase": 1.0, "smape": 10.0}, metric="smape")
    assert decision.promote and decision.challenger == 8.0
    assert decision.to_dict()["promote"] is True


def test_gate_with_an_undefined_metric_keeps_the_champion_and_does_not_crash() -> None:
    # MASE is undefined (missing from the scores) on a constant history.
    decision = champion_gate({"mase": 1.0}, {"rmse": 0.1}, {"rmse": 0.2}, metric="mase")
    assert not decision.promote and "not finite" in decision.reason
    first = champion_gate(None, {"rmse": 0.1}, {"rmse": 0.2}, metric="mase")
    assert not first.promote and first.current is None
