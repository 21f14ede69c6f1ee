"""What the forecast viewer reads, and nothing else: what the pipeline published.

Every forecast is read by following ``forecasts/<series_id>/latest.json`` to its manifest and
checking each listed file's sha256 (:func:`pipeline.publish.read_verified`); the history is the
curated vintage the manifest names; a scorecard is read when ``scorecards/<series_id>.parquet``
exists. The store is the one the pipeline is configured with
(:func:`pipeline.store.store_from_settings`), local directory or S3.

This module has no Streamlit in it: ``app.py`` draws what these functions return, and the
tests call them directly. Every failure a person can meet is one :class:`ViewerError` whose
message says what to do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline import frames, layout
from pipeline.config import Settings, get_settings
from pipeline.errors import PermanentError, TransientError
from pipeline.ingest import is_vintage_id, read_curated
from pipeline.publish import CANDIDATES_FILE as CANDIDATES_FILE
from pipeline.publish import IntegrityError as PublishIntegrityError
from pipeline.publish import NotPublished, latest_pointer, read_verified
from pipeline.store import ObjectStore, StoreDataError, StoreError, StoreUnavailable, store_from_settings

#: Display name and units of each variable the pipeline forecasts (OWID's units).
VARIABLES: dict[str, tuple[str, str]] = {
    "co2": ("CO2 emissions", "Mt CO2"),
    "co2_per_capita": ("CO2 per capita", "t CO2 per person"),
}

#: The published forecast's columns the viewer shows (a subset of ``publish.FORECAST_COLUMNS``).
BAND_COLUMNS = ["mean", "lo_80", "hi_80", "lo_95", "hi_95"]

#: The scorecard of a series (``layout.scorecard``, written by ``pipeline.scorecard``): the columns the viewer
#: reads from it: one row per earlier published forecast year that has an actual since.
SCORECARD_COLUMNS = ["as_of_year", "year", "mean", "actual"]
#: Read when present: the 95 % band and the model that made the forecast.
SCORECARD_OPTIONAL = ["lo_95", "hi_95", "family"]

#: OWID's own codes for countries without an ISO 3166 code; every other entity without an ISO
#: code, and ``OWID_WRL``, is a region or group ("aggregate").
OWID_COUNTRY_CODES = frozenset({"OWID_KOS", "OWID_CYN"})

#: The backtest table's leading columns, in this order (the selection metric first).
SCORE_ORDER = ["family", "champion", "mase", "rmse", "mae", "mape", "smape", "coverage_80", "coverage_95"]

#: The columns of the table the viewer shows and downloads for a year range.
RANGE_COLUMNS = ["year", "kind", "value", *BAND_COLUMNS, "provisional"]


class ViewerError(PermanentError):
    """Something the viewer cannot show; the message says why and what to do."""


class NothingPublished(ViewerError):
    """No forecast is published in the store (or not for the series asked for)."""


class IntegrityError(ViewerError):
    """A published file does not match the sha256 its manifest records."""


class StoreUnreachable(TransientError):
    """The object store could not be read (network, credentials, S3 error)."""


@dataclass(frozen=True)
class PublishedSeries:
    """One series with a published forecast, as the series picker lists it.

    Attributes:
        series_id: e.g. ``canada.co2_per_capita``.
        entity: the entity as in the data (``Canada``, ``World``, ``Europe``).
        variable: ``co2`` or ``co2_per_capita``.
        aggregate: whether the entity is a region or group rather than a country (no ISO code).
        as_of_year: the last year of data the published forecast used.
        vintage: the curated vintage it was trained on.
    """

    series_id: str
    entity: str
    variable: str
    aggregate: bool
    as_of_year: int
    vintage: str

    @property
    def variable_name(self) -> str:
        """``CO2 per capita`` for ``co2_per_capita``; the raw name for an unknown variable."""
        return VARIABLES.get(self.variable, (self.variable, ""))[0]

    @property
    def units(self) -> str:
        """``t CO2 per person`` for ``co2_per_capita``; empty for an unknown variable."""
        return VARIABLES.get(self.variable, (self.variable, ""))[1]

    @property
    def label(self) -> str:
        """What the picker shows: ``Canada — CO2 per capita (t CO2 per person)``."""
        kind = " (aggregate)" if self.aggregate else ""
        units = f" ({self.units})" if self.units else ""
        return f"{self.entity}{kind} — {self.variable_name}{units}"


@dataclass(frozen=True)
class Published:
    """What the store publishes, as the series picker offers it.

    Attributes:
        series: every series whose ``latest.json`` reads, sorted by entity then variable.
        unreadable: series id -> one line saying why its ``latest.json`` cannot be read (damaged
            or edited by hand) and what to do; such a series is not listed, and nothing of it is shown.
    """

    series: list[PublishedSeries]
    unreadable: dict[str, str]


@dataclass(frozen=True)
class SeriesView:
    """Everything the viewer shows for one series, read and checked.

    Attributes:
        series: the series.
        manifest: the published manifest (model name, version, family, vintage, as-of year…).
        forecast: the champion's forecast (``year`` and :data:`BAND_COLUMNS`).
        scores: one row per candidate family: ``family``, ``champion`` and its backtest metrics.
        history: the curated actuals: ``year``, ``value``, ``provisional``.
        candidates: the challengers' forecasts (``family``, ``year``, :data:`BAND_COLUMNS`):
            every candidate the run fitted except the champion itself, or ``None`` when the
            published files do not include them.
        scorecard: earlier forecasts against actuals (:data:`SCORECARD_COLUMNS`), or ``None``.
        scorecard_problem: why the scorecard cannot be shown (damaged, or not the pipeline's
            columns), or ``None``; the forecast is shown all the same.
    """

    series: PublishedSeries
    manifest: dict[str, Any]
    forecast: pd.DataFrame
    scores: pd.DataFrame
    history: pd.DataFrame
    candidates: pd.DataFrame | None
    scorecard: pd.DataFrame | None
    scorecard_problem: str | None = None

    @property
    def first_year(self) -> int:
        """The first year of history."""
        return int(self.history["year"].min()) if len(self.history) else int(self.forecast["year"].min())

    @property
    def horizon_end(self) -> int:
        """The last forecast year."""
        return int(self.forecast["year"].max())

    @property
    def provisional_year(self) -> int | None:
        """The history's provisional (likely to be revised) last year, if any."""
        marked = self.history.loc[self.history["provisional"], "year"]
        return int(marked.max()) if len(marked) else None


def open_store(settings: Settings | None = None) -> ObjectStore:
    """The object store the pipeline is configured with (``CO2CAST_STORE_URI`` or the home)."""
    return store_from_settings(settings or get_settings())


def list_published(store: ObjectStore) -> Published:
    """Every series with a ``latest.json``, sorted by entity then variable.

    A pointer that does not read as co2cast wrote it (cut short, not JSON, a field missing or of
    another type) takes out its own series only: it goes to :attr:`Published.unreadable`, and the
    other series stay listed. Each series' files are checked against their own pointer and manifest,
    so one damaged pointer says nothing about another series.

    Raises:
        NothingPublished: the store holds no published forecast.
        StoreUnreachable: the store cannot be read.
    """
    with _store_errors(store):
        # The series folders (one LIST request per 1,000 series), not every key under forecasts/ (six per forecast
        # published, every vintage and backfill); a folder without latest.json is left out below, as not published.
        folders = store.list_children(layout.FORECASTS)
        found = []
        unreadable: dict[str, str] = {}
        names: dict[str, dict[str, tuple[str, str, bool]]] = {}
        for sid in folders:
            try:
                pointer = latest_pointer(store, sid)  # its fields checked against the manifest it serves
            except StoreDataError as error:
                unreadable[sid] = _one_line(error)
                continue
            if pointer is None:  # no latest.json: a publish stopped before it, or removed by hand (to be rebuilt)
                continue
            vintage = str(pointer.get("vintage") or "")
            if vintage not in names:
                names[vintage] = _series_names(store, vintage)
            entity, variable, aggregate = names[vintage].get(sid) or _split_id(sid)
            found.append(PublishedSeries(sid, entity, variable, aggregate, int(pointer["as_of_year"]), vintage))
        if not found and not unreadable:  # no series folder, or none with a latest.json
            raise NothingPublished(f"no forecast is published in {store.uri()} yet: run `make run` (or `co2cast forecast`) first")
    return Published(sorted(found, key=lambda s: (s.entity.lower(), s.variable)), unreadable)


def load_series(store: ObjectStore, series: PublishedSeries) -> SeriesView:
    """Read a series' published forecast, backtest scores, candidates, history and scorecard.

    Raises:
        NothingPublished: the series has no published forecast.
        IntegrityError: a published file is missing, does not match its sha256, or was edited (named in the message).
        StoreUnreachable: the store cannot be read.
    """
    with _store_errors(store):
        try:
            verified = read_verified(store, series.series_id)
        except NotPublished:
            raise NothingPublished(f"no forecast is published for {series.series_id} in {store.uri()}") from None
        except PublishIntegrityError as error:  # its message names the file, what is wrong with it and what to do, as `show` says it
            raise IntegrityError(_one_line(error)) from None
        manifest = verified.manifest.to_xcom()
        forecast = verified.table()[["year", *BAND_COLUMNS]].sort_values("year", ignore_index=True)
        raw_scores = verified.file("backtest.json")
        scores = _scores_table(json.loads(raw_scores) if raw_scores else {}, manifest.get("model_family"))
        raw_candidates = verified.file(CANDIDATES_FILE)
        candidates = _challengers(frames.read_parquet(raw_candidates), manifest) if raw_candidates else None
        history = _history(store, manifest["vintage"], series)
        try:
            scorecard, problem = read_scorecard(store, series.series_id), None
        except ViewerError as error:  # the scorecard is rewritten at every publish: it must not hide the forecast
            scorecard, problem = None, str(error)
    return SeriesView(series, manifest, forecast, scores, history, candidates, scorecard, problem)


def read_scorecard(store: ObjectStore, series_id: str) -> pd.DataFrame | None:
    """A series' scorecard (:data:`SCORECARD_COLUMNS` and whichever optional ones it has), or ``None``.

    Rows of a forecast superseded by a later one for the same as-of year are left out.

    ``None`` too when the scorecard has no rows yet: the pipeline writes one after every publish,
    and it stays empty until a later vintage brings actuals for a published forecast's years.

    Raises:
        ViewerError: the scorecard is not Parquet (damaged, cut short) or lacks a column the viewer needs.
    """
    key = layout.scorecard(series_id)
    try:
        data = store.read_bytes(key)
    except KeyError:
        return None
    try:
        frame = frames.read_parquet(data)
    except (ValueError, OSError):  # pyarrow's ArrowInvalid is a ValueError
        raise ViewerError(
            f"{store.uri(key)} is not the Parquet file the pipeline wrote (damaged or cut short); "
            "the track record is not shown until the series' next publish rewrites it"
        ) from None
    missing = [c for c in SCORECARD_COLUMNS if c not in frame.columns]
    if missing:
        raise ViewerError(f"{store.uri(key)} lacks the column(s) {missing}; expected at least {SCORECARD_COLUMNS}")
    if "superseded" in frame.columns:  # one forecast per as-of year: the one published last
        frame = frame[~frame["superseded"].astype(bool)]
    if frame.empty:
        return None
    keep = SCORECARD_COLUMNS + [c for c in SCORECARD_OPTIONAL if c in frame.columns]
    return frame[keep].sort_values(["as_of_year", "year"], ignore_index=True)


def shown_range(view: SeriesView, start: int, end: int) -> pd.DataFrame:
    """History and forecast rows for ``start..end`` in one table (:data:`RANGE_COLUMNS`).

    History rows carry ``value`` (and ``provisional``); forecast rows carry ``mean`` and the
    bands. A year with an actual is shown as history, never also as forecast.

    Raises:
        ValueError: ``start`` is after ``end``.
    """
    if start > end:
        raise ValueError(f"the start year {start} is after the end year {end}")
    history = view.history[(view.history["year"] >= start) & (view.history["year"] <= end)].assign(kind="history")
    forecast = view.forecast[(view.forecast["year"] >= start) & (view.forecast["year"] <= end)]
    forecast = forecast[~forecast["year"].isin(history["year"])].assign(kind="forecast", provisional=False)
    frame = pd.concat([history, forecast], ignore_index=True).reindex(columns=RANGE_COLUMNS)
    frame["year"] = frame["year"].astype("int64")
    frame["provisional"] = frame["provisional"].astype(bool)
    return frame.sort_values("year", ignore_index=True)


def range_csv(frame: pd.DataFrame, view: SeriesView) -> bytes:
    """The shown range as CSV, each row naming the series, units, model and vintage."""
    out = frame.assign(
        series_id=view.series.series_id,
        units=view.series.units,
        model_name=view.manifest.get("model_name"),
        model_version=view.manifest.get("model_version"),
        vintage=view.manifest.get("vintage"),
        as_of_year=view.manifest.get("as_of_year"),
    )
    return out.to_csv(index=False, float_format="%.6g").encode()


# -- pieces ----------------------------------------------------------------------------------


@contextmanager
def _store_errors(store: ObjectStore) -> Iterator[None]:
    """Turn the store's own failures into :class:`StoreUnreachable`, a damaged object into :class:`IntegrityError` (one line)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except StoreDataError as error:  # an object that no longer reads as written: the store itself is fine
        raise IntegrityError(_one_line(error)) from None
    except (StoreError, StoreUnavailable, BotoCoreError, ClientError, OSError) as error:
        raise StoreUnreachable(f"cannot read the object store {store.uri()}: {_one_line(error)}") from error


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _challengers(candidates: pd.DataFrame, manifest: dict[str, Any]) -> pd.DataFrame:
    """The candidates' forecasts without the champion's own (the chart draws that already).

    The champion is left out only when the published version is the one its run registered
    for that family; a champion kept from an earlier run is a different model, and this run's
    candidate of its family stays a challenger.
    """
    family, version = manifest.get("model_family"), str(manifest.get("model_version"))
    registered = (manifest.get("trained") or {}).get("versions", {})
    mine = family is not None and str(registered.get(family)) == version
    shown = candidates[candidates["family"] != family] if mine else candidates
    return shown[["family", "year", *BAND_COLUMNS]].reset_index(drop=True)


def _scores_table(scores: dict[str, dict[str, float]], champion_family: str | None) -> pd.DataFrame:
    """``backtest.json`` (family -> metrics) as a table, best MASE first."""
    rows = [{"family": family, "champion": family == champion_family, **metrics} for family, metrics in scores.items()]
    frame = pd.DataFrame(rows, columns=["family", "champion"] if not rows else None)
    first = [c for c in SCORE_ORDER if c in frame.columns]
    frame = frame[first + sorted(c for c in frame.columns if c not in first)]
    if "mase" in frame.columns:
        frame = frame.sort_values("mase", ignore_index=True, na_position="last")
    return frame


def _curated(store: ObjectStore, vintage: str) -> pd.DataFrame:
    """A curated vintage's tidy table, kept in memory: a vintage never changes once curated.

    Raises:
        KeyError: no such vintage, or ``vintage`` is no vintage id (an edited pointer or manifest
            may name ``../…``, which must not become a store key).
    """
    if not isinstance(vintage, str) or not is_vintage_id(vintage):
        raise KeyError(vintage)
    key = (store.uri(), vintage)
    if key not in _CURATED:
        if len(_CURATED) >= 4:
            _CURATED.pop(next(iter(_CURATED)))
        _CURATED[key] = read_curated(store, vintage)
    return _CURATED[key]


_CURATED: dict[tuple[str, str], pd.DataFrame] = {}


def _series_names(store: ObjectStore, vintage: str) -> dict[str, tuple[str, str, bool]]:
    """series_id -> (entity, variable, aggregate) for every series of a curated vintage, kept in memory.

    The series list (refreshed every 30 s) names the vintage of every series' pointer, which after a few
    releases are more vintages than :data:`_CURATED` keeps tables of: the names, a few kilobytes a vintage,
    are kept for every vintage instead, so each vintage's table is read once per process for them, not at
    every refresh. A vintage never changes once curated; one gone or damaged is not kept (read again next time).
    """
    from pipeline.series import series_id

    if not vintage:
        return {}
    key = (store.uri(), vintage)
    if key not in _NAMES:
        try:
            tidy = _curated(store, vintage)
        except (KeyError, StoreDataError):  # the vintage, or its table, is gone or damaged: names from the ids
            return {}
        pairs = tidy[["entity", "variable", "iso_code"]].drop_duplicates(["entity", "variable"])
        _NAMES[key] = {
            series_id(str(row.entity), str(row.variable)): (str(row.entity), str(row.variable), is_aggregate(row.iso_code))
            for row in pairs.itertuples(index=False)
        }
    return _NAMES[key]


#: (store, vintage) -> :func:`_series_names`: one entry per vintage the published pointers name, never evicted (a few kB each).
_NAMES: dict[tuple[str, str], dict[str, tuple[str, str, bool]]] = {}


def is_aggregate(iso_code: object) -> bool:
    """Whether an entity is a region or group: no ISO code, or an OWID code that is no country."""
    if iso_code is None or pd.isna(iso_code) or not str(iso_code).strip():
        return True
    code = str(iso_code)
    return code.startswith("OWID_") and code not in OWID_COUNTRY_CODES


def _split_id(sid: str) -> tuple[str, str, bool]:
    """A readable fallback when the vintage is gone: ``canada.co2`` -> ``("Canada", "co2", False)``."""
    entity, _, variable = sid.partition(".")
    return entity.replace("_", " ").title(), variable, False


def _history(store: ObjectStore, vintage: str, series: PublishedSeries) -> pd.DataFrame:
    """The curated actuals of a series in the vintage its forecast was trained on."""
    if not isinstance(vintage, str) or not is_vintage_id(vintage):
        raise IntegrityError(
            f"{series.series_id}: the manifest names {str(vintage)[:40]!r} as its vintage, which is no vintage id: it was edited; "
            "the forecast is not shown. Republish it (`co2cast forecast`)."
        )
    try:
        tidy = _curated(store, vintage)
    except KeyError:
        raise NothingPublished(f"the curated vintage {vintage} named by the manifest is missing from {store.uri()}") from None
    rows = tidy[(tidy["entity"] == series.entity) & (tidy["variable"] == series.variable)].dropna(subset=["value"])
    history = rows[["year", "value", "provisional"]].astype({"year": "int64", "value": "float64", "provisional": bool})
    return history.sort_values("year", ignore_index=True)
