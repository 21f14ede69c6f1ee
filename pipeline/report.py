"""Lines a person reads about a published forecast: why its champion won, and its unit.

Used by ``co2cast summary``, ``co2cast show`` and the forecast DAG's summary step, so every
place says it the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pipeline.series import LeftOut

#: The score the champion line compares (lower is better), as the backtest records it.
SCORE = "mase"
NAIVE = "naive"


def _score(scores: Mapping[str, Mapping[str, float]], family: str) -> float | None:
    value = scores.get(family, {}).get(SCORE)
    return float(value) if value is not None and math.isfinite(float(value)) else None


def champion_reason(champion: str | None, scores: Mapping[str, Mapping[str, float]]) -> str:
    """One line saying why the champion won: its backtest MASE against the runner-up and naive.

    Args:
        champion: the champion's family (candidate name).
        scores: candidate -> backtest metrics, as recorded in ``backtest.json`` / the trained series.

    Returns:
        E.g. ``"champion arima: backtest MASE 0.912, runner-up drift 1.034, naive 1.000 (lower is better)"``.
    """
    if not champion:
        return "champion unknown: the manifest names no model family"
    mine = _score(scores, champion)
    if mine is None:
        return f"champion {champion}: no backtest {SCORE.upper()} recorded"
    others = sorted(
        ((name, value) for name in scores if name != champion and name != NAIVE and (value := _score(scores, name)) is not None),
        key=lambda kv: kv[1],
    )
    parts = [f"champion {champion}: backtest {SCORE.upper()} {mine:.3f}"]
    if others:
        runner, value = others[0]
        parts.append(f"runner-up {runner} {value:.3f}")
    naive = _score(scores, NAIVE)
    if naive is not None and champion != NAIVE:
        parts.append(f"naive {naive:.3f}")
    text = ", ".join(parts) + " (lower is better)"
    beaten = [name for name, value in others if value < mine] + ([NAIVE] if naive is not None and naive < mine else [])
    if beaten:
        text += f"; kept by the selection policy although {', '.join(beaten)} scored better"
    return text


def left_out_line(left_out: Mapping[str, Any] | None, last_year: int) -> str | None:
    """The history line of a series that left out its early years, or ``None`` when it left out nothing.

    Args:
        left_out: :meth:`pipeline.series.LeftOut.to_dict` as a trained series or manifest carries it.
        last_year: last modelled year (the as-of year).

    Returns:
        E.g. ``"modelled 1878-2014; left out 1751-1866 (116 values) before a gap in 1867-1877"``.
    """
    return LeftOut.from_dict(left_out).history_line(last_year) if left_out else None
