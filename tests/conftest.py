"""Shared fixtures: the repository's own real data, stores, an S3 endpoint, an Airflow home."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: Variables MLflow or co2cast set in the process itself (``mlflow.set_tracking_uri`` exports
#: MLFLOW_TRACKING_URI; ``tracking.configure`` defaults the HTTP retries and timeout for a server).
_PROCESS_SET = ("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")


@pytest.fixture(autouse=True)
def _process_env_restored() -> Iterator[None]:
    """A test's tracking store leaves with it: a later test's default settings must not find a server the test stopped."""
    saved = {name: os.environ.get(name) for name in _PROCESS_SET}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


#: Set by .ci/run, where every optional test dependency (chromium, chromium-driver, docker-compose,
#: PostgreSQL, Redis, torch) is installed: there a skip can only mean one went missing, so it fails.
NO_SKIPS_VARIABLE = "CO2CAST_TEST_NO_SKIPS"


def _skip_is_an_error() -> bool:
    return os.environ.get(NO_SKIPS_VARIABLE, "").strip().lower() in {"1", "true", "yes"}


def _as_failure(report: Any) -> None:
    """A skipped report, turned into a failure that keeps the skip's reason (one line)."""
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped with {NO_SKIPS_VARIABLE} set (CI installs every test dependency): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and _skip_is_an_error():
        _as_failure(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _skip_is_an_error():  # a module skipped as a whole (importorskip at its top)
        _as_failure(report)


ROOT = Path(__file__).resolve().parents[1]
OWID_GZ = ROOT / "pipeline" / "data" / "owid-co2-data-to-2014.csv.gz"
GAPMINDER_GZ = ROOT / "tests" / "data" / "gapminder_co2_emissions_tonnes_per_person_1800-2014.csv.gz"
#: OWID's releases of 2020-11-27 and 2020-12-09 cut to five entities: a real rename (tests/data/README.md).
OWID_RENAMED_GZ = (
    ROOT / "tests" / "data" / "owid-co2-data-2020-11-27-cut.csv.gz",
    ROOT / "tests" / "data" / "owid-co2-data-2020-12-09-cut.csv.gz",
)
BIN = Path(sys.executable).parent

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def _gunzip(source: Path, into: Path) -> Path:
    """The repository's compressed copy of a data file, as the plain CSV a user would have."""
    if not source.exists():
        pytest.fail(f"test data {source} is missing from the checkout")
    target = into / source.name.removesuffix(".gz")
    target.write_bytes(gzip.decompress(source.read_bytes()))
    return target


@pytest.fixture(scope="session")
def owid_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded OWID release (up to 2014), uncompressed."""
    return _gunzip(OWID_GZ, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def gapminder_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gapminder's CO2 per person (wide layout, 1800-2014), uncompressed."""
    return _gunzip(GAPMINDER_GZ, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def owid_renamed_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """OWID's releases of 2020-11-27 and of 2020-12-09 (which renamed Czech Republic, Macedonia, Swaziland), cut, uncompressed."""
    into = tmp_path_factory.mktemp("data")
    return _gunzip(OWID_RENAMED_GZ[0], into), _gunzip(OWID_RENAMED_GZ[1], into)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's standalone S3 server over HTTP on loopback, for the session."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Credentials and region for the moto endpoint, set in this process's environment."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "CO2CAST_S3_ENDPOINT_URL": s3_endpoint,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def s3_bucket(s3_env: dict[str, str], request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket on the moto endpoint."""
    import boto3

    # The name's start for a person reading the moto log; the digest of the whole test id keeps two
    # parametrizations of a long test name (the same first 30 characters) from sharing one bucket.
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    name = "co2cast-" + "".join(ch for ch in request.node.name.lower() if ch.isalnum())[:30] + "-" + digest
    client = boto3.client("s3", endpoint_url=s3_env["CO2CAST_S3_ENDPOINT_URL"])
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow home with a migrated SQLite database, shared by the end-to-end tests."""
    home = tmp_path_factory.mktemp("airflow")
    env = airflow_env(home, {})
    result = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return home


def airflow_env(airflow_home: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment for an ``airflow`` subprocess using ``airflow_home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CO2CAST_", "AIRFLOW", "MLFLOW_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "GX_ANALYTICS_ENABLED": "false",
            "PATH": f"{BIN}:{env.get('PATH', '')}",
        }
    )
    env.update(extra)
    return env


def run_dag(airflow_home: Path, dag_id: str, extra_env: dict[str, str], conf: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a DAG for real with ``airflow dags test``; returns the finished process."""
    command = [str(BIN / "airflow"), "dags", "test", dag_id]
    if conf:
        command += ["--conf", conf]
    return subprocess.run(command, env=airflow_env(airflow_home, extra_env), capture_output=True, text=True, timeout=900, cwd=ROOT)


def write_xlsx(path: Path, sheets: dict[str, list[list[object]]], cells: dict[tuple[int, int], object] | None = None) -> Path:
    """A workbook with one sheet per entry, rows appended in order.

    ``cells`` puts further values on the first sheet at ``(row, column)`` (1-based), e.g. a
    stray cell far from the table.
    """
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    for (row, column), value in (cells or {}).items():
        book.worksheets[0].cell(row=row, column=column, value=value)
    book.save(path)
    return path


@pytest.fixture
def small_owid(tmp_path: Path, owid_csv: Path) -> Path:
    """A few entities of the OWID file, same layout: quick to validate."""
    keep = {"Canada", "World", "Germany", "Australia", "Kuwait", "France"}
    lines = owid_csv.read_text().splitlines()
    header = lines[0]
    rows = [line for line in lines[1:] if line.split(",")[1] in keep]
    path = tmp_path / "source" / "owid-small.csv"
    path.parent.mkdir()
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture(params=["local", "s3"])
def dag_backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, str], Any]:
    """Environment for a DAG subprocess and the store it writes to: local directory or S3."""
    from pipeline.store import open_store

    (tmp_path / "mlflow").mkdir()
    env = {"CO2CAST_HOME": str(tmp_path / "home"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow/mlflow.db"}
    if request.param == "local":
        env["CO2CAST_STORE_URI"] = (tmp_path / "store").as_uri()
        return env, open_store(env["CO2CAST_STORE_URI"])
    bucket = request.getfixturevalue("s3_bucket")
    s3_env = request.getfixturevalue("s3_env")
    env.update(s3_env)
    env["CO2CAST_STORE_URI"] = f"s3://{bucket}/co2cast"
    return env, open_store(env["CO2CAST_STORE_URI"], endpoint_url=s3_env["CO2CAST_S3_ENDPOINT_URL"])


@pytest.fixture(params=["local", "s3"])
def curated_settings(request: pytest.FixtureRequest, tmp_path: Path, small_owid: Path) -> Any:
    """Settings on a fresh local or S3 store and MLflow SQLite store, with ``small_owid`` curated."""
    from pipeline import ingest, tasks
    from pipeline.config import Settings

    if request.param == "local":
        store_uri = (tmp_path / "store").as_uri()
    else:
        store_uri = f"s3://{request.getfixturevalue('s3_bucket')}/co2cast"
    settings = Settings(home=tmp_path / "home", store_uri=store_uri, mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    ingest.ingest(settings, tasks.open_store(settings), str(small_owid))
    return settings
