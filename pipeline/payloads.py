"""The typed payloads that pass between the steps of both halves (ingest, then forecast).

Each is a small frozen pydantic model. A step returns one; it becomes a plain dict only at the
XCom boundary (:meth:`Payload.to_xcom`) and is validated when it comes back in
(:meth:`Payload.of`), so a task that receives a malformed payload fails with a clear message
instead of a ``KeyError`` three calls later. A reader learns a payload's shape here, not from
its producer's body.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from pipeline.errors import PermanentError


class PayloadError(PermanentError, ValueError):
    """A payload between two steps does not have the shape its class declares."""


class Payload(BaseModel):
    """Base: frozen, no unknown fields, plain dicts at the XCom boundary."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_xcom(self) -> dict[str, Any]:
        """The payload as JSON-able plain data."""
        return self.model_dump(mode="json")

    @classmethod
    def of(cls, value: Self | dict[str, Any]) -> Self:
        """Validate a payload coming back in (a dict from XCom, or already an instance).

        Raises:
            PayloadError: the value does not have this payload's shape.
        """
        if isinstance(value, cls):
            return value
        try:
            return cls.model_validate(value)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            raise PayloadError(f"malformed {cls.__name__} payload: {where}: {first['msg']} ({error.error_count()} error(s))") from error


#: A vintage id: the first 16 hex digits of the sha256 of a release's bytes (``pipeline.ingest.VINTAGE_CHARS``);
#: it names store keys, so nothing else passes.
VintageId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]


class FetchedSource(Payload):
    """What ``fetch_source`` reports (:func:`pipeline.ingest.fetch_source`): the bytes fetched and whether they are new.

    Attributes:
        sha256: of the bytes; ``vintage`` is its first 16 hex digits.
        content_sha256: of the content with BOM, line ends and gzip normalised away.
        changed: ``False`` when there is nothing new to ingest (``message`` says why).
    """

    vintage: VintageId
    sha256: str
    content_sha256: str
    file_name: str
    source: str
    size: int
    fetched_at: str
    changed: bool
    message: str


class RawSnapshot(Payload):
    """What ``snapshot_raw`` reports: the sealed ``raw/<vintage>/`` object."""

    vintage: VintageId
    file_name: str
    raw_key: str


class ValidatedVintage(Payload):
    """What ``validate_raw`` reports when the gates passed (a failure raises instead).

    Attributes:
        gated_against: the vintage ``curated/latest.json`` showed when the gates compared the
            release with it (``None`` before the first, or for a rerun of a vintage already served).
    """

    vintage: VintageId
    file_name: str
    success: bool
    summary: str
    gated_against: VintageId | None


class RunTrigger(Payload):
    """Why and for what a forecast run started (from Airflow's context, or the CLI's flags).

    Attributes:
        run_type: ``scheduled``, ``backfill``, ``manual``, ``asset_triggered``, … (Airflow's
            ``DagRunType`` values) or ``cli``.
        logical_date: the run's logical date, when it has one.
        as_of_year: an explicit as-of year (param or flag); wins over the rule.
        series: a series spec (``default``, ``all``, ``Entity:variable,…``); ``None``: the settings'.
        vintage: an explicit vintage id.
        asset_vintage: the vintage named by the asset event that triggered the run.
    """

    run_type: str = "manual"
    logical_date: dt.datetime | None = None
    as_of_year: int | None = None
    series: str | None = None
    vintage: str | None = None
    asset_vintage: str | None = None


class AirflowIds(Payload):
    """The Airflow run a step belongs to, recorded in MLflow tags and manifests."""

    dag_id: str
    run_id: str


class WorkItem(Payload):
    """One series of a run: what a mapped ``forecast_series`` task gets."""

    entity: str
    variable: str
    series_id: str
    run_key: str


class RunPlan(Payload):
    """What a forecast run covers: one vintage, one as-of year, one config, its series."""

    vintage: str
    as_of_year: int
    config_hash: str
    horizon_end: int
    series: tuple[WorkItem, ...]


class TrainedSeries(Payload):
    """A series trained and registered (also ``summary.json`` of its MLflow run).

    Attributes:
        scores: candidate -> backtest metrics (``mase``, ``rmse``, …, ``study_*`` for the study series).
        versions: registered candidate -> model version.
        left_out: the early history left out before a gap
            (:meth:`pipeline.series.LeftOut.to_dict`), or ``None`` when the whole history was modelled.
        selection_metric: the backtest metric the selection and the champion gate ranked on
            (``CO2CAST_SELECTION_METRIC``); ``mase`` for what was trained before it was recorded.
        pinned: trained on a vintage older than the latest curated one
            (:func:`pipeline.publish.pinned`): registered with no alias moved and no champion gate,
            so a run of the same key on the latest vintage does not reuse it.
    """

    series_id: str
    run_key: str
    run_id: str
    model_name: str
    champion_family: str
    champion_version: str
    versions: dict[str, str]
    best_backtest_family: str
    selection_metric: str = "mase"
    scores: dict[str, dict[str, float]]
    as_of_year: int
    vintage: str
    revision: dict[str, Any] | None = None
    left_out: dict[str, Any] | None = None
    provisional: bool = False
    pinned: bool = False
    timings: dict[str, float] = Field(default_factory=dict)


class ManifestFile(Payload):
    """One published file: key, sha256 and size."""

    name: str
    key: str
    sha256: str
    size: int


class Manifest(Payload):
    """``manifest.json`` of a published forecast: its files and where they came from."""

    model_config = ConfigDict(frozen=True, extra="allow")

    key: str
    series_id: str
    run_key: str
    as_of_year: int
    first_year: int
    last_year: int
    files: tuple[ManifestFile, ...]
    gx_success: bool
    published_at: str
    vintage: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    model_family: str | None = None
    unit: str | None = None
    mlflow_run_id: str | None = None
    airflow: dict[str, str] = Field(default_factory=dict)

    def file(self, name: str) -> ManifestFile | None:
        """The entry of a file by name, or ``None``."""
        return next((entry for entry in self.files if entry.name == name), None)


class PublishedForecast(Payload):
    """What ``forecast_series`` reports for one series (:func:`pipeline.tasks.publish_series`)."""

    series_id: str
    manifest: str
    uri: str
    latest: str
    first_year: int
    last_year: int
    model_version: str
    mase: float | None = None
    #: Whether ``latest.json`` serves this forecast: not when a rerun found it superseded (a
    #: rollback took it out of service, or a newer forecast of the as-of year was published).
    served: bool = True
    #: The model version and as-of year ``latest.json`` serves (this forecast's when ``served``).
    served_version: str | None = None
    served_as_of_year: int | None = None
    #: Why the scorecard was not updated after the forecast was published (``None``: it was, or
    #: had nothing to do). The forecast is published all the same; a rerun scores it again.
    scorecard_problem: str | None = None


class SummaryLine(Payload):
    """One line of a run's summary: a series published for its run key, or not."""

    series_id: str
    published: bool
    text: str
    manifest: str | None = None
