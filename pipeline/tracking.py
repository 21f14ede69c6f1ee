"""MLflow: one run per (series, run key), nested runs per candidate, a registry per series.

Models are logged with the package's own loader (:mod:`pipeline.pyfunc_loader`, see
:mod:`pipeline.artifacts`): the artefact is the forecaster's JSON + npz files and no code, every
registered version carries the sha256 of each file as tag ``co2cast.artifact_sha256``, and every
load goes through :func:`pipeline.artifacts.load_verified`, which refuses a changed, missing or
extra file. Loading one unpickles nothing. The run's own files that leave MLflow (``summary.json``,
which a rerun trusts, and the diagnostics and candidates' forecasts published beside a forecast)
carry their sha256 as run tags and are read through :func:`read_verified`. Runs and model versions
carry the run key as a tag, so a rerun of the same key finds them and creates nothing new.
MLflow keeps no alias history: every alias move leaves one short tag on the version it moves
to (previous version and reason; :func:`alias_tag`), the task layer keeps the full record
(``history/<series_id>.json``), and :func:`rollback_alias` moves an alias back.

An adapter: :func:`log_series_result` records what the pure core (:mod:`pipeline.core`)
returned, :func:`register_selection` registers what its selection policy chose, and
:func:`transient_errors` turns a busy or unreachable tracking store into a
:class:`~pipeline.errors.TransientError` so Airflow retries it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pipeline.config import ConfigError, Settings
from pipeline.errors import Co2castError, PermanentError, SetupError, TransientError
from pipeline.maths import json_default
from pipeline.redact import redact_url, redact_urls_in

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.core import ForecastSpec, SeriesResult
    from pipeline.models.base import Forecaster

EXPERIMENT = "co2cast"
#: Marks co2cast's experiment, so it is found again under another name (renamed in the MLflow UI).
EXPERIMENT_TAG = "co2cast.experiment"
RUN_KEY_TAG = "co2cast.run_key"
FAMILY_TAG = "co2cast.family"
#: Set last on a parent run: its presence means the run is complete and can be reused.
COMPLETE_TAG = "co2cast.complete"
SUMMARY_ARTIFACT = "summary.json"
DIAGNOSTICS_ARTIFACT = "diagnostics/diagnostics.json"
#: Every fitted candidate's forecast to the horizon (:func:`pipeline.core.candidate_forecasts`), in the parent run.
CANDIDATES_ARTIFACT = "forecasts/candidates.parquet"
#: Prefix of the run tags holding the sha256 of the artefacts that leave MLflow: the summary a
#: rerun trusts, the diagnostics and candidates' forecasts that are published (:func:`read_verified`).
ARTIFACT_SHA_TAG = "co2cast.sha256."

#: Fragments of errors that a retry may cure: a busy SQLite file, an unreachable or overloaded server.
_TRANSIENT_MARKERS = (
    "database is locked",
    "Max retries exceeded",
    "Connection refused",
    "Connection reset",
    "timed out",
    " 502",
    " 503",
    " 504",
)


class RegistryError(PermanentError, ValueError):
    """The model registry refuses an operation a person asked for (e.g. a rollback with no history)."""


class RegistryMismatch(SetupError):
    """The configured registry is not the one the store's forecasts were decided in."""


class ExperimentDeleted(SetupError):
    """co2cast's MLflow experiment was deleted (e.g. in the MLflow UI); a person restores it."""


class ExperimentRenamed(SetupError):
    """co2cast's MLflow experiment was renamed (e.g. in the MLflow UI); a person renames it back."""


class TrackingMisconfigured(SetupError):
    """The tracking store MLFLOW_TRACKING_URI names cannot be used (an unwritable SQLite folder, no MLflow server, no driver)."""


class TrackingUnavailable(TransientError):
    """MLflow's store could not be reached or was busy; a retry may succeed."""


@contextmanager
def transient_errors() -> Iterator[None]:
    """Re-raise MLflow failures that a retry may cure as :class:`TrackingUnavailable`.

    Everything else passes through unchanged: a bug must still show its traceback.
    """
    try:
        yield
    except Co2castError:
        raise
    except Exception as error:
        if is_transient(error):
            text = redact_urls_in(str(error)).strip()  # MLflow's words name the URL, with a password written in it
            first = text.splitlines()[0][:200] if text else type(error).__name__
            if "timed out" in text and "timed out" not in first:  # a hung server: MLflow's words say so past the cut
                first = f"timed out: {first}"
            raise TrackingUnavailable(f"MLflow tracking store unavailable ({first}); retry later") from error
        raise


def is_transient(error: BaseException) -> bool:
    """Whether a failure is one a retry may cure: a busy SQLite file, an unreachable or overloaded server."""
    if isinstance(error, Co2castError):
        return error.transient
    return any(marker in str(error) for marker in _TRANSIENT_MARKERS)


#: Retries of a request to a tracking server (MLflow's backoff: 2, 4, 8 and 16 s), unless MLFLOW_HTTP_REQUEST_MAX_RETRIES is set.
HTTP_RETRIES = 4

#: Seconds a request to a tracking server waits for its connection and for each read of the
#: answer (MLflow's default: 120), unless MLFLOW_HTTP_REQUEST_TIMEOUT is set.
HTTP_TIMEOUT = 30

#: Seconds the first request to a tracking server may take (connect and answer) before it counts as down.
PROBE_TIMEOUT = 10.0


def probe_server(uri: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Make sure an MLflow tracking server answers before the first MLflow call.

    MLflow retries a refused connection with backoff for about four minutes, logging every
    retry; a server that is down or a mistyped address is one line at once instead. Any HTTP
    answer to ``/health`` (even 401 or 404) means a server is there. A TLS failure is left to
    MLflow, which has its own certificate settings.

    Raises:
        TrackingUnavailable: no connection, or no answer within ``timeout`` seconds (Airflow retries).
        ConfigError: the URI is not a usable http(s) address.
    """
    where = redact_url(uri, origin_only=True)  # scheme, host and port: never a user, password or query
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 (ValueError for a port that is not a number)
    except ValueError:  # urllib's words would quote the port, which may be the start of a password
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={where} has no usable address (its port is not a number from 0 to 65535, or a password holds "
            "a raw '/', '?' or '#': percent-encode it); set an address like http://localhost:5000"
        ) from None
    if not parts.hostname:
        raise ConfigError(f"MLFLOW_TRACKING_URI={where!r} names no host; set an address like http://localhost:5000")
    # Without the user and password: urllib takes 'user:password@host' for the host name ('Name or service not
    # known'); any answer, 401 included, tells a server is there.
    health = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(health, timeout=timeout):  # noqa: S310 (only http(s) is probed)
            return
    except urllib.error.HTTPError:
        return  # the server answered
    except urllib.error.URLError as error:
        if isinstance(error.reason, ssl.SSLError):
            return
        reason: object = error.reason
    except (OSError, ValueError) as error:  # a read that timed out, a connection dropped mid-answer
        reason = error
    raise TrackingUnavailable(f"MLflow tracking server {where} is unreachable ({reason}); start it, or fix MLFLOW_TRACKING_URI")


#: URI schemes MLflow's model registry reads (MLflow 3): a tracking server, a database (a driver may follow,
#: ``postgresql+psycopg2``), a directory (the file store), Databricks. Anything else fails deep inside MLflow.
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks", "databricks-uc", "uc")


def check_tracking_uri(uri: str) -> None:
    """Refuse in one line a tracking URI that MLflow cannot use, before MLflow fails on it with a page of words.

    A mistyped scheme (``htp://``, ``postgres://``, ``localhost:5000`` without ``http://``) fails in
    MLflow as an unsupported registry URI, which co2cast would report as unexpected (and a
    forecast as a failure of every series' data). A relative SQLite path (``sqlite:///mlflow.db``:
    three slashes) names a different database in every directory a task runs in.

    Raises:
        ConfigError: what is wrong and what to set instead.
    """
    shown = redact_url(uri)
    usable = (
        "set http(s)://host:port for a tracking server, sqlite:////absolute/path/mlflow.db or postgresql://… for a database, "
        "or unset it for the SQLite store under CO2CAST_HOME"
    )
    try:
        scheme = urlsplit(uri).scheme.lower()
    except ValueError:
        scheme = None
    if scheme is None or (scheme and scheme.partition("+")[0] not in TRACKING_SCHEMES):
        what = f"its scheme {scheme!r} is not one MLflow reads" if scheme else "it is not a URL"
        raise ConfigError(f"MLFLOW_TRACKING_URI={shown!r} cannot be used ({what}); {usable}")
    if scheme == "sqlite" and not Path(uri.removeprefix("sqlite:///")).is_absolute():
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={shown!r} names a relative SQLite path, a different database in each directory a task runs in: "
            "give an absolute one, sqlite:////absolute/path/mlflow.db (four slashes), or unset it for the SQLite store under CO2CAST_HOME"
        )


def registered_name(series_id: str) -> str:
    """The registered model of a series, e.g. ``co2cast.canada.co2_per_capita``."""
    return f"co2cast.{series_id}"


def server_defaults(uri: str) -> None:
    """Bound how long MLflow waits for a tracking server, unless the operator set it (an HTTP URI only).

    A server that goes away mid-run: MLflow retries each request 7 times over about four
    minutes, and a run makes more than one request before it gives up (a forecast held its task
    8.5 minutes before its one line). Four retries (:data:`HTTP_RETRIES`, about 30 s) ride out
    a restart; a longer outage fails the run, transient, for Airflow to retry.

    A server that accepts the connection and never answers (hung, or a proxy in front of a dead
    one) held each attempt MLflow's 120 s: over ten minutes for one request. :data:`HTTP_TIMEOUT`
    (30 s) makes it about three. It is requests' timeout, which bounds the connection and each
    read from the socket, not a whole transfer: a model artefact of any size still downloads
    while its bytes keep coming, and an upload waits only for the server's answer after its last
    byte (co2cast's artefacts are JSON, npz, SVG and parquet files of kilobytes to a few
    megabytes, stored by the server in well under that).

    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT`` already set win; a
    SQLite or file store gets neither.
    """
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_RETRIES))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT))


def configure(settings: Settings) -> Any:
    """Point MLflow at the configured tracking store; make sure the experiment exists.

    The embedded default is a SQLite file with artefacts in a directory beside it (MLflow would
    otherwise put artefacts in ``./mlruns`` of whatever directory a task runs in).

    Returns:
        An ``MlflowClient`` for the configured store.

    Raises:
        TrackingMisconfigured: the SQLite store's folder cannot be created or written (read-only, a file in its place);
            an HTTP server that is no MLflow server; a database store whose driver is not installed.
    """
    # Task logs are read by people: no progress bars, no usage telemetry leaving the machine.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow import MlflowClient

    uri = settings.resolved_tracking_uri
    check_tracking_uri(uri)
    server_defaults(uri)
    if uri.startswith(("http://", "https://")):
        probe_server(uri)
    artifact_location = None
    database = None
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _unusable_folder(uri, error) from error
        artifact_location = (database.parent / "artifacts").as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # Two first runs at once would both create (migrate) the SQLite schema and race; one at a
    # time, under a file lock beside the database. A server store migrates on its own side.
    with _file_lock(database.with_name(database.name + ".init.lock") if database is not None else None, uri), _store_misconfigured(uri):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        if _own_experiment(client) is None:
            _refuse_a_registry_beside_decisions(settings, uri)
            try:
                # The kind tag makes the MLflow UI open the experiment on its runs, not the GenAI view.
                tags = {"mlflow.experimentKind": "custom_model_development", EXPERIMENT_TAG: "true"}
                client.create_experiment(EXPERIMENT, artifact_location=artifact_location, tags=tags)
            except Exception:  # created by a parallel task in the meantime
                if client.get_experiment_by_name(EXPERIMENT) is None:
                    raise
        mlflow.set_experiment(EXPERIMENT)
    return client


def _refuse_a_registry_beside_decisions(settings: Settings, uri: str) -> None:
    """Refuse to start co2cast's experiment in a registry when the store already holds champion decisions.

    Those decisions were made against another registry: most often ``MLFLOW_TRACKING_URI`` has a
    typo (a new SQLite file is made without a word). A new registry there would have no champion
    to compare a challenger with, and ``latest.json`` would serve version numbers the real
    registry gives to other models.

    Raises:
        RegistryMismatch: the store's alias history names series decided elsewhere.
    """
    from pipeline import layout
    from pipeline.store import store_from_settings

    store = store_from_settings(settings)
    decided = store.list(layout.HISTORY)
    if decided:
        example = decided[0].removeprefix(layout.HISTORY).removesuffix(".json")
        raise RegistryMismatch(
            f"MLFLOW_TRACKING_URI {redact_url(uri)} has no {EXPERIMENT!r} experiment, but the store {store.uri()} holds champion "
            f"decisions for {len(decided)} series (e.g. {example}): point MLFLOW_TRACKING_URI at the registry that made them "
            "(a new registry needs a new store, CO2CAST_STORE_URI)"
        )


@contextmanager
def _store_misconfigured(uri: str) -> Iterator[None]:
    """One setup line for a tracking store that is no MLflow store, instead of a failure of every series' data.

    An HTTP server that is not MLflow's (another service on the port, a URL without the server's
    path prefix) answers 404 to MLflow's API; a ``postgresql://`` store without its driver
    installed fails on the import (``No module named 'psycopg'``); a ``sqlite:`` store whose file
    is damaged fails on its first query (``file is not a database``), which no retry mends.
    """
    from mlflow.exceptions import MlflowException

    shown = redact_url(uri)
    try:
        yield
    except ImportError as error:
        raise TrackingMisconfigured(
            f"MLFLOW_TRACKING_URI={shown!r} cannot be opened: a module it needs is not installed ({error}); install the database "
            "driver its scheme names (e.g. pip install 'psycopg[binary]' for postgresql://), or set another tracking store"
        ) from error
    except MlflowException as error:
        if _sqlite_damaged(uri, error):  # MLflow's sessions wrap a query's DatabaseError as BAD_REQUEST
            raise _damaged_sqlite(shown) from error
        if error.error_code != "ENDPOINT_NOT_FOUND":
            raise
        raise TrackingMisconfigured(
            f"MLFLOW_TRACKING_URI={shown!r} answers, but not as an MLflow tracking server "
            "(HTTP 404 for its REST API /api/2.0/mlflow/…): set the address of the MLflow server, with its path prefix if it has one"
        ) from error
    except Exception as error:
        if not _sqlite_damaged(uri, error):
            raise
        raise _damaged_sqlite(shown) from error


def _sqlite_damaged(uri: str, error: Exception) -> bool:
    """Whether an error is SQLite's own words for a file that is not (or no longer) a database ("database is locked": busy)."""
    damaged = ("file is not a database", "database disk image is malformed")
    return uri.startswith("sqlite:") and any(phrase in str(error) for phrase in damaged)


def _damaged_sqlite(shown: str) -> TrackingMisconfigured:
    return TrackingMisconfigured(
        f"MLFLOW_TRACKING_URI={shown!r} is not a readable SQLite database (damaged, or another kind of file): "
        "restore it from a backup, or point MLFLOW_TRACKING_URI at another tracking store"
    )


def _own_experiment(client: Any) -> Any | None:
    """co2cast's experiment, or ``None`` before the first run; refused when a person deleted or renamed it.

    A new experiment in its place would split the lineage: a complete run of a trained key would
    not be found (and trained again), nor the runs a version names. An experiment made before the
    :data:`EXPERIMENT_TAG` mark existed is marked here once (best effort: a user who may not
    write it goes on unmarked).

    Raises:
        ExperimentDeleted, ExperimentRenamed: one line saying how to undo it.
    """
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None and found.lifecycle_stage == "deleted":  # MLflow keeps its name: no new one can be made
        raise ExperimentDeleted(
            f"the MLflow experiment {EXPERIMENT!r} (id {found.experiment_id}) was deleted; restore it in the MLflow UI or with "
            f"`mlflow experiments restore --experiment-id {found.experiment_id}`: its runs are the lineage of every registered version"
        )
    if found is None:
        renamed = client.search_experiments(filter_string=f"tags.`{EXPERIMENT_TAG}` = 'true'", max_results=1)
        if renamed:
            raise ExperimentRenamed(
                f"the MLflow experiment {EXPERIMENT!r} was renamed to {renamed[0].name[:80]!r} (id {renamed[0].experiment_id}); "
                f"rename it back to {EXPERIMENT!r} in the MLflow UI: its runs are the lineage of every registered version"
            )
    elif found.tags.get(EXPERIMENT_TAG) != "true":
        try:
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_TAG, "true")
        except MlflowException as error:
            if is_transient(error):
                raise
    return found


@contextmanager
def _file_lock(path: Path | None, uri: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` beside the SQLite database ``uri`` names, for the body (nothing when ``None``).

    Raises:
        TrackingMisconfigured: the lock file cannot be created there (a read-only or immutable folder).
    """
    if path is None:
        yield
        return
    import fcntl

    try:
        handle = open(path, "a")
    except OSError as error:
        raise _unusable_folder(uri, error) from error
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _unusable_folder(uri: str, error: OSError) -> TrackingMisconfigured:
    """The one line for a SQLite tracking store whose folder cannot be written (every series would fail alike)."""
    return TrackingMisconfigured(
        f"the MLflow store {redact_url(uri)} cannot be used: {type(error).__name__}: {error}; its folder must be one this user "
        "can write: fix its permissions, or set MLFLOW_TRACKING_URI (or CO2CAST_HOME, for the default under it) to another"
    )


def find_complete_run(client: Any, run_key: str) -> Any | None:
    """The finished parent run of a run key that was marked complete, or ``None``."""
    run = find_run(client, run_key)
    return run if run is not None and run.data.tags.get(COMPLETE_TAG) == "true" else None


#: Tag set on a run that was found dead (RUNNING with no live owner) and marked FAILED.
ABANDONED_TAG = "co2cast.abandoned"


def heal_dead_runs(client: Any, series_id: str, run_key: str, served_version: Callable[[], str | None] | None = None) -> list[str]:
    """Mark a run key's dead runs FAILED and undo what they registered.

    Call it while holding the run key's lock (:mod:`pipeline.locks`): then no live process owns
    a RUNNING run of this key, so any such run died (killed, machine lost). It is marked FAILED
    and tagged :data:`ABANDONED_TAG`. A model version the key registered from a run that is not
    complete is removed, after its aliases are moved back to the versions they pointed at
    before it (recorded on it), so the rerun registers afresh and no alias or lineage points
    at a dead run.

    Args:
        client: an ``MlflowClient``.
        series_id: the series.
        run_key: the run key whose dead runs are healed.
        served_version: gives the version ``latest.json`` serves, if any (asked only when needed):
            where ``@champion`` goes back to when the version holding it records no previous one
            (its alias record edited or removed by hand), instead of losing ``@champion`` and with
            it the next gate's comparison.

    Returns:
        The ids of the runs marked FAILED.
    """
    experiment = client.get_experiment_by_name(EXPERIMENT)
    query = f"tags.`{RUN_KEY_TAG}` = '{run_key}' and attributes.status = 'RUNNING'"
    dead = [r.info.run_id for r in client.search_runs([experiment.experiment_id], filter_string=query, max_results=200)]
    for run_id in dead:
        client.set_tag(run_id, ABANDONED_TAG, "true")
        client.set_terminated(run_id, "FAILED")
    name = registered_name(series_id)
    complete = find_complete_run(client, run_key)
    keep = complete.info.run_id if complete is not None else None
    for version in client.search_model_versions(f"name = '{name}' and tags.`{RUN_KEY_TAG}` = '{run_key}'"):
        if version.tags.get("co2cast.mlflow_run_id") == keep and keep is not None:
            continue
        full = client.get_model_version(name, version.version)
        for alias in full.aliases:
            previous = previous_version(full, alias)
            served = served_version() if not previous and alias == "champion" and served_version is not None else None
            if served and served != str(full.version) and version_exists(client, series_id, served):
                previous = served  # the champion invariant names it too: @champion is the version latest.json serves
            if previous:
                client.set_registered_model_alias(name, alias, previous)
            else:
                client.delete_registered_model_alias(name, alias)
        client.delete_model_version(name, version.version)
    return dead


def read_artifact(run_id: str, path: str) -> bytes:
    """The bytes of one artefact of a run."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)
        return Path(local).read_bytes()


def _has_artifact(client: Any, run_id: str, path: str) -> bool:
    folder, _, _ = path.rpartition("/")
    return path in {item.path for item in client.list_artifacts(run_id, folder or None)}


def sha_tag(path: str) -> str:
    """The run tag holding the sha256 of an artefact that leaves MLflow (see :func:`read_verified`)."""
    return f"{ARTIFACT_SHA_TAG}{path}"


def log_verified(data: bytes, path: str) -> None:
    """Log bytes as an artefact of the active run, with their sha256 as the run tag :func:`sha_tag`."""
    import mlflow

    folder, _, name = path.rpartition("/")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / name).write_bytes(data)
        mlflow.log_artifact(str(Path(tmp) / name), folder or None)
    mlflow.set_tag(sha_tag(path), hashlib.sha256(data).hexdigest())


def read_verified(client: Any, run_id: str, path: str, optional: bool = False) -> bytes | None:
    """An artefact of a run that is published or trusted again, checked against the sha256 the run recorded.

    A run logged before digests were recorded has no tag: its artefact is read as it is (the
    caller still parses it). With ``optional``, a run that has neither the artefact nor its tag
    gives ``None``.

    Raises:
        IntegrityError: the artefact was changed, or is missing although the run recorded it;
            the message names the run and the file.
    """
    from pipeline.artifacts import IntegrityError

    expected = client.get_run(run_id).data.tags.get(sha_tag(path))
    if not _has_artifact(client, run_id, path):
        if optional and expected is None:
            return None
        raise IntegrityError(f"{path} of MLflow run {run_id} is missing; refusing to use the run (restore the file from a backup)")
    data = read_artifact(run_id, path)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise IntegrityError(
            f"{path} of MLflow run {run_id} does not match the sha256 recorded when it was logged; "
            "refusing to use it (restore the file from a backup)"
        )
    return data


def log_table(frame: pd.DataFrame, path: str) -> None:
    """Log a table as a Parquet artefact of the active run, with its sha256 (:func:`log_verified`)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    log_verified(buffer.getvalue(), path)


def find_run(client: Any, run_key: str, parent_only: bool = True) -> Any | None:
    """The finished parent run of a run key, if one exists."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    query = f"tags.`{RUN_KEY_TAG}` = '{run_key}' and attributes.status = 'FINISHED'"
    runs = client.search_runs([experiment.experiment_id], filter_string=query, max_results=20)
    if parent_only:
        runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return runs[0] if runs else None


@dataclass(frozen=True)
class LoggedModel:
    """A forecaster logged in a run: its MLflow ``ModelInfo`` and the digest of its stored files."""

    info: Any
    digest: dict[str, str]

    @property
    def model_uri(self) -> str:
        """What :func:`register` takes."""
        return str(self.info.model_uri)


def log_forecaster(
    model: Any, horizon_end: int, levels: tuple[int, ...] = (80, 95), name: str = "model", family: str | None = None
) -> LoggedModel:
    """Log a fitted forecaster in the active run (package-side loader, data only; see :mod:`pipeline.artifacts`).

    ``family`` is the name it will be registered under (:data:`FAMILY_TAG`), recorded in the artefact.
    """
    from pipeline import artifacts

    info, digest = artifacts.log_forecaster(model, horizon_end, levels, name, family=family)
    return LoggedModel(info=info, digest=digest)


#: On a version the champion gate registered for a kept champion's recipe refitted (``"true"``), not a candidate of the run.
REFIT_TAG = "co2cast.champion_refit"


def version_description(
    family: str,
    metric: str,
    score: float | None,
    naive: float | None,
    tags: Mapping[str, str],
    run_key: str,
    refit: bool = False,
) -> str:
    """The description a registered version shows in the MLflow UI: what it is and how it scored, in one line.

    Args:
        family: the family it is registered under.
        metric: the selection metric (lower is better).
        score: its backtest score on ``metric`` (for a refit: the kept recipe's, on this run's windows).
        naive: naive's on the same windows.
        tags: the version's tags (its as-of year and vintage).
        run_key: the run key that registered it.
        refit: a kept champion's recipe refitted by the champion gate, not a candidate of the run.

    Returns:
        E.g. ``"drift as of 2014: backtest MASE 0.912, naive 1.000 on the same windows (lower is better);
        vintage 5c0f…, run key 9a1b…"``.
    """

    def number(value: float | None) -> str:
        return f"{float(value):.3f}" if value is not None and math.isfinite(float(value)) else "n/a"

    as_of = tags.get(AS_OF_TAG, "?")
    what = f"{family}, @champion's recipe refitted as of {as_of}" if refit else f"{family} as of {as_of}"
    scored = f"backtest {metric.upper()} {number(score)}" + (f", naive {number(naive)} on the same windows" if naive is not None else "")
    return f"{what}: {scored} (lower is better); vintage {tags.get('co2cast.vintage', '?')}, run key {run_key}"


def register(
    client: Any,
    model_uri: str,
    series_id: str,
    run_key: str,
    family: str,
    tags: dict[str, str],
    digest: Mapping[str, str] | None = None,
    refit: bool = False,
    description: str | None = None,
) -> Any:
    """Register a logged model unless this run key already registered this family (as a candidate, or as a refit).

    The version gets the artefact's digest as tag :data:`pipeline.artifacts.DIGEST_TAG`
    (computed from the stored files when ``digest`` is not given), so it can be verified on load.
    ``refit``: a kept champion's recipe refitted by the gate, tagged :data:`REFIT_TAG` and told
    apart from a candidate of the run with the same family name but another recipe.
    ``description``: what the MLflow UI shows on the version (:func:`version_description`); set
    after registering (``mlflow.register_model`` takes none), and on a version of the run key
    found without one (a run killed between the two calls).

    Returns:
        The ``ModelVersion`` (existing or new).
    """
    import mlflow

    name = registered_name(series_id)
    existing = find_version(client, series_id, run_key, family, refit=refit)
    if existing is None:
        from pipeline import artifacts

        digest = dict(digest) if digest is not None else artifacts.stored_digest(model_uri)
        all_tags = {RUN_KEY_TAG: run_key, FAMILY_TAG: family, **tags, artifacts.DIGEST_TAG: json.dumps(digest, sort_keys=True)}
        existing = mlflow.register_model(model_uri, name, tags=all_tags | ({REFIT_TAG: "true"} if refit else {}))
    if description and not getattr(existing, "description", None):
        existing = client.update_model_version(name, str(existing.version), description=description)
    return existing


class VersionMissing(RegistryError):
    """A registered version co2cast recorded is no longer in the registry (a person deleted it in the MLflow UI)."""


def _not_found(error: BaseException) -> bool:
    return getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def registered_version(client: Any, series_id: str, version: str) -> Any | None:
    """A registered version of a series, or ``None`` when it is no longer in the registry (deleted in the MLflow UI).

    Raises:
        MlflowException: any failure but "does not exist" (a transient one is for the caller's
            :func:`transient_errors`).
    """
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(registered_name(series_id), str(version))
    except MlflowException as error:
        if _not_found(error):
            return None
        raise


def version_exists(client: Any, series_id: str, version: str) -> bool:
    """Whether a registered version of a series is still in the registry (see :func:`registered_version`)."""
    return registered_version(client, series_id, version) is not None


class ModelRenamed(RegistryError):
    """A series' registered model was renamed (e.g. in the MLflow UI); a person renames it back."""


#: The tag naming a version's series, on every version co2cast registers (and on its runs).
SERIES_TAG = "co2cast.series_id"


def check_not_renamed(client: Any, series_id: str) -> None:
    """Refuse to go on when a series' registered model is gone from its name but its versions are under another.

    A person renamed it in the MLflow UI. Registering afresh under the old name would number the
    versions from 1 again, beside published forecasts, ``latest.json`` and the alias history that
    name the old numbers, and a complete run whose version seems gone would be trained again.
    A model deleted outright has no version left anywhere: the next run registers it afresh.
    Costs one registry read while the model is there.

    Raises:
        ModelRenamed: the versions were found under another name (the message names it).
    """
    from mlflow.exceptions import MlflowException

    name = registered_name(series_id)
    try:
        client.get_registered_model(name)
        return
    except MlflowException as error:
        if is_transient(error):
            raise
        # not found (or a basic-auth server's 403 for a model not created yet): look for its versions under other names
    try:
        found = client.search_model_versions(f"tags.`{SERIES_TAG}` = '{_filter_id(series_id)}'", max_results=50)
    except MlflowException as error:  # a registry that cannot search by tag (or refuses it) cannot tell: go on as before
        if is_transient(error):
            raise
        return
    others = sorted({str(v.name) for v in found if v.name != name})
    if others:
        raise ModelRenamed(
            f"{name} is not in the MLflow registry, but its versions are, under {others[0]!r} (renamed in the MLflow UI?): "
            f"rename it back to {name}; the published forecasts and the alias history name those versions"
        )


#: Set (with the reason) on a complete run whose chosen version was deleted, or whose model files are all gone
#: (:class:`pipeline.artifacts.ArtifactGone`): its run key is trained again.
RETIRED_TAG = "co2cast.retired"


def retire_run(client: Any, run_id: str, reason: str) -> None:
    """Make a complete run no longer reusable: its run key is trained again (its versions are healed as a dead run's)."""
    client.set_tag(run_id, RETIRED_TAG, reason[:500])
    client.set_tag(run_id, COMPLETE_TAG, "false")


def find_version(client: Any, series_id: str, run_key: str, family: str, refit: bool = False) -> Any | None:
    """The model version a run key registered for a family, if any: a candidate's, or with ``refit`` a kept champion's recipe."""
    name = registered_name(series_id)
    query = f"name = '{name}' and tags.`{RUN_KEY_TAG}` = '{run_key}' and tags.`{FAMILY_TAG}` = '{family}'"
    versions = [v for v in client.search_model_versions(query) if ((v.tags or {}).get(REFIT_TAG) == "true") == refit]
    return max(versions, key=lambda v: int(v.version)) if versions else None


def alias_version(client: Any, series_id: str, alias: str) -> Any | None:
    """The version an alias points at, or ``None`` when the registry has none to give.

    A failure a retry may cure (:func:`is_transient`: a server down or answering 503, a busy
    SQLite file) is raised: a registry that could not answer is not a registry without the
    alias, or the champion gate would hand ``@champion`` to the challenger without a comparison.
    Anything else is "no alias": a model or alias that does not exist, and a basic-auth server's
    403 for a registered model not created yet.
    """
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(registered_name(series_id), alias)
    except MlflowException as error:
        if is_transient(error):
            raise
        return None


def _aliases_hint(client: Any, series_id: str) -> str:
    """``"; its aliases: arima, champion, …"`` for a refusal that names an alias the model lacks ("" when it has none)."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = sorted((client.get_registered_model(registered_name(series_id)).aliases or {}).keys())
    except MlflowException:
        return ""
    return f"; its aliases: {', '.join(aliases)}" if aliases else ""


def champion_versions(client: Any) -> dict[str, str]:
    """Series id -> the version ``@champion`` points at, for every registered co2cast model (one paged search)."""
    found: dict[str, str] = {}
    token, prefix = None, registered_name("")
    while True:
        page = client.search_registered_models(filter_string=f"name LIKE '{prefix}%'", max_results=1000, page_token=token)
        for model in page:
            if "champion" in (model.aliases or {}):
                found[model.name.removeprefix(prefix)] = str(model.aliases["champion"])
        token = page.token
        if not token:
            return found


#: The one tag an alias move leaves on the version it moved to: ``{"previous": "3", "reason": "…"}``.
#: The full record of each move (both scores on the same windows, the windows, the run key,
#: the as-of year) is the series' alias history in the store (``history/<series_id>.json``).
def alias_tag(alias: str) -> str:
    """The tag name of an alias move on a version, e.g. ``co2cast.alias.champion``."""
    return f"co2cast.alias.{alias}"


AS_OF_TAG = "co2cast.as_of_year"


def version_as_of(version: Any) -> int | None:
    """The as-of year a model version was trained for (its tag), or ``None`` for an untagged one.

    A tag edited in the MLflow UI into something that is not a year (``abc``, ``2014.5``) is
    ``None`` too: the version's age is unknown, and the callers order by what else they know
    (the as-of year ``latest.json`` serves; see :func:`register_selection`).
    """
    value = str((version.tags or {}).get(AS_OF_TAG) or "").strip() if version is not None else ""
    return int(value) if value.isdecimal() and value.isascii() else None


def move_alias(client: Any, series_id: str, alias: str, version: str, reason: str, scores: dict[str, Any] | None = None) -> bool:
    """Point an alias at a version, leaving one short tag on that version (previous version, reason).

    ``scores`` are not written as tags (they flooded the MLflow UI); the task layer keeps them
    in the alias history.

    Returns:
        ``True`` when the alias moved, ``False`` when it already pointed there.
    """
    del scores
    name = registered_name(series_id)
    previous = alias_version(client, series_id, alias)
    if previous is not None and str(previous.version) == str(version):
        return False
    record = {"previous": str(previous.version) if previous else "", "reason": reason[:300]}
    # The record first: killed after the alias moved, the version would hold it with no record, and
    # healing its dead run (heal_dead_runs) would delete the alias instead of moving it back. Killed
    # between, the alias has not moved and the record sits on a version that does not hold it (the
    # gate's and register_selection's moves go to the run's own versions, which the heal removes).
    client.set_model_version_tag(name, str(version), alias_tag(alias), json.dumps(record))
    client.set_registered_model_alias(name, alias, str(version))
    return True


def previous_version(version: Any, alias: str) -> str:
    """The version an alias pointed at before it moved to ``version`` (``""`` when none is recorded).

    A record edited in the MLflow UI into something co2cast did not write (not JSON, JSON of
    another shape, a previous version that is not a version number) records none either:
    :func:`unreadable_alias_record` says so where a person must act.
    """
    raw = (version.tags or {}).get(alias_tag(alias))
    return (_recorded_previous(raw) or "") if raw else ""


def unreadable_alias_record(version: Any, alias: str) -> str | None:
    """The alias record (tag :func:`alias_tag`) on a version, shortened, when it is not one co2cast writes; else ``None``."""
    raw = (version.tags or {}).get(alias_tag(alias))
    if not raw or _recorded_previous(raw) is not None:
        return None
    return raw if len(raw) <= 60 else raw[:57] + "..."


def _recorded_previous(raw: str) -> str | None:
    """The previous version an alias record names (``""`` for none), or ``None`` when it is not a record co2cast writes."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    previous = record.get("previous")
    if previous in (None, ""):
        return ""
    text = str(previous) if isinstance(previous, (str, int)) and not isinstance(previous, bool) else ""
    return text if text.isascii() and text.isdecimal() else None


def rollback_alias(client: Any, series_id: str, alias: str = "champion") -> tuple[str, str]:
    """Move an alias back to the version it pointed at before its last move.

    Returns:
        ``(from_version, to_version)``.
    """
    current = alias_version(client, series_id, alias)
    if current is None:
        raise RegistryError(f"{registered_name(series_id)} has no @{alias}{_aliases_hint(client, series_id)}")
    previous = previous_version(current, alias)
    unreadable = unreadable_alias_record(current, alias)
    if not previous and unreadable is not None:
        raise RegistryError(
            f"{registered_name(series_id)}@{alias} (version {current.version}) records no previous version to roll back to: its tag "
            f"{alias_tag(alias)} was edited in MLflow ({unreadable!r} is not what co2cast writes); `co2cast history {series_id}` lists "
            f'the earlier champions: set the tag to {{"previous": "N"}} to roll back to vN'
        )
    if not previous:
        raise RegistryError(f"{registered_name(series_id)}@{alias} (version {current.version}) records no previous version to roll back to")
    if not version_exists(client, series_id, previous):
        raise RegistryError(
            f"{registered_name(series_id)}@{alias} (version {current.version}) records v{previous} before it, which is no longer in the "
            f"registry (deleted in MLflow?): nothing to roll back to; @{alias} stays v{current.version}"
        )
    client.set_registered_model_alias(registered_name(series_id), alias, previous)
    back = client.get_model_version(registered_name(series_id), previous)
    before = previous_version(back, alias)
    record = {"previous": before, "reason": f"rollback from version {current.version}"}
    client.set_model_version_tag(registered_name(series_id), previous, alias_tag(alias), json.dumps(record))
    return str(current.version), previous


def _filter_id(series_id: str) -> str:
    """A series id for an MLflow filter string, which has no escape for a quote: only an id as co2cast makes them.

    Raises:
        RegistryError: ``series_id`` is no series id (``a'b``, ``..``).
    """
    from pipeline.series import is_series_id

    if not is_series_id(series_id):
        raise RegistryError(f"{series_id[:80]!r} is no series id (entity.variable, e.g. canada.co2_per_capita)")
    return series_id


def versions_as_of(client: Any, series_id: str, as_of_year: int) -> list[Any]:
    """Every registered version of a series trained for an as-of year (one MLflow search)."""
    query = f"name = '{registered_name(_filter_id(series_id))}' and tags.`{AS_OF_TAG}` = '{int(as_of_year)}'"
    return sorted(client.search_model_versions(query), key=lambda v: int(v.version))


# -- one series' run ---------------------------------------------------------------------------


def _param_value(value: Any) -> Any:
    from pipeline.models.base import encode_param

    value = encode_param(value)  # nested forecasters (a combination's members) as their specs
    return json.dumps(value, default=json_default) if isinstance(value, (list, tuple, dict)) else value


def log_series_result(result: SeriesResult, spec: ForecastSpec, tags: Mapping[str, str], metric: str = "mase") -> dict[str, Any]:
    """Log a series run through the core in the active (parent) MLflow run.

    The parent gets the series' parameters, the diagnostics (plots and ``diagnostics.json``
    under ``diagnostics/``) and ``implied_d``. A nested run with its backtest metrics,
    ``backtest.json``, hyperparameters, its errors by horizon, its fan chart when fitted and its
    model when registered by the selection policy goes to each fitted candidate and the
    :data:`TOP_CANDIDATES` best on ``metric`` (every candidate when the policy used no shared
    evaluation); ``evaluation.json`` holds every candidate's metrics. The comparison chart is
    drawn once the champion gate has decided (:func:`log_decision`).

    Args:
        result: what :func:`pipeline.core.run_series` returned.
        spec: the forecast spec the series ran with.
        tags: tags for the nested runs (the run key, series, vintage, …).
        metric: the metric the selection ranked on (``CO2CAST_SELECTION_METRIC``).

    Returns:
        Candidate name -> :class:`LoggedModel` of each fitted candidate.
    """
    # Every chart on a pooled figure, saved before the next of its kind (pipeline.plots).
    with _plots().reusing_figures():
        return _log_series_result(result, spec, tags, metric)


def _log_series_result(result: SeriesResult, spec: ForecastSpec, tags: Mapping[str, str], metric: str) -> dict[str, Any]:
    import mlflow

    from pipeline.diagnostics_plots import write_diagnostics
    from pipeline.series import unit_of

    series = result.series
    mlflow.log_params(
        {
            "series_id": series.series_id,
            "entity": series.entity,
            "variable": series.variable,
            "first_year": series.first_year,
            "last_year": series.last_year,
            "n_points": len(series.values),
            # The early history left out before a gap, or "none" (see PreparedSeries.left_out).
            "left_out": series.left_out.describe() if series.left_out is not None else "none",
            "horizon_end": spec.horizon_end,
            "backtest_horizon": spec.backtest_horizon,
            "backtest_origins": spec.backtest_origins,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_diagnostics(series.years, series.values, tmp, title=series.series_id, report=result.diagnostics)
        mlflow.log_artifacts(tmp, "diagnostics")
        mlflow.set_tag(sha_tag(DIAGNOSTICS_ARTIFACT), hashlib.sha256((Path(tmp) / "diagnostics.json").read_bytes()).hexdigest())
    mlflow.log_metric("implied_d", result.diagnostics["stationarity"]["implied_d"])

    # Only the candidates the policy registers are logged as models: logging a model is the
    # costliest MLflow call, and an unregistered one was never loaded again.
    registered = set(result.selection.register) if result.selection is not None else set(result.candidates)
    infos: dict[str, Any] = {}
    evaluation = result.evaluation
    if evaluation is not None:
        # Every candidate's metrics and every dropped one's reason in one artefact; nested runs
        # (and pictures) only for the registered and the best few, to keep MLflow cheap.
        mlflow.log_dict(evaluation.to_dict(), "evaluation.json")
        ranked = sorted(result.candidates, key=lambda n: result.candidates[n].scores.get(metric, float("inf")))
        logged = [n for n in result.candidates if result.candidates[n].model is not None or n in ranked[:TOP_CANDIDATES]]
    else:
        logged = list(result.candidates)
    for name in logged:
        candidate = result.candidates[name]
        with mlflow.start_run(run_name=name, nested=True, tags={**tags, FAMILY_TAG: name, NOTE_TAG: CANDIDATE_NOTE}):
            mlflow.log_metrics(candidate.metrics)
            mlflow.log_dict(candidate.backtest.to_dict(), "backtest.json")
            mlflow.log_params({k: _param_value(v) for k, v in candidate.prototype.get_params().items()})
            if evaluation is not None:
                title, unit = f"{series.series_id}: {name}", unit_of(series.variable)
                _log_figure(
                    lambda c=candidate, t=title, u=unit: _plots().errors_by_horizon(c.backtest, title=t, unit=u), "errors_by_horizon.svg"
                )
                if candidate.model is not None:  # every fitted candidate: the calibrated bands it would publish
                    log_fan_chart(candidate.model, series, spec, title=title)
            if candidate.model is not None and name in registered:
                order = getattr(candidate.model, "order_", None)  # the order an ARIMA search settled on
                if order is not None:
                    mlflow.log_param("fitted_order", json.dumps([int(v) for v in order]))
                infos[name] = log_forecaster(candidate.model, spec.horizon_end, spec.levels, family=name)
    return infos


def log_fan_chart(model: Any, series: Any, spec: ForecastSpec, title: str, artifact: str = "fan_chart.svg") -> None:
    """A fitted model's fan chart (history, mean, 80/95 % bands to the horizon end, in the series' unit) in the active run."""
    from pipeline.series import unit_of

    forecast = model.predict(max(1, spec.horizon_end - series.last_year), levels=spec.levels)
    unit = unit_of(series.variable)
    _log_figure(lambda: _plots().fan_chart(series.years, series.values, forecast, title=title, unit=unit), artifact)


#: The parent run's tag with the champion gate's reason (the selection's is ``co2cast.selection``).
GATE_TAG = "co2cast.gate"


def log_decision(evaluation: Any, champion: str, reason: str, metric: str = "mase") -> None:
    """The parent run's ``comparison.svg`` and :data:`GATE_TAG`, once the champion gate has decided.

    The chart marks the family that holds ``@champion`` after the run, with the gate's reason
    under its title: drawn before the gate, it named the selection's choice, which a kept
    champion had beaten.
    """
    import mlflow

    mlflow.set_tag(GATE_TAG, reason[:5000])
    with _plots().reusing_figures():
        _log_figure(lambda: _plots().comparison_chart(evaluation, metric=metric, winner=champion, caption=reason), "comparison.svg")


#: Candidates besides the fitted ones that get a nested run (the best on the selection metric).
TOP_CANDIDATES = 3
#: MLflow's run description, shown on the run's page.
NOTE_TAG = "mlflow.note.content"
#: What a candidate run's interval metrics measure (they are not the published bands' scores).
CANDIDATE_NOTE = (
    "backtest_* metrics: this candidate on the rolling-origin windows every candidate shares; "
    "backtest_coverage_* and backtest_msis_* score its own intervals, before calibration. A registered "
    "model publishes them widened by the calibration factors in backtest.json, which come from these "
    "same windows, so scoring the calibrated bands here would be in-sample. study_* metrics (the study "
    "series only): the study's own split, fitted on its first 200 years."
)


def _plots() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from pipeline import plots

    return plots


def _log_figure(make: Any, name: str) -> None:
    """Log a matplotlib figure in the active run as SVG (:func:`pipeline.plots.save_chart`); ``name`` may name a folder (``a/b.svg``)."""
    import mlflow

    plots = _plots()
    folder, _, file_name = name.rpartition("/")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / file_name
        plots.save_chart(make(), path)
        mlflow.log_artifact(str(path), folder or None)


def register_selection(
    client: Any,
    result: SeriesResult,
    infos: Mapping[str, Any],
    run_key: str,
    tags: Mapping[str, str],
    move_aliases: bool = True,
    served_as_of: int | None = None,
    metric: str = "mase",
) -> dict[str, str]:
    """Register the candidates the policy selected and move their family aliases.

    A family alias moves only forward in time: never to a version of an older as-of year than
    the one it points at, than ``@champion``'s or than the forecast ``latest.json`` serves
    (``served_as_of``: it still knows the age of what is served when a person removed
    ``@champion`` or edited its as-of tag in the MLflow UI), so a backfill registers its
    versions but moves or creates no alias (a family first registered by a backfill of 1990
    gets its alias from the next run of the newest as-of year); with ``move_aliases=False`` (a
    run on an older vintage than the latest curated one) none moves. ``@champion`` is moved by
    the caller (the champion gate; see :func:`pipeline.tasks.train_series`).
    Safe to repeat: a run key registers each candidate once, and an alias that already points
    at a version is not moved again. Each version's description (:func:`version_description`)
    gives its backtest score on ``metric`` (the selection metric) and naive's.

    Returns:
        Candidate name -> registered version.
    """
    assert result.selection is not None
    sid = result.series.series_id
    as_of = int(tags[AS_OF_TAG]) if AS_OF_TAG in tags else None
    versions: dict[str, str] = {}
    champion_as_of = version_as_of(alias_version(client, sid, "champion"))
    naive = result.candidates["naive"].scores.get(metric) if "naive" in result.candidates else None
    for name in result.selection.register:
        text = version_description(name, metric, result.candidates[name].scores.get(metric), naive, tags, run_key)
        version = register(client, infos[name].model_uri, sid, run_key, name, dict(tags), digest=infos[name].digest, description=text)
        versions[name] = str(version.version)
        known = (version_as_of(alias_version(client, sid, name)), champion_as_of, served_as_of)
        newest = [year for year in known if year is not None]
        if move_aliases and (as_of is None or not newest or max(newest) <= as_of):
            move_alias(client, sid, name, version.version, reason=f"newest {name} (run key {run_key})")
    return versions


def mark_complete(summary: Mapping[str, Any]) -> None:
    """In the active run: write ``summary.json``, then tag the run complete (last, so a rerun reuses it)."""
    import mlflow

    log_verified(json.dumps(dict(summary), indent=2).encode(), SUMMARY_ARTIFACT)
    mlflow.set_tag(COMPLETE_TAG, "true")


def load_registered(model_name: str, version: str) -> Forecaster:
    """The fitted forecaster inside a registered model version, verified before it is loaded.

    Raises:
        IntegrityError: a file of the artefact does not match the version's digest tag.
        VersionMissing: the version is no longer in the registry.
    """
    from mlflow.exceptions import MlflowException

    from pipeline import artifacts

    try:
        return artifacts.served_forecaster(artifacts.load_registered(model_name, version))
    except MlflowException as error:
        if _not_found(error):
            raise VersionMissing(
                f"{model_name} v{version} is no longer in the MLflow registry (deleted by hand?): nothing was published; "
                "run the series again, which trains its run key afresh"
            ) from None
        raise


def log_metrics_once(client: Any, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, str] | None = None) -> int:
    """Log metrics (and tags) to a run in one batch, leaving out values the run already holds.

    A rerun with the same values logs nothing, so a metric's history gains a step only when its
    value changes. Returns how many metrics were logged.
    """
    import time

    from mlflow.entities import Metric, RunTag

    data = client.get_run(run_id).data
    now = int(time.time() * 1000)
    fresh = [Metric(k, float(v), now, 0) for k, v in sorted(metrics.items()) if data.metrics.get(k) != float(v)]
    new_tags = [RunTag(k, str(v)) for k, v in sorted((tags or {}).items()) if data.tags.get(k) != str(v)]
    for start in range(0, max(len(fresh), 1), 1000):  # MLflow takes at most 1000 metrics per batch
        chunk = fresh[start : start + 1000]
        if chunk or (start == 0 and new_tags):
            client.log_batch(run_id, metrics=chunk, tags=new_tags if start == 0 else [])
    return len(fresh)
