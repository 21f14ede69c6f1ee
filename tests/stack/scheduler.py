"""A real Airflow scheduler with the LocalExecutor, for the backfill test and the all-series benchmark.

Airflow 3 runs its LocalExecutor on a SQLite metadata database (as ``airflow standalone``
does); its workers talk to the API server, so :func:`airflow_services` starts ``api-server``,
``scheduler`` and ``dag-processor`` together and stops every one of them on exit, also on
failure. Nothing here imports pytest: ``benchmarks/bench_all_series.py`` uses it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def local_executor_settings(port: int, parallelism: int, logs: Path) -> dict[str, str]:
    """The ``AIRFLOW__*`` settings of a LocalExecutor scheduler whose API server listens on ``port``."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(logs / "tasks"),
        # co2cast's airflow_local_settings: the scheduler pre-imports the pipeline (pipeline.preload).
        "PYTHONPATH": str(ROOT / "deploy" / "airflow"),
    }


@contextlib.contextmanager
def airflow_services(env: dict[str, str], logs: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """``airflow api-server``, ``scheduler`` and ``dag-processor``, each logging to ``logs/<name>.log``."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in ("api-server", "scheduler", "dag-processor"):
            command = [str(BIN / "airflow"), name] + (["--port", env["AIRFLOW__API__PORT"]] if name == "api-server" else [])
            with (logs / f"{name}.log").open("wb") as log:
                processes[name] = subprocess.Popen(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True
                )
        yield processes
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def dag_runs(env: dict[str, str], dag_id: str) -> list[dict[str, str]]:
    """A DAG's runs, or none when the CLI could not read them this time (SQLite busy)."""
    command = [str(BIN / "airflow"), "dags", "list-runs", dag_id, "-o", "json"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    if result.returncode != 0:
        return []
    for line in reversed(result.stdout.splitlines()):  # the JSON list, after any log lines
        if line.startswith("[{") or line.strip() == "[]":
            return json.loads(line)
    return []
