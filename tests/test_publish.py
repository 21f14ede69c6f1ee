"""Publishing: the forecast GX gate, atomic layout, idempotent reruns, verified reads."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.models.baselines import DriftForecaster
from pipeline.payloads import Manifest
from pipeline.publish import IntegrityError, NotPublished, PublishRefused, forecast_table, publish, read_latest
from pipeline.store import ObjectStore, S3Store, StoreDataError, open_store

SID = "canada.co2_per_capita"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return open_store((tmp_path / "store").as_uri())
    return open_store(f"s3://{request.getfixturevalue('s3_bucket')}/p", endpoint_url=request.getfixturevalue("s3_endpoint"))


def _table(as_of: int = 2014, end: int = 2050) -> pd.DataFrame:
    years = np.arange(1980, as_of + 1)
    model = DriftForecaster().fit(10 + 0.1 * np.sin(years), years)
    frame = model.predict(end - as_of).to_frame()
    return forecast_table(
        frame, series_id=SID, model_name=f"co2cast.{SID}", model_version="3", family="drift", vintage="v1", as_of_year=as_of
    )


def _publish(store: ObjectStore, table: pd.DataFrame, key: str = "k1", as_of: int = 2014) -> Manifest:
    return publish(
        store,
        table,
        series_id=SID,
        run_key=key,
        horizon_end=2050,
        meta={"as_of_year": as_of, "vintage": "v1"},
        extras={"notes.json": b"{}"},
    )


def test_publish_layout_and_verified_read(store: ObjectStore) -> None:
    manifest = _publish(store, _table())
    prefix = f"forecasts/{SID}/asof=2014/k1"
    assert manifest.key == f"{prefix}/manifest.json"
    assert {e.name for e in manifest.files} == {"forecast.csv", "forecast.parquet", "notes.json"}
    for entry in manifest.files:
        data = store.read_bytes(entry.key)
        assert hashlib.sha256(data).hexdigest() == entry.sha256 and len(data) == entry.size
    assert store.read_json(f"forecasts/{SID}/latest.json")["manifest"] == manifest.key
    assert Manifest.of(store.read_json(manifest.key)) == manifest
    read_manifest, table = read_latest(store, SID)
    assert read_manifest == manifest and table["year"].tolist() == list(range(2015, 2051))
    # A pointer edited to serve another series' forecast (whose files verify) is not followed.
    store.write_json("forecasts/world.co2/latest.json", store.read_json(f"forecasts/{SID}/latest.json"))
    edited = rf"^world\.co2: latest\.json points at .*/{prefix}/manifest\.json, a forecast of {SID}: it was edited"
    with pytest.raises(IntegrityError, match=edited):
        read_latest(store, "world.co2")
    store.delete("forecasts/world.co2/latest.json")
    # The manifest edited by hand (its files untouched): its digest in latest.json gives it away.
    original = store.read_bytes(manifest.key)
    store.write_json(manifest.key, {**store.read_json(manifest.key), "last_year": 2060})
    with pytest.raises(IntegrityError, match=r"manifest\.json does not match the sha256 latest\.json recorded for it: it was edited"):
        read_latest(store, SID)
    store.write_bytes(manifest.key, original)
    assert read_latest(store, SID)[0] == manifest

    store.write_bytes(f"{prefix}/forecast.parquet", b"tampered")
    with pytest.raises(IntegrityError, match="does not match"):
        read_latest(store, SID)
    with pytest.raises(NotPublished, match=r"published: canada\.co2_per_capita"):
        read_latest(store, "world.co2")


def test_a_manifest_of_another_shape_is_a_problem_named_not_a_crash(store: ObjectStore) -> None:
    """What list_series, the scorecard and republishing check: a hand-edited manifest is a problem, not a TypeError."""
    from pipeline.publish import manifest_problem

    manifest = _publish(store, _table()).to_xcom()
    assert manifest_problem(store, manifest) is None
    for files in ("x", ["x"], [{"name": "forecast.csv"}], {"name": "forecast.csv"}):
        assert manifest_problem(store, {**manifest, "files": files}) == "its list of files is not what co2cast writes"
    moved = [{**entry, "key": "../../etc/passwd"} if entry["name"] == "notes.json" else entry for entry in manifest["files"]]
    assert (
        manifest_problem(store, {**manifest, "files": moved})
        == "'notes.json' is listed at '../../etc/passwd', outside the forecast's own folder"
    )


def test_an_unknown_series_among_many_gets_the_closest_ids(store: ObjectStore) -> None:
    names = ["canada", "france", "germany", "india", "japan", "kenya", "mexico", "norway", "peru", "spain", "world"]
    for name in names:
        store.write_json(f"forecasts/{name}.co2/latest.json", {"manifest": "m", "as_of_year": 2014})
    with pytest.raises(NotPublished, match=r"^no forecast published for 'wrld\.co2'; 11 series are published; did you mean world\.co2\?$"):
        read_latest(store, "wrld.co2")
    with pytest.raises(NotPublished, match=r"11 series are published \(co2cast summary lists them\)$"):
        read_latest(store, "atlantis.co2")


def _listing_cost(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """What finding the published series costs: every ``list`` call's prefix, and on S3 the entries each LIST request returned."""
    cost: dict[str, list] = {"list": [], "entries": []}
    real = type(store).list
    monkeypatch.setattr(type(store), "list", lambda self, prefix="": cost["list"].append(prefix) or real(self, prefix))
    if isinstance(store, S3Store):
        store.client.meta.events.register(
            "after-call.s3.ListObjectsV2",
            lambda parsed, **_: cost["entries"].append(len(parsed.get("Contents", [])) + len(parsed.get("CommonPrefixes", []))),
        )
    return cost


def test_finding_the_published_series_lists_their_folders_not_every_forecast_file(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped id, `summary` and the viewer's list (every 30 s) read one entry per series, however many forecasts each has.

    Listing every key under forecasts/ to keep the latest.json ones grew by six keys per forecast published
    (every vintage and backfill): at 1,700 series of 10 forecasts, 100 LIST requests one after another.
    """
    from pipeline import tasks
    from pipeline.viewer import data

    names = [f"s{i:02d}.co2" for i in range(12)]
    for name in names:
        store.write_json(f"forecasts/{name}/latest.json", {"manifest": "m", "as_of_year": 2014})
        for as_of in (2012, 2013, 2014):
            for file in ("forecast.csv", "forecast.parquet", "backtest.json", "candidates.parquet", "notes.json", "manifest.json"):
                store.write_bytes(f"forecasts/{name}/asof={as_of}/k{as_of}/{file}", b"{}")
    monkeypatch.setattr(tasks, "open_store", lambda settings: store)

    def mistyped() -> None:
        with pytest.raises(NotPublished, match=r"^no forecast published for .s0\.co2.; 12 series are published; did you mean "):
            read_latest(store, "s0.co2")

    readers = {
        "a mistyped id": mistyped,
        "summary": lambda: tasks.published_forecasts(None),
        "the viewer": lambda: data.list_published(store),
    }
    for reader, call in readers.items():
        cost = _listing_cost(store, monkeypatch)
        call()
        assert cost["list"] == [], f"{reader} listed every key under {cost['list']}"
        if isinstance(store, S3Store):
            assert cost["entries"] == [len(names)], f"{reader}: one LIST of one entry per series"
        monkeypatch.undo()
        monkeypatch.setattr(tasks, "open_store", lambda settings: store)


def test_a_series_folder_without_latest_json_is_not_published(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A publish stopped before its pointer (or latest.json removed by hand) leaves a folder: it is not named as published."""
    from pipeline import tasks
    from pipeline.viewer import data

    _publish(store, _table())
    store.write_bytes("forecasts/world.co2/asof=2014/k1/forecast.csv", b"year,mean\n")  # files, no manifest or pointer yet
    with pytest.raises(NotPublished, match=rf"^no forecast published for 'world\.co2'; published: {SID}$"):
        read_latest(store, "world.co2")
    monkeypatch.setattr(tasks, "open_store", lambda settings: store)
    assert [(sid, problem) for sid, _, _, problem in tasks.published_forecasts(None)] == [(SID, None)]
    assert [s.series_id for s in data.list_published(store).series] == [SID] and not data.list_published(store).unreadable
    store.delete(f"forecasts/{SID}/latest.json")
    assert tasks.published_forecasts(None) == []
    with pytest.raises(data.NothingPublished):
        data.list_published(store)
    with pytest.raises(NotPublished, match=r"published: none$"):
        read_latest(store, SID)
    # Among many, the closest id suggested is one with a pointer: world.co3's folder has none.
    for name in ["canada", "france", "germany", "india", "japan", "kenya", "mexico", "norway", "peru", "spain", "world"]:
        store.write_json(f"forecasts/{name}.co2/latest.json", {"manifest": "m", "as_of_year": 2014})
    store.write_bytes("forecasts/world.co3/asof=2014/k1/forecast.csv", b"year,mean\n")
    with pytest.raises(NotPublished, match=r"; did you mean world\.co2\?$"):
        read_latest(store, "world.co")


def test_rerun_of_a_key_rewrites_nothing(store: ObjectStore) -> None:
    first = _publish(store, _table())
    before = {k: store.read_bytes(k) for k in store.list()}
    assert _publish(store, _table()) == first
    assert {k: store.read_bytes(k) for k in store.list()} == before


@pytest.mark.parametrize(
    ("case", "breaks", "message"),
    [
        ("interval_inverted", lambda t: t.assign(lo_80=t["hi_95"] + 1), "lo_80 <= mean"),
        ("negative_mean", lambda t: t.assign(mean=-1.0, lo_80=-2.0, lo_95=-3.0), "non-negative"),
        ("missing_year", lambda t: t[t["year"] != 2030], "expect_table_row_count_to_equal"),
        ("short_horizon", lambda t: t[t["year"] <= 2040], "expect_table_row_count_to_equal"),
        ("duplicate_year", lambda t: pd.concat([t.iloc[:-1], t.iloc[[0]]]), "expect_column_values_to_be_unique"),
        ("missing_version", lambda t: t.assign(model_version=None), "model_version"),
        ("wrong_series", lambda t: t.assign(series_id="world.co2"), "expect_column_distinct_values_to_equal_set"),
    ],
)
def test_failed_forecast_validation_publishes_nothing(store: ObjectStore, case: str, breaks, message: str) -> None:
    good = _publish(store, _table(), key="good")
    pointer = store.read_bytes(f"forecasts/{SID}/latest.json")
    keys = store.list()
    bad = breaks(_table())
    with pytest.raises(PublishRefused, match="nothing published") as raised:
        publish(store, bad, series_id=SID, run_key="bad", horizon_end=2050, meta={"as_of_year": 2014})
    assert message in str(raised.value)
    assert store.list() == keys, "a refused forecast must not write a single file"
    assert store.read_bytes(f"forecasts/{SID}/latest.json") == pointer
    assert store.read_json(f"forecasts/{SID}/latest.json")["manifest"] == good.key


@pytest.mark.parametrize(("column", "factor"), [("mean", 4.0), ("hi_95", 20.0)])
def test_a_forecast_far_above_its_history_is_refused_in_one_line(store: ObjectStore, column: str, factor: float) -> None:
    table = _table()
    history_max = 10.1  # the series behind _table() never exceeds 10.1
    within = table.copy()
    publish(store, within, series_id=SID, run_key="ok", horizon_end=2050, meta={"as_of_year": 2014}, history_max=history_max)
    keys = store.list()
    bad = table.copy()
    bad.loc[bad.index[-1], column] = factor * history_max * 1.01
    if column == "mean":
        bad.loc[bad.index[-1], ["hi_80", "hi_95"]] = factor * history_max * 1.02
    with pytest.raises(PublishRefused, match=r"historic maximum") as raised:
        publish(store, bad, series_id=SID, run_key="bad", horizon_end=2050, meta={"as_of_year": 2014}, history_max=history_max)
    assert "\n" not in str(raised.value)
    assert store.list() == keys


def test_units_in_the_csv_the_parquet_metadata_and_the_manifest(store: ObjectStore) -> None:
    import pyarrow.parquet as pq

    manifest = _publish(store, _table())
    assert manifest.unit == "t CO2 per person"
    csv = pd.read_csv(io.BytesIO(store.read_bytes(manifest.file("forecast.csv").key)))
    assert set(csv["unit"]) == {"t CO2 per person"}
    schema = pq.read_schema(io.BytesIO(store.read_bytes(manifest.file("forecast.parquet").key)))
    assert schema.metadata[b"co2cast.unit"] == b"t CO2 per person"


def test_latest_follows_the_newest_as_of_year(store: ObjectStore) -> None:
    newest = _publish(store, _table(2014), key="new", as_of=2014)
    _publish(store, _table(2000), key="old", as_of=2000)  # a backfill publishes an older as-of
    assert store.read_json(f"forecasts/{SID}/latest.json")["manifest"] == newest.key
    assert store.exists(f"forecasts/{SID}/asof=2000/old/manifest.json")


def test_interval_bounds_are_cut_at_zero() -> None:
    frame = pd.DataFrame({"year": [2015], "mean": [0.1], "lo_80": [-0.2], "hi_80": [0.4], "lo_95": [-0.5], "hi_95": [0.7]})
    table = forecast_table(frame, series_id=SID, model_name="m", model_version="1", family="naive", vintage="v", as_of_year=2014)
    assert table[["lo_80", "lo_95"]].iloc[0].tolist() == [0.0, 0.0]


def test_only_plausible_candidate_forecasts_are_kept() -> None:
    from pipeline.publish import plausible_candidates
    from pipeline.series import MAX_HI95_FACTOR, MAX_MEAN_FACTOR

    def rows(family: str, mean: float, lo95: float = 0.5, hi95: float = 3.0) -> list[dict]:
        return [
            {"family": family, "year": year, "mean": mean, "lo_80": min(mean, 0.8), "hi_80": max(mean, 2.0), "lo_95": lo95, "hi_95": hi95}
            for year in (2015, 2016)
        ]

    history_max = 10.0
    frame = pd.DataFrame(
        rows("fine", 1.0)
        + rows("nan", float("nan"))
        + rows("huge", MAX_MEAN_FACTOR * history_max + 1, hi95=MAX_MEAN_FACTOR * history_max + 2)
        + rows("negative", 1.0, lo95=-0.1)
        + rows("wide", 1.0, hi95=MAX_HI95_FACTOR * history_max + 1)
        + rows("crossed", 1.0, lo95=0.9)  # lo_95 above lo_80
        + rows("also_fine", 2.5)
    )
    kept, dropped = plausible_candidates(frame, history_max)
    assert dropped == ["crossed", "huge", "nan", "negative", "wide"]
    assert kept["family"].tolist() == ["fine", "fine", "also_fine", "also_fine"]
    # Without the history's maximum only the bounds that need none apply.
    kept, dropped = plausible_candidates(frame, None)
    assert dropped == ["crossed", "nan", "negative"]


def test_two_runs_moving_the_pointer_at_once_never_move_it_backwards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The newer as-of year reads the pointer first, the older one reads it before the newer writes.

    A slow read of ``latest.json`` widens the window so both read "no pointer yet": without the
    series lock the older run's write lands last and the pointer goes back to 2009.
    """
    import threading
    import time

    from pipeline import layout
    from pipeline.publish import point_latest

    store = open_store((tmp_path / "store").as_uri())
    real = store.read_json_or_none
    newer_read = threading.Event()  # the older run starts once the newer one has read the pointer, however slow the machine
    errors: list[BaseException] = []

    def slow(key: str, *shape: object) -> object:
        value = real(key, *shape)
        if key == layout.forecast_latest("x.co2"):
            newer_read.set()
            time.sleep(0.4)
        return value

    def run(manifest: dict) -> None:
        try:
            point_latest(store, "x.co2", manifest)
        except BaseException as error:  # a thread's exception is otherwise lost
            errors.append(error)

    monkeypatch.setattr(store, "read_json_or_none", slow)
    manifests = {
        year: {"key": f"forecasts/x.co2/asof={year}/k{year}/manifest.json", "as_of_year": year, "run_key": f"k{year}"}
        for year in (2009, 2014)
    }
    for manifest in manifests.values():  # a pointer is followed only to a manifest that exists
        store.write_json(manifest["key"], manifest)
    newer = threading.Thread(target=run, args=(manifests[2014],))
    older = threading.Thread(target=run, args=(manifests[2009],))
    newer.start()
    assert newer_read.wait(timeout=60)
    older.start()
    newer.join()
    older.join()
    assert errors == []
    assert real(layout.forecast_latest("x.co2"))["as_of_year"] == 2014
    assert store.list("locks/") == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("as_of_year", 2100), ("run_key", "other"), ("model_version", "9"), ("vintage", "v0"), ("published_at", "2000-01-01T00:00:00+00:00")],
)
def test_a_pointer_field_edited_apart_from_its_manifest_is_named_not_trusted(store: ObjectStore, field: str, value: object) -> None:
    """latest.json's own fields are covered by no hash: each is checked against the manifest whose sha256 it records."""
    _publish(store, _table(2013), key="k13", as_of=2013)
    key = f"forecasts/{SID}/latest.json"
    original = store.read_bytes(key)
    store.write_json(key, {**store.read_json(key), field: value})
    expected = rf"latest\.json is not what co2cast wrote \(its '{field}' is .*\): it was damaged or edited; restore it from a backup"
    with pytest.raises(StoreDataError, match=expected) as raised:
        read_latest(store, SID)
    assert "\n" not in str(raised.value)
    # A newer as-of year is not taken for a backfill of a pointer edited to serve "2100": nothing is published past it.
    with pytest.raises(StoreDataError, match=expected):
        _publish(store, _table(2014), key="k14", as_of=2014)
    store.write_bytes(key, original)
    _publish(store, _table(2014), key="k14", as_of=2014)
    assert read_latest(store, SID)[0].as_of_year == 2014


def test_a_verified_read_gets_each_object_once(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """`show`, the viewer and each publish follow latest.json: one GET of the pointer, the manifest and each file.

    The pointer's fields are checked against the manifest, and the manifest against the sha256 the
    pointer recorded, on the same bytes; the table is parsed from the forecast.parquet bytes whose
    sha256 was checked (it was read a second time to parse it: a file replaced in between was shown).
    """
    manifest = _publish(store, _table())
    reads: list[str] = []
    real = type(store).read_bytes

    def counted(self: ObjectStore, key: str) -> bytes:
        reads.append(key)
        return real(self, key)

    monkeypatch.setattr(type(store), "read_bytes", counted)
    _, table = read_latest(store, SID)
    assert sorted(reads) == sorted([f"forecasts/{SID}/latest.json", manifest.key, *(e.key for e in manifest.files)])
    pd.testing.assert_frame_equal(table, _table().reset_index(drop=True), check_dtype=False, check_like=True)
