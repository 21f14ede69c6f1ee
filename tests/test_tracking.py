"""MLflow registry: models from code, per-family aliases, alias history as tags, rollback."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline import tracking
from pipeline.config import Settings
from pipeline.models.baselines import DriftForecaster, NaiveForecaster

SID = "testland.co2"


@pytest.fixture
def client(tmp_path: Path):
    settings = Settings(home=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    return tracking.configure(settings)


def _register(client, model, key: str, family: str):
    with mlflow.start_run():
        info = tracking.log_forecaster(model, horizon_end=2030)
    return tracking.register(client, info.model_uri, SID, key, family, {})


def test_register_is_idempotent_per_run_key(client) -> None:
    years = np.arange(1950, 2011)
    model = DriftForecaster().fit(np.linspace(1, 5, years.size), years)
    first = _register(client, model, "key-a", "drift")
    again = tracking.register(client, "runs:/unused/model", SID, "key-a", "drift", {})
    assert str(again.version) == str(first.version)
    other = _register(client, model, "key-b", "drift")
    assert int(other.version) == int(first.version) + 1


def test_alias_moves_are_recorded_and_roll_back(client, tmp_path: Path) -> None:
    years = np.arange(1950, 2011)
    v1 = _register(client, NaiveForecaster().fit(np.linspace(1, 5, years.size), years), "k1", "naive")
    v2 = _register(client, DriftForecaster().fit(np.linspace(1, 5, years.size), years), "k2", "drift")
    assert tracking.move_alias(client, SID, "champion", v1.version, reason="first", scores={"mase": 1.5})
    assert not tracking.move_alias(client, SID, "champion", v1.version, reason="again")
    assert tracking.move_alias(client, SID, "champion", v2.version, reason="better", scores={"mase": 1.1})
    moved = tracking.alias_version(client, SID, "champion")
    assert str(moved.version) == str(v2.version)
    # One short tag per move (no score tags flooding the UI): previous version and reason.
    assert json.loads(moved.tags[tracking.alias_tag("champion")]) == {"previous": str(v1.version), "reason": "better"}
    assert not [tag for tag in moved.tags if tag.startswith("alias.")]

    assert tracking.rollback_alias(client, SID) == (str(v2.version), str(v1.version))
    assert str(tracking.alias_version(client, SID, "champion").version) == str(v1.version)

    # The pyfunc serves any year range after the data up to the horizon end; nothing else.
    model = mlflow.pyfunc.load_model(f"models:/{tracking.registered_name(SID)}@champion")
    out = model.predict(pd.DataFrame({"year": [2012, 2011]}))
    assert out["year"].tolist() == [2011, 2012]
    expected = NaiveForecaster().fit(np.linspace(1, 5, years.size), years).predict(2).mean
    assert out["mean"].to_numpy() == pytest.approx(expected)
    with pytest.raises(Exception, match=r"2011\.\.2030"):
        model.predict(pd.DataFrame({"year": [2031]}))
    with pytest.raises(Exception, match=r"2011\.\.2030"):
        model.predict(pd.DataFrame({"year": [2010]}))


def test_rollback_without_history_is_refused(client) -> None:
    years = np.arange(1950, 2011)
    v1 = _register(client, NaiveForecaster().fit(np.ones(years.size), years), "k1", "naive")
    tracking.move_alias(client, SID, "champion", v1.version, reason="first")
    with pytest.raises(ValueError, match="no previous version"):
        tracking.rollback_alias(client, SID)
    assert str(tracking.alias_version(client, SID, "champion").version) == str(v1.version)
