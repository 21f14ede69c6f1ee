"""The co2cast command: exit codes and messages a person can act on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CO2CAST = Path(sys.executable).parent / "co2cast"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CO2CAST_", "MLFLOW_"))}
    env["CO2CAST_HOME"] = str(tmp_path / "home")
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
    status = _run(tmp_path, "status")
    assert status.returncode == 0 and '"latest_year": 2014' in status.stdout


def test_validate_and_missing_inputs(tmp_path: Path, gapminder_csv: Path) -> None:
    good = _run(tmp_path, "validate", str(gapminder_csv))
    assert good.returncode == 0 and "all expectations met" in good.stdout
    missing = _run(tmp_path, "ingest", "--source", str(tmp_path / "nope.csv"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    show = _run(tmp_path, "show", "canada.co2_per_capita")
    assert show.returncode == 1 and "no forecast published" in show.stderr


def test_known_failures_print_one_line(tmp_path: Path, small_owid: Path) -> None:
    def one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and text in lines[-1], result.stderr
        assert "Traceback" not in result.stderr

    one_line_error(_run(tmp_path, "forecast"), "no curated vintage")
    one_line_error(_run(tmp_path, "rollback", "canada.co2_per_capita"), "has no @champion")
    assert _run(tmp_path, "ingest", "--source", str(small_owid)).returncode == 0
    one_line_error(_run(tmp_path, "forecast", "--series", "Atlantis:co2"), "no series 'Atlantis:co2'")
    one_line_error(_run(tmp_path, "forecast", "--as-of-year", "2050"), "not before the horizon end")
