"""The task layer against the real adapters: MLflow's SQLite store and registry, the object store
(local and S3 over HTTP), with a cheap line-up so a series trains in seconds.

Also the Airflow boundary's error mapping: permanent → fail without retry, transient → retry.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import socket
from pathlib import Path

import mlflow
import numpy as np
import pytest

from pipeline import ingest, layout, runner, tasks, tracking
from pipeline.candidates import NewestFamilyChampion
from pipeline.config import Settings
from pipeline.core import ForecastSpec
from pipeline.errors import PermanentError, TransientError
from pipeline.models.baselines import DriftForecaster, MeanForecaster, NaiveForecaster
from pipeline.payloads import RunTrigger, TrainedSeries
from pipeline.series import SeriesError
from pipeline.store import S3Store, StoreUnavailable, open_store


def _lineup(settings: Settings, champion: str = "drift") -> tasks.Lineup:
    return tasks.Lineup(
        candidates={"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster()},
        select=NewestFamilyChampion(champion=champion, always_register=("drift", "naive")),
        spec=ForecastSpec(horizon_end=settings.horizon_end),
    )


@pytest.fixture
def settings(curated_settings: Settings) -> Settings:
    return curated_settings


def _versions(client, sid: str) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{tracking.registered_name(sid)}'"))


def test_train_publish_and_rerun_create_nothing_new(settings: Settings) -> None:
    lineup = _lineup(settings)
    plan = tasks.plan_run(settings, RunTrigger(series="World:co2"), lineup)
    item = plan.series[0]
    trained = tasks.train_series(settings, plan.to_xcom(), item.to_xcom(), {"dag_id": "d", "run_id": "r"}, lineup=lineup)
    assert trained.champion_family == "drift" and set(trained.versions) == {"drift", "naive"}
    assert set(trained.scores) == {"naive", "drift", "mean"}
    assert trained.best_backtest_family == min(trained.scores, key=lambda name: trained.scores[name]["mase"])

    client = tracking.configure(settings)
    champion = tracking.alias_version(client, item.series_id, "champion")
    assert str(champion.version) == trained.versions["drift"] == trained.champion_version
    assert json.loads(champion.tags[tracking.alias_tag("champion")])["reason"] == "newest drift: no promotion gate yet"
    run = mlflow.get_run(trained.run_id)
    assert run.data.tags[tracking.COMPLETE_TAG] == "true" and run.data.tags["airflow.run_id"] == "r"
    assert run.data.params["series_id"] == "world.co2" and "implied_d" in run.data.metrics
    children = client.search_runs([run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{trained.run_id}'")
    assert sorted(c.data.tags[tracking.FAMILY_TAG] for c in children) == ["drift", "mean", "naive"]
    assert all(c.data.metrics["backtest_mase"] > 0 for c in children)
    # The run's description says the interval metrics are of the bands before calibration.
    assert all("before calibration" in c.data.tags.get("mlflow.note.content", "") for c in children)
    assert json.loads(tracking.read_artifact(trained.run_id, tracking.SUMMARY_ARTIFACT)) == trained.to_xcom()
    diagnostics = json.loads(tracking.read_artifact(trained.run_id, tracking.DIAGNOSTICS_ARTIFACT))
    assert {"series", "stationarity", "plots"} <= set(diagnostics)

    published = tasks.publish_series(settings, plan, trained.to_xcom(), lineup=lineup)
    store = tasks.open_store(settings)
    assert published.first_year == plan.as_of_year + 1 and published.last_year == settings.horizon_end
    manifest = store.read_json(published.manifest)
    assert published.uri == store.uri(published.manifest)
    assert manifest["model_family"] == "drift" and manifest["model_version"] == trained.champion_version
    # The published mean is the registered drift model's forecast (worked out from the data here).
    tidy = ingest.read_curated(store, plan.vintage)
    world = tidy[(tidy["entity"] == "World") & (tidy["variable"] == "co2")].sort_values("year")["value"].to_numpy()
    table = tasks.show_forecast(settings, "world.co2")[1]
    slope = (world[-1] - world[0]) / (world.size - 1)
    np.testing.assert_allclose(table["mean"], world[-1] + slope * np.arange(1, len(table) + 1), rtol=1e-9)

    versions = _versions(client, item.series_id)
    files = {k: store.read_bytes(k) for k in store.list("forecasts/")}
    again = tasks.train_series(settings, plan, item, lineup=lineup)
    assert again == trained
    assert tasks.publish_series(settings, plan, again, lineup=lineup) == published
    assert _versions(client, item.series_id) == versions
    assert {k: store.read_bytes(k) for k in store.list("forecasts/")} == files
    lines = tasks.summarize_run(settings, plan)
    assert [line.published for line in lines] == [True]


def test_only_series_with_work_left_are_mapped(settings: Settings) -> None:
    lineup = _lineup(settings)
    store = tasks.open_store(settings)

    def pending(plan: object) -> list[str]:
        return [item["series_id"] for item in tasks.pending_series(settings, plan)]

    def done(plan: object, series_id: str) -> None:  # what the DAG's mapped task does
        item = next(i for i in plan.series if i.series_id == series_id)
        published = tasks.forecast_series(settings, plan.to_xcom(), item.to_xcom(), {"dag_id": "d", "run_id": "r"}, lineup=lineup)
        manifest = store.read_json(published.manifest)  # trained, then published, with the task's Airflow ids
        assert manifest["series_id"] == series_id and manifest["airflow"] == {"dag_id": "d", "run_id": "r"}

    plan = tasks.plan_run(settings, RunTrigger(series="World:co2,Canada:co2"), lineup)
    assert pending(plan) == ["world.co2", "canada.co2"]  # nothing published yet
    done(plan, "world.co2")
    assert pending(plan) == ["canada.co2"]
    # A published file that no longer matches its manifest: the series has work again.
    manifest = store.read_json(store.read_json(layout.forecast_latest("world.co2"))["manifest"])
    csv = next(f["key"] for f in manifest["files"] if f["name"] == "forecast.csv")
    original = store.read_bytes(csv)
    store.write_bytes(csv, original + b"\n")
    assert pending(plan) == ["world.co2", "canada.co2"]
    store.write_bytes(csv, original)
    # A published forecast that latest.json does not serve (pointer lost): work again.
    latest = store.read_json(layout.forecast_latest("world.co2"))
    store.delete(layout.forecast_latest("world.co2"))
    assert pending(plan) == ["world.co2", "canada.co2"]
    store.write_json(layout.forecast_latest("world.co2"), latest)
    # A backfill's forecast is settled once published, though latest.json serves the newer one.
    older = tasks.plan_run(settings, RunTrigger(series="World:co2", as_of_year=2010), lineup)
    assert pending(older) == ["world.co2"]
    done(older, "world.co2")
    assert pending(older) == [] and pending(plan) == ["canada.co2"]
    assert store.read_json(layout.forecast_latest("world.co2")) == latest


def test_a_plan_from_another_configuration_is_refused(settings: Settings) -> None:
    plan = tasks.plan_run(settings, RunTrigger(series="World:co2"), _lineup(settings))
    with pytest.raises(tasks.ConfigMismatch, match="plan the run again"):
        tasks.train_series(settings, plan, plan.series[0], lineup=_lineup(settings, champion="naive"))


def test_an_unpublished_series_fails_the_summary(settings: Settings) -> None:
    # France's flaring CO2 misses 1983-1989: the 21 years after the gap are fewer than 30.
    plan = tasks.plan_run(settings, RunTrigger(series="World:co2,France:flaring_co2", as_of_year=2010), _lineup(settings))
    with pytest.raises(SeriesError, match=r"only 21 yearly values \(1990-2010\) after the gap in 1983-1989"):
        tasks.train_series(settings, plan, plan.series[1], lineup=_lineup(settings))
    with pytest.raises(tasks.RunIncomplete, match=r"not published: world\.co2, france\.flaring_co2"):
        tasks.summarize_run(settings, plan)


def test_what_a_gap_left_out_reaches_mlflow_the_manifest_and_the_summary(settings: Settings) -> None:
    lineup = _lineup(settings)
    plan = tasks.plan_run(settings, RunTrigger(series="France:co2", as_of_year=2014), lineup)
    store = tasks.open_store(settings)
    tidy = ingest.read_curated(store, plan.vintage)
    france = tidy[(tidy["entity"] == "France") & (tidy["variable"] == "co2")].dropna(subset=["value"])
    years = france["year"].sort_values().to_numpy()
    last_gap = int(years[np.flatnonzero(np.diff(years) != 1)[-1] + 1]) - 1  # the last missing year, found here
    expected = {
        "first_year": int(years[0]),
        "last_year": int(years[years <= last_gap].max()),
        "n_values": int((years <= last_gap).sum()),
        "gap_last": last_gap,
    }

    trained = tasks.train_series(settings, plan, plan.series[0], lineup=lineup)
    assert trained.left_out is not None and {k: trained.left_out[k] for k in expected} == expected
    text = trained.left_out["text"]
    assert text.startswith(f"left out {expected['first_year']}-{expected['last_year']} ({expected['n_values']} values) before a gap in ")
    run = mlflow.get_run(trained.run_id)
    assert run.data.params["left_out"] == text
    assert run.data.params["first_year"] == str(last_gap + 1) and run.data.params["n_points"] == str(2014 - last_gap)

    published = tasks.publish_series(settings, plan, trained, lineup=lineup)
    manifest = store.read_json(published.manifest)
    assert manifest["left_out"] == trained.left_out and manifest["trained"]["left_out"] == trained.left_out
    [line] = tasks.run_summary(settings, plan)
    assert f"modelled {last_gap + 1}-2014; {text}" in line.text

    # A series without a gap says so in MLflow and carries nothing in its manifest.
    world_plan = tasks.plan_run(settings, RunTrigger(series="World:co2", as_of_year=2014), lineup)
    world = tasks.train_series(settings, world_plan, world_plan.series[0], lineup=lineup)
    assert world.left_out is None and mlflow.get_run(world.run_id).data.params["left_out"] == "none"
    world_manifest = store.read_json(tasks.publish_series(settings, world_plan, world, lineup=lineup).manifest)
    assert world_manifest["left_out"] is None
    assert "left out" not in tasks.run_summary(settings, world_plan)[0].text


# -- the Airflow boundary ----------------------------------------------------------------------


def test_runner_maps_errors_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from pipeline.sources import SourceError

    monkeypatch.setenv("CO2CAST_HOME", str(tmp_path))

    def permanent(settings: Settings) -> None:
        raise SeriesError("no series 'Atlantis:co2'")

    def transient(settings: Settings) -> None:
        raise StoreUnavailable("cannot read s3://b/k: the store answered 503; retry later")

    def network(settings: Settings) -> None:
        raise SourceError("cannot reach https://example.org: timed out", transient=True)

    def fine(settings: Settings, plan: dict) -> TrainedSeries:
        return TrainedSeries.of(plan)

    # Airflow's logging setup replaces the root handlers (and caplog's): listen on the module's logger itself.
    records = logging.handlers.BufferingHandler(10)
    monkeypatch.setattr(logging.getLogger("pipeline.runner"), "handlers", [records])
    monkeypatch.setattr(logging.getLogger("pipeline.runner"), "level", logging.INFO)
    with pytest.raises(AirflowFailException, match="Atlantis") as failed:
        runner.call(permanent)
    # The task log's error line is the message; the traceback Airflow prints is not chained to co2cast's own.
    assert [(r.levelno, r.getMessage()) for r in records.buffer] == [(logging.ERROR, "no series 'Atlantis:co2'")]
    assert failed.value.__cause__ is None and failed.value.__suppress_context__
    records.buffer.clear()
    # A transient failure is retried (any exception but AirflowFailException), logged in one line too.
    with pytest.raises(AirflowException, match="answered 503") as retried:
        runner.call(transient)
    assert not isinstance(retried.value, AirflowFailException) and retried.value.__cause__ is None
    with pytest.raises(AirflowException, match="timed out") as retried:
        runner.call(network)
    assert not isinstance(retried.value, AirflowFailException)
    assert [(r.levelno, r.getMessage()) for r in records.buffer] == [
        (logging.ERROR, "cannot read s3://b/k: the store answered 503; retry later (transient: Airflow retries this task)"),
        (logging.ERROR, "cannot reach https://example.org: timed out (transient: Airflow retries this task)"),
    ]
    payload = {
        "series_id": "s", "run_key": "k", "run_id": "r", "model_name": "m", "champion_family": "arima", "champion_version": "1",
        "versions": {"arima": "1"}, "best_backtest_family": "arima", "selection_metric": "mase", "scores": {"arima": {"mase": 1.0}},
        "as_of_year": 2014,
        "vintage": "v", "revision": None, "left_out": None, "provisional": False, "pinned": False, "timings": {},
    }  # fmt: skip
    assert runner.call(fine, payload) == payload
    assert issubclass(StoreUnavailable, TransientError) and issubclass(SeriesError, PermanentError)


def test_summarize_after_a_failed_plan_names_the_plan_not_a_payload(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``summarize`` (trigger rule all_done) runs after ``resolve_run`` failed and gets no plan from XCom."""
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("CO2CAST_HOME", str(tmp_path))
    with pytest.raises(AirflowFailException) as raised:
        runner.call(tasks.summarize_run, None)
    message = str(raised.value)
    assert "resolve_run failed" in message and "payload" not in message and "\n" not in message


def test_ingest_steps_cross_xcom_as_plain_dicts_and_refuse_a_malformed_one_by_field(tmp_path: Path, small_owid: Path) -> None:
    """The ingest half's payloads, as the DAG passes them (JSON through XCom), and each step's refusal of a broken one:
    a PayloadError (permanent: not retried) that names the field, not a KeyError three calls later."""
    from pipeline.payloads import PayloadError

    settings = Settings(home=tmp_path / "home", store_uri=(tmp_path / "store").as_uri(), source=str(small_owid))

    def wire(payload: object) -> dict:
        return json.loads(json.dumps(runner.to_xcom(payload)))  # what XCom stores

    fetched = wire(tasks.fetch_source(settings))
    snapshot = wire(tasks.snapshot_raw(settings, fetched))
    validated = wire(tasks.validate_raw(settings, snapshot))
    for step, payload, field in [
        (tasks.snapshot_raw, fetched, "sha256"),
        (tasks.validate_raw, snapshot, "file_name"),
        (tasks.curate_vintage, validated, "gated_against"),
    ]:
        with pytest.raises(PayloadError, match=field) as raised:
            step(settings, {k: v for k, v in payload.items() if k != field})
        assert isinstance(raised.value, PermanentError) and "\n" not in str(raised.value)
    with pytest.raises(PayloadError, match="vintage"):
        tasks.validate_raw(settings, {**snapshot, "vintage": "../../etc"})
    assert tasks.latest_vintage(settings) is None, "a refused payload curates nothing"
    pointer = tasks.curate_vintage(settings, validated)
    assert pointer["vintage"] == fetched["vintage"] == tasks.latest_vintage(settings)["vintage"]


def test_a_task_with_an_invalid_setting_fails_once_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A setting no retry can mend fails the task without retrying it, naming the variable."""
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("CO2CAST_HOME", str(tmp_path))
    monkeypatch.setenv("CO2CAST_LOCK_STALE_SECONDS", "-1")
    ran = []
    with pytest.raises(AirflowFailException) as raised:
        runner.call(lambda settings: ran.append(settings))
    assert ran == [] and "\n" not in str(raised.value)
    assert str(raised.value).startswith("invalid setting: CO2CAST_LOCK_STALE_SECONDS='-1': input should be greater than 0 (age after which")


@pytest.mark.parametrize("named", [5, ["a"], {"v": 1}, "../../etc"])
def test_an_asset_event_created_by_hand_naming_no_vintage_id_fails_the_plan_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, named: object
) -> None:
    """The UI's "Create Asset Event" takes any extra; a vintage that is no string crashed the trigger (retried, a traceback)."""
    from types import SimpleNamespace

    import airflow.sdk
    from airflow.sdk import Asset
    from airflow.sdk.exceptions import AirflowFailException

    curated = Asset("co2_emissions_curated")
    context = {
        "params": {"as_of_year": None, "series": None, "vintage": None},
        "dag_run": SimpleNamespace(run_type="asset_triggered"),
        "logical_date": None,
        "triggering_asset_events": {curated: [SimpleNamespace(extra={"vintage": named})]},
    }
    monkeypatch.setattr(airflow.sdk, "get_current_context", lambda: context)
    monkeypatch.setenv("CO2CAST_HOME", str(tmp_path))
    trigger = runner.trigger(curated)
    with pytest.raises(AirflowFailException) as raised:
        runner.call(tasks.plan_run, trigger)
    message = str(raised.value)
    assert message.startswith("the asset event that triggered this run names vintage ") and "which is not a vintage id" in message
    assert "\n" not in message


def test_s3_network_failure_is_transient(tmp_path: Path) -> None:
    import boto3
    from botocore.config import Config

    from tests.conftest import _free_port

    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{_free_port()}",  # nothing listens there
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    store = S3Store("bucket", client=client)
    with pytest.raises(StoreUnavailable, match="retry later"):
        store.read_bytes("curated/latest.json")
    with pytest.raises(StoreUnavailable):
        store.write_bytes("a/b", b"x")


def test_s3_server_errors_are_transient_and_denials_permanent(s3_bucket: str, s3_endpoint: str) -> None:
    from botocore.exceptions import ClientError

    from pipeline.store import StoreError

    store = open_store(f"s3://{s3_bucket}/p", endpoint_url=s3_endpoint)

    def fail(status: int, code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    assert isinstance(store._failure("read", "k", fail(503, "SlowDown")), StoreUnavailable)
    assert isinstance(store._failure("read", "k", fail(500, "InternalError")), StoreUnavailable)
    denied = store._failure("read", "k", fail(403, "AccessDenied"))
    assert isinstance(denied, StoreError) and not denied.transient
    with pytest.raises(StoreError, match="NoSuchBucket"):
        open_store("s3://no-such-bucket-here/p", endpoint_url=s3_endpoint).write_bytes("k", b"x")


def test_tracking_store_busy_is_transient() -> None:
    with pytest.raises(tracking.TrackingUnavailable, match="retry later"), tracking.transient_errors():
        raise RuntimeError("(sqlite3.OperationalError) database is locked")
    with pytest.raises(KeyError), tracking.transient_errors():
        raise KeyError("a bug keeps its traceback")


def test_runner_reads_the_trigger_from_the_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the DAG no longer parses itself: run type, logical date, params, the asset event's vintage.

    The context is a stand-in with the shapes Airflow gives (the end-to-end tests run the real one).
    """
    import datetime as dt
    from types import SimpleNamespace

    import airflow.sdk
    from airflow.sdk import Asset
    from airflow.utils.types import DagRunType

    curated = Asset("co2_emissions_curated")
    context = {
        "params": {"as_of_year": None, "series": "World:co2", "vintage": None},
        "dag_run": SimpleNamespace(run_type=DagRunType.ASSET_TRIGGERED),
        "logical_date": dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
        "triggering_asset_events": {curated: [SimpleNamespace(extra={"vintage": "old"}), SimpleNamespace(extra={"vintage": "new"})]},
    }
    monkeypatch.setattr(airflow.sdk, "get_current_context", lambda: context)
    trigger = runner.trigger(curated)
    assert trigger == RunTrigger(run_type="asset_triggered", logical_date=context["logical_date"], series="World:co2", asset_vintage="new")
    context["dag_run"] = SimpleNamespace(run_type=DagRunType.BACKFILL_JOB)
    context["triggering_asset_events"] = {}
    backfill = runner.trigger(curated)
    assert backfill.run_type == "backfill" and backfill.asset_vintage is None
    from pipeline.plan import as_of_year_for

    assert as_of_year_for(backfill.run_type, backfill.logical_date, latest_year=2014) == 2014  # 2025 capped at the data
    assert as_of_year_for(backfill.run_type, dt.datetime(2001, 1, 1), latest_year=2014) == 2000


def test_a_wrong_tracking_store_fails_the_listing_once_not_every_mapped_series(settings: Settings) -> None:
    """``list_series`` (tasks.pending_series) opens the tracking store once when any series is left to train.

    With a mistyped MLFLOW_TRACKING_URI every mapped ``forecast_series`` failed alike, 445 failed tasks
    for ``series=all``; with MLflow down each was retried three times. Nothing to train: MLflow is not opened.
    """
    from pipeline.errors import SetupError

    lineup = _lineup(settings)
    plan = tasks.plan_run(settings, RunTrigger(series="World:co2,Canada:co2"), lineup)
    mistyped = settings.model_copy(update={"mlflow_tracking_uri": "htp://localhost:5000"})
    with pytest.raises(SetupError, match=r"^MLFLOW_TRACKING_URI='htp://localhost:5000' cannot be used"):
        tasks.pending_series(mistyped, plan)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    down = settings.model_copy(update={"mlflow_tracking_uri": f"http://127.0.0.1:{closed}"})
    with pytest.raises(TransientError, match="unreachable"):
        tasks.pending_series(down, plan)
    for item in plan.series:  # everything published: nothing to train, so MLflow is not opened
        tasks.forecast_series(settings, plan.to_xcom(), item.to_xcom(), lineup=lineup)
    assert tasks.pending_series(mistyped, plan) == []
