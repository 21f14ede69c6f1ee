"""Vintage awareness: a new vintage that revises a series retrains it and says so; one that leaves
it untouched skips it (same run key); the newest year is flagged provisional in the published table.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import mlflow
import pytest

from pipeline import ingest, layout, tasks, track_record, tracking
from pipeline.candidates import NewestFamilyChampion
from pipeline.config import Settings
from pipeline.core import ForecastSpec
from pipeline.models.baselines import DriftForecaster, NaiveForecaster
from pipeline.payloads import RunTrigger


def _lineup(settings: Settings) -> tasks.Lineup:
    return tasks.Lineup(
        candidates={"naive": NaiveForecaster(), "drift": DriftForecaster()},
        select=NewestFamilyChampion(champion="drift", always_register=("drift",)),
        spec=ForecastSpec(horizon_end=settings.horizon_end),
    )


def _revised(source: Path, into: Path, entity: str, year: int, factor: float) -> Path:
    """A copy of the source with one entity's co2 of one year scaled (a revision of history)."""
    with source.open() as handle:
        reader = csv.DictReader(handle)
        rows, fields = list(reader), reader.fieldnames
    for row in rows:
        if row["country"] == entity and int(row["year"]) == year:
            row["co2"] = repr(float(row["co2"]) * factor)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    into.write_text(buffer.getvalue())
    return into


@pytest.fixture
def settings(tmp_path: Path, small_owid: Path) -> Settings:
    settings = Settings(
        home=tmp_path / "home",
        store_uri=(tmp_path / "store").as_uri(),
        mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        data_dirs=str(tmp_path),
    )
    ingest.ingest(settings, tasks.open_store(settings), str(small_owid))
    return settings


def _forecast(settings: Settings, year: int, series: str = "Canada:co2,World:co2"):
    return tasks.forecast_all(settings, RunTrigger(series=series, as_of_year=year), _lineup(settings))


def _parent_runs(settings: Settings) -> int:
    client = tracking.configure(settings)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    return len(client.search_runs([experiment.experiment_id], filter_string="tags.`co2cast.complete` = 'true'"))


def test_a_revision_retrains_the_revised_series_only_and_says_so(
    settings: Settings, small_owid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = {t.series_id: t for t, _ in _forecast(settings, 2012)}
    assert _parent_runs(settings) == 2

    # A new vintage that revises Canada's 2005 by 10 % and leaves World untouched.
    ingest.ingest(settings, tasks.open_store(settings), str(_revised(small_owid, tmp_path / "v2.csv", "Canada", 2005, 1.10)))
    plan = tasks.plan_run(settings, RunTrigger(series="Canada:co2,World:co2", as_of_year=2012), _lineup(settings))
    keys = {item.series_id: item.run_key for item in plan.series}
    assert keys["world.co2"] == first["world.co2"].run_key and keys["canada.co2"] != first["canada.co2"].run_key

    second = {t.series_id: t for t, _ in _forecast(settings, 2012)}
    assert _parent_runs(settings) == 3  # only Canada retrained
    assert second["world.co2"].run_id == first["world.co2"].run_id
    revision = second["canada.co2"].revision
    assert revision is not None and revision["material"] and revision["year_of_max_change"] == 2005
    assert revision["max_relative_change"] > settings.revision_threshold
    run = mlflow.get_run(second["canada.co2"].run_id)
    assert run.data.tags["co2cast.revision_material"] == "true" and run.data.params["revision_year_of_max_change"] == "2005"

    store = tasks.open_store(settings)
    manifest = store.read_json(layout.forecast_manifest("canada.co2", 2012, keys["canada.co2"]))
    assert manifest["revision"]["material"] and manifest["vintage"] == plan.vintage
    lines = {line.series_id: line.text for line in tasks.run_summary(settings, plan)}
    assert "history revised" in lines["canada.co2"] and "history revised" not in lines["world.co2"]


def test_a_tiny_revision_is_reported_but_not_material(settings: Settings, small_owid: Path, tmp_path: Path) -> None:
    _forecast(settings, 2012, "Canada:co2")
    ingest.ingest(settings, tasks.open_store(settings), str(_revised(small_owid, tmp_path / "v2.csv", "Canada", 2005, 1.001)))
    [(trained, _)] = _forecast(settings, 2012, "Canada:co2")
    assert trained.revision is not None and not trained.revision["material"] and trained.revision["changed_years"] == 1


def test_the_newest_year_is_provisional_in_the_published_table(settings: Settings) -> None:
    _, newest = _forecast(settings, 2014, "Canada:co2")[0]
    _, older = _forecast(settings, 2012, "Canada:co2")[0]
    store = tasks.open_store(settings)
    for published, flag in ((newest, True), (older, False)):
        manifest = store.read_json(published.manifest)
        csv_key = next(f["key"] for f in manifest["files"] if f["name"] == "forecast.csv")
        rows = list(csv.DictReader(io.StringIO(store.read_bytes(csv_key).decode())))
        assert {row["provisional"] for row in rows} == {str(flag)} and manifest["provisional"] is flag


def test_a_revision_before_a_gap_does_not_retrain_one_after_it_does(settings: Settings, small_owid: Path, tmp_path: Path) -> None:
    """France's CO2 misses 1803 and 1805-1809: the values of 1802 and 1804 are left out of its model."""
    [(first, _)] = _forecast(settings, 2012, "France:co2")
    assert first.left_out is not None and first.left_out["last_year"] == 1804
    runs = _parent_runs(settings)

    # A vintage that revises only the left-out 1804: same run key, nothing retrained.
    ingest.ingest(settings, tasks.open_store(settings), str(_revised(small_owid, tmp_path / "v2.csv", "France", 1804, 1.5)))
    [(early, _)] = _forecast(settings, 2012, "France:co2")
    assert early.run_key == first.run_key and early.run_id == first.run_id and _parent_runs(settings) == runs

    # One that revises 2005, inside the modelled stretch: retrained; the revision compares the
    # modelled stretches, so the left-out years do not count as dropped.
    ingest.ingest(settings, tasks.open_store(settings), str(_revised(small_owid, tmp_path / "v3.csv", "France", 2005, 1.10)))
    [(late, _)] = _forecast(settings, 2012, "France:co2")
    assert late.run_key != first.run_key and _parent_runs(settings) == runs + 1
    assert late.revision is not None and late.revision["year_of_max_change"] == 2005 and late.revision["dropped_years"] == 0
    assert late.revision["compared_years"] == 2012 - first.left_out["gap_last"]


def test_a_backfill_compares_histories_up_to_its_own_as_of_year(settings: Settings, small_owid: Path, tmp_path: Path) -> None:
    _forecast(settings, 2012, "Canada:co2")  # served: as of 2012, vintage 1
    ingest.ingest(settings, tasks.open_store(settings), str(_revised(small_owid, tmp_path / "v2.csv", "Canada", 2005, 1.001)))
    [(backfill, _)] = tasks.forecast_all(settings, RunTrigger(run_type="backfill", series="Canada:co2", as_of_year=2008), _lineup(settings))
    # The history to 2008 lost no year: 2009-2012 are past this run's as-of year, not dropped by vintage 2.
    assert backfill.revision is not None and backfill.revision["dropped_years"] == 0
    assert backfill.revision["changed_years"] == 1 and not backfill.revision["material"]


def test_a_run_on_an_older_vintage_leaves_the_scorecard_and_the_revision_check_alone(
    settings: Settings, small_owid: Path, tmp_path: Path
) -> None:
    old_vintage = tasks.latest_vintage(settings)["vintage"]
    _forecast(settings, 2010, "Canada:co2")
    ingest.ingest(settings, tasks.open_store(settings), str(_revised(small_owid, tmp_path / "v2.csv", "Canada", 2011, 1.10)))
    new_vintage = tasks.latest_vintage(settings)["vintage"]
    _forecast(settings, 2012, "Canada:co2")
    store = tasks.open_store(settings)
    card = store.read_bytes(layout.scorecard("canada.co2"))
    assert set(track_record.read_scorecard(store, "canada.co2")["scored_vintage"]) == {new_vintage}

    trigger = RunTrigger(series="Canada:co2", as_of_year=2009, vintage=old_vintage)
    [(pinned_run, _)] = tasks.forecast_all(settings, trigger, _lineup(settings))
    assert pinned_run.vintage == old_vintage and pinned_run.revision is None
    # Not re-scored against the older actuals (Canada 2011 10 % lower there).
    assert store.read_bytes(layout.scorecard("canada.co2")) == card
