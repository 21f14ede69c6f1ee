"""Validate a forecast table with GX, then publish it atomically to the object store.

Layout (built by :mod:`pipeline.layout`)::

    forecasts/<series_id>/asof=<year>/<run_key>/forecast.csv, forecast.parquet, <extras>, manifest.json
    forecasts/<series_id>/latest.json

The manifest lists every file with its sha256 and size; it is written after the files, and
``latest.json`` after the manifest, so a reader that follows ``latest.json`` never sees a
half-written forecast. Publishing the same run key again rewrites nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline import frames, layout
from pipeline.errors import PermanentError, TransientError
from pipeline.payloads import Manifest
from pipeline.series import MAX_HI95_FACTOR, MAX_MEAN_FACTOR, beyond_bounds
from pipeline.store import ObjectStore, StoreDataError, json_bytes
from pipeline.testhooks import pause_point
from pipeline.validation import GateResult, run_suite

logger = logging.getLogger(__name__)

FORECAST_COLUMNS = [
    "series_id",
    "year",
    "mean",
    "lo_80",
    "hi_80",
    "lo_95",
    "hi_95",
    "model_name",
    "model_version",
    "family",
    "vintage",
    "as_of_year",
    "unit",
    "provisional",
]

#: Parquet schema metadata key holding the unit of the values.
PARQUET_UNIT_KEY = b"co2cast.unit"

#: A published file beside the forecast: every fitted candidate's forecast to the horizon
#: (``family``, then the forecast's ``year, mean, lo_*, hi_*``; see
#: :func:`pipeline.core.candidate_forecasts`). For showing challengers, not for serving.
CANDIDATES_FILE = "candidates.parquet"
#: A candidate's forecast values, lowest to highest.
CANDIDATE_BANDS = ["lo_95", "lo_80", "mean", "hi_80", "hi_95"]


def read_candidates(data: bytes, what: str) -> pd.DataFrame:
    """The candidates' forecasts as logged (``family``, ``year`` and :data:`CANDIDATE_BANDS`).

    Raises:
        pipeline.artifacts.IntegrityError: ``what`` (an MLflow run's file, named) is not a
            readable table or lacks a column.
    """
    from pipeline.artifacts import IntegrityError

    try:
        table = frames.read_parquet(data)
    except Exception as error:  # pyarrow raises several types for a damaged file
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise IntegrityError(f"{what} is not a readable table ({first})") from None
    missing = [c for c in ["family", "year", *CANDIDATE_BANDS] if c not in table.columns]
    if missing:
        raise IntegrityError(f"{what} lacks the column(s) {', '.join(missing)}")
    return table


def plausible_candidates(candidates: pd.DataFrame, history_max: float | None) -> tuple[pd.DataFrame, list[str]]:
    """Keep the candidates' forecasts that pass the bounds the champion's must pass; name the others.

    A candidate is left out when any of its values is not finite, a band is out of order, a
    value is negative, or (when the history's maximum is known) its forecast breaks the output
    bounds of :func:`pipeline.series.beyond_bounds`, the same check the champion passed. Only
    what passes is published beside the forecast.

    Returns:
        The kept rows (in their order) and the families left out, sorted.
    """
    dropped = []
    for family, rows in candidates.groupby("family", sort=True):
        values = rows[CANDIDATE_BANDS].to_numpy(dtype=np.float64)
        broken = not np.isfinite(values).all() or (np.diff(values, axis=1) < 0).any() or (values[:, 0] < 0).any()
        if not broken and history_max is not None:
            broken = beyond_bounds(rows["year"].to_numpy(), values[:, 2], values[:, 4], history_max) is not None
        if broken:
            dropped.append(str(family))
    return candidates[~candidates["family"].isin(dropped)].reset_index(drop=True), dropped


class PublishRefused(PermanentError):
    """The forecast table failed its GX gate; nothing was published."""


class PublishFailed(TransientError):
    """Writing a forecast failed part-way (disk full, store unreachable); ``latest.json`` did not move."""


class NotPublished(PermanentError):
    """Nothing is published for a series (or for a run key)."""


class IntegrityError(PermanentError):
    """A published file does not match the sha256 its manifest records."""


def forecast_table(
    forecast: pd.DataFrame,
    *,
    series_id: str,
    model_name: str,
    model_version: str,
    family: str,
    vintage: str,
    as_of_year: int,
    unit: str | None = None,
    provisional: bool = False,
) -> pd.DataFrame:
    """Give a forecaster's output (``year, mean, lo_80, …``) the published schema.

    Interval bounds are cut at zero: emissions cannot be negative, and a symmetric interval
    around a small positive forecast would otherwise reach below it. ``unit`` defaults to the
    unit of the series' variable (:func:`pipeline.series.unit_of`).
    around a small positive forecast would otherwise reach below it. ``provisional`` (every
    row) says the forecast starts from a provisional last year: the vintage's newest year,
    which the next release usually revises.
    """
    from pipeline.series import unit_of, variable_of

    table = forecast.copy()
    for column in ("lo_80", "lo_95", "hi_80", "hi_95"):
        table[column] = np.maximum(table[column].astype(float), 0.0)
    table["series_id"] = series_id
    table["model_name"] = model_name
    table["model_version"] = str(model_version)
    table["family"] = family
    table["vintage"] = vintage
    table["as_of_year"] = int(as_of_year)
    table["unit"] = unit if unit is not None else unit_of(variable_of(series_id))
    table["provisional"] = bool(provisional)
    table["year"] = table["year"].astype("int64")
    return table[FORECAST_COLUMNS]


def validate_forecast(
    table: pd.DataFrame, series_id: str, as_of_year: int, horizon_end: int, history_max: float | None = None
) -> GateResult:
    """Run the ``forecast_output`` suite on a forecast table.

    Args:
        table: the forecast table.
        series_id: the series it must be for.
        as_of_year: its first year is the next one.
        horizon_end: its last year.
        history_max: the series' largest historic value; bounds ``mean`` and ``hi_95`` at
            :data:`MAX_MEAN_FACTOR` / :data:`MAX_HI95_FACTOR` times it (unbounded when ``None``).
    """
    unbounded = history_max is None or not np.isfinite(history_max) or history_max <= 0
    parameters = {
        "series_ids": [series_id],
        "first_year": as_of_year + 1,
        "last_year": horizon_end,
        "n_years": horizon_end - as_of_year,
        "max_mean": float(np.finfo(float).max) if unbounded else MAX_MEAN_FACTOR * float(history_max),  # type: ignore[arg-type]
        "max_hi_95": float(np.finfo(float).max) if unbounded else MAX_HI95_FACTOR * float(history_max),  # type: ignore[arg-type]
    }
    return run_suite("forecast_output", table, parameters)


def publish(
    store: ObjectStore,
    table: pd.DataFrame,
    *,
    series_id: str,
    run_key: str,
    horizon_end: int,
    meta: dict[str, Any],
    extras: dict[str, bytes] | None = None,
    history_max: float | None = None,
) -> Manifest:
    """Gate and publish a forecast table.

    Args:
        store: the object store.
        table: a table in the :func:`forecast_table` schema.
        series_id: the series the table must be for.
        run_key: the run key the files are published under.
        horizon_end: the last year the table must reach.
        meta: what the manifest records besides the files (model, MLflow run, Airflow run…).
        extras: more files to publish beside the forecast (name -> bytes).
        history_max: the series' historic maximum, bounding the forecast (see :func:`validate_forecast`).

    Returns:
        The manifest (existing one when this run key was already published).

    Raises:
        PublishRefused: the table failed the ``forecast_output`` suite; nothing was written.
        PublishFailed: the store failed part-way (transient); ``latest.json`` did not move.
        StoreUnavailable: S3 could not be reached (transient); ``latest.json`` did not move.
    """
    as_of_year = int(meta["as_of_year"])
    manifest_key = layout.forecast_manifest(series_id, as_of_year, run_key)
    vintage = meta.get("vintage")
    existing = republish_existing(store, series_id, as_of_year, run_key, vintage)
    if existing is not None:
        return existing[0]

    gate = validate_forecast(table, series_id, as_of_year, horizon_end, history_max)
    if not gate.success:
        logger.warning("forecast for %s refused:\n%s", series_id, gate.summary())
        whys = "; ".join(dict.fromkeys(str(failure["why"]) for failure in gate.failures))
        raise PublishRefused(f"forecast for {series_id} (as of {as_of_year}) refused, nothing published: {whys} [{gate.one_line(300)}]")

    files = {"forecast.csv": table.to_csv(index=False).encode(), "forecast.parquet": _parquet(table), **(extras or {})}
    try:
        return _write_forecast(
            store,
            table,
            files,
            series_id=series_id,
            run_key=run_key,
            meta=meta,
            manifest_key=manifest_key,
            pinned_run=pinned(store, vintage),
        )
    except OSError as error:  # disk full, read-only file system: files may be written, nothing is visible
        raise PublishFailed(
            f"publishing {series_id} (as of {as_of_year}) failed while writing ({error.strerror or error}); "
            "nothing was published (latest.json did not move); rerun when there is room"
        ) from error


def _write_forecast(
    store: ObjectStore,
    table: pd.DataFrame,
    files: dict[str, bytes],
    *,
    series_id: str,
    run_key: str,
    meta: dict[str, Any],
    manifest_key: str,
    pinned_run: bool,
) -> Manifest:
    """Write the files, then the manifest, then ``latest.json`` unless the run is pinned (readers follow the last two)."""
    as_of_year = int(meta["as_of_year"])
    entries = []
    for name, data in files.items():
        key = layout.forecast_object(series_id, as_of_year, run_key, name)
        store.write_bytes(key, data)
        entries.append({"name": name, "key": key, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    pause_point("after_files")
    manifest = {
        **meta,
        "series_id": series_id,
        "run_key": run_key,
        "as_of_year": as_of_year,
        "first_year": int(table["year"].min()),
        "last_year": int(table["year"].max()),
        "files": entries,
        "unit": str(table["unit"].iloc[0]) if "unit" in table.columns and len(table) else None,
        "gx_success": True,
        "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "key": manifest_key,
    }
    store.write_json(manifest_key, manifest)
    pause_point("after_manifest")
    _move_latest(store, series_id, manifest, pinned_run)
    logger.info("published %s", store.uri(manifest_key))
    return Manifest.of(manifest)


def republish_existing(
    store: ObjectStore, series_id: str, as_of_year: int, run_key: str, vintage: str | None
) -> tuple[Manifest, bool] | None:
    """The verified manifest already published for a run key and whether ``latest.json`` moved to it now, or ``None``.

    The cheap path of a rerun: a few small reads, no model, no GX. ``latest.json`` is moved to
    it only if the run (on ``vintage``) is not pinned (:func:`pinned`) and nothing has
    superseded it (see :func:`superseded`): a rerun after a crash between the manifest and the
    pointer completes the publish, a rerun after a configuration was changed and changed back
    serves this run key's forecast again, a rerun after a rollback or a newer as-of year moves
    nothing. ``None`` (publish it anew) also when a run on the latest vintage finds the forecast
    a pinned run published for the key (trained with no champion gate), or when ``latest.json``
    serves this manifest but recorded another sha256 for it (the manifest was edited since):
    an edited manifest is not vouched for again.
    """
    existing = readable_manifest(store, layout.forecast_manifest(series_id, as_of_year, run_key))
    if existing is None or not verify_manifest(store, existing):
        return None
    pinned_run = pinned(store, vintage)
    if not pinned_run and _trained_pinned(existing):
        return None
    current = latest_pointer(store, series_id)
    if current is not None and current["manifest"] == existing["key"] and not vouches(store, current):
        return None  # edited since latest.json recorded it (its files may have been changed to match): publish it anew
    return Manifest.of(existing), _move_latest(store, series_id, existing, pinned_run)


def _trained_pinned(manifest: dict[str, Any]) -> bool:
    """Whether a manifest's forecast was trained by a pinned run: registered with no alias moved and no champion gate."""
    trained = manifest.get("trained")
    return isinstance(trained, dict) and trained.get("pinned") is True


def vouches(store: ObjectStore, pointer: dict[str, Any], digest: str | None = None) -> bool:
    """Whether ``latest.json`` vouches for the manifest it names as it is now (``digest``: its sha256, read when not given).

    It does when the sha256 it recorded is the manifest's, or when it recorded none (a pointer
    written before co2cast recorded it). It does not when the manifest was edited since, or
    rewritten by a publish (a published file had changed): the pointer must be written again.
    """
    recorded = pointer.get("manifest_sha256")
    if recorded is None:
        return True
    return recorded == (digest or hashlib.sha256(store.read_bytes(pointer["manifest"])).hexdigest())


#: Up to this many published series are listed in full when a series id is not found.
LIST_ALL_UP_TO = 10


def published_hint(store: ObjectStore, series_id: str) -> str:
    """What a person who typed an unknown series id reads next: the published ids, or the closest few of many.

    Of many (more than :data:`LIST_ALL_UP_TO` series folders), the count is of the folders: one whose publish
    stopped before its ``latest.json`` is counted but never named, as finding every pointer would cost a request per series.
    """
    import difflib

    # The series folders (one LIST request per 1,000 series), not every key under forecasts/ (six per forecast
    # published, every vintage and backfill). A folder without latest.json (a publish stopped before its pointer,
    # a pointer removed by hand) is not published: a folder is named only once its pointer is found.
    folders = store.list_children(layout.FORECASTS)

    def published(sid: str) -> bool:
        return store.exists(layout.forecast_latest(sid))

    if series_id in folders and published(series_id):
        return f"{series_id} itself has a published forecast (co2cast show {series_id})"
    if len(folders) <= LIST_ALL_UP_TO:
        return f"published: {', '.join(sid for sid in folders if published(sid)) or 'none'}"
    ranked = difflib.get_close_matches(series_id, [sid for sid in folders if sid != series_id], n=len(folders), cutoff=0.8)
    close = list(itertools.islice((sid for sid in ranked if published(sid)), 3))  # best first
    return f"{len(folders)} series are published" + (f"; did you mean {', '.join(close)}?" if close else " (co2cast summary lists them)")


def latest_pointer(store: ObjectStore, series_id: str) -> dict[str, Any] | None:
    """A series' ``latest.json`` (fields: :data:`pipeline.layout.FORECAST_POINTER`), or ``None`` before its first publish.

    Its own fields (:data:`POINTER_COPIES`) are checked against the manifest it names, which
    the sha256 it records vouches for: no hash covers them in the pointer itself, and readers
    act on them (the as-of year served, the version ``@champion`` must agree with).

    Raises:
        StoreDataError: it was damaged or edited (see :meth:`pipeline.store.ObjectStore.read_json`),
            also when a field disagrees with the manifest it serves.
    """
    return _latest(store, series_id)[0]


def _latest(store: ObjectStore, series_id: str) -> tuple[dict[str, Any] | None, bytes | None]:
    """:func:`latest_pointer`, and the bytes of the manifest it names as read for its check (``None``: missing, or not a forecast key).

    One read of the manifest serves both the pointer's check and :func:`read_latest`'s.
    """
    key = layout.forecast_latest(series_id)
    pointer = store.read_json_or_none(key, layout.FORECAST_POINTER)
    if pointer is None:
        return None, None
    data = _read_or_none(store, pointer["manifest"]) if _key_within(pointer["manifest"], layout.FORECASTS) else None
    mismatch = _pointer_mismatch(series_id, pointer, data)
    if mismatch is not None:
        raise StoreDataError(
            f"{store.uri(key)} is not what co2cast wrote ({mismatch}): it was damaged or edited; "
            "restore it from a backup, or remove it and rerun to rebuild it"
        )
    return pointer, data


#: The fields ``latest.json`` copies from the manifest it serves (:func:`point_latest`); no hash covers them there.
POINTER_COPIES = ("as_of_year", "run_key", "vintage", "model_name", "model_version", "published_at")


def _pointer_mismatch(series_id: str, pointer: dict[str, Any], data: bytes | None) -> str | None:
    """Which of ``latest.json``'s own fields disagrees with the manifest it names (one phrase), or ``None``.

    ``as_of_year`` and ``run_key`` are part of the manifest's key; the other copied fields
    (:data:`POINTER_COPIES`) are compared with the manifest itself (``data``, its bytes) when the
    pointer vouches for it (the sha256 it recorded is the manifest's): a manifest edited or
    rewritten since is another matter, handled where it is read. A pointer naming no manifest of
    the series, or one that is missing or not a JSON object, is left to those readers too
    (:func:`read_latest` names it).
    """
    manifest_key = pointer["manifest"]
    prefix = layout.series_forecasts(series_id)
    if not _key_within(manifest_key, prefix):
        return None
    parts = manifest_key[len(prefix) :].split("/")
    if len(parts) != 3 or parts[2] != "manifest.json" or not parts[0].startswith("asof="):
        return None
    by_key = {"as_of_year": parts[0].removeprefix("asof="), "run_key": parts[1]}
    for field, value in by_key.items():
        if field in pointer and str(pointer[field]) != value:
            return f"its {field!r} is {_short(pointer[field])}, the manifest it serves is {value}"
    recorded = pointer.get("manifest_sha256")
    if data is None or recorded is None or hashlib.sha256(data).hexdigest() != recorded:
        return None
    try:
        manifest = json.loads(data)
    except ValueError:
        return None
    if not isinstance(manifest, dict):
        return None
    for field in POINTER_COPIES:
        if field in pointer and pointer[field] != manifest.get(field):
            return f"its {field!r} is {_short(pointer[field])}, the manifest it serves says {_short(manifest.get(field))}"
    return None


def _short(value: Any) -> str:
    found = repr(value)
    return found if len(found) <= 40 else found[:37] + "..."


def settled(store: ObjectStore, series_id: str, as_of_year: int, run_key: str, pinned_run: bool) -> bool:
    """Whether a run key has nothing left to do for a run, pinned (``pinned_run``: :func:`pinned`) or not.

    Its manifest (with what it trained) verifies, and the run is pinned (it never moves
    ``latest.json``), or ``latest.json`` serves that manifest and vouches for it as
    it is (the sha256 it recorded), or has moved past it (:func:`superseded`). A forecast a
    pinned run published (trained with no champion gate) is never settled for a run on the
    latest vintage: that run trains the key through the gate and serves it. Exactly the case
    where training and publishing again would write nothing.
    """
    existing = readable_manifest(store, layout.forecast_manifest(series_id, as_of_year, run_key))
    if existing is None or "trained" not in existing or not verify_manifest(store, existing):
        return False
    if pinned_run:
        return True
    if _trained_pinned(existing):
        return False
    current = serving_pointer(store, series_id)
    if current is None:
        return False
    return vouches(store, current) if current["manifest"] == existing["key"] else superseded(current, existing)


def pinned(store: ObjectStore, vintage: str | None) -> bool:
    """Whether a run's vintage is not the latest curated one (a ``--vintage`` of an older release).

    Such a run is treated like a backfill: it registers its versions and publishes under its
    ``asof=`` prefix, but moves no alias and never writes ``latest.json`` (not even a series'
    first), so what is served always comes from the newest data. It is the run's vintage that
    counts, not the one a manifest records: a run key is keyed on the series' data, so a run on
    the latest vintage may meet a forecast published from an older one. Without a curated
    pointer (a bare store) nothing is pinned.
    """
    from pipeline.ingest import latest_curated

    curated = latest_curated(store)
    return curated is not None and vintage is not None and curated["vintage"] != vintage


def serving_pointer(store: ObjectStore, series_id: str) -> dict[str, Any] | None:
    """:func:`latest_pointer`, or ``None`` when the manifest it names is gone (a pointer left dangling serves nothing)."""
    current = latest_pointer(store, series_id)
    if current is not None and not store.exists(current["manifest"]):
        logger.warning("%s: latest.json points at %s, which is missing: the next publish replaces it", series_id, current["manifest"])
        return None
    return current


def superseded(pointer: dict[str, Any], manifest: dict[str, Any]) -> bool:
    """Whether ``latest.json`` (``pointer``) has moved past a published forecast for good.

    It has when it serves a newer as-of year (a backfill's forecast is never served), and when a
    rollback took this one out of service (so the same run key run again after ``co2cast
    rollback`` does not undo it: ``@champion`` stays where the rollback put it, and so does
    ``latest.json``). Otherwise a run on the latest vintage publishing now is served, also when
    its forecast was published before: a configuration changed for a run and changed back
    (``CO2CAST_HORIZON_END=2020`` once) serves its run key's forecast again. (A pinned run moves
    nothing at all: :func:`pinned`.)
    """
    if manifest["key"] in pointer.get("rolled_back", []):
        return True  # even when the rollback served an older as-of year's forecast
    return bool(pointer["as_of_year"] > manifest["as_of_year"])


def _move_latest(store: ObjectStore, series_id: str, manifest: dict[str, Any], pinned_run: bool) -> bool:
    """Point ``latest.json`` at a manifest unless the run is pinned or something superseded it; whether it moved."""
    return point_latest(store, series_id, manifest, pinned_run=pinned_run)


def point_latest(
    store: ObjectStore,
    series_id: str,
    manifest: dict[str, Any],
    force: bool = False,
    retire: Iterable[str] = (),
    pinned_run: bool = False,
    on_write: Callable[[bytes | None, bytes], None] | None = None,
) -> bool:
    """Point ``latest.json`` at a manifest; whether it moved.

    Without ``force`` (a run publishing): never to serve another manifest for a pinned run
    (``pinned_run``, see :func:`pinned`), also when nothing is served yet; else unless the
    pointer has moved past it (:func:`superseded`); a new decision starts with no forecast
    rolled back. A pointer that already names the manifest is rewritten only when it recorded
    another sha256 (the manifest rewritten since by a publish that healed a changed file), with
    its ``rolled_back`` as it was, by a pinned run too. With no pointer to read (removed to be
    rebuilt, or naming a manifest that is gone), ``rolled_back`` is rebuilt from the alias history
    (:func:`rolled_back_in_history`); when the manifest is among it, the pointer is rebuilt to
    serve the forecast the history says was served last (:func:`_served_before`, of ``@champion``'s version)
    and ``False`` is returned. With ``force``
    (a rollback, which serves an earlier champion's forecast again): always, and the forecast
    served until now joins the pointer's ``rolled_back``, with the manifest keys in ``retire``
    (the rolled-back version's forecasts that may not be published yet: a run whose publish
    comes after the rollback must not serve them).

    ``on_write`` is called under the pointer's lock just before ``latest.json`` is written, with
    the bytes it held until then (``None``: there was none) and the bytes written: what a
    rollback that fails later puts back (:func:`restore_latest`), as this write replaced it,
    whatever a run published since the rollback began.
    """
    from pipeline.locks import series_lock

    # Read and write under the series' lock: a concurrent run of an older as-of year could
    # otherwise read the old pointer, then write after this one and move it backwards.
    with series_lock(store, series_id):
        rolled_back: list[str] = []
        # The manifest's own digest: the manifest vouches for the files, this for the manifest.
        digest = hashlib.sha256(store.read_bytes(manifest["key"])).hexdigest()
        if force:
            current = latest_pointer(store, series_id)
            served = [*current.get("rolled_back", []), current["manifest"]] if current is not None else []
            rolled_back = [k for k in dict.fromkeys([*served, *retire]) if k != manifest["key"]]
            same = current is not None and current["manifest"] == manifest["key"] and vouches(store, current, digest)
            if same and rolled_back == current.get("rolled_back", []):
                return False
        else:
            current = serving_pointer(store, series_id)
            if current is None and not pinned_run:
                # No pointer (removed to be rebuilt, or left dangling): what rollbacks took out of service
                # is rebuilt from the alias history and kept in the pointer, so it is not served again.
                rolled_back = rolled_back_in_history(store, series_id)
                if manifest["key"] in rolled_back:
                    served = _served_before(store, series_id, rolled_back)
                    if served is not None:
                        logger.warning(
                            "%s: latest.json is missing and %s was rolled back: rebuilt to serve %s",
                            series_id,
                            manifest["key"],
                            served["key"],
                        )
                        _write_pointer(store, series_id, served, rolled_back, on_write)
                    return False
            if current is not None and current["manifest"] == manifest["key"]:
                if vouches(store, current, digest):
                    return False
                # The same forecast vouched for again (a publish rewrote its manifest, a pinned run's too):
                # what is served does not change, and what was rolled back stays so.
                rolled_back = list(current.get("rolled_back", []))
            elif pinned_run or (current is not None and superseded(current, manifest)):
                return False
        _write_pointer(store, series_id, manifest, rolled_back, on_write, digest)
    return True


def _write_pointer(
    store: ObjectStore,
    series_id: str,
    manifest: dict[str, Any],
    rolled_back: list[str],
    on_write: Callable[[bytes | None, bytes], None] | None,
    digest: str | None = None,
) -> None:
    """Write ``latest.json`` for a manifest (under the pointer's lock, held by the caller)."""
    from pipeline.locks import fence

    key = layout.forecast_latest(series_id)
    pointer = {
        "manifest": manifest["key"],
        "manifest_sha256": digest or hashlib.sha256(store.read_bytes(manifest["key"])).hexdigest(),
        "as_of_year": manifest["as_of_year"],
        **({"published_at": manifest["published_at"]} if isinstance(manifest.get("published_at"), str) else {}),
        "rolled_back": rolled_back,
        "run_key": manifest["run_key"],
        "vintage": manifest.get("vintage"),
        "model_name": manifest.get("model_name"),
        "model_version": manifest.get("model_version"),
    }
    data = json_bytes(pointer)
    if on_write is not None:
        on_write(_read_or_none(store, key), data)
    fence(store, series_id)  # still this run's lock: a holder stuck past the stale time may have lost it to a waiter
    store.write_bytes(key, data)


def is_rollback(record: dict[str, Any]) -> bool:
    """Whether an alias-history record is a rollback of ``@champion`` (records written before the flag: by their reason)."""
    if record.get("alias", "champion") != "champion":
        return False
    return record.get("rollback") is True or str(record.get("reason", "")).startswith("rollback")


def champion_records(store: ObjectStore, series_id: str) -> list[dict[str, Any]]:
    """The series' alias-history records of ``@champion`` (records written before the ``alias`` field are its), oldest first."""
    records = store.read_json_or_none(layout.alias_history(series_id), layout.ALIAS_HISTORY) or []
    return [r for r in records if r.get("alias", "champion") == "champion"]


def gate_record(store: ObjectStore, series_id: str, run_key: str) -> dict[str, Any] | None:
    """The champion gate's last record of a run key in the alias history, or ``None`` when its gate decided nothing.

    Only the gate writes records that name a challenger; a backfill, a run of an older vintage
    and a rerun of a decided run key write none (a rerun's decision is its first run's record).
    For what a person reads (``co2cast summary``): a damaged history is logged and read as no record.
    """
    try:
        records = champion_records(store, series_id)
    except StoreDataError as error:
        logger.warning("%s: the alias history is unreadable, so the gate's reason is not reported: %s", series_id, error)
        return None
    mine = [r for r in records if r.get("run_key") == run_key and "challenger_family" in r]
    return mine[-1] if mine else None


def manifests_serving(
    series_id: str, records: list[dict[str, Any]], versions: Iterable[str], runs: Iterable[tuple[Any, Any]] = ()
) -> list[str]:
    """The manifest keys that publish (or will, once their run publishes) any of ``versions``, sorted.

    Those of ``runs`` (``(run key, as-of year)``), and of every run key whose ``@champion``
    decision in ``records`` (the alias history) put or kept one of the versions on it: a
    refusal's record names another run's key, and a family alias's serves nothing.
    """
    wanted, found = {str(v) for v in versions}, set(runs)
    for record in records:
        if record.get("alias", "champion") != "champion" or record.get("publish_refused"):
            continue
        if str(record.get("to_version")) in wanted:
            found.add((record.get("run_key"), record.get("as_of_year")))
    keys = {layout.forecast_manifest(series_id, as_of, key) for key, as_of in found if isinstance(key, str) and isinstance(as_of, int)}
    return sorted(keys)


def rolled_back_in_history(store: ObjectStore, series_id: str) -> list[str]:
    """The manifest keys the alias history says a rollback took out of service, sorted.

    Every forecast of a version a rollback moved ``@champion`` away from (and no later decision
    put back) (:func:`manifests_serving`).
    What ``latest.json``'s ``rolled_back`` holds, for a pointer that has to be rebuilt.
    """
    champion = champion_records(store, series_id)
    retired: set[str] = set()
    for record in champion:  # oldest first: a version put back on @champion since its rollback serves again
        if is_rollback(record) and record.get("from_version") is not None:
            retired.add(str(record["from_version"]))
        elif record.get("moved") and not record.get("publish_refused"):
            retired.discard(str(record.get("to_version")))
    return manifests_serving(series_id, champion, retired)


def _served_before(store: ObjectStore, series_id: str, rolled_back: list[str]) -> dict[str, Any] | None:
    """The forecast a rebuilt ``latest.json`` serves instead of a rolled-back one: what the alias history says was served last.

    The last ``@champion`` record (a rollback, a gate decision that moved or kept it, or a refusal
    that put it back) names the version ``@champion`` holds: its own run key's forecast when the
    record names the one served (a refusal's names the run refused), else that version's newest
    forecast (by as-of year, then publish time). Only one that verifies, was not rolled back and
    was not trained by a pinned run. Never another version's (the newest forecast that verifies
    may be a backfill's, never served, whose gate left ``@champion`` where it was): ``None`` when
    there is none, and no pointer is written until a forecast of ``@champion``'s version is published.
    """
    champion = champion_records(store, series_id)
    if not champion or champion[-1].get("to_version") is None:
        return None
    last = champion[-1]
    manifests, _ = published_manifests(store, series_id)
    served = [
        m
        for m in manifests
        if str(m.get("model_version")) == str(last["to_version"])
        and m["key"] not in rolled_back
        and not _trained_pinned(m)
        and verify_manifest(store, m)
    ]
    run_key, as_of_year = last.get("run_key"), last.get("as_of_year")
    if not last.get("publish_refused") and isinstance(run_key, str) and isinstance(as_of_year, int):
        named = layout.forecast_manifest(series_id, as_of_year, run_key)
        for manifest in served:
            if manifest["key"] == named:
                return manifest
    return max(served, key=lambda m: (m["as_of_year"], str(m.get("published_at", ""))), default=None)


def restore_latest(store: ObjectStore, series_id: str, before: bytes | None, written: bytes) -> bool:
    """Put back the ``latest.json`` a write replaced (``on_write`` of :func:`point_latest`); whether it did.

    Only while ``latest.json`` still holds exactly what that write wrote (read under the pointer's
    lock): a run that has published since keeps its pointer, and a write that never landed has
    nothing to undo. ``before`` ``None``: there was no pointer, and it is deleted.
    """
    from pipeline.locks import fence, series_lock

    key = layout.forecast_latest(series_id)
    with series_lock(store, series_id):
        if _read_or_none(store, key) != written:
            return False
        fence(store, series_id)
        if before is None:
            store.delete(key)
        else:
            store.write_bytes(key, before)
    return True


def _read_or_none(store: ObjectStore, key: str) -> bytes | None:
    try:
        return store.read_bytes(key)
    except KeyError:
        return None


def _key_within(key: object, folder: str) -> bool:
    """Whether ``key`` is a store key under ``folder`` with no empty, ``.`` or ``..`` segment (an edited file may hold any)."""
    return isinstance(key, str) and key.startswith(folder) and all(part not in ("", ".", "..") for part in key.split("/"))


def manifest_problem(store: ObjectStore, manifest: dict[str, Any]) -> str | None:
    """What is wrong with a manifest's files (the first missing, changed or misplaced one, named), or ``None``.

    A manifest edited by hand may hold anything: a list of files of another shape, or a file
    outside the manifest's own folder (``../…``, another series' files) is a problem named here,
    not a ``TypeError`` or an invalid key deep in the store.
    """
    return _checked_files(store, manifest)[0]


def _checked_files(store: ObjectStore, manifest: dict[str, Any]) -> tuple[str | None, dict[str, bytes]]:
    """:func:`manifest_problem`, and the bytes of every file the manifest lists, each read once and checked."""
    files = manifest.get("files", [])
    fields = ("name", "key", "sha256")
    if not isinstance(files, list) or not all(isinstance(e, dict) and all(isinstance(e.get(f), str) for f in fields) for e in files):
        return "its list of files is not what co2cast writes", {}
    folder = f"{str(manifest.get('key', '')).rpartition('/')[0]}/"
    read: dict[str, bytes] = {}
    for entry in files:
        if entry["key"] != folder + entry["name"] or not _key_within(entry["key"], layout.FORECASTS):
            return f"{entry['name'][:40]!r} is listed at {entry['key'][:80]!r}, outside the forecast's own folder", {}
        try:
            data = store.read_bytes(entry["key"])
        except KeyError:
            return f"{entry['name']} is missing", {}
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            return f"{entry['name']} does not match its sha256 in the manifest", {}
        read[entry["name"]] = data
    return None, read


def verify_manifest(store: ObjectStore, manifest: dict[str, Any]) -> bool:
    """Whether every file a manifest lists is present with its recorded sha256."""
    return manifest_problem(store, manifest) is None


def readable_manifest(store: ObjectStore, key: str) -> dict[str, Any] | None:
    """A published manifest (fields: :data:`pipeline.layout.FORECAST_MANIFEST`), or ``None`` when it is missing or unreadable.

    One damaged or edited by hand (not JSON, not an object, a field missing, or naming another
    key than its own) is logged and treated as absent: a run publishes its run key anew over it.
    """
    try:
        manifest = store.read_json_or_none(key, layout.FORECAST_MANIFEST)
    except StoreDataError as error:
        logger.warning("%s", error)
        return None
    if manifest is not None and manifest["key"] != key:
        logger.warning("%s names another key (%s): it was edited; it is left out", store.uri(key), str(manifest["key"])[:80])
        return None
    return manifest


def published_manifests(store: ObjectStore, series_id: str, as_of_year: int | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Every readable manifest of a series (of one as-of year), by key, and the keys of those unreadable.

    Where manifests are only history (the scorecard, ``co2cast forecasts``, a rollback's
    candidates) one damaged or edited by hand is left out and logged (:func:`readable_manifest`),
    not a crash of the whole read: it is never scored, listed or served again.
    """
    found, damaged = [], []
    for key in store.list(layout.series_forecasts(series_id, as_of_year)):
        if not key.endswith("/manifest.json"):
            continue
        manifest = readable_manifest(store, key)
        if manifest is not None:
            found.append(manifest)
        elif store.exists(key):
            damaged.append(key)
    return found, damaged


def read_manifest(store: ObjectStore, series_id: str, as_of_year: int, run_key: str) -> Manifest | None:
    """The manifest published for a run key, or ``None``."""
    found = store.read_json_or_none(layout.forecast_manifest(series_id, as_of_year, run_key))
    return Manifest.of(found) if found is not None else None


@dataclass(frozen=True)
class VerifiedForecast:
    """A series' served forecast as :func:`read_verified` found it: the manifest and the bytes of its files.

    ``files`` holds every file the manifest lists, each read once and matching its sha256: what is
    shown or parsed is what was checked, and nothing is fetched from the store twice.
    """

    manifest: Manifest
    files: Mapping[str, bytes]

    def file(self, name: str) -> bytes | None:
        """A listed file's checked bytes, or ``None`` when the manifest lists none of that name."""
        return self.files.get(name)

    def table(self) -> pd.DataFrame:
        """The forecast table (``forecast.parquet``)."""
        return frames.read_parquet(self.files["forecast.parquet"])


def read_latest(store: ObjectStore, series_id: str) -> tuple[Manifest, pd.DataFrame]:
    """Follow ``latest.json`` to the manifest, check the hashes, return the forecast table.

    Raises: as :func:`read_verified`.
    """
    verified = read_verified(store, series_id)
    return verified.manifest, verified.table()


def read_verified(store: ObjectStore, series_id: str) -> VerifiedForecast:
    """Follow ``latest.json`` to the manifest and read its files, each checked against its sha256.

    Raises:
        NotPublished: nothing was published for the series (the message lists what is).
        IntegrityError: the manifest is missing, invalid or changed since ``latest.json`` was
            pointed at it, or a file is missing or does not match its sha256 (named in the message).
        StoreDataError: ``latest.json`` or the manifest is not the JSON co2cast wrote (damaged
            or edited; named in the message).
    """
    found = read_verified_or_none(store, series_id)
    if found is None:
        raise NotPublished(f"no forecast published for {series_id!r}; {published_hint(store, series_id)}")
    return found


def read_verified_or_none(store: ObjectStore, series_id: str) -> VerifiedForecast | None:
    """:func:`read_verified`, or ``None`` when the series has no ``latest.json`` (no hint listed: for a caller that lists series itself)."""
    pointer, data = _latest(store, series_id)
    if pointer is None:
        return None
    if not _key_within(pointer["manifest"], layout.FORECASTS):  # '../…' must not become a key; another series' is named below
        raise IntegrityError(
            f"{series_id}: latest.json points at {pointer['manifest'][:80]!r}, not a forecast of {series_id}: it was edited; "
            "restore it from a backup, or remove it and rerun to rebuild it"
        )
    if data is None:
        raise IntegrityError(f"{series_id}: latest.json points at {store.uri(pointer['manifest'])}, which is missing; republish it")
    manifest = store.parse_json(pointer["manifest"], data)  # not JSON: named as damaged before the digest is compared
    recorded = pointer.get("manifest_sha256")  # absent in pointers written before co2cast recorded it
    if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
        raise IntegrityError(
            f"{store.uri(pointer['manifest'])} does not match the sha256 latest.json recorded for it: it was edited; "
            "the forecast is not shown, republish it"
        )
    try:
        checked = Manifest.of(manifest)
    except PermanentError as error:
        raise IntegrityError(f"{store.uri(pointer['manifest'])}: not a valid manifest ({str(error).splitlines()[0]})") from None
    problem, files = _checked_files(store, manifest)
    if problem is not None:
        raise IntegrityError(f"{store.uri(pointer['manifest'])}: {problem}; the forecast is not shown, republish it")
    if checked.series_id != series_id or not pointer["manifest"].startswith(layout.series_forecasts(series_id)):
        raise IntegrityError(
            f"{series_id}: latest.json points at {store.uri(pointer['manifest'])}, a forecast of {checked.series_id}: "
            "it was edited; restore it from a backup, or remove it and rerun to rebuild it"
        )
    if "forecast.parquet" not in files:
        raise IntegrityError(f"{store.uri(pointer['manifest'])} lists no forecast.parquet")
    return VerifiedForecast(checked, files)


def read_file(store: ObjectStore, manifest: Manifest, name: str) -> bytes | None:
    """The bytes of a file a manifest lists, or ``None`` when it lists none of that name."""
    entry = manifest.file(name)
    return store.read_bytes(entry.key) if entry is not None else None


def _parquet(frame: pd.DataFrame) -> bytes:
    """The table as Parquet; the unit of its values also in the schema metadata (``co2cast.unit``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    if "unit" in frame.columns and len(frame):
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), PARQUET_UNIT_KEY: str(frame["unit"].iloc[0]).encode()})
    buffer = io.BytesIO()
    pq.write_table(arrow, buffer)
    return buffer.getvalue()
