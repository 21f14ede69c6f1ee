"""Lines a person reads about a published forecast: why its champion won, and its unit.

Used by ``co2cast summary``, ``co2cast show`` and the forecast DAG's summary step, so every
place says it the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pipeline.series import LeftOut

#: The score the champion line compares (lower is better) when a manifest records none: what
#: every forecast was selected on before ``CO2CAST_SELECTION_METRIC`` was recorded.
SCORE = "mase"
NAIVE = "naive"


def selection_metric(manifest: Any) -> str:
    """The backtest metric a published forecast's champion was selected on (its ``trained`` block), ``mase`` when unrecorded.

    Args:
        manifest: a :class:`pipeline.payloads.Manifest` or the manifest as a dict.
    """
    extra = manifest if isinstance(manifest, Mapping) else (getattr(manifest, "model_extra", None) or {})
    trained = extra.get("trained")
    metric = trained.get("selection_metric") if isinstance(trained, Mapping) else None
    return metric if isinstance(metric, str) and metric else SCORE


def _score(scores: Mapping[str, Mapping[str, float]], family: str, metric: str) -> float | None:
    value = scores.get(family, {}).get(metric)
    return float(value) if value is not None and math.isfinite(float(value)) else None


def kept_by_gate(gate: Mapping[str, Any] | None, version: Any) -> bool:
    """Whether the champion gate's record of a run says it kept ``@champion`` (or its recipe refitted) on ``version``.

    Then the version a run published is not the selection's choice (the challenger, which lost at the gate).

    Args:
        gate: the gate's record of the run's key (:func:`pipeline.publish.gate_record`), or ``None``.
        version: the model version the run's manifest publishes.
    """
    if gate is None or version is None or gate.get("challenger_version") is None:
        return False
    return str(gate.get("to_version")) == str(version) != str(gate.get("challenger_version"))


def _gate_line(champion: str, gate: Mapping[str, Any]) -> str:
    """The champion line of a run whose gate kept the champion: the scores on the same windows and the gate's reason."""
    metric = str(gate.get("metric") or SCORE)
    challenger = str(gate.get("challenger_family") or "?")

    def number(key: str) -> str:
        value = gate.get(key)
        return f"{float(value):.3f}" if isinstance(value, int | float) and math.isfinite(float(value)) else "n/a"

    scores = [f"champion {number('champion_score')}", f"{challenger} {number('challenger_score')}"]
    if challenger != NAIVE:
        scores.append(f"naive {number('naive_score')}")
    return (
        f"champion {champion}: kept by the champion gate against the challenger {challenger} "
        f"({metric.upper()} on the same windows: {', '.join(scores)}): {gate.get('reason', '')}"
    )


def champion_reason(
    champion: str | None,
    scores: Mapping[str, Mapping[str, float]],
    metric: str = SCORE,
    gate: Mapping[str, Any] | None = None,
    version: Any = None,
) -> str:
    """One line saying why the champion won: its backtest score against the runner-up and naive.

    When the champion gate kept the champion (the selection's choice lost at the gate:
    :func:`kept_by_gate`), the line says so with the gate's scores on the same windows and its
    reason instead: this run's backtest need not hold the kept recipe at all.

    Args:
        champion: the champion's family (candidate name).
        scores: candidate -> backtest metrics, as recorded in ``backtest.json`` / the trained series.
        metric: the metric the champion was selected on (:func:`selection_metric`); the line compares on it.
        gate: the champion gate's record of the run that published the forecast
            (:func:`pipeline.publish.gate_record`), or ``None`` (a backfill, or no gate).
        version: the model version the forecast publishes.

    Returns:
        E.g. ``"champion arima: backtest MASE 0.912, runner-up drift 1.034, naive 1.000 (lower is better)"``.
    """
    if not champion:
        return "champion unknown: the manifest names no model family"
    if gate is not None and kept_by_gate(gate, version):
        return _gate_line(champion, gate)
    name = metric.upper()
    mine = _score(scores, champion, metric)
    if mine is None:
        return f"champion {champion}: no backtest {name} recorded"
    others = sorted(
        ((family, value) for family in scores if family not in (champion, NAIVE) and (value := _score(scores, family, metric)) is not None),
        key=lambda kv: kv[1],
    )
    parts = [f"champion {champion}: backtest {name} {mine:.3f}"]
    if others:
        runner, value = others[0]
        parts.append(f"runner-up {runner} {value:.3f}")
    naive = _score(scores, NAIVE, metric)
    if naive is not None and champion != NAIVE:
        parts.append(f"naive {naive:.3f}")
    text = ", ".join(parts) + " (lower is better)"
    beaten = [family for family, value in others if value < mine] + ([NAIVE] if naive is not None and naive < mine else [])
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
