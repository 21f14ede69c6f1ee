"""One contract test over every forecaster (scikit-learn / sktime style)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.models.arima import ArimaForecaster
from pipeline.models.base import Forecaster, NotFittedError
from pipeline.models.baselines import DriftForecaster, MeanForecaster, NaiveForecaster
from pipeline.models.lstm import LSTMForecaster
from pipeline.models.rnn import RNNForecaster

# Small settings so the neural models train in well under a second here.
FAST_NEURAL = {"epochs": 20, "hidden": 4, "window": 5, "patience": 5, "min_origins": 3}


MODELS = [
    pytest.param(NaiveForecaster, {}, id="NaiveForecaster"),
    pytest.param(DriftForecaster, {}, id="DriftForecaster"),
    pytest.param(MeanForecaster, {}, id="MeanForecaster"),
    pytest.param(ArimaForecaster, {"max_p": 2, "max_q": 2}, id="ArimaForecaster"),
    pytest.param(LSTMForecaster, FAST_NEURAL, id="LSTMForecaster"),
    pytest.param(RNNForecaster, FAST_NEURAL, id="RNNForecaster"),
]


def _series(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return 5 + np.cumsum(rng.normal(0.1, 0.5, n)), np.arange(1950, 1950 + n)


def _fitted_attributes(model: Forecaster) -> set[str]:
    return {name for name in vars(model) if name.endswith("_") and not name.startswith("_")}


@pytest.mark.parametrize(("cls", "params"), MODELS)
def test_forecaster_contract(cls: Callable[..., Forecaster], params: dict[str, Any], tmp_path: Path) -> None:
    model = cls(**params)

    # __init__ stores hyperparameters under their own names and nothing else.
    assert model.get_params() == {**{k: v.default for k, v in inspect.signature(cls.__init__).parameters.items() if k != "self"}, **params}
    assert not _fitted_attributes(model)
    assert set(vars(model)) <= set(model.get_params())

    # __init__ validates nothing: nonsense is accepted until fit.
    nonsense = {name: "not-a-value" for name in model.get_params()}
    cls(**nonsense)

    with pytest.raises(NotFittedError):
        model.predict(3)

    y, years = _series(0)
    assert model.fit(y, years) is model
    first_attrs = _fitted_attributes(model)
    assert {"y_", "years_"} <= first_attrs
    assert set(vars(model)) - set(model.get_params()) <= first_attrs | {name for name in vars(model) if name.startswith("_")}

    forecast = model.predict(7)
    frame = forecast.to_frame()
    assert list(frame.columns) == ["year", "mean", "lo_80", "hi_80", "lo_95", "hi_95"]
    assert list(frame["year"]) == list(range(2010, 2017))
    assert frame.shape == (7, 6) and np.isfinite(frame.to_numpy()).all()
    assert (frame["lo_95"] <= frame["lo_80"]).all() and (frame["lo_80"] <= frame["mean"]).all()
    assert (frame["mean"] <= frame["hi_80"]).all() and (frame["hi_80"] <= frame["hi_95"]).all()
    assert list(model.predict(2, levels=(50,)).to_frame().columns) == ["year", "mean", "lo_50", "hi_50"]

    # save/load: plain files, equal forecasts.
    loaded = cls.load(model.save(tmp_path / "model"))
    again = loaded.predict(7)
    np.testing.assert_allclose(again.mean, forecast.mean, rtol=1e-12, atol=1e-12)
    for level in (80, 95):
        np.testing.assert_allclose(again.lower[level], forecast.lower[level], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(again.upper[level], forecast.upper[level], rtol=1e-12, atol=1e-12)
    assert loaded.get_params() == model.get_params()

    # refit forgets the previous fit: a second series gives what a fresh model gives.
    y2, years2 = _series(1, n=50)
    refit = model.fit(y2, years2 + 10).predict(4)
    fresh = cls(**params).fit(y2, years2 + 10).predict(4)
    np.testing.assert_allclose(refit.mean, fresh.mean, rtol=1e-10, atol=1e-10)
    assert list(refit.years) == list(range(2010, 2014))
    np.testing.assert_array_equal(model.y_, y2)
    if cls is ArimaForecaster:
        assert model.search_ == cls(**params).fit(y2).search_
