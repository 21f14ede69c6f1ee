"""One contract test over every candidate and wrapper (scikit-learn / sktime style)."""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.models.arima import ArimaForecaster, ArmaForecaster
from pipeline.models.base import Forecaster, NotFittedError, clone, load_forecaster, to_spec
from pipeline.models.baselines import DriftForecaster, NaiveForecaster
from pipeline.models.calibrated import CalibratedForecaster
from pipeline.models.combination import CombinationForecaster
from pipeline.models.ets import AutoEtsForecaster
from pipeline.models.registry import FAMILIES, default_candidates
from pipeline.models.theta import ThetaForecaster
from pipeline.models.transformed import TransformedForecaster

N = 60
EXTRA: dict[str, Callable[[], Forecaster]] = {
    "arma": ArmaForecaster,  # a family, though not a default candidate
    "log_drift_d1": lambda: TransformedForecaster(DriftForecaster(), transform="log", d=1),
    "boxcox_arima": lambda: TransformedForecaster(ArimaForecaster(max_p=1, max_q=1), transform="boxcox"),
    "sqrt_naive_d1": lambda: TransformedForecaster(NaiveForecaster(), transform="sqrt", d=1),
    "reciprocal_ets": lambda: TransformedForecaster(AutoEtsForecaster(), transform="reciprocal"),
    "calibrated_theta": lambda: CalibratedForecaster(ThetaForecaster(), factors={80: [1.5, 2.0], 95: [0.5]}),
    "calibrated_combination": lambda: CalibratedForecaster(CombinationForecaster([NaiveForecaster(), DriftForecaster()], "median")),
}
CASES: dict[str, Callable[[], Forecaster]] = {
    **{name: (lambda name=name: default_candidates(N)[name]) for name in default_candidates(N)},
    **EXTRA,
}


def _series(seed: int, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    # Levels around 1000: a forecast left on a log / sqrt / reciprocal scale is far outside.
    rng = np.random.default_rng(seed)
    return 1000 + np.cumsum(rng.normal(2.0, 5.0, n)), np.arange(1950, 1950 + n)


def _fitted_attributes(model: Forecaster) -> set[str]:
    return {name for name in vars(model) if name.endswith("_") and not name.startswith("_")}


def _nested(model: Forecaster) -> list[Forecaster]:
    params = model.get_params()
    inner = [v for v in params.values() if isinstance(v, Forecaster)]
    inner += [m for v in params.values() if isinstance(v, list | tuple) for m in v if isinstance(m, Forecaster)]
    return inner


def test_every_family_is_covered() -> None:
    covered = {type(make()).__name__ for make in CASES.values()}
    assert {cls.__name__ for cls in FAMILIES.values()} <= covered


@pytest.mark.parametrize("name", list(CASES))
def test_forecaster_contract(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = CASES[name]()
    cls = type(model)

    # __init__ stores every hyperparameter under its own name, defaults included, and nothing else.
    signature = inspect.signature(cls.__init__)
    assert set(model.get_params()) == {k for k in signature.parameters if k != "self"}
    assert not _fitted_attributes(model)
    assert set(vars(model)) <= set(model.get_params())
    assert to_spec(clone(model)) == to_spec(model) and clone(model) is not model
    with pytest.raises(NotFittedError):
        model.predict(3)

    y, years = _series(0)
    # __init__ validates nothing: nonsense is stored as given, and refused once it is used.
    nonsense = {name: "not-a-value" for name in model.get_params()}
    odd = cls(**nonsense)
    assert odd.get_params() == nonsense
    if nonsense:
        with pytest.raises((ValueError, TypeError, AttributeError, KeyError, RuntimeError)):
            odd.fit(y, years).predict(3)

    assert model.fit(y, years) is model
    assert {"y_", "years_"} <= _fitted_attributes(model)
    # A wrapper fits clones: the templates it was given stay unfitted and shareable.
    assert all(not inner.is_fitted for inner in _nested(model))

    forecast = model.predict(7)
    frame = forecast.to_frame()
    assert list(frame.columns) == ["year", "mean", "lo_80", "hi_80", "lo_95", "hi_95"]
    assert list(frame["year"]) == list(range(2010, 2017))
    assert frame.shape == (7, 6) and np.isfinite(frame.to_numpy()).all()
    assert (frame["lo_95"] <= frame["lo_80"]).all() and (frame["lo_80"] <= frame["mean"]).all()
    assert (frame["mean"] <= frame["hi_80"]).all() and (frame["hi_80"] <= frame["hi_95"]).all()
    # Levels on the original scale: within a few ranges of the data, not on a transformed scale.
    span = y.max() - y.min()
    values = frame[["mean", "lo_80", "hi_80", "lo_95", "hi_95"]].to_numpy()
    assert (values > y.min() - 3 * span).all() and (values < y.max() + 3 * span).all()
    assert list(model.predict(2, levels=(50,)).to_frame().columns) == ["year", "mean", "lo_50", "hi_50"]

    # Seeded determinism: a fresh model with the same hyperparameters forecasts the same.
    twin = CASES[name]().fit(y, years).predict(7)
    np.testing.assert_array_equal(twin.mean, forecast.mean)
    np.testing.assert_array_equal(twin.upper[95], forecast.upper[95])

    # save / load: plain files, no pickle anywhere, equal forecasts and hyperparameters.
    directory = model.save(tmp_path / "model")

    def no_pickle(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading must not unpickle")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    for loaded in (cls.load(directory), load_forecaster(directory)):
        assert type(loaded) is cls
        again = loaded.predict(7)
        np.testing.assert_array_equal(again.years, forecast.years)
        np.testing.assert_allclose(again.mean, forecast.mean, rtol=1e-12, atol=1e-9)
        for level in (80, 95):
            np.testing.assert_allclose(again.lower[level], forecast.lower[level], rtol=1e-12, atol=1e-9)
            np.testing.assert_allclose(again.upper[level], forecast.upper[level], rtol=1e-12, atol=1e-9)
        assert to_spec(loaded) == to_spec(model)
    monkeypatch.undo()

    # Refitting forgets the previous fit: a second series gives what a fresh model gives.
    y2, years2 = _series(1, n=50)
    refit = model.fit(y2, years2 + 10).predict(4)
    fresh = CASES[name]().fit(y2, years2 + 10).predict(4)
    np.testing.assert_allclose(refit.mean, fresh.mean, rtol=1e-10, atol=1e-10)
    assert list(refit.years) == list(range(2010, 2014))
    np.testing.assert_array_equal(model.y_, y2)


def test_two_wrappers_around_one_model_do_not_share_state() -> None:
    inner = ArimaForecaster(max_p=1, max_q=1)
    first = TransformedForecaster(inner, transform="log")
    second = TransformedForecaster(inner, transform="identity")
    y, years = _series(2)
    first.fit(y, years)
    before = first.predict(3).mean.copy()
    second.fit(y[:40] * 2, years[:40])
    np.testing.assert_array_equal(first.predict(3).mean, before)
    assert first.model_ is not second.model_ and not inner.is_fitted
    assert first.get_params()["model"] is inner
