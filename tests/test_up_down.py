"""scripts/up.sh and scripts/down.sh (make up, make down) trust a pid file only while its process
is the one recorded: after a reboot, or once a service died, the pid may name another process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def start_time(pid: int) -> str:
    """Field 22 of /proc/PID/stat (the command name, field 2, may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """Someone else's process, in its own session like each of make up's services."""
    process = subprocess.Popen(["setsid", "sleep", "300"])  # setsid execs sleep: the pid is its group's
    time.sleep(0.2)
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def down(home: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "CO2CAST_HOME": str(home)}
    return subprocess.run(["bash", str(ROOT / "scripts" / "down.sh")], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("recorded", ["{pid}", "{pid} 1", "{pid} {start}0"])
def test_down_leaves_a_reused_pid_alone(tmp_path: Path, stranger: subprocess.Popen[bytes], recorded: str) -> None:
    """A pid file naming a pid that now belongs to another process (no start time recorded, or
    another one): make down removed it, saying so, and killed nothing."""
    (tmp_path / "up").mkdir()
    pidfile = tmp_path / "up" / "airflow-scheduler.pid"
    pidfile.write_text(recorded.format(pid=stranger.pid, start=start_time(stranger.pid)) + "\n")
    result = down(tmp_path)
    assert result.returncode == 0, result.stderr
    assert running(stranger.pid), "make down killed a process make up did not start"
    assert not pidfile.exists()
    assert result.stdout.strip() == "nothing was running"
    assert len(result.stderr.splitlines()) == 1 and "airflow-scheduler.pid is stale" in result.stderr


def test_down_stops_the_recorded_process(tmp_path: Path, stranger: subprocess.Popen[bytes]) -> None:
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "mlflow.pid").write_text(f"{stranger.pid} {start_time(stranger.pid)}\n")
    reaper = threading.Thread(target=stranger.wait)  # as init reaps make up's services
    reaper.start()
    result = down(tmp_path)
    reaper.join(timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"stopped mlflow (pid {stranger.pid})"]
    assert stranger.returncode == -signal.SIGTERM


def test_up_is_not_already_up_on_a_stale_pid_file(tmp_path: Path, stranger: subprocess.Popen[bytes]) -> None:
    """make up went on to start the stack instead of answering "already up" from an old pid file.
    Here it is run from a copy whose .venv/bin/python fails, so it stops right after that check."""
    for script in ("up.sh", "pidfile.sh"):
        (tmp_path / "scripts").mkdir(exist_ok=True)
        shutil.copy(ROOT / "scripts" / script, tmp_path / "scripts" / script)
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    home = tmp_path / "home"
    (home / "up").mkdir(parents=True)
    (home / "up" / "urls.txt").write_text("Airflow UI: http://127.0.0.1:1\n")
    (home / "up" / "airflow-api-server.pid").write_text(f"{stranger.pid}\n")
    env = {"PATH": os.environ["PATH"], "CO2CAST_HOME": str(home), "AIRFLOW_HOME": str(tmp_path / "airflow")}
    result = subprocess.run(["bash", str(tmp_path / "scripts" / "up.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert "already up" not in result.stdout
    assert "airflow-api-server.pid is stale" in result.stderr
    assert result.returncode != 0  # the fake python
    assert running(stranger.pid) and not (home / "up" / "airflow-api-server.pid").exists()


def test_up_records_the_start_time(tmp_path: Path) -> None:
    script = (ROOT / "scripts" / "up.sh").read_text()
    assert 'write_pid "$STATE/$name.pid" $!' in script
    process = subprocess.Popen(["sleep", "30"])
    try:
        pidfile = tmp_path / "x.pid"
        command = f'. "{ROOT}/scripts/pidfile.sh"; write_pid "{pidfile}" {process.pid}; live_pid "{pidfile}"'
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
        assert pidfile.read_text() == f"{process.pid} {start_time(process.pid)}\n"
        assert result.stdout == f"{process.pid}\n" and result.returncode == 0
    finally:
        process.kill()
        process.wait()


def service_like(tmp_path: Path, program: str, *args: str) -> subprocess.Popen[bytes]:
    """A process whose command line is make up's for a service (`.../.venv/bin/airflow scheduler ...`),
    in its own session like each of make up's services."""
    script = tmp_path / ".venv" / "bin" / program
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(300)\n")
    script.chmod(0o755)
    process = subprocess.Popen(["setsid", str(script), *args])
    deadline = time.monotonic() + 10
    while str(script) not in Path(f"/proc/{process.pid}/cmdline").read_bytes().decode() and time.monotonic() < deadline:
        time.sleep(0.05)
    return process


@pytest.mark.parametrize(
    ("name", "program", "args"),
    [
        ("airflow-scheduler", "airflow", ("scheduler", "--skip-serve-logs")),
        ("mlflow", "mlflow", ("server", "--host", "127.0.0.1")),
        ("airflow-api-server", "airflow", ("api_server", "--", "host:127.0.0.1")),  # the api-server's own title
    ],
)
def test_down_stops_a_service_from_an_older_pid_file(tmp_path: Path, name: str, program: str, args: tuple[str, ...]) -> None:
    """A pid file of the make up before start times were recorded holds the pid alone: make down
    removed it as stale and killed nothing, so the stack ran on and the next make up started a second.
    Its process is stopped when its command line is the service's."""
    service = service_like(tmp_path, program, *args)
    reaper = threading.Thread(target=service.wait)
    reaper.start()
    try:
        home = tmp_path / "home"
        (home / "up").mkdir(parents=True)
        (home / "up" / f"{name}.pid").write_text(f"{service.pid}\n")
        result = down(home)
        reaper.join(timeout=20)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [f"stopped {name} (pid {service.pid})"]
        assert service.returncode == -signal.SIGTERM
        assert not (home / "up" / f"{name}.pid").exists()
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGKILL)
        reaper.join(timeout=10)


def test_down_keeps_an_older_pid_file_it_cannot_tell(tmp_path: Path) -> None:
    """The pid runs airflow, but not the service's command: neither killed nor forgotten; make down
    says how to stop it by hand and fails."""
    other = service_like(tmp_path, "airflow", "celery", "worker")
    try:
        home = tmp_path / "home"
        (home / "up").mkdir(parents=True)
        pidfile = home / "up" / "airflow-scheduler.pid"
        pidfile.write_text(f"{other.pid}\n")
        result = down(home)
        assert result.returncode == 1
        assert running(other.pid) and pidfile.read_text() == f"{other.pid}\n"
        assert result.stdout == ""
        assert f"kill -TERM -- -{other.pid}" in result.stderr and len(result.stderr.splitlines()) == 1
    finally:
        os.killpg(other.pid, signal.SIGKILL)
        other.wait()


def fake_up(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of up.sh whose .venv/bin/python fails, so it stops right after its already-up check."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    for script in ("up.sh", "pidfile.sh"):
        shutil.copy(ROOT / "scripts" / script, tmp_path / "scripts" / script)
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    home = tmp_path / "home"
    (home / "up").mkdir(parents=True)
    (home / "up" / "urls.txt").write_text("Airflow UI: http://127.0.0.1:1\n")
    return tmp_path / "scripts" / "up.sh", home


@pytest.mark.parametrize(
    ("args", "answer"), [(("api-server", "--port", "1"), "already up"), (("db", "shell"), "not starting a second stack")]
)
def test_up_does_not_start_a_second_stack_over_an_older_pid_file(tmp_path: Path, args: tuple[str, ...], answer: str) -> None:
    service = service_like(tmp_path / "old", "airflow", *args)
    try:
        up, home = fake_up(tmp_path)
        (home / "up" / "airflow-api-server.pid").write_text(f"{service.pid}\n")
        env = {"PATH": os.environ["PATH"], "CO2CAST_HOME": str(home), "AIRFLOW_HOME": str(tmp_path / "airflow")}
        result = subprocess.run(["bash", str(up)], env=env, capture_output=True, text=True, timeout=60)
        assert answer in result.stdout + result.stderr
        assert running(service.pid) and (home / "up" / "airflow-api-server.pid").exists()
    finally:
        os.killpg(service.pid, signal.SIGKILL)
        service.wait()
