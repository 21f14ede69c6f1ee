"""Benchmark ``co2_forecast`` on the ``all`` series set through a real scheduler (LocalExecutor).

Starts ``airflow api-server``, ``scheduler`` and ``dag-processor`` in a temporary home (SQLite
metadata, LocalExecutor, ``parallelism`` 2 by default, ``CO2CAST_MAX_ACTIVE_SERIES`` the same),
ingests the embedded OWID file, unpauses ``co2_forecast`` (its scheduled run forecasts as of the
data's last year: the cold run, every series trained with the production line-up, LSTM
included), then triggers it again (the unchanged rerun: every run key already published).
Prints each run's wall time as Airflow recorded it, and the split between training (model
fitting and backtests), MLflow (logging, registration, loading the champion) and publishing
(forecast, GX gate, files, scorecard), summed and per series (median), from the timing lines
the tasks log (``co2cast timing {...}``, :func:`pipeline.tasks.log_timings`).

``--limit N`` runs N series spread evenly over the ``all`` set and extrapolates the cold run to
the whole set two ways (estimates: they assume the throughput stays what it was for N series):
linearly, and with the run's fixed tasks counted once (only the span of the mapped per-series
tasks, from Airflow's task instances, scaled). The unchanged rerun maps no task per series (every run key is published and served), so
it is extrapolated by adding the per-series cost of its store reads, timed here, to its wall time.
Target (issue #11): every series with >= 30 years, both variables (about 390), under 20 minutes on
2 cores; an unchanged rerun under 2 minutes. ``--no-aggregates`` runs that set: countries only
(``CO2CAST_INCLUDE_AGGREGATES=false``; the ``all`` set otherwise adds World, continents and income
groups). Run from the repository root::

    python benchmarks/bench_all_series.py --limit 20
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable without installing: the package and the scheduler helper

from tests.stack.scheduler import airflow_services, local_executor_settings  # noqa: E402
from tests.stack.stack import free_port  # noqa: E402

MARKER = "co2cast timing"


def _run(env: dict[str, str], *command: str, timeout: float = 900) -> str:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def _wait(env: dict[str, str], processes: dict[str, subprocess.Popen[bytes]], run_id_prefix: str, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise SystemExit(f"airflow {name} exited with {process.returncode}")
        for run in _dag_runs(env, "co2_forecast"):
            if run["run_id"].startswith(run_id_prefix) and run["state"] in ("success", "failed"):
                return run
        time.sleep(5)
    raise SystemExit(f"no finished run {run_id_prefix}* within {timeout:.0f} s")


def _dag_runs(env: dict[str, str], dag_id: str) -> list[dict[str, str]]:
    """A DAG's runs, read from the SQLite metadata database (read-only; none while it is busy).

    Not through ``airflow dags list-runs``: each CLI call costs about 1.5 s of CPU, which the
    scheduler and the tasks measured would lose on two cores.
    """
    uri = f"file:{Path(env['AIRFLOW_HOME']) / 'airflow.db'}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT run_id, state, start_date, end_date FROM dag_run WHERE dag_id = ?", (dag_id,)).fetchall()
    except sqlite3.OperationalError:
        return []
    return [{key: str(row[key]) if row[key] is not None else "" for key in row.keys()} for row in rows]


def _cpu_seconds(processes: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds (user + system) each Airflow service process has used so far, from ``/proc``.

    The process itself only: the tasks the scheduler's LocalExecutor forks are not counted.
    """
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, process in processes.items():
        with contextlib.suppress(OSError):
            # Fields after the ")" that closes the command name: utime and stime are the 12th and 13th.
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[name] = (int(fields[11]) + int(fields[12])) / tick
    return used


def _seconds(run: dict[str, str]) -> float:
    start, end = (dt.datetime.fromisoformat(run[k]) for k in ("start_date", "end_date"))
    return (end - start).total_seconds()


def _timings(log_root: Path, run_id: str) -> list[dict[str, float]]:
    records = []
    for path in log_root.rglob("*.log"):
        if f"run_id={run_id}" not in str(path):
            continue
        for line in path.read_text(errors="replace").splitlines():
            match = re.search(re.escape(MARKER) + r" (\{.*?\})", line)
            if match:
                records.append(json.loads(match.group(1).replace('\\"', '"')))
    return records


def _failures(log_root: Path, run_id: str) -> list[str]:
    """``series_id: reason`` of each mapped task whose last try failed, from its task log."""
    failed: dict[str, tuple[int, str]] = {}
    for path in (log_root / "tasks").rglob("*.log"):
        if f"run_id={run_id}" not in str(path) or "task_id=forecast_series" not in str(path):
            continue
        attempt = int(match.group(1)) if (match := re.search(r"attempt=(\d+)", path.name)) else 0
        series, error = path.parent.name, None
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if timing := re.search(re.escape(MARKER) + r" (\{.*?\})", str(event.get("event", ""))):
                series = json.loads(timing.group(1)).get("series_id", series)
            if event.get("error_detail") and error is None:  # the exception that failed the task (stderr is "error" too)
                error = str(event["error_detail"][0].get("exc_value") or event.get("event"))
        key = str(path.parent)
        if key not in failed or attempt > failed[key][0]:
            failed[key] = (attempt, f"{series}: {error.splitlines()[0][:200]}" if error else "")
    return sorted(text for _, text in failed.values() if text)


def _slots_held(log_root: Path, run_id: str) -> list[float]:
    """Seconds each task's worker held its slot after the task's last log line.

    The worker logs ``Workload finished`` (in the scheduler's log, for a LocalExecutor) once its
    supervisor has noticed the task process exit; in between the slot is taken and idle.
    """
    last_line: dict[str, dt.datetime] = {}
    for path in (log_root / "tasks").rglob("*.log"):
        if f"run_id={run_id}" not in str(path):
            continue
        lines = path.read_text(errors="replace").strip().splitlines()
        ti = next((m.group(1) for line in lines if (m := re.search(r'"ti_id":"([0-9a-f-]+)"', line))), None)
        if ti and lines:
            last_line[ti] = dt.datetime.fromisoformat(json.loads(lines[-1])["timestamp"].replace("Z", "+00:00"))
    held = []
    for line in (log_root / "scheduler.log").read_text(errors="replace").splitlines():
        match = re.match(r"(\S+?)Z? \[info\s*\] Workload finished .*workload_id=([0-9a-f-]+)", line)
        if match and match.group(2) in last_line:
            finished = dt.datetime.fromisoformat(match.group(1) + "+00:00")
            held.append((finished - last_line[match.group(2)]).total_seconds())
    return held


class Span(NamedTuple):
    """The mapped tasks of a run: first start to last end, and the slot time left idle in between."""

    seconds: float
    idle: float


def _mapped_span(env: dict[str, str], run: dict[str, str], slots: int) -> Span | None:
    """The mapped tasks' span and the slot time left idle in it (``None`` when the run mapped none).

    The span runs from the first mapped task's start to the last one's end. Idle slot time is
    the time, within the span, that fewer than ``slots`` mapped tasks were running: mostly the
    scheduler noticing that a task ended and starting the next (``--idle-sleep``).
    """
    command = [str(BIN / "airflow"), "tasks", "states-for-dag-run", "co2_forecast", run["run_id"], "-o", "json"]
    out = _run(env, *command)
    rows = next((json.loads(line) for line in reversed(out.splitlines()) if line.startswith("[{")), [])
    mapped = [r for r in rows if r["task_id"] == "forecast_series" and r["start_date"] and r["end_date"]]
    if not mapped:
        return None
    events = sorted(
        [(dt.datetime.fromisoformat(r["start_date"]), 1) for r in mapped] + [(dt.datetime.fromisoformat(r["end_date"]), -1) for r in mapped]
    )
    running, idle = 0, 0.0
    for (moment, change), (following, _) in zip(events, events[1:] + events[-1:], strict=True):
        running += change
        idle += max(0, slots - running) * (following - moment).total_seconds()
    return Span((events[-1][0] - events[0][0]).total_seconds(), idle)


def _report(
    name: str,
    run: dict[str, str],
    records: list[dict[str, float]],
    n: int,
    total: int,
    span: Span | None = None,
    linear: bool = True,
    held: list[float] | None = None,
    failures: list[str] | None = None,
) -> None:
    wall = _seconds(run)
    print(f"\n{name}: run {run['run_id']} {run['state']}, {n} series, wall {wall:.1f} s ({wall / max(n, 1):.2f} s per series)")
    if n < total and linear:
        print(f"  extrapolated to all {total} series: {wall * total / max(n, 1) / 60:.1f} min (linear in the series count)")
        if span is not None:  # the run's fixed tasks (resolve, list, summarize) once, the mapped span scaled
            estimate = wall - span.seconds + span.seconds * total / max(n, 1)
            print(
                f"  mapped tasks {span.seconds:.1f} s of the wall ({span.seconds / max(n, 1):.2f} s per series), the rest fixed: "
                f"{estimate / 60:.1f} min for all {total} series"
            )
    if span is not None:
        print(f"  slot time idle between mapped tasks: {span.idle:.1f} s ({span.idle / max(n, 1):.2f} s per series)")
    if held:
        late = [h for h in held if h > 0.5]
        print(
            f"  slots held after a task's last log line: median {statistics.median(held):.2f} s; "
            f"{len(late)} of {len(held)} tasks over 0.5 s, {sum(late):.0f} s in all"
        )
    for failure in failures or []:
        print(f"  FAILED: {failure}")
    for step in ("train", "publish", "train_skipped", "publish_skipped"):
        rows = [r for r in records if r.get("step") == step]
        if not rows:
            continue
        keys = sorted({k for r in rows for k in r if k not in ("series_id", "step")})
        parts = ", ".join(
            f"{k} sum {sum(r.get(k, 0.0) for r in rows):.1f} s / median {statistics.median(r.get(k, 0.0) for r in rows):.2f} s"
            for k in keys
        )
        print(f"  {step} ({len(rows)} tasks): {parts}")


def _rerun_estimate(settings: object, series: str, wall: float, n: int, total: int) -> None:
    """Extrapolate an unchanged rerun: it maps no task, so only its store reads grow with the series count.

    Times what grows (``list_series``: each run key's manifest verified, ``summarize``: each
    manifest and its scores read) in this process for the ``n`` published series, and adds that
    per-series cost for the others to the measured wall time.
    """
    from pipeline import tasks
    from pipeline.payloads import RunTrigger

    plan = tasks.plan_run(settings, RunTrigger(run_type="manual", series=series))
    started = time.perf_counter()
    assert tasks.pending_series(settings, plan) == [], "the rerun left work behind"
    tasks.run_summary(settings, plan)
    per_series = (time.perf_counter() - started) / n
    estimate = wall + per_series * (total - n)
    print(
        f"  store reads per series (list_series + summary): {per_series * 1000:.0f} ms; "
        f"estimated for all {total} series: {estimate:.0f} s ({estimate / 60:.1f} min; the rerun maps no task)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, help="run N series spread over the `all` set (default: all of them)")
    parser.add_argument(
        "--parallelism", type=int, default=2, help="LocalExecutor slots and CO2CAST_MAX_ACTIVE_SERIES (default 2: two cores)"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for a run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home (logs, store, MLflow)")
    parser.add_argument("--no-preload", action="store_true", help="tasks import the pipeline themselves (CO2CAST_PRELOAD=false)")
    parser.add_argument("--heartbeat", type=int, default=None, help="[workers] min_heartbeat_interval in seconds (default: Airflow's, 5)")
    parser.add_argument(
        "--idle-sleep", type=float, default=None, help="[scheduler] scheduler_idle_sleep_time in seconds (default: Airflow's, 1)"
    )
    parser.add_argument(
        "--no-aggregates",
        action="store_true",
        help="the `all` set without aggregates (CO2CAST_INCLUDE_AGGREGATES=false): countries only, the issue's ~390 series",
    )
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="co2cast-bench-all-"))
    home, logs = base / "co2cast", base / "logs"
    logs.mkdir()
    (home / "mlflow").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CO2CAST_", "AIRFLOW", "MLFLOW_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(base / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            **local_executor_settings(free_port(), parallelism=args.parallelism, logs=logs),
            "GX_ANALYTICS_ENABLED": "false",
            "CO2CAST_HOME": str(home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow/mlflow.db",
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        }
    )
    _run(env, str(BIN / "airflow"), "db", "migrate")
    _run(env, str(BIN / "co2cast"), "ingest")

    from pipeline import tasks
    from pipeline.config import Settings
    from pipeline.payloads import RunTrigger

    if args.no_aggregates:
        env["CO2CAST_INCLUDE_AGGREGATES"] = "false"  # the DAG's tasks and the series counted here alike
    settings = Settings(home=home, mlflow_tracking_uri=env["MLFLOW_TRACKING_URI"], include_aggregates=not args.no_aggregates)
    every = [item.series_id for item in tasks.plan_run(settings, RunTrigger(series="all")).series]
    chosen = every if not args.limit or args.limit >= len(every) else [every[i * len(every) // args.limit] for i in range(args.limit)]
    env["CO2CAST_SERIES"] = "all" if chosen == every else ",".join(chosen)
    if args.no_preload:
        env["CO2CAST_PRELOAD"] = "false"
    env["CO2CAST_MAX_ACTIVE_SERIES"] = str(args.parallelism)  # the DAG's bound follows the slots
    if args.heartbeat is not None:
        env["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"] = str(args.heartbeat)
    if args.idle_sleep is not None:
        env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] = str(args.idle_sleep)
    print(
        f"co2_forecast on {len(chosen)} of the {len(every)} series of the `all` set "
        f"({'without' if args.no_aggregates else 'with'} aggregates); parallelism {args.parallelism}; "
        f"preload {'off' if args.no_preload else 'on'}; worker heartbeat {args.heartbeat or 5} s; "
        f"scheduler idle sleep {1 if args.idle_sleep is None else args.idle_sleep} s; home {base}"
    )

    _run(env, str(BIN / "airflow"), "dags", "reserialize")
    try:
        with airflow_services(env, logs) as processes:
            before = _cpu_seconds(processes)
            _run(env, str(BIN / "airflow"), "dags", "unpause", "co2_forecast")  # the scheduled run: the cold one
            cold = _wait(env, processes, "scheduled__", args.timeout)
            used = {name: seconds - before.get(name, 0.0) for name, seconds in _cpu_seconds(processes).items()}
            records, held = _timings(logs / "tasks", cold["run_id"]), _slots_held(logs, cold["run_id"])
            failures = _failures(logs, cold["run_id"])
            span = _mapped_span(env, cold, args.parallelism)
            _report("cold run", cold, records, len(chosen), len(every), span=span, held=held, failures=failures)
            print(
                "  Airflow's own CPU during the cold run (tasks not counted): "
                + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in used.items())
                + f" ({sum(used.values()) / len(chosen):.2f} s per series)"
            )
            _run(env, str(BIN / "airflow"), "dags", "trigger", "co2_forecast", "--run-id", "manual__rerun")
            rerun = _wait(env, processes, "manual__rerun", args.timeout)
            _report("unchanged rerun", rerun, _timings(logs / "tasks", rerun["run_id"]), len(chosen), len(every), linear=False)
            if len(chosen) < len(every):
                _rerun_estimate(settings, env["CO2CAST_SERIES"], _seconds(rerun), len(chosen), len(every))
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
