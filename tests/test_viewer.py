"""The forecast viewer: its reader (pipeline.viewer.data) and its page, through Streamlit's AppTest.

A session fixture runs the real pipeline once (ingest of the repository's OWID file, then
``forecast_all`` for Canada's CO2 per capita and the World's CO2) into a temporary home, so
every test reads files the pipeline really published. Tests that change the store (tamper,
add a scorecard, move it to S3) work on a copy.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from pipeline import ingest, layout, tasks
from pipeline.config import Settings
from pipeline.models.baselines import DriftForecaster
from pipeline.payloads import RunTrigger
from pipeline.publish import POINTER_COPIES, publish, read_latest
from pipeline.store import LocalStore, S3Store
from pipeline.viewer import APP, data

SERIES = "Canada:co2_per_capita,World:co2"
ENTITIES = {"Canada", "World", "Europe", "Germany"}
CANADA = "canada.co2_per_capita"
WORLD = "world.co2"


@pytest.fixture(scope="session")
def published_home(tmp_path_factory: pytest.TempPathFactory, owid_csv: Path) -> Path:
    """A co2cast home where the real pipeline ingested and published two series."""
    root = tmp_path_factory.mktemp("viewer")
    lines = owid_csv.read_text().splitlines()
    rows = [line for line in lines[1:] if line.split(",")[1] in ENTITIES]
    source = root / "owid-small.csv"
    source.write_text("\n".join([lines[0], *rows]) + "\n")
    settings = Settings(home=root / "home")
    store = LocalStore(root / "home" / "store")
    assert ingest.ingest(settings, store, str(source))["status"] == "curated"
    result = tasks.forecast_all(settings, RunTrigger(run_type="cli", series=SERIES))
    assert [trained.series_id for trained, _ in result] == [CANADA, WORLD]
    return root / "home"


@pytest.fixture
def home_copy(published_home: Path, tmp_path: Path) -> Path:
    """A private copy of the published home, for tests that change the store."""
    target = tmp_path / "home"
    shutil.copytree(published_home / "store", target / "store")
    return target


def _latest(store: LocalStore, series_id: str) -> tuple[dict, pd.DataFrame]:
    """The published manifest (as the plain dict the viewer holds) and forecast table."""
    manifest, table = read_latest(store, series_id)
    return manifest.to_xcom(), table


def _use_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> LocalStore:
    """Point the settings (what the page reads) at a home with the default local store."""
    for name in ("CO2CAST_STORE_URI", "CO2CAST_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CO2CAST_HOME", str(home))
    return LocalStore(home / "store")


def _app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=120)


def _charts(at: AppTest) -> list[list[pd.DataFrame]]:
    """Each Altair chart on the page as the data frames it plots (Streamlit ships them as Arrow)."""
    return [[pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets] for chart in at.get("vega_lite_chart")]


def _lines(at: AppTest) -> pd.DataFrame:
    """The lines of the main chart: ``year, value, line``."""
    frames = [f for f in _charts(at)[0] if "line" in f.columns and "note" not in f.columns]
    return pd.concat(frames, ignore_index=True)


def _owid_values(owid_csv: Path, entity: str, variable: str) -> pd.Series:
    """The series as the OWID CSV has it, read independently of the pipeline."""
    raw = pd.read_csv(owid_csv, usecols=["country", "year", variable])
    rows = raw[raw["country"] == entity].dropna(subset=[variable])
    return rows.set_index("year")[variable].astype(float)


#: An entity name a release may hold (letters, under 100 characters, no control character) that is Markdown.
HOSTILE = "[Evil](https://evil.example) **Land** ![p](https://evil.example/p.png) :red[x] $x$ www.evil.example"


def _shown(markdown: str) -> str:
    """What a markdown element's body shows: rendered as GitHub-flavoured Markdown (autolinks too)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("gfm-like").render(markdown)


def _text(markdown: str) -> str:
    """A markdown element's body rendered, the tags dropped: its text, as remark-gfm's autolinking sees it."""
    return html.unescape(re.sub(r"<[^>]*>", "", _shown(markdown))).strip()


def _plain(markdown: str) -> str:
    """The text a person reads in a markdown element (an error, a warning): invisible word joiners dropped too."""
    return _text(markdown).replace("\u2060", "")


#: GitHub's autolink literals as Streamlit's remark-gfm finds them: in the text after the escapes are
#: resolved (mdast-util-gfm-autolink-literal's two patterns), so escaping alone does not stop them.
AUTOLINK = re.compile(r"(?:https?://|www(?=\.))[-.\w]+|[-.\w+]+@[-\w]+(?:\.[-\w]+)+", re.IGNORECASE)


def _autolinked(markdown: str) -> list[str]:
    """What the browser would make a link of in a markdown element, though markdown-it (``_shown``) does not."""
    return AUTOLINK.findall(_text(markdown))


# -- the reader ------------------------------------------------------------------------------


def test_lists_published_series_with_names_kinds_and_units(published_home: Path) -> None:
    published = data.list_published(LocalStore(published_home / "store")).series
    by_id = {s.series_id: s for s in published}
    assert list(by_id) == [CANADA, WORLD]  # sorted by entity; only what was published
    canada, world = by_id[CANADA], by_id[WORLD]
    assert (canada.entity, canada.variable, canada.aggregate, canada.units) == ("Canada", "co2_per_capita", False, "t CO2 per person")
    assert (world.entity, world.variable, world.aggregate, world.units) == ("World", "co2", True, "Mt CO2")
    assert canada.label == "Canada — CO2 per capita (t CO2 per person)"
    assert world.label == "World (aggregate) — CO2 emissions (Mt CO2)"
    assert canada.as_of_year == world.as_of_year == 2014


def test_aggregates_are_regions_and_groups_not_countries() -> None:
    assert data.is_aggregate(None) and data.is_aggregate(pd.NA) and data.is_aggregate("OWID_WRL") and data.is_aggregate("")
    assert not data.is_aggregate("CAN") and not data.is_aggregate("OWID_KOS")


def test_load_series_reads_the_published_forecast_scores_and_history(published_home: Path, owid_csv: Path) -> None:
    store = LocalStore(published_home / "store")
    canada = next(s for s in data.list_published(store).series if s.series_id == CANADA)
    view = data.load_series(store, canada)
    manifest, table = _latest(store, CANADA)
    assert view.manifest == manifest
    assert view.forecast["year"].tolist() == list(range(2015, 2051)) == table["year"].tolist()
    np.testing.assert_allclose(view.forecast["mean"], table["mean"])
    assert view.horizon_end == 2050
    # History is the curated vintage's actuals: the OWID file's own numbers, last year provisional.
    expected = _owid_values(owid_csv, "Canada", "co2_per_capita")
    assert view.history["year"].tolist() == expected.index.tolist()
    np.testing.assert_allclose(view.history["value"], expected.to_numpy())
    assert view.provisional_year == 2014 and view.history["provisional"].sum() == 1
    # Scores: every family of backtest.json, the champion flagged, best MASE first.
    entry = next(e for e in manifest["files"] if e["name"] == "backtest.json")
    scores = json.loads((published_home / "store" / entry["key"]).read_text())
    assert set(view.scores["family"]) == set(scores)
    assert view.scores.loc[view.scores["champion"], "family"].tolist() == [manifest["model_family"]]
    assert view.scores["mase"].is_monotonic_increasing
    assert view.scores.columns[:3].tolist() == ["family", "champion", "mase"]
    assert view.scorecard is None  # one vintage: no actual yet for any published year


def test_published_candidates_are_the_fitted_challengers_forecasts(published_home: Path) -> None:
    store = LocalStore(published_home / "store")
    for series_id in (CANADA, WORLD):
        manifest, table = _latest(store, series_id)
        entry = next(e for e in manifest["files"] if e["name"] == data.CANDIDATES_FILE)
        raw = pd.read_parquet(io.BytesIO(store.read_bytes(entry["key"])))
        registered = manifest["trained"]["versions"]
        # Every registered family, plus the best-ranked others, each forecast over the same years.
        assert set(registered) < set(raw["family"])
        for _, rows in raw.groupby("family"):
            assert rows["year"].tolist() == table["year"].tolist()
            assert (rows["lo_95"] <= rows["lo_80"]).all() and (rows["lo_80"] <= rows["mean"]).all()
            assert (rows["mean"] <= rows["hi_80"]).all() and (rows["hi_80"] <= rows["hi_95"]).all()
            assert (rows["lo_95"] >= 0).all()  # floored like the published forecast
        family = manifest["model_family"]
        # A first run: the champion is the version this run registered for its family.
        assert str(registered.get(family)) == str(manifest["model_version"])
        # Its row was made in training by the fitted model; the published forecast comes from
        # the registered version loaded back: the same numbers.
        mine = raw[raw["family"] == family].set_index("year")
        for column in data.BAND_COLUMNS:
            np.testing.assert_allclose(table.set_index("year")[column], mine[column], rtol=1e-9)
        view = data.load_series(store, next(s for s in data.list_published(store).series if s.series_id == series_id))
        assert view.candidates is not None
        assert set(view.candidates["family"]) == set(raw["family"]) - {family}  # the champion is drawn once


def test_a_series_page_reads_each_published_file_once(published_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page shows the bytes whose sha256 was checked: forecast, backtest scores and candidates are not fetched again."""
    store = LocalStore(published_home / "store")
    canada = next(s for s in data.list_published(store).series if s.series_id == CANADA)
    manifest, _ = read_latest(store, CANADA)
    reads: list[str] = []
    real = LocalStore.read_bytes

    def counted(self: LocalStore, key: str) -> bytes:
        reads.append(key)
        return real(self, key)

    monkeypatch.setattr(LocalStore, "read_bytes", counted)
    view = data.load_series(store, canada)
    listed = [entry.key for entry in manifest.files]
    assert {"backtest.json", "forecast.parquet"} <= {entry.name for entry in manifest.files} and view.candidates is not None
    assert sorted(key for key in reads if key in listed) == sorted(listed)


def test_shown_range_joins_history_and_forecast(published_home: Path) -> None:
    store = LocalStore(published_home / "store")
    view = data.load_series(store, next(s for s in data.list_published(store).series if s.series_id == CANADA))
    shown = data.shown_range(view, 2000, 2030)
    assert shown["year"].tolist() == list(range(2000, 2031))
    history, ahead = shown[shown["kind"] == "history"], shown[shown["kind"] == "forecast"]
    assert history["year"].max() == 2014 and ahead["year"].min() == 2015
    assert history["value"].notna().all() and history["mean"].isna().all()
    assert ahead["value"].isna().all()
    assert (ahead["lo_95"] <= ahead["lo_80"]).all() and (ahead["lo_80"] <= ahead["mean"]).all()
    assert (ahead["mean"] <= ahead["hi_80"]).all() and (ahead["hi_80"] <= ahead["hi_95"]).all()
    assert shown.loc[shown["provisional"], "year"].tolist() == [2014]
    back = pd.read_csv(io.BytesIO(data.range_csv(shown, view)))
    assert back["year"].tolist() == list(range(2000, 2031))
    assert set(back["series_id"]) == {CANADA} and set(back["units"]) == {"t CO2 per person"}
    np.testing.assert_allclose(back.loc[back["year"] == 2030, "mean"], view.forecast.loc[view.forecast["year"] == 2030, "mean"], rtol=1e-5)
    assert data.shown_range(view, 2040, 2050)["kind"].eq("forecast").all()
    with pytest.raises(ValueError, match="after the end year"):
        data.shown_range(view, 2031, 2030)


# -- the page --------------------------------------------------------------------------------


def test_page_shows_the_champion_forecast(published_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _use_home(monkeypatch, published_home)
    manifest, table = _latest(store, CANADA)
    at = _app().run()
    assert not at.exception and not at.error
    assert at.selectbox(key="series").value == CANADA  # the study's series first
    assert at.selectbox(key="series").options == [
        "Canada — CO2 per capita (t CO2 per person)",
        "World (aggregate) — CO2 emissions (Mt CO2)",
    ]
    end = at.number_input(key="end")
    assert end.value == 2050 and end.max == 2050  # the end year goes up to the horizon
    assert at.subheader[0].value == "Canada — CO2 per capita (t CO2 per person)"
    metrics = {m.label: m.value for m in at.metric}
    assert _shown(metrics["Champion"]) == f"<p>v{manifest['model_version']} · {manifest['model_family']}</p>\n"
    assert metrics["Vintage"] == manifest["vintage"] and metrics["As of year"] == "2014" and metrics["Provisional year"] == "2014"
    assert manifest["model_name"] in _shown(at.caption[0].value)
    lines = _lines(at)
    forecast_line = lines[lines["line"] == "Forecast (champion)"].set_index("year")["value"]
    np.testing.assert_allclose(forecast_line.loc[2015:].to_numpy(), table["mean"].to_numpy())
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert "CO2 per capita (t CO2 per person)" in json.dumps(spec)  # the axis names the units
    assert at.download_button[0].label == f"Download {at.number_input(key='start').value}–2050 as CSV"


def test_page_follows_the_chosen_range(published_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _use_home(monkeypatch, published_home)
    at = _app().run()
    at.number_input(key="start").set_value(1990)
    at.number_input(key="end").set_value(2030).run()
    assert not at.exception and not at.error
    shown = at.dataframe[0].value
    assert shown["year"].tolist() == list(range(1990, 2031))
    lines = _lines(at)
    assert lines["year"].min() == 1990 and lines["year"].max() == 2030
    assert at.download_button[0].label == "Download 1990–2030 as CSV"
    at.number_input(key="start").set_value(2040)
    at.number_input(key="end").set_value(2020).run()
    assert "after the end year" in at.warning[0].value and not at.get("vega_lite_chart")


@pytest.mark.parametrize(("start", "end"), [(1990, 2010), (2014, 2014), (1964, 2014)])
def test_a_range_of_history_only_draws_the_history(published_home: Path, monkeypatch: pytest.MonkeyPatch, start: int, end: int) -> None:
    """A range that ends at or before the as-of year has no forecast year: the page drew a traceback instead."""
    _use_home(monkeypatch, published_home)
    at = _app().run()
    at.number_input(key="start").set_value(start)
    at.number_input(key="end").set_value(end).run()
    assert not at.exception and not at.error
    lines = _lines(at)
    assert set(lines["line"]) == {"History"} and lines["year"].tolist() == list(range(start, end + 1))
    assert at.dataframe[0].value["kind"].eq("history").all()
    assert at.download_button[0].label == f"Download {start}–{end} as CSV"


@pytest.mark.parametrize(("start", "end"), [(1905, 1915), (1905, 1925)])
def test_a_range_in_a_gap_of_the_history_draws_the_chosen_years(
    published_home: Path, monkeypatch: pytest.MonkeyPatch, start: int, end: int
) -> None:
    """A release with no values in the chosen years (a gap, as Belgium's CO2 has in 1810-1820): a traceback (int(NaN)) before."""
    _use_home(monkeypatch, published_home)
    history = data._history
    monkeypatch.setattr(data, "_history", lambda *a: history(*a).query("year < 1900 or year > 1920").reset_index(drop=True))
    at = _app().run()
    at.number_input(key="start").set_value(start)
    at.number_input(key="end").set_value(end).run()
    assert not at.exception and not at.error
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert [start, end] in [layer["encoding"]["x"]["scale"]["domain"] for layer in spec["layer"]]  # the chosen years, drawn
    said = [_plain(i.value) for i in at.info if f"no values for this series in {start}–{end}" in _plain(i.value)]
    assert len(said) == (1 if end < 1921 else 0)
    assert at.download_button[0].label == f"Download {start}–{end} as CSV" and at.subheader[1].value.startswith("Candidates")
    assert at.dataframe[0].value["year"].tolist() == list(range(1921, end + 1))


def test_page_filters_by_variable_and_kind(published_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _use_home(monkeypatch, published_home)
    at = _app().run()
    at.selectbox(key="variable").set_value("co2").run()
    assert at.selectbox(key="series").value == WORLD
    assert at.subheader[0].value == "World (aggregate) — CO2 emissions (Mt CO2)"
    assert "CO2 emissions (Mt CO2)" in at.get("vega_lite_chart")[0].proto.spec
    at.selectbox(key="variable").set_value("all")
    at.radio(key="kind").set_value("countries").run()
    assert at.selectbox(key="series").options == ["Canada — CO2 per capita (t CO2 per person)"]
    at.selectbox(key="variable").set_value("co2").run()
    assert "No published series matches" in at.info[0].value and not at.get("vega_lite_chart")


def test_page_shows_candidates_scores_and_overlays_their_forecasts_on_request(
    published_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _use_home(monkeypatch, published_home)
    manifest, _ = _latest(store, CANADA)
    entry = next(e for e in manifest["files"] if e["name"] == "backtest.json")
    scores = json.loads(store.read_bytes(entry["key"]))
    at = _app().run()
    table = at.dataframe[1].value
    assert set(table["family"]) == set(scores)
    for family, metrics in scores.items():
        assert table.loc[table["family"] == family, "mase"].item() == pytest.approx(metrics["mase"])
    assert not any("not among the published files" in i.value for i in at.info)
    assert any(i.value.startswith("No scorecard yet") for i in at.info)
    assert set(_lines(at)["line"]) == {"History", "Forecast (champion)"}  # overlay only on request
    at.toggle(key="overlay").set_value(True).run()
    assert not at.exception and not at.error
    lines = _lines(at)
    view = data.load_series(store, next(s for s in data.list_published(store).series if s.series_id == CANADA))
    assert view.candidates is not None
    assert set(lines["line"]) == {"History", "Forecast (champion)"} | {f"candidate: {f}" for f in view.candidates["family"]}
    start, end = at.number_input(key="start").value, at.number_input(key="end").value
    for family, rows in view.candidates.groupby("family"):
        drawn = lines[lines["line"] == f"candidate: {family}"].set_index("year")["value"]
        expected = rows[(rows["year"] >= start) & (rows["year"] <= end)].set_index("year")["mean"]
        assert drawn.index.tolist() == expected.index.tolist()
        np.testing.assert_allclose(drawn.to_numpy(), expected.to_numpy())


def test_page_says_when_the_candidates_forecasts_are_not_published(home_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A forecast published without ``candidates.parquet`` (through the real publish path)."""
    store = _use_home(monkeypatch, home_copy)
    manifest, table = _latest(store, CANADA)
    keep = ("forecast.csv", "forecast.parquet", data.CANDIDATES_FILE)
    extras = {e["name"]: store.read_bytes(e["key"]) for e in manifest["files"] if e["name"] not in keep}
    meta = {k: manifest[k] for k in ("vintage", "as_of_year", "model_name", "model_version", "model_family")}
    publish(store, table, series_id=CANADA, run_key="without-candidates", horizon_end=2050, meta=meta, extras=extras)
    at = _app().run()
    assert not at.exception and not at.error
    assert not at.toggle  # nothing to overlay
    assert any("candidates' own forecasts are not among the published files" in i.value for i in at.info)
    assert len(at.dataframe[1].value)  # the backtest scores are still shown


def _scorecard(history: pd.DataFrame) -> pd.DataFrame:
    """Past forecasts of a real baseline (as of 2004 and 2009) against the actuals since."""
    rows = []
    for as_of in (2004, 2009):
        past = history[history["year"] <= as_of]
        model = DriftForecaster().fit(past["value"].to_numpy(), past["year"].to_numpy())
        predicted = model.predict(2014 - as_of, levels=(80, 95)).to_frame()
        actual = history.set_index("year")["value"]
        for row in predicted.itertuples(index=False):
            rows.append(
                {"series_id": CANADA, "as_of_year": as_of, "year": int(row.year), "mean": row.mean, "lo_95": row.lo_95, "hi_95": row.hi_95}
                | {"actual": float(actual[int(row.year)]), "family": "drift"}
            )
    return pd.DataFrame(rows)


def test_page_shows_the_track_record_when_a_scorecard_exists(home_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _use_home(monkeypatch, home_copy)
    history = data.load_series(store, next(s for s in data.list_published(store).series if s.series_id == CANADA)).history
    scorecard = _scorecard(history)
    buffer = io.BytesIO()
    scorecard.to_parquet(buffer, index=False)
    store.write_bytes(layout.scorecard(CANADA), buffer.getvalue())
    at = _app().run()
    assert not at.exception and not at.error
    assert not any(i.value.startswith("No scorecard yet") for i in at.info)
    shown = at.dataframe[2].value
    assert len(shown) == len(scorecard) == 15 and set(shown["as_of_year"]) == {2004, 2009}
    np.testing.assert_allclose(shown["actual"], scorecard.sort_values(["as_of_year", "year"])["actual"])
    assert len(at.get("vega_lite_chart")) == 2  # the forecast and the track record

    # A scorecard without the columns the viewer reads, or damaged (cut short, not Parquet), is one
    # line a person can act on in the track record; the forecast is still shown.
    cut = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    for damaged, says in [
        (_parquet(scorecard.drop(columns=["actual"])), "lacks the column(s) ['actual']"),
        (cut, "is not the Parquet file the pipeline wrote (damaged or cut short)"),
        (b"", "is not the Parquet file the pipeline wrote (damaged or cut short)"),
    ]:
        store.write_bytes(layout.scorecard(CANADA), damaged)
        at = _app().run()
        assert not at.exception and not at.error
        assert says in _plain(at.warning[0].value) and "\n" not in at.warning[0].value
        assert len(at.get("vega_lite_chart")) == 1 and at.download_button  # the forecast, not the track record


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def test_empty_store_says_nothing_is_published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _use_home(monkeypatch, tmp_path / "empty")
    at = _app().run()
    assert not at.exception and not at.error
    assert "no forecast is published" in _plain(at.info[0].value) and "run `make run` (or `co2cast forecast`)" in _plain(at.info[0].value)
    assert not at.get("vega_lite_chart") and not at.selectbox


@pytest.mark.parametrize("name", ["forecast.parquet", "backtest.json"])
def test_tampered_file_is_refused_with_a_message(home_copy: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    store = _use_home(monkeypatch, home_copy)
    manifest, _ = _latest(store, CANADA)
    entry = next(e for e in manifest["files"] if e["name"] == name)
    path = home_copy / "store" / entry["key"]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit of one published byte
    path.write_bytes(bytes(raw))
    assert hashlib.sha256(raw).hexdigest() != entry["sha256"]
    at = _app().run()
    assert not at.exception
    assert "does not match its sha256" in _plain(at.error[0].value)
    assert not at.get("vega_lite_chart") and not at.download_button and not at.metric
    # The other series is untouched and still shown.
    at.selectbox(key="series").set_value(WORLD).run()
    assert not at.error and at.get("vega_lite_chart")


def test_a_missing_file_or_a_pointer_at_another_series_is_named_as_it_is(home_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every refusal of read_latest was shown as 'a published file does not match its sha256 … Republish it', a wrong lead."""
    store = _use_home(monkeypatch, home_copy)
    manifest, _ = _latest(store, CANADA)
    parquet = home_copy / "store" / next(e for e in manifest["files"] if e["name"] == "forecast.parquet")["key"]
    kept = parquet.read_bytes()
    parquet.unlink()
    at = _app().run()
    assert not at.exception and not at.get("vega_lite_chart")
    missing = _plain(at.error[0].value)
    assert missing.endswith("manifest.json: forecast.parquet is missing; the forecast is not shown, republish it"), missing
    parquet.write_bytes(kept)
    store.write_bytes(layout.forecast_latest(WORLD), store.read_bytes(layout.forecast_latest(CANADA)))  # World's pointer names Canada's
    at.selectbox(key="series").set_value(WORLD).run()
    assert not at.exception and not at.get("vega_lite_chart")
    elsewhere = _plain(at.error[0].value)
    assert elsewhere.startswith(f"{WORLD}: latest.json points at ") and f"a forecast of {CANADA}: it was edited; restore it" in elsewhere
    for message in (missing, elsewhere):
        assert "sha256" not in message and "\n" not in message


#: A series' latest.json damaged or edited by hand: the bytes, and what the line about it says.
DAMAGED_POINTERS = [
    (json.dumps({"as_of_year": 2014}).encode(), "is not what co2cast wrote (it has no 'manifest')"),
    (b'{"manifest": "forecasts/', "is not what co2cast wrote (Unterminated string"),
    (b'{"manifest": "\x80"}', "is not what co2cast wrote (not UTF-8 text)"),
    (b"null", "is not what co2cast wrote (it holds null, not an object)"),
    (json.dumps({"manifest": "x", "as_of_year": "2014"}).encode(), "is not what co2cast wrote ("),
]


@pytest.mark.parametrize(("raw", "says"), DAMAGED_POINTERS, ids=["no-manifest", "cut-short", "not-utf8", "null", "year-as-text"])
def test_a_damaged_pointer_leaves_out_its_series_only(home_copy: Path, monkeypatch: pytest.MonkeyPatch, raw: bytes, says: str) -> None:
    """One damaged latest.json blanked the whole series list with an error; it is one warning, the other series browsable."""
    store = _use_home(monkeypatch, home_copy)
    key = layout.forecast_latest(WORLD)
    store.write_bytes(key, raw)
    published = data.list_published(store)
    assert [s.series_id for s in published.series] == [CANADA] and list(published.unreadable) == [WORLD]
    at = _app().run()
    assert not at.exception and not at.error
    assert len(at.warning) == 1
    warning = _plain(at.warning[0].value)
    assert warning.startswith(f"{WORLD} is left out of the list: {store.uri(key)} {says}") and "\n" not in warning
    assert "restore it from a backup, or remove it and rerun" in warning
    assert "cannot read the object store" not in warning
    # Nothing of the damaged series is offered; the other one is shown whole.
    assert at.selectbox(key="series").options == ["Canada — CO2 per capita (t CO2 per person)"]
    assert at.subheader[0].value == "Canada — CO2 per capita (t CO2 per person)" and at.get("vega_lite_chart") and at.download_button


def test_every_pointer_damaged_names_each_and_shows_nothing(home_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _use_home(monkeypatch, home_copy)
    for series_id in (CANADA, WORLD):
        store.write_bytes(layout.forecast_latest(series_id), b"{")
    at = _app().run()
    assert not at.exception and not at.error
    warnings = [_plain(w.value) for w in at.warning]
    assert [w.split(" ")[0] for w in warnings] == [CANADA, WORLD]
    assert all("is left out of the list" in w and "is not what co2cast wrote" in w for w in warnings)
    assert not at.selectbox and not at.metric and not at.get("vega_lite_chart")


def test_a_pointer_removed_after_the_listing_is_no_longer_published(home_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """latest.json removed by hand (to be rebuilt) between the listing and its read: not published, not a KeyError."""
    store = _use_home(monkeypatch, home_copy)
    listed = store.list_children(layout.FORECASTS)
    monkeypatch.setattr(store, "list_children", lambda prefix: [*listed, "gone.co2"])
    published = data.list_published(store)
    assert [s.series_id for s in published.series] == [CANADA, WORLD] and not published.unreadable
    monkeypatch.setattr(store, "list_children", lambda prefix: ["gone.co2"])
    with pytest.raises(data.NothingPublished, match="no forecast is published"):
        data.list_published(store)


def _edit_published(store: LocalStore, series_id: str, manifest_edit=None, pointer_edit=None) -> None:
    """Edit a published manifest and/or latest.json by hand, latest.json's digest of the manifest and copies of its fields made to match."""
    key = f"forecasts/{series_id}/latest.json"
    pointer = store.read_json(key)
    manifest = store.read_json(pointer["manifest"])
    if manifest_edit:
        manifest_edit(manifest)
    raw = json.dumps(manifest).encode()
    store.write_bytes(pointer["manifest"], raw)
    pointer["manifest_sha256"] = hashlib.sha256(raw).hexdigest()
    if isinstance(manifest, dict):  # an edit that gets past latest_pointer's check of the fields it copies
        pointer.update({k: manifest.get(k) for k in POINTER_COPIES if k in pointer and k in manifest})
    if pointer_edit:
        pointer_edit(pointer)
    store.write_json(key, pointer)


def _move_file(name: str, key: str):
    def edit(manifest: dict) -> None:
        next(e for e in manifest["files"] if e["name"] == name)["key"] = key

    return edit


@pytest.mark.parametrize(
    ("manifest_edit", "pointer_edit", "message"),
    [
        (lambda m: m.update(files="x"), None, "not a valid manifest (malformed Manifest payload: files:"),
        (_move_file("backtest.json", "../../../../etc/passwd"), None, "'backtest.json' is listed at '../../../../etc/passwd', outside"),
        (_move_file("backtest.json", f"forecasts/{WORLD}/latest.json"), None, f"is listed at 'forecasts/{WORLD}/latest.json', outside"),
        (None, lambda p: p.update(manifest="../../../etc/passwd"), f"{CANADA}: latest.json points at '../../../etc/passwd', not a"),
        (lambda m: m.update(vintage="../../etc"), None, f"{CANADA}: the manifest names '../../etc' as its vintage, which is no vintage id"),
    ],
    ids=["files-not-a-list", "file-key-up-and-out", "file-key-of-another-series", "pointer-up-and-out", "manifest-vintage-up-and-out"],
)
def test_a_manifest_or_pointer_edited_by_hand_is_named_in_one_line(
    home_copy: Path, monkeypatch: pytest.MonkeyPatch, manifest_edit, pointer_edit, message: str
) -> None:
    """A hand-edited file (digests made to match) is a damaged forecast: not a crash, not 'cannot read the object store'."""
    store = _use_home(monkeypatch, home_copy)
    _edit_published(store, CANADA, manifest_edit, pointer_edit)
    at = _app().run()
    assert not at.exception and not at.get("vega_lite_chart")
    assert message in _plain(at.error[0].value) and "\n" not in at.error[0].value
    assert "cannot read the object store" not in _plain(at.error[0].value)
    at.selectbox(key="series").set_value(WORLD).run()
    assert not at.error and at.get("vega_lite_chart")  # the other series is still shown


def test_manifest_fields_in_the_metrics_are_shown_as_written(home_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A metric's value is Markdown in Streamlit: a manifest edited to hold a link or an image shows it as text."""
    store = _use_home(monkeypatch, home_copy)
    family, version = "[arima](https://evil.example)", "![p](https://evil.example/p.png)"
    _edit_published(store, CANADA, lambda m: m.update(model_family=family, model_version=version))
    at = _app().run()
    assert not at.exception and not at.error
    champion = {m.label: m.value for m in at.metric}["Champion"]
    assert "<a" not in _shown(champion) and "<img" not in _shown(champion) and not _autolinked(champion)
    assert _plain(champion) == f"v{version} · {family}"


#: Markdown a hand-edited object may hold: a link and an image from elsewhere.
LINK, IMAGE = "[click](https://evil.example)", "![x](evil.example.png)"


def test_messages_naming_what_the_store_holds_are_shown_as_written(home_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The error line rendered the link or image a hand-edited manifest carried (a warning or info line is escaped alike)."""
    store = _use_home(monkeypatch, home_copy)
    _edit_published(store, CANADA, lambda m: m.update(vintage=LINK))
    _edit_published(store, WORLD, lambda m: m.update(vintage=IMAGE))
    at = _app().run()
    assert not at.exception and not at.get("vega_lite_chart")
    error = at.error[0].value
    assert "<a" not in _shown(error) and "<img" not in _shown(error) and "<code" not in _shown(error)
    assert not _autolinked(error)  # https://evil.example alone
    assert _plain(error) == (
        f"{CANADA}: the manifest names {LINK!r} as its vintage, which is no vintage id: it was edited; "
        "the forecast is not shown. Republish it (`co2cast forecast`)."
    )
    at.selectbox(key="series").set_value(WORLD).run()
    error = at.error[0].value
    assert "<a" not in _shown(error) and "<img" not in _shown(error)
    assert f"the manifest names {IMAGE!r} as its vintage" in _plain(error)


def test_a_damaged_pointer_in_a_folder_named_like_markdown_is_named_as_written(home_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The warning about a damaged pointer names its folder as written; the viewer's own lines read as before."""
    store = _use_home(monkeypatch, home_copy)
    folder = f"🔥{IMAGE}www.evil.example"  # an alert took a leading emoji for its icon
    store.write_bytes(layout.forecast_latest(folder), b"{")
    at = _app().run()
    assert not at.exception and not at.error
    warning, uri = at.warning[0].value, store.uri(layout.forecast_latest(folder))
    assert "<img" not in _shown(warning) and "<a" not in _shown(warning) and not _autolinked(warning)
    assert _plain(warning).startswith(f"{folder} is left out of the list: {uri} is not what co2cast wrote") and not at.warning[0].icon
    assert at.selectbox(key="series").value == CANADA and at.get("vega_lite_chart")
    at.number_input(key="start").set_value(2040)
    at.number_input(key="end").set_value(2020).run()
    assert at.warning[1].value == "The start year 2040 is after the end year 2020: choose a start year before the end year."


def test_a_pointer_naming_no_vintage_id_leaves_the_series_list_whole(home_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """latest.json's vintage names only the series; '../..' in it must not take the page down for every series."""
    store = _use_home(monkeypatch, home_copy)
    _edit_published(store, WORLD, manifest_edit=lambda m: m.update(vintage="../../etc"))  # latest.json's copy follows
    at = _app().run()
    assert not at.exception and not at.error and at.get("vega_lite_chart")
    assert len(at.selectbox(key="series").options) == 2


def test_unreachable_store_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _use_home(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("CO2CAST_STORE_URI", "s3://nowhere/co2cast")
    monkeypatch.setenv("CO2CAST_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    at = _app().run()
    assert not at.exception
    assert _plain(at.error[0].value).startswith("cannot read the object store s3://nowhere/co2cast:")
    assert "\n" not in at.error[0].value and not at.get("vega_lite_chart")


def test_page_reads_an_s3_store(published_home: Path, s3_bucket: str, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The published files copied byte for byte to S3 (moto over HTTP) read the same."""
    local = LocalStore(published_home / "store")
    s3 = S3Store(s3_bucket, "co2cast", endpoint_url=s3_env["CO2CAST_S3_ENDPOINT_URL"])
    for key in local.list("forecasts/") + local.list("curated/"):
        s3.write_bytes(key, local.read_bytes(key))
    _use_home(monkeypatch, published_home.parent / "unused")
    monkeypatch.setenv("CO2CAST_S3_ENDPOINT_URL", s3_env["CO2CAST_S3_ENDPOINT_URL"])
    monkeypatch.setenv("CO2CAST_STORE_URI", f"s3://{s3_bucket}/co2cast")
    manifest, table = _latest(local, CANADA)
    at = _app().run()
    assert not at.exception and not at.error
    assert f"s3://{s3_bucket}/co2cast" in at.sidebar.caption[0].value
    assert manifest["model_name"] in _shown(at.caption[0].value)
    forecast_line = _lines(at).query("line == 'Forecast (champion)'").set_index("year")["value"]
    np.testing.assert_allclose(forecast_line.loc[2015:].to_numpy(), table["mean"].to_numpy())


def test_names_and_manifest_fields_are_shown_as_written_not_as_markdown(
    published_home: Path, owid_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entity name from the release that is Markdown makes no link, image or format on the page."""
    lines = owid_csv.read_text().splitlines()
    rows = [line for line in lines[1:] if line.split(",")[1] in ("Canada", "World")]
    source = tmp_path / "hostile.csv"
    source.write_text("\n".join([lines[0], *(r.replace(",Canada,", f",{HOSTILE},") for r in rows)]) + "\n")
    settings = Settings(home=tmp_path / "home")
    store = _use_home(monkeypatch, tmp_path / "home")
    vintage = ingest.ingest(settings, store, str(source))["vintage"]
    manifest, table = _latest(LocalStore(published_home / "store"), CANADA)
    from pipeline.series import series_id

    hostile_id = series_id(HOSTILE, "co2_per_capita")
    meta = {k: manifest[k] for k in ("as_of_year", "model_version", "model_family")}
    meta |= {"vintage": vintage, "model_name": f"co2cast.{hostile_id}"}
    publish(store, table.assign(series_id=hostile_id), series_id=hostile_id, run_key="hostile", horizon_end=2050, meta=meta)
    at = _app().run()
    assert not at.exception and not at.error
    heading = _shown(at.subheader[0].value)
    for markup in ("<a", "<img", "<strong", "<em", "<code", "<span"):
        assert markup not in heading
    caption = _shown(at.caption[0].value)
    assert "<a" not in caption and "<img" not in caption
    assert not _autolinked(at.subheader[0].value) and not _autolinked(at.caption[0].value)
    label = f"{HOSTILE} — CO2 per capita (t CO2 per person)"
    assert _plain(at.subheader[0].value) == label  # the name as written
    assert f"<strong>co2cast.{hostile_id}</strong>" in caption and f"vintage {vintage} " in caption


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """Each test sees the store as it is now, not a series list cached by an earlier test."""
    import streamlit as st

    st.cache_data.clear()
    yield


def test_a_champion_kept_from_an_earlier_run_leaves_this_runs_candidate_of_its_family_a_challenger() -> None:
    rows = [{"family": f, "year": 2015, "mean": 1.0, "lo_80": 0.9, "hi_80": 1.1, "lo_95": 0.8, "hi_95": 1.2} for f in ("arima", "theta")]
    candidates = pd.DataFrame(rows)
    this_run = {"model_family": "arima", "model_version": "5", "trained": {"versions": {"arima": "5", "lstm": "6"}}}
    kept = {**this_run, "model_version": "3"}  # the gate kept v3; this run registered arima v5
    assert data._challengers(candidates, this_run)["family"].tolist() == ["theta"]
    assert data._challengers(candidates, kept)["family"].tolist() == ["arima", "theta"]


def test_series_names_read_each_vintages_table_once_however_many_vintages_pointers_name(home_copy: Path) -> None:
    """The list (refreshed every 30 s) names each series from its pointer's vintage: after a few releases
    pointers name more vintages than the four tables kept in memory, and every refresh read every table again."""
    store = LocalStore(home_copy / "store")
    vintage = store.read_json(layout.CURATED_LATEST)["vintage"]
    vintages = [vintage, *(f"{i:016x}" for i in range(1, 6))]
    for other in vintages[1:]:
        for key in store.list(f"{layout.CURATED}{vintage}/"):
            store.write_bytes(key.replace(vintage, other), store.read_bytes(key))
    reads: list[str] = []
    real = LocalStore.read_bytes
    store.read_bytes = lambda key: reads.append(key) or real(store, key)  # type: ignore[method-assign]
    names = [data._series_names(store, v) for v in vintages]
    for _refresh in range(3):
        assert [data._series_names(store, v) for v in vintages] == names
    assert sorted(k for k in reads if k.endswith("emissions.parquet")) == sorted(layout.curated_table(v) for v in vintages)
    assert names[0][CANADA] == ("Canada", "co2_per_capita", False) and names[0][WORLD] == ("World", "co2", True)
    view = data.load_series(store, next(s for s in data.list_published(store).series if s.series_id == CANADA))
    assert len(view.history), "the tables load_series reads are still kept and read"
