"""The champion gate against a real MLflow tracking server over HTTP, with the S3 store on moto.

The server (``mlflow server``: SQLite backend, artefacts served by the server) runs for the
module; the pipeline reaches it through a loopback proxy that answers 503 to the requests a
test chooses, as a server restarting, a load balancer or a busy backend would. MLflow's own
retries are turned off (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``) so a refused request fails at
once instead of after minutes of backoff; what is asserted is what the registry and the store
hold afterwards.
"""

from __future__ import annotations

import http.client
import http.server
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline import tasks, tracking
from pipeline.config import Settings
from tests.conftest import _free_port
from tests.test_champion import SID, _lineup, _run, _state

BIN = Path(sys.executable).parent


class _FaultyProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to the MLflow server, except those ``fail`` picks: 503 for them."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.fail: Callable[[str, str], bool] = lambda method, path: False
        self.refused: list[str] = []
        super().__init__(("127.0.0.1", 0), _Forward)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _FaultyProxy

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.fail(self.command, self.path):
            self.server.refused.append(f"{self.command} {self.path}")
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        upstream.request(self.command, self.path, body=body, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``mlflow server`` on loopback for the module (SQLite backend, artefacts served over HTTP)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts")]
    log = (root / "server.log").open("wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(600):  # until it answers (or has died); how long it takes is not the test
            assert server.poll() is None, (root / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                time.sleep(0.5)
        yield port
    finally:
        os.killpg(server.pid, 15)
        server.wait()
        log.close()


@pytest.fixture
def proxy(mlflow_server: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[_FaultyProxy]:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = _FaultyProxy(mlflow_server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def settings(proxy: _FaultyProxy, s3_bucket: str, s3_env: dict[str, str], tmp_path: Path, small_owid: Path) -> Settings:
    """A fresh S3 store with ``small_owid`` curated, and the MLflow server through the proxy."""
    from pipeline import ingest

    settings = Settings(
        home=tmp_path / "home",
        store_uri=f"s3://{s3_bucket}/co2cast",
        s3_endpoint_url=s3_env["CO2CAST_S3_ENDPOINT_URL"],
        mlflow_tracking_uri=proxy.uri,
    )
    ingest.ingest(settings, tasks.open_store(settings), str(small_owid))
    return settings


def _fresh_model(settings: Settings) -> None:
    """Each test starts with no registered model of the series (the server is the module's)."""
    client = tracking.configure(settings)
    if client.search_registered_models(filter_string=f"name = '{tracking.registered_name(SID)}'"):
        client.delete_registered_model(tracking.registered_name(SID))


def test_a_registry_that_cannot_answer_for_the_champion_is_not_one_without_it(settings: Settings, proxy: _FaultyProxy) -> None:
    """An alias read the server refuses (503) fails the run; it used to read as 'no @champion' and the challenger took it ungated."""
    _fresh_model(settings)
    first, _ = _run(settings, _lineup(settings, "drift"))
    assert first.champion_family == "drift", "precondition: drift beats naive on World"
    before = _state(settings)

    # naive + mean publishes naive, worse than drift on the same windows: the gate keeps drift.
    proxy.fail = lambda method, path: method == "GET" and "/registered-models/alias" in path
    with pytest.raises(tracking.TrackingUnavailable, match="MLflow tracking store unavailable"):
        _run(settings, _lineup(settings, "mean"))
    assert proxy.refused
    proxy.fail = lambda method, path: False
    assert str(_state(settings)["aliases"]["champion"]) == str(before["aliases"]["champion"]) == first.champion_version
    # The refused run recorded nothing: no move, and no entry saying there was no champion to gate against.
    assert [(entry["moved"], entry.get("from_version")) for entry in tasks.alias_history(settings, SID)] == [(True, None)]

    # The retry (the server answering again) gates the challenger against the champion: drift stays.
    _, published = _run(settings, _lineup(settings, "mean"))
    after = _state(settings)
    assert str(after["aliases"]["champion"]) == first.champion_version == published.model_version
    stayed = tasks.alias_history(settings, SID)[-1]
    assert stayed["moved"] is False and stayed["from_version"] == first.champion_version
    assert str(after["latest"]["model_version"]) == str(after["aliases"]["champion"])


def test_a_champion_whose_model_the_server_cannot_hand_over_now_keeps_its_title(settings: Settings, proxy: _FaultyProxy) -> None:
    """A 503 while downloading @champion's model fails the run; it used to count as an unreadable champion, and the challenger took it."""
    _fresh_model(settings)
    first, _ = _run(settings, _lineup(settings, "drift"), as_of_year=2013)  # another run key than the other test's
    assert first.champion_family == "drift", "precondition: drift beats naive on World"
    client = tracking.configure(settings)
    source = client.get_model_version(tracking.registered_name(SID), first.champion_version).source
    model_id = source.removeprefix("models:/")  # its logged model, m-…: the path of its files on the server
    assert model_id.startswith("m-"), source

    # Only the champion's files are refused: the run logs and checks its own models as usual.
    proxy.fail = lambda method, path: method == "GET" and "/mlflow-artifacts/" in path and model_id in path
    with pytest.raises(tracking.TrackingUnavailable, match="MLflow tracking store unavailable"):
        _run(settings, _lineup(settings, "mean"), as_of_year=2013)
    assert proxy.refused
    proxy.fail = lambda method, path: False
    assert str(_state(settings)["aliases"]["champion"]) == first.champion_version
    assert [entry["moved"] for entry in tasks.alias_history(settings, SID)] == [True]

    # The retry scores the champion's recipe on the same windows: drift stays.
    _, published = _run(settings, _lineup(settings, "mean"), as_of_year=2013)
    after = _state(settings)
    assert str(after["aliases"]["champion"]) == first.champion_version == published.model_version
    stayed = tasks.alias_history(settings, SID)[-1]
    assert stayed["moved"] is False and stayed["champion_score"] == pytest.approx(first.scores["drift"]["mase"])


def test_a_server_gone_mid_run_is_given_up_on_after_a_few_retries(settings: Settings, proxy: _FaultyProxy, monkeypatch) -> None:
    """MLflow retries each request 7 times over about four minutes; a run that lost its server held its task 8.5 minutes.

    The proxy refuses the first six attempts of an alias read: with co2cast's budget (4 retries)
    the fifth refusal ends it, a transient error; MLflow's own would have got through on the seventh.
    """
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")  # as in production: co2cast's budget
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    client = tracking.configure(settings)
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == str(tracking.HTTP_TIMEOUT)  # not MLflow's 120 s per attempt

    def first_six(method: str, path: str) -> bool:
        return "/registered-models/alias" in path and len(proxy.refused) < 6

    proxy.fail = first_six
    with pytest.raises(tracking.TrackingUnavailable, match="MLflow tracking store unavailable"), tracking.transient_errors():
        tracking.alias_version(client, SID, "champion")
    assert len(proxy.refused) == 1 + tracking.HTTP_RETRIES == 5

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # an operator's own settings win
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    tracking.configure(settings)
    assert (os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"], os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]) == ("0", "300")
