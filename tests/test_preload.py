"""The scheduler pre-imports the pipeline before it forks tasks and wraps its task supervisor; other Airflow commands do neither."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.preload import preload

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pipeline.tasks", "pipeline.core", "mlflow", "great_expectations", "statsmodels.tsa.api")


def _after_local_settings(argv: list[str], **env: str) -> tuple[dict[str, bool], bool, int]:
    """Import airflow_local_settings as Airflow does, in a fresh interpreter started as ``argv``.

    Returns:
        Which of the heavy modules it loaded, whether Airflow's task supervisor is wrapped
        (:mod:`pipeline.task_exit`; looked at after the modules are listed), and how many
        warm figures the chart pool holds (:func:`pipeline.plots.warm_up`).
    """
    code = (
        "import json, sys\n"
        f"sys.argv = {argv!r}\n"
        "import airflow_local_settings\n"
        f"loaded = {{m: m in sys.modules for m in {HEAVY!r}}}\n"
        "pooled = len(sys.modules['pipeline.plots'].pooled_figures()) if 'pipeline.plots' in sys.modules else 0\n"
        "from airflow.sdk.execution_time.supervisor import ActivitySubprocess\n"
        "from pipeline.task_exit import MARK\n"
        "print(json.dumps([loaded, getattr(ActivitySubprocess._service_subprocess, MARK, False), pooled]))\n"
    )
    environment = {**{k: v for k, v in os.environ.items() if k != "CO2CAST_PRELOAD"}, "PYTHONPATH": str(ROOT / "deploy" / "airflow"), **env}
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300, check=True)
    loaded, wrapped, pooled = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded, wrapped, pooled


@pytest.mark.parametrize("argv", [["airflow", "scheduler"], ["airflow", "celery", "worker"]])
def test_the_processes_that_fork_tasks_preload_the_pipeline_and_wrap_the_supervisor(argv: list[str]) -> None:
    loaded, wrapped, pooled = _after_local_settings(argv)
    assert all(loaded.values())
    assert wrapped is True
    assert pooled >= 9  # every chart kind drawn once: the tasks forked from here start with warm figures


@pytest.mark.parametrize("argv", [["airflow", "dags", "list"], ["airflow", "api-server"]])
def test_other_airflow_commands_stay_lean(argv: list[str]) -> None:
    loaded, wrapped, pooled = _after_local_settings(argv)
    assert not any(loaded.values())
    assert wrapped is False and pooled == 0


def test_preload_can_be_switched_off_and_the_supervisor_is_still_wrapped() -> None:
    loaded, wrapped, pooled = _after_local_settings(["airflow", "scheduler"], CO2CAST_PRELOAD="false")
    assert not any(loaded.values())
    assert wrapped is True and pooled == 0


def test_an_invalid_setting_does_not_stop_the_scheduler_preloading() -> None:
    loaded, _, _ = _after_local_settings(["airflow", "scheduler"], CO2CAST_MAX_SOURCE_BYTES="lots")
    assert all(loaded.values())


def test_a_module_that_cannot_be_imported_is_reported_not_raised(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CO2CAST_PRELOAD", raising=False)
    with caplog.at_level(logging.WARNING, logger="pipeline.preload"):
        assert preload(("json", "co2cast_no_such_module")) == ["co2cast_no_such_module"]
    assert "co2cast_no_such_module" in caplog.text
