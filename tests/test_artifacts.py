"""Verified model artefacts on a real MLflow SQLite store: no code in the artefact, tampering refused."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from pipeline.artifacts import IntegrityError, load_verified, log_forecaster, tree_digest, verify_tree
from pipeline.models.baselines import DriftForecaster


@pytest.fixture
def logged(tmp_path: Path) -> tuple[str, dict[str, str], Path, DriftForecaster]:
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.MlflowClient(uri).create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    years = np.arange(1990, 2015)
    model = DriftForecaster().fit(np.linspace(5.0, 9.0, years.size) + np.sin(years), years)
    with mlflow.start_run(experiment_id=experiment):
        info, digest = log_forecaster(model, horizon_end=2030)
    stored = Path(unquote(urlparse(mlflow.get_logged_model(info.model_id).artifact_location).path))
    return info.model_uri, digest, stored, model


def test_the_artefact_holds_data_and_no_code(logged: tuple[str, dict[str, str], Path, DriftForecaster]) -> None:
    _, digest, stored, _ = logged
    assert tree_digest(stored) == digest
    assert not [name for name in digest if name.endswith((".py", ".pkl", ".pickle", ".cloudpickle"))]
    assert any(name.endswith("model.json") for name in digest) and any(name.endswith("arrays.npz") for name in digest)
    assert "pipeline.pyfunc_loader" in (stored / "MLmodel").read_text()


def test_verified_load_forecasts_as_the_model_without_unpickling(
    logged: tuple[str, dict[str, str], Path, DriftForecaster], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    uri, digest, _, model = logged

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading a co2cast model must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    served = load_verified(uri, json.dumps(digest))
    frame = served.predict(pd.DataFrame({"year": [2015, 2016, 2020]}))
    expected = model.predict(6).to_frame()
    expected = expected[expected["year"].isin([2015, 2016, 2020])].reset_index(drop=True)
    pd.testing.assert_frame_equal(frame, expected)
    with pytest.raises(Exception, match=r"2015\.\.2030"):
        served.predict(pd.DataFrame({"year": [2031]}))


def test_an_edited_number_is_refused_naming_the_file(logged: tuple[str, dict[str, str], Path, DriftForecaster]) -> None:
    uri, digest, stored, _ = logged
    model_json = next(stored.rglob("model.json"))
    document = json.loads(model_json.read_text())
    document["state"] = {**document.get("state", {}), "tampered": 1}
    model_json.write_text(json.dumps(document))
    with pytest.raises(IntegrityError, match=r"model\.json does not match"):
        load_verified(uri, digest, what="co2cast.x v1")


def test_added_code_or_missing_files_are_refused(logged: tuple[str, dict[str, str], Path, DriftForecaster]) -> None:
    uri, digest, stored, _ = logged
    (stored / "evil.py").write_text("raise SystemExit('ran code from the artefact')\n")
    with pytest.raises(IntegrityError, match=r"unexpected file evil\.py"):
        load_verified(uri, digest)
    (stored / "evil.py").unlink()
    next(stored.rglob("arrays.npz")).unlink()
    with pytest.raises(IntegrityError, match=r"arrays\.npz is missing"):
        load_verified(uri, digest)


def test_a_model_without_a_recorded_digest_is_not_loaded(logged: tuple[str, dict[str, str], Path, DriftForecaster]) -> None:
    uri, _, _, _ = logged
    with pytest.raises(IntegrityError, match="no artefact digest"):
        load_verified(uri, None)


def test_verify_tree_accepts_exactly_the_recorded_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.json").write_text("{}")
    digest = tree_digest(tmp_path)
    verify_tree(tmp_path, digest, "t")
    (tmp_path / "a" / "x.json").write_text("{ }")
    with pytest.raises(IntegrityError, match=r"a/x\.json does not match"):
        verify_tree(tmp_path, digest, "t")
