"""Settings a careless operator may type: each is refused in one line naming the variable, or read as meant."""

from __future__ import annotations

import http.server
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from pipeline.config import ConfigError, get_settings, max_active_series, task_timeout


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("CO2CAST_", "MLFLOW_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        # botocore: 'ValueError: Invalid endpoint (unexpected)', and 'htp://' an EndpointResolutionError to retry later
        ("CO2CAST_S3_ENDPOINT_URL", "127.0.0.1:5734", "not an http(s) URL with a host, e.g. http://localhost:9000"),
        ("CO2CAST_S3_ENDPOINT_URL", "htp://127.0.0.1:5734", "not an http(s) URL with a host"),
        ("CO2CAST_S3_ENDPOINT_URL", "http://", "not an http(s) URL with a host"),
        ("CO2CAST_S3_ENDPOINT_URL", "http://minio:ninety", "not an http(s) URL with a host"),
        # urllib's socket timeout: OverflowError on 1e10, ValueError on inf
        ("CO2CAST_FETCH_TIMEOUT", "inf", "input should be less than or equal to 86400"),
        ("CO2CAST_FETCH_TIMEOUT", "1e10", "input should be less than or equal to 86400"),
        ("CO2CAST_TASK_TIMEOUT_MINUTES", "0.0000001", "input should be greater than or equal to 1"),
        ("CO2CAST_TASK_TIMEOUT_MINUTES", "1e308", "input should be less than or equal to 10080"),
    ],
)
def test_an_unusable_value_is_one_invalid_setting_line(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, words: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        get_settings()
    message = str(raised.value)
    assert message.startswith(f"invalid setting: {variable}={value!r}: {words}"), message
    assert "\n" not in message and "value error" not in message.lower()


def test_usable_values_are_read_as_meant(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CO2CAST_S3_ENDPOINT_URL", " https://minio.example:9000 ")
    monkeypatch.setenv("CO2CAST_FETCH_TIMEOUT", "86400")
    monkeypatch.setenv("CO2CAST_SOURCE", " https://raw.githubusercontent.com/owid/co2-data/master/owid-co2-data.csv \n")
    settings = get_settings()
    assert settings.s3_endpoint_url == "https://minio.example:9000" and settings.fetch_timeout == 86400
    assert settings.source == "https://raw.githubusercontent.com/owid/co2-data/master/owid-co2-data.csv"
    monkeypatch.setenv("CO2CAST_S3_ENDPOINT_URL", "")
    assert get_settings().s3_endpoint_url is None  # empty: unset, AWS


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_path_setting_is_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, empty: str) -> None:
    """``CO2CAST_HOME=`` was ``Path('')``, the working directory: the store went to ./store, MLflow to ./mlflow."""
    monkeypatch.setenv("CO2CAST_HOME", empty)
    monkeypatch.setenv("CO2CAST_ALLOWED_BREAKS", empty)
    settings = get_settings()
    assert settings.home == tmp_path / ".co2cast" and settings.allowed_breaks is None
    assert settings.resolved_store_uri == (tmp_path / ".co2cast" / "store").resolve().as_uri()


def test_the_source_is_stripped_so_its_file_name_keeps_its_suffix(tmp_path: Path) -> None:
    """A trailing space in a source URL: urllib dropped it and downloaded, but the file name kept it ('.csv ')."""
    from pipeline import sources
    from pipeline.cli import build_parser

    (tmp_path / "owid.csv").write_text("country,year,co2\nA,2000,1\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        policy = sources.SourcePolicy(url_prefixes=(base,), directories=(tmp_path,), max_bytes=10_000, timeout=10)
        for source in (f"{base}owid.csv ", f" {tmp_path / 'owid.csv'}\t"):
            fetched = sources.fetch(source, policy=policy)
            assert fetched.file_name == "owid.csv", fetched.file_name
            assert not fetched.source.endswith((" ", "\t")) and fetched.data.startswith(b"country,year")
    finally:
        server.shutdown()
    assert build_parser().parse_args(["ingest", "--source", f" {base}owid.csv "]).source == f"{base}owid.csv"


@pytest.mark.parametrize("raw", ["1e308", "0.0000001", "0.5", "10081", "inf"])
def test_task_timeout_refuses_overflow_and_no_timeout_naming_the_variable(raw: str) -> None:
    """1e308 overflowed timedelta (OverflowError naming nothing); 0.0000001 minutes is timedelta(0): no timeout to Airflow."""
    with pytest.raises(ValueError, match=r"^CO2CAST_TASK_TIMEOUT_MINUTES='.*': set a number of minutes from 1 to 10080"):
        task_timeout({"CO2CAST_TASK_TIMEOUT_MINUTES": raw})
    assert task_timeout({"CO2CAST_TASK_TIMEOUT_MINUTES": "1"}) == timedelta(minutes=1)
    assert task_timeout({"CO2CAST_TASK_TIMEOUT_MINUTES": "10080"}) == timedelta(days=7)


@pytest.mark.parametrize("raw", ["²", "٣", "9" * 5000])
def test_max_active_series_takes_ascii_digits_only_naming_the_variable(raw: str) -> None:
    """'²' passed str.isdigit() and int() then failed without naming the variable; 5000 digits pass int()'s limit."""
    with pytest.raises(ValueError, match=r"^CO2CAST_MAX_ACTIVE_SERIES="):
        max_active_series({"CO2CAST_MAX_ACTIVE_SERIES": raw})
    assert max_active_series({"CO2CAST_MAX_ACTIVE_SERIES": " 4 "}) == 4
