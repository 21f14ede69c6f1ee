"""The scheduler pre-imports the pipeline before it forks tasks; other Airflow commands do not."""

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


def _loaded_after_local_settings(argv: list[str], **env: str) -> dict[str, bool]:
    """Import airflow_local_settings as Airflow does, in a fresh interpreter started as ``argv``."""
    code = (
        "import json, sys\n"
        f"sys.argv = {argv!r}\n"
        "import airflow_local_settings\n"
        f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))\n"
    )
    environment = {**{k: v for k, v in os.environ.items() if k != "CO2CAST_PRELOAD"}, "PYTHONPATH": str(ROOT / "deploy" / "airflow"), **env}
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["airflow", "scheduler"], ["airflow", "celery", "worker"]])
def test_the_processes_that_fork_tasks_preload_the_pipeline(argv: list[str]) -> None:
    assert all(_loaded_after_local_settings(argv).values())


@pytest.mark.parametrize("argv", [["airflow", "dags", "list"], ["airflow", "api-server"]])
def test_other_airflow_commands_stay_lean(argv: list[str]) -> None:
    assert not any(_loaded_after_local_settings(argv).values())


def test_preload_can_be_switched_off() -> None:
    assert not any(_loaded_after_local_settings(["airflow", "scheduler"], CO2CAST_PRELOAD="false").values())


def test_an_invalid_setting_does_not_stop_the_scheduler_preloading() -> None:
    assert all(_loaded_after_local_settings(["airflow", "scheduler"], CO2CAST_MAX_SOURCE_BYTES="lots").values())


def test_a_module_that_cannot_be_imported_is_reported_not_raised(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CO2CAST_PRELOAD", raising=False)
    with caplog.at_level(logging.WARNING, logger="pipeline.preload"):
        assert preload(("json", "co2cast_no_such_module")) == ["co2cast_no_such_module"]
    assert "co2cast_no_such_module" in caplog.text
