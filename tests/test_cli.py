"""The co2cast command: exit codes and messages a person can act on."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

CO2CAST = Path(sys.executable).parent / "co2cast"


def _run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CO2CAST_", "MLFLOW_"))}
    env = {**clean, "CO2CAST_HOME": str(tmp_path / "home"), **(env or {})}
    return subprocess.run([str(CO2CAST), *args], capture_output=True, text=True, env=env, timeout=300)


def test_ingest_status_and_rejection(tmp_path: Path, small_owid: Path) -> None:
    assert _run(tmp_path, "status").returncode == 1
    ok = _run(tmp_path, "ingest", "--source", str(small_owid))
    assert ok.returncode == 0, ok.stderr
    assert "curated vintage" in ok.stdout and "latest year 2014" in ok.stdout
    again = _run(tmp_path, "ingest", "--source", str(small_owid))
    assert again.returncode == 0 and "source unchanged" in again.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text(small_owid.read_text().replace(",", ";"))
    rejected = _run(tmp_path, "ingest", "--source", str(bad))
    assert rejected.returncode == 2 and "REJECTED" in rejected.stderr and "delimiter" in rejected.stderr
    lines = small_owid.read_text().splitlines()
    column = lines[0].split(",").index("co2")
    row = lines[1].split(",")
    row[column] = "abc"
    (suspect := tmp_path / "suspect.csv").write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    gated = _run(tmp_path, "ingest", "--source", str(suspect))  # reaches the GX suites and fails there
    assert gated.returncode == 2 and "value_text=abc" in gated.stderr
    assert len(gated.stderr.strip().splitlines()) == 1 and gated.stderr.startswith("REJECTED: "), gated.stderr
    again = _run(tmp_path, "ingest", "--source", str(suspect))  # a quarantined vintage is gated again, not "unchanged"
    assert again.returncode == 2 and again.stderr == gated.stderr, again.stdout + again.stderr
    status = _run(tmp_path, "status")
    assert status.returncode == 0 and '"latest_year": 2014' in status.stdout


def test_validate_and_missing_inputs(tmp_path: Path, gapminder_csv: Path) -> None:
    good = _run(tmp_path, "validate", str(gapminder_csv))
    assert good.returncode == 0 and "all expectations met" in good.stdout
    missing = _run(tmp_path, "ingest", "--source", str(tmp_path / "nope.csv"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    assert "CO2CAST_SOURCE" not in missing.stderr  # it came from --source
    empty = _run(tmp_path, "ingest", "--source", "")  # not the default source, silently
    assert empty.returncode == 2 and "argument --source: is empty" in empty.stderr and not (tmp_path / "home" / "store").exists()
    show = _run(tmp_path, "show", "canada.co2_per_capita")
    assert show.returncode == 1 and "no forecast published" in show.stderr


def test_validate_refuses_an_empty_year(tmp_path: Path, small_owid: Path) -> None:
    """A row whose year cell is empty is refused by ``validate`` as by ``ingest``."""
    lines = small_owid.read_text().splitlines()
    row = next(line for line in lines if ",Canada,2014," in line).replace(",Canada,2014,", ",Canada,,", 1)
    (bad := tmp_path / "bad.csv").write_text("\n".join([*lines, row]) + "\n")
    result = _run(tmp_path, "validate", str(bad))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "expect_column_values_to_not_be_null" in result.stdout and "'entity': 'Canada'" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("name", "words"),
    [("\u4e2d\u56fd", "no letter or digit a series id can be made of"), ("A" * 101, "101 characters long, more than the 100")],
    ids=["no_a_z_letter", "101_characters"],
)
def test_validate_applies_the_checks_ingest_makes_before_gx(tmp_path: Path, small_owid: Path, name: str, words: str) -> None:
    """``validate`` refuses what ``ingest`` refuses before the GX suites: an entity name that gives no series id."""
    (bad := tmp_path / "bad.csv").write_text(small_owid.read_text().replace(",Canada,", f",{name},"))
    result = _run(tmp_path, "validate", str(bad))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("REJECTED: ") and words in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_validate_holds_a_compressed_file_to_the_configured_cap(tmp_path: Path, gapminder_csv: Path) -> None:
    """``CO2CAST_MAX_SOURCE_BYTES`` bounds what a gzip file decompresses to, in ``validate`` as in ``ingest``."""
    packed = tmp_path / "gapminder.csv.gz"
    packed.write_bytes(gzip.compress(gapminder_csv.read_bytes()))
    cap = str(len(gapminder_csv.read_bytes()) - 1)
    refused = _run(tmp_path, "validate", str(packed), env={"CO2CAST_MAX_SOURCE_BYTES": cap})
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.startswith("REJECTED: ") and f"decompresses to more than the {int(cap):,}-byte cap" in refused.stderr
    assert _run(tmp_path, "validate", str(packed)).returncode == 0


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("CO2CAST_MAX_SOURCE_BYTES", "lots", "input should be a valid integer"),
        ("CO2CAST_MAX_SOURCE_BYTES", "-5", "input should be greater than 0 (largest release read"),
        ("CO2CAST_MAX_YEAR_ON_YEAR_FACTOR", "0.5", "input should be greater than 1"),
        ("CO2CAST_INCLUDE_AGGREGATES", "maybe", "input should be a valid boolean"),
        ("CO2CAST_FETCH_TIMEOUT", "9" * 100 + "\nx", "input should be a valid number"),
        ("CO2CAST_HORIZON_END", "3000", "input should be less than or equal to 2100 (last forecast year, at most 2100)"),
    ],
)
def test_an_invalid_setting_is_one_line_naming_the_variable(tmp_path: Path, variable: str, value: str, words: str) -> None:
    result = _run(tmp_path, "status", env={variable: value})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: invalid setting: {variable}="), result.stderr
    assert words in lines[0] and lines[0].endswith("fix the value or unset the variable for its default") and len(lines[0]) < 400


def test_known_failures_print_one_line(tmp_path: Path, small_owid: Path) -> None:
    def one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and text in lines[-1], result.stderr
        assert "Traceback" not in result.stderr

    one_line_error(_run(tmp_path, "forecast"), "no curated vintage")
    one_line_error(_run(tmp_path, "rollback", "canada.co2_per_capita"), "co2cast.canada.co2_per_capita has no @champion; published: none")
    assert _run(tmp_path, "ingest", "--source", str(small_owid)).returncode == 0
    one_line_error(_run(tmp_path, "forecast", "--series", "Atlantis:co2"), "no series 'Atlantis:co2'")
    one_line_error(_run(tmp_path, "forecast", "--as-of-year", "2050"), "not before the horizon end")


def test_forecast_goes_on_past_refused_series_and_says_what_a_gap_left_out(tmp_path: Path, owid_csv: Path) -> None:
    """``co2cast forecast --series A,B,C``: a refused series does not stop the others."""
    lines = owid_csv.read_text().splitlines()
    source = tmp_path / "owid.csv"
    source.write_text("\n".join([lines[0], *[ln for ln in lines[1:] if ln.split(",")[1] in {"France", "Kuwait"}]]) + "\n")
    assert _run(tmp_path, "ingest", "--source", str(source)).returncode == 0
    # As of 1975: Kuwait's oil CO2 misses 1968 (7 years after it), its coal CO2 ends in 1959,
    # France's CO2 misses 1805-1809 early on and is modelled from 1810.
    run = _run(tmp_path, "forecast", "--as-of-year", "1975", "--series", "Kuwait:oil_co2,France:co2,Kuwait:coal_co2")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "[1/3] kuwait.oil_co2: REFUSED: kuwait.oil_co2: only 7 yearly values (1969-1975) after the gap in 1968" in run.stdout
    assert "[2/3] france.co2: champion v" in run.stdout
    assert "[2/3] france.co2: modelled 1810-1975; left out 1802-1804 (2 values) before a gap in 1805-1809" in run.stdout
    assert "[3/3] kuwait.coal_co2: REFUSED: kuwait.coal_co2: its data end in 1959" in run.stdout
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 of 3 series refused, the others were published: kuwait.oil_co2") and "kuwait.coal_co2" in last
    shown = _run(tmp_path, "show", "france.co2", "--csv")
    assert shown.returncode == 0 and shown.stdout.splitlines()[1].startswith("1976,")
    assert _run(tmp_path, "show", "France:co2", "--csv").stdout == shown.stdout  # the --series form names it too
    assert "champion" in _run(tmp_path, "history", "France:co2").stdout
    missing = _run(tmp_path, "history", "france.co2_per_capita")
    assert missing.returncode == 1 and missing.stdout.strip() == "no alias history for france.co2_per_capita; published: france.co2"
    history = "modelled 1810-1975; left out 1802-1804 (2 values) before a gap in 1805-1809"
    shown = _run(tmp_path, "show", "france.co2")
    assert shown.returncode == 0 and shown.stdout.splitlines()[1] == history
    summary = _run(tmp_path, "summary")
    assert summary.returncode == 0 and f"      {history}" in summary.stdout.splitlines()

    # A range with no forecast year, a port that is none, a reader that stops early, a fault no
    # one foresaw: each is one line (or nothing, for the reader), never a traceback.
    for start, end in (("2030", "2020"), ("2060", "2070")):
        empty = _run(tmp_path, "show", "france.co2", "--start", start, "--end", end)
        assert empty.returncode == 1 and empty.stdout == "", empty.stdout
        assert empty.stderr == f"error: no forecast year in {start}-{end}: france.co2 is forecast for 1976-2050\n"
    with socket.socket() as taken:  # another viewer on the port: one line with what to do, before any URL is announced
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        number = taken.getsockname()[1]
        busy = _run(tmp_path, "view", "--port", str(number))
    assert busy.returncode == 1 and busy.stdout == "", busy.stdout
    assert busy.stderr.startswith(f"error: port {number} on 127.0.0.1 is not free (") and "pass --port N" in busy.stderr
    port = _run(tmp_path, "view", "--port", "99999")
    assert port.returncode == 2 and port.stderr.strip().splitlines()[-1].endswith("'99999' is not a port: use a number from 1 to 65535")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CO2CAST_", "MLFLOW_"))}, "CO2CAST_HOME": str(tmp_path / "home")}
    reader = subprocess.Popen([str(CO2CAST), "show", "france.co2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()  # the reader is gone before the command writes (as `| head -1` after one line)
    assert reader.wait(timeout=300) == 0 and reader.stderr.read() == b""
    (not_a_home := tmp_path / "a-file").write_text("")
    odd = _run(tmp_path, "summary", env={"CO2CAST_HOME": str(not_a_home)})
    assert odd.returncode == 1 and "Traceback" not in odd.stderr and len(odd.stderr.strip().splitlines()) == 1, odd.stderr
    # A home that is a file is the setup's fault, not an unexpected one: the store says which path and what to set.
    assert odd.stderr.startswith(f"error: cannot read file://{not_a_home.resolve()}/store/curated/latest.json: NotADirectoryError: ")
    assert odd.stderr.rstrip().endswith("point CO2CAST_HOME (or CO2CAST_STORE_URI) at one"), odd.stderr


@pytest.mark.parametrize(
    ("typed", "series_id"),
    [
        ("canada.co2_per_capita", "canada.co2_per_capita"),
        ("Canada:co2_per_capita", "canada.co2_per_capita"),
        ("United States:co2", "united_states.co2"),
        ("United States.co2", "united_states.co2"),
        ("Cote d'Ivoire:co2", "cote_d_ivoire.co2"),
        ("co2cast.world.co2", "world.co2"),  # the registered model, as the MLflow UI names it
        ("nosuch", "nosuch"),
        (":co2", ":co2"),
    ],
)
def test_a_series_can_be_named_by_its_id_or_as_in_series(typed: str, series_id: str) -> None:
    from pipeline.cli import series_id_arg

    assert series_id_arg(typed) == series_id


def test_a_table_is_printed_in_columns_as_wide_as_their_widest_cell(capsys: pytest.CaptureFixture[str]) -> None:
    """``co2cast history`` and ``forecasts``: a score as wide as its column no longer runs into the next."""
    from pipeline.cli import _print_table

    _print_table(("metric", "champion", "naive", "reason"), [["msis_95", "10.96", "8.364", "kept"], ["mase", "", "12", "first"]])
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "metric   champion  naive  reason",
        "msis_95  10.96     8.364  kept",
        "mase               12     first",
    ]


def test_a_setting_that_names_no_series_or_an_impossible_horizon_is_named(tmp_path: Path, small_owid: Path) -> None:
    assert _run(tmp_path, "ingest", "--source", str(small_owid)).returncode == 0
    series = _run(tmp_path, "forecast", env={"CO2CAST_SERIES": "garbage"})
    assert series.returncode == 1 and series.stderr.startswith("error: CO2CAST_SERIES='garbage': no series with id 'garbage'"), (
        series.stderr
    )
    horizon = _run(tmp_path, "forecast", env={"CO2CAST_HORIZON_END": "2000"})
    assert horizon.returncode == 1 and horizon.stderr.rstrip().endswith("is not before the horizon end 2000 (CO2CAST_HORIZON_END)")


def test_ctrl_c_is_one_line(tmp_path: Path, small_owid: Path) -> None:
    """An interrupted forecast says so in one line (exit 130), and the rerun finishes it."""
    import signal

    assert _run(tmp_path, "ingest", "--source", str(small_owid)).returncode == 0
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("CO2CAST_", "MLFLOW_"))}, "CO2CAST_HOME": str(tmp_path / "home")}
    env |= {"CO2CAST_TEST_PAUSE_AT": "after_log", "CO2CAST_TEST_PAUSE_SECONDS": "60"}
    command = [str(CO2CAST), "forecast", "--series", "Canada:co2_per_capita"]
    # As from a terminal: a job started in the background (CI) inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler; the child gets the default back.
    run = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert run.stderr is not None
    lines = []
    for line in run.stderr:  # until the run sleeps in the middle of logging to MLflow
        lines.append(line)
        if "co2cast-test: paused at after_log" in line:
            break
    run.send_signal(signal.SIGINT)
    rest = run.stderr.read()
    assert run.wait(timeout=120) == 130 and "Traceback" not in rest, rest
    assert rest.strip().splitlines()[-1] == "interrupted: co2cast forecast stopped; run it again to finish (every step is safe to repeat)"
    again = _run(tmp_path, "forecast", "--series", "Canada:co2_per_capita")
    assert again.returncode == 0 and "[1/1] canada.co2_per_capita: champion v" in again.stdout, again.stderr


def test_an_unreachable_tracking_server_is_one_line_at_once(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _run(tmp_path, "rollback", "canada.co2", env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr  # no retry warnings before it
    assert result.stderr.startswith(f"error: MLflow tracking server http://127.0.0.1:{port} is unreachable ("), result.stderr


def test_the_mlflow_ui_hint_fits_the_tracking_store() -> None:
    """``mlflow ui --backend-store-uri http://…`` does not browse a server: a server's own UI is named instead."""
    from pipeline.cli import mlflow_ui_hint

    local = "sqlite:////h/mlflow/mlflow.db"
    # By its full path: the hint works from any directory, not only the checkout's.
    mlflow = Path(sys.executable).parent / "mlflow"
    assert mlflow.is_file()
    assert mlflow_ui_hint(local) == f"{mlflow} ui --workers 1 --backend-store-uri {local}   (or: make mlflow-ui)"
    assert mlflow_ui_hint("http://someone:s3cret@mlflow:5000") == "http://***@mlflow:5000   (the tracking server's own UI)"
    database = mlflow_ui_hint("postgresql://mlflow:s3cret@db:5432/mlflow")  # a database store with its password
    assert database == f"{mlflow} ui --workers 1 --backend-store-uri postgresql://***@db:5432/mlflow   (or: make mlflow-ui)"


def test_a_deleted_mlflow_experiment_or_a_bad_tracking_uri_stops_the_run_in_one_line(tmp_path: Path, small_owid: Path) -> None:
    """A setup fault fails every series alike: the run stops at the first with one line, not one per series."""
    from mlflow import MlflowClient

    assert _run(tmp_path, "ingest", "--source", str(small_owid)).returncode == 0
    bad = _run(tmp_path, "forecast", "--series", "World:co2,Canada:co2", env={"MLFLOW_TRACKING_URI": "http://localhost:99999"})
    assert bad.returncode == 1 and "canada.co2" not in bad.stdout + bad.stderr, bad.stdout + bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "error: MLFLOW_TRACKING_URI=http://*** has no usable address (its port is not a number from 0 to 65535, or a password holds "
        "a raw '/', '?' or '#': percent-encode it); set an address like http://localhost:5000"
    ]

    uri = f"sqlite:///{tmp_path / 'home' / 'mlflow' / 'mlflow.db'}"
    first = _run(tmp_path, "forecast", "--series", "Canada:co2", env={"MLFLOW_TRACKING_URI": uri})
    assert first.returncode == 0, first.stdout + first.stderr
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("co2cast")
    client.delete_experiment(experiment.experiment_id)  # as the MLflow UI would
    deleted = _run(tmp_path, "forecast", "--series", "World:co2,Canada:co2", env={"MLFLOW_TRACKING_URI": uri})
    assert deleted.returncode == 1 and "canada.co2" not in deleted.stdout + deleted.stderr, deleted.stdout + deleted.stderr
    assert deleted.stderr.strip() == (
        f"error: the MLflow experiment 'co2cast' (id {experiment.experiment_id}) was deleted; restore it in the MLflow UI or with "
        f"`mlflow experiments restore --experiment-id {experiment.experiment_id}`: its runs are the lineage of every registered version"
    )
    client.restore_experiment(experiment.experiment_id)
    restored = _run(tmp_path, "forecast", "--series", "Canada:co2", env={"MLFLOW_TRACKING_URI": uri})
    assert restored.returncode == 0 and "canada.co2: champion v" in restored.stdout, restored.stdout + restored.stderr


@pytest.mark.parametrize("typed", ["..", "a/b", "a'b", ":co2", "nosuch"])
def test_text_that_is_no_series_id_is_refused_as_an_unknown_id_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], typed: str
) -> None:
    """``show ..`` said "invalid object key 'forecasts/../latest.json'", ``rollback a/b`` left a locks/series/a/ folder,
    ``forecasts "a'b"`` an MlflowException about the filter string."""
    from pipeline import cli, tracking

    home = tmp_path / "home"
    pointer = home / "store" / "forecasts" / "world.co2" / "latest.json"
    pointer.parent.mkdir(parents=True)
    pointer.write_text(json.dumps({"manifest": "forecasts/world.co2/asof=2014/k/manifest.json", "as_of_year": 2014}))
    for name in [n for n in os.environ if n.startswith(("CO2CAST_", "MLFLOW_", "AWS_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CO2CAST_HOME", str(home))
    before = sorted(p.relative_to(home) for p in home.rglob("*"))
    for command in ("show", "rollback", "history", "scorecard", "forecasts"):
        assert cli.main([command, typed, *(["--as-of", "2014"] if command == "forecasts" else [])]) == 1, command
        out, err = capsys.readouterr()
        assert not out and err == f"error: {typed!r} is no series id (entity.variable, e.g. canada.co2_per_capita); published: world.co2\n"
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == before  # no lock folder, no MLflow database
    with pytest.raises(tracking.RegistryError, match="is no series id"):
        tracking.versions_as_of(None, typed, 2014)  # never into an MLflow filter string


def test_scorecard_and_forecasts_of_an_unknown_id_list_what_is_published(tmp_path: Path) -> None:
    """As ``show``, ``history`` and ``rollback`` do: a mistyped id in ``scorecard`` or ``forecasts`` named no published series."""
    home = tmp_path / "home"
    pointer = home / "store" / "forecasts" / "world.co2" / "latest.json"
    pointer.parent.mkdir(parents=True)
    pointer.write_text(json.dumps({"manifest": "forecasts/world.co2/asof=2014/k/manifest.json", "as_of_year": 2014}))
    (manifest := pointer.parent / "asof=2014" / "k" / "manifest.json").parent.mkdir(parents=True)
    manifest.write_text("{}")  # listed only: the years a person may ask for

    typo = _run(tmp_path, "scorecard", "wrld.co2")
    assert typo.returncode == 1 and typo.stdout == "no scorecard for wrld.co2: it has no published forecast; published: world.co2\n", typo
    known = _run(tmp_path, "scorecard", "world.co2")
    assert known.returncode == 1 and known.stdout.startswith(
        "nothing scored for world.co2 yet: a published forecast is scored when a later run finds actuals"
    )
    typo = _run(tmp_path, "forecasts", "wrld.co2", "--as-of", "2010")
    assert typo.returncode == 1 and typo.stdout == "nothing registered or published for wrld.co2 as of 2010; published: world.co2\n", typo
    year = _run(tmp_path, "forecasts", "world.co2", "--as-of", "2010")
    expected = "nothing registered or published for world.co2 as of 2010; forecasts of world.co2 are published as of 2014\n"
    assert year.returncode == 1 and year.stdout == expected, year


def test_validate_of_a_missing_file_is_an_error_not_a_rejected_release(tmp_path: Path) -> None:
    """``validate`` said 'REJECTED: … does not exist' (exit 2, a release the gates refuse); ``ingest`` says 'error:' (exit 1)."""
    missing = _run(tmp_path, "validate", str(tmp_path / "nope.csv"))
    assert missing.returncode == 1 and missing.stderr.startswith("error: source file ") and "does not exist" in missing.stderr, missing
    assert len(missing.stderr.strip().splitlines()) == 1 and "check the path" in missing.stderr


def test_an_unexpected_failure_is_one_line_and_its_traceback_comes_with_v(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    """A failure no one foresaw: one line naming its type and how to see more; ``-v`` lets the traceback through."""
    from pipeline import cli

    def broken(args, settings) -> int:
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setenv("CO2CAST_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(cli.COMMANDS, "status", (broken, cli.COMMANDS["status"][1]))
    assert cli.main(["status"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "error: ZeroDivisionError: division by zero (unexpected; rerun with co2cast -v status … for the traceback)\n"
    with pytest.raises(ZeroDivisionError):
        cli.main(["-v", "status"])
