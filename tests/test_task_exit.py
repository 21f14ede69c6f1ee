"""Airflow's real task supervisor notices a task process's exit without sleeping on an empty selector.

A task process that closes every socket to its supervisor some time before it exits stands in
for the moment, at the end of every task, between its sockets closing and the kernel letting it
be reaped (:mod:`pipeline.task_exit`). The supervisor is Airflow's own ``ActivitySubprocess``,
forking a real process; only the Execution API client is a stand-in, as in Airflow's own tests.
Which processes apply the wrap is tested with the preload, in ``tests/test_preload.py``.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from unittest import mock

import pytest
from airflow.sdk.api.datamodels._generated import BundleInfo, DagRun, TaskInstance, TIRunContext
from airflow.sdk.execution_time import supervisor

from pipeline.task_exit import notice_task_exit_promptly

LINGER = 2.0  # seconds the task process lives on after closing its sockets (longer than a stalled supervisor)


def _closes_its_sockets_then_exits() -> None:
    os.closerange(0, 65536)  # stdin/stdout/stderr, the requests and the logs sockets
    time.sleep(LINGER)


def _client() -> mock.MagicMock:
    now = datetime.now(tz=UTC)
    dag_run = DagRun(
        dag_id="d",
        run_id="r",
        logical_date=now,
        data_interval_start=now,
        data_interval_end=now,
        run_after=now,
        start_date=now,
        end_date=None,
        run_type="manual",
        state="running",
        consumed_asset_events=[],
        partition_key=None,
    )
    client = mock.MagicMock()
    client.task_instances.start.return_value = TIRunContext(dag_run=dag_run, max_tries=0)
    return client


def _supervise() -> tuple[int, list[float]]:
    """Run the task under the supervisor; the exit code, and each wait it made with no socket left open."""
    ti = TaskInstance(id=uuid.uuid4(), task_id="t", dag_id="d", run_id="r", try_number=1, dag_version_id=uuid.uuid4())
    bundle = BundleInfo(name="b", version=None)
    process = supervisor.ActivitySubprocess.start(
        what=ti, dag_rel_path=os.devnull, bundle_info=bundle, client=_client(), target=_closes_its_sockets_then_exits
    )
    select, waits = process.selector.select, []

    def recorded(timeout: float | None = None):
        if not process._open_sockets:
            waits.append(timeout)
        return select(timeout)

    process.selector.select = recorded
    return process.wait(), waits


@pytest.fixture
def unwrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's step as shipped, restored after the test (the wrap is process-wide)."""
    monkeypatch.setattr(supervisor.ActivitySubprocess, "_service_subprocess", supervisor.WatchedSubprocess._service_subprocess)
    monkeypatch.setattr(supervisor, "MIN_HEARTBEAT_INTERVAL", 1)  # the empty-selector sleep, shortened for the test


def test_airflow_as_shipped_sleeps_on_an_empty_selector_after_the_sockets_close(unwrapped: None) -> None:
    code, waits = _supervise()
    assert code == 0
    assert max(waits) == pytest.approx(1)  # the whole heartbeat interval, with nothing left to wake it


def test_wrapped_the_supervisor_waits_on_the_process_instead(unwrapped: None) -> None:
    assert notice_task_exit_promptly()
    assert notice_task_exit_promptly()  # a second call does not wrap the wrap
    code, waits = _supervise()
    assert code == 0
    assert waits and max(waits) <= 0.01  # the exit was read from the process, not after a selector's timeout


def test_a_supervisor_it_was_not_written_for_is_left_alone(unwrapped: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def other_step(self, timeout):  # a changed signature upstream
        return None

    monkeypatch.setattr(supervisor.ActivitySubprocess, "_service_subprocess", other_step)
    assert not notice_task_exit_promptly()
    assert supervisor.ActivitySubprocess._service_subprocess is other_step
