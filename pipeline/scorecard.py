"""The pipeline's own track record: published forecasts scored against the actuals that came later.

Pure functions, no I/O. A *scorecard* has one row per (published forecast, forecast year) whose
actual value is now known:

========================  ==============================================================
``series_id``             the series
``as_of_year``            the last year of data the forecast used
``vintage``               the vintage the forecast was trained on
``model_version``         the registered version that produced it
``family``                its model family (``arima``, ``ets``, …)
``year``                  the forecast year
``horizon``               ``year - as_of_year`` (1 = one year ahead)
``actual``                the value the scoring vintage holds for ``year``
``mean``                  the published point forecast
``lo_80`` … ``hi_95``     the published 80 / 95 % interval
``error``                 ``actual - mean``
``abs_error``             ``|error|``
``hit_80``, ``hit_95``    whether ``actual`` fell inside the published 80 / 95 % interval
``naive``                 the naive forecast: the actual of ``as_of_year`` (carried forward)
``naive_abs_error``       ``|actual - naive|``
``scored_vintage``        the vintage whose actuals were used
``superseded``            a later forecast for the same as-of year was published (a revised
                          history, a changed setting, a rollback): kept in the file, left
                          out of the summary
========================  ==============================================================

The naive forecast is taken from the scoring vintage's value of the as-of year, so a revision
of history moves the naive benchmark and the model's actuals alike. Each as-of year counts
once in the summary: by the forecast published last for it (``published_at``), so a year
forecast three times is not weighted three times.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCORECARD_COLUMNS: tuple[str, ...] = (
    "series_id",
    "as_of_year",
    "vintage",
    "model_version",
    "family",
    "year",
    "horizon",
    "actual",
    "mean",
    "lo_80",
    "hi_80",
    "lo_95",
    "hi_95",
    "error",
    "abs_error",
    "hit_80",
    "hit_95",
    "naive",
    "naive_abs_error",
    "scored_vintage",
    "superseded",
)

SUMMARY_COLUMNS: tuple[str, ...] = (
    "family",
    "horizon",
    "n",
    "mae",
    "rmse",
    "coverage_80",
    "coverage_95",
    "naive_mae",
    "relative_mae",
)


def empty_scorecard() -> pd.DataFrame:
    """A scorecard with no rows and the documented columns."""
    return pd.DataFrame({column: pd.Series(dtype=_DTYPES[column]) for column in SCORECARD_COLUMNS})


def score_forecast(forecast: pd.DataFrame, actuals: pd.Series, scored_vintage: str) -> pd.DataFrame:
    """Score one published forecast table against actuals.

    Args:
        forecast: a published forecast table (``series_id, year, mean, lo_80, hi_80, lo_95,
            hi_95, model_version, family, vintage, as_of_year``), one as-of year.
        actuals: the series' values by year (index: year) from the scoring vintage.
        scored_vintage: the id of that vintage.

    Returns:
        The scorecard rows for the forecast years that have an actual value; none when the
        as-of year itself has no actual (there is then no naive forecast to compare with).
    """
    if forecast.empty:
        return empty_scorecard()
    as_of = _single(forecast, "as_of_year")
    values = pd.Series(actuals, dtype=float).dropna()
    values.index = values.index.astype(int)
    if as_of not in values.index:
        return empty_scorecard()
    rows = forecast[forecast["year"].astype(int).isin(values.index)].copy()
    if rows.empty:
        return empty_scorecard()
    rows["year"] = rows["year"].astype(int)
    rows["actual"] = values.loc[rows["year"]].to_numpy()
    rows["horizon"] = rows["year"] - as_of
    rows["error"] = rows["actual"] - rows["mean"]
    rows["abs_error"] = rows["error"].abs()
    rows["hit_80"] = (rows["actual"] >= rows["lo_80"]) & (rows["actual"] <= rows["hi_80"])
    rows["hit_95"] = (rows["actual"] >= rows["lo_95"]) & (rows["actual"] <= rows["hi_95"])
    rows["naive"] = float(values.loc[as_of])
    rows["naive_abs_error"] = (rows["actual"] - rows["naive"]).abs()
    rows["scored_vintage"] = scored_vintage
    rows["superseded"] = False
    rows["as_of_year"] = as_of
    rows["model_version"] = rows["model_version"].astype(str)
    return rows[list(SCORECARD_COLUMNS)].astype(_DTYPES).reset_index(drop=True)


def build_scorecard(forecasts: list[pd.DataFrame], actuals: pd.Series, scored_vintage: str) -> pd.DataFrame:
    """Score every published forecast of one series; sorted by as-of year, then year.

    A forecast table may carry its manifest's ``published_at`` as a column: of the forecasts
    for one as-of year, all but the one published last (ties: the later in the list) are
    marked ``superseded``.
    """
    stamps = [str(f["published_at"].iloc[0]) if "published_at" in f.columns and not f.empty else "" for f in forecasts]
    newest: dict[int, int] = {}
    for index, forecast in enumerate(forecasts):
        if forecast.empty:
            continue
        as_of = _single(forecast, "as_of_year")
        if as_of not in newest or stamps[index] >= stamps[newest[as_of]]:
            newest[as_of] = index
    parts = []
    for index, forecast in enumerate(forecasts):
        part = score_forecast(forecast, actuals, scored_vintage)
        if not part.empty:
            part["superseded"] = index != newest[_single(forecast, "as_of_year")]
            parts.append(part)
    if not parts:
        return empty_scorecard()
    card = pd.concat(parts, ignore_index=True)
    return card.sort_values(["as_of_year", "year"], kind="stable").reset_index(drop=True)


def summarize(scorecard: pd.DataFrame) -> pd.DataFrame:
    """Errors by model family and horizon, against naive, over the rows not ``superseded``.

    ``relative_mae`` is the family's MAE over the naive forecast's MAE on the same rows: below
    1 means the published forecasts beat carrying the last value forward.
    """
    if "superseded" in scorecard.columns:  # a scorecard written before the column counts every row
        scorecard = scorecard[~scorecard["superseded"].astype(bool)]
    if scorecard.empty:
        return pd.DataFrame({column: pd.Series(dtype=float) for column in SUMMARY_COLUMNS})
    grouped = scorecard.groupby(["family", "horizon"], sort=True)
    summary = grouped.agg(
        n=("error", "size"),
        mae=("abs_error", "mean"),
        rmse=("error", lambda e: float(np.sqrt(np.mean(np.square(e))))),
        coverage_80=("hit_80", "mean"),
        coverage_95=("hit_95", "mean"),
        naive_mae=("naive_abs_error", "mean"),
    ).reset_index()
    summary["relative_mae"] = summary["mae"] / summary["naive_mae"].where(summary["naive_mae"] > 0)
    return summary[list(SUMMARY_COLUMNS)]


def _single(frame: pd.DataFrame, column: str) -> int:
    values = frame[column].astype(int).unique()
    if len(values) != 1:
        raise ValueError(f"a forecast table has one {column}, this one has {sorted(values.tolist())}")
    return int(values[0])


_DTYPES: dict[str, str] = {
    "series_id": "string",
    "as_of_year": "int64",
    "vintage": "string",
    "model_version": "string",
    "family": "string",
    "year": "int64",
    "horizon": "int64",
    "actual": "float64",
    "mean": "float64",
    "lo_80": "float64",
    "hi_80": "float64",
    "lo_95": "float64",
    "hi_95": "float64",
    "error": "float64",
    "abs_error": "float64",
    "hit_80": "bool",
    "hit_95": "bool",
    "naive": "float64",
    "naive_abs_error": "float64",
    "scored_vintage": "string",
    "superseded": "bool",
}
