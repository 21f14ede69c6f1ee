"""The services docker-compose.yaml declares, started natively on this machine (no Docker).

PostgreSQL (a throwaway cluster) and Redis from the Debian packages, moto's S3 server standing
in for MinIO, an MLflow tracking server behind MLflow's basic-auth app on PostgreSQL with
artefacts proxied to S3, and Airflow 3 on PostgreSQL with the CeleryExecutor: api-server,
scheduler, dag-processor, triggerer and two Celery workers with distinct hostnames. Every
process is started in its own session and stopped, with its children, by :meth:`Stack.stop`.

The Airflow processes get the same environment variable names as docker-compose's
``x-co2cast-env`` (:data:`COMPOSE_ENV`); ``tests/test_compose.py`` holds the two together.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

#: The pipeline's settings compose passes with the code's defaults (the native stack too): as
#: strings, the way ``x-co2cast-env`` writes them.
PIPELINE_DEFAULTS = {
    "horizon_end": "2050",
    "selection_metric": "mase",
    "include_aggregates": "true",
    "revision_threshold": "0.02",
    "max_lost_years": "3",
    "max_tail_lost_years": "0",
    "max_year_on_year_factor": "100",
    "year_on_year_floor": "1.0",
    "max_history_factor": "20",
    "world_tolerance": "0.01",
    "max_per_capita": "500",
    "allowed_breaks": str(ROOT / "expectations" / "allowed_breaks.json"),
    "max_source_bytes": "536870912",
    "fetch_timeout": "60",
    "lock_stale_seconds": "3600",
    "preload": "true",
}

#: The variables docker-compose's ``x-co2cast-env`` gives every Airflow container; the native
#: stack sets exactly these names (plus what a shared machine needs: AIRFLOW_HOME, ports).
COMPOSE_ENV = (
    "CO2CAST_HOME",
    "CO2CAST_SOURCE",
    "CO2CAST_STORE_URI",
    "CO2CAST_S3_ENDPOINT_URL",
    "CO2CAST_ALLOWED_URLS",
    "CO2CAST_DATA_DIRS",
    "CO2CAST_SERIES",
    "CO2CAST_MAX_ACTIVE_SERIES",
    "CO2CAST_TASK_TIMEOUT_MINUTES",
    *(f"CO2CAST_{name.upper()}" for name in PIPELINE_DEFAULTS),
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "GX_ANALYTICS_ENABLED",
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION",
    "AIRFLOW__CORE__AUTH_MANAGER",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__CORE__FERNET_KEY",
)

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
WORKERS = ("worker-a", "worker-b")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin(name: str) -> str | None:
    """A PostgreSQL server program from the Debian package (not on PATH there), or ``None``."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def missing_programs() -> list[str]:
    """The programs the stack needs that this machine lacks."""
    missing = [name for name in ("initdb", "postgres") if postgres_bin(name) is None]
    missing += [name for name in ("redis-server", "psql") if shutil.which(name) is None]
    try:
        import celery  # noqa: F401
        import psycopg2  # noqa: F401
    except ImportError:
        missing.append("the stack's Python packages (pip install -r requirements-stack.txt)")
    return missing


class StackError(RuntimeError):
    """A service did not start; the message names it and its log."""


@dataclass
class Stack:
    """The running services: URLs, credentials, and what to stop."""

    base: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pg_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    postgres_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    s3_key: str = "co2cast-pipeline"
    s3_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    redis_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    mlflow_admin: str = "admin"
    mlflow_admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    mlflow_user: str = "co2cast"
    mlflow_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    airflow_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    ports: dict[str, int] = field(default_factory=dict)
    series: str = "default"

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['airflow']}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    # -- processes -------------------------------------------------------------------------

    def spawn(self, name: str, command: list[str], env: dict[str, str] | None = None, user: str | None = None) -> None:
        """Start a long-running service in its own session, output to ``logs/<name>.log``."""
        if user is not None:
            command = ["runuser", "-u", user, "--", *command]
        log = (self.logs / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env or os.environ.copy(), start_new_session=True
        )
        log.close()

    def run(self, name: str, command: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> str:
        """Run a one-off command to completion; raise :class:`StackError` when it fails."""
        log = self.logs / f"{name}.log"
        result = subprocess.run(command, env=env or os.environ.copy(), capture_output=True, text=True, timeout=timeout)
        log.write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise StackError(f"{name} failed ({log}):\n{(result.stdout + result.stderr)[-2000:]}")
        return result.stdout

    def wait_http(self, name: str, url: str, timeout: float = 240) -> None:
        """Wait until ``url`` answers with a status below 500, or the service died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive(name)
            try:
                with urllib.request.urlopen(url, timeout=5):
                    return
            except urllib.error.HTTPError as error:
                if error.code < 500:
                    return
            except OSError:
                pass
            time.sleep(1)
        raise StackError(f"{name} did not answer at {url} within {timeout:.0f} s ({self.logs / name}.log)")

    def wait_port(self, name: str, port: int, timeout: float = 60) -> None:
        """Wait until something listens on ``127.0.0.1:port``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive(name)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
                return
            time.sleep(0.5)
        raise StackError(f"{name} is not listening on {port} ({self.logs / name}.log)")

    def check_alive(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is not None:
            tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
            raise StackError(f"{name} exited with {process.returncode} ({self.logs / name}.log):\n{tail}")

    def stop(self) -> None:
        """Stop every process this stack started (whole process groups), then remove the cluster."""
        for name, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                # postgres: SIGINT is its "fast" shutdown; everyone else stops on SIGTERM.
                sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self.processes.values():
            # Whatever is left of each group (children outliving their leader, a stuck leader).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        if self.pg_dir is not None:
            shutil.rmtree(self.pg_dir, ignore_errors=True)

    # -- services --------------------------------------------------------------------------

    def start_postgres(self) -> None:
        """A throwaway cluster in a temp dir on a free port, as a non-root user when run as root."""
        self.pg_dir = Path(tempfile.mkdtemp(prefix="co2cast-pg-"))
        data, sockets = self.pg_dir / "data", self.pg_dir / "sockets"
        sockets.mkdir()
        password_file = self.pg_dir / "pwfile"
        password_file.write_text(self.postgres_password + "\n")
        user = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = "postgres"
            account = pwd.getpwnam(user)
            self.pg_dir.chmod(0o711)
            data.mkdir(mode=0o700)
            for path in (data, sockets, password_file):
                os.chown(path, account.pw_uid, account.pw_gid)
            password_file.chmod(0o600)
        initdb = [postgres_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={password_file}"]
        self.run("initdb", ["runuser", "-u", user, "--", *initdb] if user else initdb)
        port = self.ports["postgres"] = free_port()
        self.spawn(
            "postgres",
            [postgres_bin("postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets), "-c", "listen_addresses=127.0.0.1"],
            user=user,
        )
        self.wait_port("postgres", port)
        psql_env = {**os.environ, "PGPASSWORD": self.postgres_password}
        deadline = time.monotonic() + 60
        while True:  # the port opens before the server accepts logins
            try:
                self.run("postgres-init", self.psql(ROOT / "deploy" / "postgres-init.sql"), env=psql_env)
                break
            except StackError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def psql(self, script: Path) -> list[str]:
        port = str(self.ports["postgres"])
        return ["psql", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(script)]

    def postgres_uri(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://postgres:{self.postgres_password}@127.0.0.1:{self.ports['postgres']}/{database}"

    def start_redis(self) -> None:
        port = self.ports["redis"] = free_port()
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.spawn("redis", [*command, "--requirepass", self.redis_password])
        self.wait_port("redis", port)

    def start_s3(self) -> None:
        """moto's standalone S3 server over HTTP; the buckets minio-init creates in compose."""
        port = self.ports["s3"] = free_port()
        self.spawn("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)])
        self.wait_http("s3", f"{self.s3_url}/moto-api/")
        client = self.s3_client()
        for bucket in ("co2cast", "mlflow"):
            client.create_bucket(Bucket=bucket)

    def s3_client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.s3_url, aws_access_key_id=self.s3_key, aws_secret_access_key=self.s3_secret, region_name="us-east-1"
        )

    def start_mlflow(self) -> None:
        """The tracking server as compose runs it: basic-auth app, PostgreSQL, artefacts on S3."""
        port = self.ports["mlflow"] = free_port()
        auth_ini = self.base / "mlflow-auth.ini"
        auth_ini.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = {self.postgres_uri('mlflow_auth')}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 60\n"
        )
        auth_ini.chmod(0o600)
        env = {
            **os.environ,
            "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
            "MLFLOW_AUTH_ADMIN_USERNAME": self.mlflow_admin,
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.mlflow_admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(24),
            "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
            "AWS_ACCESS_KEY_ID": self.s3_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        self.spawn(
            "mlflow",
            [
                str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                "--backend-store-uri", self.postgres_uri("mlflow"),
                "--artifacts-destination", "s3://mlflow/artifacts", "--serve-artifacts",
            ],
            env=env,
        )  # fmt: skip
        self.wait_http("mlflow", f"{self.mlflow_url}/health")
        # compose's mlflow-init: the pipeline's own (non-admin) user, created by the admin.
        init_env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_TRACKING_USERNAME": self.mlflow_admin,
            "MLFLOW_TRACKING_PASSWORD": self.mlflow_admin_password,
            "MLFLOW_PIPELINE_USER": self.mlflow_user,
            "MLFLOW_PIPELINE_PASSWORD": self.mlflow_password,
        }
        self.run("mlflow-init", [sys.executable, str(ROOT / "deploy" / "mlflow_init.py")], env=init_env)

    def airflow_env(self) -> dict[str, str]:
        """The Airflow processes' environment: compose's names, native values."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CO2CAST_", "MLFLOW_", "AWS_"))}
        compose = {
            "CO2CAST_HOME": str(self.base / "co2cast"),
            "CO2CAST_SOURCE": str(ROOT / "pipeline" / "data" / "owid-co2-data-to-2014.csv.gz"),
            "CO2CAST_STORE_URI": "s3://co2cast/store",
            "CO2CAST_S3_ENDPOINT_URL": self.s3_url,
            "CO2CAST_ALLOWED_URLS": "https://raw.githubusercontent.com/owid/co2-data/",
            "CO2CAST_DATA_DIRS": str(self.base / "data"),  # the source is the embedded release, always allowed
            "CO2CAST_SERIES": self.series,
            "CO2CAST_MAX_ACTIVE_SERIES": "2",
            "CO2CAST_TASK_TIMEOUT_MINUTES": "30",
            **{f"CO2CAST_{name.upper()}": value for name, value in PIPELINE_DEFAULTS.items()},
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_TRACKING_USERNAME": self.mlflow_user,
            "MLFLOW_TRACKING_PASSWORD": self.mlflow_password,
            "AWS_ACCESS_KEY_ID": self.s3_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "GX_ANALYTICS_ENABLED": "false",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            # Compose creates the DAGs unpaused; the test unpauses them itself, co2_forecast only
            # after the ingest, so that no run of it starts before there is a curated vintage.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres_uri("airflow"),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://:{self.redis_password}@127.0.0.1:{self.ports['redis']}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres_uri("airflow"),
            "AIRFLOW__API__SECRET_KEY": self.env.setdefault("secret_key", secrets.token_urlsafe(24)),
            "AIRFLOW__API_AUTH__JWT_SECRET": self.env.setdefault("jwt_secret", secrets.token_urlsafe(48)),
            "AIRFLOW__CORE__FERNET_KEY": self.env.setdefault("fernet_key", base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()),
        }
        assert set(compose) == set(COMPOSE_ENV)
        env.update(compose)
        env.update(
            {
                "AIRFLOW_HOME": str(self.base / "airflow"),
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.base / "airflow-passwords.json"),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.ports["airflow"]),
                "AIRFLOW__CORE__PARALLELISM": "4",
                "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "PATH": f"{BIN}:{env.get('PATH', '')}",
            }
        )
        return env

    def start_airflow(self) -> None:
        """Migrate, then api-server, scheduler, dag-processor, triggerer and two Celery workers."""
        self.ports["airflow"] = free_port()
        passwords = self.base / "airflow-passwords.json"
        passwords.write_text(json.dumps({"admin": self.airflow_password}))
        passwords.chmod(0o600)
        env = self.airflow_env()
        airflow = str(BIN / "airflow")
        self.run("airflow-db-migrate", [airflow, "db", "migrate"], env=env, timeout=600)
        port = str(self.ports["airflow"])
        self.spawn("airflow-api-server", [airflow, "api-server", "--host", "127.0.0.1", "--port", port, "--workers", "1"], env=env)
        # No log servers (they bind every interface); the api-server reads task logs from disk.
        self.spawn("airflow-scheduler", [airflow, "scheduler", "--skip-serve-logs"], env=env)
        self.spawn("airflow-dag-processor", [airflow, "dag-processor"], env=env)
        self.spawn("airflow-triggerer", [airflow, "triggerer", "--skip-serve-logs"], env=env)
        for name in WORKERS:
            # A distinct hostname per worker, recorded on each task instance it runs.
            worker_env = {
                **env,
                "CO2CAST_WORKER_NAME": name,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_hostname.hostname",
                "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(ROOT / "deploy" / "airflow")]),
            }
            command = [airflow, "celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "1", "--skip-serve-logs"]
            self.spawn(f"airflow-{name}", command, env=worker_env)
        self.wait_http("airflow-api-server", f"{self.airflow_url}/api/v2/monitor/health")

    def start(self) -> None:
        """Start every service; on any failure stop what was started and raise."""
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self.start_postgres()
            self.start_redis()
            self.start_s3()
            self.start_mlflow()
            self.start_airflow()
        except BaseException:
            self.stop()
            raise
