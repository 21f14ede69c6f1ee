"""Planning a forecast run: the as-of rule and the run plan, as pure functions.

The task layer reads the vintage pointer and the curated table from the store and calls
:func:`plan_run`; nothing here does I/O.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from pipeline.core import history_hash, run_key
from pipeline.errors import PermanentError
from pipeline.payloads import RunPlan, WorkItem
from pipeline.series import recent_stretch_start, resolve_series, series_id

#: Run types that stand for a point in time: they forecast from the year before their logical date.
TIME_BASED_RUN_TYPES = frozenset({"scheduled", "backfill"})
#: ``DagRunType`` member names whose value differs (``str()`` of the enum may give the name).
_RUN_TYPE_NAMES = {"backfill_job": "backfill"}


class PlanError(PermanentError, ValueError):
    """A run cannot be planned: no curated vintage, an unknown vintage, an as-of year outside the data."""


def normalize_run_type(run_type: object) -> str:
    """Airflow's ``DagRunType`` (enum or string, ``DagRunType.MANUAL`` or ``manual``) as a plain lower-case value."""
    text = str(getattr(run_type, "value", run_type)).rsplit(".", 1)[-1].lower()
    return _RUN_TYPE_NAMES.get(text, text)


def as_of_year_for(run_type: object, logical_date: dt.date | dt.datetime | None, latest_year: int, requested: int | None = None) -> int:
    """The last year of data a run may use.

    An explicit ``requested`` year wins. A scheduled or backfill run with logical date in year
    ``Y`` uses ``Y - 1``, capped at the vintage's latest year: a backfill over years reproduces
    what would have been forecast at each point in time. Every other run (asset-triggered,
    manual, triggered by another DAG, the CLI) uses the vintage's latest year.

    Args:
        run_type: Airflow's run type (``scheduled``, ``backfill``, ``manual``,
            ``asset_triggered``, …) or ``cli``.
        logical_date: the run's logical date (``None`` for runs without one).
        latest_year: the latest year of the run's vintage.
        requested: an explicit as-of year.

    Returns:
        The as-of year.
    """
    if requested is not None:
        return int(requested)
    if normalize_run_type(run_type) in TIME_BASED_RUN_TYPES and logical_date is not None:
        return min(logical_date.year - 1, int(latest_year))
    return int(latest_year)


def plan_run(
    tidy: pd.DataFrame,
    *,
    vintage: str,
    as_of_year: int,
    series_spec: str,
    horizon_end: int,
    cfg_hash: str,
    min_points: int,
) -> RunPlan:
    """The run plan: which series, each with its run key.

    Args:
        tidy: the vintage's curated table.
        vintage: the vintage id.
        as_of_year: from :func:`as_of_year_for`.
        series_spec: ``default``, ``all`` or ``Entity:variable,…``.
        horizon_end: last forecast year.
        cfg_hash: :func:`pipeline.core.config_hash` of the run's configuration.
        min_points: history a series needs (for ``all``).

    Returns:
        The :class:`RunPlan`.

    Raises:
        PlanError: the as-of year is not before the horizon end, or is before or after the data.
        SeriesError: the spec names no series or an unknown one.
    """
    if as_of_year >= horizon_end:
        raise PlanError(f"as-of year {as_of_year} is not before the horizon end {horizon_end} (CO2CAST_HORIZON_END)")
    first, latest = int(tidy["year"].min()), int(tidy["year"].max())
    if as_of_year > latest:
        raise PlanError(
            f"as-of year {as_of_year} is after the latest year {latest} of vintage {vintage}: "
            "a forecast cannot be made as of a year with no data"
        )
    if as_of_year < first:
        raise PlanError(
            f"as-of year {as_of_year} is before the first year {first} of vintage {vintage}: "
            f"give a year from {first} to {latest} (leave it out for {latest})"
        )
    items = []
    pairs = resolve_series(tidy, series_spec, min_points=min_points, as_of_year=as_of_year)
    data_ids = series_data_ids(tidy, pairs, as_of_year)
    for entity, variable in pairs:
        sid = series_id(entity, variable)
        key = run_key(sid, data_ids[(entity, variable)], as_of_year, cfg_hash)
        items.append(WorkItem(entity=entity, variable=variable, series_id=sid, run_key=key))
    return RunPlan(vintage=vintage, as_of_year=as_of_year, config_hash=cfg_hash, horizon_end=horizon_end, series=tuple(items))


def series_data_ids(tidy: pd.DataFrame, pairs: list[tuple[str, str]], as_of_year: int) -> dict[tuple[str, str], str]:
    """:func:`pipeline.core.history_hash` of each series' rows up to the as-of year (one pass over the table).

    The rows hashed are those :func:`pipeline.series.prepare_series` models (values present, by
    year, the most recent contiguous stretch: a revision before a gap that is left out does not
    change the key), plus whether the as-of year is flagged provisional in the vintage.
    """
    wanted = set(pairs)
    rows = tidy.loc[(tidy["year"] <= as_of_year) & tidy["value"].notna()]
    rows = rows.loc[rows["entity"].isin({e for e, _ in wanted}) & rows["variable"].isin({v for _, v in wanted})]
    has_flag = "provisional" in rows.columns
    out: dict[tuple[str, str], str] = {}
    for (entity, variable), group in rows.groupby(["entity", "variable"], sort=False, observed=True):
        if (str(entity), str(variable)) not in wanted:
            continue
        group = group.sort_values("year")
        group = group.iloc[recent_stretch_start(group["year"].to_numpy()) :]
        last = group.iloc[-1]
        provisional = bool(has_flag and last["provisional"] and int(last["year"]) == as_of_year)
        out[(str(entity), str(variable))] = history_hash(group["year"].to_numpy(), group["value"].to_numpy(dtype=float), provisional)
    for pair in pairs:
        out.setdefault(pair, "no-history")  # unknown series are refused by the training step itself
    return out


#: OWID codes that name a real country although they are not ISO 3166 (Kosovo).
COUNTRY_OWID_CODES = frozenset({"OWID_KOS"})


def without_aggregates(tidy: pd.DataFrame) -> pd.DataFrame:
    """The rows of entities with a country code (``CO2CAST_INCLUDE_AGGREGATES=false``).

    An aggregate is an entity without an ISO 3166 code: OWID's World (``OWID_WRL``), continents,
    income and treaty groups (no code), and the non-country rows such as International transport
    (historical entities like the USSR have no code either and go with them).
    """
    code = tidy["iso_code"].astype("string").fillna("")
    keep = (code != "") & (~code.str.startswith("OWID_") | code.isin(COUNTRY_OWID_CODES))
    return tidy.loc[keep.to_numpy()]
