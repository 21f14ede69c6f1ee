"""Great Expectations gates, run with GX Core 1.x inside our own tasks.

Suites are versioned JSON files under ``expectations/``. GX reports failure without raising,
so :func:`run_suite` returns a :class:`GateResult` whose ``success`` the caller must check; the
result keeps GX's own JSON and a short summary a person can read (which expectation failed, on
which rows).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

#: Where the suites live: ``expectations/`` beside ``pipeline/`` in the checkout.
EXPECTATIONS_DIR = Path(__file__).resolve().parents[1] / "expectations"
#: Columns that name a row in the summaries, per suite, when present in the batch.
ROW_ID_COLUMNS = (
    "series_id",
    "entity",
    "renamed_to",
    "year",
    "variable",
    "value_text",
    "reported_by",
    "lost",
    "revision_ratio",
    "compared",
)
#: Row columns left out of an example row where they are empty (most entities were not renamed).
SHOWN_WHEN_SET = ("renamed_to",)
MAX_ROWS_SHOWN = 10
MAX_TEXT_SHOWN = 60
#: Tables at least this long get a full garbage collection once validated (see
#: :func:`release_memory`); the embedded OWID release (125,000 staging rows) does not.
COLLECT_ROWS = 200_000
#: The arguments of an expectation worth repeating in a one-line message.
ONE_LINE_KWARGS = ("column", "column_list", "value_set", "min_value", "max_value", "strict_min")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class GateResult:
    """The outcome of one suite on one table."""

    suite: str
    success: bool
    result: dict[str, Any]
    failures: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines a person can act on: each failed expectation and example rows."""
        if self.success:
            return f"{self.suite}: all expectations met"
        lines = [f"{self.suite}: {len(self.failures)} expectation(s) failed"]
        for failure in self.failures:
            lines.append(f"- {failure['expectation']} {failure['kwargs']}: {failure['why']}")
            if failure.get("observed") is not None:
                lines.append(f"    observed: {failure['observed']}")
            if failure.get("unexpected_count"):
                lines.append(f"    {failure['unexpected_count']} row(s) fail, e.g.:")
                lines.extend(f"      {row}" for row in failure["rows"])
        return "\n".join(lines)

    def one_line(self, limit: int = 600) -> str:
        """The failures on one line, for an error message (the full summary goes to the report)."""
        if self.success:
            return f"{self.suite}: all expectations met"
        parts = []
        for failure in self.failures:
            args = ", ".join(f"{k}={_compact(v)}" for k, v in failure["kwargs"].items() if k in ONE_LINE_KWARGS)
            part = f"{failure['expectation']}({args})"
            if failure.get("unexpected_count"):
                example = " ".join(f"{k}={_compact(v)}" for k, v in (failure["rows"][:1] or [{}])[0].items())
                part += f" failed for {failure['unexpected_count']} row(s), e.g. {example}"
            elif failure.get("observed") is not None:
                part += f" failed, observed {_compact(failure['observed'])}"
            parts.append(part)
        line = f"{self.suite}: " + "; ".join(parts)
        return line if len(line) <= limit else line[: limit - 1] + "…"


def _compact(value: Any) -> str:
    if isinstance(value, dict) and "$PARAMETER" in value:
        return str(value["$PARAMETER"])
    text = CONTROL.sub("?", str(value))
    return text if len(text) <= MAX_TEXT_SHOWN else text[: MAX_TEXT_SHOWN - 1] + "…"


def load_suite(name: str, directory: Path = EXPECTATIONS_DIR, scope: str | None = None) -> Any:
    """Load an ``ExpectationSuite`` from ``<directory>/<name>.json``.

    Args:
        name: the suite's file name without ``.json``.
        directory: where the suites are.
        scope: keep only the expectations whose ``meta.scope`` is this (``"rows"`` for those
            without one); ``None`` keeps them all.
    """
    import great_expectations as gx

    document = json.loads((directory / f"{name}.json").read_text())
    expectations = document["expectations"]
    if scope is not None:
        expectations = [e for e in expectations if (e.get("meta") or {}).get("scope", "rows") == scope]
    return gx.ExpectationSuite(name=document["name"], expectations=expectations, meta=document.get("meta", {}))


def _context() -> Any:
    # No usage statistics leave the machine, and no progress bars in task logs.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def run_suite(name: str, frame: pd.DataFrame, parameters: dict[str, Any] | None = None, scope: str | None = None) -> GateResult:
    """Validate a DataFrame against a suite from ``expectations/``.

    Args:
        name: the suite's file name without ``.json``.
        frame: the table to validate.
        parameters: values for the suite's ``$PARAMETER`` placeholders.
        scope: run only the expectations of this ``meta.scope`` (see :func:`load_suite`).

    Returns:
        The :class:`GateResult`; check ``success``.
    """
    gate = _validate(name, frame, parameters, _context(), scope=scope)
    logger.info("%s", gate.summary())
    return gate


def run_suite_chunked(
    name: str, frames: Iterable[pd.DataFrame], parameters: dict[str, Any] | None = None, scope: str | None = None
) -> GateResult:
    """Validate a large table chunk by chunk against a suite of row-wise expectations.

    Only suites whose every expectation holds for a table when it holds for each chunk may be
    run this way (value bounds, regexes, non-null, and uniqueness when every key lives in one
    chunk). The chunks' results are merged: unexpected counts add up, example rows come from
    the first chunks that have them.

    Args:
        name: the suite's file name without ``.json``.
        frames: the chunks, produced one at a time so only one is in memory.
        parameters: values for the suite's ``$PARAMETER`` placeholders.
        scope: run only the expectations of this ``meta.scope`` (``"rows"``: the row-wise ones).

    Returns:
        One :class:`GateResult` for the whole table.
    """
    context = _context()
    merged: GateResult | None = None
    # Counted by hand: enumerate's reused result tuple would hold the last chunk while the next is made.
    index = -1
    for frame in frames:
        index += 1
        gate = _validate(name, frame, parameters, context, suffix=f"_{index}", scope=scope)
        context.data_sources.delete(f"{name}_source_{index}")  # let the chunk go
        rows = len(frame)
        del frame
        release_memory(rows)
        merged = gate if merged is None else _merge(merged, gate)
    if merged is None:
        raise ValueError(f"{name}: no table to validate")
    logger.info("%s", merged.summary())
    return merged


def release_memory(rows: int) -> None:
    """Give freed heap pages back to the system after a table of ``rows`` rows was let go.

    Gating a large release frees and allocates many chunk-sized arrays; glibc keeps freed
    pages mapped, so without trimming (glibc only; elsewhere a no-op) the resident size only
    grows from chunk to chunk. GX's validation objects also hold a chunk in reference cycles
    until the collector runs, so after a table of ``COLLECT_ROWS`` rows or more a full
    collection runs first (it costs 0.3 s or more in a process with Airflow and MLflow loaded,
    too much to pay for every small table).
    """
    if rows >= COLLECT_ROWS:
        gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _merge(first: GateResult, second: GateResult) -> GateResult:
    """Two chunks' results of one suite as one result."""
    document = {**first.result, "results": [], "success": first.success and second.success}
    for a, b in zip(first.result["results"], second.result["results"], strict=True):
        if a["success"] and b["success"]:
            document["results"].append(a)
            continue
        res_a, res_b = a.get("result") or {}, b.get("result") or {}
        combined = {**(res_a if not a["success"] else res_b)}
        for key in ("unexpected_count", "element_count", "missing_count"):
            if key in res_a or key in res_b:
                combined[key] = (res_a.get(key) or 0) + (res_b.get(key) or 0)
        for key in ("partial_unexpected_list", "partial_unexpected_index_list"):
            if key in res_a or key in res_b:
                combined[key] = ((res_a.get(key) or []) + (res_b.get(key) or []))[:MAX_ROWS_SHOWN]
        document["results"].append({**(a if not a["success"] else b), "success": False, "result": combined})
    statistics = dict(first.result.get("statistics") or {})
    successful = sum(1 for r in document["results"] if r["success"])
    statistics.update(successful_expectations=successful, unsuccessful_expectations=len(document["results"]) - successful)
    document["statistics"] = statistics
    failures = [_describe_failure(r) for r in document["results"] if not r["success"]]
    return GateResult(suite=first.suite, success=bool(document["success"]), result=document, failures=failures)


def _validate(
    name: str, frame: pd.DataFrame, parameters: dict[str, Any] | None, context: Any, suffix: str = "", scope: str | None = None
) -> GateResult:
    suite = load_suite(name, scope=scope)
    batch = (
        context.data_sources.add_pandas(f"{name}_source{suffix}")
        .add_dataframe_asset(f"{name}_asset")
        .add_batch_definition_whole_dataframe(f"{name}_batch")
        .get_batch(batch_parameters={"dataframe": frame if isinstance(frame.index, pd.RangeIndex) else frame.reset_index(drop=True)})
    )
    id_columns = [c for c in ROW_ID_COLUMNS if c in frame.columns]
    result = batch.validate(
        suite,
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_ROWS_SHOWN, "unexpected_index_column_names": id_columns},
        expectation_parameters=parameters or {},
    )
    document = result.to_json_dict()
    failures = [_describe_failure(r) for r in document["results"] if not r["success"]]
    label = name if scope in (None, "rows") else f"{name}[{scope}]"
    return GateResult(suite=label, success=bool(result.success), result=document, failures=failures)


def _shown(value: Any) -> Any:
    """A value from the data as it may appear in a summary: plain types, printable, capped.

    Summaries go to logs, task failures and quarantine reports: they must never carry more of
    a file than a short, sanitised excerpt.
    """
    if isinstance(value, dict):
        return {str(k): _shown(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shown(v) for v in value[:MAX_ROWS_SHOWN]]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalars print as np.float64(...)
    if isinstance(value, str):
        value = CONTROL.sub("?", value)
        # A character that prints as nothing or as a space (a no-break or thin space) is named,
        # so that "16.294\u00a0" in a report is not read as a clean "16.294 ".
        value = "".join(c if c == " " or (c.isprintable() and not c.isspace()) else f"\\u{ord(c):04x}" for c in value)
        return value if len(value) <= MAX_TEXT_SHOWN else value[: MAX_TEXT_SHOWN - 1] + "…"
    return value


def _without_empty(row: Any) -> Any:
    if not isinstance(row, dict):
        return row
    return {k: v for k, v in row.items() if k not in SHOWN_WHEN_SET or not (v is None or v == "" or (isinstance(v, float) and v != v))}


def _describe_failure(item: dict[str, Any]) -> dict[str, Any]:
    config = item["expectation_config"]
    res = item.get("result") or {}
    rows = res.get("partial_unexpected_index_list") or [{"value": v} for v in res.get("partial_unexpected_list") or []]
    kwargs = {k: v for k, v in config["kwargs"].items() if k not in ("batch_id", "result_format")}
    return {
        "expectation": config["type"],
        "kwargs": kwargs,
        "why": (config.get("meta") or {}).get("why", ""),
        "unexpected_count": res.get("unexpected_count"),
        "observed": _shown(res.get("observed_value")),
        "rows": [_shown(_without_empty(row)) for row in rows[:MAX_ROWS_SHOWN]],
        "exception": (item.get("exception_info") or {}).get("exception_message"),
    }
