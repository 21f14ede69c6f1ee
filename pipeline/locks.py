"""One trainer per run key, one pointer writer per series: lock objects created with the store's conditional write.

A run key trains once. Before training, :func:`run_key_lock` creates ``locks/<run_key>.json``
with a conditional write (S3 ``IfNoneMatch='*'``, an ``O_EXCL`` file locally), which exactly one
of several concurrent callers wins. The others wait for the lock to go away and then find the
winner's complete MLflow run and reuse it. A lock whose owner died is broken. An owner on this
machine is asked directly: its lock is broken at once when the process is gone (or a zombie,
or its pid now names a process started later), and never while it runs, however old the lock;
where a start time is unknown (a lock from before they were recorded, no ``/proc``), the pid
cannot be told from a reused one and the stale timeout applies. An owner on another machine
cannot be asked: its lock is broken when older than the stale timeout
(``CO2CAST_LOCK_STALE_SECONDS`` for a run key's and the curate lock). Of several waiters that
find one abandoned lock, only one breaks it (:func:`_break`).

:func:`series_lock` is the same mechanism for a moment: held while a series' ``latest.json``
or alias history is read and rewritten, so two runs of one series cannot interleave there.
Its ``registry`` scope is held while a run reads and moves the series' model aliases (the
registry offers no compare-and-set on an alias, and two first writes of one alias collide).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline import layout
from pipeline.errors import TransientError
from pipeline.store import ObjectStore

logger = logging.getLogger(__name__)

#: A lock older than this is considered abandoned (its owner died on another machine).
DEFAULT_STALE_SECONDS = 3600.0
#: How long a second caller waits for the first to finish before giving up (transient: retried).
DEFAULT_WAIT_SECONDS = 3600.0
POLL_SECONDS = 2.0


class RunKeyBusy(TransientError):
    """Another process is training this run key and did not finish in time; a retry will reuse its result."""


class SeriesBusy(TransientError):
    """Another process held a series' pointer lock for too long; a retry will find it free."""


class CurateBusy(TransientError):
    """Another ingest was curating a vintage for longer than the wait; a retry will find it done."""


def owner_id() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` from field 3 (the state) on, or ``[]`` where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat.rpartition(")")[2].split()  # the name in parentheses may hold spaces


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat`` field 22), or ``None`` where unknown."""
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else None


def _zombie(pid: int) -> bool:
    """Whether process ``pid`` has exited and is waiting to be reaped (state ``Z``)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] == "Z"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


#: The fields a lock object holds (and its reader relies on), as a :meth:`~pipeline.store.ObjectStore.read_json` shape.
LOCK_RECORD = {"owner": str, "created": (int, float)}


def owner_is_dead(lock: dict[str, Any], now: float, stale_after: float) -> bool:
    """Whether a lock's owner is gone.

    An owner on this machine is gone when its process is (no such pid, or a zombie: exited, not
    yet reaped), or when its pid names a process started after the lock's ``started`` (a pid
    reused); while it runs, its lock is never taken for abandoned, however old. Where either start
    time is unknown (a lock written before ``started`` was recorded, no ``/proc`` to read), a
    running pid cannot be told from a reused one, and the lock is taken for abandoned when older
    than ``stale_after`` seconds, as an owner on another machine's is.

    ``lock`` has the :data:`LOCK_RECORD` fields (its reader checks them).
    """
    host, _, pid = lock["owner"].rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        if not _pid_alive(int(pid)) or _zombie(int(pid)):
            return True
        started, now_started = lock.get("started"), _process_start(int(pid))
        if started is not None and now_started is not None:
            return str(started) != now_started
    return now - float(lock["created"]) > stale_after


@contextmanager
def run_key_lock(
    store: ObjectStore,
    run_key: str,
    *,
    stale_after: float = DEFAULT_STALE_SECONDS,
    wait: float = DEFAULT_WAIT_SECONDS,
    on_wait: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[bool]:
    """Hold the lock of a run key while the body runs.

    Yields:
        ``True`` when this caller took the lock at once; ``False`` when it had to wait for
        another owner first (the caller should then look for that owner's result before training).

    Raises:
        RunKeyBusy: another live owner held the lock for longer than ``wait`` seconds.
    """

    def busy(owner: Any) -> TransientError:
        return RunKeyBusy(f"run key {run_key} is being trained by {owner}; retry later to reuse its result")

    with _exclusive(store, layout.run_lock(run_key), f"run key {run_key}", busy, stale_after, wait, on_wait) as first:
        yield first


@contextmanager
def curate_lock(store: ObjectStore, *, stale_after: float, wait: float = 900.0) -> Iterator[bool]:
    """Hold the store's curate lock while one ingest checks, writes and publishes a vintage.

    Two ingests of different releases gate each against the vintage ``curated/latest.json``
    shows; the lock orders their curate steps, so the second finds the pointer moved and is
    refused (:func:`pipeline.ingest.curate_vintage`) instead of landing on top of a vintage its
    gates never saw.

    Raises:
        CurateBusy: another live owner held it for longer than ``wait`` seconds.
    """

    def busy(owner: Any) -> TransientError:
        return CurateBusy(f"another ingest ({owner}) is curating a vintage; retry later")

    with _exclusive(store, layout.CURATE_LOCK, "curate", busy, stale_after, wait, None) as first:
        yield first


@contextmanager
def series_lock(
    store: ObjectStore, series_id: str, *, scope: str = "pointer", stale_after: float | None = None, wait: float = 300.0
) -> Iterator[bool]:
    """Hold a series' short lock while its ``latest.json`` or alias history is read and rewritten.

    Two runs of one series (two as-of years at once) must not both read the old pointer and
    then both write: the later write could move it backwards. The ``pointer`` lock is held for a
    read and a write of store objects, so an owner on another machine whose lock is older than
    ``stale_after`` seconds (default 120) is gone. ``scope="registry"`` is a second lock of the
    series, held while its model aliases are decided and moved, which takes MLflow calls that
    may each be retried for minutes (:data:`pipeline.tracking.HTTP_RETRIES`); it may be held
    around code that takes the ``pointer`` lock, and by default counts as abandoned only after
    :data:`DEFAULT_STALE_SECONDS`, twice the default task timeout. An owner on this machine is
    never taken for gone while it runs (:func:`owner_is_dead`).

    Raises:
        SeriesBusy: another live owner held it for longer than ``wait`` seconds.
    """

    def busy(owner: Any) -> TransientError:
        what = "forecast pointer is" if scope == "pointer" else f"{scope} aliases are"
        return SeriesBusy(f"{series_id}: its {what} being moved by {owner}; retry later")

    if stale_after is None:
        stale_after = 120.0 if scope == "pointer" else DEFAULT_STALE_SECONDS
    with _exclusive(store, layout.series_lock(series_id, scope), f"{series_id} ({scope})", busy, stale_after, wait, None) as first:
        yield first


def fence(store: ObjectStore, series_id: str, scope: str = "pointer") -> None:
    """Check, just before a write the series' lock guards, that the lock this thread holds is still its own.

    An owner on another host is taken for gone when its lock is older than the stale time (two
    minutes for the pointer), and one slow S3 call may take longer (botocore's retries of a call
    that times out: :data:`pipeline.store.S3_READ_TIMEOUT` each). A holder stuck that long may find
    its lock broken and taken by a waiter: it must not write then, or two runs write ``latest.json``
    at once, and the older as-of year's may land last.

    Raises:
        SeriesBusy: the lock is no longer this holder's (transient: a retry reads the pointer anew).
    """
    key = layout.series_lock(series_id, scope)
    record = _held_records().get(store.uri(key))
    if record is None:
        raise RuntimeError(f"{series_id}: a write guarded by its {scope} lock without holding it")
    current = store.read_json_or_none(key, LOCK_RECORD)
    if not _same_record(current, record):
        holder = current["owner"] if current is not None else "nobody"
        raise SeriesBusy(
            f"{series_id}: its {scope} lock was taken for abandoned while this run held it (now held by {holder}): "
            "nothing was written under it; retry later"
        )


#: The lock records each thread holds, by the lock's URI (:func:`fence`).
_held = threading.local()


def _held_records() -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] | None = getattr(_held, "records", None)
    if records is None:
        records = _held.records = {}
    return records


#: A breaker's token older than this, from another machine, is a breaker that died mid-break.
BREAKER_STALE_SECONDS = 60.0


def _same_record(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    return a is not None and a["owner"] == b["owner"] and a["created"] == b["created"] and a.get("token") == b.get("token")


def _record(**extra: Any) -> dict[str, Any]:
    """A new lock (or breaker's token) record of this process, with a ``token`` of its own to know it by.

    The token tells this very attempt's record from any other: a conditional write whose first
    attempt was stored but whose answer was lost (a 503, a read timeout) is resent by botocore,
    refused with 412 as the key now exists, and reported as not created; the record read back
    then is this attempt's own (:func:`_create`).
    """
    return {"owner": owner_id(), "created": time.time(), "started": _process_start(os.getpid()), "token": secrets.token_hex(8), **extra}


def _create(store: ObjectStore, key: str, record: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    """Create ``key`` holding ``record``: whether this call holds it, and the record found there when not (``None``: none readable).

    A refused create whose key holds exactly ``record`` was created by this call all the same
    (an attempt stored, its answer lost and the write resent: see :func:`_record`). A create that
    fails (every attempt's answer lost: the store unavailable) may have been stored all the same:
    the record is removed if it is there, once, before the failure is raised, so a retry (here or
    on another host) does not wait for a lock nobody holds until it is stale.
    """
    try:
        created = store.create_exclusive(key, json.dumps(record).encode())
    except TransientError:
        with contextlib.suppress(Exception):  # the store is failing: the stale time still frees what this leaves
            if _same_record(store.read_json_or_none(key, LOCK_RECORD), record):
                store.delete(key)
        raise
    if created:
        return True, None
    current = store.read_json_or_none(key, LOCK_RECORD)
    if _same_record(current, record):
        return True, None
    return False, current


def _break(store: ObjectStore, key: str, abandoned: dict[str, Any], what: str) -> bool:
    """Delete the abandoned lock record ``abandoned`` at ``key``, unless another waiter does; whether this call broke something.

    Waiters that read the same abandoned lock must not all delete it: a second delete would
    remove the lock the first breaker has taken meanwhile, and two owners would run the body
    at once. The breakers of one abandoned record take turns on a token named after it (the
    same conditional write as the lock), and the holder deletes the lock only if it still is
    that record. A lock whose owner is gone changes only by being broken, and only the token's
    holder breaks it, so nothing can replace it between that read and the delete. A waiter that
    does not get the token returns and reads the lock again.

    Returns ``True`` when it deleted the lock, or the token of a breaker that died mid-break;
    ``False`` when a live breaker holds the token (after a short pause) or the lock was no longer
    that record: the waiter's deadline applies, as a token's holder may be stuck for good.
    """
    fingerprint = hashlib.sha256(f"{abandoned['owner']}|{abandoned['created']!r}".encode()).hexdigest()[:16]
    token = layout.lock_breaker(key, fingerprint)
    taken, holder = _create(store, token, _record())
    if not taken:
        if holder is not None and owner_is_dead(holder, time.time(), BREAKER_STALE_SECONDS):
            store.delete(token)  # a breaker that died between its token and its delete
            return True
        time.sleep(POLL_SECONDS / 20)  # the holder is breaking it: read the lock again shortly
        return False
    try:
        if _same_record(store.read_json_or_none(key, LOCK_RECORD), abandoned):
            logger.warning("breaking the lock of %s held by %s (its owner is gone)", what, abandoned["owner"])
            store.delete(key)
            return True
        return False
    finally:
        store.delete(token)


@contextmanager
def _exclusive(
    store: ObjectStore,
    key: str,
    what: str,
    busy: Callable[[Any], TransientError],
    stale_after: float,
    wait: float,
    on_wait: Callable[[dict[str, Any]], None] | None,
) -> Iterator[bool]:
    """Hold the lock object ``key`` (created with the store's conditional write) while the body runs."""
    waited = False
    deadline = time.monotonic() + wait
    while True:
        record = _record(what=what)
        taken, current = _create(store, key, record)
        if taken:
            break
        if current is None:  # released between our attempt and the read, or not readable yet (a read that lags the write)
            if time.monotonic() > deadline:
                raise busy("an owner whose lock could not be read")
            time.sleep(POLL_SECONDS / 20)  # not a tight loop of PUTs and GETs while a lagging store shows nothing
            continue
        if owner_is_dead(current, time.time(), stale_after):
            if _break(store, key, current, what) or time.monotonic() <= deadline:
                continue
            raise busy(f"{current['owner']}, which is gone (another waiter is breaking its lock)")
        if time.monotonic() > deadline:
            raise busy(current["owner"])
        if not waited and on_wait is not None:
            on_wait(current)
        waited = True
        time.sleep(POLL_SECONDS if wait > 600 else POLL_SECONDS / 20)  # a series' short locks are polled often
    held = _held_records()
    held[store.uri(key)] = record
    try:
        yield not waited
    finally:
        held.pop(store.uri(key), None)
        # Only our own lock: if ours was broken as stale meanwhile, the new owner's stays.
        if _same_record(store.read_json_or_none(key, LOCK_RECORD), record):
            store.delete(key)
