"""Which yearly series co2cast forecasts, and how one is cut out of the tidy table.

A series is one ``(entity, variable)`` pair of the curated long table (columns ``entity,
iso_code, year, variable, value``), named by a stable id such as ``canada.co2_per_capita``.
:func:`prepare_series` truncates it to the run's as-of year and refuses, with a message a person
can act on, anything a model should not be fitted to: an unknown name, a stale end, or too
little history. A gap inside the history is not a refusal: the series keeps its most recent
contiguous stretch (:func:`recent_stretch_start`), and what it left out is recorded
(:class:`LeftOut`) and reported with the forecast.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import PermanentError

DEFAULT_SERIES: list[tuple[str, str]] = [("Canada", "co2_per_capita"), ("World", "co2")]
"""The study's series (Canada, CO2 per capita) and the World total."""

DEFAULT_MIN_POINTS = 30
TIDY_COLUMNS = ("entity", "iso_code", "year", "variable", "value")


#: The unit of each variable co2cast forecasts: the one place units are defined (``show``, the
#: CSV's ``unit`` column, the Parquet metadata and the manifest all read it through :func:`unit_of`).
UNITS = {"co2": "Mt CO2", "co2_per_capita": "t CO2 per person", "population": "people"}


def unit_of(variable: str) -> str:
    """The unit of a variable: OWID's ``co2`` and every ``*_co2`` are in Mt CO2; ``""`` when unknown."""
    if variable in UNITS:
        return UNITS[variable]
    return UNITS["co2"] if variable.endswith("_co2") else ""


def variable_of(sid: str) -> str:
    """The variable of a series id (``canada.co2_per_capita`` -> ``co2_per_capita``)."""
    return sid.rsplit(".", 1)[-1]


#: How far a forecast may reach relative to the history it was fitted on: no year's mean above
#: ``MAX_MEAN_FACTOR`` times the series' historic maximum, no 95 % upper bound above
#: ``MAX_HI95_FACTOR`` times it. Wide enough for fast growth over 36 years, tight enough to refuse
#: a forecast driven by a unit slip or an exploding model. The ``forecast_output`` gate enforces
#: them before anything is published (:func:`pipeline.publish.validate_forecast`); the core
#: checks the chosen model against them first, so another is chosen instead
#: (:func:`pipeline.core.forecast_beyond_bounds`).
MAX_MEAN_FACTOR = 4.0
MAX_HI95_FACTOR = 20.0

#: Lowest a forecast's mean may fall within the backtest horizon (the years ahead the candidates
#: were judged on), as a share of the last historic value, when every historic value is
#: positive: at zero, a trend extrapolated down to the zero floor within those years is refused
#: and the core chooses another model (:func:`pipeline.core.forecast_beyond_bounds`), as for
#: the bounds above. A forecast at the floor is the worst the error measures know (sMAPE 200 %).
#: On the four validation runs of ``benchmarks/accuracy.py`` (forecasting 1995-1998, 1999-2002,
#: 2003-2006 and 2007-2010; about 1,740 series) the choice reached zero on 10 positive
#: histories: nine in 1995-1998, most of them former Soviet and Yugoslav republics whose
#: collapse after 1990 was extrapolated (Tajikistan's CO2 per capita, 0.41 t in 1994, was
#: forecast below zero from 1995; it stayed at 0.36-0.48), and one in 1999-2002. Naive in
#: their place lowered the OWA of 1995-1998 from 1.002 to 0.909 (total) and from 1.150 to 1.044
#: (per capita) and of 1999-2002 per capita from 0.985 to 0.980; the other cells did not move.
#: Beyond the backtest horizon the floor alone applies: no backtest says anything about so
#: long a decline either way.
MIN_MEAN_SHARE = 0.0


def beyond_bounds(years: np.ndarray, mean: np.ndarray, hi_95: np.ndarray | None, history_max: float) -> str | None:
    """Why a forecast breaks the bounds above (one line), or ``None`` when it keeps them.

    Args:
        years: the forecast's years.
        mean: its point forecast.
        hi_95: its 95 % upper bound (``None``: not checked).
        history_max: the largest value of the history it was fitted on; no bound unless positive.
    """
    mean = np.asarray(mean, dtype=np.float64)
    if not np.isfinite(mean).all():
        return "its forecast is not finite"
    if not np.isfinite(history_max) or history_max <= 0:
        return None
    limits = [("mean", mean, MAX_MEAN_FACTOR)]
    if hi_95 is not None:
        limits.append(("95 % upper bound", np.asarray(hi_95, dtype=np.float64), MAX_HI95_FACTOR))
    for name, values, factor in limits:
        over = np.flatnonzero(~(values <= factor * history_max))
        if over.size:
            first = int(over[0])
            return (
                f"its forecast {name} reaches {values[first]:.4g} in {int(years[first])}, above {factor:g} times"
                f" the historic maximum {history_max:.4g}"
            )
    return None


def falls_to_floor(years: np.ndarray, mean: np.ndarray, history: np.ndarray) -> str | None:
    """Why a forecast of a positive history falls to :data:`MIN_MEAN_SHARE` of its last value (one line), or ``None``.

    Args:
        years: the forecast's years to check (the core passes the backtest horizon's).
        mean: its point forecast for those years.
        history: the values it was fitted on; no bound unless all of them are positive.
    """
    history = np.asarray(history, dtype=np.float64)
    if history.size == 0 or not (history > 0).all():
        return None
    limit = MIN_MEAN_SHARE * float(history[-1])
    down = np.flatnonzero(~(np.asarray(mean, dtype=np.float64) > limit))
    if not down.size:
        return None
    first = int(down[0])
    floor = "zero" if limit == 0 else f"{MIN_MEAN_SHARE:g} of the last value"
    return (
        f"its forecast mean falls to {mean[first]:.4g} in {int(years[first])}, {first + 1} year(s) ahead, at or below {floor}"
        f" (every historic value is positive; the last {history[-1]:.4g})"
    )


#: Sizes a value of a modelled history may have, besides 0: the candidates square values and
#: their differences (variances, least squares), and a square overflows float64 beyond about
#: 1e154 and underflows to 0 below about 1e-154 (the diagnostics then failed with "cannot
#: convert float NaN to integer"). No emissions figure is near either end (the raw gate caps
#: emissions at 1e5 Mt, but admits any tiny positive value: a whole history divided by 1e300
#: passed it); 1e100 leaves room for sums and ratios.
MAX_MAGNITUDE = 1e100
MIN_MAGNITUDE = 1e-100


class SeriesError(PermanentError, ValueError):
    """A series cannot be prepared; the message says why and what to do."""


class StaleSeries(SeriesError):
    """A series' data end before the as-of year: a forecast from it would be published as current."""


@dataclass(frozen=True)
class LeftOut:
    """The early part of a history left out because a gap separates it from the modelled stretch.

    Attributes:
        first_year: first year with a value in the left-out part.
        last_year: last year with a value before the gap.
        n_values: values left out (fewer than the years spanned when earlier gaps lie inside).
        gap_first: first missing year of the gap (the last gap before the as-of year).
        gap_last: last missing year of the gap; the modelled stretch starts the year after.
    """

    first_year: int
    last_year: int
    n_values: int
    gap_first: int
    gap_last: int

    @property
    def modelled_from(self) -> int:
        """First year of the modelled stretch."""
        return self.gap_last + 1

    def gap_text(self) -> str:
        """The gap's years: ``1881-1883`` or ``1881``."""
        return str(self.gap_first) if self.gap_first == self.gap_last else f"{self.gap_first}-{self.gap_last}"

    def describe(self) -> str:
        """E.g. ``left out 1850-1880 (29 values) before a gap in 1881-1883``."""
        values = "1 value" if self.n_values == 1 else f"{self.n_values} values"
        return f"left out {self.first_year}-{self.last_year} ({values}) before a gap in {self.gap_text()}"

    def history_line(self, last_year: int) -> str:
        """E.g. ``modelled 1884-2014; left out 1850-1880 (29 values) before a gap in 1881-1883``."""
        return f"modelled {self.modelled_from}-{last_year}; {self.describe()}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LeftOut:
        """Back from :meth:`to_dict` (as a payload or manifest carries it)."""
        return cls(**{name: int(data[name]) for name in ("first_year", "last_year", "n_values", "gap_first", "gap_last")})

    def to_dict(self) -> dict[str, int | str]:
        """Plain data for payloads, manifests and MLflow (with :meth:`describe` as ``text``)."""
        return {
            "first_year": self.first_year,
            "last_year": self.last_year,
            "n_values": self.n_values,
            "gap_first": self.gap_first,
            "gap_last": self.gap_last,
            "text": self.describe(),
        }


@dataclass(frozen=True)
class PreparedSeries:
    """One yearly series ready for a model: consecutive years, finite values.

    Attributes:
        series_id: stable id, e.g. ``canada.co2_per_capita``.
        entity: entity name as in the data (``Canada``).
        variable: variable name as in the data (``co2_per_capita``).
        years: consecutive int64 years.
        values: float64 values, one per year, all finite.
        left_out: the early history left out before a gap, or ``None`` when nothing was.
    """

    series_id: str
    entity: str
    variable: str
    years: np.ndarray
    values: np.ndarray
    left_out: LeftOut | None = None

    @property
    def first_year(self) -> int:
        """First year of the history."""
        return int(self.years[0])

    @property
    def last_year(self) -> int:
        """Last year of the history (at most the as-of year)."""
        return int(self.years[-1])

    def __len__(self) -> int:
        return int(self.values.size)

    def describe_history(self) -> str:
        """E.g. ``modelled 1884-2014; left out …`` (see :meth:`LeftOut.history_line`), or ``modelled 1751-2014``."""
        if self.left_out is not None:
            return self.left_out.history_line(self.last_year)
        return f"modelled {self.first_year}-{self.last_year}"


def series_id(entity: str, variable: str) -> str:
    """Stable id of a series: lowercase, every run of non-alphanumerics replaced by ``_``.

    Args:
        entity: entity name, e.g. ``"United States"``.
        variable: variable name, e.g. ``"co2_per_capita"``.

    Returns:
        The id, e.g. ``"united_states.co2_per_capita"``.
    """
    return f"{_slug(entity)}.{_slug(variable)}"


#: What :func:`series_id` makes: two non-empty slugs (lowercase letters and digits, runs of ``_`` between) joined by a ``.``.
SERIES_ID = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*\.[a-z0-9]+(?:_[a-z0-9]+)*")


def is_series_id(text: object) -> bool:
    """Whether ``text`` is a series id as :func:`series_id` makes it (safe in a store key and an MLflow filter)."""
    return isinstance(text, str) and SERIES_ID.fullmatch(text) is not None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")


def _quoted(text: str, limit: int = 80) -> str:
    """A name from a param or flag for a message: quoted, escaped by ``repr`` and capped (a megabyte param is not repeated)."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _check_tidy(tidy: pd.DataFrame) -> None:
    missing = [c for c in ("entity", "year", "variable", "value") if c not in tidy.columns]
    if missing:
        raise SeriesError(f"the tidy table lacks the column(s) {missing}; expected {list(TIDY_COLUMNS)}")


#: The words a series spec may be instead of a list (a typo of one reads as an unknown series id).
SPEC_WORDS = ("all", "default")
#: What a series spec may be, for a message about one that names nothing co2cast knows.
SPEC_FORMS = "use 'default', 'all', or Entity:variable pairs such as 'Canada:co2_per_capita,World:co2'"


#: What to do about a series the release does not have (a Gapminder file has no World, and no total CO2).
_PICK_OTHERS = "set --series or CO2CAST_SERIES to series it has"


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    if not close:
        # case-insensitive second try: "canada" should still find "Canada".
        lowered = {c.lower(): c for c in choices}
        close = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)]
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def prepare_series(
    tidy: pd.DataFrame,
    entity: str,
    variable: str,
    as_of_year: int,
    min_points: int = DEFAULT_MIN_POINTS,
) -> PreparedSeries:
    """Cut one series out of the tidy table, as known at ``as_of_year``.

    Rows after ``as_of_year`` are dropped (a backfill must not see the future); leading missing
    years are dropped too, because a history that starts later is normal. The data must reach
    the as-of year. When a year is missing inside the history (an absent row or a NaN) the
    series keeps only its most recent contiguous stretch, the years after the last gap:
    fitting across a gap would treat two distant years as neighbours. What was left out is
    recorded in :attr:`PreparedSeries.left_out`. The stretch must be at least ``min_points`` long.

    Args:
        tidy: long table with columns ``entity, iso_code, year, variable, value``; missing values
            are absent rows or NaN.
        entity: entity name, matched exactly.
        variable: variable name, matched exactly.
        as_of_year: the last year of data the run may use.
        min_points: the fewest consecutive years accepted.

    Returns:
        The :class:`PreparedSeries`.

    Raises:
        SeriesError: for an unknown entity or variable (with close names suggested), duplicate
            years, too short a history (after a gap: the gap and the stretch are named), or a
            modelled value too large or too small to compute with (:data:`MAX_MAGNITUDE`).
        StaleSeries: the data end before ``as_of_year`` (e.g. Czechoslovakia, ending 1991).
    """
    _check_tidy(tidy)
    entities = sorted(tidy["entity"].dropna().astype(str).unique())
    variables = sorted(tidy["variable"].dropna().astype(str).unique())
    if entity not in entities:
        hint = _suggest(entity, entities) or f" in this release ({len(entities)} entities): {_PICK_OTHERS}"
        raise SeriesError(f"unknown entity {entity!r}{hint}")
    if variable not in variables:
        hint = _suggest(variable, variables) or f" in this release (it has {', '.join(variables[:5])}): {_PICK_OTHERS}"
        raise SeriesError(f"unknown variable {variable!r}{hint}")
    sid = series_id(entity, variable)

    rows = tidy.loc[(tidy["entity"] == entity) & (tidy["variable"] == variable), ["year", "value"]]
    years_given = pd.to_numeric(rows["year"], errors="coerce").to_numpy(dtype=np.float64)
    odd = np.flatnonzero(~np.isfinite(years_given) | (years_given % 1 != 0))
    if odd.size:  # int64 would truncate 2014.5 to 2014 without a word (the raw gate refuses it; a table given here may not)
        raise SeriesError(f"{sid}: year {years_given[int(odd[0])]:g} is not a whole number; every year must be one")
    rows = rows.astype({"year": "int64", "value": "float64"})
    rows = rows.loc[rows["year"] <= int(as_of_year)]
    duplicated = rows.loc[rows["year"].duplicated(), "year"].unique()
    if duplicated.size:
        raise SeriesError(f"{sid}: more than one value for the year(s) {sorted(int(y) for y in duplicated)}")
    rows = rows.dropna(subset=["value"]).sort_values("year")
    if rows.empty:
        raise SeriesError(f"{sid}: no values up to the as-of year {as_of_year}")
    values = rows["value"].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise SeriesError(f"{sid}: infinite values in the history")
    years = rows["year"].to_numpy(dtype=np.int64)

    # A missing last value is a stale end, not a gap: the series has nothing as of the as-of year.
    if years[-1] < int(as_of_year):
        raise StaleSeries(
            f"{sid}: its data end in {years[-1]}, before the as-of year {as_of_year}; "
            f'a forecast "as of {as_of_year}" from it would be stale: refused'
        )
    # NaN rows were dropped above, so any missing year left inside [first, last] is a gap.
    start = recent_stretch_start(years)
    left_out = None
    if start:
        left_out = LeftOut(
            first_year=int(years[0]),
            last_year=int(years[start - 1]),
            n_values=start,
            gap_first=int(years[start - 1]) + 1,
            gap_last=int(years[start]) - 1,
        )
        years, values = years[start:], values[start:]
    if years.size < min_points:
        span = str(years[0]) if years.size == 1 else f"{years[0]}-{years[-1]}"
        stretch = f"{years.size} yearly value{'s' if years.size != 1 else ''} ({span})"
        if left_out is not None:
            raise SeriesError(
                f"{sid}: only {stretch} after the gap in {left_out.gap_text()} up to {as_of_year}, fewer than the "
                f"{min_points} needed; the {left_out.n_values} values of {left_out.first_year}-{left_out.last_year} "
                "before the gap cannot be joined across it (fill the gap in the source)"
            )
        raise SeriesError(f"{sid}: only {stretch} up to {as_of_year}, fewer than the {min_points} needed")
    _check_magnitudes(sid, years, values)
    return PreparedSeries(series_id=sid, entity=entity, variable=variable, years=years, values=values, left_out=left_out)


def _check_magnitudes(sid: str, years: np.ndarray, values: np.ndarray) -> None:
    """Refuse a history with a value no model can compute with (see :data:`MAX_MAGNITUDE`), in one line."""
    size = np.abs(values)
    out = np.flatnonzero((size > MAX_MAGNITUDE) | ((size < MIN_MAGNITUDE) & (size > 0)))
    if out.size:
        first = int(out[0])
        raise SeriesError(
            f"{sid}: its value {values[first]:.3g} in {int(years[first])} cannot be modelled (every value must be 0 or between "
            f"{MIN_MAGNITUDE:g} and {MAX_MAGNITUDE:g} in size; {out.size} are not): check the unit of this series in the release"
        )


def recent_stretch_start(years: np.ndarray) -> int:
    """Index where the most recent contiguous stretch of sorted, distinct years starts.

    ``0`` when the years have no gap; otherwise the index just after the last gap. The one rule
    for "the stretch a series models", shared by :func:`prepare_series`, :func:`resolve_series`
    and the run plan's data ids (:func:`pipeline.plan.series_data_ids`).
    """
    breaks = np.flatnonzero(np.diff(np.asarray(years)) != 1)
    return int(breaks[-1] + 1) if breaks.size else 0


def resolve_series(
    tidy: pd.DataFrame,
    spec: str,
    min_points: int = DEFAULT_MIN_POINTS,
    as_of_year: int | None = None,
) -> list[tuple[str, str]]:
    """Turn a series spec into a list of ``(entity, variable)`` pairs.

    Args:
        tidy: the tidy table (as for :func:`prepare_series`).
        spec: ``"default"`` (:data:`DEFAULT_SERIES`); ``"all"`` (every entity whose history of a
            default variable, up to ``as_of_year``, ends in at least ``min_points`` consecutive
            years: an earlier gap is left out, as :func:`prepare_series` does); or a
            comma-separated list of ``entity:variable`` pairs or series ids
            (``canada.co2_per_capita``).
        min_points: history needed for ``"all"``.
        as_of_year: the last year considered for ``"all"`` (default: every year in the table).

    Returns:
        The pairs, in a stable order (``all``: sorted by variable, then entity), without duplicates.

    Raises:
        SeriesError: for an empty spec or a name that matches no series.
    """
    _check_tidy(tidy)
    spec = spec.strip()
    if spec.lower() == "default":
        return list(DEFAULT_SERIES)
    if spec.lower() == "all":
        default_variables = sorted({v for _, v in DEFAULT_SERIES})
        rows = tidy.loc[tidy["variable"].isin(default_variables) & tidy["value"].notna(), ["entity", "variable", "year"]]
        if as_of_year is not None:
            rows = rows.loc[rows["year"] <= as_of_year]
        found: list[tuple[str, str]] = []
        for (variable, entity), group in rows.groupby(["variable", "entity"], sort=True):
            years = np.unique(group["year"].to_numpy(dtype=np.int64))
            # prepare_series refuses a stale end and models the stretch after the last gap, so
            # count that stretch, for a history that reaches the as-of year.
            stale = as_of_year is not None and years[-1] < as_of_year
            if years.size - recent_stretch_start(years) >= min_points and not stale:
                found.append((str(entity), str(variable)))
        return found

    if not spec:
        raise SeriesError("empty series spec; use 'default', 'all' or 'entity:variable,...'")
    pairs = tidy.loc[:, ["entity", "variable"]].drop_duplicates()
    by_id = {series_id(e, v): (str(e), str(v)) for e, v in pairs.itertuples(index=False)}
    result: list[tuple[str, str]] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        if ":" in item:
            entity, variable = (s.strip() for s in item.split(":", 1))
            pair = by_id.get(series_id(entity, variable))
            if pair is None:
                variables = ", ".join(sorted({v for _, v in by_id.values()}))
                hint = (
                    _suggest(series_id(entity, variable), list(by_id))
                    or f"; name an entity as the release writes it and one of {variables}"
                )
                raise SeriesError(f"no series {_quoted(item)}{hint}")
        else:
            pair = by_id.get(item.lower())
            if pair is None and item.lower() in SPEC_WORDS:
                raise SeriesError(f"{_quoted(item)} stands alone: give it as the whole series spec, not in a list ({_quoted(spec)})")
            if pair is None:
                hint = _suggest(item.lower(), [*SPEC_WORDS, *by_id]) or f"; {SPEC_FORMS}"
                raise SeriesError(f"no series with id {_quoted(item)}{hint}")
        if pair not in result:
            result.append(pair)
    if not result:
        raise SeriesError(f"the series spec {_quoted(spec)} names no series")
    return result
