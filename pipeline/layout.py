"""The object store's key layout: every key co2cast reads or writes is built here, once.

Keys are ``/``-separated and identical on the local store and on S3::

    raw/<vintage>/<file name>, raw/<vintage>/meta.json
    quarantine/<vintage>/<file name>, gx_result.json, report.md
    curated/<vintage>/emissions.parquet, revisions.parquet, revisions.json, gx_result.json, meta.json
    curated/latest.json
    forecasts/<series_id>/asof=<year>/<run_key>/forecast.csv, forecast.parquet, <extras>, manifest.json
    forecasts/<series_id>/latest.json
    history/<series_id>.json  (alias history: champion decisions and rollbacks)
    intents/rollback/<series_id>.json  (a @champion rollback under way; if killed: finished by the next rollback or forecast run)
    locks/<run_key>.json, locks/series/<series_id>.json  (one trainer per run key; one pointer writer per series)

A leaf module: plain string functions, no I/O.
"""

from __future__ import annotations

RAW = "raw/"
QUARANTINE = "quarantine/"
CURATED = "curated/"
FORECASTS = "forecasts/"
SCORECARDS = "scorecards/"
HISTORY = "history/"
LOCKS = "locks/"
INTENTS = "intents/"

#: The pointer to the last good vintage, written last by a curation.
CURATED_LATEST = "curated/latest.json"
#: The fields readers rely on in ``curated/latest.json`` and in each vintage's curated
#: ``meta.json`` (the same record), as a :meth:`~pipeline.store.ObjectStore.read_json` shape; ``table_sha256``,
#: the sha256 of the vintage's ``emissions.parquet`` as curated, is absent in vintages curated before co2cast recorded it.
CURATED_POINTER = {"vintage": str, "latest_year": int, "table_sha256?": str}
#: The fields readers rely on in a series' ``latest.json`` (:func:`forecast_latest`): the manifest
#: served, and (absent in pointers written before co2cast kept them) when that forecast was
#: published, which forecasts a rollback took out of service, and the manifest's sha256.
FORECAST_POINTER = {"manifest": str, "as_of_year": int, "published_at?": str, "rolled_back?": list, "manifest_sha256?": str}
#: The fields readers rely on in a published forecast's ``manifest.json`` (:func:`forecast_manifest`),
#: as a read shape: what a manifest damaged or edited by hand no longer holds is named, not a crash.
FORECAST_MANIFEST = {"key": str, "series_id": str, "run_key": str, "as_of_year": int, "files": list}
#: A series' alias history (:func:`alias_history`): a list of records, each a JSON object.
ALIAS_HISTORY = list[dict]


def raw_object(vintage: str, file_name: str) -> str:
    """The source bytes of a vintage, as fetched (content-addressed by the vintage id)."""
    return f"{RAW}{vintage}/{file_name}"


def raw_meta(vintage: str) -> str:
    """Source, fetch time, size and sha256 of a vintage's bytes."""
    return f"{RAW}{vintage}/meta.json"


def quarantine_object(vintage: str, name: str) -> str:
    """A file of a rejected vintage: the input, ``gx_result.json`` or ``report.md``."""
    return f"{QUARANTINE}{vintage}/{name}"


def quarantine_prefix(vintage: str) -> str:
    """The folder of a rejected vintage, ending in ``/``."""
    return f"{QUARANTINE}{vintage}/"


def curated_object(vintage: str, name: str) -> str:
    """A file of a curated vintage: ``emissions.parquet``, ``revisions.*``, ``gx_result.json``, ``meta.json``."""
    return f"{CURATED}{vintage}/{name}"


def curated_table(vintage: str) -> str:
    """The curated tidy table of a vintage."""
    return curated_object(vintage, "emissions.parquet")


def curated_meta(vintage: str) -> str:
    """A curated vintage's pointer; its presence marks the vintage as curated."""
    return curated_object(vintage, "meta.json")


def curated_gx_result(vintage: str) -> str:
    """The GX results that let a vintage through."""
    return curated_object(vintage, "gx_result.json")


def forecast_prefix(series_id: str, as_of_year: int, run_key: str) -> str:
    """The folder of one published forecast (no trailing ``/``)."""
    return f"{FORECASTS}{series_id}/asof={int(as_of_year)}/{run_key}"


def forecast_object(series_id: str, as_of_year: int, run_key: str, name: str) -> str:
    """A file of one published forecast."""
    return f"{forecast_prefix(series_id, as_of_year, run_key)}/{name}"


def forecast_manifest(series_id: str, as_of_year: int, run_key: str) -> str:
    """The manifest of one published forecast, written after its files."""
    return forecast_object(series_id, as_of_year, run_key, "manifest.json")


def forecast_latest(series_id: str) -> str:
    """The pointer to a series' newest manifest, written last."""
    return f"{FORECASTS}{series_id}/latest.json"


def run_lock(run_key: str) -> str:
    """The lock object of a run key while one process trains it (see :mod:`pipeline.locks`)."""
    return f"{LOCKS}{run_key}.json"


#: The lock object held while a vintage is curated and ``curated/latest.json`` moved to it.
CURATE_LOCK = f"{LOCKS}curate.json"


def lock_breaker(lock_key: str, fingerprint: str) -> str:
    """The token a waiter creates to be the one that breaks one abandoned lock (see :mod:`pipeline.locks`)."""
    return f"{lock_key}.break-{fingerprint}"


def series_lock(series_id: str, scope: str = "pointer") -> str:
    """The lock object held while a series' ``latest.json`` and alias history (``pointer``) or
    its registry aliases (``registry``) are read and rewritten."""
    suffix = "" if scope == "pointer" else f".{scope}"
    return f"{LOCKS}series/{series_id}{suffix}.json"


def scorecard(series_id: str) -> str:
    """The track record of a series' published forecasts against later actuals."""
    return f"{SCORECARDS}{series_id}.parquet"


def alias_history(series_id: str) -> str:
    """The series' alias history: one record per champion decision and rollback (a JSON list)."""
    return f"{HISTORY}{series_id}.json"


#: The prefix of every rollback intent (:func:`rollback_intent`).
ROLLBACK_INTENTS = f"{INTENTS}rollback/"


def rollback_intent(series_id: str) -> str:
    """A ``@champion`` rollback under way (written before the alias moves, deleted once it is recorded).

    Left by a rollback killed part way, it is finished by the series' next ``co2cast rollback`` or
    forecast run, whichever comes first (``tasks._finish_rollback``).
    """
    return f"{ROLLBACK_INTENTS}{series_id}.json"


def rollback_intent_series(keys: list[str]) -> list[str]:
    """The series ids that have a rollback intent among store keys, sorted."""
    names = (key[len(ROLLBACK_INTENTS) :] for key in keys if key.startswith(ROLLBACK_INTENTS))
    return sorted({name.removesuffix(".json") for name in names if name.endswith(".json") and "/" not in name})


def series_forecasts(series_id: str, as_of_year: int | None = None) -> str:
    """The prefix of every forecast of a series (of one as-of year when given), ending in ``/``."""
    return f"{FORECASTS}{series_id}/" + (f"asof={int(as_of_year)}/" if as_of_year is not None else "")


def published_as_of_years(series_id: str, keys: list[str]) -> list[int]:
    """The as-of years with a published manifest of a series among store keys, sorted."""
    prefix = series_forecasts(series_id)
    parts = (key[len(prefix) :].split("/") for key in keys if key.startswith(prefix) and key.endswith("/manifest.json"))
    return sorted({int(part[0].removeprefix("asof=")) for part in parts if len(part) == 3 and part[0].removeprefix("asof=").isdigit()})


def vintages_under(prefix: str, keys: list[str]) -> list[str]:
    """The vintage ids among keys under ``raw/``, ``quarantine/`` or ``curated/``, sorted."""
    return sorted({key[len(prefix) :].split("/")[0] for key in keys if key.startswith(prefix) and key.count("/") >= 2})
