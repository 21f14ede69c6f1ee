"""The ingest half: fetch a release, snapshot it, gate it with GX, curate it.

Each step is a function of the object store and small values, so the Airflow tasks in
``dags/co2_ingest.py`` and the ``co2cast ingest`` command run the same code. Every step is
safe to repeat: raw bytes are content-addressed, and a vintage becomes visible to readers only
when ``curated/latest.json`` is rewritten, last.

Store keys (see docs/design.md)::

    raw/<vintage>/<file name>, raw/<vintage>/meta.json
    quarantine/<vintage>/<file name>, gx_result.json, report.md
    curated/<vintage>/emissions.parquet, revisions.parquet, revisions.json, gx_result.json, meta.json
    curated/latest.json
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipeline import frames, layout, plausibility, sources
from pipeline.config import ConfigError, Settings
from pipeline.errors import PermanentError, TransientError
from pipeline.store import ObjectStore, StoreDataError, StoreError, StoreUnavailable
from pipeline.validation import GateResult, release_memory, run_suite, run_suite_chunked

logger = logging.getLogger(__name__)

LATEST_KEY = layout.CURATED_LATEST
VINTAGE_CHARS = 16  # a vintage id is the first 16 hex digits of the sha256 of the bytes
CURATED_COLUMNS = ["entity", "iso_code", "year", "variable", "value", "provisional"]
NAME_COLUMNS = ("entity", "iso_code", "variable")
#: Longest entity name accepted: its series id names store keys, lock files and MLflow models
#: (OWID's longest is 41 characters; a file name may have 255 bytes).
MAX_ENTITY_NAME = 100
#: The field of a curated vintage's ``meta.json`` (and of ``curated/latest.json``, the same record)
#: holding the sha256 of its ``emissions.parquet`` as curated; absent in vintages curated before
#: co2cast recorded it.
TABLE_SHA256 = "table_sha256"


class _Unread(enum.Enum):
    UNREAD = "unread"


#: ``latest=`` of :func:`vintage_status`: read ``curated/latest.json`` there, if needed.
UNREAD = _Unread.UNREAD
#: ``curated/latest.json`` as a step read it, once (``None`` before the first vintage).
Pointer = dict[str, Any] | None


class ValidationFailed(PermanentError):
    """A release was rejected; it is quarantined and nothing was curated."""


class GatedAgainstOther(PermanentError):
    """Another ingest curated a vintage between this release's gates and its curate step."""


class AlreadyCurated(PermanentError):
    """A rerun of an older ingest (a task cleared in Airflow) would take ``curated/latest.json`` back to older data."""


class RawAltered(StoreDataError):
    """A staged raw object no longer has the sha256 it was fetched with (altered or damaged in the store)."""


class CuratedAltered(StoreDataError):
    """A curated table no longer has the sha256 recorded when it was curated (edited or damaged in the store)."""


class NotValidated(PermanentError):
    """The curate step found no passing GX result for its vintage (the gates did not run, or their result is gone)."""


class CurateFailed(TransientError):
    """Writing a curated vintage failed part-way (disk full, store unreachable); nothing moved."""


@dataclass(frozen=True)
class VintageRef:
    """Where a vintage's files are."""

    vintage: str
    file_name: str

    @property
    def raw_key(self) -> str:
        return layout.raw_object(self.vintage, self.file_name)


def is_vintage_id(text: str) -> bool:
    """Whether ``text`` has the shape of a vintage id (:data:`VINTAGE_CHARS` lower-case hex digits)."""
    return len(text) == VINTAGE_CHARS and all(c in "0123456789abcdef" for c in text)


def vintage_id(data: bytes) -> tuple[str, str]:
    """Return ``(vintage id, full sha256)`` of a release's bytes."""
    digest = hashlib.sha256(data).hexdigest()
    return digest[:VINTAGE_CHARS], digest


def vintage_status(store: ObjectStore, vintage: str, latest: Pointer | Literal[_Unread.UNREAD] = UNREAD) -> str | None:
    """``"curated"`` or ``"quarantined"`` once a vintage was gated, else ``None``.

    Only ``"curated"`` is final; a quarantined vintage is gated again on every ingest.

    A vintage whose ``curated/<v>/meta.json`` was written but never ``curated/latest.json``
    (a run killed between the two writes) is not curated either: ``None``, so the next ingest
    of the release gates it again, against the vintage the pointer shows now, and curates it
    (which moves the pointer and, under Airflow, updates the asset) or refuses it. It is told
    from a vintage that was published and then superseded by the chain of pointers
    (:func:`_never_published`). No clocks are compared.

    Args:
        store: the object store.
        vintage: the vintage id.
        latest: ``curated/latest.json`` as the calling step read it, so that a step reads it
            once; by default it is read here, and only when the vintage has a ``meta.json``.
    """
    meta = store.read_json_or_none(layout.curated_meta(vintage))
    if meta is not None and not _never_published(store, meta, latest_curated(store) if latest is UNREAD else latest):
        return "curated"
    if store.exists(layout.quarantine_object(vintage, "report.md")):
        return "quarantined"
    return None


def _never_published(store: ObjectStore, meta: dict[str, Any], latest: Pointer) -> bool:
    """Whether ``curated/latest.json`` (``latest``, as read) never pointed at the vintage of this ``meta.json``.

    Every pointer names, as ``previous_vintage``, the one it replaced, and each vintage's
    ``meta.json`` holds the pointer written for it: from ``curated/latest.json`` back, they
    are the vintages the pointer showed, newest first (pointers are written one at a time under
    ``locks/curate.json``, and a published vintage is never curated again). A vintage was
    curated over the one its meta names as ``previous_vintage``: had its pointer landed, the
    chain would pass through it just after that one. So the chain reaching that vintage (or its
    start, for a first vintage) without passing this one means it never was published, even
    when other vintages were curated since (two ingests killed alike: the rerun of one must not
    leave the other "already curated"). A chain that breaks first (a ``meta.json`` missing, a
    loop) tells nothing: the vintage counts as published, so the pointer never goes back to
    data that may be older.
    """
    vintage, curated_over = meta.get("vintage"), meta.get("previous_vintage")
    pointer: Any = latest
    shown = pointer["vintage"] if pointer else None
    seen: set[str] = set()
    while shown != vintage:
        if shown == curated_over:
            return True
        if shown is None or shown in seen:
            return False  # the chain ends, or loops, without passing either: it tells nothing
        seen.add(shown)
        before = pointer.get("previous_vintage")
        if before is None:
            shown = None  # the chain's start: the first vintage curated
            continue
        pointer = store.read_json_or_none(layout.curated_meta(before))
        if not isinstance(pointer, dict) or pointer.get("vintage") != before:
            return False  # a meta.json missing or damaged breaks the chain: it tells nothing
        shown = before
    return False


def latest_curated(store: ObjectStore) -> dict[str, Any] | None:
    """The pointer to the last good vintage, or ``None`` before the first one."""
    return store.read_json_or_none(LATEST_KEY, layout.CURATED_POINTER)


def read_curated(store: ObjectStore, vintage: str, entity: str | None = None, variable: str | None = None) -> pd.DataFrame:
    """The curated tidy table of a vintage (names as ``string`` columns).

    Args:
        store: the object store.
        vintage: the vintage id.
        entity: keep only this entity's rows (filtered before the names become strings, which
            is most of the cost of a read: about 60 ms for the whole OWID table, against 10 ms).
        variable: keep only this variable's rows.
    """
    frame = _read_curated_compact(store, vintage)
    if entity is not None or variable is not None:
        keep = np.ones(len(frame), dtype=bool)
        for column, value in (("entity", entity), ("variable", variable)):
            if value is not None:
                keep &= (frame[column] == value).to_numpy(dtype=bool, na_value=False)
        frame = frame.loc[keep].reset_index(drop=True)
    return _with_string_names(frame)


def _read_curated_compact(store: ObjectStore, vintage: str) -> pd.DataFrame:
    """The curated table with names as categoricals: what ingest compares a release with.

    Its bytes are checked against the sha256 recorded at curation (:func:`recorded_table_sha256`),
    hashed from the bytes read for the table, before they are parsed. A vintage curated before
    co2cast recorded it is read unchecked.

    Raises:
        CuratedAltered: the table's bytes are not the ones curated (edited or damaged by hand in the
            bucket): one line naming it; ingesting its release again curates it again.
        StoreDataError: the table was deleted (likewise healed by ingesting the release again), or,
            in a vintage with no recorded sha256, replaced by something that is not it: restore it
            from a backup.
    """
    key = layout.curated_table(vintage)
    try:
        data = store.read_bytes(key)
    except KeyError:
        raise StoreDataError(
            f"{store.uri(key)} is missing: vintage {vintage}'s curated table was deleted; restore it from a backup, "
            f"or {_reingest_hint(store, vintage)}"
        ) from None
    recorded = recorded_table_sha256(store, vintage)
    if recorded is not None:
        found = hashlib.sha256(data).hexdigest()
        if found != recorded:
            raise CuratedAltered(
                f"{store.uri(key)} does not match the sha256 recorded at curation (it has {found[:16]}…, recorded {recorded[:16]}…): "
                f"it was edited or damaged in the store; restore it from a backup, or {_reingest_hint(store, vintage)}"
            )
    try:
        frame = frames.read_parquet(data)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        problem: str | None = f"not a readable Parquet table: {str(error).splitlines()[0][:120]}"
    else:
        absent = [column for column in NAME_COLUMNS if column not in frame.columns]
        problem = f"it has no {absent[0]!r} column" if absent else None
    if problem is not None:
        raise StoreDataError(
            f"{store.uri(key)} is not what co2cast wrote ({problem}): it was damaged or replaced; restore "
            f"vintage {vintage}'s curated table from a backup (it was curated before co2cast recorded the table's sha256, "
            "so ingesting the same release again changes nothing)"
        )
    for column in NAME_COLUMNS:
        if not isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype("category")
    return frame


def recorded_table_sha256(store: ObjectStore, vintage: str) -> str | None:
    """The sha256 of ``curated/<vintage>/emissions.parquet`` recorded when it was curated, or ``None``.

    Read from the vintage's ``meta.json``; from ``curated/latest.json`` when that file is gone and
    the pointer shows the vintage. ``None`` for a vintage curated before co2cast recorded it.
    """
    meta = store.read_json_or_none(layout.curated_meta(vintage), layout.CURATED_POINTER)
    if meta is None or meta.get("vintage") != vintage:
        latest = latest_curated(store)
        meta = latest if latest is not None and latest["vintage"] == vintage else None
    return meta.get(TABLE_SHA256) if meta is not None else None


def _reingest_hint(store: ObjectStore, vintage: str) -> str:
    """How to curate a vintage's table again: ingest its release, which rewrites it from the source (:func:`fetch_source`)."""
    try:
        source = (store.read_json_or_none(layout.raw_meta(vintage)) or {}).get("source")
    except StoreDataError:
        source = None
    command = f"`co2cast ingest --source {sources.clean(source, 160)}`" if isinstance(source, str) and source else "`co2cast ingest`"
    return f"ingest vintage {vintage}'s release again ({command}, or co2_ingest with that source), which curates the table again from it"


def _with_string_names(frame: pd.DataFrame) -> pd.DataFrame:
    for column in NAME_COLUMNS:
        frame[column] = frame[column].astype("string")
    return frame


# -- steps -----------------------------------------------------------------------------------


def fetch_source(settings: Settings, store: ObjectStore, source: str | None = None) -> dict[str, Any]:
    """Fetch the source; stage its bytes under ``raw/<vintage>/`` unless already settled.

    Args:
        settings: the run's settings (``source`` and the source policy: allowed URLs and
            directories, size cap, deadline).
        store: the object store.
        source: overrides ``settings.source``.

    Returns:
        A small dict for XCom: ``vintage``, ``sha256``, ``content_sha256`` (of the content with
        BOM, line ends and gzip normalised away), ``file_name``, ``source``, ``size``,
        ``fetched_at``, ``changed`` (``False`` when this vintage was curated before, or when
        its content equals the curated vintage's; a quarantined vintage is gated again) and
        ``message``.

    Raises:
        sources.SourceError: the source is refused or cannot be fetched; ``transient`` says
            whether a retry may help. Nothing is stored.
    """
    fetched = sources.fetch(source or settings.source, policy=sources.SourcePolicy.from_settings(settings))
    vintage, digest = vintage_id(fetched.data)
    content = sources.content_sha256(fetched.data, settings.max_source_bytes)
    info: dict[str, Any] = {
        "vintage": vintage,
        "sha256": digest,
        "content_sha256": content,
        "file_name": fetched.file_name,
        "source": fetched.source,
        "size": len(fetched.data),
        "fetched_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    # Only a curated vintage is settled for good. A quarantined one is gated again: the verdict
    # depends on the settings (size cap, tolerances, allowed breaks) and on the file name.
    latest = latest_curated(store)
    status = vintage_status(store, vintage, latest)
    if status == "curated":
        current = f"; curated/latest.json points at {latest['vintage']}" if latest else ""
        healed = _heal_curated(settings, store, vintage, digest, fetched)
        message = f"source unchanged: vintage {vintage} was already curated{current}.{healed} Nothing new to ingest."
        info.update(changed=False, message=message)
        logger.info(info["message"])
        return info
    if latest is not None and _content_of(store, latest, settings) == content:
        # Same table, other bytes (a BOM, CRLF line ends, gzip): nothing to curate or retrain.
        info.update(
            changed=False,
            message=f"source unchanged: its content equals vintage {latest['vintage']} (curated/latest.json); "
            "only the bytes differ (byte order mark, line ends or compression). Nothing new to ingest.",
        )
        logger.info(info["message"])
        return info
    ref = VintageRef(vintage, fetched.file_name)
    if not store.exists(ref.raw_key):  # content-addressed: same key, same bytes
        store.write_bytes(ref.raw_key, fetched.data)
    elif hashlib.sha256(store.read_bytes(ref.raw_key)).hexdigest() != digest:  # altered since: the bytes just fetched heal it
        logger.warning("%s no longer matched its sha256 (altered or damaged): written again from the source", store.uri(ref.raw_key))
        store.write_bytes(ref.raw_key, fetched.data)
    if status == "quarantined":
        what = f"vintage {vintage}, quarantined before, gated again"
    elif store.exists(layout.curated_meta(vintage)):
        what = f"vintage {vintage}, curated before but never in curated/latest.json (a run stopped before moving it), gated again"
    else:
        what = f"new vintage {vintage}"
    info.update(changed=True, message=f"{what} ({len(fetched.data):,} bytes from {fetched.source})")
    logger.info(info["message"])
    return info


def _heal_curated(settings: Settings, store: ObjectStore, vintage: str, digest: str, fetched: sources.Fetched) -> str:
    """Check a curated vintage's raw snapshot and curated table against what was recorded; rewrite them from its bytes.

    ``fetched`` holds the vintage's bytes, fetched again (``digest``, their sha256, is the vintage's). The raw
    object found altered or gone is written again from them, as for a vintage not yet curated. The
    curated table found gone, or no longer of the sha256 recorded at curation, is curated again
    from them (no GX gate runs: these bytes passed them), under the curate lock; when this
    pandas/pyarrow writes other bytes for the same table, the new sha256 is recorded in its
    ``meta.json`` and in ``curated/latest.json`` if that shows the vintage. A table of a vintage
    curated before co2cast recorded its sha256 is healed only when gone.

    Returns:
        What was healed, as sentences to append to the fetch message ("" when nothing was).
    """
    from pipeline.locks import curate_lock

    done = []
    raw_meta = store.read_json_or_none(layout.raw_meta(vintage))
    file_name = raw_meta.get("file_name") if isinstance(raw_meta, dict) else None
    file_name = file_name if isinstance(file_name, str) and file_name else fetched.file_name  # the name it was gated under
    raw_key = layout.raw_object(vintage, file_name)
    try:
        stored = hashlib.sha256(store.read_bytes(raw_key)).hexdigest()  # hashed as read, not held beside the fetched bytes
    except KeyError:
        stored = None
    if stored != digest:
        logger.warning("%s was %s: written again from the source", store.uri(raw_key), "missing" if stored is None else "altered")
        store.write_bytes(raw_key, fetched.data)
        done.append(f" Its raw snapshot {raw_key} was {'missing' if stored is None else 'altered'}: written again from the source.")

    table_key = layout.curated_table(vintage)
    recorded = recorded_table_sha256(store, vintage)
    try:
        found: str | None = hashlib.sha256(store.read_bytes(table_key)).hexdigest()
    except KeyError:
        found = None
    if found is not None and (recorded is None or found == recorded):
        return "".join(done)
    with curate_lock(store, stale_after=settings.lock_stale_seconds):
        table = _parquet_bytes(curated_table(read_release(fetched.data, file_name, settings.max_source_bytes)))
        written = hashlib.sha256(table).hexdigest()
        store.write_bytes(table_key, table)
        del table
        if written != recorded:  # another pandas/pyarrow, or none recorded: record the digest of the bytes now there
            meta = store.read_json_or_none(layout.curated_meta(vintage), layout.CURATED_POINTER)
            if meta is not None and meta.get("vintage") == vintage:
                store.write_json(layout.curated_meta(vintage), {**meta, TABLE_SHA256: written})
            latest = latest_curated(store)
            if latest is not None and latest["vintage"] == vintage:
                store.write_json(LATEST_KEY, {**latest, TABLE_SHA256: written})
    what = "missing" if found is None else "no longer of the sha256 recorded at curation (edited or damaged)"
    logger.warning("%s was %s: curated again from the source", store.uri(table_key), what)
    done.append(f" Its curated table {table_key} was {what}: curated again from the source.")
    return "".join(done)


def snapshot_raw(store: ObjectStore, fetched: dict[str, Any]) -> dict[str, Any]:
    """Seal the raw snapshot: check the staged bytes' hash, write ``raw/<vintage>/meta.json``.

    The meta describes the latest fetch of these bytes: the same bytes fetched again under
    another name or from another place (a quarantined vintage retried) rewrite it.

    Returns:
        ``{"vintage", "file_name", "raw_key"}``.
    """
    ref = VintageRef(fetched["vintage"], fetched["file_name"])
    digest = hashlib.sha256(store.read_bytes(ref.raw_key)).hexdigest()
    if digest != fetched["sha256"]:
        raise RawAltered(
            f"{store.uri(ref.raw_key)} has sha256 {digest}, expected {fetched['sha256']}: the object was altered after it was "
            "fetched; run the ingest again (its fetch writes the object again from the source)"
        )
    meta_key = layout.raw_meta(ref.vintage)
    meta = {k: fetched[k] for k in ("vintage", "sha256", "content_sha256", "file_name", "source", "size", "fetched_at") if k in fetched}
    if store.read_json_or_none(meta_key) != meta:
        store.write_json(meta_key, meta)
    return {"vintage": ref.vintage, "file_name": ref.file_name, "raw_key": ref.raw_key}


def validate_raw(settings: Settings, store: ObjectStore, snapshot: dict[str, Any], today: dt.date | None = None) -> dict[str, Any]:
    """Gate a snapshot with the GX suites; quarantine it and raise when it fails.

    Args:
        settings: the run's settings (``max_lost_years``).
        store: the object store.
        snapshot: what :func:`snapshot_raw` returned.
        today: the date whose year is the latest allowed (tests).

    Returns:
        ``{"vintage", "file_name", "success": True, "summary", "gated_against"}``;
        ``gated_against`` is the vintage ``curated/latest.json`` showed when the gates compared
        the release with it (``None`` before the first), which the curate step checks.

        A rerun for a vintage that is curated and served (a task cleared in Airflow) gates
        nothing and keeps the GX result of its curation.

    Raises:
        ValidationFailed: the release is malformed or suspicious. It is in
            ``quarantine/<vintage>/`` with the GX result and a report; nothing was curated.
        AlreadyCurated: a rerun for a vintage curated before another one (nothing written).
    """
    latest = latest_curated(store)  # read once: the rerun check, the gates and a quarantine report use it
    if _settled(store, snapshot["vintage"], latest) is not None:  # a rerun (a task cleared in Airflow): the gates' result of the time stays
        summary = f"vintage {snapshot['vintage']} is curated and served already: not gated again"
        return {
            "vintage": snapshot["vintage"],
            "file_name": snapshot["file_name"],
            "success": True,
            "summary": summary,
            "gated_against": None,
        }
    validated, _ = _gate_snapshot(settings, store, snapshot, today, latest)
    return validated


def _settled(store: ObjectStore, vintage: str, latest: Pointer) -> dict[str, Any] | None:
    """The pointer ``latest``, when a rerun of a vintage's validate or curate step finds it curated and still served.

    ``None`` when the vintage is not curated (or was written but never published: it is
    curated again, see :func:`vintage_status`).

    Raises:
        AlreadyCurated: the vintage was curated and another has been since; curating it again
            would move ``curated/latest.json`` back to older data (and start a forecast on it).
    """
    if vintage_status(store, vintage, latest) != "curated":
        return None
    shown = latest["vintage"] if latest else None
    if shown != vintage:
        raise AlreadyCurated(
            f"vintage {vintage} was curated before and vintage {shown} has been since: a rerun of its ingest does not take "
            "curated/latest.json back to older data, so nothing was written: there is nothing to redo"
        )
    return latest


def _gate_snapshot(
    settings: Settings, store: ObjectStore, snapshot: dict[str, Any], today: dt.date | None, latest: Pointer
) -> tuple[dict[str, Any], pd.DataFrame]:
    """:func:`validate_raw` against ``latest`` (``curated/latest.json`` as read), also returning the staging table that passed."""
    ref = VintageRef(snapshot["vintage"], snapshot["file_name"])
    try:
        staging = read_release(store.read_bytes(ref.raw_key), ref.file_name, settings.max_source_bytes)
    except sources.SourceError as error:
        _quarantine(store, ref, store.read_bytes(ref.raw_key), gates=[], reason=str(error), latest=latest)
        raise ValidationFailed(_failure_message(store, ref, str(error))) from error

    # The raw bytes are not kept while gating (a large release would be held twice).
    gates, against = _run_gates(settings, store, staging, today or dt.date.today(), latest)
    release_memory(len(staging))
    if not all(g.success for g in gates):
        del staging
        summary = "\n".join(g.summary() for g in gates if not g.success)
        _quarantine(store, ref, store.read_bytes(ref.raw_key), gates=gates, reason=summary, latest=latest)
        raise ValidationFailed(_failure_message(store, ref, "; ".join(g.one_line() for g in gates if not g.success)))
    store.write_json(layout.curated_gx_result(ref.vintage), {g.suite: g.result for g in gates})
    summary = "; ".join(g.summary() for g in gates)
    validated = {"vintage": ref.vintage, "file_name": ref.file_name, "success": True, "summary": summary, "gated_against": against}
    return validated, staging


def curate_vintage(settings: Settings, store: ObjectStore, validated: dict[str, Any], tidy: pd.DataFrame | None = None) -> dict[str, Any]:
    """Write the curated table and revisions report, then move ``curated/latest.json``.

    Args:
        settings: the run's settings (the release is read within ``max_source_bytes``, as when
            it was validated).
        store: the object store.
        validated: what :func:`validate_raw` returned.
        tidy: :func:`curated_table` of the staging table those gates passed, when they ran in
            this process (:func:`ingest`); without it the release is read again from ``raw/``.

    Returns:
        The pointer written: ``vintage``, ``latest_year``, ``rows``, ``entities``,
        ``previous_vintage``, ``revisions`` (summary counts), ``renamed`` (``"Czech Republic ->
        Czechia (CZE)"`` per entity the release renamed), ``key``.

    Raises:
        CurateFailed: the store failed part-way (disk full, S3 unreachable). What was written
            of the vintage is taken back where the store still answers, and
            ``curated/latest.json`` did not move; a rerun heals it.
        GatedAgainstOther: another ingest curated a vintage after this release was gated
            (the gates compared it with what is no longer the latest); nothing was written,
            and the next ingest of the release gates it against the new one.
        CurateBusy: another ingest held the curate lock for too long (transient).
        AlreadyCurated: a rerun for a vintage curated before another one: curating it again
            would take ``curated/latest.json`` back to older data; nothing was written. A rerun
            for the vintage ``curated/latest.json`` shows returns that pointer, writing nothing.
    """
    from pipeline.locks import curate_lock

    written: list[str] = []
    try:
        with curate_lock(store, stale_after=settings.lock_stale_seconds):
            return _curate(settings, store, validated, written, tidy)
    except Exception as error:
        if not _is_store_failure(error):
            raise
        # Take back what was written so the vintage is not half there. The pointer is
        # written last, so readers never saw any of it.
        _remove_quietly(store, written)
        raise CurateFailed(
            f"could not write curated vintage {validated['vintage']}: {type(error).__name__}: {sources.clean(error, 160)}. "
            "Nothing was curated and curated/latest.json did not move; fix the store (space, permissions, endpoint) "
            "and run the ingest again."
        ) from error


def _curate(
    settings: Settings, store: ObjectStore, validated: dict[str, Any], written: list[str], tidy: pd.DataFrame | None
) -> dict[str, Any]:
    ref = VintageRef(validated["vintage"], validated["file_name"])
    previous = latest_curated(store)  # read once, under the curate lock: nothing else moves it until the write below
    settled = _settled(store, ref.vintage, previous)
    if settled is not None:  # a rerun: curated/latest.json already shows this vintage; nothing is rewritten
        logger.info("vintage %s is curated and curated/latest.json shows it: nothing to curate", ref.vintage)
        return settled
    shown = previous["vintage"] if previous else None
    if "gated_against" in validated and validated["gated_against"] != shown and shown != ref.vintage:
        raise GatedAgainstOther(
            f"vintage {ref.vintage} was gated against {validated['gated_against'] or 'no earlier vintage'}, but vintage {shown} "
            "was curated since (another ingest at the same time): nothing was curated; ingest the release again to gate it "
            f"against {shown}"
        )
    gx_result = store.read_json_or_none(layout.curated_gx_result(ref.vintage))
    if not gx_result or not all(r.get("success") for r in gx_result.values()):
        raise NotValidated(
            f"vintage {ref.vintage} has no passing GX result ({store.uri(layout.curated_gx_result(ref.vintage))} is missing, "
            "failed or altered): nothing was curated; run the ingest again so its gates run before the curate step"
        )
    if tidy is None:
        tidy = curated_table(sources.read_source(store.read_bytes(ref.raw_key), ref.file_name, settings.max_source_bytes))
    # A pointer that already shows this vintage (a retry after a pointer write that landed though
    # it reported a failure) keeps the vintage it replaced: the chain of pointers stays whole.
    over = previous.get("previous_vintage") if previous and shown == ref.vintage else shown
    prev_table = _read_curated_compact(store, over) if over is not None else None
    revisions, revision_summary = revisions_report(prev_table, tidy)

    raw_meta = store.read_json(layout.raw_meta(ref.vintage))

    def write(key: str, data: bytes) -> None:
        written.append(key)
        store.write_bytes(key, data)

    table = _parquet_bytes(tidy)
    table_sha256 = hashlib.sha256(table).hexdigest()  # of the bytes written, checked by every read (_read_curated_compact)
    write(layout.curated_table(ref.vintage), table)
    del table
    write(layout.curated_object(ref.vintage, "revisions.parquet"), _parquet_bytes(revisions))
    write(layout.curated_object(ref.vintage, "revisions.json"), _json_bytes(revision_summary))
    pointer = {
        "vintage": ref.vintage,
        "sha256": raw_meta["sha256"],
        "content_sha256": raw_meta.get("content_sha256"),
        "source": raw_meta["source"],
        "fetched_at": raw_meta["fetched_at"],
        "key": layout.curated_table(ref.vintage),
        TABLE_SHA256: table_sha256,
        "latest_year": int(tidy["year"].max()),
        "rows": len(tidy),
        "entities": int(tidy["entity"].nunique()),
        "variables": sorted(tidy["variable"].unique().tolist()),
        "previous_vintage": over,
        "revisions": revision_summary["counts"],
        "renamed": [f"{r['from']} -> {r['to']} ({r['iso_code']})" for r in revision_summary["entities_renamed"]],
        "curated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write(layout.curated_meta(ref.vintage), _json_bytes(pointer))
    # If the pointer write fails it may still have landed (an S3 PUT whose answer was lost):
    # then keep the files it would point at, and take back only meta.json, the "settled"
    # marker, so that a rerun curates the vintage again and rewrites the pointer.
    written[:] = [layout.curated_meta(ref.vintage)]
    # Written last: readers following the pointer only ever see a complete vintage.
    store.write_json(LATEST_KEY, pointer)
    logger.info(
        "curated vintage %s: %s rows, %s entities, latest year %s",
        ref.vintage,
        pointer["rows"],
        pointer["entities"],
        pointer["latest_year"],
    )
    for line in pointer["renamed"]:
        logger.info("renamed: %s", line)
    return pointer


def ingest(settings: Settings, store: ObjectStore, source: str | None = None) -> dict[str, Any]:
    """All ingest steps in sequence (the ``co2cast ingest`` command).

    Returns:
        ``{"status": "unchanged" | "curated", ...}`` with the fetch info and, when curated,
        the new pointer.

    Raises:
        ValidationFailed: the release was quarantined.
    """
    fetched = fetch_source(settings, store, source)
    if not fetched["changed"]:
        return {"status": "unchanged", **fetched}
    snapshot = snapshot_raw(store, fetched)
    # The release is read and parsed once: the table the gates passed is the one curated.
    validated, staging = _gate_snapshot(settings, store, snapshot, None, latest_curated(store))
    # Curated here, so the staging table is let go before the curate step reads the previous
    # vintage and compares the two (a 200 MB release's staging table is some 200 MB).
    tidy = curated_table(staging)
    del staging
    return {"status": "curated", **curate_vintage(settings, store, validated, tidy), "message": fetched["message"]}


# -- pieces ----------------------------------------------------------------------------------


def curated_table(staging: pd.DataFrame) -> pd.DataFrame:
    """The validated staging table as the curated tidy table, newest year flagged provisional.

    Names stay categoricals (alphabetical categories), which keeps a large release small in
    memory and in Parquet (dictionary-encoded); :func:`read_curated` gives them back as
    ``string`` columns.
    """
    check_series_ids(staging["entity"])
    # Sorted on integer codes of alphabetically ordered categories: the order of a string
    # sort, without sorting millions of strings.
    entity, variable = _alphabetical(staging["entity"]), _alphabetical(staging["variable"])
    year = staging["year"].to_numpy(dtype="float64")
    if np.isnan(year).any():  # the raw gate refuses these; never curate a missing year as an integer
        raise sources.PermanentSourceError(f"{int(np.isnan(year).sum()):,} row(s) have no year; give every row its year in the source")
    year = year.astype("int64")
    order = np.lexsort((year, variable.codes, entity.codes))
    year = year[order]
    return pd.DataFrame(
        {
            "entity": entity.take(order),
            "iso_code": _alphabetical(staging["iso_code"]).take(order),
            "year": year,
            "variable": variable.take(order),
            "value": staging["value"].to_numpy(dtype="float64")[order],
            # The newest year of a release is usually revised in the next one.
            "provisional": year == year.max(initial=0),
        },
        columns=CURATED_COLUMNS,
    )


def _alphabetical(column: pd.Series) -> pd.Categorical:
    categorical = pd.Categorical(column)
    return categorical.reorder_categories(sorted(categorical.categories))


def read_release(data: bytes, file_name: str, max_bytes: int) -> pd.DataFrame:
    """A release's staging table after every check before the GX suites (``ingest`` and ``validate``).

    Raises:
        PermanentSourceError: the file cannot be read as a table without guessing
            (:func:`pipeline.sources.read_source`) or an entity name gives no series id of
            its own (:func:`check_series_ids`).
    """
    staging = sources.read_source(data, file_name, max_bytes)
    check_series_ids(staging["entity"])
    return staging


def check_series_ids(entities: pd.Series) -> None:
    """Every entity name must give a series id of its own (``pipeline.series.series_id``).

    The id is the name lowercased with every run of other characters than ``a-z`` and ``0-9``
    made ``_``; it names store keys, lock files and MLflow models, so it must not be empty or
    over-long, and two names must not share one.

    Raises:
        PermanentSourceError: naming the entity (or both entities and the id they share).
    """
    from pipeline.series import series_id

    names = pd.Series(entities.dropna().unique(), dtype=object).astype(str)
    ids = names.map(lambda name: series_id(name, "v").removesuffix(".v"))
    too_long = names[names.str.len() > MAX_ENTITY_NAME]
    if len(too_long):
        name = too_long.iloc[0]
        raise sources.PermanentSourceError(
            f"entity name {sources.clean(name, 40)!r} is {len(name):,} characters long, more than the {MAX_ENTITY_NAME} co2cast "
            "accepts (its series id names files and MLflow models); shorten it in the source"
        )
    unnamed = names[ids == ""]
    if len(unnamed):
        raise sources.PermanentSourceError(
            f"entity name {sources.clean(unnamed.iloc[0], 40)!r} has no letter or digit a series id can be made of (a-z, 0-9); "
            "rename it in the source"
        )
    clashes = ids[ids.duplicated(keep=False)]
    if len(clashes):
        first = clashes.iloc[0]
        pair = names[ids == first].tolist()[:2]
        raise sources.PermanentSourceError(
            f"entities {sources.clean(pair[0], 40)!r} and {sources.clean(pair[1], 40)!r} have the same series id "
            f"{sources.clean(first, 40)!r}; rename one in the source so each series can be named"
        )


def read_tidy_file(path: str | Path) -> pd.DataFrame:
    """A release file read and curated in memory, as ingest would, writing nothing.

    For tests, benchmarks and notebooks that want the curated table without a store.
    """
    path = Path(path)
    return _with_string_names(curated_table(sources.read_source(path.read_bytes(), path.name)))


def history_table(previous: pd.DataFrame, staging: pd.DataFrame) -> pd.DataFrame:
    """One row per (entity, variable) of the previous vintage: how many of its years are gone.

    See :func:`pipeline.plausibility.history_table` (years lost in all and at the end, values moved).
    """
    return plausibility.history_table(previous, staging)


def revisions_report(previous: pd.DataFrame | None, current: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Compare two curated tables.

    An entity renamed between the two (:func:`pipeline.plausibility.find_renames`: the same
    ISO code under a new name) is compared under its new name: its changed rows are listed
    under that name, and it is in ``entities_renamed``, not in ``entities_added`` or
    ``entities_removed``.

    Returns:
        ``(changed rows, summary)``: the rows whose value changed (old, new, delta, relative
        change) and a JSON-able summary with entities added/removed/renamed and counts.
    """
    columns = ["entity", "variable", "year", "old", "new", "delta", "relative"]
    if previous is None:
        summary = {
            "previous_vintage": None,
            "entities_added": sorted(current["entity"].unique().tolist()),
            "entities_removed": [],
            "entities_renamed": [],
            "counts": {"changed_rows": 0, "added_rows": len(current), "removed_rows": 0},
        }
        return pd.DataFrame(columns=columns), summary
    renames = plausibility.find_renames(previous, current)
    new_name = {r.old: r.new for r in renames}
    # Rows matched on integer keys of (entity, variable, year), as an outer merge of the two
    # tables on those columns would pair them, without the merge's copies of both.
    keys = plausibility.row_keys(previous, current, new_name)
    left, right = plausibility.matching_rows(keys.old, keys.new)
    removed_rows = len(previous) - _count_distinct(left, len(previous))
    added_rows = len(current) - _count_distinct(right, len(current))
    old_values, new_values = previous["value"].to_numpy(dtype="float64"), current["value"].to_numpy(dtype="float64")
    close = np.ones(len(left), dtype=bool)
    for start in range(0, len(left), _CLOSE_CHUNK):  # in chunks: isclose makes several temporaries of its inputs' size
        stop = start + _CLOSE_CHUNK
        close[start:stop] = np.isclose(old_values[left[start:stop]], new_values[right[start:stop]], rtol=1e-9, atol=1e-12)
    changed = np.flatnonzero(~close)
    left, right = left[changed], right[changed]
    del close, changed
    entity, variable = keys.codes(keys.series(keys.old[left]))
    old = pd.Series(old_values[left])
    new = pd.Series(new_values[right])
    report = pd.DataFrame(
        {
            "entity": pd.Categorical.from_codes(entity, categories=keys.entities),
            "variable": pd.Categorical.from_codes(variable, categories=keys.variables),
            "year": previous["year"].iloc[left].reset_index(drop=True).astype("int64"),
            "old": old,
            "new": new,
            "delta": new - old,
            "relative": (new - old) / old.abs().replace(0, np.nan),
        }
    )
    previous_entity = pd.Categorical(previous["entity"]).unique()
    prev_entities = {new_name.get(name, name) for name in previous_entity}
    cur_entities = set(pd.Categorical(current["entity"]).unique())
    summary = {
        "entities_added": sorted(cur_entities - prev_entities),
        "entities_removed": sorted(prev_entities - cur_entities),
        "entities_renamed": [{"from": r.old, "to": r.new, "iso_code": r.iso_code} for r in renames],
        "counts": {"changed_rows": len(report), "added_rows": added_rows, "removed_rows": removed_rows},
        "largest_changes": json.loads(
            report.reindex(report["delta"].abs().sort_values(ascending=False).index).head(10).to_json(orient="records")
        ),
    }
    return report, summary


#: Pairs of rows compared at a time by :func:`revisions_report`.
_CLOSE_CHUNK = 1_000_000


def _count_distinct(rows: np.ndarray, size: int) -> int:
    """How many of ``size`` rows ``rows`` names (each counted once)."""
    seen = np.zeros(size, dtype=bool)
    seen[rows] = True
    return int(seen.sum())


def raw_gate_parameters(
    staging: pd.DataFrame, today: dt.date, settings: Settings, previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Values for the ``emissions_raw`` suite's parameters.

    A long (OWID) release must carry the variables of the default series; a wide (Gapminder)
    file carries its one variable.
    """
    is_long = (staging["variable"] != sources.WIDE_VARIABLE).any()
    return {
        "current_year": today.year,
        "previous_newest_year": previous["latest_year"] if previous else 1750,
        "required_variables": list(sources.REQUIRED_LONG_VARIABLES) if is_long else [sources.WIDE_VARIABLE],
        "max_per_capita": settings.max_per_capita,
        "min_newest_year_share": plausibility.MIN_NEWEST_YEAR_SHARE,
    }


def plausibility_parameters(settings: Settings) -> dict[str, Any]:
    """Values for the ``emissions_plausibility`` suite's parameters, from the settings."""
    return {
        "max_year_on_year_factor": settings.max_year_on_year_factor,
        "max_history_factor": settings.max_history_factor,
        "max_world_share": 1.0 + settings.world_tolerance,
    }


def allowed_breaks(settings: Settings) -> list[dict[str, Any]]:
    """The allow-list of real breaks: ``CO2CAST_ALLOWED_BREAKS``, else the repository's.

    Raises:
        ConfigError: the configured file is missing or not an allow-list (a typo in the setting
            is one line naming it, not an unexpected error Airflow retries).
    """
    if settings.allowed_breaks is None:
        return plausibility.load_allowed_breaks()
    shown = str(settings.allowed_breaks)[:160]
    fix = "point it at a JSON file like expectations/allowed_breaks.json, or unset it for that one"
    try:
        return plausibility.load_allowed_breaks(settings.allowed_breaks)
    except FileNotFoundError:
        raise ConfigError(f"CO2CAST_ALLOWED_BREAKS={shown!r}: no such file; {fix}") from None
    except OSError as error:
        raise ConfigError(f"CO2CAST_ALLOWED_BREAKS={shown!r}: cannot read it ({error.strerror or error}); {fix}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # not JSON, no "breaks" list, an entry that is not an object
        reason = str(error).splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"CO2CAST_ALLOWED_BREAKS={shown!r} is not an allow-list of breaks ({type(error).__name__}: {reason}); {fix}"
        ) from None


def emissions_raw_gates(staging: pd.DataFrame, parameters: dict[str, Any], previous: Pointer = None) -> list[GateResult]:
    """The ``emissions_raw`` suite on a release, in its three parts.

    The release as a whole (``scope = "release"``, on :func:`pipeline.plausibility.release_table`),
    its newest year (``scope = "newest"``, on :func:`pipeline.plausibility.newest_year_table`
    against ``previous``'s ``latest_year``) and row by row on chunks of whole entities.
    """
    release = plausibility.release_table(staging)
    gates = [
        run_suite("emissions_raw", release, parameters, scope="release"),
        run_suite(
            "emissions_raw",
            plausibility.newest_year_table(release, previous["latest_year"] if previous else None),
            parameters,
            scope="newest",
        ),
    ]
    del release  # one row per entity and variable, let go before the row-wise pass over the release's chunks
    gates.append(run_suite_chunked("emissions_raw", plausibility.entity_chunks(staging), parameters, scope="rows"))
    return gates


def run_raw_gates(
    settings: Settings,
    staging: pd.DataFrame,
    today: dt.date,
    previous: dict[str, Any] | None = None,
    previous_table: pd.DataFrame | None = None,
) -> list[GateResult]:
    """Every gate on a release: as a whole, row by row, plausibility, the World totals, and against the previous vintage.

    A large release is gated in chunks of whole entities, so memory stays bounded.

    Args:
        settings: tolerances (``CO2CAST_*``).
        staging: the release's staging table.
        today: the date whose year is the latest allowed.
        previous: ``curated/latest.json`` before this release, if any.
        previous_table: that vintage's curated table (for ``emissions_history``).

    Returns:
        One :class:`GateResult` per suite run; all must succeed.
    """
    breaks = allowed_breaks(settings)
    gates = emissions_raw_gates(staging, raw_gate_parameters(staging, today, settings, previous), previous)
    world = plausibility.world_values(staging)
    tables = (
        plausibility.plausibility_table(chunk, settings.year_on_year_floor, breaks, world) for chunk in plausibility.entity_chunks(staging)
    )
    gates.append(run_suite_chunked("emissions_plausibility", tables, plausibility_parameters(settings), scope="rows"))
    world_table = plausibility.world_table(staging, settings.year_on_year_floor, breaks, world)
    gates.append(run_suite("emissions_plausibility", world_table, plausibility_parameters(settings), scope="world"))
    if previous_table is not None:
        history = plausibility.history_table(previous_table, staging, breaks, settings.year_on_year_floor)
        parameters = {
            "max_lost_years": settings.max_lost_years,
            "max_tail_lost_years": settings.max_tail_lost_years,
            "max_revision_factor": settings.max_year_on_year_factor,
        }
        gates.append(run_suite("emissions_history", history, parameters))
    return gates


def _run_gates(
    settings: Settings, store: ObjectStore, staging: pd.DataFrame, today: dt.date, previous: Pointer
) -> tuple[list[GateResult], str | None]:
    """The raw gates against the vintage ``curated/latest.json`` (``previous``, as read) shows, and that vintage's id."""
    previous_table = _read_curated_compact(store, previous["vintage"]) if previous is not None else None
    return run_raw_gates(settings, staging, today, previous, previous_table), previous["vintage"] if previous is not None else None


def _quarantine(store: ObjectStore, ref: VintageRef, data: bytes, gates: list[GateResult], reason: str, latest: Pointer) -> None:
    store.write_bytes(layout.quarantine_object(ref.vintage, ref.file_name), data)
    store.write_json(
        layout.quarantine_object(ref.vintage, "gx_result.json"),
        {g.suite: g.result for g in gates}
        if gates
        else {"error": reason, "note": "the file could not be read as a table, so no GX suite ran"},
    )
    report = "\n".join(
        [
            f"# Vintage {ref.vintage} rejected",
            "",
            f"- file: {ref.file_name}",
            f"- quarantined at: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
            f"- curated/latest.json still points at: {latest['vintage'] if latest else 'nothing (no vintage curated yet)'}",
            "",
            "## Why",
            "",
            "```",
            reason,
            "```",
            "",
            "Nothing from this release was curated or published. Fix the source (or set",
            "CO2CAST_SOURCE to a corrected file) and run co2_ingest again.",
            "",
        ]
    )
    # report.md last: its presence marks the vintage as settled (see vintage_status).
    store.write_bytes(layout.quarantine_object(ref.vintage, "report.md"), report.encode())


def _failure_message(store: ObjectStore, ref: VintageRef, reason: str) -> str:
    """One line: which vintage, where its report is, and why (the report has the details)."""
    where = store.uri(layout.quarantine_prefix(ref.vintage))
    return f"vintage {ref.vintage} ({sources.clean(ref.file_name, 80)}) rejected and quarantined at {where} (see report.md): {reason}"


def _content_of(store: ObjectStore, pointer: dict[str, Any], settings: Settings) -> str | None:
    """The normalised content hash of a curated vintage (older pointers lack it: hash the raw bytes)."""
    if pointer.get("content_sha256"):
        return str(pointer["content_sha256"])
    meta = store.read_json_or_none(layout.raw_meta(pointer["vintage"]))
    if not meta:
        return None
    try:
        return sources.content_sha256(store.read_bytes(layout.raw_object(pointer["vintage"], meta["file_name"])), settings.max_source_bytes)
    except KeyError:
        return None


def _is_store_failure(error: BaseException) -> bool:
    """A failure of the store itself (disk, permissions, S3 endpoint), not of our code."""
    return isinstance(error, (OSError, StoreError, StoreUnavailable)) or type(error).__module__.split(".")[0] in ("botocore", "boto3")


def _remove_quietly(store: ObjectStore, keys: list[str]) -> None:
    for key in keys:
        try:
            store.delete(key)
        except Exception:  # best effort: the original failure is what the user must see
            logger.warning("could not remove %s after a failed curate", key)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True, default=str).encode() + b"\n"


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()
