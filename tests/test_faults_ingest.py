"""Fault injection for the ingest half: every ingest-side case of issue #9, and the faults around it.

Each case starts from a store with one good vintage curated, feeds one bad input or fault, and
checks the same four things: the error is one line a person can act on; nothing new is curated;
``curated/latest.json`` is byte-identical; the input is quarantined when it was read (and
nothing at all is stored when the source itself was refused). Faults of the machinery (disk
full, S3 down) end with a rerun that heals.
"""

from __future__ import annotations

import codecs
import csv
import errno
import gzip
import hashlib
import http.server
import io
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline import ingest, layout, sources
from pipeline.config import Settings
from pipeline.errors import PermanentError
from pipeline.store import LocalStore, ObjectStore, S3Store, StoreDataError
from tests.conftest import write_xlsx

ENTITIES = {"Canada", "World", "Kenya", "Germany", "Zimbabwe"}


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def release(tmp_path: Path, owid_csv: Path) -> Path:
    """A few entities of the embedded OWID release, Zimbabwe last as in the real file."""
    lines = owid_csv.read_text().splitlines()
    rows = [line for line in lines[1:] if line.split(",")[1] in ENTITIES]
    path = tmp_path / "source" / "owid.csv"
    path.parent.mkdir()
    path.write_text("\n".join([lines[0], *rows]) + "\n")
    return path


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(home=tmp_path / "home", store_uri=(tmp_path / "store").as_uri(), **overrides)


@pytest.fixture
def curated(tmp_path: Path, release: Path) -> tuple[Settings, LocalStore]:
    settings = _settings(tmp_path)
    store = LocalStore(tmp_path / "store")
    assert ingest.ingest(settings, store, str(release))["status"] == "curated"
    return settings, store


def _snapshot(store: ObjectStore) -> dict[str, bytes]:
    return {key: store.read_bytes(key) for key in store.list()}


def _one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and len(message) < 1500, message
    assert "Traceback" not in message
    return message


def _assert_nothing_curated(store: ObjectStore, before: dict[str, bytes]) -> None:
    assert store.read_bytes(ingest.LATEST_KEY) == before[ingest.LATEST_KEY], "curated/latest.json moved"
    now = {k for k in store.list("curated/")}
    assert now == {k for k in before if k.startswith("curated/")}, f"new curated keys: {now - set(before)}"


def _rewrite(path: Path, change: Callable[[pd.DataFrame], None]) -> bytes:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(frame)
    return frame.to_csv(index=False).encode()


def _set(entity: str, year: str, column: str, value: str) -> Callable[[Path], bytes]:
    def build(path: Path) -> bytes:
        def change(frame: pd.DataFrame) -> None:
            mask = (frame["country"] == entity) & (frame["year"] == year)
            assert mask.sum() == 1
            frame.loc[mask, column] = value

        return _rewrite(path, change)

    return build


def _duplicate_co2(path: Path) -> bytes:
    lines = path.read_text().splitlines()
    return "\n".join(f"{line},{line.split(',')[3]}" for line in lines).encode() + b"\n"


def _rename(old: str, new: str) -> Callable[[Path], bytes]:
    return lambda path: path.read_bytes().replace(f",{old},".encode(), f",{new},".encode())


def _drop_last_lines(path: Path, count: int) -> bytes:
    """The file cut cleanly at a line end: its last rows are missing, nothing else is wrong."""
    return "".join(path.read_text().splitlines(keepends=True)[:-count]).encode()


def _slug_twin(path: Path) -> bytes:
    """Kenya's rows once more under a name that slugifies like another entity's."""
    lines = path.read_text().splitlines()
    extra = [line.replace(",Kenya,", ',"Canada!",', 1) for line in lines if ",Kenya," in line]
    return "\n".join([*lines, *extra]).encode() + b"\n"


def _empty_year_copy(path: Path) -> bytes:
    """A copy of Canada's 2014 row with its year left empty, after the last row."""
    lines = path.read_text().splitlines()
    row = next(line for line in lines if ",Canada,2014," in line).replace(",Canada,2014,", ",Canada,,", 1)
    return "\n".join([*lines, row]).encode() + b"\n"


def _line_break_in_quoted_column_name(path: Path) -> bytes:
    """``"iso<LF>code"`` as the first column name, and ``co2`` twice after it."""
    data = _duplicate_co2(path)
    assert data.startswith(b"iso_code,")
    return b'"iso\ncode",' + data[len(b"iso_code,") :]


def _revised_bytes(path: Path) -> bytes:
    """The release with Canada's 2013 value revised: other content than the curated vintage."""
    return _set("Canada", "2013", "co2", "560.0")(path)


def _cr_line_ends(final: bool) -> Callable[[Path], bytes]:
    """CR-only line ends (old Mac), with or without a final one."""

    def build(path: Path) -> bytes:
        data = _revised_bytes(path).replace(b"\n", b"\r")
        return data if final else data.rstrip(b"\r")

    return build


def _cr_before_last_line(path: Path) -> bytes:
    """LF line ends but a bare CR before the last line, which has no line end."""
    head, _, last = _revised_bytes(path).rstrip(b"\n").rpartition(b"\n")
    return head + b"\r" + last


def _tab_separated(path: Path) -> bytes:
    """The release saved as TSV under its .csv name (what a spreadsheet's "Text (tab-delimited)" gives)."""
    return _revised_bytes(path).replace(b",", b"\t")


def _huge_header_field(path: Path) -> bytes:
    """A column name longer than Python's CSV field limit (131,072 characters)."""
    lines = path.read_text().splitlines(keepends=True)
    return ("x" * 140_000 + "," + "".join(lines)).encode()


def _scaled(entity: str | None, columns: list[str], factor: float) -> Callable[[Path], bytes]:
    """Every value of the columns (of one entity, or all) times ``factor``: the same numbers in other units."""

    def build(path: Path) -> bytes:
        def change(frame: pd.DataFrame) -> None:
            for column in columns:
                mask = (frame[column] != "") & ((frame["country"] == entity) if entity is not None else True)
                frame.loc[mask, column] = (frame.loc[mask, column].astype(float) * factor).map(repr)

        return _rewrite(path, change)

    return build


def _stray_row(entity: str, year: str) -> Callable[[Path], bytes]:
    """A copy of the entity's 2014 row in a newer year, with only its per-capita value (below every World check)."""

    def build(path: Path) -> bytes:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        row = frame[(frame["country"] == entity) & (frame["year"] == "2014")].copy()
        assert len(row) == 1
        for column in row.columns:
            if column not in ("iso_code", "country", "co2_per_capita"):
                row[column] = ""
        row["year"] = year
        return pd.concat([frame, row]).to_csv(index=False).encode()

    return build


def _one_more_year(path: Path) -> bytes:
    """A genuine next release: every entity's 2014 row once more as 2015."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    row = frame[frame["year"] == "2014"].copy()
    row["year"] = "2015"
    return pd.concat([frame, row]).to_csv(index=False).encode()


EMISSIONS = ["co2", "coal_co2", "oil_co2", "gas_co2", "cement_co2", "flaring_co2"]


def _negative_population(year: str) -> tuple[str, ...]:
    """What the refusal of a negative population must name: the check, entity, year and variable."""
    return ("min_value=0", "variable=population", "entity=Canada", f"year={year}", "value=-")


# -- bad releases: read, quarantined, nothing curated ----------------------------------------

# (case, builder(release path) -> bytes, file name, words the one-line message must contain)
BAD_RELEASES: list[tuple[str, Callable[[Path], bytes], str, tuple[str, ...]]] = [
    ("canada_co2_1000x", _set("Canada", "2014", "co2", "577360"), "owid.csv", ("jump", "Canada")),
    ("kenya_per_capita_1000x", _set("Kenya", "2014", "co2_per_capita", "295"), "owid.csv", ("jump", "Kenya")),
    ("co2_1e308", _set("Canada", "2014", "co2", "1e308"), "owid.csv", ("100000", "Canada")),
    ("co2_infinite", _set("Canada", "2014", "co2", "1e999"), "owid.csv", ("100000",)),
    ("cut_at_line_end", lambda p: _drop_last_lines(p, 2), "owid.csv", ("tail_lost_years", "Zimbabwe")),
    ("duplicated_co2_column", _duplicate_co2, "owid.csv", ("'co2' appears twice",)),
    ("nul_in_entity_name", _rename("Kenya", "Ken\x00ya"), "owid.csv", ("NUL byte",)),
    ("line_break_in_entity_name", _rename("Kenya", '"Ken\nya"'), "owid.csv", ("control character U+000A",)),
    ("two_names_one_series_id", _slug_twin, "owid.csv", ("same series id", "'canada'", "Canada!")),
    ("latin1_encoding", _rename("Kenya", "K\u00e9nya"), "owid.csv", ("Windows-1252",)),
    ("entity_name_too_long", _rename("Kenya", "Republic of " + "Very" * 70 + " Long Name"), "owid.csv", ("302 characters long", "100")),
    ("empty_year_cell", _empty_year_copy, "owid.csv", ("expect_column_values_to_not_be_null(column=year)", "entity=Canada")),
    ("cr_line_ends", _cr_line_ends(final=True), "owid.csv", ("bare carriage return",)),
    ("cr_line_ends_no_final_one", _cr_line_ends(final=False), "owid.csv", ("bare carriage return",)),
    ("cr_before_the_last_line", _cr_before_last_line, "owid.csv", ("bare carriage return",)),
    ("header_field_over_the_csv_limit", _huge_header_field, "owid.csv", ("header is not a readable CSV line", "field limit")),
    ("line_break_in_quoted_column_name", _line_break_in_quoted_column_name, "owid.csv", ("control character", "'iso?code'")),
    ("entity_name_without_a_z", _rename("Kenya", "\u80af\u5c3c\u4e9a"), "owid.csv", ("no letter or digit", "'\u80af\u5c3c\u4e9a'")),
    ("negative_population_1950", _set("Canada", "1950", "population", "-5"), "owid.csv", _negative_population("1950")),
    ("negative_population_1820", _set("Canada", "1820", "population", "-0.5"), "owid.csv", _negative_population("1820")),
    ("tab_separated", _tab_separated, "owid.csv", ("holds tabs, not commas", "comma-separated", "re-export it as CSV")),
    (
        "canada_co2_zero",
        _set("Canada", "2014", "co2", "0"),
        "owid.csv",
        ("column=jump", "jump=inf", "entity=Canada", "year=2014", "variable=co2"),
    ),
    (
        "world_co2_zero",
        _set("World", "2014", "co2", "0"),
        "owid.csv",
        ("emissions_plausibility[world]", "column=world_value", "entity=World", "year=2014", "variable=co2"),
    ),
    (
        "world_co2_missing",
        _set("World", "2000", "co2", ""),
        "owid.csv",
        ("not_be_null(column=world_value)", "entity=World", "year=2000", "variable=co2"),
    ),
    (
        "canada_co2_in_gt",
        _scaled("Canada", ["co2"], 0.001),
        "owid.csv",
        ("column=revision_factor", "entity=Canada", "variable=co2", "revision_ratio=0.001"),
    ),
    ("every_emission_in_gt", _scaled(None, EMISSIONS, 0.001), "owid.csv", ("column=revision_factor", "revision_ratio=0.001")),
    *[
        (
            f"{name}_in_a_value",
            _set("Canada", "2010", "co2_per_capita", text),
            "owid.csv",
            ("column=value_text", f"value_text={shown}", "not_be_null(column=value)", "entity=Canada", "variable=co2_per_capita"),
        )
        # Python's \s and \d match these, pandas parses none of them: the value was curated as NaN.
        for name, text, shown in [
            ("no_break_space", "16.294\u00a0", "16.294\\u00a0"),
            ("thin_space", "\u200916.294", "\\u200916.294"),
            ("arabic_indic_digits", "\u0661\u0666.\u0662\u0669\u0664", "\u0661\u0666.\u0662\u0669\u0664"),
            ("fullwidth_digits", "\uff11\uff16.294", "\uff11\uff16.294"),
        ]
    ],
    *[
        (
            f"stray_row_in_{year}",
            _stray_row("Kenya", year),
            "owid.csv",
            ("emissions_raw[newest]", "column=newest_year_share", "entity=Kenya", f"year={year}", "1 of 5 entities whose data reach 2014"),
        )
        for year in ("2015", "2025")
    ],
]


@pytest.mark.parametrize(("case", "build", "name", "words"), BAD_RELEASES, ids=[c[0] for c in BAD_RELEASES])
def test_bad_release_is_quarantined_and_nothing_moves(
    case: str, build: Callable[[Path], bytes], name: str, words: tuple[str, ...], curated, release: Path, tmp_path: Path
) -> None:
    settings, store = curated
    data = build(release)
    if case == "latin1_encoding":
        data = data.decode().encode("cp1252")
    bad = tmp_path / "bad" / name
    bad.parent.mkdir()
    bad.write_bytes(data)
    before = _snapshot(store)

    with pytest.raises(ingest.ValidationFailed) as raised:
        ingest.ingest(settings, store, str(bad))

    message = _one_line(raised.value)
    for word in words:
        assert word in message, message
    _assert_nothing_curated(store, before)
    vintage, _ = ingest.vintage_id(data)
    assert store.read_bytes(f"quarantine/{vintage}/{name}") == data
    assert "rejected" in store.read_bytes(f"quarantine/{vintage}/report.md").decode()


def test_after_a_refused_stray_year_the_genuine_next_release_is_curated(curated, release: Path, tmp_path: Path) -> None:
    """One stray row in 2025 moved the vintage's latest year there: every series was stale and every genuine release refused."""
    settings, store = curated
    stray = tmp_path / "bad" / "owid.csv"
    stray.parent.mkdir()
    stray.write_bytes(_stray_row("Kenya", "2025")(release))
    with pytest.raises(ingest.ValidationFailed):
        ingest.ingest(settings, store, str(stray))
    assert store.read_json(ingest.LATEST_KEY)["latest_year"] == 2014
    genuine = tmp_path / "next" / "owid.csv"
    genuine.parent.mkdir()
    genuine.write_bytes(_one_more_year(release))
    assert ingest.ingest(settings, store, str(genuine))["latest_year"] == 2015


@pytest.mark.parametrize("stray", [True, False], ids=["one-country", "every-country"])
def test_a_wide_release_whose_newest_year_few_countries_report_is_refused(stray: bool, gapminder_csv: Path, tmp_path: Path) -> None:
    """Gapminder's layout, first vintage: a 2015 column with one country's value is refused; one with every country's is curated."""
    frame = pd.read_csv(gapminder_csv, dtype=str, keep_default_na=False)
    frame["2015"] = ""
    rows = frame.index[frame["2014"] != ""]
    chosen = rows[-1:] if stray else rows
    frame.loc[chosen, "2015"] = frame.loc[chosen, "2014"]
    path = tmp_path / "source" / "gapminder.csv"
    path.parent.mkdir()
    path.write_bytes(frame.to_csv(index=False).encode())
    settings, store = _settings(tmp_path), LocalStore(tmp_path / "store")
    if not stray:
        assert ingest.ingest(settings, store, str(path))["latest_year"] == 2015
        return
    with pytest.raises(ingest.ValidationFailed) as raised:
        ingest.ingest(settings, store, str(path))
    message = _one_line(raised.value)
    for word in ("column=newest_year_share", f"entity={frame.loc[rows[-1], 'country']}", "year=2015", "reported_by=1 of "):
        assert word in message, message
    assert not store.exists(ingest.LATEST_KEY)


def test_a_wide_release_with_a_no_break_space_in_a_value_is_refused(gapminder_csv: Path, tmp_path: Path) -> None:
    """Gapminder's layout: a value written with a trailing no-break space was curated as no value at all."""
    frame = pd.read_csv(gapminder_csv, dtype=str, keep_default_na=False)
    row = frame.index[frame["2014"] != ""][0]
    frame.loc[row, "2014"] = frame.loc[row, "2014"] + "\u00a0"
    path = tmp_path / "source" / "gapminder.csv"
    path.parent.mkdir()
    path.write_bytes(frame.to_csv(index=False).encode())
    store = LocalStore(tmp_path / "store")
    with pytest.raises(ingest.ValidationFailed) as raised:
        ingest.ingest(_settings(tmp_path), store, str(path))
    message = _one_line(raised.value)
    for word in ("column=value_text", "\\u00a0", f"entity={frame.loc[row, 'country']}", "year=2014", "not_be_null(column=value)"):
        assert word in message, message
    assert not store.exists(ingest.LATEST_KEY)


def test_a_wide_release_with_float_year_headers_keeps_every_year(gapminder_csv: Path, tmp_path: Path) -> None:
    """Gapminder's wide file with its last year headed ``2014.0`` (a pandas or Excel export): 2014 is curated,
    not dropped; a column headed ``2014.5`` is refused and quarantined, nothing moves."""
    settings, store = _settings(tmp_path), LocalStore(tmp_path / "store")
    header, _, body = gapminder_csv.read_text().partition("\n")
    floats = tmp_path / "wide" / "co2.csv"
    floats.parent.mkdir()
    floats.write_text(header.replace(",2014", ",2014.0") + "\n" + body)
    result = ingest.ingest(settings, store, str(floats))
    assert result["status"] == "curated" and result["latest_year"] == 2014
    table = ingest.read_curated(store, result["vintage"])
    assert len(table) == pd.read_csv(gapminder_csv).drop(columns=["country"]).notna().sum().sum()

    before = _snapshot(store)
    fractional = tmp_path / "wide" / "co2-fractional.csv"
    fractional.write_text(header.replace(",2014", ",2014.5") + "\n" + body)
    with pytest.raises(ingest.ValidationFailed) as raised:
        ingest.ingest(settings, store, str(fractional))
    assert "column '2014.5' is not a whole year" in _one_line(raised.value)
    _assert_nothing_curated(store, before)
    assert store.exists(f"quarantine/{ingest.vintage_id(fractional.read_bytes())[0]}/report.md")


def test_a_vintage_curated_before_names_were_checked_is_refused_at_planning(
    release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Such a name is refused at ingest now; a vintage curated before that is refused when a run is planned from it."""
    from pipeline import tasks
    from pipeline.plan import PlanError

    settings, store = _settings(tmp_path), LocalStore(tmp_path / "store")
    long_name = "Republic of " + "Very" * 70 + " Long Name"
    old = tmp_path / "old" / "owid.csv"
    old.parent.mkdir()
    old.write_bytes(_rename("Kenya", long_name)(release))
    with monkeypatch.context() as before_the_check:
        before_the_check.setattr(ingest, "check_series_ids", lambda entities: None)
        assert ingest.ingest(settings, store, str(old))["status"] == "curated"

    with pytest.raises(PlanError) as raised:
        tasks.plan_run(settings)
    message = _one_line(raised.value)
    assert "302 characters long" in message and message.endswith("shorten it in the source; then ingest the corrected release")


@pytest.mark.parametrize("kind", ["gzip", "xlsx"])
def test_release_that_unpacks_past_the_cap_is_quarantined(kind: str, curated, release: Path, tmp_path: Path) -> None:
    """A small file that unpacks past ``CO2CAST_MAX_SOURCE_BYTES`` (a bomb, or a big genuine release) is refused."""
    settings, store = curated
    if kind == "gzip":
        path = tmp_path / "bad" / "owid.csv.gz"
        path.parent.mkdir()
        path.write_bytes(gzip.compress(release.read_bytes()))
        unpacked = len(release.read_bytes())
    else:
        rows = [[cell or None for cell in row] for row in csv.reader(release.read_text().splitlines())]
        path = write_xlsx(tmp_path / "owid.xlsx", {"data": rows})
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    cap = unpacked - 1
    assert path.stat().st_size < cap
    before = _snapshot(store)
    with pytest.raises(ingest.ValidationFailed) as raised:
        ingest.ingest(settings.model_copy(update={"max_source_bytes": cap}), store, str(path))
    message = _one_line(raised.value)
    assert f"more than the {cap:,}-byte cap (CO2CAST_MAX_SOURCE_BYTES)" in message, message
    _assert_nothing_curated(store, before)
    vintage, _ = ingest.vintage_id(path.read_bytes())
    assert store.read_bytes(f"quarantine/{vintage}/{path.name}") == path.read_bytes()


def test_a_quarantined_release_is_gated_again_on_every_ingest(curated, release: Path, tmp_path: Path) -> None:
    """The verdict depends on the settings and the file name: following the advice of a refusal must work.

    Refused past the cap, the same bytes are refused again (not "unchanged"), then curated
    once the cap is raised; bytes first given under a wrong file name are curated under the
    right one, and the pointer names the source they were curated from.
    """
    from pipeline import tasks

    settings, store = curated
    revised = _set("Canada", "2013", "co2", "560.0")(release)
    packed = tmp_path / "bad" / "owid.csv.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(revised))
    vintage, _ = ingest.vintage_id(packed.read_bytes())
    small = settings.model_copy(update={"max_source_bytes": len(revised) - 1})
    for _ in range(2):
        with pytest.raises(ingest.ValidationFailed) as raised:
            ingest.ingest(small, store, str(packed))
        assert "raise the cap if the release is genuine" in _one_line(raised.value)
    assert tasks.quarantined_vintages(settings) == [vintage]
    result = ingest.ingest(settings, store, str(packed))
    assert result["status"] == "curated" and store.read_json(ingest.LATEST_KEY)["vintage"] == vintage
    assert tasks.quarantined_vintages(settings) == [], "a vintage curated since is no longer listed as rejected"

    renamed = _set("Canada", "2012", "co2", "555.0")(release)
    wrong = tmp_path / "bad" / "owid.xlsx"
    wrong.write_bytes(renamed)
    with pytest.raises(ingest.ValidationFailed, match="not a readable XLSX workbook"):
        ingest.ingest(settings, store, str(wrong))
    right = tmp_path / "bad" / "owid.csv"
    right.write_bytes(renamed)
    result = ingest.ingest(settings, store, str(right))
    assert result["status"] == "curated" and result["vintage"] == ingest.vintage_id(renamed)[0]
    assert store.read_json(ingest.LATEST_KEY)["source"] == str(right)


def test_every_read_of_a_release_uses_the_configured_size_cap(tmp_path: Path, release: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validating and curating read the stored release with ``CO2CAST_MAX_SOURCE_BYTES``, not the default.

    A cap raised for a large compressed release must hold at every read: curating with the
    default cap would refuse the release the gate had just passed.
    """
    cap = sources.DEFAULT_MAX_BYTES + 12_345
    settings, store = _settings(tmp_path, max_source_bytes=cap), LocalStore(tmp_path / "store")
    caps: list[int] = []
    read_source = sources.read_source

    def spy(data: bytes, file_name: str, max_bytes: int = sources.DEFAULT_MAX_BYTES) -> pd.DataFrame:
        caps.append(max_bytes)
        return read_source(data, file_name, max_bytes)

    monkeypatch.setattr(sources, "read_source", spy)
    # As the Airflow tasks run them, each step on its own: validating and curating both read.
    snapshot = ingest.snapshot_raw(store, ingest.fetch_source(settings, store, str(release)))
    ingest.curate_vintage(settings, store, ingest.validate_raw(settings, store, snapshot))
    assert len(caps) == 2 and set(caps) == {cap}, caps
    # co2cast ingest reads once and curates what it gated.
    caps.clear()
    assert ingest.ingest(settings, LocalStore(tmp_path / "other"), str(release))["status"] == "curated"
    assert caps == [cap]


@pytest.mark.parametrize(
    ("case", "sheets", "words"),
    [
        (
            "formula_without_saved_value",
            {"data": [["country", "year", "co2", "co2_per_capita"], ["Kenya", 2013, 12.1, 0.28], ["Kenya", 2014, "=C2*1.1", 0.29]]},
            ("cell C3", "formula with no saved value"),
        ),
        (
            "data_on_second_sheet",
            {"About": [["see the next sheet"]], "Data": [["country", "year", "co2", "co2_per_capita"], ["Kenya", 2014, 12.1, 0.29]]},
            ("'About', 'Data'",),
        ),
    ],
)
def test_xlsx_first_ingest_refuses_what_it_cannot_read_faithfully(case: str, sheets: dict, words: tuple[str, ...], tmp_path: Path) -> None:
    """On a first ingest there is no previous vintage to compare with: the file itself must be refused."""
    settings = _settings(tmp_path)
    store = LocalStore(tmp_path / "store")
    path = write_xlsx(tmp_path / f"{case}.xlsx", sheets)
    with pytest.raises(ingest.ValidationFailed) as raised:
        ingest.ingest(settings, store, str(path))
    message = _one_line(raised.value)
    for word in words:
        assert word in message, message
    assert store.list("curated/") == [] and not store.exists(ingest.LATEST_KEY)
    vintage, _ = ingest.vintage_id(path.read_bytes())
    assert store.read_bytes(f"quarantine/{vintage}/{path.name}") == path.read_bytes()


def test_xlsx_row_with_an_empty_year_is_refused(curated, release: Path, tmp_path: Path) -> None:
    """An empty year cell is no year: refused, not curated as the smallest 64-bit integer."""
    settings, store = curated
    rows = [[cell or None for cell in row] for row in csv.reader(_empty_year_copy(release).decode().splitlines())]
    path = write_xlsx(tmp_path / "owid.xlsx", {"data": rows})
    before = _snapshot(store)
    with pytest.raises(ingest.ValidationFailed) as raised:
        ingest.ingest(settings, store, str(path))
    message = _one_line(raised.value)
    assert "expect_column_values_to_not_be_null(column=year)" in message and "entity=Canada" in message, message
    _assert_nothing_curated(store, before)


def test_same_content_other_bytes_is_not_a_new_vintage(curated, release: Path, tmp_path: Path) -> None:
    settings, store = curated
    before = _snapshot(store)
    resaved = tmp_path / "resaved.csv"
    resaved.write_bytes(codecs.BOM_UTF8 + release.read_bytes().replace(b"\n", b"\r\n"))
    result = ingest.ingest(settings, store, str(resaved))
    assert result["status"] == "unchanged" and "content equals vintage" in result["message"]
    assert _snapshot(store) == before, "a BOM/CRLF re-save must write nothing"


# -- refused sources: nothing read, nothing stored -------------------------------------------


def test_process_environment_is_never_read(curated, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, store = curated
    monkeypatch.setenv("CO2CAST_TEST_SECRET", "hunter2-do-not-leak")
    before = _snapshot(store)
    for source in ("/proc/self/environ", "file:///proc/self/environ", "/proc/../proc/self/environ", "/dev/zero"):
        with pytest.raises(sources.PermanentSourceError) as raised:
            ingest.ingest(settings, store, source)
        message = _one_line(raised.value)
        assert "system path" in message and "hunter2" not in message
    assert _snapshot(store) == before, "a refused source must store nothing (no raw/, no quarantine/)"


def test_link_out_of_the_data_directories_is_refused(curated, tmp_path: Path) -> None:
    settings, store = curated
    link = tmp_path / "innocent.csv"
    link.symlink_to("/etc/passwd")
    before = _snapshot(store)
    with pytest.raises(sources.PermanentSourceError) as raised:
        ingest.ingest(settings, store, str(link))
    assert "outside the allowed data directories" in _one_line(raised.value) and "root:" not in str(raised.value)
    assert _snapshot(store) == before


def test_a_file_url_with_percent_encoded_characters_is_decoded(curated, release: Path, tmp_path: Path) -> None:
    """``file:///…/my%20data/owid.csv`` names ``…/my data/owid.csv`` (RFC 8089): it is ingested, not reported missing."""
    settings, store = curated
    spaced = tmp_path / "my data" / "owid.csv"
    spaced.parent.mkdir()
    spaced.write_bytes(_revised_bytes(release))
    assert "my%20data" in spaced.as_uri()
    result = ingest.ingest(settings, store, spaced.as_uri())
    assert result["status"] == "curated" and result["vintage"] == ingest.vintage_id(spaced.read_bytes())[0]
    assert store.read_json(ingest.LATEST_KEY)["source"] == str(spaced)


@pytest.mark.parametrize("command", ["ingest", "validate", "check-source"])
def test_a_symlink_loop_is_refused_before_reading(command: str, curated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``ln -s loopB loopA; ln -s loopA loopB``: a one-line refusal, nothing stored."""
    from pipeline import cli

    settings, store = curated
    (tmp_path / "loopA").symlink_to(tmp_path / "loopB")
    (tmp_path / "loopB").symlink_to(tmp_path / "loopA")
    before = _snapshot(store)
    with pytest.raises(sources.PermanentSourceError) as raised:
        ingest.ingest(settings, store, str(tmp_path / "loopA"))
    assert "symbolic links form a loop" in _one_line(raised.value)
    assert _snapshot(store) == before

    monkeypatch.setenv("CO2CAST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CO2CAST_STORE_URI", (tmp_path / "store").as_uri())
    arguments = [command, str(tmp_path / "loopB")] if command == "validate" else [command, "--source", str(tmp_path / "loopB")]
    assert cli.main(arguments) in (1, 2)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "symbolic links form a loop" in err, err
    assert _snapshot(store) == before


# -- HTTP sources, against a server on loopback ----------------------------------------------


class _Server:
    """A loopback HTTP server whose answers the test chooses per path; counts the requests."""

    def __init__(self, routes: dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]]) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                try:
                    routes[self.path](self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _send(status: int, body: bytes, length: int | None = None) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body) if length is None else length))
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()
        if length is not None and length > len(body):
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)

    return answer


def _trickle(handler: http.server.BaseHTTPRequestHandler) -> None:
    """Headers, then one byte every 0.2 s for a minute: each read is quick, the whole is not."""
    handler.send_response(200)
    handler.end_headers()
    for _ in range(300):
        handler.wfile.write(b"x")
        handler.wfile.flush()
        time.sleep(0.2)


def _endless(handler: http.server.BaseHTTPRequestHandler) -> None:
    """A one-line body with no Content-Length that goes on for 50 MB."""
    handler.send_response(200)
    handler.end_headers()
    block = b"A" * 65536
    for _ in range(800):
        handler.wfile.write(block)


def _redirect(to: str) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", to)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


@pytest.fixture
def web(release: Path) -> Iterator[_Server]:
    good = release.read_bytes()
    server = _Server(
        {
            "/owid.csv": _send(200, good),
            "/missing.csv": _send(404, b"<html>Not Found</html>"),
            "/broken.csv": _send(500, b"<html>oops</html>"),
            "/short.csv": _send(200, good[:1000], length=len(good)),
            "/trickle.csv": _trickle,
            "/huge.csv": _endless,
            "/declared-huge.csv": _send(200, b"", length=10**12),
            "/away.csv": _redirect("http://127.0.0.1:9/internal/secret.csv"),
            "/allowed/up.csv": _redirect("/allowed/%2e%2e/owid.csv"),
            "/allowed/up-raw.csv": _redirect("/allowed/../owid.csv"),
        }
    )
    try:
        yield server
    finally:
        server.close()


def test_internal_endpoint_is_refused_by_default(curated, web: _Server) -> None:
    settings, store = curated
    before = _snapshot(store)
    with pytest.raises(sources.PermanentSourceError) as raised:
        ingest.ingest(settings, store, f"{web.url}/owid.csv")
    assert "not an allowed source" in _one_line(raised.value)
    assert web.requests == [], "a refused URL must not even be requested"
    assert _snapshot(store) == before


@pytest.mark.parametrize(
    "path",
    [
        "/allowed/../owid.csv",
        "/allowed/%2e%2e/owid.csv",
        "/allowed/.%2E/owid.csv",
        "/allowed/..%2fowid.csv",
        "/allowed/%252e%252e/owid.csv",
        "/allowed/./../owid.csv",
        "/allowed/..;x/owid.csv",
        "/allowed/..\\owid.csv",
    ],
)
def test_dot_segments_cannot_leave_an_allowed_url_prefix(path: str, curated, web: _Server, tmp_path: Path) -> None:
    """``<allowed prefix>/../x`` (raw or percent-encoded) is refused before any request is made."""
    _, store = curated
    settings = _settings(tmp_path, allowed_urls=f"{web.url}/allowed/")
    before = _snapshot(store)
    with pytest.raises(sources.PermanentSourceError) as raised:
        ingest.ingest(settings, store, f"{web.url}{path}")
    assert "not an allowed source" in _one_line(raised.value)
    assert web.requests == [], "a URL with dot segments must not be requested"
    assert _snapshot(store) == before


@pytest.mark.parametrize("path", ["/allowed/up.csv", "/allowed/up-raw.csv"])
def test_a_redirect_cannot_leave_an_allowed_url_prefix_with_dot_segments(path: str, curated, web: _Server, tmp_path: Path) -> None:
    _, store = curated
    settings = _settings(tmp_path, allowed_urls=f"{web.url}/allowed/")
    with pytest.raises(sources.PermanentSourceError) as raised:
        ingest.ingest(settings, store, f"{web.url}{path}")
    assert "redirects to" in _one_line(raised.value) and "not an allowed source" in str(raised.value)
    assert web.requests == [path], "the redirect must not be followed"


# (path, error class, words, settings)
HTTP_FAULTS = [
    ("/missing.csv", sources.PermanentSourceError, ("404", "check the URL"), {}),
    ("/broken.csv", sources.TransientSourceError, ("500", "try again later"), {}),
    ("/short.csv", sources.TransientSourceError, ("ended after 1,000 of",), {}),
    ("/trickle.csv", sources.TransientSourceError, ("took longer than 1.5 s",), {"fetch_timeout": 1.5}),
    ("/huge.csv", sources.PermanentSourceError, ("1,000,000-byte cap",), {"max_source_bytes": 1_000_000}),
    ("/declared-huge.csv", sources.PermanentSourceError, ("Content-Length", "cap"), {}),
    ("/away.csv", sources.PermanentSourceError, ("redirects to", "not an allowed source"), {}),
]


@pytest.mark.parametrize(("path", "kind", "words", "overrides"), HTTP_FAULTS, ids=[c[0].strip("/") for c in HTTP_FAULTS])
def test_http_faults_are_classified_in_one_line_and_store_nothing(
    path: str, kind: type, words: tuple[str, ...], overrides: dict, curated, web: _Server, tmp_path: Path
) -> None:
    _, store = curated
    settings = _settings(tmp_path, allowed_urls=f"{web.url}/", **overrides)
    before = _snapshot(store)
    with pytest.raises(kind) as raised:
        ingest.ingest(settings, store, f"{web.url}{path}")
    message = _one_line(raised.value)
    for word in words:
        assert word in message, message
    assert raised.value.transient is (kind is sources.TransientSourceError)
    assert "Not Found</html>" not in message and "AAAA" not in message, "the body must not be echoed"
    assert _snapshot(store) == before


def test_allowed_http_source_is_ingested(curated, web: _Server, tmp_path: Path, release: Path) -> None:
    """The same server and settings serve a good file: the faults above are the server's, not the client's."""
    _, store = curated
    settings = _settings(tmp_path, allowed_urls=f"{web.url}/")
    result = ingest.ingest(settings, store, f"{web.url}/owid.csv")
    assert result["status"] == "unchanged"  # the same bytes as the curated vintage
    assert result["vintage"] == ingest.vintage_id(release.read_bytes())[0]


# -- the machinery fails: disk full, S3 down -------------------------------------------------


def _revised(release: Path, tmp_path: Path) -> Path:
    """A good new release: Canada's 2013 value revised."""
    path = tmp_path / "revised" / "owid.csv"
    path.parent.mkdir()
    path.write_bytes(_set("Canada", "2013", "co2", "560.0")(release))
    return path


class _FullDisk(LocalStore):
    """A local store whose disk fills up after ``room`` more curated files."""

    def __init__(self, root: Path, room: int) -> None:
        super().__init__(root)
        self.room = room

    def write_bytes(self, key: str, data: bytes) -> None:
        if key.startswith("curated/") and not key.endswith("gx_result.json"):
            if self.room <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.room -= 1
        super().write_bytes(key, data)


@pytest.mark.parametrize("room", [0, 1, 3, 4], ids=["first-file", "second-file", "meta", "pointer"])
def test_disk_full_during_curate_leaves_nothing_and_a_rerun_heals(room: int, curated, release: Path, tmp_path: Path) -> None:
    settings, store = curated
    before = _snapshot(store)
    revised = _revised(release, tmp_path)
    vintage, _ = ingest.vintage_id(revised.read_bytes())

    with pytest.raises(ingest.CurateFailed) as raised:
        ingest.ingest(settings, _FullDisk(store.root, room), str(revised))

    message = _one_line(raised.value)
    assert "No space left on device" in message and "did not move" in message and raised.value.transient
    assert store.read_bytes(ingest.LATEST_KEY) == before[ingest.LATEST_KEY]
    assert ingest.vintage_status(store, vintage) is None, "a half-written vintage must not count as settled"
    if room < 4:  # a failed pointer write may have landed: then the files it names stay
        assert not store.exists(f"curated/{vintage}/emissions.parquet"), "a half-written vintage must be taken back"
    assert not any(p.name.endswith(".tmp") for p in store.root.rglob("*")), "no temporary file left behind"

    healed = ingest.ingest(settings, store, str(revised))
    assert healed["status"] == "curated" and healed["vintage"] == vintage
    assert store.read_json(ingest.LATEST_KEY)["vintage"] == vintage


def test_an_altered_raw_object_is_a_permanent_error_and_the_next_ingest_heals_it(curated, release: Path, tmp_path: Path) -> None:
    """raw/<v>/<file> altered between fetch and snapshot: one permanent line (not retried, not "unexpected");
    the next ingest fetches the right bytes again and writes them over the altered object."""
    settings, store = curated
    revised = _revised(release, tmp_path)
    fetched = ingest.fetch_source(settings, store, str(revised))
    raw = layout.raw_object(fetched["vintage"], fetched["file_name"])
    store.write_bytes(raw, store.read_bytes(raw).replace(b"Canada", b"Kanada", 1))

    with pytest.raises(ingest.RawAltered) as raised:
        ingest.snapshot_raw(store, fetched)
    message = _one_line(raised.value)
    assert isinstance(raised.value, PermanentError) and "altered" in message and "run the ingest again" in message

    healed = ingest.ingest(settings, store, str(revised))
    assert healed["status"] == "curated" and healed["vintage"] == fetched["vintage"]
    assert store.read_bytes(raw) == revised.read_bytes()


def _edit_curated(store: ObjectStore, vintage: str, factor: float = 1.5) -> bytes:
    """Canada's 2010-2014 co2_per_capita times ``factor`` in the curated table, written back as a readable table."""
    key = layout.curated_table(vintage)
    table = pd.read_parquet(io.BytesIO(store.read_bytes(key)))
    rows = (table["entity"] == "Canada") & (table["variable"] == "co2_per_capita") & table["year"].between(2010, 2014)
    table.loc[rows, "value"] *= factor
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    store.write_bytes(key, buffer.getvalue())
    return buffer.getvalue()


def test_an_edited_curated_table_is_refused_and_the_next_ingest_of_its_release_curates_it_again(
    curated, release: Path, tmp_path: Path
) -> None:
    """The curated table's sha256 is recorded at curation (meta.json and the pointer) and checked by every read: edited
    numbers were read as curated, forecast and compared with the next release. The next ingest of the same
    release said "source unchanged" and left them; it curates the table again from the source now."""
    settings, store = curated
    pointer = store.read_json(ingest.LATEST_KEY)
    vintage, key = pointer["vintage"], layout.curated_table(pointer["vintage"])
    good = store.read_bytes(key)
    assert pointer[ingest.TABLE_SHA256] == hashlib.sha256(good).hexdigest()
    assert store.read_json(layout.curated_meta(vintage)) == pointer
    _edit_curated(store, vintage)

    with pytest.raises(ingest.CuratedAltered) as raised:
        ingest.read_curated(store, vintage, "Canada", "co2_per_capita")
    message = _one_line(raised.value)
    assert isinstance(raised.value, PermanentError) and message.startswith(f"{store.uri(key)} does not match the sha256 recorded"), message
    assert f"`co2cast ingest --source {release}`" in message and "restore it from a backup" in message
    before = _snapshot(store)
    with pytest.raises(ingest.CuratedAltered):  # a new release is not gated against (nor compared with) edited numbers
        ingest.ingest(settings, store, str(_revised(release, tmp_path)))
    _assert_nothing_curated(store, before)

    healed = ingest.ingest(settings, store, str(release))
    assert healed["status"] == "unchanged" and f"Its curated table {key} was no longer of the sha256" in healed["message"]
    assert store.read_bytes(key) == good and store.read_json(ingest.LATEST_KEY) == pointer
    assert ingest.read_curated(store, vintage, "Canada", "co2_per_capita")["value"].min() > 0
    again = ingest.ingest(settings, store, str(release))
    assert again["status"] == "unchanged" and "curated again" not in again["message"]


def test_a_table_written_again_as_other_bytes_records_their_sha256(
    curated, release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another pandas or pyarrow writes other bytes for the same table: the table curated again from the source gets
    its own sha256 in meta.json and curated/latest.json, and reads."""
    settings, store = curated
    vintage = store.read_json(ingest.LATEST_KEY)["vintage"]
    _edit_curated(store, vintage)

    def other_writer(frame: pd.DataFrame) -> bytes:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False, compression="gzip")
        return buffer.getvalue()

    monkeypatch.setattr(ingest, "_parquet_bytes", other_writer)
    assert "curated again from the source" in ingest.ingest(settings, store, str(release))["message"]
    recorded = hashlib.sha256(store.read_bytes(layout.curated_table(vintage))).hexdigest()
    assert store.read_json(layout.curated_meta(vintage))[ingest.TABLE_SHA256] == recorded
    assert store.read_json(ingest.LATEST_KEY)[ingest.TABLE_SHA256] == recorded
    assert ingest.read_curated(store, vintage, "Canada", "co2_per_capita")["value"].min() > 0


def test_a_vintage_curated_before_the_table_sha256_was_recorded_stays_readable(curated, release: Path) -> None:
    """No sha256 in its meta.json or pointer: read unchecked, and nothing written by the read; the next ingest of its
    release leaves a table that is there (it cannot tell), and curates one that is gone, recording its sha256."""
    settings, store = curated
    vintage = store.read_json(ingest.LATEST_KEY)["vintage"]
    for key in (layout.curated_meta(vintage), ingest.LATEST_KEY):
        store.write_json(key, {k: v for k, v in store.read_json(key).items() if k != ingest.TABLE_SHA256})
    edited = _edit_curated(store, vintage, factor=1.01)
    before = _snapshot(store)
    assert len(ingest.read_curated(store, vintage, "Canada", "co2_per_capita")) > 0
    assert "curated again" not in ingest.ingest(settings, store, str(release))["message"]
    assert _snapshot(store) == before and store.read_bytes(layout.curated_table(vintage)) == edited

    store.delete(layout.curated_table(vintage))
    with pytest.raises(StoreDataError, match=r"is missing: .* or ingest vintage \w+'s release again"):
        ingest.read_curated(store, vintage)
    assert "was missing: curated again from the source" in ingest.ingest(settings, store, str(release))["message"]
    recorded = hashlib.sha256(store.read_bytes(layout.curated_table(vintage))).hexdigest()
    assert store.read_json(layout.curated_meta(vintage))[ingest.TABLE_SHA256] == recorded
    assert store.read_json(ingest.LATEST_KEY)[ingest.TABLE_SHA256] == recorded


@pytest.mark.parametrize("damage", ["appended", "deleted"])
def test_an_altered_raw_object_of_a_curated_vintage_is_written_again_by_the_next_ingest(damage: str, curated, release: Path) -> None:
    """raw/<v>/<file> of a curated vintage: the ingest of its release said "source unchanged" and kept the altered bytes."""
    settings, store = curated
    meta = store.read_json(layout.raw_meta(store.read_json(ingest.LATEST_KEY)["vintage"]))
    raw = layout.raw_object(meta["vintage"], meta["file_name"])
    if damage == "appended":
        store.write_bytes(raw, store.read_bytes(raw) + b"x")
    else:
        store.delete(raw)
    result = ingest.ingest(settings, store, str(release))
    assert result["status"] == "unchanged" and f"Its raw snapshot {raw} was" in result["message"], result["message"]
    assert store.read_bytes(raw) == release.read_bytes()
    assert "raw snapshot" not in ingest.ingest(settings, store, str(release))["message"]


def test_curating_without_a_passing_gx_result_is_a_permanent_error(curated, release: Path, tmp_path: Path) -> None:
    settings, store = curated
    before = _snapshot(store)
    snapshot = ingest.snapshot_raw(store, ingest.fetch_source(settings, store, str(_revised(release, tmp_path))))
    validated = {**snapshot, "success": True, "summary": "", "gated_against": store.read_json(ingest.LATEST_KEY)["vintage"]}
    with pytest.raises(ingest.NotValidated) as raised:
        ingest.curate_vintage(settings, store, validated)
    message = _one_line(raised.value)
    assert isinstance(raised.value, PermanentError) and "no passing GX result" in message and "run the ingest again" in message
    _assert_nothing_curated(store, before)


class _Killed(BaseException):
    """The process dies: nothing after it runs, nothing is cleaned up."""


class _KilledBeforePointer(LocalStore):
    """A local store whose process is killed just before ``curated/latest.json`` is written."""

    def write_json(self, key: str, value: Any) -> None:
        if key == ingest.LATEST_KEY:
            raise _Killed
        super().write_json(key, value)


def _killed_before_pointer(settings: Settings, store: LocalStore, release: Path, tmp_path: Path) -> Path:
    """Release B (one revised value), its ingest killed between ``curated/<v>/meta.json`` and ``curated/latest.json``."""
    b = tmp_path / "b" / "owid.csv"
    b.parent.mkdir()
    b.write_bytes(_set("Canada", "2012", "co2", "555.0")(release))
    with pytest.raises(_Killed):
        ingest.ingest(settings, _KilledBeforePointer(store.root), str(b))
    return b


@pytest.mark.parametrize("first", [True, False], ids=["first-vintage", "over-a-curated-one"])
def test_kill_between_meta_and_pointer_is_completed_by_the_rerun(first: bool, release: Path, tmp_path: Path) -> None:
    """``curated/<v>/meta.json`` written, the pointer not: the rerun of the release curates it and moves the pointer."""
    settings, store = _settings(tmp_path), LocalStore(tmp_path / "store")
    if not first:
        assert ingest.ingest(settings, store, str(release))["status"] == "curated"
    revised = _revised(release, tmp_path)
    vintage, _ = ingest.vintage_id(revised.read_bytes())
    with pytest.raises(_Killed):
        ingest.ingest(settings, _KilledBeforePointer(store.root), str(revised))
    assert store.exists(f"curated/{vintage}/meta.json")
    assert ingest.vintage_status(store, vintage) is None, "a vintage never in latest.json is not settled"

    healed = ingest.ingest(settings, store, str(revised))
    assert healed["status"] == "curated" and healed["vintage"] == vintage
    assert store.read_json(ingest.LATEST_KEY)["vintage"] == vintage
    assert ingest.ingest(settings, store, str(revised))["status"] == "unchanged"
    if not first:  # the vintage it superseded stays superseded: no way back to older data
        older = ingest.ingest(settings, store, str(release))
        assert older["status"] == "unchanged" and "already curated" in older["message"]
        assert store.read_json(ingest.LATEST_KEY)["vintage"] == vintage


def _one_year_more(path: Path) -> bytes:
    """The release with a 2015 row for every entity (its 2014 values again): a newer release than any ending in 2014."""
    lines = path.read_text().splitlines()
    extra = [line.replace(",2014,", ",2015,", 1) for line in lines[1:] if line.split(",")[2] == "2014"]
    return "\n".join([*lines, *extra]).encode() + b"\n"


@pytest.mark.parametrize("first", [True, False], ids=["first-vintage", "over-a-curated-one"])
def test_two_ingests_killed_before_the_pointer_are_each_completed_by_their_rerun(first: bool, release: Path, tmp_path: Path) -> None:
    """Releases A and B, both killed between ``curated/<v>/meta.json`` and ``curated/latest.json``, both gated
    against the same vintage. A's rerun curates A; B was never in the pointer either, so B's rerun gates it
    again, against A, and curates it over A (it was reported "already curated", with nothing of it curated)."""
    settings, store = _settings(tmp_path), LocalStore(tmp_path / "store")
    if not first:
        assert ingest.ingest(settings, store, str(release))["status"] == "curated"
    before = store.read_bytes(ingest.LATEST_KEY) if not first else None
    a, b = _revised(release, tmp_path), tmp_path / "b" / "owid.csv"
    b.parent.mkdir()
    b.write_bytes(_set("Canada", "2012", "co2", "555.0")(release))
    for path in (a, b):
        with pytest.raises(_Killed):
            ingest.ingest(settings, _KilledBeforePointer(store.root), str(path))
    a_vintage, b_vintage = (ingest.vintage_id(p.read_bytes())[0] for p in (a, b))
    assert (store.read_bytes(ingest.LATEST_KEY) if store.exists(ingest.LATEST_KEY) else None) == before

    assert ingest.ingest(settings, store, str(a))["status"] == "curated"
    assert ingest.vintage_status(store, b_vintage) is None, "B was never in curated/latest.json"
    healed = ingest.ingest(settings, store, str(b))
    assert healed["status"] == "curated" and healed["vintage"] == b_vintage, healed.get("message")
    assert "never in curated/latest.json" in healed["message"]
    latest = store.read_json(ingest.LATEST_KEY)
    assert latest["vintage"] == b_vintage and latest["previous_vintage"] == a_vintage, "B is gated and curated against A"
    # Both were published now: neither is curated again, and the pointer never goes back to older data.
    for path in (a, b, *([] if first else [release])):
        again = ingest.ingest(settings, store, str(path))
        assert again["status"] == "unchanged" and "already curated" in again["message"], path
    assert store.read_json(ingest.LATEST_KEY)["vintage"] == b_vintage


def test_a_release_killed_before_the_pointer_is_gated_against_what_was_curated_since(curated, release: Path, tmp_path: Path) -> None:
    """B, killed before the pointer, then A (a year newer) curated by another ingest: B's rerun is gated against A
    and refused (its newest year is older than A's), quarantined; the pointer stays on A."""
    settings, store = curated
    b = _killed_before_pointer(settings, store, release, tmp_path)
    newer = tmp_path / "a" / "owid.csv"
    newer.parent.mkdir()
    newer.write_bytes(_one_year_more(release))
    a = ingest.ingest(settings, store, str(newer))
    assert a["status"] == "curated" and a["latest_year"] == 2015
    before = _snapshot(store)

    with pytest.raises(ingest.ValidationFailed) as raised:
        ingest.ingest(settings, store, str(b))
    assert "expect_column_max_to_be_between(column=year" in _one_line(raised.value)
    assert store.read_bytes(ingest.LATEST_KEY) == before[ingest.LATEST_KEY]
    b_vintage = ingest.vintage_id(b.read_bytes())[0]
    assert ingest.vintage_status(store, b_vintage) == "quarantined"


def test_a_broken_chain_of_pointers_counts_as_published(curated, release: Path, tmp_path: Path) -> None:
    """A ``meta.json`` missing from the chain tells nothing: a vintage killed before the pointer behind it stays
    settled ("already curated"), as before the chain was read, so the pointer never goes back to older data."""
    settings, store = curated
    killed = _killed_before_pointer(settings, store, release, tmp_path)
    a = ingest.ingest(settings, store, str(_revised(release, tmp_path)))
    c = tmp_path / "c" / "owid.csv"
    c.parent.mkdir()
    c.write_bytes(_set("Canada", "2011", "co2", "550.0")(_revised(release, tmp_path / "c")))
    assert ingest.ingest(settings, store, str(c))["previous_vintage"] == a["vintage"]
    killed_vintage = ingest.vintage_id(killed.read_bytes())[0]
    assert ingest.vintage_status(store, killed_vintage) is None, "the whole chain shows it was never published"

    store.delete(f"curated/{a['vintage']}/meta.json")
    assert ingest.vintage_status(store, killed_vintage) == "curated"
    assert ingest.ingest(settings, store, str(killed))["status"] == "unchanged"


class _PointerLandsButFails(LocalStore):
    """A store whose write of ``curated/latest.json`` lands but reports a failure (an S3 PUT whose answer was lost)."""

    def write_json(self, key: str, value: Any) -> None:
        super().write_json(key, value)
        if key == ingest.LATEST_KEY:
            raise OSError(errno.EIO, "connection reset after the upload")


def test_a_curate_retried_after_its_pointer_landed_keeps_the_vintage_it_replaced(curated, release: Path, tmp_path: Path) -> None:
    """The curate step retried (Airflow) after a pointer write that landed though it failed: the pointer still names
    the vintage it replaced (it named itself), so a vintage killed before the pointer earlier is still told apart."""
    settings, store = curated
    previous = store.read_json(ingest.LATEST_KEY)["vintage"]
    killed = _killed_before_pointer(settings, store, release, tmp_path)

    fetched = ingest.fetch_source(settings, store, str(_revised(release, tmp_path)))
    validated = ingest.validate_raw(settings, store, ingest.snapshot_raw(store, fetched))
    with pytest.raises(ingest.CurateFailed):
        ingest.curate_vintage(settings, _PointerLandsButFails(store.root), validated)
    assert store.read_json(ingest.LATEST_KEY)["vintage"] == validated["vintage"]
    retried = ingest.curate_vintage(settings, store, validated)
    assert retried["previous_vintage"] == previous and retried["revisions"]["changed_rows"] == 1
    assert store.read_json(ingest.LATEST_KEY)["previous_vintage"] == previous

    healed = ingest.ingest(settings, store, str(killed))
    assert healed["status"] == "curated" and store.read_json(ingest.LATEST_KEY)["previous_vintage"] == validated["vintage"]


def test_a_release_gated_against_a_vintage_no_longer_latest_is_not_curated(
    curated: tuple[Settings, LocalStore], release: Path, tmp_path: Path
) -> None:
    """Two ingests at once: B is gated against the curated vintage, then A is curated, then B's
    curate step runs. B's gates never saw A (its newest year, its history), so B is refused,
    nothing of it is written, and its next ingest gates it against A."""
    settings, store = curated
    previous = store.read_json(ingest.LATEST_KEY)["vintage"]
    b_release = tmp_path / "b" / "owid.csv"
    b_release.parent.mkdir()
    b_release.write_bytes(_set("Canada", "2012", "co2", "555.0")(release))
    fetched = ingest.fetch_source(settings, store, str(b_release))
    validated = ingest.validate_raw(settings, store, ingest.snapshot_raw(store, fetched))
    assert validated["gated_against"] == previous

    a = ingest.ingest(settings, store, str(_revised(release, tmp_path)))  # the other ingest, in between
    assert a["status"] == "curated"
    with pytest.raises(ingest.GatedAgainstOther, match=rf"gated against {previous}, but vintage {a['vintage']} was curated since"):
        ingest.curate_vintage(settings, store, validated)
    assert store.read_json(ingest.LATEST_KEY)["vintage"] == a["vintage"]
    assert not store.exists(f"curated/{validated['vintage']}/meta.json") and store.list("locks/") == []

    again = ingest.ingest(settings, store, str(b_release))
    assert again["status"] == "curated" and store.read_json(ingest.LATEST_KEY)["previous_vintage"] == a["vintage"]


def _steps(settings: Settings, store: ObjectStore, source: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run co2_ingest's steps one by one, as Airflow does; the snapshot and validated payloads its XComs keep."""
    fetched = ingest.fetch_source(settings, store, str(source))
    snapshot = ingest.snapshot_raw(store, fetched)
    validated = ingest.validate_raw(settings, store, snapshot)
    ingest.curate_vintage(settings, store, validated)
    return snapshot, validated


def test_a_rerun_of_an_ingest_run_moves_nothing_and_never_takes_the_pointer_back(release: Path, tmp_path: Path) -> None:
    """validate_raw and curate_vintage of a finished run cleared in Airflow (they run again on the run's XComs).

    The run of the served vintage writes nothing (its GX result, meta and the pointer stay as they
    were); the run of an older vintage is refused: it moved curated/latest.json back to the older
    data, with the newer one as its "previous" vintage, and started a forecast on it.
    """
    settings, store = _settings(tmp_path), LocalStore(tmp_path / "store")
    snapshot_a, validated_a = _steps(settings, store, release)
    snapshot_b, validated_b = _steps(settings, store, _revised(release, tmp_path))
    latest = store.read_json(ingest.LATEST_KEY)
    assert latest["vintage"] == validated_b["vintage"] and latest["previous_vintage"] == validated_a["vintage"]
    before = _snapshot(store)

    again = ingest.validate_raw(settings, store, snapshot_b)
    assert again["success"] and "not gated again" in again["summary"]
    assert ingest.curate_vintage(settings, store, validated_b) == latest
    assert _snapshot(store) == before

    for rerun in (lambda: ingest.validate_raw(settings, store, snapshot_a), lambda: ingest.curate_vintage(settings, store, validated_a)):
        with pytest.raises(ingest.AlreadyCurated) as raised:
            rerun()
        message = _one_line(raised.value)
        assert f"vintage {validated_a['vintage']} was curated before and vintage {validated_b['vintage']} has been since" in message
        assert not raised.value.transient
        assert _snapshot(store) == before


class _CountingPointerReads(LocalStore):
    """A local store that counts the reads of ``curated/latest.json``."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.pointer_reads = 0

    def read_bytes(self, key: str) -> bytes:
        self.pointer_reads += key == ingest.LATEST_KEY
        return super().read_bytes(key)


def test_each_ingest_step_reads_the_curated_pointer_once(curated, release: Path, tmp_path: Path) -> None:
    """fetch_source, validate_raw and curate_vintage each read ``curated/latest.json`` once and pass it on, to
    vintage_status and its walk of the chain of pointers too (they read it two or three times): for a vintage
    killed before its pointer (its meta.json there, so the chain is walked), and for the rerun of each step once
    it is served (a run cleared in Airflow)."""
    settings, store = curated
    killed = _killed_before_pointer(settings, store, release, tmp_path)
    counting = _CountingPointerReads(store.root)

    def reads(step: Callable[[], dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        counting.pointer_reads = 0
        result = step()
        return counting.pointer_reads, result

    count, fetched = reads(lambda: ingest.fetch_source(settings, counting, str(killed)))
    assert count == 1 and fetched["changed"], fetched["message"]
    snapshot = ingest.snapshot_raw(counting, fetched)
    count, validated = reads(lambda: ingest.validate_raw(settings, counting, snapshot))
    assert count == 1 and validated["gated_against"] is not None
    count, pointer = reads(lambda: ingest.curate_vintage(settings, counting, validated))
    assert count == 1 and store.read_json(ingest.LATEST_KEY) == pointer and pointer["vintage"] == fetched["vintage"]

    count, again = reads(lambda: ingest.fetch_source(settings, counting, str(killed)))
    assert count == 1 and not again["changed"] and "already curated" in again["message"]
    count, rerun = reads(lambda: ingest.validate_raw(settings, counting, snapshot))
    assert count == 1 and "not gated again" in rerun["summary"]
    count, served = reads(lambda: ingest.curate_vintage(settings, counting, validated))
    assert count == 1 and served == pointer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_s3_down_mid_ingest_leaves_nothing_and_a_rerun_heals(s3_env: dict[str, str], release: Path, tmp_path: Path) -> None:
    """moto's server stops between validation and curation; a new endpoint serves the same state."""
    import boto3
    from botocore.config import Config
    from moto.server import ThreadedMotoServer

    port = _free_port()
    first = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    first.start()
    endpoint = f"http://127.0.0.1:{port}"
    quick = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=2, read_timeout=5)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="faults")
    settings = _settings(tmp_path)
    store = S3Store("faults", "co2cast", client=boto3.client("s3", endpoint_url=endpoint, config=quick))
    assert ingest.ingest(settings, store, str(release))["status"] == "curated"
    latest_before = store.read_bytes(ingest.LATEST_KEY)

    revised = _revised(release, tmp_path)
    fetched = ingest.fetch_source(settings, store, str(revised))
    validated = ingest.validate_raw(settings, store, ingest.snapshot_raw(store, fetched))
    first.stop()
    with pytest.raises(ingest.CurateFailed) as raised:
        ingest.curate_vintage(settings, store, validated)
    message = _one_line(raised.value)
    assert "did not move" in message and raised.value.transient

    port = _free_port()
    second = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    second.start()
    try:
        back = S3Store("faults", "co2cast", client=boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", config=quick))
        assert back.read_bytes(ingest.LATEST_KEY) == latest_before
        assert ingest.vintage_status(back, fetched["vintage"]) is None
        healed = ingest.ingest(settings, back, str(revised))
        assert healed["status"] == "curated" and back.read_json(ingest.LATEST_KEY)["vintage"] == fetched["vintage"]
    finally:
        second.stop()
