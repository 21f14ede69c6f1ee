"""The champion gate, alias history, rollback and time-consistent aliases against the real adapters.

MLflow's SQLite store and registry and the object store (local and S3 over HTTP), with cheap
line-ups run through the production policy (:class:`pipeline.candidates.ZooSelection`): a
line-up of naive + mean publishes naive, one of naive + drift publishes drift when drift beats
naive on the series (checked here from the run's own scores, not assumed).
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import cli, tasks, tracking
from pipeline.candidates import ZooSelection
from pipeline.config import Settings
from pipeline.core import ForecastSpec
from pipeline.models.base import Forecaster
from pipeline.models.baselines import DriftForecaster, MeanForecaster, NaiveForecaster
from pipeline.models.regression import TrendForecaster
from pipeline.payloads import RunPlan, RunTrigger, TrainedSeries
from pipeline.store import StoreDataError

SERIES = "World:co2"
SID = "world.co2"


def _lineup(settings: Settings, *names: str) -> tasks.Lineup:
    models = {"naive": NaiveForecaster(), "drift": DriftForecaster(), "mean": MeanForecaster()}
    return tasks.Lineup(
        candidates={name: models[name] for name in ("naive", *names)},
        select=ZooSelection(always_register=()),
        spec=ForecastSpec(horizon_end=settings.horizon_end),
    )


@pytest.fixture
def settings(curated_settings: Settings) -> Settings:
    return curated_settings


def _cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("CO2CAST_HOME", str(settings.home))
    monkeypatch.setenv("CO2CAST_STORE_URI", settings.resolved_store_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.resolved_tracking_uri)
    if settings.s3_endpoint_url:
        monkeypatch.setenv("CO2CAST_S3_ENDPOINT_URL", settings.s3_endpoint_url)


def _run(settings: Settings, lineup: tasks.Lineup, as_of_year: int | None = None, series: str = SERIES):
    plan = tasks.plan_run(settings, RunTrigger(series=series, as_of_year=as_of_year), lineup)
    trained = tasks.train_series(settings, plan, plan.series[0], lineup=lineup)
    return trained, tasks.publish_series(settings, plan, trained, lineup=lineup)


def _state(settings: Settings) -> dict:
    client = tracking.configure(settings)
    store = tasks.open_store(settings)
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{tracking.registered_name(SID)}'"))
    aliases = dict(client.get_registered_model(tracking.registered_name(SID)).aliases)
    return {"versions": versions, "aliases": aliases, "latest": store.read_json("forecasts/world.co2/latest.json")}


def _gated_not_published(settings: Settings) -> tuple[TrainedSeries, tasks.Lineup, RunPlan, TrainedSeries]:
    """The mean published and served; then drift's run trained, its gate moved @champion to it, and not yet published.

    Returns the mean's run, drift's lineup and plan, and drift's trained series.
    """
    first, _ = _run(settings, _lineup(settings, "mean"))
    lineup = _lineup(settings, "drift")
    plan = tasks.plan_run(settings, RunTrigger(series=SERIES), lineup)
    trained = tasks.train_series(settings, plan, plan.series[0], lineup=lineup)
    assert trained.champion_version != first.champion_version, "precondition: the gate moved @champion to drift"
    return first, lineup, plan, trained


def _assert_pointer_agrees(settings: Settings) -> None:
    state = _state(settings)
    manifest = tasks.open_store(settings).read_json(state["latest"]["manifest"])
    assert str(state["aliases"]["champion"]) == str(manifest["model_version"]) == str(state["latest"]["model_version"])


def test_worse_challenger_leaves_champion_and_forecast_better_one_moves_both(settings: Settings) -> None:
    first, _ = _run(settings, _lineup(settings, "drift"))
    assert first.scores["drift"]["mase"] < first.scores["naive"]["mase"], "precondition: drift beats naive on World"
    assert first.champion_family == "drift"
    before = _state(settings)
    _, table_before = tasks.show_forecast(settings, SID)

    # naive + mean: the run publishes naive, which is worse than drift on the same windows.
    second, published = _run(settings, _lineup(settings, "mean"))
    after = _state(settings)
    assert after["aliases"]["champion"] == before["aliases"]["champion"] == int(first.champion_version)
    assert second.champion_version == first.champion_version and published.model_version == first.champion_version
    _, table_after = tasks.show_forecast(settings, SID)
    assert table_after[["year", "mean"]].equals(table_before[["year", "mean"]])
    _assert_pointer_agrees(settings)
    stayed = tasks.alias_history(settings, SID)[-1]
    assert stayed["moved"] is False and stayed["challenger_family"] == "naive"
    assert stayed["champion_score"] == pytest.approx(first.scores["drift"]["mase"])  # same windows, same recipe
    assert stayed["challenger_score"] == pytest.approx(second.scores["naive"]["mase"])


def test_the_gate_hands_its_reason_on_without_reading_the_history_again(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """``_decision_reason`` read the alias history the gate had just written, one store read more per training run."""
    from pipeline import publish

    first, _ = _run(settings, _lineup(settings, "mean"))
    events: list[str] = []
    records, append = publish.champion_records, tasks.append_history
    monkeypatch.setattr(publish, "champion_records", lambda *a, **k: events.append("read") or records(*a, **k))
    monkeypatch.setattr(tasks, "append_history", lambda *a, **k: events.append("append") or append(*a, **k))
    lineup = _lineup(settings, "drift")
    plan = tasks.plan_run(settings, RunTrigger(series=SERIES), lineup)
    second = tasks.train_series(settings, plan, plan.series[0], lineup=lineup)
    assert second.champion_version != first.champion_version, "precondition: drift took @champion"
    assert events[-1] == "append", events  # the comparison chart's reason came from the gate itself
    client = tracking.configure(settings)
    assert client.get_run(second.run_id).data.tags[tracking.GATE_TAG] == tasks.alias_history(settings, SID)[-1]["reason"]


def test_the_gate_measures_against_the_policys_benchmark(settings: Settings) -> None:
    # A policy whose benchmark is the mean, not naive: on World's CO2 a linear trend is worse
    # than naive but better than the mean, so it may take @champion from the mean.
    def lineup(default: str, **models: Forecaster) -> tasks.Lineup:
        policy = ZooSelection(always_register=(), benchmark="mean", default=default, margin=1.0, fallback=None)
        return tasks.Lineup(
            candidates={"naive": NaiveForecaster(), "mean": MeanForecaster(), **models},
            select=policy,
            spec=ForecastSpec(horizon_end=settings.horizon_end),
        )

    first, _ = _run(settings, lineup("mean"))
    assert first.champion_family == "mean"
    second, published = _run(settings, lineup("trend", trend=TrendForecaster(degree=1)))
    scores = {name: second.scores[name]["mase"] for name in ("naive", "trend", "mean")}
    assert scores["naive"] < scores["trend"] < scores["mean"], f"precondition on World: {scores}"
    assert second.champion_family == "trend" and published.model_version == second.champion_version
    moved = tasks.alias_history(settings, SID)[-1]
    assert moved["moved"] and moved["naive_score"] == pytest.approx(scores["mean"])  # the benchmark's score
    _assert_pointer_agrees(settings)


def test_better_challenger_moves_champion_and_forecast_rollback_restores(settings: Settings, capsys, monkeypatch) -> None:
    first, _ = _run(settings, _lineup(settings, "mean"))
    assert first.champion_family == "naive"
    _, naive_table = tasks.show_forecast(settings, SID)
    second, published = _run(settings, _lineup(settings, "drift"))
    assert second.scores["drift"]["mase"] < second.scores["naive"]["mase"], "precondition: drift beats naive on World"
    state = _state(settings)
    assert second.champion_family == "drift" and state["aliases"]["champion"] == int(second.champion_version)
    assert published.model_version == second.champion_version != first.champion_version
    _assert_pointer_agrees(settings)
    moved = tasks.alias_history(settings, SID)[-1]
    assert moved["moved"] and moved["from_version"] == first.champion_version and moved["to_version"] == second.champion_version
    assert moved["challenger_score"] < moved["champion_score"] and "beats the champion" in moved["reason"]
    assert len(moved["windows"]) == 5

    _cli_env(monkeypatch, settings)
    assert cli.main(["history", SID]) == 0
    assert "beats the champion" in capsys.readouterr().out

    old, new = tasks.rollback(settings, SID)
    assert (old, new) == (second.champion_version, first.champion_version)
    _assert_pointer_agrees(settings)
    _, table = tasks.show_forecast(settings, SID)
    assert table[["year", "mean"]].equals(naive_table[["year", "mean"]])
    assert "rollback" in tasks.alias_history(settings, SID)[-1]["reason"]

    # The nightly run after the rollback, on the same data: its run key is the one rolled
    # back. It maps no task, and run anyway it moves neither @champion nor latest.json.
    rolled_back, history = _state(settings), tasks.alias_history(settings, SID)
    plan = tasks.plan_run(settings, RunTrigger(series=SERIES), _lineup(settings, "drift"))
    assert plan.series[0].run_key == second.run_key and tasks.pending_series(settings, plan) == []
    again, republished = _run(settings, _lineup(settings, "drift"))
    assert again.champion_version == second.champion_version  # what that run key trained
    assert not republished.served and republished.served_version == first.champion_version
    assert _state(settings) == rolled_back and tasks.alias_history(settings, SID) == history
    _assert_pointer_agrees(settings)
    lines: list[str] = []
    tasks.forecast_all(settings, RunTrigger(series=SERIES), _lineup(settings, "drift"), progress=lines.append)
    expected = f"latest.json serves v{first.champion_version} as of 2014 instead (a rollback, or a newer forecast of the year, "
    assert lines[-1].endswith(expected + "took this one's place): nothing moved"), lines
    assert _state(settings) == rolled_back
    summary = tasks.run_summary(settings, plan)[0].text
    assert summary.endswith(f"not served: latest.json serves v{first.champion_version} as of 2014"), summary


def test_summary_reports_a_champion_moved_outside_co2cast(settings: Settings, capsys, monkeypatch) -> None:
    """Moving @champion by hand in the MLflow UI leaves latest.json behind: ``co2cast summary`` says so."""
    first, _ = _run(settings, _lineup(settings, "mean"))
    second, _ = _run(settings, _lineup(settings, "drift"))
    assert second.champion_version != first.champion_version, "precondition: drift took @champion"
    _cli_env(monkeypatch, settings)
    assert cli.main(["summary"]) == 0
    assert "REGISTRY DISAGREES" not in capsys.readouterr().out
    client = tracking.configure(settings)
    client.set_registered_model_alias(tracking.registered_name(SID), "champion", first.champion_version)  # as the MLflow UI would
    assert cli.main(["summary"]) == 0
    out = capsys.readouterr().out
    assert f"REGISTRY DISAGREES: @champion is v{first.champion_version}, but latest.json serves v{second.champion_version}" in out
    client.delete_registered_model_alias(tracking.registered_name(SID), "champion")
    assert cli.main(["summary"]) == 0
    assert f"@champion is not set, but latest.json serves v{second.champion_version}" in capsys.readouterr().out


def test_a_rollback_to_a_forecast_whose_files_were_changed_is_refused(settings: Settings) -> None:
    """The forecast to serve again must still be what was published: otherwise nothing moves."""
    first, _ = _run(settings, _lineup(settings, "mean"))
    second, _ = _run(settings, _lineup(settings, "drift"))
    assert second.champion_version != first.champion_version, "precondition: drift took @champion"
    store = tasks.open_store(settings)
    manifests = [store.read_json(key) for key in store.list("forecasts/world.co2/") if key.endswith("manifest.json")]
    earlier = next(m for m in manifests if m["model_version"] == first.champion_version)
    table = next(entry["key"] for entry in earlier["files"] if entry["name"] == "forecast.csv")
    store.write_bytes(table, store.read_bytes(table).replace(b"2050", b"2051"))
    before, history = _state(settings), tasks.alias_history(settings, SID)
    with pytest.raises(tracking.RegistryError) as refused:
        tasks.rollback(settings, SID)
    message = str(refused.value)
    assert f"v{first.champion_version}'s forecast" in message and "forecast.csv does not match its sha256" in message
    assert f"@champion stays v{second.champion_version}" in message and "\n" not in message
    assert _state(settings) == before and tasks.alias_history(settings, SID) == history


@pytest.mark.parametrize(
    ("fails_on", "error"),
    [("/latest.json", "outage"), ("/latest.json", "ctrl-c"), ("history/", "outage"), ("history/", "ctrl-c"), ("alias-tag", "ctrl-c")],
)
def test_a_rollback_that_fails_part_way_moves_nothing_and_runs_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys, fails_on: str, error: str
) -> None:
    """The store failing (or Ctrl-C) after @champion moved left the registry and latest.json apart, and no rollback possible."""
    from pipeline.store import StoreUnavailable

    first, _ = _run(settings, _lineup(settings, "mean"))
    second, _ = _run(settings, _lineup(settings, "drift"))
    assert second.champion_version != first.champion_version, "precondition: drift took @champion"
    client, name = tracking.configure(settings), tracking.registered_name(SID)
    store = tasks.open_store(settings)

    def tags() -> dict:
        return {v: dict(client.get_model_version(name, v).tags) for v in (first.champion_version, second.champion_version)}

    before, history, tags_before = _state(settings), tasks.alias_history(settings, SID), tags()
    fault = StoreUnavailable("simulated outage") if error == "outage" else KeyboardInterrupt()
    write_bytes, set_tag = type(store).write_bytes, type(client).set_model_version_tag

    def failing_write(self, key: str, data: bytes, *args, **kwargs):
        if fails_on in key:
            raise fault
        return write_bytes(self, key, data, *args, **kwargs)

    def failing_tag(self, model: str, version: str, key: str, value: str):
        if key == tracking.alias_tag("champion") and str(version) == first.champion_version:
            raise fault  # after rollback_alias moved the alias, before it rewrote the record
        return set_tag(self, model, version, key, value)

    with monkeypatch.context() as patch:
        if fails_on == "alias-tag":
            patch.setattr(type(client), "set_model_version_tag", failing_tag)
        else:
            patch.setattr(type(store), "write_bytes", failing_write)
        _cli_env(monkeypatch, settings)
        assert cli.main(["rollback", SID]) == (130 if error == "ctrl-c" else 1)
    err = capsys.readouterr().err
    assert ("run it again to finish" in err) if error == "ctrl-c" else ("simulated outage" in err)
    assert _state(settings) == before and tags() == tags_before and tasks.alias_history(settings, SID) == history
    _assert_pointer_agrees(settings)

    assert tasks.rollback(settings, SID) == (second.champion_version, first.champion_version)  # run again, it completes
    _assert_pointer_agrees(settings)
    assert tasks.alias_history(settings, SID)[-1]["to_version"] == first.champion_version
    assert len(tasks.alias_history(settings, SID)) == len(history) + 1


def _killed_rollback(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, killed_at: str
) -> tuple[TrainedSeries, TrainedSeries, TrainedSeries, list[dict], str]:
    """Three champions in turn (as of 2012, 2013, 2014), then ``co2cast rollback`` killed (kill -9: no undo runs)
    after @champion moved back to the second, before ``latest.json`` moved (``killed_at`` "latest.json…") or
    before the move was recorded ("history").

    Returns the three runs, the alias history and the manifest ``latest.json`` served before the rollback.
    """
    from pipeline import publish

    first, _ = _run(settings, _lineup(settings, "drift"), as_of_year=2012)  # each newer as-of year: a version of its own
    second, _ = _run(settings, _lineup(settings, "drift"), as_of_year=2013)
    third, _ = _run(settings, _lineup(settings, "drift"), as_of_year=2014)
    chain = [first.champion_version, second.champion_version, third.champion_version]
    assert len(set(chain)) == 3, f"precondition: three champions in turn, {chain}"
    history, served = tasks.alias_history(settings, SID), _state(settings)["latest"]["manifest"]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(tasks._Undo, "__call__", lambda self: False)  # a hard kill runs no undo
        if killed_at.startswith("latest.json"):
            patch.setattr(publish, "point_latest", killed)
        else:
            patch.setattr(tasks, "_record_move", killed)
        with pytest.raises(KeyboardInterrupt):
            tasks.rollback(settings, SID)
    assert str(_state(settings)["aliases"]["champion"]) == second.champion_version, "the killed rollback had moved @champion"
    assert tasks.open_store(settings).list("intents/") != [], "the killed rollback left its intent"
    return first, second, third, history, served


@pytest.mark.parametrize("killed_at", ["latest.json", "history", "latest.json, then latest.json removed"])
def test_a_rollback_killed_part_way_is_finished_by_the_next_one_not_rolled_back_twice(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, killed_at: str
) -> None:
    """``co2cast rollback`` killed (kill -9: no undo runs) after @champion moved, before latest.json or the history did.

    Run again, it rolled back a second step from the version it had half moved to (or refused,
    "no previous version"), and @champion and latest.json never agreed again. Its intent, left in
    the store, now makes the next rollback finish it instead.
    """
    first, second, third, history, served = _killed_rollback(settings, monkeypatch, killed_at)
    if killed_at.endswith("removed"):  # co2cast's advice for a damaged latest.json; the rollback is still half done
        tasks.open_store(settings).delete("forecasts/world.co2/latest.json")

    assert tasks.rollback(settings, SID) == (third.champion_version, second.champion_version)  # finished, not a second step
    _assert_pointer_agrees(settings)
    assert str(_state(settings)["aliases"]["champion"]) == second.champion_version
    assert len(tasks.alias_history(settings, SID)) == len(history) + 1
    assert tasks.open_store(settings).list("intents/") == []
    assert served in _state(settings)["latest"]["rolled_back"]
    assert tasks.rollback(settings, SID) == (second.champion_version, first.champion_version)  # the next one is a step of its own
    _assert_pointer_agrees(settings)


@pytest.mark.parametrize(("killed_at", "path"), [("latest.json", "dag"), ("latest.json", "cli"), ("history", "dag")])
def test_a_rollback_killed_part_way_is_finished_by_the_next_forecast_run(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog, capsys, killed_at: str, path: str
) -> None:
    """A killed rollback is finished by the series' next nightly run, not only by the next ``co2cast rollback``.

    Only a rollback read its intent. The nightly run on the same data found the run key's forecast
    served (killed before latest.json moved: @champion on v2, latest.json on v3's forecast) or
    rolled back (killed before the history), so the DAG mapped no task for the series, and
    ``co2cast forecast`` took its cheap paths: the registry and the store went on disagreeing (or
    the move went unrecorded) until someone ran the rollback again.
    """
    first, second, third, history, served = _killed_rollback(settings, monkeypatch, killed_at)
    _cli_env(monkeypatch, settings)
    assert cli.main(["summary"]) == 0
    out = capsys.readouterr().out
    left = f"ROLLBACK LEFT PART WAY: a rollback from v{third.champion_version} to v{second.champion_version} was killed"
    assert left in out and "moved outside co2cast" not in out, out  # not the advice for an alias moved by hand
    lineup = _lineup(settings, "drift")
    plan = tasks.plan_run(settings, RunTrigger(series=SERIES, as_of_year=2014), lineup)
    assert plan.series[0].run_key == third.run_key, "precondition: the nightly run of the same data"
    with caplog.at_level("INFO", logger="pipeline.tasks"):
        if path == "dag":
            assert [item["series_id"] for item in tasks.pending_series(settings, plan)] == [SID], "a task is mapped to finish it"
            published = tasks.forecast_series(settings, plan, plan.series[0], lineup=lineup)
        else:
            ((_, published),) = tasks.forecast_all(settings, RunTrigger(series=SERIES, as_of_year=2014), lineup)
    assert f"finishing the rollback from v{third.champion_version} to v{second.champion_version}" in caplog.text
    assert not published.served and published.served_version == second.champion_version
    _assert_pointer_agrees(settings)
    state = _state(settings)
    assert str(state["aliases"]["champion"]) == second.champion_version and served in state["latest"]["rolled_back"]
    records = tasks.alias_history(settings, SID)
    assert len(records) == len(history) + 1 and records[-1]["rollback"] is True
    assert (records[-1]["from_version"], records[-1]["to_version"]) == (third.champion_version, second.champion_version)
    assert tasks.open_store(settings).list("intents/") == []
    assert tasks.pending_series(settings, plan) == [], "settled again: the next nightly run maps nothing"
    assert cli.main(["summary"]) == 0
    assert "ROLLBACK LEFT PART WAY" not in capsys.readouterr().out
    assert tasks.rollback(settings, SID) == (second.champion_version, first.champion_version)  # the next one is a step of its own
    _assert_pointer_agrees(settings)


def test_an_intent_left_by_a_completed_rollback_does_not_turn_the_next_rollback_into_a_no_op(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollback that completed but could not delete its intent (only logged): the next rollback is one of its own."""
    first, _ = _run(settings, _lineup(settings, "drift"), as_of_year=2012)
    second, _ = _run(settings, _lineup(settings, "drift"), as_of_year=2013)
    third, _ = _run(settings, _lineup(settings, "drift"), as_of_year=2014)
    assert len({first.champion_version, second.champion_version, third.champion_version}) == 3, "precondition"
    store = tasks.open_store(settings)
    delete = type(store).delete

    def failing_delete(self, key: str, *args, **kwargs):
        if key.startswith("intents/"):
            raise OSError("simulated outage")
        return delete(self, key, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(type(store), "delete", failing_delete)
        assert tasks.rollback(settings, SID) == (third.champion_version, second.champion_version)
    assert store.list("intents/") != [], "precondition: the intent was left"
    assert store.read_json(store.list("intents/")[0])["completed"] is True  # told apart from a rollback killed before the delete
    from pipeline import cli

    assert cli._rollbacks_left(store) == {}, "summary called it a rollback left part way, and its advice rolled back a step more"
    history = tasks.alias_history(settings, SID)
    assert tasks.rollback(settings, SID) == (second.champion_version, first.champion_version)
    assert str(_state(settings)["aliases"]["champion"]) == first.champion_version
    assert len(tasks.alias_history(settings, SID)) == len(history) + 1
    assert store.list("intents/") == []
    _assert_pointer_agrees(settings)


def test_a_rollback_killed_between_its_record_and_its_intents_delete_is_not_rolled_back_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed once the move was recorded, before its intent was deleted: the command failed, and run again "to finish"
    it went back one more step (the intent looked like one whose delete had failed), serving an even older forecast."""
    first, _ = _run(settings, _lineup(settings, "drift"), as_of_year=2012)
    second, _ = _run(settings, _lineup(settings, "drift"), as_of_year=2013)
    third, _ = _run(settings, _lineup(settings, "drift"), as_of_year=2014)
    assert len({first.champion_version, second.champion_version, third.champion_version}) == 3, "precondition"
    store = tasks.open_store(settings)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(tasks, "_drop_intent", killed)  # nothing failed before it: the success path's delete
        with pytest.raises(KeyboardInterrupt):
            tasks.rollback(settings, SID)
    assert store.list("intents/") != [], "precondition: the intent was left"
    assert str(_state(settings)["aliases"]["champion"]) == second.champion_version
    _assert_pointer_agrees(settings)
    history, state = tasks.alias_history(settings, SID), _state(settings)
    assert tasks.rollback(settings, SID) == (third.champion_version, second.champion_version)  # finished, not a second step
    assert _state(settings) == state and tasks.alias_history(settings, SID) == history
    assert store.list("intents/") == []
    assert tasks.rollback(settings, SID) == (second.champion_version, first.champion_version)  # the next one is a step of its own
    _assert_pointer_agrees(settings)


def test_a_rollback_that_fails_part_way_keeps_a_forecast_published_meanwhile(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate's run publishes (under the pointer's lock alone) after the rollback began, then the
    rollback's alias history write fails: the undo wrote back the latest.json it had read at the
    start, the forecast from before that publish, while @champion went back to the gate's version."""
    from pipeline.store import StoreUnavailable

    first, lineup, plan, second = _gated_not_published(settings)
    assert _state(settings)["latest"]["model_version"] == first.champion_version, "precondition: drift's forecast is not out"
    store = tasks.open_store(settings)
    rollback_alias, write_bytes = tracking.rollback_alias, type(store).write_bytes

    def publish_then_roll_back(client, series_id: str, alias: str):
        published = tasks.publish_series(settings, plan, second, lineup=lineup)  # the run, meanwhile
        assert published.served, "precondition: the run publishes drift's forecast"
        return rollback_alias(client, series_id, alias)

    def failing_history(self, key: str, data: bytes, *args, **kwargs):
        if "history/" in key:
            raise StoreUnavailable("simulated outage")
        return write_bytes(self, key, data, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(tracking, "rollback_alias", publish_then_roll_back)
        patch.setattr(type(store), "write_bytes", failing_history)
        with pytest.raises(StoreUnavailable):
            tasks.rollback(settings, SID)
    state = _state(settings)
    assert str(state["aliases"]["champion"]) == second.champion_version
    assert str(state["latest"]["model_version"]) == second.champion_version  # the run's forecast, not the one before it
    _assert_pointer_agrees(settings)
    assert tasks.rollback(settings, SID) == (second.champion_version, first.champion_version)  # run again, it completes
    _assert_pointer_agrees(settings)


def test_a_rollback_to_an_older_as_of_year_holds_on_the_next_run(settings: Settings) -> None:
    """The version rolled back to last published as of 2013: the 2014 run key, run again, moves nothing."""
    first, _ = _run(settings, _lineup(settings, "mean"), as_of_year=2013)
    second, _ = _run(settings, _lineup(settings, "drift"))
    assert second.champion_family == "drift" and second.as_of_year == 2014, "precondition: drift takes @champion as of 2014"
    assert tasks.rollback(settings, SID) == (second.champion_version, first.champion_version)
    rolled_back = _state(settings)
    assert rolled_back["latest"]["as_of_year"] == 2013
    plan = tasks.plan_run(settings, RunTrigger(series=SERIES), _lineup(settings, "drift"))
    assert tasks.pending_series(settings, plan) == []
    _, republished = _run(settings, _lineup(settings, "drift"))
    assert not republished.served and _state(settings) == rolled_back
    _assert_pointer_agrees(settings)


def test_a_rollback_before_the_champions_forecast_is_out_holds(settings: Settings) -> None:
    """A rollback between a run's gate (which moved @champion) and its publish: the publish does not undo it."""
    first, lineup, plan, second = _gated_not_published(settings)
    assert tasks.rollback(settings, SID) == (second.champion_version, first.champion_version)
    published = tasks.publish_series(settings, plan, second, lineup=lineup)
    assert not published.served and published.served_version == first.champion_version
    _assert_pointer_agrees(settings)
    assert tasks.pending_series(settings, plan) == []


def test_a_rollback_before_a_kept_champions_forecast_is_out_holds(settings: Settings) -> None:
    """The same race when the racing run key kept the champion: its manifest serves a version of another run key."""
    first, _ = _run(settings, _lineup(settings, "mean"))
    second, _ = _run(settings, _lineup(settings, "drift"))
    lineup = _lineup(settings, "drift", "mean")  # another configuration: a new run key, the same data
    plan = tasks.plan_run(settings, RunTrigger(series=SERIES), lineup)
    third = tasks.train_series(settings, plan, plan.series[0], lineup=lineup)
    assert third.run_key != second.run_key and third.champion_version == second.champion_version, "precondition: the gate kept drift"
    assert tasks.rollback(settings, SID) == (second.champion_version, first.champion_version)
    published = tasks.publish_series(settings, plan, third, lineup=lineup)
    assert not published.served and published.served_version == first.champion_version
    _assert_pointer_agrees(settings)


def test_rerun_of_an_older_vintage_does_not_take_the_newer_ones_place(settings: Settings, tmp_path: Path) -> None:
    """Two vintages, one as-of year: the older vintage's run key, run again, moves nothing back."""
    from pipeline import ingest

    lineup = _lineup(settings, "drift")
    older_vintage = ingest.latest_curated(tasks.open_store(settings))["vintage"]
    older, _ = _run(settings, lineup)
    source = next((settings.home.parent / "source").glob("*.csv"))
    revised = tmp_path / "revised" / source.name
    revised.parent.mkdir()
    lines = source.read_text().splitlines()
    column = lines[0].split(",").index("co2")
    for number, line in enumerate(lines):
        cells = line.split(",")
        if cells[1] == "World" and cells[2] == "2013":
            cells[column] = str(round(float(cells[column]) * 1.005, 3))  # a small revision of World's 2013
            lines[number] = ",".join(cells)
    revised.write_text("\n".join(lines) + "\n")
    assert ingest.ingest(settings, tasks.open_store(settings), str(revised))["status"] == "curated"
    newer, published = _run(settings, lineup)
    assert newer.run_key != older.run_key and published.served
    served, history = _state(settings), tasks.alias_history(settings, SID)
    # The champion stays (the same recipe scores the same), but what it serves is refitted on the
    # revised history: a forecast is never the old vintage's under the new vintage's name.
    assert "the champion stays" in history[-1]["reason"] and "refitted as of 2014 on vintage" in history[-1]["reason"]
    assert newer.champion_version != older.champion_version and newer.champion_family == older.champion_family
    store = tasks.open_store(settings)
    old_manifest = store.read_json(f"forecasts/{SID}/asof=2014/{older.run_key}/manifest.json")
    new_manifest = store.read_json(served["latest"]["manifest"])
    assert new_manifest["vintage"] != old_manifest["vintage"] and new_manifest["model_version"] == newer.champion_version
    old_table, new_table = (
        pd.read_csv(io.BytesIO(store.read_bytes(m["key"].replace("manifest.json", "forecast.csv")))) for m in (old_manifest, new_manifest)
    )
    assert not np.allclose(old_table["hi_95"], new_table["hi_95"])  # drift's spread saw the revised 2013
    client = tracking.configure(settings)
    versions = client.search_model_versions(f"name = '{tracking.registered_name(SID)}'")
    fitted_on = {str(v.version): v.tags.get(tasks.HISTORY_TAG) for v in versions}
    assert fitted_on[newer.champion_version] != fitted_on[older.champion_version] is not None

    trigger = RunTrigger(series=SERIES, vintage=older_vintage)
    plan = tasks.plan_run(settings, trigger, lineup)
    assert plan.series[0].run_key == older.run_key and tasks.pending_series(settings, plan) == []
    trained = tasks.train_series(settings, plan, plan.series[0], lineup=lineup)
    republished = tasks.publish_series(settings, plan, trained, lineup=lineup)
    assert not republished.served and republished.served_version == newer.champion_version
    assert _state(settings) == served and tasks.alias_history(settings, SID) == history
    _assert_pointer_agrees(settings)

    # A new run key on the older vintage (another configuration): like a backfill, it publishes
    # under its prefix but moves neither latest.json nor an alias, and decides nothing.
    other = _lineup(settings, "mean")
    plan = tasks.plan_run(settings, trigger, other)
    assert plan.series[0].run_key not in (older.run_key, newer.run_key) and plan.vintage == older_vintage
    trained = tasks.train_series(settings, plan, plan.series[0], lineup=other)
    pinned = tasks.publish_series(settings, plan, trained, lineup=other)
    assert not pinned.served and pinned.served_version == newer.champion_version
    state = _state(settings)
    assert state["aliases"] == served["aliases"] and state["latest"] == served["latest"]
    assert tasks.alias_history(settings, SID) == history


def _drift_reconfigured(settings: Settings) -> tasks.Lineup:
    """Drift takes @champion on World as of 2013; the line-up returned names another recipe (the mean) 'drift'."""
    first, _ = _run(settings, _lineup(settings, "drift"), as_of_year=2013)
    assert first.champion_family == "drift", "precondition: drift takes @champion on World"
    return tasks.Lineup(
        candidates={"naive": NaiveForecaster(), "drift": MeanForecaster()},  # 'drift' reconfigured: another recipe
        select=ZooSelection(always_register=("drift",)),
        spec=ForecastSpec(horizon_end=settings.horizon_end),
    )


def test_a_kept_champions_recipe_is_registered_apart_from_a_candidate_of_its_family_name(settings: Settings) -> None:
    """The run registers a candidate named like the kept champion's family but of another recipe (a family's
    configuration changed): the champion's recipe refitted is its own version. ``find_version`` looked the refit up by
    run key and family and handed back the candidate's version, so @champion and the forecast went to the model that
    lost the gate while the history said 'its recipe (drift) refitted'."""
    changed = _drift_reconfigured(settings)
    second, published = _run(settings, changed, as_of_year=2014)
    record = tasks.alias_history(settings, SID)[-1]
    assert "its recipe (drift) refitted as of 2014" in record["reason"], "precondition: the gate kept drift's recipe"
    assert second.champion_version == published.model_version != second.versions["drift"]
    served = tracking.load_registered(tracking.registered_name(SID), second.champion_version)
    assert type(served.model).__name__ == "DriftForecaster"
    _assert_pointer_agrees(settings)
    _, table = tasks.show_forecast(settings, SID)
    assert table["mean"].is_monotonic_increasing and table["mean"].nunique() > 1  # drift's line, not the mean's constant
    assert record["challenger_family"] != second.champion_family, "precondition: the selection chose another family"
    _assert_mlflow_shows_the_gates_decision(settings, second, record["reason"])
    described = tracking.configure(settings).get_model_version(tracking.registered_name(SID), second.champion_version).description
    assert described == (
        f"drift, @champion's recipe refitted as of 2014: backtest MASE {record['champion_score']:.3f}, "
        f"naive {second.scores['naive']['mase']:.3f} on the same windows (lower is better); "
        f"vintage {second.vintage}, run key {second.run_key}"
    )

    state = _state(settings)  # a rerun of the run key registers nothing more
    assert _run(settings, changed, as_of_year=2014)[0].champion_version == second.champion_version and _state(settings) == state


def _assert_mlflow_shows_the_gates_decision(settings: Settings, trained: TrainedSeries, reason: str) -> None:
    """What a person browsing the run in the MLflow UI sees: the family the gate left on @champion, and why.

    The comparison chart was drawn before the gate and named the selection's choice, which the kept
    champion had beaten; a refitted champion's forecast had no fan chart; only registered candidates had one.
    """
    client = tracking.configure(settings)
    run = client.get_run(trained.run_id)
    assert run.data.tags[tracking.GATE_TAG] == reason
    svg = Path(client.download_artifacts(trained.run_id, "comparison.svg")).read_text()
    assert f"champion: {trained.champion_family}" in svg
    assert "champion_refit/fan_chart.svg" in [a.path for a in client.list_artifacts(trained.run_id, "champion_refit")]
    fitted = set(pd.read_parquet(client.download_artifacts(trained.run_id, tracking.CANDIDATES_ARTIFACT))["family"])
    nested = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{trained.run_id}'")
    charts = {r.data.tags[tracking.FAMILY_TAG]: {a.path for a in client.list_artifacts(r.info.run_id)} for r in nested}
    assert fitted and all("fan_chart.svg" in charts[name] for name in fitted), (fitted, charts)


def test_a_kept_champion_whose_refitted_recipe_breaks_the_bounds_gives_way(settings: Settings) -> None:
    first, _ = _run(settings, _lineup(settings, "drift"), as_of_year=2010)
    assert first.champion_family == "drift"
    # As of 2014, naive challenges and loses to drift on the same windows, so drift's recipe
    # would be refitted on the 2014 data. To 3000 its line (about 135 Mt a year since 1751)
    # passes 4 times World's maximum: the publish gate would refuse it, so naive takes
    # @champion and is what is published.
    far = settings.model_copy(update={"horizon_end": 3000})
    second, published = _run(far, _lineup(far, "mean"))
    record = tasks.alias_history(far, SID)[-1]
    assert record["challenger_score"] > record["champion_score"], "precondition: naive loses to drift on the windows"
    assert "refitted as of 2014" in record["reason"] and "above 4 times the historic maximum" in record["reason"]
    assert record["moved"] and record["to_version"] == second.champion_version == published.model_version
    assert second.champion_family == "naive" and second.as_of_year == 2014
    _assert_pointer_agrees(far)
    _, table = tasks.show_forecast(far, SID)
    assert table["year"].iloc[-1] == 3000 and table["mean"].nunique() == 1  # naive: the last value, every year


def test_a_kept_champion_whose_refitted_recipe_falls_to_zero_gives_way(tmp_path: Path, small_owid: Path) -> None:
    """The zero floor on the same path: a kept recipe whose refit falls to zero within the backtest horizon is not served."""
    from pipeline import ingest

    # Kuwait's CO2 rewritten as a steady decline of about 1 Mt a year, from 71 in 1946 to 3 in
    # 2014 (a tenth alternating, so no window is fitted exactly): drift beats naive on every
    # window. Its line from 2010 (7.1) stays above zero for the five years the backtest covers;
    # from 2014 (3.1) it reaches zero in 2018.
    lines = small_owid.read_text().splitlines()
    column = lines[0].split(",").index("co2")
    for number, line in enumerate(lines):
        cells = line.split(",")
        if cells[1] == "Kuwait":
            year = int(cells[2])
            cells[column] = f"{3 + (2014 - year) + 0.1 * (-1) ** year:.3f}"
            lines[number] = ",".join(cells)
    source = tmp_path / "declining" / small_owid.name
    source.parent.mkdir()
    source.write_text("\n".join(lines) + "\n")
    settings = Settings(
        home=tmp_path / "home", store_uri=(tmp_path / "store").as_uri(), mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"
    )
    assert ingest.ingest(settings, tasks.open_store(settings), str(source))["status"] == "curated"

    first, _ = _run(settings, _lineup(settings, "drift"), as_of_year=2010, series="Kuwait:co2")
    assert first.champion_family == "drift", "precondition: drift's line from 2010 is published"
    second, published = _run(settings, _lineup(settings, "mean"), series="Kuwait:co2")
    record = tasks.alias_history(settings, "kuwait.co2")[-1]
    assert record["challenger_score"] > record["champion_score"], "precondition: naive loses to drift on the windows"
    assert "refitted as of 2014" in record["reason"] and "falls to 0 in 2018, 4 year(s) ahead" in record["reason"]
    assert record["moved"] and record["to_version"] == second.champion_version == published.model_version
    assert second.champion_family == "naive"
    _, table = tasks.show_forecast(settings, "kuwait.co2")
    assert table["mean"].min() > 3, "naive's forecast, the last value, is published, not drift's line floored at zero"


def test_a_configuration_changed_and_changed_back_serves_its_forecast_again(settings: Settings) -> None:
    """``CO2CAST_HORIZON_END=2020`` for one run, then the default again: the 2050 forecast is served
    again (the run key of the default configuration was published before), not the 2020 one
    until new data; a pointer left dangling is replaced by the next run instead of staying broken."""
    store = tasks.open_store(settings)
    lineup = _lineup(settings, "drift")
    first, served = _run(settings, lineup)
    short = settings.model_copy(update={"horizon_end": 2020})
    second, shortened = _run(short, _lineup(short, "drift"))
    assert second.run_key != first.run_key and shortened.served and shortened.last_year == 2020
    third, again = _run(settings, lineup)
    assert third.run_key == first.run_key and again.served and again.manifest == served.manifest
    manifest, table = tasks.show_forecast(settings, SID)
    assert manifest.key == served.manifest and table["year"].max() == 2050
    _assert_pointer_agrees(settings)
    assert second.champion_version == first.champion_version, "precondition: the gate kept drift for the 2020 horizon"
    rows = [r for r in tasks.forecasts_as_of(settings, SID, 2014) if r["version"] == first.champion_version]
    assert sorted(r["manifest"] for r in rows) == sorted([served.manifest, shortened.manifest])  # both, not the last read

    # The served manifest removed by hand: the pointer dangles, and the next run replaces it.
    _run(short, _lineup(short, "drift"))
    store.delete(shortened.manifest)
    assert tasks.pending_series(settings, tasks.plan_run(settings, RunTrigger(series=SERIES), lineup)) != []
    _, repaired = _run(settings, lineup)
    assert repaired.served and tasks.show_forecast(settings, SID)[0].key == served.manifest

    # When the other configuration's run had moved @champion (here by hand, for a cheap line-up
    # whose gate keeps drift), serving the run key's forecast again brings @champion with it.
    client = tracking.configure(settings)
    _run(short, _lineup(short, "drift"))
    other = next(
        str(v.version)
        for v in client.search_model_versions(f"name = '{tracking.registered_name(SID)}'")
        if str(v.version) != first.champion_version
    )
    client.set_registered_model_alias(tracking.registered_name(SID), "champion", other)
    _run(settings, lineup)
    _assert_pointer_agrees(settings)
    assert _state(settings)["aliases"]["champion"] == int(first.champion_version)
    record = tasks.alias_history(settings, SID)[-1]
    assert record["from_version"] == other and record["to_version"] == first.champion_version
    assert f"run key {first.run_key} serves its forecast again" in record["reason"]


def test_a_version_deleted_before_its_forecast_is_out_is_trained_again(settings: Settings) -> None:
    """Deleted in the MLflow UI between training and publishing: one clear refusal, then the rerun trains the key afresh."""
    lineup = _lineup(settings, "drift")
    plan = tasks.plan_run(settings, RunTrigger(series=SERIES), lineup)
    trained = tasks.train_series(settings, plan, plan.series[0], lineup=lineup)
    client = tracking.configure(settings)
    client.delete_model_version(tracking.registered_name(SID), trained.champion_version)
    with pytest.raises(tracking.VersionMissing) as missing:
        tasks.publish_series(settings, plan, trained, lineup=lineup)
    assert f"v{trained.champion_version} is no longer in the MLflow registry" in str(missing.value) and "\n" not in str(missing.value)
    assert tasks.open_store(settings).list(f"forecasts/{SID}/") == []

    # The rerun does not reuse the complete run that chose the deleted version (it failed to publish forever).
    again, published = _run(settings, lineup)
    assert again.run_key == trained.run_key and again.run_id != trained.run_id
    assert int(again.champion_version) > int(trained.champion_version) and published.served
    _assert_pointer_agrees(settings)
    retired = client.get_run(trained.run_id).data.tags
    assert retired[tracking.COMPLETE_TAG] == "false" and "no longer in the registry" in retired[tracking.RETIRED_TAG]


@pytest.mark.parametrize("records_before_the_alias_field", [False, True])
def test_a_served_version_deleted_in_mlflow_is_reported_and_rollback_serves_the_one_before(
    settings: Settings, capsys, monkeypatch, records_before_the_alias_field: bool
) -> None:
    """Also with an alias history written before its records named their alias (all @champion's then)."""
    first, _ = _run(settings, _lineup(settings, "mean"))
    _, naive_table = tasks.show_forecast(settings, SID)
    second, _ = _run(settings, _lineup(settings, "drift"))
    assert second.champion_version != first.champion_version, "precondition: drift took @champion"
    if records_before_the_alias_field:
        store = tasks.open_store(settings)
        records = store.read_json(f"history/{SID}.json")
        champion = [{k: v for k, v in r.items() if k != "alias"} for r in records if r.get("alias") == "champion"]
        store.write_json(f"history/{SID}.json", champion)
    client = tracking.configure(settings)
    client.delete_model_version(tracking.registered_name(SID), second.champion_version)  # as the MLflow UI would
    _cli_env(monkeypatch, settings)
    assert cli.main(["summary"]) == 0
    out = capsys.readouterr().out
    assert f"latest.json serves v{second.champion_version}, which is no longer in the registry (deleted in MLflow)" in out
    assert f"co2cast rollback {SID}" in out

    assert cli.main(["rollback", SID]) == 0
    assert f"version {second.champion_version} -> {first.champion_version}" in capsys.readouterr().out
    _assert_pointer_agrees(settings)
    _, table = tasks.show_forecast(settings, SID)
    assert table[["year", "mean"]].equals(naive_table[["year", "mean"]])
    last = tasks.alias_history(settings, SID)[-1]
    assert (last["from_version"], last["to_version"]) == (second.champion_version, first.champion_version)
    assert "was deleted from the registry" in last["reason"]
    assert cli.main(["summary"]) == 0
    assert "REGISTRY DISAGREES" not in capsys.readouterr().out

    # The deleted version's run key, run again, does not take latest.json back to its forecast.
    state = _state(settings)
    _run(settings, _lineup(settings, "drift"))
    assert _state(settings) == state


def test_rollback_refuses_when_the_only_served_version_was_deleted(settings: Settings) -> None:
    first, _ = _run(settings, _lineup(settings, "drift"))
    client = tracking.configure(settings)
    client.delete_model_version(tracking.registered_name(SID), first.champion_version)
    latest = tasks.open_store(settings).read_bytes(f"forecasts/{SID}/latest.json")
    history = tasks.alias_history(settings, SID)
    with pytest.raises(tracking.RegistryError) as refused:
        tasks.rollback(settings, SID)
    message = str(refused.value)
    assert f"v{first.champion_version}, which latest.json serves, was deleted from the registry" in message and "\n" not in message
    assert tasks.open_store(settings).read_bytes(f"forecasts/{SID}/latest.json") == latest
    assert tasks.alias_history(settings, SID) == history


def test_rerun_of_the_same_run_key_moves_nothing(settings: Settings) -> None:
    lineup = _lineup(settings, "drift")
    _run(settings, lineup)
    before, history = _state(settings), tasks.alias_history(settings, SID)
    _run(settings, lineup)
    assert _state(settings) == before and tasks.alias_history(settings, SID) == history


def test_backfill_leaves_champion_family_aliases_and_latest(settings: Settings, capsys, monkeypatch) -> None:
    lineup = _lineup(settings, "drift")
    newest, _ = _run(settings, lineup)
    before = _state(settings)
    for year in (2008, 2010):
        old, published = _run(settings, lineup, as_of_year=year)
        assert old.as_of_year == year and f"asof={year}" in published.manifest
        assert not published.served and (published.served_version, published.served_as_of_year) == (newest.champion_version, 2014)
    lines: list[str] = []
    tasks.forecast_all(settings, RunTrigger(series=SERIES, as_of_year=2009), lineup, progress=lines.append)
    assert lines[-1].endswith(f"(a backfill: latest.json stays on v{newest.champion_version} as of 2014)"), lines
    assert "asof=2009" in lines[-1]
    after = _state(settings)
    assert after["aliases"] == before["aliases"] and after["latest"] == before["latest"]
    assert len(after["versions"]) == len(before["versions"]) + 3
    _assert_pointer_agrees(settings)
    # A family the newest run did not register gets no alias from a backfill either.
    backfill, _ = _run(settings, _lineup(settings, "mean"), as_of_year=2005)
    assert backfill.champion_family == "naive" and "naive" not in before["aliases"]
    assert _state(settings)["aliases"] == before["aliases"]
    rows = tasks.forecasts_as_of(settings, SID, 2010)
    assert [r["family"] for r in rows] == ["drift"] and "asof=2010" in rows[0]["manifest"]
    _cli_env(monkeypatch, settings)
    assert cli.main(["forecasts", SID, "--as-of", "2008"]) == 0
    assert "2008" in capsys.readouterr().out.splitlines()[1]
    assert newest.as_of_year > 2010


def test_two_as_of_years_concurrently(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both runs meet after reading an alias, so both see "no alias yet" unless the registry lock orders them.

    Without the lock both then write the same first alias: the registry refuses the second
    write, or the older as-of year moves it last.
    """
    lineup = _lineup(settings, "drift")
    errors: list[BaseException] = []
    read_alias = tracking.alias_version
    meet = threading.Barrier(2)

    def slow_read(*args, **kwargs):
        found = read_alias(*args, **kwargs)
        try:  # with the lock the other run cannot get here while this one holds it
            meet.wait(timeout=3)
        except threading.BrokenBarrierError:
            pass
        return found

    monkeypatch.setattr(tracking, "alias_version", slow_read)

    def run(year: int | None) -> None:
        try:
            _run(settings, lineup, as_of_year=year)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(year,)) for year in (None, 2009)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    state = _state(settings)
    client = tracking.configure(settings)
    found = client.search_model_versions(f"name = '{tracking.registered_name(SID)}'")
    keys = [(v.tags[tracking.RUN_KEY_TAG], v.tags[tracking.FAMILY_TAG]) for v in found]
    assert len(keys) == len(set(keys)) == 2
    champion = client.get_model_version_by_alias(tracking.registered_name(SID), "champion")
    assert tracking.version_as_of(champion) == state["latest"]["as_of_year"] > 2009
    _assert_pointer_agrees(settings)


def test_the_champion_line_compares_on_the_metric_the_champion_was_selected_on() -> None:
    """Selected on RMSE, the line said 'kept by the selection policy although drift scored better' (drift's MASE was lower)."""
    from pipeline.report import champion_reason, selection_metric

    scores = {"arima": {"mase": 0.9, "rmse": 10.0}, "drift": {"mase": 0.8, "rmse": 12.0}, "naive": {"mase": 1.0, "rmse": 15.0}}
    line = champion_reason("arima", scores, "rmse")
    assert line == "champion arima: backtest RMSE 10.000, runner-up drift 12.000, naive 15.000 (lower is better)"
    assert "kept by the selection policy although drift scored better" in champion_reason("arima", scores)  # on MASE, as before
    assert selection_metric({"trained": {"selection_metric": "rmse"}}) == "rmse"
    assert selection_metric({"trained": {"best_backtest_family": "arima"}}) == selection_metric({}) == "mase"  # older manifests


def test_the_champion_line_names_the_gate_only_where_the_gate_kept_the_champion() -> None:
    """The line said 'kept by the selection policy although theta scored better' where the gate had refused theta."""
    from pipeline.report import champion_reason

    scores = {"arima": {"mase": 0.9}, "theta": {"mase": 0.8}, "naive": {"mase": 1.0}}
    kept = {
        "challenger_family": "theta",
        "challenger_version": "7",
        "to_version": "5",
        "metric": "mase",
        "champion_score": 0.7,
        "challenger_score": 0.8,
        "naive_score": 1.0,
        "reason": "the challenger's mase 0.8 does not beat the champion's 0.7; the champion stays",
    }
    line = champion_reason("arima", scores, "mase", kept, "5")
    assert line == (
        "champion arima: kept by the champion gate against the challenger theta (MASE on the same windows: champion 0.700, "
        "theta 0.800, naive 1.000): the challenger's mase 0.8 does not beat the champion's 0.7; the champion stays"
    )
    worse = kept | {"challenger_score": 1.2, "reason": "the challenger's mase 1.2 is worse than naive's 1"}
    line = champion_reason("arima", scores, "mase", worse, "5")
    assert line.endswith("theta 1.200, naive 1.000): the challenger's mase 1.2 is worse than naive's 1")
    promoted = kept | {"to_version": "7"}  # the selection's choice won the gate: the selection's line, as before
    assert "kept by the selection policy although theta scored better" in champion_reason("arima", scores, "mase", promoted, "7")
    assert "kept by the selection policy" in champion_reason("arima", scores, "mase", kept, "4")  # another version (a rollback since)


def test_the_selection_metric_is_recorded_and_summary_compares_on_it(settings: Settings, capsys, monkeypatch) -> None:
    lineup = _lineup(settings, "drift")
    lineup = tasks.Lineup(candidates=lineup.candidates, select=ZooSelection(always_register=(), metric="rmse"), spec=lineup.spec)
    trained, published = _run(settings, lineup)
    manifest = tasks.open_store(settings).read_json(published.manifest)
    assert trained.selection_metric == manifest["trained"]["selection_metric"] == "rmse"
    _cli_env(monkeypatch, settings)
    assert cli.main(["summary"]) == 0
    out = capsys.readouterr().out
    rmse = trained.scores[trained.champion_family]["rmse"]
    assert f"champion {trained.champion_family}: backtest RMSE {rmse:.3f}" in out
    assert out.count("backtest MASE") == out.count("backtest MASE by model") == 1


def test_selection_metric_setting_is_part_of_the_run_key_and_checked(tmp_path: Path) -> None:
    base = tasks.production_lineup(Settings(home=tmp_path))
    smape = tasks.production_lineup(Settings(home=tmp_path, selection_metric="smape"))
    assert base.select.metric == "mase" and smape.select.metric == "smape"
    assert base.config_hash != smape.config_hash
    with pytest.raises(tasks.PermanentError, match="CO2CAST_SELECTION_METRIC"):
        tasks.production_lineup(Settings(home=tmp_path, selection_metric="r2"))


def test_an_as_of_tag_edited_or_removed_in_mlflow_leaves_backfills_behind(settings: Settings) -> None:
    """``co2cast.as_of_year`` of @champion's version edited or removed in the MLflow UI, or @champion removed:
    a backfill still moves no alias (the age of what latest.json serves bounds it), and a run of the served year gates as usual."""
    first, _ = _run(settings, _lineup(settings, "mean"))
    client, name = tracking.configure(settings), tracking.registered_name(SID)
    client.set_model_version_tag(name, first.champion_version, tracking.AS_OF_TAG, "abc")
    assert tracking.version_as_of(client.get_model_version(name, first.champion_version)) is None
    before = _state(settings)
    assert "drift" not in before["aliases"], "precondition: no drift alias yet"

    # drift beats naive on World's windows of 2012 too: only the backfill rule keeps it off @champion.
    backfill, published = _run(settings, _lineup(settings, "drift"), as_of_year=2012)
    assert backfill.scores["drift"]["mase"] < backfill.scores["naive"]["mase"], "precondition: drift would win a gate"
    assert not published.served and _state(settings)["aliases"] == before["aliases"]
    client.delete_model_version_tag(name, first.champion_version, tracking.AS_OF_TAG)
    _run(settings, _lineup(settings, "drift"), as_of_year=2011)
    assert _state(settings)["aliases"] == before["aliases"]
    client.delete_registered_model_alias(name, "champion")
    _run(settings, _lineup(settings, "drift"), as_of_year=2010)
    assert _state(settings)["aliases"] == {k: v for k, v in before["aliases"].items() if k != "champion"}
    assert _state(settings)["latest"] == before["latest"]

    # A new run key of the served year: the challenger takes @champion and latest.json, in agreement.
    client.set_registered_model_alias(name, "champion", first.champion_version)
    client.set_model_version_tag(name, first.champion_version, tracking.AS_OF_TAG, "2014.5")
    second, published = _run(settings, _lineup(settings, "drift"))
    assert second.champion_family == "drift" and published.served
    _assert_pointer_agrees(settings)


def test_an_alias_record_edited_in_mlflow_records_no_previous_version(settings: Settings, capsys, monkeypatch) -> None:
    """``co2cast.alias.champion`` edited in the MLflow UI: rollback says so in one line and moves nothing; runs go on."""
    first, _ = _run(settings, _lineup(settings, "mean"))
    second, _ = _run(settings, _lineup(settings, "drift"))
    assert second.champion_version != first.champion_version, "precondition: drift took @champion"
    client, name = tracking.configure(settings), tracking.registered_name(SID)
    before, history = _state(settings), tasks.alias_history(settings, SID)
    _cli_env(monkeypatch, settings)
    for record in ("moved by Bob", "[1, 2]", '"1"', '{"previous": "abc"}', '{"previous": true}', '{"previous": ["1"]}'):
        for alias in ("champion", "drift"):
            client.set_model_version_tag(name, second.champion_version, tracking.alias_tag(alias), record)
            assert cli.main(["rollback", SID, "--alias", alias]) == 1
            err = capsys.readouterr().err.strip().splitlines()[-1]  # after MLflow's own INFO lines
            assert err.startswith(f"error: {name}@{alias} (version {second.champion_version}) records no previous version")
            assert f"its tag co2cast.alias.{alias} was edited in MLflow" in err and "Error:" not in err
    assert _state(settings) == before and tasks.alias_history(settings, SID) == history
    assert tracking.previous_version(client.get_model_version(name, second.champion_version), "champion") == ""

    # A record as co2cast writes it, restored by hand, rolls back; a new run key writes its own records.
    client.set_model_version_tag(name, second.champion_version, tracking.alias_tag("champion"), f'{{"previous": {first.champion_version}}}')
    assert tasks.rollback(settings, SID) == (second.champion_version, first.champion_version)
    _assert_pointer_agrees(settings)
    third, published = _run(settings, _lineup(settings, "drift", "mean"))
    assert published.served and third.champion_version not in (first.champion_version, second.champion_version)
    _assert_pointer_agrees(settings)


def test_a_digest_tag_edited_in_mlflow_refuses_the_publish_and_restores_champion(settings: Settings) -> None:
    """``co2cast.artifact_sha256`` of the version to publish edited in the MLflow UI: an integrity refusal, not a JSON error."""
    from pipeline.artifacts import DIGEST_TAG, IntegrityError

    first, lineup, plan, trained = _gated_not_published(settings)
    client, name = tracking.configure(settings), tracking.registered_name(SID)
    for edited in ("not json", "[1]", '{"MLmodel": 1}'):
        client.set_model_version_tag(name, trained.champion_version, DIGEST_TAG, edited)
        with pytest.raises(IntegrityError) as refused:
            tasks.publish_series(settings, plan, trained, lineup=lineup)
        message = str(refused.value)
        assert message.startswith(f"{name} v{trained.champion_version}: its artefact digest (tag {DIGEST_TAG}) is not")
        assert "\n" not in message
        # The refusal puts @champion back on what latest.json serves, as for a changed model file.
        assert _state(settings)["aliases"]["champion"] == int(first.champion_version)
        _assert_pointer_agrees(settings)


@pytest.mark.parametrize("killed_at", ["record", "alias"])
def test_a_refusal_killed_while_restoring_champion_still_converges_once_published(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, killed_at: str
) -> None:
    """The process dies in ``_restore_champion`` (Ctrl-C, a kill) between moving @champion back and its refusal record.

    With the alias moved first, a kill before the record left @champion on the old version and no
    ``publish_refused`` record: once the refused forecast was published, ``_champion_follows``
    found nothing to undo and @champion stayed behind latest.json for good. The record now comes
    first; killed before the alias moves, @champion is still the run's version, which latest.json
    serves once published.
    """
    from mlflow import MlflowClient

    from pipeline.artifacts import DIGEST_TAG, IntegrityError

    _, lineup, plan, trained = _gated_not_published(settings)
    client, name = tracking.configure(settings), tracking.registered_name(SID)
    digest = client.get_model_version(name, trained.champion_version).tags[DIGEST_TAG]
    client.set_model_version_tag(name, trained.champion_version, DIGEST_TAG, "not json")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        if killed_at == "record":
            patch.setattr(tasks, "_record_move", killed)
        else:
            patch.setattr(MlflowClient, "set_registered_model_alias", killed)
        with pytest.raises((KeyboardInterrupt, IntegrityError)):
            tasks.publish_series(settings, plan, trained, lineup=lineup)

    client.set_model_version_tag(name, trained.champion_version, DIGEST_TAG, digest)  # the damage repaired
    assert tasks.publish_series(settings, plan, trained, lineup=lineup).served
    _assert_pointer_agrees(settings)
    assert _state(settings)["aliases"]["champion"] == int(trained.champion_version)


def test_a_family_tag_edited_in_mlflow_labels_no_forecast(settings: Settings, caplog) -> None:
    """``co2cast.family`` of @champion's version edited (drift -> arima) or removed in the MLflow UI: the version is
    refused on load in one line, as for an edited digest; it labelled the next forecast it kept serving 'arima'."""
    from pipeline.artifacts import IntegrityError

    first, _ = _run(settings, _lineup(settings, "drift"))
    assert first.champion_family == "drift", "precondition: drift takes @champion on World"
    client, name = tracking.configure(settings), tracking.registered_name(SID)
    for edited, said in (("arima", "says 'arima'"), ("", "was removed")):
        if edited:
            client.set_model_version_tag(name, first.champion_version, tracking.FAMILY_TAG, edited)
        else:
            client.delete_model_version_tag(name, first.champion_version, tracking.FAMILY_TAG)
        with pytest.raises(IntegrityError) as refused:
            tracking.load_registered(name, first.champion_version)
        assert str(refused.value) == (
            f"{name} v{first.champion_version}: its tag {tracking.FAMILY_TAG} {said}, but it was registered as 'drift' "
            "(edited in MLflow?): set the tag back to 'drift'; refusing to load it"
        )
    client.set_model_version_tag(name, first.champion_version, tracking.FAMILY_TAG, "drift")
    assert tracking.load_registered(name, first.champion_version) is not None  # set back, it loads

    # A new run key of the served year, drift not among its candidates: drift (better than naive) was kept and its
    # forecast published as 'arima's. Now it cannot defend the title, as with an edited digest: naive takes it.
    client.set_model_version_tag(name, first.champion_version, tracking.FAMILY_TAG, "arima")
    with caplog.at_level("WARNING", logger="pipeline.tasks"):
        second, published = _run(settings, _lineup(settings, "mean"))
    assert f"cannot load the current champion v{first.champion_version}: {name} v{first.champion_version}: its tag" in caplog.text
    manifest = tasks.open_store(settings).read_json(_state(settings)["latest"]["manifest"])
    assert second.champion_version != first.champion_version and published.served
    assert (
        manifest["model_family"]
        == second.champion_family
        == client.get_model_version(name, second.champion_version).tags[tracking.FAMILY_TAG]
    )
    assert manifest["model_family"] in ("naive", "mean")
    _assert_pointer_agrees(settings)


def test_a_registered_model_renamed_in_mlflow_is_named_until_renamed_back(settings: Settings, capsys, monkeypatch) -> None:
    """``co2cast.world.co2`` renamed in the MLflow UI: every command says so in one line, nothing is registered afresh from v1."""
    first, _ = _run(settings, _lineup(settings, "mean"))
    client, name = tracking.configure(settings), tracking.registered_name(SID)
    client.rename_registered_model(name, "world emissions")
    latest, history = tasks.open_store(settings).read_bytes(f"forecasts/{SID}/latest.json"), tasks.alias_history(settings, SID)
    expected = f"{name} is not in the MLflow registry, but its versions are, under 'world emissions' (renamed in the MLflow UI?): "

    lines: list[str] = []
    with pytest.raises(tasks.RunIncomplete):  # another configuration: a run key to train
        tasks.forecast_all(settings, RunTrigger(series=SERIES), _lineup(settings, "drift"), progress=lines.append)
    tail = f"rename it back to {name}; the published forecasts and the alias history name those versions"
    assert lines[-1] == f"[1/1] {SID}: REFUSED: {expected}{tail}"
    assert [m.name for m in client.search_registered_models()] == ["world emissions"]
    _cli_env(monkeypatch, settings)
    for command in (["rollback", SID], ["forecasts", SID, "--as-of", "2014"]):
        assert cli.main(command) == 1
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {expected}")
    assert cli.main(["summary"]) == 0
    assert f"REGISTRY DISAGREES: {expected}" in capsys.readouterr().out
    assert tasks.open_store(settings).read_bytes(f"forecasts/{SID}/latest.json") == latest and tasks.alias_history(settings, SID) == history

    client.rename_registered_model("world emissions", name)  # renamed back: the run goes on through the gate
    second, published = _run(settings, _lineup(settings, "drift"))
    assert int(second.champion_version) > int(first.champion_version) and published.served
    assert tasks.alias_history(settings, SID)[-1]["from_version"] == first.champion_version
    _assert_pointer_agrees(settings)


def test_a_registered_model_deleted_in_mlflow_keeps_its_forecasts_listed_apart(settings: Settings, capsys, monkeypatch) -> None:
    """Deleted outright and registered afresh from v1: ``forecasts --as-of`` lists the old v1's forecast apart, not as the new v1's."""
    first, old = _run(settings, _lineup(settings, "mean"))
    client, name = tracking.configure(settings), tracking.registered_name(SID)
    client.delete_registered_model(name)
    _cli_env(monkeypatch, settings)
    assert cli.main(["forecasts", SID, "--as-of", "2014"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(f"{first.champion_version} (not in the registry)  naive")

    second, new = _run(settings, _lineup(settings, "drift"))
    assert second.champion_version == first.champion_version == "1" and new.served, "precondition: numbered from 1 again"
    rows = {row["manifest"]: row for row in tasks.forecasts_as_of(settings, SID, 2014)}
    assert set(rows) == {old.manifest, new.manifest}
    assert (rows[new.manifest]["family"], rows[new.manifest]["registered"]) == ("drift", True)
    assert (rows[old.manifest]["family"], rows[old.manifest]["registered"]) == ("naive", False)
    _assert_pointer_agrees(settings)


def test_a_registry_without_the_stores_decisions_is_refused_before_anything_is_trained(settings: Settings, tmp_path: Path) -> None:
    """A typo in MLFLOW_TRACKING_URI made a new SQLite registry without a word, and forecasts were served from it."""
    _run(settings, _lineup(settings, "drift"))
    before = _state(settings)
    typo = settings.model_copy(update={"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'typo' / 'mlflow.db'}"})
    with pytest.raises(tracking.RegistryMismatch) as refused:
        _run(typo, _lineup(typo, "drift", "mean"))
    message = str(refused.value)
    assert "has no 'co2cast' experiment, but the store" in message and "holds champion decisions for 1 series (e.g. world.co2)" in message
    assert message.endswith(
        "point MLFLOW_TRACKING_URI at the registry that made them (a new registry needs a new store, CO2CAST_STORE_URI)"
    )
    assert _state(settings) == before
    fresh = settings.model_copy(update={"mlflow_tracking_uri": typo.mlflow_tracking_uri, "store_uri": (tmp_path / "new").as_uri()})
    assert tracking.configure(fresh) is not None  # a new registry with a new store starts as the first run did


def test_rollback_takes_an_alias_as_the_ui_shows_it_and_names_the_aliases_there_are(settings: Settings, capsys, monkeypatch) -> None:
    """``--alias @drift`` is ``--alias drift``; an alias the model lacks is refused with the ones it has."""
    _run(settings, _lineup(settings, "drift"))
    _run(settings, _lineup(settings, "drift", "mean"))
    client, name = tracking.configure(settings), tracking.registered_name(SID)
    drift = client.get_model_version_by_alias(name, "drift")
    _cli_env(monkeypatch, settings)
    assert cli.main(["rollback", SID, "--alias", "@drift"]) == 0
    assert client.get_model_version_by_alias(name, "drift").version != drift.version
    aliases = sorted(client.get_registered_model(name).aliases)
    assert cli.main(["rollback", SID, "--alias", "@arima"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"error: {name} has no @arima; its aliases: {', '.join(aliases)}"


def test_a_family_alias_rollback_to_a_version_gone_from_the_registry_is_one_line(settings: Settings, capsys, monkeypatch) -> None:
    _run(settings, _lineup(settings, "drift"))
    _run(settings, _lineup(settings, "drift", "mean"))  # another configuration: @drift moves to its version
    client, name = tracking.configure(settings), tracking.registered_name(SID)
    drift = client.get_model_version_by_alias(name, "drift")
    assert tracking.previous_version(drift, "drift"), "precondition: @drift records the version before it"
    client.set_model_version_tag(name, drift.version, tracking.alias_tag("drift"), '{"previous": "99", "reason": "a deleted version"}')
    before = _state(settings)
    _cli_env(monkeypatch, settings)
    assert cli.main(["rollback", SID, "--alias", "drift"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"error: {name}@drift (version {drift.version}) records v99 before it, which is no longer in the registry (deleted in MLflow?): "
        f"nothing to roll back to; @drift stays v{drift.version}"
    )
    assert _state(settings) == before


def test_a_family_alias_rollback_is_recorded_in_the_history_and_moves_nothing_on_a_failure(settings: Settings, capsys, monkeypatch) -> None:
    """``rollback --alias drift`` went unrecorded, though the history is 'every champion decision and rollback'."""
    from pipeline.store import StoreUnavailable

    _run(settings, _lineup(settings, "drift"))
    _run(settings, _lineup(settings, "drift", "mean"))  # another configuration: @drift moves to its version
    client, name = tracking.configure(settings), tracking.registered_name(SID)
    drift = client.get_model_version_by_alias(name, "drift")
    previous = tracking.previous_version(drift, "drift")
    assert previous, "precondition: @drift records the version before it"
    before, history = _state(settings), tasks.alias_history(settings, SID)
    store = tasks.open_store(settings)
    write_bytes = type(store).write_bytes

    def failing(self, key: str, data: bytes, *args, **kwargs):
        if key.startswith("history/"):
            raise StoreUnavailable("simulated outage")
        return write_bytes(self, key, data, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(type(store), "write_bytes", failing)
        with pytest.raises(StoreUnavailable):
            tasks.rollback(settings, SID, alias="drift")
    assert _state(settings) == before and tasks.alias_history(settings, SID) == history  # all or nothing
    assert tracking.previous_version(client.get_model_version(name, drift.version), "drift") == previous

    assert tasks.rollback(settings, SID, alias="drift") == (str(drift.version), previous)
    record = tasks.alias_history(settings, SID)[-1]
    assert (record["alias"], record["from_version"], record["to_version"]) == ("drift", str(drift.version), previous)
    assert _state(settings)["latest"] == before["latest"] and _state(settings)["aliases"]["champion"] == before["aliases"]["champion"]
    _cli_env(monkeypatch, settings)
    capsys.readouterr()
    assert cli.main(["history", SID]) == 0
    assert f"rollback of @drift from version {drift.version}" in capsys.readouterr().out


@pytest.mark.parametrize("dangling", [False, True])
def test_a_pointer_removed_after_a_rollback_is_rebuilt_to_what_was_served(settings: Settings, dangling: bool) -> None:
    """co2cast's advice for a damaged latest.json (remove it and rerun) does not undo a rollback recorded in the alias history."""
    first, _ = _run(settings, _lineup(settings, "mean"), as_of_year=2013)
    second, _ = _run(settings, _lineup(settings, "drift"))
    assert second.champion_version != first.champion_version, "precondition: drift took @champion as of 2014"
    assert tasks.rollback(settings, SID) == (second.champion_version, first.champion_version)
    rolled_back, history = _state(settings), tasks.alias_history(settings, SID)
    store = tasks.open_store(settings)
    key = "forecasts/world.co2/latest.json"
    store.write_bytes(key, b'{"manifest": "forecasts/world.co2/asof=2')  # damaged: show says so and advises to remove it
    with pytest.raises(StoreDataError, match="remove it and rerun to rebuild"):
        tasks.show_forecast(settings, SID)
    if dangling:  # a pointer naming a forecast that is gone is rebuilt alike
        store.write_json(key, {"manifest": "forecasts/world.co2/asof=2014/gone/manifest.json", "as_of_year": 2014})
    else:
        store.delete(key)
    again, republished = _run(settings, _lineup(settings, "drift"))  # the nightly run: the run key rolled back
    assert again.run_key == second.run_key and not republished.served
    assert republished.served_version == first.champion_version and republished.served_as_of_year == 2013
    state = _state(settings)
    assert state["aliases"] == rolled_back["aliases"] and tasks.alias_history(settings, SID) == history
    assert state["latest"]["manifest"] == rolled_back["latest"]["manifest"]
    assert sorted(state["latest"]["rolled_back"]) == sorted(rolled_back["latest"]["rolled_back"])
    _assert_pointer_agrees(settings)
    tasks.show_forecast(settings, SID)


def test_a_pointer_removed_after_a_rollback_is_not_rebuilt_to_a_backfill_never_served(settings: Settings) -> None:
    """The rebuilt pointer serves what the history says was served last, not the newest forecast that verifies.

    A backfill as of 2013 (its gate left @champion alone) published after the forecast rolled back
    to (also as of 2013): the rebuild served the backfill's version while @champion stayed on the
    rollback's, for good.
    """
    first, _ = _run(settings, _lineup(settings, "mean"), as_of_year=2013)
    second, _ = _run(settings, _lineup(settings, "drift"))  # as of 2014
    back, published = _run(settings, _lineup(settings, "drift", "mean"), as_of_year=2013)  # a backfill: never served
    assert not published.served and back.champion_version not in (first.champion_version, second.champion_version), "precondition"
    assert tasks.rollback(settings, SID) == (second.champion_version, first.champion_version)
    rolled_back = _state(settings)
    tasks.open_store(settings).delete("forecasts/world.co2/latest.json")
    _run(settings, _lineup(settings, "drift"))  # the nightly run of the rolled-back run key
    state = _state(settings)
    assert state["aliases"] == rolled_back["aliases"]
    assert state["latest"]["manifest"] == rolled_back["latest"]["manifest"]
    _assert_pointer_agrees(settings)


def test_a_rolled_back_run_key_trained_again_moves_no_champion_when_the_pointer_is_removed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate's rolled-back check falls back to the alias history when latest.json is gone.

    A run whose gate took @champion, rolled back before its publish, latest.json removed, then the
    same run key trained again (a rerun healing a dead run): its gate moved @champion to a new
    version whose forecast the rebuilt pointer does not serve.
    """
    first, lineup, plan, second = _gated_not_published(settings)
    assert tasks.rollback(settings, SID) == (second.champion_version, first.champion_version)
    rolled_back = _state(settings)
    tasks.open_store(settings).delete("forecasts/world.co2/latest.json")
    with monkeypatch.context() as patch:
        patch.setattr(tracking, "find_complete_run", lambda *args, **kwargs: None)  # as if the run had been killed after its gate
        again = tasks.train_series(settings, plan, plan.series[0], lineup=lineup)
    assert str(tracking.alias_version(tracking.configure(settings), SID, "champion").version) == first.champion_version
    published = tasks.publish_series(settings, plan, again, lineup=lineup)
    assert not published.served
    state = _state(settings)
    assert state["aliases"]["champion"] == rolled_back["aliases"]["champion"]  # @drift follows the run's drift version, as it does
    assert state["latest"]["manifest"] == rolled_back["latest"]["manifest"]
    _assert_pointer_agrees(settings)


def test_summary_says_the_champion_gate_kept_the_champion(settings: Settings, capsys, monkeypatch) -> None:
    """A challenger that won the selection lost at the champion gate: ``co2cast summary`` said the champion was
    'kept by the selection policy although naive scored better', and scored it with this run's candidate of its
    family's name (another recipe here), not with the kept recipe's score on the same windows."""
    changed = _drift_reconfigured(settings)
    second, _ = _run(settings, changed, as_of_year=2014)
    record = tasks.alias_history(settings, SID)[-1]
    assert record["challenger_family"] == "naive" and "the champion stays" in record["reason"], "precondition: the gate kept drift"
    assert second.scores["naive"]["mase"] < second.scores["drift"]["mase"], "precondition: naive scored better than this 'drift'"
    expected = (
        f"champion drift: kept by the champion gate against the challenger naive (MASE on the same windows: champion "
        f"{record['champion_score']:.3f}, naive {record['challenger_score']:.3f}): {record['reason']}"
    )
    _cli_env(monkeypatch, settings)
    assert cli.main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "kept by the selection policy" not in out
    assert expected in out
    plan = tasks.plan_run(settings, RunTrigger(series=SERIES, as_of_year=2014), changed)
    (line,) = tasks.run_summary(settings, plan)
    assert "kept by the selection policy" not in line.text and expected in line.text
