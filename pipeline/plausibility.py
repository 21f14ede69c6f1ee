"""Plausibility of a release's numbers: the tables the ``emissions_plausibility`` suite checks.

A number can be well-formed and still wrong: a unit slip (Mt written as kt) multiplies a value
by 1000, an overflow writes ``1e308``, a lost cell is written as ``0``. :func:`plausibility_table`
gives each value the context those errors break, and the GX suite
``expectations/emissions_plausibility.json`` bounds it:

* ``jump``: the ratio (up or down, always >= 1) to the entity's previous reported value, when
  both are positive and one is at least the materiality floor (small series start and stop);
  from :data:`COMPLETE_SINCE` on, a value of exactly 0 after one at least the floor is an
  infinite jump (a large series does not stop dead);
* ``history_ratio``: the value over the largest earlier value of the same series;
* ``world_share``: the value over the World aggregate of the same year and variable (additive
  variables only; per-capita values are not shares).

:func:`world_table` checks that the World aggregate is there to compare with: from
:data:`COMPLETE_SINCE` on, a year in which an entity reports an additive variable (at least the
floor) has a positive World value of it. :func:`history_table` compares a release with the
previous curated vintage (the ``emissions_history`` suite): the years each series lost, and
the median ratio of its values now to its values then over the years both report (a whole
series or release in other units). An entity renamed between the two (:func:`find_renames`:
one name gone, another new, with the same ISO code) is compared under its new name.

Real breaks in the record (a new fuel's statistics starting, a territory changing, a series
restated) are listed in ``expectations/allowed_breaks.json`` with the reason; the rows they
cover are exempt from the checks they name.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from pipeline.validation import EXPECTATIONS_DIR

ALLOWED_BREAKS = EXPECTATIONS_DIR / "allowed_breaks.json"
CHECKS = ("jump", "history", "world", "tail", "revision", "lost")
#: Variables that add up across countries (a country cannot exceed the World).
ADDITIVE_EXCLUDED = ("co2_per_capita",)
WORLD = "World"
#: From this year on a drop to exactly 0 counts as a jump and the World aggregate must be there.
#: Before it CDIAC's fuel series stop and restart (wartime and statistics gaps: the embedded
#: release has 17 drops to 0 from 1 Mt or more, all fuel components, 1914-1954), and OWID gives
#: the World total of the fuel components and population only every ten years before 1900. It
#: is also the year from which ``emissions_raw`` refuses negative values.
COMPLETE_SINCE = 1960
#: Rows per chunk when a large release is gated (bounded memory; whole entities per chunk).
CHUNK_ROWS = 250_000


def load_allowed_breaks(path: Path = ALLOWED_BREAKS) -> list[dict[str, Any]]:
    """The allow-list: entries ``{entity, variables?, years: [first, last], checks?, why}``."""
    entries = json.loads(path.read_text())["breaks"]
    for entry in entries:
        unknown = set(entry.get("checks", CHECKS)) - set(CHECKS)
        if unknown or not entry.get("why") or len(entry.get("years", [])) != 2:
            raise ValueError(f"{path}: entry for {entry.get('entity')!r} needs years [first, last], a why, and checks among {CHECKS}")
    return entries


def allowed_mask(frame: pd.DataFrame, check: str, entries: list[dict[str, Any]]) -> np.ndarray:
    """Rows of ``frame`` (entity, variable, year) that an allow-list entry exempts from ``check``."""
    mask = np.zeros(len(frame), dtype=bool)
    present = set(pd.unique(frame["entity"].astype(object))) if len(entries) > 20 else None
    for entry in entries:
        if check not in entry.get("checks", CHECKS) or (present is not None and entry["entity"] not in present):
            continue
        first, last = entry["years"]
        hit = (frame["entity"] == entry["entity"]).to_numpy() & frame["year"].between(first, last).to_numpy()
        if entry.get("variables"):
            hit &= frame["variable"].isin(entry["variables"]).to_numpy()
        mask |= hit
    return mask


def entity_chunks(frame: pd.DataFrame, rows: int | None = None) -> Iterator[pd.DataFrame]:
    """``frame`` in chunks of about ``rows`` rows, each holding whole entities (in row order).

    Every check that looks at one entity's rows together (uniqueness, year-on-year steps,
    the series' own maximum) is exact on such chunks, and memory stays bounded by ``rows``.
    """
    rows = rows or CHUNK_ROWS
    if len(frame) <= rows:
        yield frame
        return
    codes = pd.Categorical(frame["entity"]).codes.astype(np.int64) + 1  # 0: a missing name
    counts = np.bincount(codes)
    chunk_of_code = (np.cumsum(counts) - counts) // rows
    ids = chunk_of_code[codes]
    order = np.argsort(ids, kind="stable")
    bounds = np.searchsorted(ids[order], np.arange(ids.max() + 2))
    del codes
    for start, stop in itertools.pairwise(bounds):
        if stop > start:
            yield frame.iloc[order[start:stop]].reset_index(drop=True)


def world_values(staging: pd.DataFrame) -> pd.DataFrame:
    """The World aggregate's value per (year, variable), for :func:`plausibility_table` on chunks."""
    world = staging.loc[(staging["entity"] == WORLD) & staging["value"].notna(), ["year", "variable", "value"]]
    world = world.assign(variable=world["variable"].astype(object)).drop_duplicates(["year", "variable"])
    return world.rename(columns={"value": "world_value"}).reset_index(drop=True)


def world_table(
    staging: pd.DataFrame, floor: float = 1.0, entries: list[dict[str, Any]] | None = None, world: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per (variable, year) the World aggregate must cover, with its value there.

    Those are the years from :data:`COMPLETE_SINCE` on in which an entity other than World
    reports an additive variable at least ``floor``, for the variables the release gives World
    a value of in some year. Where World's value is missing or not positive, ``world_share``
    cannot be computed for any entity of that year: the ``emissions_plausibility`` suite's
    ``scope = "world"`` expectations refuse it, so a zeroed or dropped World total is not a
    silent pass of the world check. A release without World (a few countries of one's own) is
    not asked for it; one that drops World altogether loses its years against the previous
    vintage (``emissions_history``).

    Returns:
        Columns ``entity`` (World), ``variable``, ``year``, ``world_value`` (``NaN`` when
        World has none), ``reporting`` (entities at least ``floor``), ``largest`` (the largest
        of their values) and ``allowed_world`` (World allow-listed for ``world``).
    """
    entries = load_allowed_breaks() if entries is None else entries
    value = staging["value"]
    keep = (
        value.notna()
        & (value >= floor)
        & (value > 0)
        & (staging["year"] >= COMPLETE_SINCE)
        & (staging["entity"] != WORLD)
        & ~staging["variable"].isin(ADDITIVE_EXCLUDED)
    ).to_numpy(dtype=bool, na_value=False)
    frame = staging.loc[keep, ["variable", "year", "value"]]
    frame = frame.assign(variable=frame["variable"].astype(object))
    table = frame.groupby(["variable", "year"])["value"].agg(reporting="size", largest="max").reset_index()
    world = world_values(staging) if world is None else world
    table = table[table["variable"].isin(set(world["variable"]))]
    table = table.merge(world, on=["year", "variable"], how="left")
    table.insert(0, "entity", WORLD)
    table = table[["entity", "variable", "year", "world_value", "reporting", "largest"]].astype({"year": "int64", "world_value": "float64"})
    return table.assign(allowed_world=allowed_mask(table, "world", entries) if len(table) else np.zeros(0, dtype=bool))


def release_table(staging: pd.DataFrame) -> pd.DataFrame:
    """One row per (entity, variable) of a release: ``first_year``, ``year`` (the last), ``rows``.

    The release-level expectations of ``emissions_raw`` (``meta.scope = "release"``: not
    empty, the required variables, the newest year) hold on it exactly when they hold on the
    whole staging table.
    """
    frame = staging.loc[staging["year"].notna(), ["entity", "variable", "year"]]
    table = frame.groupby(["entity", "variable"], observed=True)["year"].agg(first_year="min", year="max", rows="size")
    table = table.reset_index()
    return table.assign(entity=table["entity"].astype(object), variable=table["variable"].astype(object))


#: A release's newest year must be reported by at least this share of the entities current before
#: it (:func:`newest_year_table`; the ``emissions_raw`` suite's ``min_newest_year_share``). Real
#: releases are far above it: in the embedded OWID release 241 of the 241 entities with data in
#: 2013 report 2014, in the Gapminder file 192 of 192.
MIN_NEWEST_YEAR_SHARE = 0.5
#: On a first vintage, the newest year that at least this share of the release's entities reach is
#: the reference of :func:`newest_year_table` (the entities expected to report the newest year).
FIRST_REFERENCE_SHARE = 0.5
#: How many of the entities reporting the newest year :func:`newest_year_table` names.
NEWEST_YEAR_NAMES = 3
NEWEST_YEAR_COLUMNS = ["year", "entity", "reported_by", "reference_year", "reporting", "expected", "newest_year_share"]


def newest_year_table(release: pd.DataFrame, previous_newest_year: int | None = None) -> pd.DataFrame:
    """One row: how many of the entities current before a release's newest year report it.

    The newest year becomes the vintage's ``latest_year`` (the year forecasts are as of, and the
    one every later release must reach), so one stray row in a later year (Tuvalu in 2025 in a
    release that ends in 2014) would make every series stale and refuse every genuine release
    after it. An entity reports a year when any of its variables has a row in it (a per-capita
    series may lag its totals by a year: it needs the population). The entities expected to
    report the newest year are those whose data reach the reference year: the previous vintage's
    newest year, or, for a first vintage (and ``co2cast validate``), the newest year that at least
    half of the release's entities reach (:data:`FIRST_REFERENCE_SHARE`), so that strays in
    different later years (Tuvalu in 2024, Nauru in 2025) are measured against the bulk of the
    release, not against each other.

    Args:
        release: :func:`release_table` of the release (one row per entity and variable, ``year``
            its last year).
        previous_newest_year: the previous vintage's ``latest_year``; ``None`` for a first vintage.

    Returns:
        No row for a release without years; else one row: ``year`` (the newest), ``entity`` (up
        to :data:`NEWEST_YEAR_NAMES` of the entities reporting it), ``reported_by`` (``"1 of 241
        entities whose data reach 2014"``), ``reference_year``, ``reporting``, ``expected`` and
        ``newest_year_share`` (``reporting / expected``), which the ``emissions_raw`` suite's
        ``scope = "newest"`` expectation bounds by :data:`MIN_NEWEST_YEAR_SHARE`.
    """
    last = release.loc[release["year"].notna() & release["entity"].notna()].groupby("entity", sort=True)["year"].max()
    if last.empty:
        return pd.DataFrame(
            {column: pd.Series(dtype="float64" if column == "newest_year_share" else object) for column in NEWEST_YEAR_COLUMNS}
        )
    last = last.astype("int64")
    newest = int(last.max())
    if previous_newest_year is not None:
        reference = min(int(previous_newest_year), newest)
    else:
        # The newest year y with at least half of the entities' last years >= y: the
        # ceil(n * share)-th last year from the top.
        ordered = np.sort(last.to_numpy())[::-1]
        reference = int(ordered[max(math.ceil(len(ordered) * FIRST_REFERENCE_SHARE), 1) - 1])
    expected = last[last >= reference]
    reporting = [str(name) for name in expected.index[expected.to_numpy() == newest]]
    names = ", ".join(reporting[:NEWEST_YEAR_NAMES]) + (
        f", … ({len(reporting) - NEWEST_YEAR_NAMES} more)" if len(reporting) > NEWEST_YEAR_NAMES else ""
    )
    row = {
        "year": newest,
        "entity": names,
        "reported_by": f"{len(reporting)} of {len(expected)} entities whose data reach {reference}",
        "reference_year": reference,
        "reporting": len(reporting),
        "expected": len(expected),
        "newest_year_share": len(reporting) / len(expected),
    }
    return pd.DataFrame([row], columns=NEWEST_YEAR_COLUMNS)


def plausibility_table(
    staging: pd.DataFrame, floor: float = 1.0, entries: list[dict[str, Any]] | None = None, world: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per numeric (entity, variable, year) of a staging table, with its context.

    Args:
        staging: the staging table of :mod:`pipeline.sources` (``value`` parsed).
        floor: values below this on both sides of a year-on-year step are not compared; from
            :data:`COMPLETE_SINCE` on, a 0 after a value at least this is an infinite jump.
        entries: the allow-list; :func:`load_allowed_breaks` when ``None``.
        world: :func:`world_values` of the whole release when ``staging`` is a chunk of it.

    Returns:
        Columns ``entity, variable, year, value, previous_value, jump, history_ratio,
        world_share`` and ``allowed_jump``, ``allowed_history``, ``allowed_world``.
    """
    entries = load_allowed_breaks() if entries is None else entries
    frame = staging.loc[staging["value"].notna() & staging["year"].notna(), ["entity", "variable", "year", "value"]]
    frame = frame.drop_duplicates(["entity", "variable", "year"])  # duplicates are the raw suite's to report
    frame = frame.sort_values(["entity", "variable", "year"], ignore_index=True)
    value = frame["value"].to_numpy(dtype="float64")
    year = frame["year"].to_numpy(dtype="float64")
    groups = frame.groupby(["entity", "variable"], sort=False, observed=True)["value"]
    previous = groups.shift().to_numpy(dtype="float64")
    earlier_max = groups.cummax().groupby([frame["entity"], frame["variable"]], sort=False, observed=True).shift().to_numpy(dtype="float64")

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        positive = (value > 0) & (previous > 0)
        material = np.fmax(value, previous) >= floor
        jump = np.where(positive & material, np.maximum(value / previous, previous / value), np.nan)
        # A material value followed by exactly 0: no finite ratio, and no real series of the
        # complete record does it (a lost cell written as 0, or a zeroed World total).
        jump[(value == 0) & (previous >= floor) & (year >= COMPLETE_SINCE)] = np.inf
        history_ratio = np.where(earlier_max >= floor, value / earlier_max, np.nan)

    world = world_values(frame) if world is None else world
    keys = pd.DataFrame({"year": frame["year"].to_numpy(), "variable": frame["variable"].astype(object).to_numpy()})
    world_value = keys.merge(world, on=["year", "variable"], how="left")["world_value"].to_numpy(dtype="float64")
    del keys
    additive = (~frame["variable"].isin(ADDITIVE_EXCLUDED) & (frame["entity"] != WORLD)).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        world_share = np.where(additive & (world_value > 0), value / world_value, np.nan)

    return frame.assign(
        previous_value=previous,
        jump=jump,
        history_ratio=history_ratio,
        world_share=world_share,
        allowed_jump=allowed_mask(frame, "jump", entries),
        allowed_history=allowed_mask(frame, "history", entries),
        allowed_world=allowed_mask(frame, "world", entries),
    )


class Rename(NamedTuple):
    """An entity the previous vintage named ``old`` and this release names ``new`` (same ISO code)."""

    old: str
    new: str
    iso_code: str


def find_renames(previous: pd.DataFrame, current: pd.DataFrame) -> list[Rename]:
    """Entities renamed between two vintages (``entity``, ``iso_code``, ``year`` columns each).

    A rename is an entity of ``previous`` missing from ``current`` while an entity new in
    ``current`` has the same non-empty ISO code (OWID's ``iso_code``) and shares a year with
    it: OWID's release of 2020-12-09 renamed Czech Republic (CZE) to Czechia, Macedonia (MKD)
    to North Macedonia and Swaziland (SWZ) to Eswatini. An entity without a code (World,
    continents, income groups: OWID's aggregates), with more than one code, or whose code is
    shared by another gone or new entity (a split, a merger) is never matched: its years count
    as lost, and the allow-list (``lost``) is the way to accept that.

    Returns:
        The renames, by old name.
    """
    if "iso_code" not in previous.columns or "iso_code" not in current.columns:
        return []
    before, after = _entity_names(previous), _entity_names(current)
    gone, came = before - after, after - before
    if not gone or not came:
        return []
    old_codes, new_codes = _one_code_each(previous, gone), _one_code_each(current, came)
    by_code: dict[str, tuple[list[str], list[str]]] = {}
    for names, side in ((old_codes, 0), (new_codes, 1)):
        for name, code in names.items():
            by_code.setdefault(code, ([], []))[side].append(name)
    renames = []
    for code, (olds, news) in by_code.items():
        if len(olds) == 1 and len(news) == 1 and _years_of(previous, olds[0]) & _years_of(current, news[0]):
            renames.append(Rename(olds[0], news[0], code))
    return sorted(renames)


def _entity_names(frame: pd.DataFrame) -> set[str]:
    return {str(name) for name in frame["entity"].dropna().unique()}  # a categorical's unique names, not its rows as objects


def _one_code_each(frame: pd.DataFrame, names: set[str]) -> dict[str, str]:
    """The ISO code of each entity in ``names`` that has exactly one non-empty code."""
    rows = frame.loc[frame["entity"].isin(names).to_numpy(dtype=bool, na_value=False), ["entity", "iso_code"]]
    rows = rows.drop_duplicates().dropna().astype(object)  # pairs first: a large release's rows are not made objects
    rows = rows.assign(entity=rows["entity"].astype(str), iso_code=rows["iso_code"].astype(str).str.strip())
    rows = rows[rows["iso_code"] != ""].drop_duplicates()
    counts = rows["entity"].value_counts()
    return {entity: code for entity, code in zip(rows["entity"], rows["iso_code"], strict=True) if counts[entity] == 1}


def _years_of(frame: pd.DataFrame, entity: str) -> set[int]:
    years = frame.loc[(frame["entity"] == entity).to_numpy(dtype=bool, na_value=False), "year"].dropna()
    return set(years.astype("int64").tolist())


def _allowed_by_either_name(frame: pd.DataFrame, check: str, entries: list[dict[str, Any]], other_name: dict[str, str]) -> np.ndarray:
    """:func:`allowed_mask`, where a renamed entity's rows are also matched by its other name (``other_name``)."""
    mask = allowed_mask(frame, check, entries)
    if other_name and len(frame):
        entity = frame["entity"].astype(object)
        renamed = entity.isin(other_name).to_numpy()
        if renamed.any():
            mask[renamed] |= allowed_mask(frame.loc[renamed].assign(entity=entity[renamed].map(other_name)), check, entries)
    return mask


def history_table(
    previous: pd.DataFrame,
    staging: pd.DataFrame,
    entries: list[dict[str, Any]] | None = None,
    floor: float = 1.0,
    renames: list[Rename] | None = None,
) -> pd.DataFrame:
    """One row per (entity, variable) of the previous vintage: what this release lost of it, and how its values moved.

    ``lost_years`` counts the previous years missing now, less those an allow-list entry
    exempts from ``lost`` (a split, a merger, a region the source dropped), which
    ``allowed_lost_years`` counts; ``lost`` names the years counted. ``tail_lost_years``
    counts, of those, the years after the series' last year now (rows gone from the end: a
    file cut at a line end, an entity that stopped short of the newest year).
    ``allowed_tail`` marks series allow-listed for ``tail``. ``revision_ratio`` is the median
    of value now over value then in the years both report (:func:`revision_ratios`),
    ``revision_factor`` the same up or down (>= 1), ``compared`` the first and last of those
    years: a whole series (or release) written in other units moves by 1000, a real revision
    by a few percent.

    A renamed entity (``renames``; :func:`find_renames` when ``None``) is compared with its
    series under the new name, which ``renamed_to`` holds (``None`` for the others); an
    allow-list entry may name it by either name.
    """
    entries = load_allowed_breaks() if entries is None else entries
    renames = find_renames(previous, staging) if renames is None else renames
    new_name = {r.old: r.new for r in renames}
    other_name = {**new_name, **{r.new: r.old for r in renames}}
    revisions = revision_ratios(previous, staging, entries, floor, renames)
    old_names, years_then, years_now = _series_years(previous, staging, new_name)
    exempt = _lost_exemptions(entries)
    rows = []
    for (entity, variable), (then, now) in zip(old_names, zip(years_then, years_now, strict=True), strict=True):
        renamed_to = new_name.get(entity)
        missing = np.setdiff1d(then, now, assume_unique=True).tolist()
        names = (entity,) if renamed_to is None else (entity, renamed_to)
        ranges = [years for name in names for key in ((name, variable), (name, None)) for years in exempt.get(key, [])]
        lost = [y for y in missing if not any(first <= y <= last for first, last in ranges)]
        last_now = int(now[-1]) if now.size else None
        tail = [y for y in lost if last_now is None or y > last_now]
        rows.append(
            {
                "entity": entity,
                "renamed_to": renamed_to,
                "variable": variable,
                "year": int(then[-1]),
                "previous_years": int(then.size),
                "current_years": int(now.size),
                "lost_years": len(lost),
                "lost": _year_ranges(lost),
                "allowed_lost_years": len(missing) - len(lost),
                "previous_last_year": int(then[-1]),
                "current_last_year": last_now,
                "tail_lost_years": len(tail),
                **revisions.get((renamed_to or entity, variable), NOT_COMPARED),
            }
        )
    columns = [
        "entity",
        "renamed_to",
        "variable",
        "year",
        "previous_years",
        "current_years",
        "lost_years",
        "lost",
        "allowed_lost_years",
        "previous_last_year",
        "current_last_year",
        "tail_lost_years",
        "revision_ratio",
        "revision_factor",
        "compared",
    ]
    table = pd.DataFrame(rows, columns=columns).astype({"revision_ratio": "float64", "revision_factor": "float64"})
    table["allowed_tail"] = _allowed_by_either_name(table, "tail", entries, other_name) if len(table) else np.zeros(0, dtype=bool)
    return table.drop(columns=["year"])


def _series_years(
    previous: pd.DataFrame, staging: pd.DataFrame, new_name: dict[str, str]
) -> tuple[list[tuple[str, str]], list[np.ndarray], list[np.ndarray]]:
    """Each series of ``previous``: its name, its years then, and its years now (a renamed one's under its new name).

    The years as sorted unique int arrays (views of one array per table), computed on the
    integer keys of :func:`row_keys`: a Python set of years per series held some 60 bytes a
    row, over a gigabyte for a 200 MB release and its previous vintage.

    Returns:
        ``(names, years_then, years_now)``, series in (entity, variable) order of their names.
    """
    keys = row_keys(previous, staging, new_name)

    def unique_named(frame: pd.DataFrame, row_key: np.ndarray) -> np.ndarray:  # a row without a name or year is the raw suite's to report
        named = (frame["year"].notna() & frame["entity"].notna() & frame["variable"].notna()).to_numpy(dtype=bool)
        chosen = row_key[named]
        chosen.sort()
        return chosen[np.concatenate(([True], chosen[1:] != chosen[:-1]))] if chosen.size else chosen

    then_keys, now_keys = unique_named(previous, keys.old), unique_named(staging, keys.new)
    keys = keys._replace(old=None, new=None)
    then_series, now_series = then_keys // keys.span, now_keys // keys.span
    series, starts = np.unique(then_series, return_index=True)
    now_starts = np.searchsorted(now_series, series, side="left")
    now_ends = np.searchsorted(now_series, series, side="right")
    ends = np.append(starts[1:], then_keys.size)
    then_years, now_years = keys.year(then_keys), keys.year(now_keys)
    del then_series, now_series, then_keys, now_keys
    back = {new: old for old, new in keys.renamed.items()}
    names, years_then, years_now = [], [], []
    for index, (entity, variable) in enumerate(zip(*keys.names(series), strict=True)):
        names.append((back.get(entity, entity), variable))
        years_then.append(then_years[starts[index] : ends[index]])
        years_now.append(now_years[now_starts[index] : now_ends[index]])
    order = sorted(range(len(names)), key=names.__getitem__)
    return [names[i] for i in order], [years_then[i] for i in order], [years_now[i] for i in order]


class RowKeys(NamedTuple):
    """The rows of two tables as int64 keys of (entity, variable, year) over one category set (:func:`row_keys`).

    A key is ``series * span + slot``: ``series`` is ``(e + 1) * (len(variables) + 1) + v + 1``
    for the row's entity and variable at positions ``e`` and ``v`` of ``entities`` and
    ``variables`` (0 for a missing name), ``slot`` the year's position in ``years``
    (``len(years)`` for a missing year). Keys sort as a merge on the three columns sorts its
    rows (names in category order, a missing name first, a missing year last), and two rows
    have the same key exactly when they have the same entity, variable and whole year.
    """

    old: Any  # np.ndarray; None once a caller has let the keys go
    new: Any
    entities: pd.Index
    variables: pd.Index
    years: np.ndarray
    span: int
    renamed: dict[str, str]

    def series(self, keys: np.ndarray) -> np.ndarray:
        """The (entity, variable) part of ``keys``."""
        return keys // self.span

    def year(self, keys: np.ndarray) -> np.ndarray:
        """The years of ``keys`` (of rows that have one), as int64."""
        return self.years[keys % self.span]

    def codes(self, series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the entity and variable of ``series`` in the category sets (-1: a missing name)."""
        width = len(self.variables) + 1
        return series // width - 1, series % width - 1

    def names(self, series: np.ndarray) -> tuple[list[str], list[str]]:
        """The entity and variable names of ``series`` that have both (see :meth:`codes`)."""
        entity, variable = self.codes(series)
        return [str(name) for name in self.entities[entity]], [str(name) for name in self.variables[variable]]


def row_keys(old: pd.DataFrame, new: pd.DataFrame, new_name: dict[str, str] | None = None) -> RowKeys:
    """Every row of ``old`` and ``new`` (``entity``, ``variable``, ``year`` columns) as an int64 key of :class:`RowKeys`.

    Matching rows on keys (:func:`matching_rows`) is what a merge on the three columns does,
    without the merge's copies of two large tables. Names share one category set, the sorted
    union of both columns' categories (a categorical's own categories, used or not); years are
    taken as whole numbers (a fraction is cut off, as ``astype("int64")`` does).

    Args:
        old: the previous vintage's table.
        new: the release's table.
        new_name: ``{old name: new name}`` of renamed entities (:func:`find_renames`): when
            given, ``old``'s names are its used categories, the renamed ones under their new
            name, so a renamed series has the same keys in both tables.
    """
    old_entity = pd.Categorical(old["entity"])
    renamed: dict[str, str] = {}
    if new_name:
        old_entity = old_entity.remove_unused_categories()
        renamed = {name: new_name[name] for name in old_entity.categories if name in new_name}
        if renamed:  # no new name is one of the previous vintage's (find_renames: a name new in the release)
            old_entity = old_entity.rename_categories(lambda name: renamed.get(name, name))
    columns = {
        "entity": (old_entity, pd.Categorical(new["entity"])),
        "variable": (pd.Categorical(old["variable"]), pd.Categorical(new["variable"])),
    }
    categories = {column: pd.Index(sorted(set(a.categories) | set(b.categories))) for column, (a, b) in columns.items()}
    (old_whole, old_missing), (new_whole, new_missing) = _whole_years(old), _whole_years(new)
    bounds = [
        (int(whole.min(where=~missing, initial=_INT64.max)), int(whole.max(where=~missing, initial=_INT64.min)))
        for whole, missing in ((old_whole, old_missing), (new_whole, new_missing))
        if missing.size and not missing.all()
    ]
    low, high = (min(b[0] for b in bounds), max(b[1] for b in bounds)) if bounds else (0, 0)
    n_series = (len(categories["entity"]) + 1) * (len(categories["variable"]) + 1)
    ranked = n_series * (high - low + 2) >= 2**62
    if ranked:  # years far apart (a malformed release): their ranks, so that keys cannot overflow
        years = np.unique(np.concatenate([old_whole[~old_missing], new_whole[~new_missing]]))
    else:
        years = np.arange(low, high + 1, dtype="int64")
    span = len(years) + 1

    def encode(entity: pd.Categorical, variable: pd.Categorical, whole: np.ndarray, missing: np.ndarray) -> np.ndarray:
        key = _category_codes(entity, categories["entity"])
        key *= len(categories["variable"]) + 1
        key += _category_codes(variable, categories["variable"])
        key *= span
        slot = np.searchsorted(years, whole) if ranked else whole - low
        slot[missing] = len(years)
        key += slot
        return key

    (old_e, new_e), (old_v, new_v) = columns.pop("entity"), columns.pop("variable")
    old_key = encode(old_e, old_v, old_whole, old_missing)
    del old_e, old_v, old_whole, old_missing
    new_key = encode(new_e, new_v, new_whole, new_missing)
    return RowKeys(old_key, new_key, categories["entity"], categories["variable"], years, span, renamed)


_INT64 = np.iinfo(np.int64)


def _whole_years(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``frame``'s years as int64 (a fraction cut off; a curated table's column as it is) and where a year is missing."""
    year = frame["year"]
    if pd.api.types.is_integer_dtype(year.dtype) and not year.hasnans:
        return year.to_numpy(dtype="int64"), np.zeros(len(year), dtype=bool)
    values = year.to_numpy(dtype="float64", na_value=np.nan)
    missing = np.isnan(values)
    with np.errstate(invalid="ignore"):  # a missing year's number is never used
        return values.astype("int64"), missing


def _category_codes(column: pd.Categorical, categories: pd.Index) -> np.ndarray:
    """1 + each row's position in ``categories`` (int64), 0 for a missing name."""
    lookup = np.append(categories.get_indexer(column.categories) + 1, 0)  # a code of -1 picks the 0
    return lookup[column.codes]


def matching_rows(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of rows with equal keys, in the order an inner merge on them lists its rows.

    By key, then by row of ``left``, then by row of ``right``: a key ``left`` holds twice and
    ``right`` three times makes six pairs, as in a merge.

    Returns:
        ``(left rows, right rows)``, positions in ``left`` and ``right``.
    """
    left_order, left_sorted = _sorted(left)
    right_order, right_sorted = _sorted(right)
    start = np.searchsorted(right_sorted, left_sorted, side="left")
    if right_sorted.size and not (right_sorted[1:] == right_sorted[:-1]).any():  # one right row per key: the usual case
        hit = np.flatnonzero(right_sorted[np.minimum(start, right_sorted.size - 1)] == left_sorted)
        pairs_left, pairs_right = hit, start[hit]
    else:
        count = np.searchsorted(right_sorted, left_sorted, side="right") - start
        pairs_left = np.repeat(np.arange(left_sorted.size), count)
        pairs_right = np.repeat(start - (np.cumsum(count) - count), count) + np.arange(pairs_left.size)
    del start
    if left_order is not None:
        pairs_left = left_order[pairs_left]
    if right_order is not None:
        pairs_right = right_order[pairs_right]
    return pairs_left, pairs_right


def _sorted(keys: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """``(order, keys[order])`` with a stable order; ``(None, keys)`` when the keys are sorted already (a curated table)."""
    if keys.size < 2 or (keys[1:] >= keys[:-1]).all():
        return None, keys
    order = np.argsort(keys, kind="stable")
    return order, keys[order]


def _lost_exemptions(entries: list[dict[str, Any]]) -> dict[tuple[str, str | None], list[tuple[int, int]]]:
    """``{(entity, variable): [(first, last), ...]}`` of the entries exempting years from ``lost`` (variable ``None``: all)."""
    out: dict[tuple[str, str | None], list[tuple[int, int]]] = {}
    for entry in entries:
        if "lost" not in entry.get("checks", CHECKS):
            continue
        first, last = (int(y) for y in entry["years"])
        for variable in entry.get("variables") or [None]:
            out.setdefault((entry["entity"], variable), []).append((first, last))
    return out


#: :func:`history_table`'s revision columns for a series with no year to compare.
NOT_COMPARED: dict[str, Any] = {"revision_ratio": np.nan, "revision_factor": np.nan, "compared": ""}


def revision_ratios(
    previous: pd.DataFrame, staging: pd.DataFrame, entries: list[dict[str, Any]], floor: float = 1.0, renames: list[Rename] | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (entity, variable) both vintages hold: the median ratio of the values now to the values then.

    A year counts when both values are positive, or the value then was at least ``floor`` and
    is 0 now (a series zeroed: ratio 0). A value filled where the previous vintage had 0 is not
    compared: no change of units turns a 0 into a number, and OWID's release of 2020-11-27
    filled every per-capita value its release of 2020-08-07 had written as 0. Negative values
    (a balancing line, CDIAC's early stock changes) are not compared. Years an allow-list
    entry exempts from ``revision`` (a documented restatement) are left out; a series with no
    year left has no ratio. A renamed entity's (``renames``) previous values are compared with
    its values under the new name, and an allow-list entry may name it by either name.

    Returns:
        ``{(entity, variable): {"revision_ratio", "revision_factor", "compared"}}``, the entity
        named as in ``staging``.
    """
    keys = row_keys(previous, staging, {r.old: r.new for r in renames or []})
    old_rows, new_rows = _rows_with_values(previous), _rows_with_values(staging)
    old_keys = keys.old if old_rows is None else keys.old[old_rows]
    # A key the release holds twice is the raw suite's to report: its first row is compared.
    new_keys, first = np.unique(keys.new if new_rows is None else keys.new[new_rows], return_index=True)
    keys = keys._replace(old=None, new=None)
    left, right = matching_rows(old_keys, new_keys)
    right = first[right] if new_rows is None else new_rows[first[right]]
    then = previous["value"].to_numpy(dtype="float64")[left if old_rows is None else old_rows[left]]
    now = staging["value"].to_numpy(dtype="float64")[right]
    matched = old_keys[left]
    del old_rows, new_rows, old_keys, new_keys, first, left, right
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = now / then
    counted = (then > 0) & ((now > 0) | ((now == 0) & (then >= floor)))
    del then, now
    matched, ratio = matched[counted], ratio[counted]
    del counted
    years = keys.year(matched)
    series = keys.series(matched)
    del matched
    if len(series) and entries:
        entity, variable = keys.codes(series)
        named = pd.DataFrame(
            {
                "entity": pd.Categorical.from_codes(entity, categories=keys.entities),
                "variable": pd.Categorical.from_codes(variable, categories=keys.variables),
                "year": years,
            }
        )
        del entity, variable
        kept = ~_allowed_by_either_name(named, "revision", entries, {r.new: r.old for r in renames or []})
        del named
        series, ratio, years = series[kept], ratio[kept], years[kept]
    compared = pd.DataFrame({"series": series, "ratio": ratio, "year": years})
    del series, ratio, years
    summary = compared.groupby("series").agg(ratio=("ratio", "median"), first=("year", "min"), last=("year", "max"))
    del compared
    entity, variable = keys.codes(summary.index.to_numpy())
    out: dict[tuple[str, str], dict[str, Any]] = {}
    columns = (summary["ratio"], summary["first"], summary["last"])
    for e, v, ratio, first, last in zip(entity.tolist(), variable.tolist(), *columns, strict=True):
        factor = max(ratio, 1 / ratio) if ratio > 0 else np.inf
        out[(keys.entities[e], keys.variables[v])] = {
            "revision_ratio": float(ratio),
            "revision_factor": float(factor),
            "compared": f"{first}-{last}" if first != last else f"{first}",
        }
    return out


def _rows_with_values(frame: pd.DataFrame) -> np.ndarray | None:
    """The rows of ``frame`` with a name, a value and a year; ``None`` when that is every row.

    A row without an entity or variable name is the raw suite's to report, never compared under another series' name.
    """
    rows = (frame["value"].notna() & frame["year"].notna() & frame["entity"].notna() & frame["variable"].notna()).to_numpy(dtype=bool)
    return None if rows.all() else np.flatnonzero(rows)


def _year_ranges(years: list[int]) -> str:
    """``[1990, 1991, 1992, 2000]`` -> ``"1990-1992, 2000"``."""
    if not years:
        return ""
    parts, start, prev = [], years[0], years[0]
    for year in [*years[1:], None]:
        if year is not None and year == prev + 1:
            prev = year
            continue
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        if year is not None:
            start = prev = year
    return ", ".join(parts)
