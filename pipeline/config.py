"""Typed settings, read from the environment when a task runs (never at import time).

Every setting has a default that needs no server: a local object store, a SQLite MLflow store
and Airflow home, all under ``CO2CAST_HOME``.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import SetupError

#: OWID's published release: the production source (docker-compose sets it).
OWID_CO2_URL = "https://raw.githubusercontent.com/owid/co2-data/master/owid-co2-data.csv"
#: Where OWID's releases live: the default allow-list for http(s) sources.
OWID_URL_PREFIX = "https://raw.githubusercontent.com/owid/co2-data/"
#: The latest horizon end: a yearly model fitted on a century of data says nothing about the
#: years after 2100, and a later end would be refused by the output gate only after training.
MAX_HORIZON_END = 2100
#: The longest download CO2CAST_FETCH_TIMEOUT allows (a day): beyond it a number is a typo (urllib's socket
#: timeout overflows on 1e10 and refuses inf).
MAX_FETCH_TIMEOUT = 86400.0
#: The range of CO2CAST_TASK_TIMEOUT_MINUTES: under a minute no task can finish (and a timedelta rounding to 0
#: is no timeout at all to Airflow); over a week is a typo (a huge one overflows timedelta or Airflow's deadline).
MIN_TASK_TIMEOUT_MINUTES = 1.0
MAX_TASK_TIMEOUT_MINUTES = 7 * 24 * 60.0
#: The release shipped with the package (OWID, up to 2014): the default, works offline.
EMBEDDED_SOURCE = Path(__file__).resolve().parent / "data" / "owid-co2-data-to-2014.csv.gz"


class Settings(BaseSettings):
    """co2cast settings. Field names map to ``CO2CAST_*`` variables unless aliased."""

    model_config = SettingsConfigDict(env_prefix="CO2CAST_", extra="ignore", populate_by_name=True)

    home: Path = Field(default_factory=lambda: Path.cwd() / ".co2cast", description="state directory")
    source: str = Field(default=str(EMBEDDED_SOURCE), description="path or http(s) URL of a CSV/XLSX release (gzip allowed)")
    store_uri: str | None = Field(default=None, description="file:///dir or s3://bucket/prefix")
    mlflow_tracking_uri: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")
    s3_endpoint_url: str | None = Field(default=None, description="S3 endpoint, e.g. http://localhost:9000 for MinIO")
    series: str = Field(default="default", description="'default', 'all' or a comma list of entity:variable")
    horizon_end: int = Field(default=2050, le=MAX_HORIZON_END, description=f"last forecast year, at most {MAX_HORIZON_END}")
    selection_metric: str = Field(default="mase", description="backtest metric for selection and the champion gate (lower is better)")
    max_lost_years: int = Field(default=3, ge=0, description="years of history an entity may lose between vintages")
    fetch_timeout: float = Field(
        default=60.0, gt=0, le=MAX_FETCH_TIMEOUT, description="seconds for a whole HTTP download (connect, headers and body)"
    )
    allowed_urls: str = Field(default=OWID_URL_PREFIX, description="comma list of URL prefixes an http(s) source may start with")
    data_dirs: str = Field(
        default_factory=lambda: f"{Path.cwd()},{tempfile.gettempdir()}",
        description="comma list of directories a file source may be in (the embedded data directory is always allowed)",
    )
    max_source_bytes: int = Field(default=512 * 1024 * 1024, gt=0, description="largest release read, fetched or decompressed")
    max_year_on_year_factor: float = Field(
        default=100.0,
        gt=1,
        description="largest ratio (up or down) of a material value to the year before, or of a series to the previous vintage",
    )
    year_on_year_floor: float = Field(default=1.0, ge=0, description="values below this (Mt, t/person) are too small for the ratio check")
    max_history_factor: float = Field(default=20.0, gt=1, description="largest multiple of an entity's earlier maximum a value may reach")
    max_per_capita: float = Field(default=500.0, gt=0, description="ceiling of co2_per_capita in t/person")
    world_tolerance: float = Field(default=0.01, ge=0, description="relative margin by which a country may exceed the World aggregate")
    max_tail_lost_years: int = Field(default=0, ge=0, description="newest years an entity may lose against the previous vintage")
    lock_stale_seconds: float = Field(default=3600.0, gt=0, description="age after which a run key's lock counts as abandoned")
    revision_threshold: float = Field(
        default=0.02,
        ge=0,
        description="relative change of a series' history between vintages that is material (warned about; any change retrains)",
    )
    include_aggregates: bool = Field(
        default=True, description="whether the 'all' series set includes aggregates (World, continents, income groups)"
    )
    allowed_breaks: Path | None = Field(default=None, description="allow-list of real breaks; default expectations/allowed_breaks.json")
    preload: bool = Field(
        default=True, description="whether the Airflow scheduler and Celery workers import the pipeline once before forking tasks"
    )
    max_active_series: int = Field(
        default=2, ge=1, description="forecast_series tasks (one per series) running at once; read when Airflow parses the DAG"
    )
    task_timeout_minutes: float = Field(
        default=30.0,
        ge=MIN_TASK_TIMEOUT_MINUTES,
        le=MAX_TASK_TIMEOUT_MINUTES,
        description="minutes an Airflow task may run before Airflow stops it (and retries); read when the DAG is parsed",
    )

    @field_validator("home", "allowed_breaks", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object, info: object) -> object:
        """``CO2CAST_HOME=`` (empty) is unset, as an empty CO2CAST_STORE_URI is: ``Path('')`` is the working directory."""
        if isinstance(value, str) and not value.strip():
            return Path.cwd() / ".co2cast" if getattr(info, "field_name", None) == "home" else None
        return value

    @field_validator("source", mode="before")
    @classmethod
    def _strip_source(cls, value: object) -> object:
        """Spaces around a path or URL (a pasted value): urllib drops them, but the stored file name kept them ('.csv ')."""
        return value.strip() if isinstance(value, str) else value

    @field_validator("s3_endpoint_url", mode="before")
    @classmethod
    def _check_endpoint(cls, value: object) -> object:
        """An http(s) URL with a host; empty is unset (AWS). botocore refused '127.0.0.1:9000' as unexpected and 'htp://'
        as a temporary failure to retry."""
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None
        try:
            parts = urlsplit(value.strip())
            parts.port  # noqa: B018 (ValueError for a port that is not a number)
        except ValueError:
            parts = None
        if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL with a host, e.g. http://localhost:9000")
        return value.strip()

    @property
    def resolved_store_uri(self) -> str:
        """The object store URI; defaults to a directory under the home."""
        return self.store_uri or (self.home.resolve() / "store").as_uri()

    @property
    def resolved_tracking_uri(self) -> str:
        """The MLflow tracking URI; defaults to a SQLite file under the home."""
        return self.mlflow_tracking_uri or f"sqlite:///{(self.home.resolve() / 'mlflow' / 'mlflow.db').as_posix()}"


def max_active_series(environ: Mapping[str, str] = os.environ) -> int:
    """``CO2CAST_MAX_ACTIVE_SERIES``: read when Airflow parses ``co2_forecast``.

    Read alone (as :func:`task_timeout`), so that another invalid setting fails the run's first
    task with its own message instead of the DAG's import.

    Raises:
        ValueError: not a whole number of at least 1 (the DAG's import error names the variable).
    """
    raw = environ.get("CO2CAST_MAX_ACTIVE_SERIES")
    if raw is None:
        return int(Settings.model_fields["max_active_series"].default)
    # ASCII digits only: str.isdigit() passes '²', which int() then refuses without naming the variable.
    if not re.fullmatch(r"[0-9]{1,9}", raw.strip()) or int(raw) < 1:
        raise ValueError(f"CO2CAST_MAX_ACTIVE_SERIES={raw[:60]!r}: set a whole number of series at least 1, e.g. 2 (one per core)")
    return int(raw)


def task_timeout(environ: Mapping[str, str] = os.environ) -> timedelta:
    """``CO2CAST_TASK_TIMEOUT_MINUTES``: each task's ``execution_timeout``, read when Airflow parses the DAGs.

    A hung task (a stalled S3 or MLflow connection) is stopped by Airflow and retried, instead of
    holding its series' slot for good. The default, 30 minutes, is some 20 times the longest
    task measured (ingesting a 200 MB release) and half ``CO2CAST_LOCK_STALE_SECONDS``, so a
    stopped task has released its run key's lock long before another would break it as stale.

    Raises:
        ValueError: not a number of minutes from 1 to a week (the DAG's import error names the variable).
    """
    raw = environ.get("CO2CAST_TASK_TIMEOUT_MINUTES")
    if raw is None:
        return timedelta(minutes=float(Settings.model_fields["task_timeout_minutes"].default))
    try:
        minutes = float(raw)
    except ValueError:
        minutes = math.nan
    # Below a minute a timeout may round to timedelta(0), which Airflow takes for none; 1e308 overflowed timedelta.
    if not MIN_TASK_TIMEOUT_MINUTES <= minutes <= MAX_TASK_TIMEOUT_MINUTES:  # NaN fails both
        raise ValueError(
            f"CO2CAST_TASK_TIMEOUT_MINUTES={raw[:60]!r}: set a number of minutes from {MIN_TASK_TIMEOUT_MINUTES:g} "
            f"to {MAX_TASK_TIMEOUT_MINUTES:g} (a week), e.g. 30"
        )
    return timedelta(minutes=minutes)


class ConfigError(SetupError, ValueError):
    """A setting in the environment that co2cast cannot use (not a number, out of range)."""


def get_settings() -> Settings:
    """Build the settings from the environment as it is now.

    Raises:
        ConfigError: a variable holds a value its setting cannot take; one line naming each
            such variable, its value and what it is for (the CLI prints it, a task fails
            without retrying).
    """
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigError(invalid_settings_message(error)) from None


def invalid_settings_message(error: ValidationError) -> str:
    """One line for a :class:`Settings` validation error, in the environment's terms."""
    problems = []
    for problem in error.errors():
        name = str(problem["loc"][0]) if problem["loc"] else ""
        field = Settings.model_fields.get(name)
        if field is None:  # an aliased setting reports its alias
            name, field = next(((n, f) for n, f in Settings.model_fields.items() if f.validation_alias == name), (name, None))
        variable = field.validation_alias if field is not None and isinstance(field.validation_alias, str) else f"CO2CAST_{name.upper()}"
        value = repr(problem.get("input"))
        value = value if len(value) <= 60 else value[:59] + "…"
        purpose = f" ({field.description})" if field is not None and field.description else ""
        # A validator's own words (what to set), without pydantic's "Value error, " before them.
        own = problem["type"] == "value_error" and "error" in problem.get("ctx", {})
        words = str(problem["ctx"]["error"]) if own else problem["msg"].lower()
        problems.append(f"{variable}={value}: {words}{purpose}")
    return "invalid setting: " + "; ".join(problems) + "; fix the value or unset the variable for its default"
