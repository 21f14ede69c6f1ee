"""The Airflow boundary: run a task-layer function inside an Airflow task.

The DAG files stay wiring: a task body is ``runner.call(tasks.<step>, …)``. This module is
the one place that reads Airflow's context (run type, logical date, params, triggering asset
events), turns payloads into plain dicts for XCom, and maps co2cast's errors onto Airflow's
retry semantics:

* a permanent error (:class:`pipeline.errors.PermanentError`, or any
  :class:`pipeline.errors.Co2castError` not marked transient) fails the task at once with its
  one-line message (``AirflowFailException``: no retry, a person has to act). The message is
  logged first, as the task log's error line; co2cast's own traceback goes to the debug log
  only (Airflow still prints the frames of its own call to the task);
* a transient error, and anything unexpected, propagates: Airflow retries the task.

Airflow is imported inside the functions: the package stays importable without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pipeline.errors import Co2castError
from pipeline.payloads import AirflowIds, Payload, RunTrigger

logger = logging.getLogger(__name__)


def to_xcom(value: Any) -> Any:
    """A task result as plain data: payloads become dicts, lists and tuples are converted item by item."""
    if isinstance(value, Payload):
        return value.to_xcom()
    if isinstance(value, (list, tuple)):
        return [to_xcom(item) for item in value]
    return value


def call(step: Callable[..., Any], /, *args: Any, outlet: Any = None, **kwargs: Any) -> Any:
    """Run ``step(settings, *args, **kwargs)`` in an Airflow task; return its result for XCom.

    Args:
        step: a task-layer function (settings first).
        *args: its payload arguments (plain dicts from XCom are fine: steps validate them).
        outlet: an Asset the task updates; its event's extra is
            :func:`pipeline.tasks.asset_extra` of the result.
        **kwargs: more keyword arguments for the step.

    Returns:
        The step's result as plain data.

    Raises:
        AirflowFailException: the step failed permanently (no retry).
        AirflowException: it failed for a transient cause (Airflow retries it); the task log's
            error line is co2cast's one line either way, not a traceback through co2cast's frames.
    """
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from pipeline.config import get_settings

    try:
        result = step(get_settings(), *args, **kwargs)
    except Co2castError as error:
        logger.debug("where %s was raised", type(error).__name__, exc_info=error)
        if error.transient:  # the network, S3 5xx, a busy database: Airflow retries, and the log says so in one line
            logger.error("%s (transient: Airflow retries this task)", error)
            raise AirflowException(str(error)) from None
        logger.error("%s", error)
        raise AirflowFailException(str(error)) from None
    if outlet is not None:
        from airflow.sdk import get_current_context

        from pipeline.tasks import asset_extra

        get_current_context()["outlet_events"][outlet].extra = asset_extra(result)
    return to_xcom(result)


def airflow_ids() -> AirflowIds:
    """The current DAG and run id."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    return AirflowIds(dag_id=context["dag"].dag_id, run_id=context["run_id"])


def param(name: str) -> Any:
    """A param of the current run (``None`` when unset)."""
    from airflow.sdk import get_current_context

    return get_current_context()["params"].get(name)


def trigger(asset: Any) -> RunTrigger:
    """Why the current run started: run type, logical date, params and the triggering asset event.

    Args:
        asset: the Asset whose events may have triggered the run; the vintage its last event
            names is the one the run forecasts (not whatever is latest by the time it runs).

    Returns:
        The :class:`pipeline.payloads.RunTrigger`.
    """
    from airflow.sdk import get_current_context

    from pipeline.plan import normalize_run_type

    context = get_current_context()
    params = context["params"]
    try:
        events = list(context["triggering_asset_events"][asset])
    except (KeyError, TypeError):
        events = []
    named = (events[-1].extra or {}).get("vintage") if events else None
    return RunTrigger(
        run_type=normalize_run_type(context["dag_run"].run_type),
        logical_date=context.get("logical_date"),
        as_of_year=params.get("as_of_year"),
        series=params.get("series"),
        vintage=params.get("vintage") or None,
        # An event created by hand (the UI's "Create Asset Event") may name anything: plan_run refuses it in one line.
        asset_vintage=None if named is None else str(named),
    )
