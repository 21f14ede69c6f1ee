"""End to end: `co2_ingest` then `co2_forecast` under `airflow dags test`, local store and S3.

Checks what was published and registered: manifest hashes match the files, years run to 2050,
`@champion` exists and loads without unpickling anything, and a rerun of the same run key adds
no model version and changes no file.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import pandas as pd
import pytest

from pipeline.artifacts import load_registered
from tests.conftest import run_dag

pytestmark = pytest.mark.e2e

SERIES = ("canada.co2_per_capita", "world.co2")


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _versions(tracking_uri: str) -> dict[str, list[str]]:
    client = _client(tracking_uri)
    return {sid: sorted(str(v.version) for v in client.search_model_versions(f"name = 'co2cast.{sid}'")) for sid in SERIES}


def test_forecast_dag_registers_and_publishes(dag_backend, airflow_home: Path, owid_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env, store = dag_backend
    ingest = run_dag(airflow_home, "co2_ingest", {**env, "CO2CAST_SOURCE": str(owid_csv)})
    assert ingest.returncode == 0, ingest.stdout[-3000:] + ingest.stderr[-3000:]
    first = run_dag(airflow_home, "co2_forecast", env)
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-3000:]

    for sid in SERIES:
        pointer = store.read_json(f"forecasts/{sid}/latest.json")
        manifest = store.read_json(pointer["manifest"])
        assert manifest["as_of_year"] == 2014
        # Any family may be champion: the invariant is that @champion is the published version.
        champion = _client(env["MLFLOW_TRACKING_URI"]).get_model_version_by_alias(f"co2cast.{sid}", "champion")
        assert str(champion.version) == str(manifest["model_version"]) == str(pointer["model_version"])
        assert champion.tags["co2cast.family"] == manifest["model_family"] and champion.tags["co2cast.as_of_year"] == "2014"
        assert manifest["key"].startswith(f"forecasts/{sid}/asof=2014/{manifest['run_key']}/")
        assert {"forecast.csv", "forecast.parquet"} <= {entry["name"] for entry in manifest["files"]}
        for entry in manifest["files"]:
            data = store.read_bytes(entry["key"])
            assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["size"]
        table = pd.read_parquet(io.BytesIO(store.read_bytes(f"{pointer['manifest'].rsplit('/', 1)[0]}/forecast.parquet")))
        assert table["year"].tolist() == list(range(2015, 2051))
        assert (table["lo_95"] <= table["lo_80"]).all() and (table["lo_80"] <= table["mean"]).all()
        assert (table["mean"] <= table["hi_80"]).all() and (table["hi_80"] <= table["hi_95"]).all()
        assert set(table["series_id"]) == {sid}

    # The champion loads from the registry and forecasts any range up to 2050, unpickling nothing.
    import mlflow

    tracking_uri = env["MLFLOW_TRACKING_URI"]
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    import cloudpickle

    local = Path(mlflow.artifacts.download_artifacts("models:/co2cast.canada.co2_per_capita@champion"))
    names = [p.name for p in local.rglob("*") if p.is_file()]
    assert "model.json" in names and "arrays.npz" in names
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".cloudpickle"))], names
    assert "python_model.pkl" not in (local / "MLmodel").read_text()
    for module in (pickle, cloudpickle):
        monkeypatch.setattr(module, "load", lambda *a, **k: pytest.fail("pickle load called while loading a model"))
        monkeypatch.setattr(module, "loads", lambda *a, **k: pytest.fail("pickle loads called while loading a model"))
    champion = load_registered("co2cast.canada.co2_per_capita", "champion")
    part = champion.predict(pd.DataFrame({"year": [2030, 2031, 2032]}))
    assert part["year"].tolist() == [2030, 2031, 2032]
    published = store.read_json("forecasts/canada.co2_per_capita/latest.json")
    table = pd.read_csv(io.BytesIO(store.read_bytes(published["manifest"].replace("manifest.json", "forecast.csv"))))
    expected = table.set_index("year").loc[[2030, 2031, 2032], "mean"].to_numpy()
    assert part["mean"].to_numpy() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(Exception, match=r"2015\.\.2050"):
        champion.predict(pd.DataFrame({"year": [2051]}))
    lstm = load_registered("co2cast.canada.co2_per_capita", "lstm")
    assert len(lstm.predict(pd.DataFrame({"year": [2015]}))) == 1

    # A rerun of the same key: no new version, no file rewritten.
    versions = _versions(tracking_uri)
    files = {k: store.read_bytes(k) for k in store.list("forecasts/")}
    again = run_dag(airflow_home, "co2_forecast", env)
    assert again.returncode == 0, again.stdout[-4000:]
    assert _versions(tracking_uri) == versions
    assert {k: store.read_bytes(k) for k in store.list("forecasts/")} == files

    # An older as-of year with one series that cannot be modelled (USSR's data end in 1958):
    # World is still published for 2010, latest.json keeps pointing at 2014, and the run fails.
    mixed = run_dag(airflow_home, "co2_forecast", env, conf='{"as_of_year": 2010, "series": "World:co2,USSR:co2"}')
    assert mixed.returncode != 0
    assert "ussr.co2: NOT published" in mixed.stdout + mixed.stderr
    assert "its data end in 1958, before the as-of year 2010" in mixed.stdout + mixed.stderr
    assert [k for k in store.list("forecasts/world.co2/asof=2010/") if k.endswith("manifest.json")]
    assert store.read_json("forecasts/world.co2/latest.json")["as_of_year"] == 2014
    assert not store.list("forecasts/ussr.co2/")
