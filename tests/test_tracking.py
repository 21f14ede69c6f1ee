"""MLflow registry: verified artefacts, per-family aliases, alias history as tags, rollback."""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline import tracking
from pipeline.artifacts import DIGEST_TAG, load_registered
from pipeline.config import ConfigError, Settings
from pipeline.models.baselines import DriftForecaster, NaiveForecaster

SID = "testland.co2"


@pytest.fixture
def client(tmp_path: Path):
    settings = Settings(home=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    return tracking.configure(settings)


def _register(client, model, key: str, family: str):
    with mlflow.start_run():
        info = tracking.log_forecaster(model, horizon_end=2030)
    return tracking.register(client, info.model_uri, SID, key, family, {})


def test_register_is_idempotent_per_run_key(client) -> None:
    years = np.arange(1950, 2011)
    model = DriftForecaster().fit(np.linspace(1, 5, years.size), years)
    first = _register(client, model, "key-a", "drift")
    again = tracking.register(client, "runs:/unused/model", SID, "key-a", "drift", {})
    assert str(again.version) == str(first.version)
    other = _register(client, model, "key-b", "drift")
    assert int(other.version) == int(first.version) + 1


def test_every_registered_version_describes_itself_in_the_mlflow_ui(client) -> None:
    """A version's page in the MLflow UI had no description: family, as-of year, its score and naive's, vintage, run key."""
    from pipeline import core
    from pipeline.candidates import ZooSelection
    from pipeline.series import PreparedSeries

    years = np.arange(1960, 2015)
    values = 10 + 0.3 * np.arange(years.size) + np.sin(np.arange(years.size))
    policy = ZooSelection(metric="rmse", always_register=("drift", "naive"))
    spec = core.ForecastSpec(horizon_end=2030)
    result = core.run_series(
        PreparedSeries(SID, "Testland", "co2", years, values), {"naive": NaiveForecaster(), "drift": DriftForecaster()}, policy, spec
    )
    tags = {tracking.AS_OF_TAG: "2014", "co2cast.vintage": "v123"}
    with mlflow.start_run():
        infos = tracking.log_series_result(result, spec, tags, metric="rmse")
        versions = tracking.register_selection(client, result, infos, "key-a", tags, metric="rmse")
    scores = result.scores()
    naive = scores["naive"]["rmse"]
    for family in ("drift", "naive"):
        found = client.get_model_version(tracking.registered_name(SID), versions[family])
        assert found.description == (
            f"{family} as of 2014: backtest RMSE {scores[family]['rmse']:.3f}, naive {naive:.3f} on the same windows "
            "(lower is better); vintage v123, run key key-a"
        )
    # A version of the run key found without one (a run killed between registering and describing) gets it.
    client.update_model_version(tracking.registered_name(SID), versions["drift"], description="")
    again = tracking.register(client, "runs:/unused/model", SID, "key-a", "drift", {}, description="drift again")
    assert str(again.version) == versions["drift"]
    assert client.get_model_version(tracking.registered_name(SID), versions["drift"]).description == "drift again"


def test_alias_moves_are_recorded_and_roll_back(client, tmp_path: Path) -> None:
    years = np.arange(1950, 2011)
    v1 = _register(client, NaiveForecaster().fit(np.linspace(1, 5, years.size), years), "k1", "naive")
    v2 = _register(client, DriftForecaster().fit(np.linspace(1, 5, years.size), years), "k2", "drift")
    assert tracking.move_alias(client, SID, "champion", v1.version, reason="first", scores={"mase": 1.5})
    assert not tracking.move_alias(client, SID, "champion", v1.version, reason="again")
    assert tracking.move_alias(client, SID, "champion", v2.version, reason="better", scores={"mase": 1.1})
    moved = tracking.alias_version(client, SID, "champion")
    assert str(moved.version) == str(v2.version)
    # One short tag per move (no score tags flooding the UI): previous version and reason.
    assert json.loads(moved.tags[tracking.alias_tag("champion")]) == {"previous": str(v1.version), "reason": "better"}
    assert not [tag for tag in moved.tags if tag.startswith("alias.")]

    assert tracking.rollback_alias(client, SID) == (str(v2.version), str(v1.version))
    assert str(tracking.alias_version(client, SID, "champion").version) == str(v1.version)

    # The pyfunc serves any year range after the data up to the horizon end; nothing else.
    model = load_registered(tracking.registered_name(SID), "champion")
    out = model.predict(pd.DataFrame({"year": [2012, 2011]}))
    assert out["year"].tolist() == [2011, 2012]
    expected = NaiveForecaster().fit(np.linspace(1, 5, years.size), years).predict(2).mean
    assert out["mean"].to_numpy() == pytest.approx(expected)
    with pytest.raises(Exception, match=r"2011\.\.2030"):
        model.predict(pd.DataFrame({"year": [2031]}))
    with pytest.raises(Exception, match=r"2011\.\.2030"):
        model.predict(pd.DataFrame({"year": [2010]}))


class _KilledAtSecondWrite:
    """A client whose second registry write (alias or tag) dies before it is made, as a kill between two writes."""

    def __init__(self, client) -> None:
        self.client, self.writes = client, 0

    def __getattr__(self, name: str):
        attr = getattr(self.client, name)
        if name not in ("set_registered_model_alias", "set_model_version_tag"):
            return attr

        def write(*args, **kwargs):
            self.writes += 1
            if self.writes == 2:
                raise KeyboardInterrupt
            return attr(*args, **kwargs)

        return write


def test_a_move_killed_between_its_two_writes_is_healed_back_to_the_previous_version(client) -> None:
    """A kill inside ``move_alias`` of a run that then counts as dead: healing puts the alias back where it was.

    The alias moved first and its record (the previous version) second: killed between, the dead
    run's version held the alias with no record, and healing deleted the family alias instead of
    restoring it (its lineage lost).
    """
    years = np.arange(1950, 2011)
    v1 = _register(client, NaiveForecaster().fit(np.linspace(1, 5, years.size), years), "k1", "drift")
    assert tracking.move_alias(client, SID, "drift", v1.version, reason="first")
    v2 = _register(client, DriftForecaster().fit(np.linspace(1, 5, years.size), years), "k2", "drift")
    with pytest.raises(KeyboardInterrupt):
        tracking.move_alias(_KilledAtSecondWrite(client), SID, "drift", v2.version, reason="the dead run's")
    tracking.heal_dead_runs(client, SID, "k2")  # k2's run never completed: its version goes, its aliases go back
    assert not tracking.version_exists(client, SID, str(v2.version))
    back = tracking.alias_version(client, SID, "drift")
    assert back is not None and str(back.version) == str(v1.version)


def test_rollback_without_history_is_refused(client) -> None:
    years = np.arange(1950, 2011)
    v1 = _register(client, NaiveForecaster().fit(np.ones(years.size), years), "k1", "naive")
    tracking.move_alias(client, SID, "champion", v1.version, reason="first")
    with pytest.raises(ValueError, match="no previous version"):
        tracking.rollback_alias(client, SID)
    assert str(tracking.alias_version(client, SID, "champion").version) == str(v1.version)


def test_every_version_carries_its_digest_and_a_tampered_one_is_refused(client) -> None:
    from urllib.parse import unquote, urlparse

    from pipeline.artifacts import IntegrityError

    years = np.arange(1950, 2011)
    version = _register(client, DriftForecaster().fit(np.linspace(1, 5, years.size), years), "k1", "drift")
    assert DIGEST_TAG in client.get_model_version(tracking.registered_name(SID), version.version).tags
    forecaster = tracking.load_registered(tracking.registered_name(SID), str(version.version))
    assert forecaster.predict(1).mean[0] == pytest.approx(5 + 4 / 60)
    source = client.get_model_version(tracking.registered_name(SID), version.version).source  # models:/m-<id>
    stored = Path(unquote(urlparse(mlflow.get_logged_model(source.rsplit("/", 1)[-1]).artifact_location).path))
    model_json = next(stored.rglob("model.json"))
    model_json.write_text(model_json.read_text().replace("1", "2", 1))
    with pytest.raises(IntegrityError, match=r"model\.json does not match"):
        tracking.load_registered(tracking.registered_name(SID), str(version.version))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_nested_runs_go_to_the_fitted_candidates_and_the_best_on_the_selection_metric(client) -> None:
    """Selected on msis_80, the extra nested runs are the best three on msis_80, not on MASE."""
    from pipeline import core
    from pipeline.candidates import ZooSelection
    from pipeline.models.baselines import MeanForecaster
    from pipeline.models.ets import HoltForecaster
    from pipeline.models.theta import ThetaForecaster
    from pipeline.series import PreparedSeries

    years = np.arange(1960, 2015)
    rng = np.random.default_rng(3)
    values = 10 + 0.2 * np.arange(years.size) + np.cumsum(rng.normal(0, 0.5, years.size)) + 3 * np.sin(np.arange(years.size) / 2)
    candidates = {
        "naive": NaiveForecaster(),
        "drift": DriftForecaster(),
        "mean": MeanForecaster(),
        "theta": ThetaForecaster(),
        "holt": HoltForecaster(),
    }
    metric = "msis_80"
    policy = ZooSelection(metric=metric, always_register=(), default=None, short_default=None, fallback=None, overlay=0, calibrate=False)
    spec = core.ForecastSpec(horizon_end=2030)
    result = core.run_series(PreparedSeries("x.co2", "X", "co2", years, values), candidates, policy, spec)
    scores = result.scores()

    def best(on: str) -> set[str]:
        return set(sorted(scores, key=lambda name: scores[name].get(on, float("inf")))[: tracking.TOP_CANDIDATES])

    assert best(metric) != best("mase"), "the series must rank the candidates differently on the two metrics"
    with mlflow.start_run() as parent:
        tracking.log_series_result(result, spec, {}, metric=metric)
    nested = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", output_format="list")
    fitted = {name for name, candidate in result.candidates.items() if candidate.model is not None}
    assert {run.info.run_name for run in nested} == fitted | best(metric)


def test_an_unreachable_server_is_one_transient_error_at_once() -> None:
    """MLflow alone retries a refused connection for minutes; the probe says so at once, without the credentials."""
    port = _closed_port()
    with pytest.raises(tracking.TrackingUnavailable) as raised:
        tracking.probe_server(f"http://someone:s3cret@127.0.0.1:{port}")
    assert str(raised.value).startswith(f"MLflow tracking server http://127.0.0.1:{port} is unreachable (")
    assert "s3cret" not in str(raised.value) and str(raised.value).endswith("start it, or fix MLFLOW_TRACKING_URI")


def test_a_server_that_answers_anything_is_reachable_and_one_that_never_answers_is_not() -> None:
    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(401)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tracking.probe_server(f"http://127.0.0.1:{server.server_address[1]}")  # 401 from /health: a server is there
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(tracking.TrackingUnavailable, match="is unreachable"):
            tracking.probe_server(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)


def test_a_tracking_uri_with_no_usable_address_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI"):
        tracking.probe_server("http://127.0.0.1:port/")
    with pytest.raises(ConfigError, match="names no host"):
        tracking.probe_server("http:///mlflow")
    with pytest.raises(ConfigError, match=r"MLFLOW_TRACKING_URI=http://\*\*\* has no usable address") as raised:
        tracking.probe_server("http://someone:wJalr/s3cret@127.0.0.1:5000")  # a raw '/' in the password: 'wJalr' reads as the port
    assert "wJalr" not in str(raised.value) and "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("htp://localhost:5000", "its scheme 'htp' is not one MLflow reads"),
        ("postgres://someone:s3cret@db/mlflow", "its scheme 'postgres' is not one MLflow reads"),  # SQLAlchemy's name is postgresql
        ("localhost:5000", "its scheme 'localhost' is not one MLflow reads"),  # http:// left out
        ("sqlite:///state/mlflow.db", "names a relative SQLite path"),  # three slashes: relative to each task's directory
    ],
)
def test_a_tracking_uri_mlflow_cannot_use_is_one_configuration_line(
    uri: str, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo in ``MLFLOW_TRACKING_URI`` is a setup error in one line naming the variable, before MLflow is asked.

    MLflow's own failure was an 'unexpected' exception a page long (for a forecast, a FAILED line per series as if
    its data were at fault), and a relative SQLite path made its directory under the working directory first.
    """
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as raised:
        tracking.configure(Settings(home=tmp_path / "home", mlflow_tracking_uri=uri))
    message = str(raised.value)
    assert message.startswith("MLFLOW_TRACKING_URI=") and words in message and "\n" not in message, message
    assert "s3cret" not in message and message.endswith("or unset it for the SQLite store under CO2CAST_HOME"), message
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing made in the working directory"


_SERVER_BUDGET = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")


def test_a_tracking_server_gets_a_request_timeout_and_retries_unless_the_operator_set_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow waits 120 s for each attempt at a server that never answers; co2cast's default is HTTP_TIMEOUT, for a server only."""
    for name in _SERVER_BUDGET:
        monkeypatch.delenv(name, raising=False)
    tracking.configure(Settings(home=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"))
    tracking.server_defaults((tmp_path / "mlruns").as_uri())
    assert not any(name in os.environ for name in _SERVER_BUDGET), "a local store has no server to wait for"

    tracking.server_defaults("https://mlflow.example:5000")
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == str(tracking.HTTP_TIMEOUT) == "30"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == str(tracking.HTTP_RETRIES)

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")  # an operator's own settings win
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracking.server_defaults("http://mlflow:5000")
    assert (os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"], os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) == ("300", "0")


class _Hanging:
    """A loopback TCP server that answers ``GET /health`` and accepts every other request without ever answering it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.requests: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            first = connection.recv(65536).split(b"\r\n", 1)[0].decode("latin-1")
            self.requests.append(first)
            if first.startswith("GET /health "):
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")
                connection.close()
            else:
                self.held.append(connection)  # read, never answered, never closed until the end

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


@pytest.mark.parametrize("user", ["", "someone:s3cret@"], ids=["plain", "credentials-in-the-uri"])
def test_a_tracking_server_that_never_answers_is_a_transient_one_line_error(
    user: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hung server (it accepts, reads, never answers) fails a registry call after the request timeout, as a
    TrackingUnavailable in one line; MLflow's own budget would hold the task over ten minutes per request.

    With a user and password in the URI, the probe reaches the server too (urllib took them for part of the host
    name: 'unreachable'), and MLflow's words, which name the URL, show them as ***."""
    from pipeline import tasks

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")  # an operator's value; co2cast's default is 30 s
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = _Hanging()
    try:
        settings = Settings(
            home=tmp_path, store_uri=(tmp_path / "store").as_uri(), mlflow_tracking_uri=f"http://{user}127.0.0.1:{server.port}"
        )
        with pytest.raises(tracking.TrackingUnavailable) as raised:
            tasks.forecasts_as_of(settings, SID, 2010)
    finally:
        server.close()
    message = str(raised.value)
    assert raised.value.transient and "\n" not in message and len(message) < 400, message
    assert message.startswith("MLflow tracking store unavailable (") and "timed out" in message and message.endswith("; retry later")
    assert server.requests[0].startswith("GET /health ") and len(server.requests) == 2, server.requests  # the probe, one attempt
    assert "s3cret" not in message and f"http://{'***@' if user else ''}127.0.0.1:{server.port}/api/" in message
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "2"


def test_a_transient_failure_shows_no_password_of_the_tracking_uri() -> None:
    """MLflow names the URL it failed on as configured, a user and password written in it included."""
    failure = RuntimeError(
        "API request to http://someone:s3cret@mlflow:5000/api/2.0/mlflow/runs/get failed with exception Connection refused"
    )
    with pytest.raises(tracking.TrackingUnavailable) as raised, tracking.transient_errors():
        raise failure
    assert "s3cret" not in str(raised.value) and "http://***@mlflow:5000/api/2.0/mlflow/runs/get" in str(raised.value)


def test_a_renamed_experiment_is_refused_in_one_line_and_an_unmarked_one_is_marked(tmp_path: Path) -> None:
    """A new 'co2cast' experiment beside the renamed one would split the lineage: complete runs not found, keys trained again."""
    from mlflow import MlflowClient

    settings = Settings(home=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    raw = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    made_before = raw.create_experiment(tracking.EXPERIMENT)  # as by a co2cast that did not mark it
    client = tracking.configure(settings)
    assert client.get_experiment(made_before).tags[tracking.EXPERIMENT_TAG] == "true"

    client.rename_experiment(made_before, "old co2cast runs")  # as the MLflow UI would
    with pytest.raises(tracking.ExperimentRenamed) as renamed:
        tracking.configure(settings)
    assert str(renamed.value) == (
        f"the MLflow experiment 'co2cast' was renamed to 'old co2cast runs' (id {made_before}); rename it back to 'co2cast' "
        "in the MLflow UI: its runs are the lineage of every registered version"
    )
    assert client.get_experiment_by_name(tracking.EXPERIMENT) is None  # no second one was made
    client.rename_experiment(made_before, tracking.EXPERIMENT)
    assert tracking.configure(settings).get_experiment_by_name(tracking.EXPERIMENT).experiment_id == made_before


def test_an_unwritable_sqlite_folder_is_one_setup_error_naming_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A home that is a file, or a folder the lock cannot be created in (read-only, immutable): one setup line, not
    a failure of every series' data."""
    from pipeline.errors import SetupError

    (not_a_folder := tmp_path / "a-file").write_text("")
    with pytest.raises(tracking.TrackingMisconfigured) as raised:
        tracking.configure(Settings(home=not_a_folder))
    message = str(raised.value)
    assert isinstance(raised.value, SetupError) and "\n" not in message
    assert "NotADirectoryError" in message and "MLFLOW_TRACKING_URI" in message and str(not_a_folder) in message

    real_open = open

    def read_only(path, *args, **kwargs):
        if str(path).endswith(".init.lock"):
            raise OSError(30, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only)
    with pytest.raises(tracking.TrackingMisconfigured, match=r"Read-only file system.*MLFLOW_TRACKING_URI"):
        tracking.configure(Settings(home=tmp_path / "home"))


def test_a_server_that_is_no_mlflow_or_a_database_without_its_driver_is_one_setup_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each was an 'unexpected failure on this series' data' for every series (MlflowException 404, ModuleNotFoundError)."""
    import sys

    from pipeline.errors import SetupError

    class NotMlflow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b'<?xml version="1.0" encoding="utf-8"?><html>no such page</html>')

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}/mlflow"
        with pytest.raises(tracking.TrackingMisconfigured) as raised:
            tracking.configure(Settings(home=tmp_path, mlflow_tracking_uri=uri))
    finally:
        server.shutdown()
    message = str(raised.value)
    assert isinstance(raised.value, SetupError) and "\n" not in message
    assert message.startswith(f"MLFLOW_TRACKING_URI='{uri}' answers, but not as an MLflow tracking server (HTTP 404"), message

    monkeypatch.setitem(sys.modules, "pymysql", None)  # the driver not installed
    with pytest.raises(tracking.TrackingMisconfigured) as raised:
        tracking.configure(Settings(home=tmp_path, mlflow_tracking_uri="mysql+pymysql://co2cast:s3cret@127.0.0.1:1/mlflow"))
    message = str(raised.value)
    assert message.startswith("MLFLOW_TRACKING_URI='mysql+pymysql://***@127.0.0.1:1/mlflow' cannot be opened: a module it needs"), message
    assert "pymysql" in message and "s3cret" not in message and "\n" not in message


def test_a_damaged_sqlite_store_is_one_setup_error_not_retried(tmp_path: Path) -> None:
    """An SQLite file that is not a database (damaged, overwritten): SQLAlchemy's DatabaseError was an 'unexpected'
    failure of each series, retried by Airflow, with a hundred lines of traceback. A retry mends nothing."""
    from pipeline.errors import SetupError

    database = tmp_path / "mlflow" / "mlflow.db"
    database.parent.mkdir()
    database.write_bytes(np.random.default_rng(0).bytes(8192))
    uri = f"sqlite:///{database}"
    with pytest.raises(tracking.TrackingMisconfigured) as raised:
        tracking.configure(Settings(home=tmp_path, mlflow_tracking_uri=uri))
    message = str(raised.value)
    assert isinstance(raised.value, SetupError) and not raised.value.transient and "\n" not in message
    assert message.startswith(f"MLFLOW_TRACKING_URI='{uri}' is not a readable SQLite database"), message


def test_a_damaged_table_in_the_sqlite_store_is_one_setup_error_too(tmp_path: Path) -> None:
    """Damage inside a table, not at the file's start: the first query fails, and MLflow wraps SQLite's
    'database disk image is malformed' in an MlflowException (BAD_REQUEST), which passed through as unexpected."""
    import sqlite3

    settings = Settings(home=tmp_path)
    tracking.configure(settings)  # a real store, with co2cast's experiment
    database = tmp_path / "mlflow" / "mlflow.db"
    with sqlite3.connect(database) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        root = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'experiments'").fetchone()[0]
    connection.close()
    with database.open("r+b") as file:  # the experiments table's root page overwritten
        file.seek((root - 1) * page_size)
        file.write(b"\xff" * page_size)
        file.seek(24)  # and the file change counter moved, as any other writer moves it: no connection trusts its page cache
        counter = int.from_bytes(file.read(4), "big")
        file.seek(24)
        file.write((counter + 1).to_bytes(4, "big"))
    with pytest.raises(tracking.TrackingMisconfigured) as raised:
        tracking.configure(settings)
    assert str(raised.value).startswith("MLFLOW_TRACKING_URI='sqlite:///") and "is not a readable SQLite database" in str(raised.value)
    assert not raised.value.transient and "\n" not in str(raised.value)
