"""The scorecard wired in: a backfill over a few as-of years, scored against the vintage's actuals.

The expected errors are computed here from the published CSV files and the source CSV itself,
not through :mod:`pipeline.scorecard`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from pipeline import cli, ingest, layout, tasks, track_record, tracking
from pipeline.candidates import NewestFamilyChampion
from pipeline.config import Settings
from pipeline.core import ForecastSpec
from pipeline.models.baselines import DriftForecaster, MeanForecaster, NaiveForecaster
from pipeline.payloads import RunTrigger

AS_OF_YEARS = (2008, 2010, 2012)


def _lineup(settings: Settings) -> tasks.Lineup:
    return tasks.Lineup(
        candidates={"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster()},
        select=NewestFamilyChampion(champion="drift", always_register=("drift", "naive")),
        spec=ForecastSpec(horizon_end=settings.horizon_end),
    )


@pytest.fixture
def backfilled(tmp_path: Path, small_owid: Path) -> tuple[Settings, dict[int, str]]:
    settings = Settings(
        home=tmp_path / "home", store_uri=(tmp_path / "store").as_uri(), mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"
    )
    ingest.ingest(settings, tasks.open_store(settings), str(small_owid))
    run_ids = {}
    for year in AS_OF_YEARS:
        trigger = RunTrigger(run_type="backfill", series="Canada:co2", as_of_year=year)
        [(trained, _)] = tasks.forecast_all(settings, trigger, _lineup(settings))
        run_ids[year] = trained.run_id
    return settings, run_ids


def _source_actuals(source: Path, entity: str, column: str) -> dict[int, float]:
    with source.open() as handle:
        return {int(row["year"]): float(row[column]) for row in csv.DictReader(handle) if row["country"] == entity and row[column]}


def test_backfill_scorecard_has_the_independently_computed_errors(backfilled, small_owid: Path) -> None:
    settings, run_ids = backfilled
    store = tasks.open_store(settings)
    actual = _source_actuals(small_owid, "Canada", "co2")
    latest_year = max(actual)

    expected = []
    for key in store.list(layout.series_forecasts("canada.co2")):
        if not key.endswith("manifest.json"):
            continue
        manifest = json.loads(store.read_bytes(key))
        csv_key = next(f["key"] for f in manifest["files"] if f["name"] == "forecast.csv")
        for row in csv.DictReader(io.StringIO(store.read_bytes(csv_key).decode())):
            year, as_of = int(row["year"]), int(row["as_of_year"])
            if year > latest_year:
                continue
            error = actual[year] - float(row["mean"])
            hit = float(row["lo_95"]) <= actual[year] <= float(row["hi_95"])
            expected.append((as_of, year, year - as_of, error, hit, abs(actual[year] - actual[as_of])))
    expected.sort()
    # as of 2008: 2009..2014 (6 years), 2010: 4, 2012: 2
    assert len(expected) == sum(latest_year - year for year in AS_OF_YEARS) == 12

    card = pd.read_parquet(io.BytesIO(store.read_bytes(layout.scorecard("canada.co2"))))
    columns = ["as_of_year", "year", "horizon", "error", "hit_95", "naive_abs_error"]
    got = sorted(card[columns].itertuples(index=False, name=None))
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    assert [g[3] for g in got] == pytest.approx([e[3] for e in expected], rel=1e-9, abs=1e-9)
    assert [bool(g[4]) for g in got] == [e[4] for e in expected]
    assert [g[5] for g in got] == pytest.approx([e[5] for e in expected], rel=1e-9)
    assert set(card["family"]) == {"drift"} and set(card["scored_vintage"]) == {tasks.latest_vintage(settings)["vintage"]}

    # The summary is on the newest series run in MLflow: drift's one-year-ahead MAE over the three forecasts.
    h1 = [abs(e[3]) for e in expected if e[2] == 1]
    metrics = mlflow.get_run(run_ids[AS_OF_YEARS[-1]]).data.metrics
    assert metrics["scorecard.drift.h1.mae"] == pytest.approx(sum(h1) / len(h1))
    assert metrics["scorecard.drift.h1.n"] == 3


def test_rescoring_is_idempotent_and_the_cli_prints_the_table(
    backfilled, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, run_ids = backfilled
    store = tasks.open_store(settings)
    before = store.read_bytes(layout.scorecard("canada.co2"))
    plan = tasks.plan_run(settings, RunTrigger(series="Canada:co2", as_of_year=AS_OF_YEARS[-1]), _lineup(settings))
    client = mlflow.MlflowClient(settings.resolved_tracking_uri)
    history = len(client.get_metric_history(run_ids[AS_OF_YEARS[-1]], "scorecard.drift.h1.mae"))
    result = tasks.score_series(settings, plan, plan.series[0], run_ids[AS_OF_YEARS[-1]])
    assert not result.written and store.read_bytes(layout.scorecard("canada.co2")) == before
    assert len(client.get_metric_history(run_ids[AS_OF_YEARS[-1]], "scorecard.drift.h1.mae")) == history

    monkeypatch.setenv("CO2CAST_HOME", str(settings.home))
    monkeypatch.setenv("CO2CAST_STORE_URI", settings.resolved_store_uri)
    assert cli.main(["scorecard", "canada.co2", "--rows"]) == 0
    out = capsys.readouterr().out
    assert "relative_mae" in out and "12 scored years from 3 forecasts" in out
    assert cli.main(["scorecard", "world.co2"]) == 1


def test_a_tampered_forecast_is_not_scored(backfilled) -> None:
    settings, _ = backfilled
    store = tasks.open_store(settings)
    first = next(k for k in store.list(layout.series_forecasts("canada.co2", AS_OF_YEARS[0])) if k.endswith("forecast.parquet"))
    store.write_bytes(first, store.read_bytes(first) + b"x")
    actuals = track_record.actuals_of(ingest.read_curated(store, tasks.latest_vintage(settings)["vintage"]), "Canada", "co2")
    result = track_record.score_and_write(store, "canada.co2", actuals, "v")
    assert result.skipped == (first.rsplit("/", 1)[0] + "/manifest.json",)
    assert sorted(set(track_record.read_scorecard(store, "canada.co2")["as_of_year"])) == list(AS_OF_YEARS[1:])


def _manifests(store, as_of_year: int | None = None) -> list[str]:
    return [k for k in store.list(layout.series_forecasts("canada.co2", as_of_year)) if k.endswith("/manifest.json")]


@pytest.mark.parametrize("damage", [b"[]", b'{"key": 1}', b"{not json"])
def test_a_damaged_old_manifest_is_left_out_of_the_history_not_a_crash(backfilled, damage: bytes) -> None:
    """An old forecast's manifest (not the served one) damaged: the next run publishes and scores, listings skip it, rollback says so."""
    settings, _ = backfilled
    store = tasks.open_store(settings)
    [old] = _manifests(store, AS_OF_YEARS[0])
    store.write_bytes(old, damage)
    lines: list[str] = []
    [(_, published)] = tasks.forecast_all(settings, RunTrigger(series="Canada:co2"), _lineup(settings), progress=lines.append)
    assert published.served and published.scorecard_problem is None, lines
    assert "FAILED" not in "\n".join(lines) and "scorecard not updated" not in "\n".join(lines)
    card = track_record.read_scorecard(store, "canada.co2")
    assert sorted(set(card["as_of_year"])) == list(AS_OF_YEARS[1:])  # the damaged one is not scored
    assert track_record.published_tables(store, "canada.co2")[1] == [old]
    listed = tasks.forecasts_as_of(settings, "canada.co2", AS_OF_YEARS[0])
    assert listed and all(row["manifest"] == "" for row in listed)  # its version is listed, with no forecast

    # The version a rollback would serve again published only a damaged manifest: refused, saying so.
    client = mlflow.MlflowClient(settings.resolved_tracking_uri)
    current = client.get_model_version_by_alias("co2cast.canada.co2", "champion")
    target = tracking.previous_version(current, "champion")
    theirs = [k for k in _manifests(store) if k != old and json.loads(store.read_bytes(k)).get("model_version") == target]
    assert theirs, "precondition: the previous champion published a forecast"
    for key in theirs:
        store.write_bytes(key, damage)
    pointer = store.read_bytes(layout.forecast_latest("canada.co2"))
    with pytest.raises(tracking.RegistryError, match=r"damaged and cannot be served again.*restore them from a backup") as refused:
        tasks.rollback(settings, "canada.co2")
    assert "\n" not in str(refused.value) and f"@champion stays v{current.version}" in str(refused.value)
    assert store.read_bytes(layout.forecast_latest("canada.co2")) == pointer
    assert client.get_model_version_by_alias("co2cast.canada.co2", "champion").version == current.version


def test_a_scoring_failure_after_the_publish_is_reported_as_published_and_a_rerun_scores(
    backfilled, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _ = backfilled
    store = tasks.open_store(settings)
    store.delete(layout.scorecard("canada.co2"))

    def failing(*args, **kwargs):
        raise RuntimeError("scoring broke")

    monkeypatch.setattr(track_record, "score_and_write", failing)
    lines: list[str] = []
    [(trained, published)] = tasks.forecast_all(settings, RunTrigger(series="Canada:co2"), _lineup(settings), progress=lines.append)
    assert published.served and store.read_json(layout.forecast_latest("canada.co2"))["manifest"] == published.manifest
    assert lines[-1].endswith("; scorecard not updated: RuntimeError: scoring broke (a rerun scores it again)"), lines
    assert f"published {published.uri}" in lines[-1]
    assert track_record.read_scorecard(store, "canada.co2") is None

    monkeypatch.undo()
    [(again, republished)] = tasks.forecast_all(settings, RunTrigger(series="Canada:co2"), _lineup(settings))
    assert again.run_key == trained.run_key and republished.scorecard_problem is None
    card = track_record.read_scorecard(store, "canada.co2")
    assert card is not None and len(card) == 12


def test_a_rerun_leaves_an_empty_scorecard_of_its_vintage_alone(backfilled, monkeypatch: pytest.MonkeyPatch) -> None:
    """No actual yet for any forecast is the usual empty scorecard: a rerun's cheap path does not score it again."""
    settings, _ = backfilled
    store = tasks.open_store(settings)
    [(trained, _)] = tasks.forecast_all(settings, RunTrigger(series="Canada:co2"), _lineup(settings))
    card = track_record.read_scorecard(store, "canada.co2")
    assert card is not None and len(card), "precondition: the backfill scored earlier forecasts"
    store.write_bytes(layout.scorecard("canada.co2"), track_record.scorecard_bytes(card.iloc[0:0]))

    def failing(*args, **kwargs):
        raise RuntimeError("scored again")

    monkeypatch.setattr(track_record, "score_and_write", failing)
    [(again, published)] = tasks.forecast_all(settings, RunTrigger(series="Canada:co2"), _lineup(settings))
    assert again.run_key == trained.run_key and published.scorecard_problem is None
    store.delete(layout.scorecard("canada.co2"))  # a missing one is scored again
    [(_, published)] = tasks.forecast_all(settings, RunTrigger(series="Canada:co2"), _lineup(settings))
    assert published.scorecard_problem == "RuntimeError: scored again"
