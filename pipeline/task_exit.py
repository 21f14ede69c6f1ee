"""Let Airflow's task supervisor notice a finished task at once, not up to 5 seconds later.

Every task runs in a process forked by a supervisor (a LocalExecutor worker or a Celery worker)
that holds the worker's slot until it has read the task's sockets to their end and reaped the
process. The supervisor of ``apache-airflow-task-sdk`` 1.3 (``ActivitySubprocess``) does both in
one loop: wait on the sockets (``selector.select``), then poll the process without blocking. A
task process's sockets close as it exits, a moment before the kernel lets it be reaped; when the
supervisor wakes in that moment, it finds the process not yet gone and goes back to wait on a
selector that has no socket left, which sleeps the whole ``[workers] min_heartbeat_interval``
(5 s). ``benchmarks/bench_all_series.py`` counted 102 of 448 tasks that held their slot exactly
5 s after their last log line (16 % of the slot time of a cold run of every series).

:func:`notice_task_exit_promptly` wraps that loop's step: once every socket has closed and the
exit code is still unknown, it waits on the process itself (for as long as the step would have
waited on the empty selector) and then lets the step run without blocking. Nothing else changes:
a process that lingers after closing its sockets is still heartbeated at the same interval, and
a kill's timeout still raises. ``deploy/airflow/airflow_local_settings.py`` applies it in the
processes that supervise tasks (the scheduler, whose LocalExecutor workers are forks of it, and a
Celery worker). It checks the supervisor it wraps has the parts it relies on, and leaves it
alone otherwise; drop it once Airflow's supervisor waits on the process itself.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any

logger = logging.getLogger(__name__)

#: Set on the wrapped step, so a second call does not wrap the wrap (and tests can tell).
MARK = "_co2cast_notices_exit_promptly"
_PARAMETERS = ("self", "max_wait_time", "raise_on_timeout", "expect_signal")
_ATTRIBUTES = ("_process", "_exit_code", "_open_sockets")


def notice_task_exit_promptly() -> bool:
    """Wrap ``ActivitySubprocess._service_subprocess`` (idempotent).

    Returns:
        Whether the supervisor is wrapped: ``False`` when Airflow's supervisor is not the one this
        was written for (its step's parameters or the attributes it reads differ), with a warning.
    """
    from airflow.sdk.execution_time.supervisor import ActivitySubprocess

    step = ActivitySubprocess._service_subprocess
    if getattr(step, MARK, False):
        return True
    fields = {field.name for field in ActivitySubprocess.__attrs_attrs__}
    if tuple(inspect.signature(step).parameters) != _PARAMETERS or not set(_ATTRIBUTES) <= fields:
        logger.warning("co2cast: Airflow's task supervisor is not the one pipeline.task_exit wraps; left as it is")
        return False

    @functools.wraps(step)
    def service_subprocess(self: Any, max_wait_time: float, raise_on_timeout: bool = False, expect_signal: int | None = None) -> int | None:
        if self._exit_code is None and not self._open_sockets:  # every socket has closed: the process is exiting
            try:
                self._process.wait(timeout=max(0.01, max_wait_time))  # the exit code is kept for the step's own poll
            except self._process.TimeoutExpired:
                pass
            max_wait_time = 0  # the selector has nothing left to wait on
        return step(self, max_wait_time, raise_on_timeout=raise_on_timeout, expect_signal=expect_signal)

    setattr(service_subprocess, MARK, True)
    ActivitySubprocess._service_subprocess = service_subprocess
    return True
