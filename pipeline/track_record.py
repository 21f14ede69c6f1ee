"""The scorecard's I/O: read every published forecast of a series, score it, write the file.

The pure scoring lives in :mod:`pipeline.scorecard`; this module reads the published tables
through their manifests (each file's sha256 checked, see :func:`pipeline.publish.verify_manifest`),
takes the actuals from a curated vintage, and writes ``scorecards/<series_id>.parquet``
(:func:`pipeline.layout.scorecard`) atomically. The same inputs give the same bytes, and a
scorecard whose bytes would not change is not rewritten.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline import frames, layout
from pipeline.publish import published_manifests, verify_manifest
from pipeline.scorecard import build_scorecard, summarize
from pipeline.store import ObjectStore

logger = logging.getLogger(__name__)

#: The MLflow metric keys of a scorecard summary: ``scorecard.<family>.h<horizon>.<measure>``.
SUMMARY_MEASURES: tuple[str, ...] = ("n", "mae", "coverage_80", "coverage_95", "relative_mae")


@dataclass(frozen=True)
class ScorecardResult:
    """What scoring one series produced.

    Attributes:
        series_id: the series.
        key: the scorecard's object key.
        rows: scored (forecast, year) rows.
        forecasts: published forecasts read (hash-checked).
        skipped: manifests not scored because a file failed its hash (their keys).
        written: whether the file was (re)written (``False``: same bytes already there).
        summary: :func:`pipeline.scorecard.summarize` of the rows.
    """

    series_id: str
    key: str
    rows: int
    forecasts: int
    skipped: tuple[str, ...]
    written: bool
    summary: pd.DataFrame

    def describe(self) -> str:
        """One line for a person."""
        if not self.rows:
            return f"{self.series_id}: scorecard has no rows yet ({self.forecasts} published forecasts, no later actuals)"
        overall = self.summary
        mae = (overall["mae"] * overall["n"]).sum() / overall["n"].sum()
        naive = (overall["naive_mae"] * overall["n"]).sum() / overall["n"].sum()
        hits = (overall["coverage_95"] * overall["n"]).sum() / overall["n"].sum()
        relative = f"{mae / naive:.2f}" if naive > 0 else "n/a"
        return (
            f"{self.series_id}: scorecard {self.rows} rows from {self.forecasts} forecasts, MAE {mae:.4g} "
            f"(naive {naive:.4g}, relative {relative}), 95 % interval hits {hits:.0%}"
        )


def published_tables(store: ObjectStore, series_id: str) -> tuple[list[pd.DataFrame], list[str]]:
    """Every published forecast table of a series, read through its manifest, hashes checked.

    Returns:
        The tables (sorted by manifest key), each with its manifest's ``published_at`` as a
        column, and the manifest keys skipped because the manifest is unreadable (damaged or
        edited) or a listed file is missing or fails its sha256 (logged as warnings, never scored).
    """
    tables = []
    manifests, skipped = published_manifests(store, series_id)  # a damaged or edited manifest is logged and skipped
    for manifest in manifests:
        key = manifest["key"]
        if not verify_manifest(store, manifest):
            logger.warning("%s: a file does not match its sha256; not scored", store.uri(key))
            skipped.append(key)
            continue
        entry = next((f for f in manifest["files"] if f["name"] == "forecast.parquet"), None)
        if entry is None:
            skipped.append(key)
            continue
        table = frames.read_parquet(store.read_bytes(entry["key"]))
        tables.append(table.assign(published_at=str(manifest.get("published_at", ""))))  # which one supersedes which
    return tables, sorted(skipped)


def actuals_of(tidy: pd.DataFrame, entity: str, variable: str) -> pd.Series:
    """A series' values by year from a curated table (every year it holds)."""
    rows = tidy.loc[(tidy["entity"] == entity) & (tidy["variable"] == variable) & tidy["value"].notna(), ["year", "value"]]
    return pd.Series(rows["value"].to_numpy(dtype=float), index=rows["year"].to_numpy(dtype="int64")).sort_index()


def scorecard_bytes(card: pd.DataFrame) -> bytes:
    """The scorecard as Parquet; the same frame always gives the same bytes."""
    buffer = io.BytesIO()
    card.to_parquet(buffer, index=False, compression="snappy")
    return buffer.getvalue()


def score_and_write(store: ObjectStore, series_id: str, actuals: pd.Series, scored_vintage: str) -> ScorecardResult:
    """Score every published forecast of a series against ``actuals``; write the scorecard.

    Rows are sorted by as-of year, vintage, model version and year, so the file does not
    depend on the order the store lists keys in. The file is written only when its bytes change.
    """
    tables, skipped = published_tables(store, series_id)
    card = build_scorecard(tables, actuals, scored_vintage)
    card = card.sort_values(["as_of_year", "vintage", "model_version", "year"], kind="stable").reset_index(drop=True)
    data = scorecard_bytes(card)
    key = layout.scorecard(series_id)
    try:
        written = store.read_bytes(key) != data
    except KeyError:
        written = True
    if written:
        store.write_bytes(key, data)
    return ScorecardResult(series_id, key, len(card), len(tables), tuple(skipped), written, summarize(card))


def read_scorecard(store: ObjectStore, series_id: str) -> pd.DataFrame | None:
    """A series' scorecard, or ``None`` when none was written."""
    try:
        return frames.read_parquet(store.read_bytes(layout.scorecard(series_id)))
    except KeyError:
        return None


def summary_metrics(summary: pd.DataFrame) -> dict[str, float]:
    """The summary as flat MLflow metrics (``scorecard.<family>.h<horizon>.<measure>``), NaN left out."""
    out: dict[str, float] = {}
    for row in summary.itertuples(index=False):
        for measure in SUMMARY_MEASURES:
            value: Any = getattr(row, measure)
            if pd.notna(value):
                out[f"scorecard.{row.family}.h{int(row.horizon)}.{measure}"] = float(value)
    return out
