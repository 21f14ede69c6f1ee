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
import logging
from typing import Any

import numpy as np
import pandas as pd

from pipeline import layout
from pipeline.errors import PermanentError
from pipeline.payloads import Manifest
from pipeline.store import ObjectStore
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
    "provisional",
]


class PublishRefused(PermanentError):
    """The forecast table failed its GX gate; nothing was published."""


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
    provisional: bool = False,
) -> pd.DataFrame:
    """Give a forecaster's output (``year, mean, lo_80, …``) the published schema.

    Interval bounds are cut at zero: emissions cannot be negative, and a symmetric interval
    around a small positive forecast would otherwise reach below it. ``provisional`` (every
    row) says the forecast starts from a provisional last year: the vintage's newest year,
    which the next release usually revises.
    """
    table = forecast.copy()
    for column in ("lo_80", "lo_95", "hi_80", "hi_95"):
        table[column] = np.maximum(table[column].astype(float), 0.0)
    table["series_id"] = series_id
    table["model_name"] = model_name
    table["model_version"] = str(model_version)
    table["family"] = family
    table["vintage"] = vintage
    table["as_of_year"] = int(as_of_year)
    table["provisional"] = bool(provisional)
    table["year"] = table["year"].astype("int64")
    return table[FORECAST_COLUMNS]


def validate_forecast(table: pd.DataFrame, series_id: str, as_of_year: int, horizon_end: int) -> GateResult:
    """Run the ``forecast_output`` suite on a forecast table."""
    parameters = {
        "series_ids": [series_id],
        "first_year": as_of_year + 1,
        "last_year": horizon_end,
        "n_years": horizon_end - as_of_year,
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

    Returns:
        The manifest (existing one when this run key was already published).

    Raises:
        PublishRefused: the table failed the ``forecast_output`` suite; nothing was written.
    """
    as_of_year = int(meta["as_of_year"])
    manifest_key = layout.forecast_manifest(series_id, as_of_year, run_key)
    existing = republish_existing(store, series_id, as_of_year, run_key)
    if existing is not None:
        return existing

    gate = validate_forecast(table, series_id, as_of_year, horizon_end)
    if not gate.success:
        raise PublishRefused(f"forecast for {series_id} (as of {as_of_year}) failed its checks; nothing published.\n{gate.summary()}")

    files = {"forecast.csv": table.to_csv(index=False).encode(), "forecast.parquet": _parquet(table), **(extras or {})}
    entries = []
    for name, data in files.items():
        key = layout.forecast_object(series_id, as_of_year, run_key, name)
        store.write_bytes(key, data)
        entries.append({"name": name, "key": key, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    manifest = {
        **meta,
        "series_id": series_id,
        "run_key": run_key,
        "as_of_year": as_of_year,
        "first_year": int(table["year"].min()),
        "last_year": int(table["year"].max()),
        "files": entries,
        "gx_success": True,
        "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "key": manifest_key,
    }
    store.write_json(manifest_key, manifest)
    _move_latest(store, series_id, manifest)
    logger.info("published %s", store.uri(manifest_key))
    return Manifest.of(manifest)


def republish_existing(store: ObjectStore, series_id: str, as_of_year: int, run_key: str) -> Manifest | None:
    """The verified manifest already published for a run key (its pointer settled), or ``None``.

    The cheap path of a rerun: one or two small reads, no model, no GX.
    """
    existing = store.read_json_or_none(layout.forecast_manifest(series_id, as_of_year, run_key))
    if existing is None or not verify_manifest(store, existing):
        return None
    _move_latest(store, series_id, existing)
    return Manifest.of(existing)


def _move_latest(store: ObjectStore, series_id: str, manifest: dict[str, Any]) -> None:
    """Point ``latest.json`` at a manifest unless it already points at a newer as-of year."""
    point_latest(store, series_id, manifest)


def point_latest(store: ObjectStore, series_id: str, manifest: dict[str, Any], force: bool = False) -> None:
    """Point ``latest.json`` at a manifest; without ``force`` never back to an older as-of year.

    ``force`` is for a rollback, which serves an earlier champion's forecast again.
    """
    key = layout.forecast_latest(series_id)
    current = store.read_json_or_none(key)
    if current is not None and current["manifest"] == manifest["key"]:
        return
    if current is not None and not force and current["as_of_year"] > manifest["as_of_year"]:
        return
    store.write_json(
        key,
        {
            "manifest": manifest["key"],
            "as_of_year": manifest["as_of_year"],
            "run_key": manifest["run_key"],
            "vintage": manifest.get("vintage"),
            "model_name": manifest.get("model_name"),
            "model_version": manifest.get("model_version"),
        },
    )


def verify_manifest(store: ObjectStore, manifest: dict[str, Any]) -> bool:
    """Whether every file a manifest lists is present with its recorded sha256."""
    for entry in manifest["files"]:
        try:
            data = store.read_bytes(entry["key"])
        except KeyError:
            return False
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            return False
    return True


def read_manifest(store: ObjectStore, series_id: str, as_of_year: int, run_key: str) -> Manifest | None:
    """The manifest published for a run key, or ``None``."""
    found = store.read_json_or_none(layout.forecast_manifest(series_id, as_of_year, run_key))
    return Manifest.of(found) if found is not None else None


def read_latest(store: ObjectStore, series_id: str) -> tuple[Manifest, pd.DataFrame]:
    """Follow ``latest.json`` to the manifest, check the hashes, return the forecast table.

    Raises:
        NotPublished: nothing was published for the series (the message lists what is).
        IntegrityError: a file does not match its manifest.
    """
    pointer = store.read_json_or_none(layout.forecast_latest(series_id))
    if pointer is None:
        published = layout.published_series(store.list(layout.FORECASTS))
        raise NotPublished(f"no forecast published for {series_id!r}; published: {', '.join(published) or 'none'}")
    manifest = store.read_json(pointer["manifest"])
    if not verify_manifest(store, manifest):
        raise IntegrityError(f"{store.uri(pointer['manifest'])}: a file does not match its sha256 in the manifest")
    checked = Manifest.of(manifest)
    entry = checked.file("forecast.parquet")
    if entry is None:
        raise IntegrityError(f"{store.uri(pointer['manifest'])} lists no forecast.parquet")
    return checked, pd.read_parquet(io.BytesIO(store.read_bytes(entry.key)))


def read_file(store: ObjectStore, manifest: Manifest, name: str) -> bytes | None:
    """The bytes of a file a manifest lists, or ``None`` when it lists none of that name."""
    entry = manifest.file(name)
    return store.read_bytes(entry.key) if entry is not None else None


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()
