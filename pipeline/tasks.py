"""The task layer: every pipeline step as one function that the DAGs and the CLI both call.

Each function takes the settings first, then small typed payloads (or the plain dicts they
become at the XCom boundary; :meth:`pipeline.payloads.Payload.of` validates them on the way
in), and returns a payload. Here the per-series core (:mod:`pipeline.core`) meets the adapters
(:mod:`pipeline.store` + :mod:`pipeline.layout`, :mod:`pipeline.tracking`,
:mod:`pipeline.publish`, :mod:`pipeline.ingest`): a step reads what it needs, runs the core,
hands the result to the adapters, and returns what the next step needs.

Failures are :class:`pipeline.errors.PermanentError` (bad data, unknown series, refused
publish, integrity) or :class:`pipeline.errors.TransientError` (network, S3 5xx, busy
database). :mod:`pipeline.runner` maps them for Airflow; the CLI prints them as one line.

Forecast steps, in order: :func:`plan_run` → per series :func:`train_series` →
:func:`publish_series` (the DAG's mapped task runs both: :func:`forecast_series`) →
:func:`summarize_run`. :func:`forecast_all` runs them in a loop.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline import layout
from pipeline.config import Settings
from pipeline.errors import Co2castError, PermanentError, SetupError, TransientError
from pipeline.payloads import (
    AirflowIds,
    FetchedSource,
    PublishedForecast,
    RawSnapshot,
    RunPlan,
    RunTrigger,
    SummaryLine,
    TrainedSeries,
    ValidatedVintage,
    WorkItem,
)
from pipeline.testhooks import pause_point

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.core import Candidates, ForecastSpec, SelectPolicy
    from pipeline.payloads import Manifest
    from pipeline.store import ObjectStore

logger = logging.getLogger(__name__)


#: The digest of the history a version was fitted on (:func:`pipeline.core.history_hash`).
HISTORY_TAG = "co2cast.history_sha256"


class RunIncomplete(PermanentError):
    """Some series of a run were not published (their tasks failed; see their logs)."""


class ConfigMismatch(PermanentError):
    """A step runs with another configuration than the plan it was given was made with."""


@dataclass(frozen=True)
class Lineup:
    """What a run trains: the candidates, the selection policy, the forecast spec.

    ``candidates`` is name -> instance, or a factory ``n_points -> candidates`` sized per series
    (the zoo); the run key describes a factory at every series length
    (:func:`pipeline.core.describe_candidates`).
    """

    candidates: Candidates
    select: SelectPolicy
    spec: ForecastSpec

    @functools.cached_property
    def config_hash(self) -> str:
        """The configuration hash of the run key (see :func:`pipeline.core.config_hash`)."""
        from pipeline.core import config_hash, run_config

        return config_hash(run_config(self.candidates, self.select, self.spec))


def production_lineup(settings: Settings) -> Lineup:
    """The candidates, policy and spec every production run uses."""
    from pipeline.backtest import MIN_POINTS
    from pipeline.candidates import ZooSelection, zoo_candidates
    from pipeline.core import ForecastSpec
    from pipeline.selection import _check_metric

    try:
        _check_metric(settings.selection_metric)
    except ValueError as error:
        raise PermanentError(f"CO2CAST_SELECTION_METRIC: {error}") from None
    return Lineup(
        candidates=zoo_candidates,
        select=ZooSelection(metric=settings.selection_metric),
        spec=ForecastSpec(horizon_end=settings.horizon_end, min_points=MIN_POINTS),
    )


def open_store(settings: Settings) -> ObjectStore:
    """The configured object store."""
    from pipeline.store import store_from_settings

    return store_from_settings(settings)


# -- ingest ----------------------------------------------------------------------------------


def fetch_source(settings: Settings, source: str | None = None) -> FetchedSource:
    """Fetch the source; stage new bytes under ``raw/`` (see :func:`pipeline.ingest.fetch_source`)."""
    from pipeline import ingest

    return FetchedSource.of(ingest.fetch_source(settings, open_store(settings), source))


def snapshot_raw(settings: Settings, fetched: FetchedSource | dict[str, Any]) -> RawSnapshot:
    """Seal the raw snapshot (see :func:`pipeline.ingest.snapshot_raw`)."""
    from pipeline import ingest

    fetched = FetchedSource.of(fetched)
    return RawSnapshot.of(ingest.snapshot_raw(open_store(settings), fetched.to_xcom()))


def validate_raw(settings: Settings, snapshot: RawSnapshot | dict[str, Any]) -> ValidatedVintage:
    """Gate a snapshot with GX; quarantine and raise ``ValidationFailed`` when it fails."""
    from pipeline import ingest

    snapshot = RawSnapshot.of(snapshot)
    return ValidatedVintage.of(ingest.validate_raw(settings, open_store(settings), snapshot.to_xcom()))


def curate_vintage(settings: Settings, validated: ValidatedVintage | dict[str, Any]) -> dict[str, Any]:
    """Curate a validated vintage and move ``curated/latest.json`` (returns the pointer)."""
    from pipeline import ingest

    validated = ValidatedVintage.of(validated)
    return ingest.curate_vintage(settings, open_store(settings), validated.to_xcom())


def asset_extra(pointer: Mapping[str, Any]) -> dict[str, Any]:
    """What the curated Asset's event carries for ``co2_forecast``: the vintage and its latest year."""
    return {"vintage": pointer["vintage"], "latest_year": pointer["latest_year"]}


def ingest(settings: Settings, source: str | None = None) -> dict[str, Any]:
    """Every ingest step in turn (``co2cast ingest``); see :func:`pipeline.ingest.ingest`."""
    from pipeline import ingest as ingest_module

    return ingest_module.ingest(settings, open_store(settings), source)


def latest_vintage(settings: Settings) -> dict[str, Any] | None:
    """The pointer to the last good vintage, or ``None`` before the first one."""
    from pipeline.ingest import latest_curated

    return latest_curated(open_store(settings))


# -- forecast --------------------------------------------------------------------------------


def plan_run(settings: Settings, trigger: RunTrigger | dict[str, Any] | None = None, lineup: Lineup | None = None) -> RunPlan:
    """Decide what a forecast run covers: vintage, as-of year, series and their run keys.

    The vintage is the explicit one, else the one whose asset event triggered the run, else the
    latest curated. The as-of year follows :func:`pipeline.plan.as_of_year_for`.

    Args:
        settings: the run's settings (``series``, ``horizon_end``, the store).
        trigger: why the run started (Airflow's run type and logical date, params / CLI flags).
        lineup: candidates, policy and spec (default: :func:`production_lineup`).

    Returns:
        The :class:`RunPlan`.

    Raises:
        PlanError: no curated vintage, an unknown vintage, an as-of year outside the data, or
            ``CO2CAST_SERIES`` names no series or an unknown one (the message names the variable).
        SeriesError: the series flag or param names no series or an unknown one.
    """
    from pipeline import ingest
    from pipeline.plan import PlanError, as_of_year_for, without_aggregates
    from pipeline.plan import plan_run as build_plan
    from pipeline.series import DEFAULT_MIN_POINTS, SeriesError
    from pipeline.sources import clean

    trigger = RunTrigger.of(trigger) if trigger is not None else RunTrigger(run_type="cli")
    lineup = lineup or production_lineup(settings)
    store = open_store(settings)
    vintage = trigger.vintage or trigger.asset_vintage
    if vintage and not ingest.is_vintage_id(vintage):  # typed by a person: not a store key to build
        shape = f"{ingest.VINTAGE_CHARS} hex digits, as `co2cast status` prints"
        if trigger.vintage:
            raise PlanError(f"vintage {clean(vintage, 40)!r} is not a vintage id: {shape}; leave it out for the latest curated one")
        raise PlanError(
            f"the asset event that triggered this run names vintage {clean(vintage, 40)!r}, which is not a vintage id ({shape}); "
            "an event created by hand should name a curated vintage, or none for the latest"
        )
    if vintage:
        pointer = store.read_json_or_none(layout.curated_meta(vintage), layout.CURATED_POINTER)
        if pointer is None:
            raise PlanError(f"vintage {vintage} is not curated in {store.uri()}")
    else:
        pointer = ingest.latest_curated(store)
        if pointer is None:
            raise PlanError(f"no curated vintage in {store.uri()}: run co2_ingest (or `co2cast ingest`) first")
    as_of_year = as_of_year_for(trigger.run_type, trigger.logical_date, int(pointer["latest_year"]), trigger.as_of_year)
    tidy = ingest.read_curated(store, pointer["vintage"])
    try:  # a vintage curated before ingest checked the names: its ids would fail as file and model names
        ingest.check_series_ids(tidy["entity"])
    except Co2castError as error:
        raise PlanError(f"vintage {pointer['vintage']}: {error}; then ingest the corrected release") from None
    spec = trigger.series or settings.series
    if spec.strip().lower() == "all" and not settings.include_aggregates:
        tidy = without_aggregates(tidy)
    try:
        return build_plan(
            tidy,
            vintage=pointer["vintage"],
            as_of_year=as_of_year,
            series_spec=spec,
            horizon_end=settings.horizon_end,
            cfg_hash=lineup.config_hash,
            # ``all`` keeps its documented meaning (≥ 30 years); a named short series (≥ 12) is still modelled.
            min_points=max(lineup.spec.min_points, DEFAULT_MIN_POINTS),
        )
    except SeriesError as error:
        if trigger.series:
            raise
        raise PlanError(f"CO2CAST_SERIES={spec!r}: {error}") from None


def pending_series(settings: Settings, plan: RunPlan | dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's series that still need training or publishing, as work items for task mapping.

    A series whose run key is published, verified and served (:func:`pipeline.publish.settled`)
    is left out: an unchanged nightly run maps no task for it, and the run summary still lists
    it from the store. Everything else (new, revised, half-published, or with a ``@champion``
    rollback left part way, which its task finishes: :func:`finish_left_rollback`) is returned.

    When any series is left to train, the tracking store is opened once here
    (:func:`pipeline.tracking.configure`): a mistyped or damaged one fails this one task with its
    setup line, and one that is down is retried here, instead of failing every mapped series.

    Raises:
        SetupError: the tracking store cannot be used (``TrackingMisconfigured`` and the like).
        TrackingUnavailable: it cannot be reached (transient: Airflow retries the task).
    """
    from pipeline.publish import pinned, settled

    plan = RunPlan.of(plan)
    store = open_store(settings)
    pinned_run = pinned(store, plan.vintage)  # once for the run, not once per series
    # A series with a rollback left part way is not settled: its task finishes the rollback (train_series).
    left = set(layout.rollback_intent_series(store.list(layout.ROLLBACK_INTENTS)))
    pending = [
        item
        for item in plan.series
        if item.series_id in left or not settled(store, item.series_id, plan.as_of_year, item.run_key, pinned_run)
    ]
    done = len(plan.series) - len(pending)
    if done:
        logger.info("%d of %d series already published and served for their run keys: no task mapped for them", done, len(plan.series))
    if pending:  # a tracking store that is wrong or down fails here once, not once per mapped series
        from pipeline import tracking

        with tracking.transient_errors():
            tracking.configure(settings)
    return [item.to_xcom() for item in pending]


def train_series(
    settings: Settings,
    plan: RunPlan | dict[str, Any],
    item: WorkItem | dict[str, Any],
    airflow: AirflowIds | dict[str, Any] | None = None,
    lineup: Lineup | None = None,
) -> TrainedSeries:
    """Run one series through the core and record it in MLflow: runs, registry, aliases.

    Reuses the complete MLflow run of the same run key when there is one, so a rerun creates
    nothing. A ``@champion`` rollback of the series killed part way is finished first
    (:func:`finish_left_rollback`).

    Args:
        settings: the run's settings.
        plan: the run plan.
        item: the series to train (one of ``plan.series``).
        airflow: the Airflow run, recorded as tags.
        lineup: candidates, policy and spec (default: :func:`production_lineup`); its
            configuration hash must be the plan's.

    Returns:
        The :class:`TrainedSeries` (also ``summary.json`` of the MLflow run).

    Raises:
        SeriesError: the series cannot be modelled (gap, too short, unknown).
        ConfigMismatch: the plan was made with another configuration.
        TrackingUnavailable: MLflow's store is busy or unreachable (transient).
    """
    started = time.perf_counter()
    plan, item = RunPlan.of(plan), WorkItem.of(item)
    # A rollback of the series killed part way is finished first, so the run goes on where the registry and the store agree.
    store = open_store(settings)
    finish_left_rollback(settings, store, item.series_id)
    # The cheap path first: a run key already published carries what it trained (no MLflow, no model).
    published = _published_training(settings, plan, item)
    if published is not None:
        logger.info("%s: run key %s already published (%s): skipped", item.series_id, item.run_key, published.run_id)
        log_timings(item.series_id, "train_skipped", {"total": time.perf_counter() - started})
        return published

    from pipeline import locks, tracking
    from pipeline.publish import pinned

    ids = AirflowIds.of(airflow) if airflow is not None else None
    lineup = lineup or production_lineup(settings)
    if lineup.config_hash != plan.config_hash:
        raise ConfigMismatch(
            f"the run plan was made with configuration {plan.config_hash}, this worker has {lineup.config_hash}: plan the run again"
        )

    def waiting(lock: dict[str, Any]) -> None:
        logger.warning("run key %s is being trained by %s: waiting to reuse its result", item.run_key, lock.get("owner"))

    # One trainer per run key; dead runs of the key are healed only while holding its lock.
    with locks.run_key_lock(store, item.run_key, stale_after=settings.lock_stale_seconds, on_wait=waiting):
        with tracking.transient_errors():
            client = tracking.configure(settings)
            tracking.check_not_renamed(client, item.series_id)  # before a complete run's version seems deleted
            done = tracking.find_complete_run(client, item.run_key)
            if done is not None:
                reused = _reused_summary(client, done.info.run_id)
                if reused.pinned and not pinned(store, plan.vintage):
                    # A pinned run trained the key (the series' data is the same in both vintages) and moved no
                    # alias: a run on the latest vintage trains it again through the champion gate. The key's
                    # versions are found again by its tag; the pinned run stays, complete, as their lineage.
                    logger.info("run key %s was trained on an older vintage, with no champion gate: training it again", item.run_key)
                elif tracking.version_exists(client, item.series_id, reused.champion_version):
                    logger.info("run key %s already trained in MLflow run %s: reusing it", item.run_key, done.info.run_id)
                    return reused
                else:  # deleted by hand before its forecast was out: reusing the run would fail to publish forever
                    why = f"v{reused.champion_version}, which MLflow run {done.info.run_id} chose, is no longer in the registry"
                    logger.warning("run key %s: %s (deleted by hand): training it again", item.run_key, why)
                    tracking.retire_run(client, done.info.run_id, f"{why}: the run key was trained again")
            dead = tracking.heal_dead_runs(
                client, item.series_id, item.run_key, served_version=lambda: _served_version(store, item.series_id)
            )
            if dead:
                logger.warning("run key %s: marked %d dead MLflow run(s) FAILED: %s", item.run_key, len(dead), ", ".join(dead))
        return _train_and_register(settings, store, client, plan, item, ids, lineup, started)


def finish_left_rollback(settings: Settings, store: ObjectStore, series_id: str) -> tuple[str, str] | None:
    """Finish a ``@champion`` rollback of the series killed part way, before a forecast run trains it; ``(from, to)`` if it did.

    A killed rollback leaves its intent (:func:`pipeline.layout.rollback_intent`) and may leave
    ``@champion`` on the version it moved to while ``latest.json`` serves the forecast it was
    moving away from. Without this, only the next ``co2cast rollback`` of the series finished it:
    a forecast run of the same data found its run key served and did nothing, and a run of new
    data put its gate before a half-moved ``@champion``. Under the series' registry lock, as the
    rollback itself, :func:`_finish_rollback` finishes it (or drops an intent that moved nothing,
    or was overtaken) and logs one line saying which. One store read when there is no intent.
    """
    if not store.exists(layout.rollback_intent(series_id)):
        return None
    from pipeline import tracking
    from pipeline.locks import series_lock

    with tracking.transient_errors(), series_lock(store, series_id, scope="registry"):
        client = tracking.configure(settings)
        tracking.check_not_renamed(client, series_id)
        return _finish_rollback(client, store, series_id)


def _served_version(store: ObjectStore, series_id: str) -> str | None:
    """The model version ``latest.json`` serves for a series, if it serves one."""
    from pipeline.publish import serving_pointer

    served = serving_pointer(store, series_id)
    return str(served["model_version"]) if served is not None and served.get("model_version") else None


def _reused_summary(client: Any, run_id: str) -> TrainedSeries:
    """The :class:`TrainedSeries` a complete MLflow run recorded, verified (a rerun trusts it to publish a version).

    Raises:
        IntegrityError: ``summary.json`` was changed or removed, or cannot be read.
    """
    from pipeline import tracking
    from pipeline.artifacts import IntegrityError

    data = tracking.read_verified(client, run_id, tracking.SUMMARY_ARTIFACT)
    assert data is not None
    try:
        return TrainedSeries.of(json.loads(data))
    except ValueError as error:  # json's and pydantic's errors
        first = str(error).splitlines()[0]
        raise IntegrityError(f"{tracking.SUMMARY_ARTIFACT} of MLflow run {run_id} cannot be read ({first}); refusing to reuse it") from None


def _train_and_register(
    settings: Settings,
    store: ObjectStore,
    client: Any,
    plan: RunPlan,
    item: WorkItem,
    ids: AirflowIds | None,
    lineup: Lineup,
    started: float,
) -> TrainedSeries:
    """The body of :func:`train_series` once it holds the run key's lock and found nothing to reuse."""
    import mlflow

    from pipeline import core, ingest, tracking
    from pipeline.locks import series_lock
    from pipeline.publish import pinned, serving_pointer

    tidy = ingest.read_curated(store, plan.vintage, item.entity, item.variable)  # the plan checked both exist
    series = core.prepare(tidy, item.entity, item.variable, plan.as_of_year, lineup.spec)
    revision = history_revision(settings, store, plan, item, series)
    provisional = _is_provisional(tidy, item, plan.as_of_year)
    fit_started = time.perf_counter()
    result = core.run_series(series, lineup.candidates, lineup.select, lineup.spec)
    assert result.selection is not None
    fit_seconds = time.perf_counter() - fit_started

    gx = store.read_json_or_none(layout.curated_gx_result(plan.vintage)) or {}
    tags = {
        tracking.RUN_KEY_TAG: item.run_key,
        tracking.SERIES_TAG: series.series_id,
        "co2cast.vintage": plan.vintage,
        "co2cast.as_of_year": str(plan.as_of_year),
        "co2cast.config_hash": plan.config_hash,
        HISTORY_TAG: core.history_hash(series.years, series.values, provisional),
        "co2cast.gx_success": str(bool(gx) and all(r.get("success") for r in gx.values())).lower(),
        "co2cast.gx_result": store.uri(layout.curated_gx_result(plan.vintage)),
        **({f"airflow.{k}": v for k, v in ids.to_xcom().items()} if ids else {}),
    }
    if revision is not None:
        tags |= {"co2cast.revision": revision.describe(), "co2cast.revision_material": str(revision.material).lower()}
    mlflow_started = time.perf_counter()
    with tracking.transient_errors(), mlflow.start_run(run_name=f"{series.series_id} asof={plan.as_of_year}", tags=tags) as parent:
        if revision is not None:
            mlflow.log_params({f"revision_{k}": v for k, v in revision.to_dict().items()})
        infos = tracking.log_series_result(result, lineup.spec, tags, metric=getattr(lineup.select, "metric", "mase"))
        candidates = core.candidate_forecasts(result, plan.as_of_year, plan.horizon_end, lineup.spec.levels)
        tracking.log_table(candidates, tracking.CANDIDATES_ARTIFACT)
        pause_point("after_log")
        version_tags = {**tags, "co2cast.mlflow_run_id": parent.info.run_id}
        # Two runs of one series (two as-of years at once) decide and move its aliases in turn.
        with series_lock(store, series.series_id, scope="registry"):
            older_vintage = pinned(store, plan.vintage)  # a --vintage of an older release: like a backfill
            served = serving_pointer(store, series.series_id)  # what a backfill must not move the aliases away from
            served_as_of = int(served["as_of_year"]) if served is not None else None
            versions = tracking.register_selection(
                client,
                result,
                infos,
                item.run_key,
                version_tags,
                move_aliases=not older_vintage,
                served_as_of=served_as_of,
                metric=_metric(lineup),
            )
            pause_point("after_register")
            decided: str | None = None
            if older_vintage:
                logger.info("vintage %s is not the latest curated one: @champion and the family aliases stay", plan.vintage)
                family, version = result.selection.champion, versions[result.selection.champion]
            else:
                family, version, decided = champion_gate(
                    settings, client, store, result, versions, item.run_key, plan.as_of_year, lineup, version_tags, served_as_of
                )
        pause_point("after_gate")
        if result.evaluation is not None:
            reason = decided or _decision_reason(store, series.series_id, item.run_key, result.selection.reason)
            tracking.log_decision(result.evaluation, family, reason, metric=getattr(lineup.select, "metric", "mase"))
        mlflow.set_tags({"co2cast.champion": f"v{version} ({family})", "co2cast.selection": result.selection.reason[:5000]})
        trained = TrainedSeries(
            series_id=series.series_id,
            run_key=item.run_key,
            run_id=parent.info.run_id,
            model_name=tracking.registered_name(series.series_id),
            champion_family=family,
            champion_version=version,
            versions=versions,
            best_backtest_family=result.selection.best,
            selection_metric=_metric(lineup),
            scores={name: {k: round(float(v), 6) for k, v in s.items()} for name, s in result.scores().items()},
            as_of_year=plan.as_of_year,
            vintage=plan.vintage,
            revision=revision.to_dict() | {"text": revision.describe()} if revision is not None else None,
            left_out=series.left_out.to_dict() if series.left_out is not None else None,
            provisional=provisional,
            pinned=older_vintage,
        )
        timings = {"fit": fit_seconds, "mlflow": time.perf_counter() - mlflow_started}
        trained = trained.model_copy(update={"timings": {k: round(v, 3) for k, v in timings.items()}})
        tracking.mark_complete(trained.to_xcom())
    log_timings(item.series_id, "train", {**timings, "total": time.perf_counter() - started})
    return trained


#: The marker of a timing line in task logs (``benchmarks/bench_all_series.py`` reads them).
TIMING_MARKER = "co2cast timing"


def log_timings(series_id: str, step: str, seconds: Mapping[str, float]) -> None:
    """Log a step's timings as one JSON line after :data:`TIMING_MARKER`."""
    record = {"series_id": series_id, "step": step, **{k: round(float(v), 3) for k, v in seconds.items()}}
    logger.info("%s %s", TIMING_MARKER, json.dumps(record, sort_keys=True))


def _published_training(settings: Settings, plan: RunPlan, item: WorkItem) -> TrainedSeries | None:
    """What a run key's published manifest says was trained, or ``None``.

    ``None`` when the key is not published, its manifest is older than the record of what was
    trained or was edited since ``latest.json`` recorded it, or a pinned run trained it
    (:func:`pipeline.publish.pinned`: no champion gate, no alias moved) and this run is on the
    latest vintage, which must take the key through the gate.
    """
    from pipeline.publish import latest_pointer, pinned, readable_manifest, vouches

    store = open_store(settings)
    found = readable_manifest(store, layout.forecast_manifest(item.series_id, plan.as_of_year, item.run_key))
    if found is None or not isinstance(found.get("trained"), dict):
        return None
    current = latest_pointer(store, item.series_id)
    if current is not None and current["manifest"] == found.get("key") and not vouches(store, current):
        return None  # edited since latest.json recorded it: what it says was trained comes from MLflow instead
    trained = TrainedSeries.of(found["trained"])
    return None if trained.pinned and not pinned(store, plan.vintage) else trained


def _is_provisional(tidy: pd.DataFrame, item: WorkItem, as_of_year: int) -> bool:
    """Whether the vintage flags the series' as-of year provisional (its newest year)."""
    if "provisional" not in tidy.columns:
        return False
    row = tidy.loc[(tidy["entity"] == item.entity) & (tidy["variable"] == item.variable) & (tidy["year"] == as_of_year), "provisional"]
    return bool(row.any())


def history_revision(settings: Settings, store: ObjectStore, plan: RunPlan, item: WorkItem, series: Any) -> Any:
    """How this vintage revised the history the series' last published forecast was trained on.

    Compares (:func:`pipeline.revisions.compare_histories`, threshold
    ``CO2CAST_REVISION_THRESHOLD``) the series as the last published forecast's vintage held
    it, up to that forecast's as-of year or this run's, whichever is earlier (its stretch after
    the last gap, what it was trained on), with the prepared series of this run. Logs a
    warning when the revision is material.

    Returns:
        The :class:`pipeline.revisions.Revision`, or ``None`` when nothing was published yet,
        the last forecast used this very vintage, this run's vintage is older than the latest
        curated one (the comparison would run backwards), or the last forecast's vintage is no
        longer readable.
    """
    import pandas as pd

    from pipeline import ingest, track_record
    from pipeline.publish import latest_pointer, pinned, readable_manifest
    from pipeline.revisions import compare_histories
    from pipeline.series import recent_stretch_start

    pointer = latest_pointer(store, item.series_id)
    manifest = readable_manifest(store, pointer["manifest"]) if pointer and pointer["manifest"].startswith(layout.FORECASTS) else None
    if not manifest or manifest.get("vintage") in (None, plan.vintage) or pinned(store, plan.vintage):
        return None  # nothing to compare with, or an older release than the one served (backwards)
    try:
        old = ingest.read_curated(store, manifest["vintage"], item.entity, item.variable)
    except (KeyError, PermanentError):
        logger.info("%s: vintage %s of the last forecast is not readable; no revision check", item.series_id, manifest["vintage"])
        return None
    previous = track_record.actuals_of(old, item.entity, item.variable)
    # Both cut at the earlier as-of year: a backfill's history ends before the served
    # forecast's, and the years between are not dropped by the new release.
    previous = previous[previous.index <= min(int(manifest["as_of_year"]), plan.as_of_year)]
    previous = previous.iloc[recent_stretch_start(previous.index.to_numpy()) :]  # what it was trained on
    revision = compare_histories(previous, pd.Series(series.values, index=series.years), settings.revision_threshold)
    line = f"{item.series_id}: vintage {plan.vintage} against {manifest['vintage']}: {revision.describe()}"
    (logger.warning if revision.material else logger.info)("%s", line)
    return revision


def _metric(lineup: Lineup) -> str:
    return str(getattr(lineup.select, "metric", "mase"))


def current_champion_scores(client: Any, result: Any, current: Any, lineup: Lineup) -> tuple[dict[str, float] | None, Any]:
    """The current ``@champion``'s scores on *this* run's backtest windows.

    Honest comparison: the champion's recipe (its class and hyperparameters, without its
    calibration wrapper) is refitted through the same rolling-origin windows as the challenger.
    Its own recorded backtest was on the windows of its as-of year, and its frozen weights were
    fitted on data that includes this run's test years, so neither is comparable. When the
    recipe is one of this run's candidates its result on these windows is reused (identical).

    Returns:
        ``(metrics, backtest result)``, or ``(None, None)`` when the recipe cannot be rebuilt or
        fails on these windows (then the challenger may take ``@champion``).

    Raises:
        Exception: MLflow could not hand the champion's model over now (a server down or
            answering 503, a busy SQLite file; :func:`pipeline.tracking.is_transient`): the
            gate is not decided on a failure a retry may cure.
    """
    from pipeline import tracking
    from pipeline.backtest import evaluate_candidates
    from pipeline.models.base import from_spec, to_spec
    from pipeline.models.calibrated import CalibratedForecaster

    try:
        model = tracking.load_registered(current.name, str(current.version))
    except Exception as error:  # an unreadable old version cannot defend its title
        if tracking.is_transient(error):  # but one MLflow could not hand over now is not unreadable: retry
            raise
        logger.warning("cannot load the current champion v%s: %s", current.version, error)
        return None, None
    inner = model.model if isinstance(model, CalibratedForecaster) else model
    recipe = to_spec(inner)
    for candidate in result.evaluation.results.values():
        inner_spec = candidate.spec
        if inner_spec == recipe:
            return dict(candidate.metrics), candidate
    plan = result.evaluation.plan
    try:
        evaluation = evaluate_candidates(
            {"champion": from_spec(recipe)},
            result.series.years,
            result.series.values,
            horizon=plan.horizon,
            n_origins=plan.n_origins,
            levels=lineup.spec.levels,
        )
    except Exception as error:
        logger.warning("the current champion v%s failed on this run's windows: %s", current.version, error)
        return None, None
    if [s.train_end for s in evaluation.plan.splits] != [s.train_end for s in plan.splits]:
        return None, None
    found = evaluation.results.get("champion")
    return (dict(found.metrics), found) if found is not None else (None, None)


def _fitted_on_other_data(version: Any, tags: Mapping[str, str]) -> bool:
    """Whether a registered version was fitted on another history of its as-of year than this run's (a revision).

    Versions registered before the history digest was tagged are compared by vintage.
    """
    if HISTORY_TAG in version.tags:
        return version.tags[HISTORY_TAG] != tags.get(HISTORY_TAG)
    return version.tags.get("co2cast.vintage") != tags.get("co2cast.vintage")


def champion_gate(
    settings: Settings,
    client: Any,
    store: ObjectStore,
    result: Any,
    versions: Mapping[str, str],
    run_key: str,
    as_of_year: int,
    lineup: Lineup,
    tags: Mapping[str, str],
    served_as_of: int | None = None,
) -> tuple[str, str, str | None]:
    """Decide who holds ``@champion`` after this run; returns the ``(family, version)`` this run publishes and the reason.

    The reason is the one this call wrote to the alias history, or ``None`` when it decided
    nothing (a backfill, a rolled-back run key, a run key already decided): then the caller
    looks up the run key's earlier record (:func:`_decision_reason`).

    * A run for an older as-of year than ``@champion``'s or than the forecast ``latest.json``
      serves (``served_as_of``) is a backfill and never moves it: it publishes its own winner
      under its ``asof=`` prefix (``latest.json`` does not move either). The served year counts
      too because a person may remove ``@champion`` or edit its ``co2cast.as_of_year`` tag in
      the MLflow UI (an unreadable tag is an unknown age, :func:`pipeline.tracking.version_as_of`).
    * A rerun of the same run key finds ``@champion`` already decided and moves nothing.
    * Otherwise the challenger (the selection's winner) takes ``@champion`` only if
      :func:`pipeline.selection.champion_gate` says so: it beats the current champion on the
      same windows on the selection metric and is no worse than naive. If not, the champion
      stays and its version's forecast is published; when this run is for a newer as-of year
      than the champion's, the champion's *recipe* stays: refitted (and calibrated) on this
      as-of year's data and registered under its family, so ``@champion`` and ``latest.json``
      always belong to the newest as-of year published; the same when this run is for the
      champion's as-of year but the history it was fitted on has been revised since (a new
      vintage), so a published forecast always comes from the data its manifest names; when
      the refitted recipe's forecast breaks the output bounds
      (:func:`pipeline.core.forecast_beyond_bounds`), the challenger takes ``@champion`` instead.
    * A run on a vintage that is not the latest curated one is not gated at all (the caller
      treats it like a backfill; :func:`pipeline.publish.pinned`).

    Every decision (moved or not) is appended to the alias history (``history/<series_id>.json``).
    The caller holds the series' registry lock, so two as-of years of a series decide in turn.
    """
    from pipeline import tracking
    from pipeline.selection import champion_gate as gate

    del settings
    sid, selection = result.series.series_id, result.selection
    challenger, challenger_version = selection.champion, versions[selection.champion]
    current = tracking.alias_version(client, sid, "champion")
    if _rolled_back(store, sid, as_of_year, run_key):
        held = f"v{current.version}" if current is not None else "unset"
        logger.info("a rollback took run key %s's forecast out of service: @champion stays %s", run_key, held)
        return challenger, challenger_version, None
    if result.evaluation is None:  # a fixed policy (tests, studies): its champion takes the alias
        tracking.move_alias(client, sid, "champion", challenger_version, reason=selection.reason)
        return challenger, challenger_version, None
    if current is not None and current.tags.get(tracking.RUN_KEY_TAG) == run_key:
        return current.tags.get(tracking.FAMILY_TAG, challenger), str(current.version), None
    current_as_of = tracking.version_as_of(current)
    if current is not None and current_as_of is not None and current_as_of > as_of_year:
        logger.info("as of %s is older than @champion's as of %s: @champion stays v%s", as_of_year, current_as_of, current.version)
        return challenger, challenger_version, None
    if served_as_of is not None and served_as_of > as_of_year:
        held = f"v{current.version}" if current is not None else "unset"
        logger.info("as of %s is older than the forecast latest.json serves (as of %s): @champion stays %s", as_of_year, served_as_of, held)
        return challenger, challenger_version, None
    if current is not None and current_as_of is None and served_as_of is not None:
        current_as_of = served_as_of  # its tag was removed or edited: its age is that of what is served
    if current is not None and str(current.version) in versions.values():
        return current.tags.get(tracking.FAMILY_TAG, challenger), str(current.version), None
    metric = _metric(lineup)
    scores = result.candidates
    current_scores, recipe = current_champion_scores(client, result, current, lineup) if current is not None else (None, None)
    if current is not None and current_scores is None:
        current_scores = {metric: float("nan")}
    benchmark = str(getattr(lineup.select, "benchmark", "naive"))  # the policy's (naive by default)
    decision = gate(current_scores, scores[challenger].scores, scores[benchmark].scores, metric=metric)
    windows = [[int(result.series.years[s.train_end]), int(result.series.years[s.test_end - 1])] for s in result.evaluation.plan.splits]
    record = {
        "at": _now(),
        "alias": "champion",
        "moved": decision.promote,
        "from_version": str(current.version) if current is not None else None,
        "from_family": current.tags.get(tracking.FAMILY_TAG) if current is not None else None,
        "to_version": challenger_version if decision.promote else (str(current.version) if current is not None else None),
        "challenger_version": challenger_version,
        "challenger_family": challenger,
        "metric": metric,
        "champion_score": decision.current,
        "challenger_score": decision.challenger,
        "naive_score": decision.naive,
        "windows": windows,
        "reason": decision.reason,
        "selection": selection.reason,
        "run_key": run_key,
        "as_of_year": as_of_year,
    }
    if decision.promote or current is None:
        tracking.move_alias(client, sid, "champion", challenger_version, reason=decision.reason)
        family, version = challenger, challenger_version
        record["moved"], record["to_version"] = True, challenger_version
    elif recipe is not None and current_as_of is not None and (current_as_of < as_of_year or _fitted_on_other_data(current, tags)):
        from pipeline.core import forecast_beyond_bounds
        from pipeline.selection import publishable

        family = current.tags.get(tracking.FAMILY_TAG, "champion")
        refit_on = f"as of {as_of_year}"
        if current_as_of == as_of_year:
            refit_on += f" on vintage {tags['co2cast.vintage']}'s revised history"
        policy = lineup.select
        model = publishable(recipe, calibrate=getattr(policy, "calibrate", True), floor=getattr(policy, "floor", 0.0))
        model = model.fit(result.series.values, result.series.years)
        problem = forecast_beyond_bounds(model, result.series, lineup.spec)
        own = result.evaluation.results.get(family)
        if problem is None and family in versions and own is not None and own.spec == recipe.spec:
            version = versions[family]  # this run's candidate of the family is that recipe, fitted on the same data
            reason = f"{decision.reason}; its recipe ({family}) refitted {refit_on}"
        elif problem is None:  # a version of its own: this run's candidate of the family's name may be another recipe
            info = tracking.log_forecaster(model, lineup.spec.horizon_end, lineup.spec.levels, name="champion_refit", family=family)
            title = f"{sid}: {family}, @champion's recipe refitted {refit_on}"
            tracking.log_fan_chart(model, result.series, lineup.spec, title=title, artifact="champion_refit/fan_chart.svg")
            naive = scores["naive"].scores.get(metric) if "naive" in scores else None
            text = tracking.version_description(family, metric, decision.current, naive, tags, run_key, refit=True)
            registered = tracking.register(
                client, info.model_uri, sid, run_key, family, dict(tags), digest=info.digest, refit=True, description=text
            )
            version = str(registered.version)
            reason = f"{decision.reason}; its recipe ({family}) refitted {refit_on}"
        else:  # the publish gate would refuse it: the challenger, which keeps the bounds, serves
            reason = f"{decision.reason}; but its recipe ({family}) refitted {refit_on}: {problem}; the challenger takes it"
            family, version = challenger, challenger_version
        tracking.move_alias(client, sid, "champion", version, reason=reason)
        record.update(moved=True, to_version=version, reason=reason)
    else:
        family, version = current.tags.get(tracking.FAMILY_TAG, "?"), str(current.version)
    append_history(store, sid, record)
    return family, version, str(record["reason"])


def _decision_reason(store: ObjectStore, series_id: str, run_key: str, selection_reason: str) -> str:
    """Why the family a run publishes holds @champion when its gate decided nothing this time: the gate's earlier record of
    the run key, else (a backfill) the selection's reason."""
    from pipeline.publish import champion_records

    mine = [r for r in champion_records(store, series_id) if r.get("run_key") == run_key and r.get("reason")]
    return str(mine[-1]["reason"]) if mine else selection_reason


def _rolled_back(store: ObjectStore, series_id: str, as_of_year: int, run_key: str) -> bool:
    """Whether a rollback took this run key's forecast out of service (``latest.json``'s ``rolled_back``).

    Its publish will not be served (:func:`pipeline.publish.superseded`), so its gate must not
    move ``@champion`` either: a run killed after its gate moved it, rolled back, then run again
    (its training is not complete, so it trains and gates anew) left ``@champion`` on a version
    ``latest.json`` never serves. With no pointer to read (removed to be rebuilt, or left
    dangling): from the alias history (:func:`pipeline.publish.rolled_back_in_history`), as the
    publish rebuilds it.
    """
    from pipeline.publish import rolled_back_in_history, serving_pointer

    pointer = serving_pointer(store, series_id)
    rolled_back = pointer.get("rolled_back", []) if pointer is not None else rolled_back_in_history(store, series_id)
    return layout.forecast_manifest(series_id, as_of_year, run_key) in rolled_back


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def append_history(store: ObjectStore, series_id: str, record: Mapping[str, Any]) -> None:
    """Append one record to the series' alias history in the store."""
    from pipeline.locks import fence, series_lock

    key = layout.alias_history(series_id)
    with series_lock(store, series_id):  # two runs of a series must not drop each other's record
        history = store.read_json_or_none(key, layout.ALIAS_HISTORY) or []
        fence(store, series_id)
        store.write_json(key, [*history, dict(record)])


def _record_move(
    store: ObjectStore, series_id: str, old: str | None, new: str | None, reason: str, run_key: Any, as_of_year: Any, **extra: Any
) -> None:
    """Append the record of a move of ``@champion`` made outside the gate (a rollback, a refused publish and its undoing).

    A rollback of another alias is recorded the same way, with its ``alias``.
    """
    record = {"at": _now(), "alias": "champion", "moved": True, "from_version": old, "to_version": new, **extra}
    append_history(store, series_id, {**record, "reason": reason, "run_key": run_key, "as_of_year": as_of_year})


def alias_history(settings: Settings, series_id: str) -> list[dict[str, Any]]:
    """The series' alias history (``co2cast history``), oldest first."""
    return list(open_store(settings).read_json_or_none(layout.alias_history(series_id), layout.ALIAS_HISTORY) or [])


def forecasts_as_of(settings: Settings, series_id: str, as_of_year: int) -> list[dict[str, Any]]:
    """What was forecast for a series as of a year: every registered version and published manifest.

    One MLflow search on the ``co2cast.as_of_year`` tag, plus the manifests under ``asof=<year>``.
    A manifest goes with a version when it names its number and the digest of its model files
    (``model_sha256``, the version's tag :data:`pipeline.artifacts.DIGEST_TAG`): a registered model
    deleted in the MLflow UI and registered afresh numbers its versions from 1 again. A published
    forecast whose version is not in the registry any more is listed too (``registered`` false).
    """
    from pipeline import tracking
    from pipeline.artifacts import DIGEST_TAG
    from pipeline.publish import published_manifests

    store = open_store(settings)
    with tracking.transient_errors():
        client = tracking.configure(settings)
        tracking.check_not_renamed(client, series_id)
        versions = tracking.versions_as_of(client, series_id, as_of_year)
    published: dict[str, list[dict[str, Any]]] = {}  # a version may serve several run keys (a kept champion)
    manifests, damaged = published_manifests(store, series_id, as_of_year)
    for manifest in manifests:
        published.setdefault(str(manifest.get("model_version")), []).append(manifest)
    if damaged:  # logged one by one; a damaged manifest lists no version and is never served again
        logger.warning("%s as of %d: %d manifest(s) unreadable, not listed: %s", series_id, as_of_year, len(damaged), ", ".join(damaged))
    rows, listed = [], set()
    for version in versions:
        mine = [m for m in published.get(str(version.version), []) if _same_model(m, version.tags.get(DIGEST_TAG))]
        listed.update(m["key"] for m in mine)
        for manifest in mine or [None]:
            rows.append(
                {
                    "version": str(version.version),
                    "family": version.tags.get(tracking.FAMILY_TAG, "?"),
                    "vintage": version.tags.get("co2cast.vintage", "?"),
                    "run_key": version.tags.get(tracking.RUN_KEY_TAG, "?"),
                    "manifest": manifest["key"] if manifest else "",
                    "published": store.uri(manifest["key"]) if manifest else "",
                    "registered": True,
                }
            )
    for manifest in (m for ms in published.values() for m in ms if m["key"] not in listed):
        with tracking.transient_errors():  # its version's as-of tag removed by hand, or the version (or model) deleted
            found = tracking.registered_version(client, series_id, str(manifest.get("model_version")))
        rows.append(
            {
                "version": str(manifest.get("model_version")),
                "family": str(manifest.get("model_family", "?")),
                "vintage": str(manifest.get("vintage", "?")),
                "run_key": str(manifest.get("run_key", "?")),
                "manifest": manifest["key"],
                "published": store.uri(manifest["key"]),
                "registered": found is not None and _same_model(manifest, found.tags.get(DIGEST_TAG)),
            }
        )
    return rows


def _same_model(manifest: Mapping[str, Any], digest_tag: str | None) -> bool:
    """Whether a manifest published the model a version's digest tag describes (``True`` when either is not recorded)."""
    recorded = manifest.get("model_sha256")
    if not recorded or not digest_tag:
        return True
    try:
        return bool(json.loads(digest_tag) == recorded)
    except ValueError:
        return True


def publish_series(
    settings: Settings,
    plan: RunPlan | dict[str, Any],
    trained: TrainedSeries | dict[str, Any],
    airflow: AirflowIds | dict[str, Any] | None = None,
    lineup: Lineup | None = None,
) -> PublishedForecast:
    """Forecast with the champion version to the horizon end, gate the table, publish it.

    Args:
        settings: the run's settings.
        plan: the run plan.
        trained: what :func:`train_series` returned for the series.
        airflow: the Airflow run, recorded in the manifest.
        lineup: for the interval levels (default: :func:`production_lineup`).

    Returns:
        The :class:`PublishedForecast`.

    Raises:
        PublishRefused: the table failed the ``forecast_output`` suite; nothing was written.
    """
    from pipeline.publish import republish_existing

    started = time.perf_counter()
    plan, trained = RunPlan.of(plan), TrainedSeries.of(trained)
    store = open_store(settings)
    existing = republish_existing(store, trained.series_id, plan.as_of_year, trained.run_key, plan.vintage)
    if existing is not None:  # the cheap path: this run key is published and verifies
        manifest, moved = existing
        item = next((i for i in plan.series if i.series_id == trained.series_id), None)
        # A scorecard an earlier attempt failed to update after publishing (or never wrote) is scored now.
        problem = _score_after_publish(settings, plan, item, trained) if item is not None and _scorecard_behind(store, plan, item) else None
        log_timings(trained.series_id, "publish_skipped", {"total": time.perf_counter() - started})
        published = _published(store, trained, manifest).model_copy(update={"scorecard_problem": problem})
        return _champion_follows(settings, store, trained, published, served_again=moved)
    with _champion_restored_on_refusal(settings, store, trained):
        manifest, item, mlflow_seconds = _publish_new(settings, store, plan, trained, airflow, lineup, started)
    publish_seconds = time.perf_counter() - started - mlflow_seconds
    # The track record: every earlier forecast against this vintage's actuals. The forecast is
    # published (latest.json and @champion moved): a failure here is reported, not a refusal.
    problem = _score_after_publish(settings, plan, item, trained) if item is not None else None
    total = time.perf_counter() - started
    score_seconds = total - mlflow_seconds - publish_seconds
    timings = {"mlflow": mlflow_seconds, "publish": publish_seconds, "score": score_seconds, "total": total}
    log_timings(trained.series_id, "publish", timings)
    published = _published(store, trained, manifest).model_copy(update={"scorecard_problem": problem})
    return _champion_follows(settings, store, trained, published)


def _score_after_publish(settings: Settings, plan: RunPlan, item: WorkItem, trained: TrainedSeries) -> str | None:
    """:func:`score_series` once the forecast is published: why the scorecard was not updated (one line), or ``None``.

    A transient failure is raised (the retry takes the cheap path, which scores again); any
    other is logged with its traceback and returned, so the run reports the forecast as
    published with its scorecard not updated, never as "nothing was published".
    """
    try:
        score_series(settings, plan, item, trained.run_id)
    except TransientError:
        raise
    except Exception as error:  # a damaged scorecard, an unreadable vintage, a fault in scoring
        problem = f"{type(error).__name__}: {_first_line(error)}" if not isinstance(error, Co2castError) else _first_line(error)
        logger.warning("%s: published; scorecard not updated: %s", trained.series_id, problem, exc_info=True)
        return problem
    return None


def _scorecard_behind(store: ObjectStore, plan: RunPlan, item: WorkItem) -> bool:
    """Whether a rerun on the latest vintage finds the series' scorecard missing, unreadable or scored on another vintage.

    An empty scorecard is the usual state of a series whose forecasts have no actual yet (every
    series of a release's latest as-of year), so it does not count: re-scoring it on every rerun
    would read the vintage and verify every published file for nothing. It records no vintage,
    so a scoring that failed after a new vintage gave its first actuals is caught only by the
    next run key's publish.
    """
    from pipeline import track_record
    from pipeline.publish import pinned

    if pinned(store, plan.vintage):
        return False  # an older release never re-scores (score_series)
    try:
        card = track_record.read_scorecard(store, item.series_id)
    except Exception:  # damaged: scoring rewrites it
        return True
    return card is None or (not card.empty and set(card["scored_vintage"].astype(str)) != {plan.vintage})


def _publish_new(
    settings: Settings,
    store: ObjectStore,
    plan: RunPlan,
    trained: TrainedSeries,
    airflow: AirflowIds | dict[str, Any] | None,
    lineup: Lineup | None,
    started: float,
) -> tuple[Manifest, WorkItem | None, float]:
    """The body of :func:`publish_series` when its run key is not published yet: ``(manifest, item, seconds in MLflow)``."""
    from pipeline import artifacts, core, ingest, tracking
    from pipeline.publish import CANDIDATES_FILE, forecast_table, plausible_candidates, publish, read_candidates

    ids = AirflowIds.of(airflow) if airflow is not None else None
    lineup = lineup or production_lineup(settings)
    with tracking.transient_errors():
        client = tracking.configure(settings)
        try:
            model = tracking.load_registered(trained.model_name, trained.champion_version)
        except artifacts.ArtifactGone as gone:  # nothing to restore it from: reusing the run would refuse for ever
            try:
                tracking.retire_run(client, trained.run_id, f"{gone}: the run key is trained again")
            except Exception as error:  # a run deleted in MLflow too is not reused anyway
                if tracking.is_transient(error):
                    raise
                logger.warning("%s: MLflow run %s could not be retired: %s", trained.series_id, trained.run_id, _first_line(error))
            raise artifacts.ArtifactGone(f"{gone}; nothing was published: run the series again, which trains its run key afresh") from None
        digest = artifacts.registered_digest(trained.model_name, trained.champion_version)
        diagnostics = tracking.read_verified(client, trained.run_id, tracking.DIAGNOSTICS_ARTIFACT)
        candidates = tracking.read_verified(client, trained.run_id, tracking.CANDIDATES_ARTIFACT, optional=True)
    mlflow_seconds = time.perf_counter() - started
    table = forecast_table(
        core.forecast_frame(model, plan.as_of_year, plan.horizon_end, lineup.spec.levels),
        series_id=trained.series_id,
        model_name=trained.model_name,
        model_version=trained.champion_version,
        family=trained.champion_family,
        vintage=plan.vintage,
        as_of_year=plan.as_of_year,
        provisional=trained.provisional,
    )
    meta = {
        "series_id": trained.series_id,
        "vintage": plan.vintage,
        "as_of_year": plan.as_of_year,
        "model_name": trained.model_name,
        "model_version": trained.champion_version,
        "model_family": trained.champion_family,
        "model_sha256": json.loads(digest or "{}"),
        "mlflow_run_id": trained.run_id,
        "airflow": ids.to_xcom() if ids else {},
        "provisional": trained.provisional,
        "revision": trained.revision,
        "left_out": trained.left_out,
        "trained": trained.to_xcom(),
    }
    extras = {"diagnostics.json": diagnostics, "backtest.json": json.dumps(trained.scores, indent=2, sort_keys=True).encode()}
    item = next((i for i in plan.series if i.series_id == trained.series_id), None)
    history_max = None
    if item is not None:  # the forecast is bounded relative to the history it was trained on
        tidy = ingest.read_curated(store, plan.vintage, item.entity, item.variable)
        history = core.prepare(tidy, item.entity, item.variable, plan.as_of_year, lineup.spec)
        history_max = float(history.values.max())
    if candidates is not None:  # the fitted candidates' forecasts (a run logged before they were has none)
        kept, dropped = plausible_candidates(
            read_candidates(candidates, f"{tracking.CANDIDATES_ARTIFACT} of MLflow run {trained.run_id}"), history_max
        )
        if dropped:
            logger.warning("%s: candidates' forecasts out of bounds, not published: %s", trained.series_id, ", ".join(dropped))
            meta["candidates_dropped"] = dropped
        extras[CANDIDATES_FILE] = kept.to_parquet(index=False)
    manifest = publish(
        store,
        table,
        series_id=trained.series_id,
        run_key=trained.run_key,
        horizon_end=plan.horizon_end,
        meta=meta,
        extras=extras,
        history_max=history_max,
    )
    return manifest, item, mlflow_seconds


@contextlib.contextmanager
def _champion_restored_on_refusal(settings: Settings, store: ObjectStore, trained: TrainedSeries) -> Iterator[None]:
    """Publishing a run key's forecast was refused for good: ``@champion`` goes back to what ``latest.json`` serves.

    The champion gate moved ``@champion`` when the series was trained; a forecast that is then
    refused (the ``forecast_output`` suite, a model or artefact that fails its digest) leaves
    ``latest.json`` on the earlier forecast. So the registry and the store agree again, the
    alias returns to the version ``latest.json`` serves (or is removed before a first forecast),
    recorded in the alias history with the refusal; :func:`_champion_follows` undoes it once
    the forecast is published after all (e.g. the damaged file restored from a backup).
    Transient errors are left to the retry, which may still publish.
    """
    try:
        yield
    except PermanentError as error:
        try:
            _restore_champion(settings, store, trained, str(error).splitlines()[0] if str(error) else type(error).__name__)
        except Co2castError as failed:  # the refusal is the error to report; this one is logged
            logger.error("%s: @champion could not be moved back after the refusal: %s", trained.series_id, failed)
        raise


def _restore_champion(settings: Settings, store: ObjectStore, trained: TrainedSeries, why: str) -> None:
    from pipeline import tracking
    from pipeline.locks import series_lock
    from pipeline.publish import latest_pointer

    sid = trained.series_id
    with tracking.transient_errors(), series_lock(store, sid, scope="registry"):
        client = tracking.configure(settings)
        current = tracking.alias_version(client, sid, "champion")
        if current is None or str(current.version) != trained.champion_version:
            return  # this run does not hold @champion (a backfill, or it moved since)
        pointer = latest_pointer(store, sid)
        served = None if pointer is None or pointer.get("model_version") is None else str(pointer["model_version"])
        if served == trained.champion_version:
            return
        back = f"@champion is back on v{served}, which latest.json serves" if served else "@champion removed: nothing is published"
        reason = f"the forecast of v{trained.champion_version} was refused ({why[:300]}); {back}"
        # The record first: killed after the alias moved without it, _champion_follows would find no
        # refusal to undo once the forecast is published. Killed between the two, @champion is still
        # this run's version, which _champion_follows then leaves alone (it is not the record's to_version).
        _record_move(store, sid, trained.champion_version, served, reason, trained.run_key, trained.as_of_year, publish_refused=True)
        name = tracking.registered_name(sid)
        if served is None:
            client.delete_registered_model_alias(name, "champion")
        else:
            client.set_registered_model_alias(name, "champion", served)  # its own alias tag (its previous) stays
        logger.warning("%s: the forecast of v%s was refused; @champion is back on %s", sid, trained.champion_version, served or "nothing")


def _champion_follows(
    settings: Settings, store: ObjectStore, trained: TrainedSeries, published: PublishedForecast, served_again: bool = False
) -> PublishedForecast:
    """After a publish: ``@champion`` returns to this run key's version when ``latest.json`` came back to it.

    Two cases: the last alias-history record is this run key's refusal
    (:func:`_champion_restored_on_refusal`) and ``latest.json`` now serves its forecast; or this
    rerun moved ``latest.json`` back to the run key's forecast published before
    (``served_again``: a configuration changed for a run and changed back, or a pointer left
    dangling), which the gate decided when the key was trained. Any other state is left as the
    gate, a rollback or a person made it (``co2cast summary`` flags a disagreement). Costs one
    store read unless there is something to undo.
    """
    if not published.served:
        return published
    if served_again:
        return _champion_serves_again(settings, store, trained, published)
    from pipeline.publish import champion_records

    records = champion_records(store, trained.series_id)  # no family alias's
    last = records[-1] if records else {}
    mine = last.get("run_key") == trained.run_key and last.get("from_version") == trained.champion_version
    if not (last.get("publish_refused") and mine):
        return published
    from pipeline import tracking
    from pipeline.locks import series_lock

    sid = trained.series_id
    with tracking.transient_errors(), series_lock(store, sid, scope="registry"):
        client = tracking.configure(settings)
        current = tracking.alias_version(client, sid, "champion")
        if (None if current is None else str(current.version)) != last.get("to_version"):
            return published  # moved since the refusal
        client.set_registered_model_alias(tracking.registered_name(sid), "champion", trained.champion_version)
        reason = f"the forecast of v{trained.champion_version} refused before is published now: @champion returns to it"
        _record_move(store, sid, last.get("to_version"), trained.champion_version, reason, trained.run_key, trained.as_of_year)
    return published


def _champion_serves_again(
    settings: Settings, store: ObjectStore, trained: TrainedSeries, published: PublishedForecast
) -> PublishedForecast:
    """``latest.json`` serves a run key's forecast again: ``@champion`` goes to its version, recorded in the history."""
    from pipeline import tracking
    from pipeline.locks import series_lock

    sid = trained.series_id
    with tracking.transient_errors(), series_lock(store, sid, scope="registry"):
        client = tracking.configure(settings)
        current = tracking.alias_version(client, sid, "champion")
        before = None if current is None else str(current.version)
        if before == trained.champion_version:
            return published
        client.set_registered_model_alias(tracking.registered_name(sid), "champion", trained.champion_version)
        reason = (
            f"run key {trained.run_key} serves its forecast again (its configuration and data are the current ones again, "
            f"or latest.json was left dangling): @champion follows to v{trained.champion_version}"
        )
        logger.warning("%s: %s", sid, reason)
        _record_move(store, sid, before, trained.champion_version, reason, trained.run_key, trained.as_of_year)
    return published


def forecast_series(
    settings: Settings,
    plan: RunPlan | dict[str, Any],
    item: WorkItem | dict[str, Any],
    airflow: AirflowIds | dict[str, Any] | None = None,
    lineup: Lineup | None = None,
) -> PublishedForecast:
    """:func:`train_series`, then :func:`publish_series`: one series, the mapped task of ``co2_forecast``.

    One task per series rather than one per step halves the task instances a scheduler starts
    and tracks. A retry repeats neither step: a trained run key is reused from MLflow, a
    published one is skipped with one read.
    """
    trained = train_series(settings, plan, item, airflow, lineup)
    return publish_series(settings, plan, trained, airflow, lineup)


def _not_served(published: PublishedForecast, as_of_year: int, pinned_run: bool = False) -> str:
    """What ``co2cast forecast`` adds when ``latest.json`` serves another forecast than the one just published."""
    if published.served:
        return ""
    if pinned_run:
        served = f"v{published.served_version} as of {published.served_as_of_year}" if published.served_version else "nothing yet"
        return f" (the vintage is not the latest curated one: like a backfill, it is not served; latest.json serves {served})"
    if published.served_as_of_year is not None and published.served_as_of_year > as_of_year:
        return f" (a backfill: latest.json stays on v{published.served_version} as of {published.served_as_of_year})"
    return (
        f"; latest.json serves v{published.served_version} as of {published.served_as_of_year} instead "
        "(a rollback, or a newer forecast of the year, took this one's place): nothing moved"
    )


def _published(store: ObjectStore, trained: TrainedSeries, manifest: Manifest) -> PublishedForecast:
    from pipeline.publish import latest_pointer

    pointer = latest_pointer(store, trained.series_id)
    served = pointer is not None and pointer["manifest"] == manifest.key
    served_version = trained.champion_version if served else (pointer or {}).get("model_version")
    return PublishedForecast(
        series_id=trained.series_id,
        manifest=manifest.key,
        uri=store.uri(manifest.key),
        latest=store.uri(layout.forecast_latest(trained.series_id)),
        first_year=manifest.first_year,
        last_year=manifest.last_year,
        model_version=trained.champion_version,
        mase=trained.scores.get(trained.champion_family, {}).get("mase"),
        served=served,
        served_version=None if served_version is None else str(served_version),
        served_as_of_year=pointer["as_of_year"] if pointer is not None else None,
    )


def score_series(settings: Settings, plan: RunPlan | dict[str, Any], item: WorkItem | dict[str, Any], run_id: str | None = None) -> Any:
    """Score every published forecast of a series against the plan vintage's actuals.

    Writes ``scorecards/<series_id>.parquet`` (:mod:`pipeline.track_record`; unchanged bytes
    are not rewritten) and logs the summary (errors by family and horizon, interval hits,
    MAE relative to naive) as metrics ``scorecard.<family>.h<horizon>.*`` of the series'
    MLflow run ``run_id`` in one batch.

    Returns:
        The :class:`pipeline.track_record.ScorecardResult`, or ``None`` when the plan's vintage
        is not the latest curated one (the scorecard always holds the newest actuals).
    """
    from pipeline import ingest, track_record, tracking
    from pipeline.publish import pinned

    plan, item = RunPlan.of(plan), WorkItem.of(item)
    store = open_store(settings)
    if pinned(store, plan.vintage):
        # An older release (--vintage, or an asset-triggered run that finished after a newer
        # one's): its actuals would re-score forecasts trained on newer data. Left as it is.
        logger.info("%s: scorecard left as it is: vintage %s is not the latest curated one", item.series_id, plan.vintage)
        return None
    actuals = track_record.actuals_of(ingest.read_curated(store, plan.vintage, item.entity, item.variable), item.entity, item.variable)
    result = track_record.score_and_write(store, item.series_id, actuals, plan.vintage)
    logger.info("%s", result.describe())
    if run_id and result.rows:
        with tracking.transient_errors():
            client = tracking.configure(settings)
            tags = {"co2cast.scorecard": store.uri(result.key), "co2cast.scorecard_rows": str(result.rows)}
            tracking.log_metrics_once(client, run_id, track_record.summary_metrics(result.summary), tags)
    return result


def run_summary(settings: Settings, plan: RunPlan | dict[str, Any], progress: Callable[[str], None] | None = None) -> list[SummaryLine]:
    """One line per series of a run: published for its run key (and why its champion won), or not.

    Read from the object store, not from task results, so it also reports series whose tasks
    failed. ``progress`` gets each series' text as soon as it is read, prefixed ``[i/n]``.
    """
    from pipeline.publish import gate_record, latest_pointer, read_file, read_manifest
    from pipeline.report import champion_reason, left_out_line, selection_metric

    plan = RunPlan.of(plan)
    store = open_store(settings)
    lines = []
    for item in plan.series:
        manifest = read_manifest(store, item.series_id, plan.as_of_year, item.run_key)
        if manifest is None:
            text = f"{item.series_id}: NOT published for run key {item.run_key} (see the failed task's log)"
            lines.append(SummaryLine(series_id=item.series_id, published=False, text=text))
            if progress:
                progress(f"[{len(lines)}/{len(plan.series)}] {text}")
            continue
        scores = read_file(store, manifest, "backtest.json")
        gate, version = gate_record(store, item.series_id, manifest.run_key), manifest.model_version
        text = (
            f"{item.series_id}: {manifest.model_name} v{manifest.model_version} ({manifest.model_family}), "
            f"{manifest.first_year}-{manifest.last_year}, published {store.uri(manifest.key)}\n"
            f"    {champion_reason(manifest.model_family, json.loads(scores) if scores else {}, selection_metric(manifest), gate, version)}"
        )
        revision = (manifest.model_extra or {}).get("revision")
        if revision and revision.get("material"):
            text += f"; {revision.get('text', 'history revised (material)')}"
        left_out = left_out_line((manifest.model_extra or {}).get("left_out"), plan.as_of_year)
        if left_out:
            text += f"\n    {left_out}"
        served = latest_pointer(store, item.series_id)
        if served is not None and served["manifest"] != manifest.key:  # a backfill, a rollback, or a newer forecast
            text += f"\n    not served: latest.json serves v{served.get('model_version')} as of {served['as_of_year']}"
        lines.append(SummaryLine(series_id=item.series_id, published=True, manifest=manifest.key, text=text))
        if progress:
            progress(f"[{len(lines)}/{len(plan.series)}] {text}")
    return lines


def summarize_run(settings: Settings, plan: RunPlan | dict[str, Any] | None) -> list[SummaryLine]:
    """Print :func:`run_summary`; fail when a series went unpublished.

    ``plan`` is ``None`` when the run was never planned: the DAG's ``summarize`` runs after every
    upstream task is done, a failed ``resolve_run`` too, and must not then report a malformed payload.

    Raises:
        RunIncomplete: no plan was made, or a series of the run was not published (the run must not look green).
    """
    if plan is None:
        raise RunIncomplete("nothing to summarize: the run was not planned (resolve_run failed; its log says why), nothing was trained")
    lines = run_summary(settings, plan, progress=lambda text: print(text, flush=True))
    missing = [line.series_id for line in lines if not line.published]
    if missing:
        raise RunIncomplete(f"not published: {', '.join(missing)}")
    return lines


def forecast_all(
    settings: Settings,
    trigger: RunTrigger | dict[str, Any] | None = None,
    lineup: Lineup | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[tuple[TrainedSeries, PublishedForecast]]:
    """Plan a run, then train and publish every series in turn (``co2cast forecast``).

    A series that is refused (stale, gap, failed output gate, tampered model…) does not stop
    the others; the run ends with :class:`RunIncomplete` naming each refused series and why.

    Args:
        settings: the run's settings.
        trigger: why the run started (CLI flags).
        lineup: candidates, policy and spec (default: :func:`production_lineup`).
        progress: called with one line per series as it starts and as it ends.

    Raises:
        RunIncomplete: at least one series was refused (after every other one was done).
    """
    from pipeline.report import left_out_line

    lineup = lineup or production_lineup(settings)
    plan = plan_run(settings, trigger, lineup)
    say = progress or (lambda line: None)
    results, refused = [], []
    total = len(plan.series)
    for index, item in enumerate(plan.series, start=1):
        say(f"[{index}/{total}] {item.series_id}: training and publishing (as of {plan.as_of_year})")
        try:
            trained = train_series(settings, plan, item, lineup=lineup)
            published = publish_series(settings, plan, trained, lineup=lineup)
        except SetupError:
            raise  # a setting or the MLflow experiment: every series would fail alike; fix it and run again
        except PermanentError as error:
            reason = _first_line(error)
            say(f"[{index}/{total}] {item.series_id}: REFUSED: {reason}")
            refused.append(f"{item.series_id} ({reason})")
            continue
        except TransientError:
            raise  # the store or the registry is away: every series would fail alike; retry the run
        except Exception as error:  # a fault in a model or a library on this series' data
            logger.info("%s failed", item.series_id, exc_info=True)
            hint = "an unexpected failure on this series' data; co2cast -v forecast … logs the traceback"
            reason = f"{type(error).__name__}: {_first_line(error)} ({hint})"
            say(f"[{index}/{total}] {item.series_id}: FAILED: {reason}")
            refused.append(f"{item.series_id} ({reason})")
            continue
        champion = f"champion v{trained.champion_version} ({trained.champion_family})"
        served = _not_served(published, plan.as_of_year, trained.pinned)
        if published.scorecard_problem:
            served += f"; scorecard not updated: {published.scorecard_problem} (a rerun scores it again)"
        say(f"[{index}/{total}] {item.series_id}: {champion}, published {published.uri}{served}")
        left_out = left_out_line(trained.left_out, plan.as_of_year)
        if left_out:
            say(f"[{index}/{total}] {item.series_id}: {left_out}")
        results.append((trained, published))
    if refused:
        others = "the others were published" if results else "nothing was published"
        raise RunIncomplete(f"{len(refused)} of {total} series refused, {others}: " + "; ".join(refused))
    return results


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- reading what was published ----------------------------------------------------------------


def show_forecast(settings: Settings, series_id: str) -> tuple[Manifest, pd.DataFrame]:
    """The latest published forecast of a series, hashes verified (see :func:`pipeline.publish.read_latest`)."""
    from pipeline.publish import read_latest

    return read_latest(open_store(settings), series_id)


def published_forecasts(settings: Settings) -> list[tuple[str, Manifest | None, dict[str, dict[str, float]], str | None]]:
    """Every series' latest forecast: ``(series_id, manifest, backtest scores, problem)``.

    The files are verified (:func:`pipeline.publish.read_verified`); a series whose manifest or
    files are missing or changed has ``manifest=None`` and the problem in one line, so one
    broken series does not hide the others.
    """
    from pipeline.publish import read_verified_or_none

    store = open_store(settings)
    out: list[tuple[str, Manifest | None, dict[str, dict[str, float]], str | None]] = []
    # The series folders, not every key under forecasts/ (one LIST request per 1,000 series, not per ~170).
    for sid in store.list_children(layout.FORECASTS):
        try:
            verified = read_verified_or_none(store, sid)
        except PermanentError as error:
            out.append((sid, None, {}, str(error).splitlines()[0]))
            continue
        if verified is None:  # a folder without latest.json (a publish stopped before its pointer): not published
            continue
        scores = verified.file("backtest.json")
        out.append((sid, verified.manifest, json.loads(scores) if scores else {}, None))
    return out


def quarantined_vintages(settings: Settings) -> list[str]:
    """Vintage ids of rejected releases (not those curated since, e.g. after a cap was raised)."""
    from pipeline.ingest import vintage_status

    store = open_store(settings)
    rejected = layout.vintages_under(layout.QUARANTINE, store.list(layout.QUARANTINE))
    return [vintage for vintage in rejected if vintage_status(store, vintage) == "quarantined"]


def rollback(settings: Settings, series_id: str, alias: str = "champion") -> tuple[str, str]:
    """Move a model alias back to its previous version; returns ``(from_version, to_version)``.

    For ``@champion`` the forecast that version published is served again: ``latest.json``
    moves to its newest manifest, so the store and the registry agree; the move goes into the
    alias history. All of it under the series' registry lock, and all or nothing: a failure
    (Ctrl-C too) after the alias moved puts it back (:class:`_Undo`), so the rollback can run again.

    When the version ``latest.json`` serves was deleted from the registry by hand, ``@champion``
    goes to the newest earlier champion still registered instead, with its forecast
    (:func:`_away_from_deleted`).

    Raises:
        RegistryError: no alias, no recorded previous version, or (``@champion``) the version
            it would move to never published a forecast, or none is left after a deletion.
    """
    from pipeline import tracking
    from pipeline.locks import series_lock
    from pipeline.publish import latest_pointer, manifest_problem, point_latest, published_hint

    store = open_store(settings)
    with tracking.transient_errors(), series_lock(store, series_id, scope="registry"):
        client = tracking.configure(settings)
        tracking.check_not_renamed(client, series_id)
        if alias != "champion":
            return _rollback_family_alias(client, store, series_id, alias)
        finished = _finish_rollback(client, store, series_id)
        if finished is not None:
            return finished
        current = tracking.alias_version(client, series_id, alias)
        pointer = latest_pointer(store, series_id)
        if current is None and pointer is None:
            raise tracking.RegistryError(f"{tracking.registered_name(series_id)} has no @champion; {published_hint(store, series_id)}")
        served = None if pointer is None or pointer.get("model_version") is None else str(pointer["model_version"])
        if served is not None and not tracking.version_exists(client, series_id, served):
            old, new, manifest, retire = _away_from_deleted(client, store, series_id, pointer, current)
            point_latest(store, series_id, manifest, force=True, retire=retire)
            reason = f"rollback: v{served}, which latest.json served, was deleted from the registry; latest.json serves {manifest['key']}"
            _record_move(store, series_id, old, new, reason, manifest.get("run_key"), manifest.get("as_of_year"), rollback=True)
            return old, new
        target = tracking.previous_version(current, alias) if current is not None else ""
        manifest = _newest_manifests(store, series_id).get(target) if target else None
        if current is not None and target and manifest is None:
            damaged = _damaged_manifests(store, series_id)
            raise tracking.RegistryError(
                f"{tracking.registered_name(series_id)} v{target} published no forecast to serve again; @champion stays v{current.version}"
                + (
                    f" ({len(damaged)} manifest(s) of the series are damaged and cannot be served again, e.g. {store.uri(damaged[0])}: "
                    "restore them from a backup to roll back to theirs)"
                    if damaged
                    else ""
                )
            )
        problem = manifest_problem(store, manifest) if manifest is not None else None
        if current is not None and manifest is not None and problem is not None:
            raise tracking.RegistryError(
                f"{tracking.registered_name(series_id)} v{target}'s forecast {store.uri(manifest['key'])} cannot be served again: "
                f"{problem}; @champion stays v{current.version} (restore the file from a backup to roll back)"
            )
        retire = _manifests_serving(store, series_id, current) if current is not None else []
        # Only a rollback that gets past rollback_alias's checks moves anything: one with a current version and a forecast to serve.
        undo = _Undo(client, store, series_id, alias, current, target) if current is not None and manifest is not None else None
        intent, written = layout.rollback_intent(series_id), None
        if undo is not None:  # what a rollback killed (kill -9, a lost machine) part way leaves for the next one to finish
            assert current is not None and manifest is not None
            served_before = pointer["manifest"] if pointer is not None else None
            record = {"from_version": str(current.version), "to_version": target, "manifest": manifest["key"], "retire": retire}
            written = {**record, "served_before": served_before}
            store.write_json(intent, written)
        try:
            old, new = tracking.rollback_alias(client, series_id, alias)
        except tracking.RegistryError:  # refused: nothing moved
            _drop_intent(store, intent, undo is not None)
            raise
        except BaseException:  # Ctrl-C, MLflow gone: perhaps between moving the alias and rewriting the record
            if undo is not None:
                _drop_intent(store, intent, undo())
            raise
        assert manifest is not None and undo is not None  # rollback_alias refused every other case
        try:
            point_latest(store, series_id, manifest, force=True, retire=retire, on_write=undo.wrote_pointer)
            reason = f"rollback from version {old}; latest.json serves {manifest['key']} again"
            _record_move(store, series_id, old, new, reason, manifest.get("run_key"), manifest.get("as_of_year"), rollback=True)
        except BaseException:  # a store outage, Ctrl-C: the rollback did not happen, and running it again does it
            _drop_intent(store, intent, undo())
            raise
        _drop_intent(store, intent, True, completed=written)
    return old, new


def _drop_intent(store: ObjectStore, key: str, undone: bool, completed: dict[str, Any] | None = None) -> None:
    """Delete a rollback's intent once it is recorded or undone; kept (the next rollback finishes it) when the undo failed.

    ``completed``: the intent of a rollback that is recorded. When it cannot be deleted, it is
    rewritten marked ``completed``, so the next rollback is a step of its own: an unmarked intent
    whose move is all done is a rollback killed between its record and this delete, which the next
    rollback (or forecast run) only finishes (:func:`_finish_rollback`).
    """
    if not undone:
        return
    try:
        store.delete(key)
    except Exception as error:  # undone: the next rollback reads it, finds nothing moved, and drops it
        if completed is None:
            logger.warning("%s could not be deleted (%s)", key, _first_line(error))
            return
        try:
            store.write_json(key, {**completed, "completed": True})
        except Exception as again:
            logger.error(
                "%s could not be deleted (%s) nor marked completed (%s): the next rollback of the series will take this one for "
                "a rollback killed part way and roll back nothing more; run it once more to go back a further step",
                key,
                _first_line(error),
                _first_line(again),
            )
            return
        logger.warning("%s could not be deleted (%s): marked completed, the next rollback removes it", key, _first_line(error))


def _finish_rollback(client: Any, store: ObjectStore, series_id: str) -> tuple[str, str] | None:
    """Finish a ``@champion`` rollback killed part way (its intent left in the store); ``(from, to)`` if it did.

    Killed after the alias moved and before ``latest.json`` did, a rollback run again would have
    rolled back a second step from the version it half moved to. Its intent (written under the
    registry lock before the alias moved) says where it was going: while ``@champion`` is on that
    version and ``latest.json`` still serves what it served before, or the forecast the rollback
    serves, or nothing (removed or left dangling since), the rollback is finished (``latest.json``
    moved, the move recorded once) and nothing more is rolled back. When all of it is done already
    (``latest.json`` serves the intent's forecast and the last record is its move), the intent is
    dropped, and: marked ``completed`` (the rollback returned and only deleting its intent failed,
    :func:`_drop_intent`) this is a rollback of its own; unmarked (killed between its record and the
    delete: its command failed, and was run again to finish) it is finished, and nothing more is
    rolled back. In any other state (nothing moved, or a run or a
    person moved ``@champion`` since) the intent is dropped and the rollback starts afresh.
    """
    from pipeline import tracking
    from pipeline.publish import champion_records, is_rollback, point_latest, rolled_back_in_history, serving_pointer

    key = layout.rollback_intent(series_id)
    intent = store.read_json_or_none(key, {"from_version": str, "to_version": str, "manifest": str, "retire?": list, "completed?": bool})
    if intent is None:
        return None
    old, new, target = str(intent["from_version"]), str(intent["to_version"]), str(intent["manifest"])
    current = tracking.alias_version(client, series_id, "champion")
    pointer = serving_pointer(store, series_id)
    served = pointer["manifest"] if pointer is not None else None
    # No pointer (removed, or left dangling, since the kill) is no move by someone else: @champion, on the
    # intent's version, says the rollback is still half done.
    unchanged = served in (intent.get("served_before"), target, None)
    if current is None or str(current.version) != new or not unchanged or not store.exists(target):
        logger.info("%s: a rollback to v%s was interrupted before it moved anything, or was overtaken: it starts afresh", series_id, new)
        store.delete(key)
        return None
    records = champion_records(store, series_id)
    last = records[-1] if records else {}
    done = is_rollback(last) and (str(last.get("from_version")), str(last.get("to_version"))) == (old, new)
    if served == target and done and intent.get("completed") is True:  # only its intent's delete failed: a rollback of its own
        logger.info("%s: the rollback from v%s to v%s was finished; its intent was left: removed", series_id, old, new)
        store.delete(key)
        return None
    if served == target and done:  # killed after its record, before its intent's delete: it is complete, nothing more to do
        logger.warning("%s: the rollback from v%s to v%s was killed once recorded: complete, its intent removed", series_id, old, new)
        store.delete(key)
        return old, new
    logger.warning("%s: finishing the rollback from v%s to v%s that was interrupted", series_id, old, new)
    manifest = store.read_json(target)
    if served != target:
        retire = list(intent.get("retire") or [])
        if served is None:  # what the lost pointer held: the forecast served before, and what earlier rollbacks took out
            before = intent.get("served_before")
            retire += [*([before] if isinstance(before, str) else []), *rolled_back_in_history(store, series_id)]
        point_latest(store, series_id, manifest, force=True, retire=retire)
    if not done:  # killed before the history, not after
        reason = f"rollback from version {old}; latest.json serves {target} again (finished after an interruption)"
        _record_move(store, series_id, old, new, reason, manifest.get("run_key"), manifest.get("as_of_year"), rollback=True)
    store.delete(key)
    return old, new


def _rollback_family_alias(client: Any, store: ObjectStore, series_id: str, alias: str) -> tuple[str, str]:
    """Move another alias than ``@champion`` back, recorded in the alias history (with its ``alias``), all or nothing."""
    from pipeline import tracking

    current = tracking.alias_version(client, series_id, alias)
    target = tracking.previous_version(current, alias) if current is not None else ""
    undo = _Undo(client, store, series_id, alias, current, target) if target else None
    try:
        old, new = tracking.rollback_alias(client, series_id, alias)
    except tracking.RegistryError:  # refused: nothing moved
        raise
    except BaseException:
        if undo is not None:
            undo()
        raise
    assert undo is not None  # rollback_alias refused every other case
    try:
        _record_move(store, series_id, old, new, f"rollback of @{alias} from version {old}", None, None, alias=alias)
    except BaseException:
        undo()
        raise
    return old, new


class _Undo:
    """What a rollback changes, read before it moves anything, to put back when it fails part way.

    The rollback moves the alias, rewrites the record (tag) on the version it moves to, points
    ``latest.json`` at that version's forecast and appends to the alias history. When a later step
    fails (the store unreachable, Ctrl-C), the registry and ``latest.json`` would disagree and the
    rollback could not be run again (the version rolled back to records no previous version), so
    they are put back as they were. Made and called under the series' registry lock.

    ``latest.json`` is not read here: a run's publish holds only the pointer's lock and may move
    it before the rollback writes it. What is put back is what the rollback's own write replaced,
    given by :func:`pipeline.publish.point_latest` under that lock (:meth:`wrote_pointer`).
    """

    def __init__(self, client: Any, store: ObjectStore, series_id: str, alias: str, current: Any, target: str) -> None:
        from pipeline import tracking

        self.client, self.store, self.series_id, self.alias = client, store, series_id, alias
        self.name, self.tag = tracking.registered_name(series_id), tracking.alias_tag(alias)
        self.version, self.target = str(current.version), target
        version = tracking.registered_version(client, series_id, target)  # None: rollback_alias refuses, nothing moves
        self.record = (version.tags or {}).get(self.tag) if version is not None else None
        self.pointer: tuple[bytes | None, bytes] | None = None  # latest.json before and after the rollback's write

    def wrote_pointer(self, before: bytes | None, written: bytes) -> None:
        """``on_write`` of the rollback's :func:`pipeline.publish.point_latest`: what its write replaces."""
        self.pointer = (before, written)

    def __call__(self) -> bool:
        """Put ``latest.json`` back if the rollback wrote it and it still holds that write, then the registry; whether it did.

        A family alias's rollback serves no forecast and writes no ``latest.json``. When
        ``latest.json`` cannot be put back (the store is unreachable), the registry stays moved
        too: the two agree, and the failure is logged.
        """
        from pipeline.publish import restore_latest

        try:
            if self.pointer is not None:
                restore_latest(self.store, self.series_id, *self.pointer)
        except Exception as error:
            self._failed("latest.json", error)
            return False
        try:
            self.client.set_registered_model_alias(self.name, self.alias, self.version)
            if self.record is None:
                self.client.delete_model_version_tag(self.name, self.target, self.tag)
            else:
                self.client.set_model_version_tag(self.name, self.target, self.tag, self.record)
        except Exception as error:
            self._failed("the registry", error)
            return False
        return True

    def _failed(self, what: str, error: Exception) -> None:
        # The failure that stopped the rollback is the one raised; this one is logged.
        logger.error(
            "the rollback of %s@%s failed part way and %s could not be put back (%s): compare `co2cast show %s` with the registry",
            self.name,
            self.alias,
            what,
            " ".join(str(error).split()) or type(error).__name__,
            self.series_id,
        )


def _away_from_deleted(
    client: Any, store: ObjectStore, series_id: str, pointer: dict[str, Any], current: Any
) -> tuple[str, str, dict[str, Any], list[str]]:
    """The rollback when the version ``latest.json`` serves was deleted from the registry by hand.

    It goes to the newest earlier champion (``@champion`` itself, when a person already moved it
    to another version) that is still registered and whose forecast still verifies: ``@champion``
    moves there and ``latest.json`` serves its forecast, every forecast of the deleted version
    retired. Returns ``(from, to, manifest to serve, manifests to retire)``; the caller holds the
    series' registry lock.

    Raises:
        RegistryError: no earlier version is left to serve.
    """
    from pipeline import tracking
    from pipeline.publish import manifest_problem, manifests_serving

    name, served = tracking.registered_name(series_id), str(pointer["model_version"])
    held: list[str] = [str(current.version)] if current is not None else []
    records = store.read_json_or_none(layout.alias_history(series_id), layout.ALIAS_HISTORY) or []
    for record in reversed(records):
        if record.get("alias", "champion") == "champion":  # newest first: the version it went to, then the one it left
            held += [str(record[k]) for k in ("to_version", "from_version") if record.get(k) is not None]
    published = _newest_manifests(store, series_id)
    for version in dict.fromkeys(v for v in held if v != served):
        manifest = published.get(version)
        if manifest is not None and manifest_problem(store, manifest) is None and tracking.version_exists(client, series_id, version):
            break
    else:
        raise tracking.RegistryError(
            f"{name} v{served}, which latest.json serves, was deleted from the registry, and no earlier version with a forecast "
            "is left to serve instead: the forecast stays until the next run of a new release or configuration replaces it"
        )
    if current is None or str(current.version) != version:
        client.set_registered_model_alias(name, "champion", version)
        record = {"previous": "", "reason": f"rollback: v{served}, which latest.json served, was deleted from the registry"}
        client.set_model_version_tag(name, version, tracking.alias_tag("champion"), json.dumps(record))
    retire = manifests_serving(series_id, records, [served])
    return served, version, manifest, retire


def _manifests_serving(store: ObjectStore, series_id: str, version: Any) -> list[str]:
    """The manifest keys that publish (or will, once their run publishes) a registered version.

    Its own run key's, and those of later run keys whose gate kept it as champion (from the
    alias history, which the gate writes before the run publishes). Read under the series'
    registry lock, so no decision is missing.
    """
    from pipeline import tracking
    from pipeline.publish import champion_records, manifests_serving

    runs = [(version.tags.get(tracking.RUN_KEY_TAG), tracking.version_as_of(version))]
    return manifests_serving(series_id, champion_records(store, series_id), [str(version.version)], runs)


def _damaged_manifests(store: ObjectStore, series_id: str) -> list[str]:
    from pipeline.publish import published_manifests

    return published_manifests(store, series_id)[1]


def _newest_manifests(store: ObjectStore, series_id: str) -> dict[str, dict[str, Any]]:
    """Model version -> the newest (as-of year) manifest that published it, read once for the series.

    A manifest damaged or edited by hand is left out (logged): it can be no rollback's target.
    """
    from pipeline.publish import published_manifests

    found, _ = published_manifests(store, series_id)
    newest: dict[str, dict[str, Any]] = {}
    for manifest in sorted(found, key=lambda m: (int(m["as_of_year"]), m.get("published_at", ""))):
        newest[str(manifest.get("model_version"))] = manifest
    return newest
