"""The Great Expectations gate: real data passes, each kind of bad input is rejected.

Every rejection must leave the release in quarantine with the GX result and a report, nothing
curated for it, and ``curated/latest.json`` exactly as it was.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import ingest, plausibility, sources
from pipeline.config import ConfigError, Settings
from pipeline.store import LocalStore
from pipeline.validation import GateResult, run_suite


def _settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", store_uri=(tmp_path / "store").as_uri())


def _csv_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _rewrite(path: Path, name: str, transform: Callable[[pd.DataFrame], pd.DataFrame]) -> bytes:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return transform(frame).to_csv(index=False).encode()


def _set(frame: pd.DataFrame, mask: pd.Series, column: str, value: str) -> pd.DataFrame:
    out = frame.copy()
    out.loc[mask, column] = value
    return out


def _canada(frame: pd.DataFrame) -> pd.Series:
    return frame["country"] == "Canada"


def _canada_in(frame: pd.DataFrame, year: str) -> pd.Series:
    return _canada(frame) & (frame["year"] == year)


def _france_2014(frame: pd.DataFrame) -> pd.Series:
    return (frame["country"] == "France") & (frame["year"] == "2014")


def _negate(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    mask = _canada(out) & (out["co2"] != "")
    out.loc[mask, "co2"] = ("-" + out.loc[mask, "co2"]).str.replace("--", "", regex=False)
    return out


def _scale_per_capita(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    mask = _canada(out) & (out["co2_per_capita"] != "")
    out.loc[mask, "co2_per_capita"] = (out.loc[mask, "co2_per_capita"].astype(float) * 1000).astype(str)
    return out


# Each case: (id, what the test expects in the report, builder(small_owid path) -> (file name, bytes)).
BAD_INPUTS: list[tuple[str, str, Callable[[Path], tuple[str, bytes]]]] = [
    ("missing_variable_column", "co2_per_capita", lambda p: ("owid.csv", _rewrite(p, "x", lambda f: f.drop(columns=["co2_per_capita"])))),
    ("missing_country_column", "Missing columns", lambda p: ("owid.csv", _rewrite(p, "x", lambda f: f.drop(columns=["country"])))),
    (
        "text_in_numeric_column",
        "value_text",
        lambda p: ("owid.csv", _rewrite(p, "x", lambda f: _set(f, _canada(f) & (f["year"] == "1990"), "co2", "n/a"))),
    ),
    (
        "duplicate_entity_year",
        "compound_columns_to_be_unique",
        lambda p: ("owid.csv", _rewrite(p, "x", lambda f: pd.concat([f, f[_canada(f)].head(3)]))),
    ),
    ("negative_emissions", "min_value", lambda p: ("owid.csv", _rewrite(p, "x", _negate))),
    (
        "year_in_future",
        "max_value",
        lambda p: ("owid.csv", _rewrite(p, "x", lambda f: _set(f, _canada(f) & (f["year"] == "2014"), "year", "2099"))),
    ),
    (
        "year_before_1750",
        "1750",
        lambda p: ("owid.csv", _rewrite(p, "x", lambda f: _set(f, _canada(f) & (f["year"] == "1800"), "year", "1066"))),
    ),
    (
        "fractional_year",
        "year_text",
        lambda p: ("owid.csv", _rewrite(p, "x", lambda f: _set(f, _canada(f) & (f["year"] == "1900"), "year", "1900.5"))),
    ),
    *[
        (
            f"year_written_{name}",
            text,
            lambda p, text=text: ("owid.csv", _rewrite(p, "x", lambda f: _set(f, _canada(f) & (f["year"] == "1900"), "year", text))),
        )
        # Both parse as the whole year 1900, so their text was not kept for the year_text regex to see.
        for name, text in [("in_scientific_notation", "1.9e3"), ("with_a_sign", "+1900")]
    ],
    ("implausible_per_capita", "co2_per_capita", lambda p: ("owid.csv", _rewrite(p, "x", _scale_per_capita))),
    ("empty_file", "empty", lambda p: ("owid.csv", b"")),
    ("header_only", "expect_table_row_count_to_be_between", lambda p: ("owid.csv", (_csv_lines(p)[0] + "\n").encode())),
    ("truncated_file", "truncated", lambda p: ("owid.csv", p.read_bytes()[: len(p.read_bytes()) // 2])),
    ("wrong_delimiter", "delimiter", lambda p: ("owid.csv", p.read_text().replace(",", ";").encode())),
    (
        "drops_entity_history",
        "lost_years",
        lambda p: ("owid.csv", _rewrite(p, "x", lambda f: f[~((f["country"] == "Germany") & (f["year"].astype(int) < 1950))])),
    ),
    ("drops_whole_entity", "lost_years", lambda p: ("owid.csv", _rewrite(p, "x", lambda f: f[f["country"] != "France"]))),
    ("newest_year_older", "expect_column_max_to_be_between", lambda p: ("owid.csv", _rewrite(p, "x", lambda f: f[f["year"] != "2014"]))),
    ("not_text", "UTF-8", lambda p: ("owid.csv", bytes(range(256)) * 10)),
    ("damaged_xlsx", "XLSX", lambda p: ("owid.xlsx", b"PK\x03\x04" + b"\x00garbage" * 50)),
    ("unknown_format", "unknown format", lambda p: ("owid.json", b'{"country": "Canada"}')),
    (
        "unit_slip_1000x",
        "jump",
        lambda p: ("owid.csv", _rewrite(p, "x", lambda f: _set(f, _canada(f) & (f["year"] == "2014"), "co2", "577360"))),
    ),
    (
        "per_capita_1000x",
        "jump",
        lambda p: ("owid.csv", _rewrite(p, "x", lambda f: _set(f, _france_2014(f), "co2_per_capita", "5010"))),
    ),
    ("overflow_1e308", "100000", lambda p: ("owid.csv", _rewrite(p, "x", lambda f: _set(f, _canada_in(f, "2014"), "co2", "1e308")))),
    ("cut_at_line_end", "tail_lost_years", lambda p: ("owid.csv", "".join(p.read_text().splitlines(keepends=True)[:-2]).encode())),
    ("above_world", "world_share", lambda p: ("owid.csv", _rewrite(p, "x", lambda f: _set(f, _canada_in(f, "1990"), "co2", "30000")))),
]


@pytest.fixture
def curated_once(tmp_path: Path, small_owid: Path) -> tuple[Settings, LocalStore, bytes]:
    """A store with one good vintage curated from the small OWID file."""
    settings = _settings(tmp_path)
    store = LocalStore(tmp_path / "store")
    result = ingest.ingest(settings, store, str(small_owid))
    assert result["status"] == "curated"
    return settings, store, store.read_bytes(ingest.LATEST_KEY)


@pytest.mark.parametrize(("case", "expected", "build"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_quarantined_and_nothing_moves(
    case: str, expected: str, build: Callable, curated_once, small_owid: Path, tmp_path: Path
) -> None:
    settings, store, latest_before = curated_once
    name, data = build(small_owid)
    bad = tmp_path / "bad" / name
    bad.parent.mkdir()
    bad.write_bytes(data)
    curated_before = store.list("curated/")

    with pytest.raises(ingest.ValidationFailed) as raised:
        ingest.ingest(settings, store, str(bad))

    vintage, _ = ingest.vintage_id(data)
    assert expected in str(raised.value), str(raised.value)
    assert store.read_bytes(f"quarantine/{vintage}/{name}") == data
    assert expected in store.read_bytes(f"quarantine/{vintage}/report.md").decode()
    assert isinstance(store.read_json(f"quarantine/{vintage}/gx_result.json"), dict)
    assert store.list("curated/") == curated_before, "a rejected release must not curate anything"
    assert store.read_bytes(ingest.LATEST_KEY) == latest_before


def test_quarantined_release_is_refused_again_not_unchanged(curated_once, small_owid: Path, tmp_path: Path) -> None:
    """A quarantined vintage is not settled: each ingest gates it again and refuses it again."""
    settings, store, _ = curated_once
    bad = tmp_path / "bad.csv"
    bad.write_text(small_owid.read_text().replace(",", ";"))
    with pytest.raises(ingest.ValidationFailed) as first:
        ingest.ingest(settings, store, str(bad))
    with pytest.raises(ingest.ValidationFailed) as again:
        ingest.ingest(settings, store, str(bad))
    assert str(again.value) == str(first.value)


def test_history_table_when_no_year_of_the_release_parses(owid_csv: Path) -> None:
    """Every year a date (``1949-01-01``) against the full OWID vintage: every year counted lost, no overflow."""
    previous = ingest.curated_table(sources.read_source(owid_csv.read_bytes(), owid_csv.name))
    lines = owid_csv.read_text().splitlines()
    column = lines[0].split(",").index("year")
    dated = [lines[0]]
    for line in lines[1:]:
        fields = line.split(",")
        fields[column] += "-01-01"
        dated.append(",".join(fields))
    staging = sources.read_source(("\n".join(dated) + "\n").encode(), "owid.csv")
    assert staging["year"].isna().all()
    history = plausibility.history_table(previous, staging, [])
    assert len(history) == previous.groupby(["entity", "variable"], observed=True).ngroups
    assert (history["lost_years"] == history["previous_years"]).all() and history["current_last_year"].isna().all()


def test_full_owid_file_passes_the_gate(owid_csv: Path) -> None:
    staging = sources.read_source(owid_csv.read_bytes(), owid_csv.name)
    parameters = {
        "current_year": 2026,
        "previous_newest_year": 2014,
        "required_variables": ["co2", "co2_per_capita"],
        "max_per_capita": 500,
        "min_newest_year_share": plausibility.MIN_NEWEST_YEAR_SHARE,
    }
    gates = ingest.emissions_raw_gates(staging, parameters, {"latest_year": 2014})
    assert [g.suite for g in gates] == ["emissions_raw[release]", "emissions_raw[newest]", "emissions_raw"]
    assert all(g.success for g in gates), "\n".join(g.summary() for g in gates)
    assert sum(g.result["statistics"]["evaluated_expectations"] for g in gates) == 18


def test_every_regex_of_the_suites_is_ascii_only() -> None:
    """Python's ``\\s`` and ``\\d`` match a no-break space and Arabic-Indic or fullwidth digits, which pandas does not parse."""
    import re

    from pipeline.validation import EXPECTATIONS_DIR

    regexes = [
        e["kwargs"]["regex"]
        for suite in EXPECTATIONS_DIR.glob("*.json")
        if "expectations" in (document := json.loads(suite.read_text()))
        for e in document["expectations"]
        if "regex" in e["kwargs"]
    ]
    assert len(regexes) >= 2
    for regex in regexes:
        assert not re.search(r"\\[sdwb]", regex.replace("\\\\", "")) or regex.startswith("(?a)"), regex
        for text in ("2014\u00a0", "\u20092014", "\u0662\u0660\u0661\u0664", "\uff12\uff10\uff11\uff14"):
            assert re.fullmatch(regex, text) is None, (regex, text)


def test_a_value_that_did_not_parse_is_refused_whatever_its_text() -> None:
    """``value`` must not be null: a cell the regex lets through but pandas does not parse is not curated as no value."""
    staging = pd.DataFrame(
        {
            "entity": ["Canada", "Canada"],
            "iso_code": ["CAN", "CAN"],
            "year_text": [None, None],
            "year": [2013.0, 2014.0],
            "variable": ["co2_per_capita", "co2_per_capita"],
            "value_text": [None, "16"],
            "value": [16.0, float("nan")],
        }
    )
    parameters = ingest.raw_gate_parameters(staging, dt.date(2026, 1, 1), Settings(home=Path("/nonexistent")))
    gates = ingest.emissions_raw_gates(staging, {**parameters, "required_variables": ["co2_per_capita"]})
    failures = [(f["expectation"], f["kwargs"]["column"], f["rows"]) for g in gates for f in g.failures]
    assert failures == [
        (
            "expect_column_values_to_not_be_null",
            "value",
            [{"entity": "Canada", "year": 2014.0, "variable": "co2_per_capita", "value_text": "16", "value": None}],
        )
    ], failures


def _newest_share(staging: pd.DataFrame, previous_newest_year: int | None = None) -> float:
    table = plausibility.newest_year_table(plausibility.release_table(staging), previous_newest_year)
    return float(table["newest_year_share"].iloc[0])


def test_real_releases_newest_year_is_reported_by_nearly_every_entity(owid_csv: Path, gapminder_csv: Path, owid_renamed_pair) -> None:
    """The newest-year rule has room on OWID's and Gapminder's real files, also when per capita and population lag a year.

    A per-capita value needs the population, which OWID's newest year may not have yet: an
    entity reports a year when any of its variables does.
    """
    for path in (owid_csv, gapminder_csv, *owid_renamed_pair):
        staging = sources.read_source(path.read_bytes(), path.name)
        newest = int(staging["year"].max())
        assert _newest_share(staging) >= 0.99 and _newest_share(staging, newest - 1) >= 0.99, path.name
    staging = sources.read_source(owid_csv.read_bytes(), owid_csv.name)
    lagging = staging[~((staging["year"] == 2014) & (staging["variable"] != "co2"))].reset_index(drop=True)
    assert _newest_share(lagging, 2013) >= 0.99 and _newest_share(lagging) >= 0.99
    assert plausibility.MIN_NEWEST_YEAR_SHARE <= 0.5


def test_a_stray_row_in_a_newer_year_is_refused_against_the_previous_vintage(owid_csv: Path, tmp_path: Path) -> None:
    """Tuvalu once more in 2025 (only its per-capita value: below every World check) on the embedded release."""
    staging = sources.read_source(owid_csv.read_bytes(), owid_csv.name)
    row = staging[(staging["entity"] == "Tuvalu") & (staging["year"] == 2014) & (staging["variable"] == "co2_per_capita")]
    stray = pd.concat([staging, row.assign(year=2025.0)], ignore_index=True)
    for previous in ({"latest_year": 2014}, None):
        gates = {g.suite: g for g in ingest.run_raw_gates(_settings(tmp_path), stray, dt.date(2026, 1, 1), previous)}
        assert [suite for suite, g in gates.items() if not g.success] == ["emissions_raw[newest]"]
        line = gates["emissions_raw[newest]"].one_line()
        assert "entity=Tuvalu year=2025 reported_by=1 of 241 entities whose data reach 2014" in line, line


def test_strays_in_different_years_are_refused_on_a_first_vintage(owid_csv: Path, tmp_path: Path) -> None:
    """Two stray rows, each in its own later year: the reference was the second-newest last year of an entity, the
    other stray's, so each made the other the whole of the entities expected (1 of 2 reporting: 0.5 passed). The
    reference is the newest year at least half of the entities reach."""
    rows = [{"entity": f"C{i}", "variable": "co2", "year": 2014.0} for i in range(200)]
    rows += [{"entity": "Tuvalu", "variable": "co2", "year": 2024.0}, {"entity": "Nauru", "variable": "co2", "year": 2025.0}]
    table = plausibility.newest_year_table(pd.DataFrame(rows), None)
    assert table[["year", "reference_year", "reporting", "expected"]].to_dict("records") == [
        {"year": 2025, "reference_year": 2014, "reporting": 1, "expected": 202}
    ]
    assert float(table["newest_year_share"].iloc[0]) < plausibility.MIN_NEWEST_YEAR_SHARE

    staging = sources.read_source(owid_csv.read_bytes(), owid_csv.name)
    per_capita = staging[(staging["year"] == 2014) & (staging["variable"] == "co2_per_capita")]
    strays = [per_capita[per_capita["entity"] == name].assign(year=year) for name, year in (("Tuvalu", 2024.0), ("Nauru", 2025.0))]
    stray = pd.concat([staging, *strays], ignore_index=True)
    gates = {g.suite: g for g in ingest.run_raw_gates(_settings(tmp_path), stray, dt.date(2026, 1, 1), None)}
    assert [suite for suite, g in gates.items() if not g.success] == ["emissions_raw[newest]"]
    line = gates["emissions_raw[newest]"].one_line()
    assert "entity=Nauru year=2025 reported_by=1 of 241 entities whose data reach 2014" in line, line


def test_a_first_vintage_whose_newest_year_most_entities_report_passes() -> None:
    """A genuine release: every current entity reports the newest year, some entities ended long ago (historic
    countries), and a per-capita variable lags a year: the reference is the newest year, reported by all."""
    rows = [{"entity": f"C{i}", "variable": "co2", "year": 2015.0} for i in range(150)]
    rows += [{"entity": f"C{i}", "variable": "co2_per_capita", "year": 2014.0} for i in range(150)]
    rows += [{"entity": f"Old{i}", "variable": "co2", "year": float(1950 + i)} for i in range(60)]
    table = plausibility.newest_year_table(pd.DataFrame(rows), None)
    assert table[["year", "reference_year", "reporting", "expected"]].to_dict("records") == [
        {"year": 2015, "reference_year": 2015, "reporting": 150, "expected": 150}
    ]


def test_full_owid_and_gapminder_files_pass_every_gate_against_themselves(owid_csv: Path, gapminder_csv: Path, tmp_path: Path) -> None:
    """The real releases, each compared with itself as the previous vintage: plausibility and history hold.

    And the suites use no API GX has deprecated (string row conditions with a ``condition_parser``
    go in GX 2.0; the suites write theirs as GX's structured conditions).
    """
    settings = _settings(tmp_path)
    for path in (owid_csv, gapminder_csv):
        staging = sources.read_source(path.read_bytes(), path.name)
        previous = ingest.curated_table(staging)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DeprecationWarning)
            gates = ingest.run_raw_gates(settings, staging, dt.date(2026, 1, 1), {"latest_year": 2014}, previous)
        assert [g.suite for g in gates] == [
            "emissions_raw[release]",
            "emissions_raw[newest]",
            "emissions_raw",
            "emissions_plausibility",
            "emissions_plausibility[world]",
            "emissions_history",
        ]
        assert all(g.success for g in gates), "\n".join(g.summary() for g in gates)
        deprecated = {str(w.message) for w in caught if issubclass(w.category, DeprecationWarning) and "GX Core" in str(w.message)}
        assert not deprecated, deprecated


def test_every_allowed_break_is_needed(owid_csv: Path, gapminder_csv: Path, tmp_path: Path) -> None:
    """Without the allow-list the real files fail on exactly the listed breaks: no entry is dead weight."""
    from pipeline import plausibility

    entries = plausibility.load_allowed_breaks()
    settings = _settings(tmp_path)
    used: set[int] = set()
    for path in (owid_csv, gapminder_csv):
        table = plausibility.plausibility_table(sources.read_source(path.read_bytes(), path.name), settings.year_on_year_floor, entries=[])
        flagged = table[
            (table["jump"] > settings.max_year_on_year_factor)
            | (table["history_ratio"] > settings.max_history_factor)
            | (table["world_share"] > 1 + settings.world_tolerance)
        ]
        for _, row in flagged.iterrows():
            covering = [
                i
                for i, e in enumerate(entries)
                if e["entity"] == row["entity"]
                and e["years"][0] <= row["year"] <= e["years"][1]
                and row["variable"] in e.get("variables", [row["variable"]])
            ]
            assert covering, f"{row['entity']} {row['variable']} {row['year']} is flagged and not allow-listed"
            used.update(covering)
    assert used == set(range(len(entries))), [entries[i]["entity"] for i in set(range(len(entries))) - used]


def _full_release(owid_csv: Path, change: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> pd.DataFrame:
    """The embedded OWID release's staging table, changed on its real rows (``value`` only)."""
    staging = sources.read_source(owid_csv.read_bytes(), owid_csv.name)
    return staging if change is None else change(staging.copy())


def _value(entity: str | None, variables: list[str] | None, year: int | None, how: Callable) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A change to the staging table: ``value = how(value)`` on the rows of an entity, variables and year (all when ``None``)."""

    def change(staging: pd.DataFrame) -> pd.DataFrame:
        mask = pd.Series(True, index=staging.index)
        if entity is not None:
            mask &= staging["entity"] == entity
        if variables is not None:
            mask &= staging["variable"].isin(variables)
        if year is not None:
            mask &= staging["year"] == year
        assert mask.any()
        staging.loc[mask, "value"] = how(staging.loc[mask, "value"])
        return staging

    return change


def _drop_row(entity: str, variable: str, year: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(staging: pd.DataFrame) -> pd.DataFrame:
        mask = (staging["entity"] == entity) & (staging["variable"] == variable) & (staging["year"] == year)
        assert mask.sum() == 1
        return staging[~mask].reset_index(drop=True)

    return change


EMISSIONS = ["co2", "coal_co2", "oil_co2", "gas_co2", "cement_co2", "flaring_co2"]


@pytest.mark.parametrize(
    ("change", "suite", "words"),
    [
        # A large series set to 0 in one year: no finite year-on-year ratio, so the jump check skipped it.
        (
            _value("China", ["co2"], 2014, lambda v: 0.0),
            "emissions_plausibility",
            ("column=jump", "jump=inf", "entity=China", "year=2014", "variable=co2"),
        ),
        (
            _value("Canada", ["population"], 2014, lambda v: 0.0),
            "emissions_plausibility",
            ("jump=inf", "entity=Canada", "variable=population"),
        ),
        # World's total at 0, or its row gone: every country's world_share of that year was NaN, the check off.
        (
            _value("World", ["co2"], 2014, lambda v: 0.0),
            "emissions_plausibility[world]",
            ("column=world_value, min_value=0", "entity=World", "year=2014", "variable=co2"),
        ),
        (
            _drop_row("World", "coal_co2", 2000),
            "emissions_plausibility[world]",
            ("expect_column_values_to_not_be_null(column=world_value)", "entity=World", "year=2000", "variable=coal_co2"),
        ),
        # A first release written in Gt: no previous vintage to compare with, the World's CO2 is 9.4 from 1960.
        (
            _value(None, EMISSIONS, None, lambda v: v / 1000),
            "emissions_plausibility[world]",
            ("column=world_value, min_value=1000", "entity=World", "variable=co2"),
        ),
    ],
    ids=["china_co2_zero", "canada_population_zero", "world_co2_zero", "world_coal_co2_missing", "first_release_in_gt"],
)
def test_a_zero_or_missing_value_of_a_large_series_is_refused_in_one_line(
    change: Callable, suite: str, words: tuple[str, ...], owid_csv: Path, tmp_path: Path
) -> None:
    """On the whole embedded release: the failing suite's one line names the entity, variable and year."""
    gates = {g.suite: g for g in ingest.run_raw_gates(_settings(tmp_path), _full_release(owid_csv, change), dt.date(2026, 1, 1))}
    failed = [name for name, gate in gates.items() if not gate.success]
    assert suite in failed, {name: gate.one_line() for name, gate in gates.items()}
    line = gates[suite].one_line()
    assert "\n" not in line and all(word in line for word in words), line


def test_the_records_own_drops_to_zero_before_1960_pass(owid_csv: Path, tmp_path: Path) -> None:
    """CDIAC's fuel series stop and restart before 1960 (17 drops to 0 from 1 Mt or more, 1914-1954): not jumps.

    From 1960 on no series of the release drops to 0 from the floor or more, so none is exempt there.
    """
    settings = _settings(tmp_path)
    table = plausibility.plausibility_table(_full_release(owid_csv), settings.year_on_year_floor, entries=[])
    drops = table[(table["value"] == 0) & (table["previous_value"] >= settings.year_on_year_floor)]
    assert len(drops) == 17 and drops["year"].between(1914, 1954).all(), drops
    assert set(drops["variable"]) <= {"coal_co2", "oil_co2", "gas_co2", "cement_co2", "flaring_co2"}
    assert drops["jump"].isna().all()
    assert plausibility.COMPLETE_SINCE == 1960


HISTORY = ["emissions_history"]


@pytest.mark.parametrize(
    ("change", "words", "failing"),
    [
        # The release in Gt, not Mt: the World's CO2 also fails its absolute floor (what a first release gets).
        (_value(None, EMISSIONS, None, lambda v: v / 1000), ("revision_ratio=0.001",), ["emissions_plausibility[world]", *HISTORY]),
        (
            _value("Canada", ["co2"], None, lambda v: v / 1000),
            ("entity=Canada", "variable=co2", "revision_ratio=0.001", "compared=1785-2014"),
            HISTORY,
        ),
        (
            _value("Kenya", ["co2_per_capita"], None, lambda v: v * 1000),
            ("entity=Kenya", "variable=co2_per_capita", "revision_ratio=1000"),
            HISTORY,
        ),
        # OWID's release of 2020-08-07 wrote every per-capita value as 0 (fixed in 2020-11-27's).
        (
            _value(None, ["co2_per_capita"], None, lambda v: v * 0),
            ("variable=co2_per_capita", "revision_factor=inf", "revision_ratio=0.0"),
            HISTORY,
        ),
    ],
    ids=["every_emission_in_gt", "canada_co2_in_gt", "kenya_per_capita_in_kg", "every_per_capita_zero"],
)
def test_a_release_in_other_units_than_the_previous_vintage_is_refused(
    change: Callable, words: tuple[str, ...], failing: list[str], owid_csv: Path, tmp_path: Path
) -> None:
    """Consistent within the release, the relative checks pass; against the previous vintage's values it is 1000 times off (or zeroed)."""
    previous = ingest.curated_table(_full_release(owid_csv))
    gates = ingest.run_raw_gates(_settings(tmp_path), _full_release(owid_csv, change), dt.date(2026, 1, 1), {"latest_year": 2014}, previous)
    assert [g.suite for g in gates if not g.success] == failing, [g.one_line() for g in gates]
    line = gates[-1].one_line()
    assert "expect_column_values_to_be_between(column=revision_factor, min_value=1" in line and "\n" not in line, line
    assert all(word in line for word in words), line


def test_a_restatement_on_the_allow_list_passes_the_revision_check(owid_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [
        *plausibility.load_allowed_breaks(),
        {"entity": "Canada", "variables": ["co2"], "years": [1750, 2014], "checks": ["revision"], "why": "restated"},
    ]
    (breaks := tmp_path / "breaks.json").write_text(json.dumps({"breaks": entries}))
    monkeypatch.setenv("CO2CAST_ALLOWED_BREAKS", str(breaks))
    previous = ingest.curated_table(_full_release(owid_csv))
    staging = _full_release(owid_csv, _value("Canada", ["co2"], None, lambda v: v / 1000))
    gates = ingest.run_raw_gates(_settings(tmp_path), staging, dt.date(2026, 1, 1), {"latest_year": 2014}, previous)
    assert all(g.success for g in gates), [g.one_line() for g in gates]
    history = plausibility.history_table(previous, staging, entries)
    canada = history[(history["entity"] == "Canada") & (history["variable"] == "co2")]
    assert canada["revision_ratio"].isna().all() and (canada["compared"] == "").all()


def test_real_revisions_between_vintages_pass(owid_csv: Path, gapminder_csv: Path, tmp_path: Path) -> None:
    """Two real vintages of per-capita CO2: Gapminder's 2014 edition (CDIAC) and OWID's 2020 release.

    Their per-series median ratios are within a few percent (at most 3.7 times: Liechtenstein),
    far inside the factor of 100; a synthetic revision of the whole release (+3 % from 1990,
    -2 % in the provisional year) passes every gate against the release as it was; and so does
    the release against one with every per-capita value written as 0 (OWID's release of
    2020-11-27 against its broken one of 2020-08-07: values filled where there were zeros).
    """
    settings = _settings(tmp_path)
    owid = _full_release(owid_csv)
    gapminder = ingest.curated_table(sources.read_source(gapminder_csv.read_bytes(), gapminder_csv.name))
    history = plausibility.history_table(gapminder, owid, plausibility.load_allowed_breaks())
    compared = history.dropna(subset=["revision_factor"])
    assert len(compared) >= 170 and compared["revision_ratio"].sub(1).abs().median() < 0.01
    assert 3 < compared["revision_factor"].max() < settings.max_year_on_year_factor
    # The names the two sources spell differently are lost years, but no series is off in units.
    gate = run_suite("emissions_history", history, {"max_lost_years": 3, "max_tail_lost_years": 0, "max_revision_factor": 100.0})
    assert "revision_factor" not in {f["kwargs"].get("column") for f in gate.failures}, gate.summary()

    def revise(staging: pd.DataFrame) -> pd.DataFrame:
        staging.loc[staging["year"] >= 1990, "value"] *= 1.03
        staging.loc[staging["year"] == 2014, "value"] *= 0.98
        return staging

    gates = ingest.run_raw_gates(
        settings, _full_release(owid_csv, revise), dt.date(2026, 1, 1), {"latest_year": 2014}, ingest.curated_table(owid)
    )
    assert all(g.success for g in gates), [g.one_line() for g in gates if not g.success]

    zeroed = ingest.curated_table(_full_release(owid_csv, _value(None, ["co2_per_capita"], None, lambda v: v * 0)))
    gates = ingest.run_raw_gates(settings, owid, dt.date(2026, 1, 1), {"latest_year": 2014}, zeroed)
    assert all(g.success for g in gates), [g.one_line() for g in gates if not g.success]


def test_tolerances_come_from_the_settings(small_owid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 12x jump passes at the default factor (100) and fails at CO2CAST_MAX_YEAR_ON_YEAR_FACTOR=10."""
    frame = pd.read_csv(small_owid, dtype=str, keep_default_na=False)
    mask = (frame["country"] == "Canada") & (frame["year"] == "1990")
    frame.loc[mask, "co2_per_capita"] = str(float(frame.loc[mask, "co2_per_capita"].item()) * 12)
    staging = sources.to_staging(frame)
    default = ingest.run_raw_gates(_settings(tmp_path), staging, dt.date(2026, 1, 1))
    assert default[3].suite == "emissions_plausibility" and default[3].success
    monkeypatch.setenv("CO2CAST_MAX_YEAR_ON_YEAR_FACTOR", "10")
    strict = ingest.run_raw_gates(_settings(tmp_path), staging, dt.date(2026, 1, 1))
    assert not strict[3].success and "Canada" in strict[3].summary()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "no such file"),
        ("country,year\n", "is not an allow-list of breaks (JSONDecodeError: "),
        ('{"breaks": [1]}', "is not an allow-list of breaks (AttributeError: "),
    ],
    ids=["missing", "not_json", "entry_not_an_object"],
)
def test_an_allowed_breaks_setting_that_names_no_allow_list_is_one_configuration_line(
    small_owid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None, words: str
) -> None:
    """CO2CAST_ALLOWED_BREAKS with a typo in the path, or naming another file, failed 'FileNotFoundError … (unexpected …)'
    (which Airflow retries); it is a setup error in one line naming the variable and what to set."""
    breaks = tmp_path / "my_breaks.json"
    if content is not None:
        breaks.write_text(content)
    monkeypatch.setenv("CO2CAST_ALLOWED_BREAKS", str(breaks))
    staging = sources.to_staging(pd.read_csv(small_owid, dtype=str, keep_default_na=False))
    with pytest.raises(ConfigError) as raised:
        ingest.run_raw_gates(_settings(tmp_path), staging, dt.date(2026, 1, 1))
    message = str(raised.value)
    assert message.startswith(f"CO2CAST_ALLOWED_BREAKS={str(breaks)!r}") and words in message and "\n" not in message, message
    assert message.endswith("point it at a JSON file like expectations/allowed_breaks.json, or unset it for that one"), message


def test_gapminder_file_is_ingested(gapminder_csv: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    result = ingest.ingest(_settings(tmp_path), store, str(gapminder_csv))
    assert result["status"] == "curated"
    table = ingest.read_curated(store, result["vintage"])
    assert set(table["variable"]) == {"co2_per_capita"}
    canada = table[table["entity"] == "Canada"]
    assert canada["year"].min() == 1800 and canada["year"].max() == 2014
    raw = pd.read_csv(gapminder_csv)  # the wide file's own cell: Canada, 1800
    assert canada.loc[canada["year"] == 1800, "value"].item() == raw.loc[raw["country"] == "Canada", "1800"].item()


def test_curated_vintage_layout_and_revisions(curated_once, small_owid: Path, tmp_path: Path) -> None:
    settings, store, latest_before = curated_once
    first = json.loads(latest_before)
    table = ingest.read_curated(store, first["vintage"])
    assert list(table.columns) == ingest.CURATED_COLUMNS
    assert table["provisional"].sum() > 0 and set(table.loc[table["provisional"], "year"]) == {2014}
    assert first["latest_year"] == 2014 and first["previous_vintage"] is None
    # One series read on its own (what a forecast task reads) is exactly its rows of the whole table.
    canada = table[(table["entity"] == "Canada") & (table["variable"] == "co2")].reset_index(drop=True)
    assert len(canada) > 100
    pd.testing.assert_frame_equal(ingest.read_curated(store, first["vintage"], "Canada", "co2"), canada)
    assert ingest.read_curated(store, first["vintage"], "Atlantis", "co2").empty
    assert set(ingest.read_curated(store, first["vintage"], variable="co2")["variable"]) == {"co2"}

    # A revised release: Canada's 2013 co2 changes, one entity is added.
    frame = pd.read_csv(small_owid, dtype=str, keep_default_na=False)
    mask = (frame["country"] == "Canada") & (frame["year"] == "2013")
    old_value = float(frame.loc[mask, "co2"].item())
    frame.loc[mask, "co2"] = str(old_value + 10)
    extra = frame[frame["country"] == "France"].assign(country="Testland", iso_code="TST")
    revised = tmp_path / "revised.csv"
    pd.concat([frame, extra]).to_csv(revised, index=False)

    second = ingest.ingest(settings, store, str(revised))
    assert second["status"] == "curated" and second["previous_vintage"] == first["vintage"]
    assert json.loads(store.read_bytes(ingest.LATEST_KEY))["vintage"] == second["vintage"]
    summary = store.read_json(f"curated/{second['vintage']}/revisions.json")
    assert summary["entities_added"] == ["Testland"] and summary["entities_removed"] == []
    changes = pd.read_parquet(io.BytesIO(store.read_bytes(f"curated/{second['vintage']}/revisions.parquet")))
    row = changes[(changes["entity"] == "Canada") & (changes["variable"] == "co2")]
    assert len(row) == 1 and row["year"].item() == 2013
    assert row["delta"].item() == pytest.approx(10) and row["old"].item() == pytest.approx(old_value)
    assert summary["counts"]["changed_rows"] == len(changes)


def test_the_ingest_command_reads_the_release_once_and_curates_what_the_separate_steps_curate(
    small_owid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # co2cast ingest gates and curates in one process, so it curates the table the gates passed
    # instead of parsing the release again; the Airflow tasks run apart and read it again.
    reads: list[str] = []
    read_source = sources.read_source
    monkeypatch.setattr(sources, "read_source", lambda data, name, *a: reads.append(name) or read_source(data, name, *a))

    settings = _settings(tmp_path)
    together = LocalStore(tmp_path / "together")
    pointer = ingest.ingest(settings, together, str(small_owid))
    assert reads == [small_owid.name]

    reads.clear()
    apart = LocalStore(tmp_path / "apart")
    snapshot = ingest.snapshot_raw(apart, ingest.fetch_source(settings, apart, str(small_owid)))
    validated = ingest.validate_raw(settings, apart, snapshot)
    assert ingest.curate_vintage(settings, apart, validated)["vintage"] == pointer["vintage"]
    assert reads == [small_owid.name] * 2
    for name in ("emissions.parquet", "revisions.parquet", "revisions.json"):
        key = f"curated/{pointer['vintage']}/{name}"
        assert together.read_bytes(key) == apart.read_bytes(key), key


def test_unchanged_source_writes_nothing(curated_once, small_owid: Path) -> None:
    settings, store, _ = curated_once
    keys_before = {k: store.read_bytes(k) for k in store.list()}
    result = ingest.ingest(settings, store, str(small_owid))
    assert result["status"] == "unchanged"
    assert {k: store.read_bytes(k) for k in store.list()} == keys_before


def test_a_large_table_is_let_go_chunk_by_chunk(small_owid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each chunk is freed once validated, before the next is made: memory stays one chunk's worth.

    GX's validation objects hold a chunk in reference cycles; without the collection after a
    large chunk (``COLLECT_ROWS`` set low here) the chunks pile up until the collector runs.
    """
    import gc
    import weakref

    from pipeline import plausibility, validation

    staging = sources.read_source(small_owid.read_bytes(), small_owid.name)
    parameters = ingest.raw_gate_parameters(staging, dt.date(2026, 1, 1), _settings(tmp_path), None)
    monkeypatch.setattr(plausibility, "CHUNK_ROWS", 2000)
    monkeypatch.setattr(validation, "COLLECT_ROWS", 1000)
    alive_when_next_made: list[int] = []
    made: list[weakref.ref] = []

    def chunks():
        for chunk in plausibility.entity_chunks(staging):
            alive_when_next_made.append(sum(ref() is not None for ref in made))
            made.append(weakref.ref(chunk))
            yield chunk
            del chunk

    gc.disable()  # only the gate's own collection may free them
    try:
        gate = validation.run_suite_chunked("emissions_raw", chunks(), parameters, scope="rows")
    finally:
        gc.enable()
    assert gate.success and len(made) > 3
    assert alive_when_next_made == [0] * len(made)


def test_gates_in_chunks_of_whole_entities_find_what_the_whole_table_finds(
    small_owid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large release is gated in entity chunks: counts and verdicts equal one pass over the table."""
    from pipeline import plausibility

    frame = pd.read_csv(small_owid, dtype=str, keep_default_na=False)
    frame.loc[_canada_in(frame, "2014"), "co2"] = "577360"  # unit slip: raw ceiling, jump, history, world
    frame.loc[(frame["country"] == "France") & (frame["year"] == "1990"), "co2"] = "n/a"  # text
    frame = pd.concat([frame, frame[frame["country"] == "Kuwait"].head(2)])  # duplicates inside one entity
    staging = sources.to_staging(frame)
    settings = _settings(tmp_path)
    whole = ingest.run_raw_gates(settings, staging, dt.date(2026, 1, 1))
    monkeypatch.setattr(plausibility, "CHUNK_ROWS", 1000)
    chunks = list(plausibility.entity_chunks(staging))
    assert len(chunks) > 3 and sum(len(c) for c in chunks) == len(staging)
    assert all(set(c["entity"].unique()).isdisjoint(set(d["entity"].unique())) for c, d in itertools.combinations(chunks, 2))
    chunked = ingest.run_raw_gates(settings, staging, dt.date(2026, 1, 1))

    def counts(gates: list) -> list:
        return [
            (g.suite, g.success, [(f["expectation"], f["kwargs"].get("column"), f["unexpected_count"]) for f in g.failures]) for g in gates
        ]

    assert counts(chunked) == counts(whole)
    assert [g.success for g in whole] == [True, True, False, False, True]
    failed = {f["kwargs"].get("column") for g in whole for f in g.failures}
    assert {"value_text", "jump", "history_ratio", "world_share"} <= failed


def test_curated_table_is_sorted_like_a_string_sort_and_read_back_as_strings(curated_once, owid_csv: Path) -> None:
    """Sorting on the codes of alphabetical categories gives the plain string sort's table."""
    staging = sources.read_source(owid_csv.read_bytes(), owid_csv.name)
    plain = staging[["entity", "iso_code", "year", "variable", "value"]].astype(
        {"entity": "string", "iso_code": "string", "variable": "string", "year": "int64"}
    )
    plain = plain.assign(provisional=plain["year"] == plain["year"].max())
    plain = plain.sort_values(["entity", "variable", "year"], ignore_index=True)[ingest.CURATED_COLUMNS]
    pd.testing.assert_frame_equal(ingest.read_tidy_file(owid_csv), plain)
    _, store, latest = curated_once
    table = ingest.read_curated(store, json.loads(latest)["vintage"])
    assert all(table[c].dtype == "string" for c in ("entity", "iso_code", "variable"))


# -- entities renamed between vintages -----------------------------------------------------------

RENAMED = [("Czech Republic", "Czechia", "CZE"), ("Macedonia", "North Macedonia", "MKD"), ("Swaziland", "Eswatini", "SWZ")]


def _release_of(path: Path, change: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> pd.DataFrame:
    """A release's staging table, its source rows changed first (text cells, as in the file)."""
    if change is None:
        return sources.read_source(path.read_bytes(), path.name)
    return sources.read_source(_rewrite(path, "x", change), path.name)


def _gate_against(previous_path: Path, staging: pd.DataFrame, tmp_path: Path) -> dict[str, Any]:
    previous = ingest.curated_table(_release_of(previous_path))
    gates = ingest.run_raw_gates(_settings(tmp_path), staging, dt.date(2021, 1, 1), {"latest_year": 2018}, previous)
    return {g.suite: g for g in gates}


def test_owids_real_renames_pass_and_are_reported(
    owid_renamed_pair: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """OWID's release of 2020-12-09 renamed Czech Republic, Macedonia and Swaziland: 24 series were 'lost' against 2020-11-27's.

    Matched by their ISO code, each is compared with its series under the new name (every year
    there, values equal) and the release passes; the curate step reports the renames.
    """
    before, after = owid_renamed_pair
    gates = _gate_against(before, _release_of(after), tmp_path)
    assert all(g.success for g in gates.values()), [g.one_line() for g in gates.values() if not g.success]
    previous = ingest.curated_table(_release_of(before))
    history = plausibility.history_table(previous, _release_of(after), plausibility.load_allowed_breaks())
    renamed = history[history["renamed_to"].notna()]
    assert sorted(set(zip(renamed["entity"], renamed["renamed_to"], strict=True))) == sorted((old, new) for old, new, _ in RENAMED)
    assert len(renamed) == 24 and (renamed["lost_years"] == 0).all()
    compared = renamed["revision_factor"].dropna()  # the series that are all 0 have no ratio
    assert len(compared) >= 20 and (compared == 1.0).all()
    assert (renamed["current_years"] == renamed["previous_years"]).all()

    settings, store = _settings(tmp_path), LocalStore(tmp_path / "store")
    assert ingest.ingest(settings, store, str(before))["status"] == "curated"
    with caplog.at_level("INFO", logger="pipeline.ingest"):
        pointer = ingest.ingest(settings, store, str(after))
    lines = [f"{old} -> {new} ({code})" for old, new, code in RENAMED]
    assert pointer["status"] == "curated" and pointer["renamed"] == lines
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("renamed: ")] == [f"renamed: {line}" for line in lines]
    summary = store.read_json(f"curated/{pointer['vintage']}/revisions.json")
    assert summary["entities_renamed"] == [{"from": old, "to": new, "iso_code": code} for old, new, code in RENAMED]
    assert summary["entities_added"] == [] and summary["entities_removed"] == []
    # The same values under the new names: nothing changed, added or removed.
    assert summary["counts"] == {"changed_rows": 0, "added_rows": 0, "removed_rows": 0}


def _scale(entity: str, column: str, factor: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        mask = (frame["country"] == entity) & (frame[column] != "")
        frame.loc[mask, column] = (frame.loc[mask, column].astype(float) * factor).astype(str)
        return frame

    return change


def test_a_renamed_series_whose_values_moved_beyond_the_factor_is_refused(
    owid_renamed_pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename is no way around the revision check: Czechia's co2 in Gt is a thousandth of Czech Republic's in Mt."""
    before, after = owid_renamed_pair
    staging = _release_of(after, _scale("Czechia", "co2", 0.001))
    gates = _gate_against(before, staging, tmp_path)
    assert [name for name, gate in gates.items() if not gate.success] == ["emissions_history"], [g.one_line() for g in gates.values()]
    line = gates["emissions_history"].one_line()
    assert "column=revision_factor" in line and "failed for 1 row(s)" in line and "lost_years" not in line, line
    assert "entity=Czech Republic renamed_to=Czechia variable=co2" in line and "revision_ratio=0.001" in line, line

    # An allow-listed restatement may name the entity by its old name or its new one.
    for name in ("Czech Republic", "Czechia"):
        entry = {"entity": name, "variables": ["co2"], "years": [1959, 2018], "checks": ["revision"], "why": "restated in Gt"}
        (breaks := tmp_path / f"breaks-{name}.json").write_text(json.dumps({"breaks": [entry]}))
        monkeypatch.setenv("CO2CAST_ALLOWED_BREAKS", str(breaks))
        assert all(g.success for g in _gate_against(before, staging, tmp_path).values()), name


def _without(*entities: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda frame: frame[~frame["country"].isin(entities)]


def _recode(entity: str, code: str, name: str | None = None) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        mask = frame["country"] == entity
        frame.loc[mask, "iso_code"] = code
        if name is not None:
            frame.loc[mask, "country"] = name
        return frame

    return change


def _split(frame: pd.DataFrame) -> pd.DataFrame:
    """Eswatini's rows twice, under two names with its code: a split, not a rename."""
    half = frame[frame["country"] == "Eswatini"].assign(country="Eswatini South")
    return pd.concat([frame, half], ignore_index=True)


@pytest.mark.parametrize(
    ("change", "lost"),
    [
        (_without("Eswatini"), "Swaziland"),  # gone, nothing new
        (_recode("Eswatini", "SWX"), "Swaziland"),  # a new name with another code
        (_recode("Eswatini", ""), "Swaziland"),  # a new name with no code
        (_split, "Swaziland"),  # two new names with its code
        (_recode("Africa", "", "African continent"), "Africa"),  # an aggregate (no code) renamed
    ],
    ids=["dropped", "other_code", "no_code", "split", "aggregate_renamed"],
)
def test_a_lost_entity_without_a_rename_still_counts_as_lost(
    owid_renamed_pair: tuple[Path, Path], tmp_path: Path, change: Callable[[pd.DataFrame], pd.DataFrame], lost: str
) -> None:
    before, after = owid_renamed_pair
    gates = _gate_against(before, _release_of(after, change), tmp_path)
    assert [name for name, gate in gates.items() if not gate.success] == ["emissions_history"], [g.one_line() for g in gates.values()]
    line = gates["emissions_history"].one_line()
    assert "column=lost_years" in line and f"entity={lost} variable=" in line and "renamed_to" not in line, line
    # The other renames are still recognised.
    renames = plausibility.find_renames(ingest.curated_table(_release_of(before)), _release_of(after, change))
    assert lost not in {r.old for r in renames} and {"Czech Republic", "Macedonia"} <= {r.old for r in renames}


def test_a_rename_needs_a_year_in_common() -> None:
    """Same code, no year in common: another entity that took the code over, not a rename."""
    before = pd.DataFrame({"entity": ["Old"] * 2, "iso_code": ["XYZ"] * 2, "year": [1990, 1991]})
    assert plausibility.find_renames(before, before.assign(entity="New")) == [plausibility.Rename("Old", "New", "XYZ")]
    assert plausibility.find_renames(before, before.assign(entity="New", year=[2000, 2001])) == []


def test_the_allow_list_exempts_a_named_loss(owid_renamed_pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entity the source dropped (no rename to find) passes when the allow-list names it for 'lost', in the years listed."""
    before, after = owid_renamed_pair
    staging = _release_of(after, _without("Eswatini"))

    def gate(*entries: dict[str, Any]) -> GateResult:
        (breaks := tmp_path / "breaks.json").write_text(json.dumps({"breaks": list(entries)}))
        monkeypatch.setenv("CO2CAST_ALLOWED_BREAKS", str(breaks))
        return _gate_against(before, staging, tmp_path)["emissions_history"]

    why = "dropped by the source"
    assert gate({"entity": "Swaziland", "years": [1950, 2018], "checks": ["lost"], "why": why}).success
    # An entity with its variables: the others are still lost.
    only_co2 = gate({"entity": "Swaziland", "variables": ["co2"], "years": [1950, 2018], "checks": ["lost"], "why": why})
    assert not only_co2.success and "entity=Swaziland variable=" in only_co2.one_line() and "variable=co2 " not in only_co2.one_line()
    # The years outside the entry still count, at the end too.
    part = gate({"entity": "Swaziland", "years": [1950, 2000], "checks": ["lost"], "why": why})
    assert not part.success and "lost=2001-2018" in part.one_line(), part.one_line()
    # Another check does not exempt lost years.
    assert not gate({"entity": "Swaziland", "years": [1950, 2018], "checks": ["revision"], "why": why}).success

    entries = [{"entity": "Swaziland", "variables": ["co2"], "years": [1950, 2000], "checks": ["lost"], "why": why}]
    history = plausibility.history_table(ingest.curated_table(_release_of(before)), staging, entries)
    row = history[(history["entity"] == "Swaziland") & (history["variable"] == "co2")].iloc[0]
    assert (row["lost_years"], row["allowed_lost_years"], row["tail_lost_years"], row["lost"]) == (18, 49, 18, "2001-2018")


def test_lost_years_on_integer_keys_equal_a_set_per_series() -> None:
    """The history table's year bookkeeping against sets of years per series, written out here."""
    rng = np.random.default_rng(12)
    rows = [(e, v, y) for e in ("A", "B", "Old", "Gone") for v in ("co2", "oil_co2") for y in range(1950, 1990) if rng.random() < 0.8]
    previous = pd.DataFrame(rows, columns=["entity", "variable", "year"]).assign(value=1.0, iso_code="X")
    keep = rng.random(len(rows)) < 0.85  # each year kept or lost at random
    current = previous[keep & (previous["entity"] != "Gone")].copy()
    current["entity"] = current["entity"].replace({"Old": "New"})  # renamed
    no_year = pd.DataFrame({"entity": ["A"], "variable": ["co2"], "year": [None]})
    current = pd.concat([current, current.head(3), no_year])  # duplicated rows, a row without a year
    current["year"] = current["year"].astype("float64")
    renames = [plausibility.Rename("Old", "New", "X")]
    table = plausibility.history_table(previous, current, [], renames=renames).set_index(["entity", "variable"])
    now_names = current.dropna(subset=["year"]).assign(year=lambda f: f["year"].astype(int))
    for (entity, variable), group in previous.groupby(["entity", "variable"]):
        then = set(group["year"])
        name = "New" if entity == "Old" else entity
        now = set(now_names.loc[(now_names["entity"] == name) & (now_names["variable"] == variable), "year"])
        row = table.loc[(entity, variable)]
        lost = sorted(then - now)
        assert (row["previous_years"], row["current_years"], row["lost_years"]) == (len(then), len(now), len(lost)), (entity, variable)
        assert row["tail_lost_years"] == len([y for y in lost if not now or y > max(now)])
        assert row["current_last_year"] == (max(now) if now else None) or (not now and pd.isna(row["current_last_year"]))
    assert len(table) == previous.groupby(["entity", "variable"]).ngroups
