"""The scorecard: published forecasts scored against later actuals, checked by hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.scorecard import SCORECARD_COLUMNS, build_scorecard, score_forecast, summarize


def _forecast(as_of: int, means: list[float], half80: float, half95: float, family: str = "arima", version: str = "3") -> pd.DataFrame:
    years = list(range(as_of + 1, as_of + 1 + len(means)))
    mean = np.asarray(means, dtype=float)
    return pd.DataFrame(
        {
            "series_id": "x.co2",
            "year": years,
            "mean": mean,
            "lo_80": mean - half80,
            "hi_80": mean + half80,
            "lo_95": mean - half95,
            "hi_95": mean + half95,
            "model_name": "co2cast.x.co2",
            "model_version": version,
            "family": family,
            "vintage": "v1",
            "as_of_year": as_of,
        }
    )


ACTUALS = pd.Series({2008: 10.0, 2009: 11.0, 2010: 12.0, 2011: 12.5, 2012: 14.0})


def test_rows_match_hand_computed_errors() -> None:
    card = score_forecast(_forecast(2009, [11.5, 11.0, 13.0, 99.0], half80=0.6, half95=1.2), ACTUALS, "v2")
    assert list(card.columns) == list(SCORECARD_COLUMNS)
    # 2013 has no actual yet: only three rows.
    assert card["year"].tolist() == [2010, 2011, 2012]
    assert card["horizon"].tolist() == [1, 2, 3]
    assert card["actual"].tolist() == [12.0, 12.5, 14.0]
    assert card["error"].tolist() == pytest.approx([0.5, 1.5, 1.0])
    # |0.5| <= 0.6 in; |1.5| > 1.2 out; |1.0| > 0.6 but <= 1.2.
    assert card["hit_80"].tolist() == [True, False, False]
    assert card["hit_95"].tolist() == [True, False, True]
    # naive carries 2009's 11.0 forward.
    assert card["naive"].tolist() == [11.0] * 3
    assert card["naive_abs_error"].tolist() == pytest.approx([1.0, 1.5, 3.0])
    assert set(card["scored_vintage"]) == {"v2"}


def test_no_actual_for_the_as_of_year_means_no_rows() -> None:
    assert score_forecast(_forecast(2005, [1.0, 2.0], 0.1, 0.2), ACTUALS, "v2").empty


def test_summary_by_family_and_horizon_against_an_independent_loop() -> None:
    forecasts = [
        _forecast(2008, [10.5, 12.4, 12.0], half80=0.3, half95=0.8, family="arima", version="1"),
        _forecast(2009, [11.2, 12.9, 13.1], half80=0.3, half95=0.8, family="arima", version="2"),
        _forecast(2010, [12.0, 13.0], half80=1.0, half95=2.0, family="ets", version="3"),
    ]
    card = build_scorecard(forecasts, ACTUALS, "v9")
    assert card["as_of_year"].tolist() == sorted(card["as_of_year"].tolist())
    summary = summarize(card)

    expected: dict[tuple[str, int], list[tuple[float, float, bool, bool]]] = {}
    for forecast in forecasts:
        as_of = int(forecast["as_of_year"].iloc[0])
        for row in forecast.itertuples():
            if row.year not in ACTUALS.index:
                continue
            actual = ACTUALS[row.year]
            expected.setdefault((row.family, row.year - as_of), []).append(
                (actual - row.mean, abs(actual - ACTUALS[as_of]), row.lo_80 <= actual <= row.hi_80, row.lo_95 <= actual <= row.hi_95)
            )
    assert len(summary) == len(expected)
    for row in summary.itertuples():
        cells = expected[(row.family, row.horizon)]
        errors = [c[0] for c in cells]
        assert row.n == len(cells)
        assert row.mae == pytest.approx(sum(abs(e) for e in errors) / len(errors))
        assert row.rmse == pytest.approx(math.sqrt(sum(e * e for e in errors) / len(errors)))
        assert row.coverage_80 == pytest.approx(sum(c[2] for c in cells) / len(cells))
        assert row.coverage_95 == pytest.approx(sum(c[3] for c in cells) / len(cells))
        naive_mae = sum(c[1] for c in cells) / len(cells)
        assert row.naive_mae == pytest.approx(naive_mae)
        assert row.relative_mae == pytest.approx(row.mae / naive_mae)


def test_a_table_mixing_as_of_years_is_refused() -> None:
    mixed = pd.concat([_forecast(2009, [1.0], 0.1, 0.2), _forecast(2010, [1.0], 0.1, 0.2)])
    with pytest.raises(ValueError, match="one as_of_year"):
        score_forecast(mixed, ACTUALS, "v2")


def test_an_as_of_year_forecast_twice_counts_once_by_the_forecast_published_last() -> None:
    first = _forecast(2009, [11.5, 11.0], half80=0.6, half95=1.2, version="3").assign(published_at="2026-01-01T00:00:00+00:00")
    second = _forecast(2009, [11.0, 12.0], half80=0.6, half95=1.2, version="6").assign(published_at="2026-02-01T00:00:00+00:00")
    other = _forecast(2010, [12.5], half80=0.6, half95=1.2, version="7").assign(published_at="2026-01-15T00:00:00+00:00")
    card = build_scorecard([second, first, other], ACTUALS, "v2")  # the store lists keys in no time order
    assert len(card) == 5
    assert card.loc[card["superseded"], "model_version"].unique().tolist() == ["3"]
    summary = summarize(card).set_index("horizon")
    # By hand, from the rows that count: as of 2009 by version 6 (2010: |12 - 11|, 2011: |12.5 - 12|), as of 2010 (2011: 0).
    assert summary.loc[1, "n"] == 2 and summary.loc[1, "mae"] == pytest.approx((1.0 + 0.0) / 2)
    assert summary.loc[2, "n"] == 1 and summary.loc[2, "mae"] == pytest.approx(0.5)
    # A scorecard written before the column: every row counts, as it did.
    assert summarize(card.drop(columns="superseded")).set_index("horizon").loc[1, "n"] == 3
