"""The per-series core without MLflow, Airflow or a store: a whole series in milliseconds.

A short synthetic series with a known trend runs prepare → diagnose → backtest → select → fit →
forecast with cheap candidates; the forecast is checked against the drift formula worked out
independently here. The production run key is checked to move with every hyperparameter default
the zoo uses, with its sizing for short series and with every selection setting.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import backtest, core, tasks
from pipeline import candidates as candidates_module
from pipeline import series as series_module
from pipeline.candidates import NewestFamilyChampion, ZooSelection, study_candidates, zoo_candidates
from pipeline.config import Settings
from pipeline.core import CandidateResult, ForecastSpec, Selection, clone, config_hash, forecast_frame, run_config, run_series
from pipeline.models import registry
from pipeline.models.base import Forecaster, encode_param
from pipeline.models.baselines import DriftForecaster, MeanForecaster, NaiveForecaster
from pipeline.series import beyond_bounds

SPEC = ForecastSpec(horizon_end=2000, backtest_horizon=3, backtest_origins=3, min_points=20)
YEARS = np.arange(1950, 1990)


def _tidy(values: np.ndarray, years: np.ndarray = YEARS) -> pd.DataFrame:
    return pd.DataFrame({"entity": "Testland", "iso_code": "TST", "year": years, "variable": "co2", "value": values})


def _trending() -> np.ndarray:
    noise = np.random.default_rng(3).normal(scale=0.05, size=YEARS.size)
    return 10 + 0.5 * np.arange(YEARS.size) + noise


def best_wins(results: Mapping[str, CandidateResult]) -> Selection:
    """A policy other than production's: the best backtest MASE serves, only it is fitted."""
    best = min(results, key=lambda name: results[name].scores["mase"])
    return Selection(champion=best, best=best, register=(best,), fit=(best,), reason="best backtest MASE")


def test_a_whole_series_from_prepare_to_forecast() -> None:
    values = _trending()
    prototypes: dict[str, Forecaster] = {"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster()}
    series = core.prepare(_tidy(values), "Testland", "co2", as_of_year=1989, spec=SPEC)
    result = run_series(series, prototypes, best_wins, SPEC)

    # A clean linear trend: drift beats naive (which lags it) and mean (which ignores it).
    mase = {name: r.scores["mase"] for name, r in result.candidates.items()}
    assert result.selection.champion == "drift" and mase["drift"] < mase["naive"] < mase["mean"]
    assert [r.backtest.per_origin.index.tolist() for r in result.candidates.values()] == [[1980, 1983, 1986]] * 3
    assert result.candidates["drift"].model is not None and result.candidates["naive"].model is None
    assert not any(p.is_fitted for p in prototypes.values()), "the core must not fit the prototypes it was given"
    assert result.diagnostics["series"]["n"] == 40 and result.diagnostics["stationarity"]["implied_d"] >= 1

    frame = forecast_frame(result.champion, 1989, SPEC.horizon_end, SPEC.levels)
    slope = (values[-1] - values[0]) / (values.size - 1)
    assert frame["year"].tolist() == list(range(1990, 2001))
    np.testing.assert_allclose(frame["mean"], values[-1] + slope * np.arange(1, 12), rtol=1e-12)
    assert (frame["lo_95"] < frame["lo_80"]).all() and (frame["hi_80"] < frame["hi_95"]).all()


def test_forecast_starts_after_the_as_of_year_when_the_series_ends_earlier() -> None:
    model = DriftForecaster().fit(_trending()[:-3], YEARS[:-3])  # data ends in 1986
    frame = forecast_frame(model, 1989, 1995, (80, 95))
    assert frame["year"].tolist() == list(range(1990, 1996))
    full = model.predict(9, levels=(80, 95)).to_frame()
    np.testing.assert_array_equal(frame["mean"], full["mean"].to_numpy()[3:])
    with pytest.raises(ValueError, match="horizon end"):
        forecast_frame(model, 1989, 1989, (80,))


def test_production_policy_registers_a_winning_baseline() -> None:
    values = _trending()
    series = core.prepare(_tidy(values), "Testland", "co2", as_of_year=1989, spec=SPEC)
    policy = NewestFamilyChampion(champion="naive", always_register=("naive", "mean"))
    result = run_series(series, {"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster()}, policy, SPEC)
    selection = result.selection
    assert selection.champion == "naive" and selection.best == "drift"
    assert selection.register == ("naive", "mean", "drift")
    assert all(r.model is not None for r in result.candidates.values())  # every candidate run carries its model
    with pytest.raises(ValueError, match="not among the candidates"):
        run_series(series, {"drift": DriftForecaster()}, NewestFamilyChampion(), SPEC)


def test_zoo_policy_fits_the_overlay_and_candidate_forecasts_are_their_forecasts() -> None:
    values = _trending()
    series = core.prepare(_tidy(values), "Testland", "co2", as_of_year=1989, spec=SPEC)
    prototypes: dict[str, Forecaster] = {"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster()}
    policy = ZooSelection(always_register=("naive",), overlay=1)
    result = run_series(series, prototypes, policy, SPEC)
    ranked = sorted(result.candidates, key=lambda n: result.candidates[n].scores["mase"])
    register = result.selection.register
    # Registered: naive, plus the winner; fitted besides: the best-ranked one not registered.
    overlay = [name for name in ranked if name not in register][:1]
    assert result.selection.fit == (*register, *overlay)
    assert {n for n, r in result.candidates.items() if r.model is not None} == set(result.selection.fit)

    table = core.candidate_forecasts(result, 1989, SPEC.horizon_end, SPEC.levels)
    assert table.columns.tolist() == ["family", "year", "mean", "lo_80", "hi_80", "lo_95", "hi_95"]
    assert table["family"].unique().tolist() == [n for n in prototypes if n in result.selection.fit]
    for name, rows in table.groupby("family"):
        expected = forecast_frame(result.candidates[name].model, 1989, SPEC.horizon_end, SPEC.levels)
        pd.testing.assert_frame_equal(rows.drop(columns="family").reset_index(drop=True), expected)
    # Naive's forecast, worked out here: the last value, every year.
    np.testing.assert_allclose(table.loc[table["family"] == "naive", "mean"], values[-1], rtol=1e-12)

    unfitted = dataclasses.replace(result, candidates={n: dataclasses.replace(r, model=None) for n, r in result.candidates.items()})
    with pytest.raises(ValueError, match="no candidate was fitted"):
        core.candidate_forecasts(unfitted, 1989, SPEC.horizon_end, SPEC.levels)


def test_the_study_series_registered_candidates_get_the_studys_own_split() -> None:
    values = _trending()
    spec = dataclasses.replace(SPEC, study_series="testland.co2", study_train=30)  # 1950-1979, then 1980-1989
    series = core.prepare(_tidy(values), "Testland", "co2", as_of_year=1989, spec=spec)
    prototypes: dict[str, Forecaster] = {"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster()}
    result = run_series(series, prototypes, ZooSelection(always_register=("naive",), overlay=0), spec)
    registered = set(result.selection.register)
    assert "naive" in registered and registered < set(prototypes)
    assert {n for n, r in result.candidates.items() if r.study is not None} == registered
    # Naive's study split, by hand: the 1979 value for 1980-1989, scaled by 1950-1979's naive error.
    naive = result.candidates["naive"].metrics
    expected = np.mean(np.abs(values[30:] - values[29])) / np.mean(np.abs(np.diff(values[:30])))
    assert naive["study_mase"] == pytest.approx(expected, rel=1e-12)
    assert naive["backtest_mase"] == pytest.approx(result.candidates["naive"].backtest.metrics["mase"])
    # Another series gets none.
    other = run_series(series, prototypes, ZooSelection(always_register=("naive",), overlay=0), SPEC)
    assert all(r.study is None for r in other.candidates.values())


def test_a_choice_whose_forecast_breaks_the_output_bounds_gives_way_to_naive() -> None:
    values = _trending()  # 10 -> 29.5: drift (0.5 a year) wins the backtest
    series = core.prepare(_tidy(values), "Testland", "co2", as_of_year=1989, spec=SPEC)
    prototypes: dict[str, Forecaster] = {"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster()}
    policy = ZooSelection(always_register=(), overlay=0)
    spec = dataclasses.replace(SPEC, backtest_origins=4)  # enough windows to test a choice against naive
    assert run_series(series, prototypes, policy, spec).selection.champion == "drift"
    # To 2200 drift's line reaches about 29.5 + 0.5 * 211 = 135, above 4 times the history's
    # maximum: the selection asks again with drift refused, and naive (the last value) serves.
    far = dataclasses.replace(spec, horizon_end=2200)
    result = run_series(series, prototypes, policy, far)
    assert result.selection.champion == "naive" and result.selection.register == ("naive",)
    assert "drift was chosen" in result.selection.reason and "above 4 times the historic maximum" in result.selection.reason
    assert result.candidates["naive"].model is not None and result.candidates["drift"].model is None
    forecast = result.champion.predict(far.horizon_end - 1989, levels=far.levels)
    assert beyond_bounds(forecast.years, forecast.mean, forecast.upper[95], float(values.max())) is None
    np.testing.assert_allclose(forecast.mean, values[-1], rtol=1e-12)


def test_a_choice_whose_forecast_falls_to_zero_within_the_backtest_horizon_gives_way_to_naive() -> None:
    noise = np.random.default_rng(3).normal(scale=0.05, size=YEARS.size)
    falling = 2.2 + 0.5 * np.arange(YEARS.size)[::-1] + noise  # 21.7 -> 2.2: drift (-0.5 a year) wins the backtest
    series = core.prepare(_tidy(falling), "Testland", "co2", as_of_year=1989, spec=SPEC)
    prototypes: dict[str, Forecaster] = {"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster()}
    policy = ZooSelection(always_register=(), overlay=0)
    # Drift's line, 2.2 - 0.5 * step, reaches the zero floor 5 years ahead (1994). Judged on 3
    # years ahead, that is beyond what the backtest says anything about: drift serves, floored.
    three = dataclasses.replace(SPEC, backtest_origins=4)
    kept = run_series(series, prototypes, policy, three)
    assert kept.selection.champion == "drift", kept.selection.reason
    forecast = kept.champion.predict(three.horizon_end - 1989, levels=three.levels)
    assert (forecast.mean[:4] > 0).all() and (forecast.mean[4:] == 0).all()
    # Judged on 5 years ahead, drift's forecast falls to zero within them: refused, naive serves.
    five = dataclasses.replace(three, backtest_horizon=5)
    result = run_series(series, prototypes, policy, five)
    assert result.selection.champion == "naive" and "drift was chosen" in result.selection.reason
    assert "its forecast mean falls to 0 in 1994, 5 year(s) ahead, at or below zero" in result.selection.reason
    np.testing.assert_allclose(result.champion.predict(3, levels=five.levels).mean, falling[-1], rtol=1e-12)
    # A history with a zero in it is not bounded below: drift serves.
    touching = falling.copy()
    touching[5] = 0.0
    series = core.prepare(_tidy(touching), "Testland", "co2", as_of_year=1989, spec=SPEC)
    assert run_series(series, prototypes, policy, five).selection.champion == "drift"


@pytest.mark.parametrize("n", [12, 13, 19])
def test_a_series_of_12_to_19_values_is_forecast_by_the_production_lineup(n: int) -> None:
    # MIN_POINTS is 12, but the diagnostics' decade decomposition needed 20 values: every
    # series of 12-19 values failed with a ValueError before any candidate ran.
    years = np.arange(2015 - n, 2015)
    values = 3.0 + 0.5 * np.arange(n)  # an exact line: drift forecasts it without error
    lineup = tasks.production_lineup(Settings(horizon_end=2020))
    series = core.prepare(_tidy(values, years), "Testland", "co2", as_of_year=2014, spec=lineup.spec)
    result = run_series(series, lineup.candidates, lineup.select, lineup.spec)
    assert result.diagnostics["decomposition"]["additive"] is None
    # Fewer than 4 windows: the short-series default, the mean of naive and drift, beats naive.
    assert result.selection is not None and result.selection.champion == "combo_short"
    frame = forecast_frame(result.champion, 2014, 2020, lineup.spec.levels)
    h = np.arange(1, 7)
    np.testing.assert_allclose(frame["mean"], values[-1] + 0.5 * 0.5 * h)  # last value + half the slope per year
    bands = frame[["lo_95", "lo_80", "mean", "hi_80", "hi_95"]].to_numpy()
    assert np.isfinite(bands).all() and (np.diff(bands, axis=1) >= 0).all() and (bands >= 0).all()


def test_a_policy_that_names_an_unfitted_champion_is_refused() -> None:
    series = core.prepare(_tidy(_trending()), "Testland", "co2", as_of_year=1989, spec=SPEC)

    def sloppy(results: Mapping[str, CandidateResult]) -> Selection:
        return Selection(champion="naive", best="naive", register=("naive",), fit=(), reason="")

    with pytest.raises(ValueError, match="not fitted"):
        run_series(series, {"naive": NaiveForecaster()}, sloppy, SPEC)


class _Listy(Forecaster):
    family = "test"

    def __init__(self, weights: list[float] | None = None) -> None:
        self.weights = weights

    def _fit(self, y: np.ndarray) -> None:
        self.level_ = float(y[-1])

    def _predict(self, h: int, levels: tuple[int, ...]) -> Any:
        mean = np.full(h, self.level_)
        return mean, {lv: (mean, mean) for lv in levels}


def test_clone_copies_parameters_deeply() -> None:
    prototype = _Listy(weights=[1.0, 2.0])
    copy = clone(prototype)
    assert copy.get_params() == prototype.get_params() and copy is not prototype
    copy.weights.append(3.0)
    assert prototype.weights == [1.0, 2.0]


# -- the run key -------------------------------------------------------------------------------


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.5
    if isinstance(value, str):
        return value + "_changed"
    if value is None:
        return 7
    if isinstance(value, (tuple, list)):
        return (*value, 1)
    raise AssertionError(f"no way to change a default of type {type(value).__name__}")


def _production_hash() -> str:
    """The configuration hash of the run key production uses (a fresh line-up: nothing cached)."""
    return tasks.production_lineup(Settings()).config_hash


def _zoo_instances() -> list[Forecaster]:
    """Every model the production zoo builds at any series length, nested members included."""
    found: list[Forecaster] = []

    def walk(value: Any) -> None:
        if isinstance(value, Forecaster):
            found.append(value)
            for param in value.get_params().values():
                walk(param)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    for n in core.FACTORY_SIZES:
        for model in zoo_candidates(n).values():
            walk(model)
    return found


def _defaults() -> list[tuple[type, str]]:
    """Every (class, hyperparameter with a default) of the classes the production zoo uses."""
    classes = sorted({type(model) for model in _zoo_instances()}, key=lambda cls: cls.__qualname__)
    pairs = []
    for cls in classes:
        for name, parameter in inspect.signature(cls.__init__).parameters.items():
            if name != "self" and parameter.default is not inspect.Parameter.empty:
                pairs.append((cls, name))
    return pairs


@pytest.mark.parametrize(("cls", "param"), _defaults(), ids=lambda v: v.__qualname__ if isinstance(v, type) else v)
def test_the_run_key_moves_with_every_hyperparameter_default_production_uses(cls: type, param: str, monkeypatch) -> None:
    before = _production_hash()
    assert _production_hash() == before  # stable for an unchanged configuration
    values = [encode_param(getattr(model, param)) for model in _zoo_instances() if type(model) is cls]
    init = cls.__init__
    names = [p.name for p in inspect.signature(init).parameters.values() if p.default is not inspect.Parameter.empty]
    defaults = list(init.__defaults__)
    index = names.index(param)
    defaults[index] = _changed(defaults[index])
    monkeypatch.setattr(init, "__defaults__", tuple(defaults))
    # Whether production now builds other models, at some series length: the changed default was
    # taken (or it changed which models a length gets, e.g. through a minimum history). The zoo
    # may pass a value of its own (ArimaForecaster(max_p=2)) and then does not use the default.
    used = [encode_param(getattr(model, param)) for model in _zoo_instances() if type(model) is cls] != values
    moved = _production_hash() != before
    assert moved == used, f"{cls.__name__}({param}=...): the default is {'used' if used else 'not used'} by production"
    assert used == ((cls.__name__, param) not in _EXPLICIT), f"{cls.__name__}({param}=...): update _EXPLICIT"


#: Hyperparameters the production zoo always sets itself (class name, parameter): their class
#: default never reaches a forecast, so it must not move the run key. Every other default must.
_EXPLICIT = {
    *(("ArimaForecaster", name) for name in ("max_p", "max_q", "search")),
    *(("CombinationForecaster", name) for name in ("members", "method")),
    *((cls, name) for cls in ("LSTMForecaster", "RNNForecaster") for name in ("window", "hidden", "epochs", "patience", "min_origins")),
    ("TrendForecaster", "degree"),
}


def test_the_run_key_moves_with_what_only_short_series_use(monkeypatch) -> None:
    before = _production_hash()
    sizing = registry._neural_params
    # The neural models' window on series whose earliest backtest window has fewer than 40 points.
    monkeypatch.setattr(registry, "_neural_params", lambda n: {**sizing(n), "window": 5} if n < 40 else sizing(n))
    assert _production_hash() != before
    monkeypatch.setattr(registry, "_neural_params", sizing)
    assert _production_hash() == before
    monkeypatch.setattr(registry, "NEURAL_MIN_POINTS", registry.NEURAL_MIN_POINTS + 5)
    assert _production_hash() != before


@pytest.mark.parametrize(
    "change", [{"default": "combo_mean"}, {"min_windows": 5}, {"short_default": None}, {"calibrate": False}, {"benchmark": "drift"}]
)
def test_the_run_key_moves_with_every_selection_setting(change: dict, monkeypatch) -> None:
    before = _production_hash()
    monkeypatch.setattr(candidates_module, "ZooSelection", functools.partial(ZooSelection, **change))
    assert _production_hash() != before


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (backtest, "MIN_POINTS"),
        (backtest, "MIN_TRAIN_SHORT"),
        (backtest, "MIN_POINTS_PER_STEP"),
        (backtest, "MIN_CALIBRATION_FACTOR"),
        (backtest, "MAX_CALIBRATION_FACTOR"),
        (backtest, "BORROW_UNSUPPORTED_LEVELS"),
        (series_module, "MAX_MEAN_FACTOR"),
        (series_module, "MAX_HI95_FACTOR"),
        (series_module, "MIN_MEAN_SHARE"),
    ],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_the_run_key_moves_with_every_tuned_constant(module: Any, name: str, monkeypatch) -> None:
    before = _production_hash()
    monkeypatch.setattr(module, name, _changed(getattr(module, name)))
    assert _production_hash() != before


def test_run_key_moves_with_package_version_policy_and_spec(monkeypatch) -> None:
    def study_hash(candidates: Mapping[str, Forecaster], policy: Any, spec: ForecastSpec) -> str:
        return config_hash(run_config(candidates, policy, spec))

    candidates, spec = study_candidates(), ForecastSpec(horizon_end=2050)
    before = study_hash(candidates, NewestFamilyChampion(), spec)
    assert study_hash(candidates, NewestFamilyChampion(champion="lstm"), spec) != before
    assert study_hash(candidates, NewestFamilyChampion(), dataclasses.replace(spec, backtest_origins=6)) != before
    assert study_hash({**candidates, "mean": MeanForecaster()}, NewestFamilyChampion(), spec) != before
    production = _production_hash()
    monkeypatch.setattr(core, "__version__", "99.0")
    assert study_hash(candidates, NewestFamilyChampion(), spec) != before
    assert _production_hash() != production


def test_candidates_are_instances_and_the_lineup_matches_the_registry_contract() -> None:
    lineup = study_candidates()
    assert list(lineup) == ["arima", "lstm", "rnn", "drift", "naive"]
    assert all(isinstance(model, Forecaster) and not model.is_fitted for model in lineup.values())
    assert candidates_module.NewestFamilyChampion().champion == "arima"


def test_the_core_imports_no_io_framework() -> None:
    code = (
        "import sys, pipeline.core, pipeline.candidates, pipeline.plan, pipeline.payloads, pipeline.layout;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'airflow', 'great_expectations', 'boto3', 'matplotlib'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]"


#: The published forecast of two real series as of 2014 under the default line-up, for each
#: core.FORECAST_REVISION since this test (year: mean, lo_80, hi_80, lo_95, hi_95), and the model chosen.
#: Canada per capita publishes half the drift with its calibrated bands; Mozambique the default median
#: (drift, ETS and the LSTM).
_DEFAULT_FORECASTS = {
    2: {
        ("Canada", "co2_per_capita"): (
            "combo_short",
            {
                2015: (16.22681074766355, 15.52645698590998, 16.92716450941712, 15.084435434465075, 17.36918606086203),
                2019: (16.378053738317757, 14.804782715001561, 17.951324761633952, 13.811827816282483, 18.944279660353033),
                2050: (17.55018691588785, 13.18389995750212, 21.91647387427358, 10.4281598718532, 24.6722139599225),
            },
        ),
        ("Mozambique", "co2"): (
            "combo_median",
            {
                2015: (8.772455406925605, 8.067867317256589, 9.477043496594622, 3.891486850068895, 13.65342396378232),
                2019: (9.423697818087211, 8.211673772813114, 10.635721863361308, 1.0275138037986054, 17.819881832375813),
                2050: (11.658310344827587, 8.152882559357773, 16.550251579523202, 0.0, 45.54677893894848),
            },
        ),
    }
}


# Revision 3 moved only the 95 % bands of 12-29-point series: neither of these.
_DEFAULT_FORECASTS[3] = _DEFAULT_FORECASTS[2]


def test_the_default_forecast_changes_only_with_a_new_forecast_revision() -> None:
    """A run key names a forecast: the same data and settings under a new code give the same forecast, or a new key.

    The run key covers the configuration, not the code; a fix that moves forecasts must raise
    core.FORECAST_REVISION (part of the key), or an upgrade keeps serving the old code's forecasts,
    scores and bands until the data are revised. Three such fixes once landed without it. When this
    fails after a deliberate change: raise FORECAST_REVISION and add its forecasts here.
    """
    from pipeline.config import EMBEDDED_SOURCE
    from pipeline.ingest import read_tidy_file

    assert core.FORECAST_REVISION in _DEFAULT_FORECASTS, f"add the forecasts of revision {core.FORECAST_REVISION} here"
    assert run_config(zoo_candidates, ZooSelection(), ForecastSpec(horizon_end=2050))["forecast_revision"] == core.FORECAST_REVISION
    tidy = read_tidy_file(EMBEDDED_SOURCE)
    lineup = tasks.production_lineup(Settings())
    for (entity, variable), (chosen, expected) in _DEFAULT_FORECASTS[core.FORECAST_REVISION].items():
        series = core.prepare(tidy, entity, variable, as_of_year=2014, spec=lineup.spec)
        result = run_series(series, lineup.candidates, lineup.select, lineup.spec)
        champion = result.selection.champion
        frame = forecast_frame(result.candidates[champion].model, 2014, lineup.spec.horizon_end, lineup.spec.levels)
        got = frame.set_index("year").loc[list(expected), ["mean", "lo_80", "hi_80", "lo_95", "hi_95"]].to_numpy()
        changed = f"{entity} {variable}: the default forecast changed; raise core.FORECAST_REVISION"
        assert champion == chosen, changed
        np.testing.assert_allclose(got, np.array(list(expected.values())), rtol=1e-5, atol=1e-9, err_msg=changed)
