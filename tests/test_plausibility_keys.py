"""Two vintages compared on integer keys of (entity, variable, year): what a merge of the two tables on those columns gives.

``plausibility.row_keys`` and ``plausibility.matching_rows`` replace the merges of
``ingest.revisions_report`` and ``plausibility.revision_ratios`` (a 200 MB release and its
previous vintage are 7.4 million rows each). Each test here holds them to a merge written out.
"""

from __future__ import annotations

import gc
import io
import json
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import ingest, plausibility
from pipeline.config import Settings
from pipeline.store import LocalStore

KEYS = ["entity", "variable", "year"]


def _table(rows: list[tuple[Any, ...]], iso: dict[str, str] | None = None) -> pd.DataFrame:
    """A curated-like table of ``(entity, variable, year, value)`` rows, names as categoricals."""
    frame = pd.DataFrame(rows, columns=[*KEYS, "value"]).astype({"year": "int64", "value": "float64"})
    frame["iso_code"] = frame["entity"].map(iso or {}).fillna("")
    for column in ("entity", "variable", "iso_code"):
        frame[column] = frame[column].astype("category")
    return frame


def _merge_report(previous: pd.DataFrame, current: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """``revisions_report``'s rows and counts as an outer merge of the two tables gives them (its code until December 2026)."""
    renames = plausibility.find_renames(previous, current)
    previous = previous[[*KEYS, "value"]]
    if renames:
        new_name = {r.old: r.new for r in renames}
        entity = pd.Categorical(previous["entity"]).remove_unused_categories()
        previous = previous.assign(entity=entity.rename_categories(lambda name: new_name.get(name, name)))
    previous, current = previous.copy(), current[[*KEYS, "value"]].copy()
    for column in ("entity", "variable"):
        a, b = pd.Categorical(previous[column]), pd.Categorical(current[column])
        categories = sorted(set(a.categories) | set(b.categories))
        previous[column], current[column] = a.set_categories(categories), b.set_categories(categories)
    merged = previous.merge(current, on=KEYS, how="outer", suffixes=("_old", "_new"), indicator=True)
    both = merged[merged["_merge"] == "both"]
    changed = both[~np.isclose(both["value_old"], both["value_new"], rtol=1e-9, atol=1e-12)]
    report = pd.DataFrame(
        {
            "entity": changed["entity"],
            "variable": changed["variable"],
            "year": changed["year"].astype("int64"),
            "old": changed["value_old"],
            "new": changed["value_new"],
            "delta": changed["value_new"] - changed["value_old"],
            "relative": (changed["value_new"] - changed["value_old"]) / changed["value_old"].abs().replace(0, np.nan),
        }
    ).reset_index(drop=True)
    counts = {
        "changed_rows": len(report),
        "added_rows": int((merged["_merge"] == "right_only").sum()),
        "removed_rows": int((merged["_merge"] == "left_only").sum()),
    }
    return report, counts


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def test_matching_rows_pairs_rows_as_a_merge_does() -> None:
    """Duplicate keys on both sides make every pair, by key, then left row, then right row; sorted input or not."""
    rng = np.random.default_rng(3)
    for left, right in [
        (rng.integers(0, 30, 200), rng.integers(0, 30, 150)),  # duplicates on both sides
        (rng.permutation(100), rng.permutation(np.arange(50, 150))),  # unique, unsorted
        (np.arange(100), np.arange(50, 150)),  # unique, sorted (a curated table)
        (np.sort(rng.integers(0, 30, 80)), np.arange(30)),  # sorted with duplicates on the left
        (np.arange(5), np.zeros(0, dtype="int64")),
    ]:
        a = pd.DataFrame({"key": left, "i": np.arange(left.size)})
        b = pd.DataFrame({"key": right, "j": np.arange(right.size)})
        merged = a.merge(b, on="key", how="outer", indicator=True)
        expected = merged[merged["_merge"] == "both"]
        pairs_left, pairs_right = plausibility.matching_rows(left.astype("int64"), right.astype("int64"))
        assert pairs_left.tolist() == expected["i"].astype(int).tolist()
        assert pairs_right.tolist() == expected["j"].astype(int).tolist()


def test_row_keys_order_and_equality_follow_the_three_columns() -> None:
    """Equal keys exactly for equal (entity, variable, year); order by names, a missing name first, a missing year last."""
    old = pd.DataFrame(
        {
            "entity": ["b", "a", None, "a", "b", "a"],
            "variable": ["x", "y", "x", None, "x", "x"],
            "year": [2000.0, 1990.0, 1990.0, 1990.0, np.nan, 1990.0],
        }
    )
    new = pd.DataFrame({"entity": ["a", "c", "b"], "variable": ["x", "x", "x"], "year": [1990, 1750, 2000]})
    keys = plausibility.row_keys(old, new)
    labels = [tuple(row) for row in old.itertuples(index=False)] + [tuple(row) for row in new.itertuples(index=False)]
    all_keys = np.concatenate([keys.old, keys.new]).tolist()

    def sort_key(label: tuple[Any, ...]) -> tuple[Any, ...]:
        entity, variable, year = (None if pd.isna(part) else part for part in label)
        return (entity is not None, entity or "", variable is not None, variable or "", year is None, 0 if year is None else int(year))

    for i, first in enumerate(labels):
        for j, second in enumerate(labels):
            assert (all_keys[i] == all_keys[j]) == (sort_key(first) == sort_key(second)), (first, second)
            assert (all_keys[i] < all_keys[j]) == (sort_key(first) < sort_key(second)), (first, second)
    named = [(key, int(y)) for key, (e, v, y) in zip(all_keys, labels, strict=True) if not (pd.isna(e) or pd.isna(v) or pd.isna(y))]
    assert keys.year(np.array([key for key, _ in named])).tolist() == [year for _, year in named]


def test_row_keys_of_years_far_apart_do_not_overflow() -> None:
    """A malformed year (4e18) does not wrap the keys around: rows still match exactly on their years, in order."""
    old = pd.DataFrame({"entity": ["a", "a", "b"], "variable": ["x", "x", "x"], "year": [1990.0, 4e18, 1990.0]})
    new = pd.DataFrame({"entity": ["a", "b", "b"], "variable": ["x", "x", "x"], "year": [4e18, 1990.0, 1991.0]})
    keys = plausibility.row_keys(old, new, {})
    assert keys.old.tolist() == sorted(keys.old.tolist(), key=lambda key: (key // keys.span, keys.year(np.array([key]))[0]))
    left, right = plausibility.matching_rows(keys.old, keys.new)
    assert (left.tolist(), right.tolist()) == ([1, 2], [0, 1])  # a 4e18, then b 1990
    assert keys.year(keys.old).tolist() == [1990, 4 * 10**18, 1990]


CASES = {
    # A rename (same ISO code, a year in common), a row the new name lost, one it gained, a revised value.
    "rename_removed_added": (
        [("Old", "co2", 1990, 10.0), ("Old", "co2", 1991, 20.0), ("Old", "co2", 1992, 30.0), ("Kept", "co2", 1990, 5.0)],
        [("New", "co2", 1990, 10.0), ("New", "co2", 1991, 21.0), ("New", "co2", 1993, 40.0), ("Kept", "co2", 1990, 5.0)],
    ),
    # Keys twice on either side: a merge pairs every row with every row (2 x 2 pairs here).
    "duplicate_keys": (
        [("A", "co2", 2000, 1.0), ("A", "co2", 2000, 2.0), ("A", "oil_co2", 2000, 3.0), ("B", "co2", 2000, 4.0)],
        [("A", "co2", 2000, 2.0), ("A", "co2", 2000, 5.0), ("B", "co2", 2000, 4.0), ("B", "co2", 2000, 4.5)],
    ),
    # A missing value on one side or both is a changed row (isclose of NaN is False); 0 to 1e-13 is not.
    "missing_values": (
        [("A", "co2", 2000, np.nan), ("A", "co2", 2001, 1.0), ("A", "co2", 2002, np.nan), ("A", "co2", 2003, 0.0)],
        [("A", "co2", 2000, np.nan), ("A", "co2", 2001, np.nan), ("A", "co2", 2002, 3.0), ("A", "co2", 2003, 1e-13)],
    ),
    # Unsorted rows, a variable only one side has, entities gone and new.
    "unsorted": (
        [("Z", "gas_co2", 2001, 1.0), ("A", "co2", 2001, 2.0), ("Gone", "co2", 1999, 3.0), ("A", "co2", 2000, 4.0)],
        [("A", "co2", 2000, 4.5), ("Newland", "co2", 1999, 3.0), ("Z", "gas_co2", 2001, 1.5), ("A", "co2", 2001, 2.0)],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_revisions_report_is_what_an_outer_merge_gives(case: str) -> None:
    """Rows (in order, with their dtypes and categories), counts and the Parquet written, against the merge."""
    iso = {"Old": "OLD", "New": "OLD", "Kept": "KPT"}
    previous, current = (_table(rows, iso) for rows in CASES[case])
    report, summary = ingest.revisions_report(previous, current)
    expected, counts = _merge_report(previous, current)
    pd.testing.assert_frame_equal(report, expected)
    assert summary["counts"] == counts
    assert _parquet(report) == _parquet(expected)


def test_revisions_report_of_a_rename_with_a_removed_and_an_added_row() -> None:
    """The numbers written out: the renamed series' revised year is listed under the new name, one row lost, one gained."""
    previous, current = (_table(rows, {"Old": "OLD", "New": "OLD", "Kept": "KPT"}) for rows in CASES["rename_removed_added"])
    report, summary = ingest.revisions_report(previous, current)
    assert report[["entity", "variable", "year", "old", "new"]].astype({"entity": str, "variable": str}).values.tolist() == [
        ["New", "co2", 1991, 20.0, 21.0]
    ]
    assert summary["counts"] == {"changed_rows": 1, "added_rows": 1, "removed_rows": 1}
    assert summary["entities_renamed"] == [{"from": "Old", "to": "New", "iso_code": "OLD"}]
    assert summary["entities_added"] == [] and summary["entities_removed"] == []
    assert json.loads(json.dumps(summary["largest_changes"]))[0]["delta"] == pytest.approx(1.0)


def test_revision_ratios_of_a_rename_and_a_duplicated_key() -> None:
    """The median of now/then per series; the release's second row of a key is not compared; a 0 filled in is not a ratio."""
    previous = _table(
        [
            ("Old", "co2", 1990, 10.0),
            ("Old", "co2", 1991, 20.0),
            ("Old", "co2", 1992, 40.0),
            ("A", "co2", 2000, 0.0),
            ("A", "co2", 2001, 8.0),
        ],
        {"Old": "OLD"},
    )
    current = _table(
        [
            ("New", "co2", 1990, 11.0),
            ("New", "co2", 1991, 20.0),
            ("New", "co2", 1991, 99.0),  # the same key again: the first row counts
            ("New", "co2", 1992, 40.0),
            ("A", "co2", 2000, 5.0),  # filled where the previous vintage had 0: not compared
            ("A", "co2", 2001, 16.0),
        ],
        {"New": "OLD"},
    )
    renames = plausibility.find_renames(previous, current)
    assert renames == [plausibility.Rename("Old", "New", "OLD")]
    ratios = plausibility.revision_ratios(previous, current, [], 1.0, renames)
    assert ratios == {
        ("A", "co2"): {"revision_ratio": 2.0, "revision_factor": 2.0, "compared": "2001"},
        ("New", "co2"): {"revision_ratio": 1.0, "revision_factor": 1.0, "compared": "1990-1992"},
    }
    entries = [{"entity": "Old", "years": [1991, 1992], "checks": ["revision"], "why": "restated"}]  # by its old name
    assert plausibility.revision_ratios(previous, current, entries, 1.0, renames)[("New", "co2")]["revision_ratio"] == pytest.approx(1.1)


def test_revision_ratios_compare_no_row_without_a_name() -> None:
    """A row with no entity (the raw suite's to report) in both vintages was compared and credited to a real series."""
    previous = _table([("A", "co2", 2000, 10.0), ("B", "co2", 2000, 10.0), (None, "oil_co2", 2001, 1.0)])
    current = _table([("A", "co2", 2000, 10.0), ("B", "co2", 2000, 10.0), (None, "oil_co2", 2001, 5000.0)])
    ratios = plausibility.revision_ratios(previous, current, [], 1.0)
    assert ratios == {
        ("A", "co2"): {"revision_ratio": 1.0, "revision_factor": 1.0, "compared": "2000"},
        ("B", "co2"): {"revision_ratio": 1.0, "revision_factor": 1.0, "compared": "2000"},
    }


def test_the_ingest_command_lets_the_staging_table_go_before_it_compares_the_vintages(
    small_owid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the curated table is held while the curate step reads the previous vintage and compares it (a large release: 200 MB less)."""
    settings = Settings(home=tmp_path / "home", store_uri=(tmp_path / "store").as_uri())
    store = LocalStore(tmp_path / "store")
    assert ingest.ingest(settings, store, str(small_owid))["status"] == "curated"
    frame = pd.read_csv(small_owid)
    frame.loc[(frame["country"] == "Canada") & (frame["year"] == 2013), "co2"] *= 1.01
    revised = tmp_path / "revised.csv"
    frame.to_csv(revised, index=False)

    staged: list[weakref.ref] = []
    alive: list[bool] = []
    curated_table, revisions_report = ingest.curated_table, ingest.revisions_report

    def curate(staging: pd.DataFrame) -> pd.DataFrame:
        staged.append(weakref.ref(staging))
        return curated_table(staging)

    def compare(previous: pd.DataFrame | None, current: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
        gc.collect()  # what only a reference cycle holds is not held
        alive.extend(ref() is not None for ref in staged)
        return revisions_report(previous, current)

    monkeypatch.setattr(ingest, "curated_table", curate)
    monkeypatch.setattr(ingest, "revisions_report", compare)
    result = ingest.ingest(settings, store, str(revised))
    assert result["status"] == "curated" and result["revisions"]["changed_rows"] == 1
    assert alive == [False]
