"""Where .ci/run sets CO2CAST_TEST_NO_SKIPS, a test that would skip for a missing dependency fails instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import NO_SKIPS_VARIABLE, ROOT

MODULE = """
import pytest


@pytest.fixture(scope="module")
def service():
    pytest.skip("no postgres")


def test_skip_call():
    pytest.skip("no chromium")


@pytest.mark.skipif(True, reason="no docker-compose")
def test_skipif_mark():
    pass


def test_importorskip():
    pytest.importorskip("co2cast_no_such_module", reason="torch is a test extra")


def test_fixture_skip(service):
    pass


def test_runs():
    assert True
"""

#: A module skipped as a whole while it is collected.
WHOLE_MODULE = """
import pytest

pytest.importorskip("co2cast_no_such_module", reason="selenium is a test tool")


def test_never_collected():
    pass
"""


def _pytest(directory: Path, source: str, value: str | None) -> subprocess.CompletedProcess[str]:
    """pytest with this suite's conftest as a plugin, on a module of ``source``, with the variable set to ``value`` (or unset)."""
    (directory / "test_module.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != NO_SKIPS_VARIABLE}
    if value is not None:
        env[NO_SKIPS_VARIABLE] = value
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-o", "addopts=", "-rA", "-q"]
    command += ["--rootdir", str(directory), str(directory / "test_module.py")]
    return subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("value", [None, "", "0"])
def test_without_the_variable_a_missing_dependency_skips(tmp_path: Path, value: str | None) -> None:
    result = _pytest(tmp_path, MODULE, value)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 passed, 4 skipped" in result.stdout, result.stdout[-3000:]
    whole = _pytest(tmp_path, WHOLE_MODULE, value)
    assert whole.returncode == 5 and "1 skipped" in whole.stdout, whole.stdout[-3000:]  # 5: no test ran


@pytest.mark.parametrize("value", ["1", "true", " Yes "])
def test_with_the_variable_every_kind_of_skip_fails_with_its_reason(tmp_path: Path, value: str) -> None:
    result = _pytest(tmp_path, MODULE, value)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "skipped" not in result.stdout.splitlines()[-1], result.stdout[-3000:]
    for test, reason in (
        ("test_skip_call", "no chromium"),
        ("test_skipif_mark", "no docker-compose"),
        ("test_importorskip", "torch is a test extra"),
        ("test_fixture_skip", "no postgres"),
    ):
        line = next((line for line in result.stdout.splitlines() if f"::{test} " in line and line.startswith(("FAILED", "ERROR"))), None)
        assert line is not None, (test, result.stdout[-3000:])
        assert NO_SKIPS_VARIABLE in line, line
        assert reason in result.stdout, (reason, result.stdout[-3000:])
    assert "PASSED test_module.py::test_runs" in result.stdout
    whole = _pytest(tmp_path, WHOLE_MODULE, value)  # an error while collecting: the session stops (exit 2)
    assert whole.returncode == 2 and "ERROR test_module.py" in whole.stdout, whole.stdout[-3000:]
    assert f"{NO_SKIPS_VARIABLE} set" in whole.stdout and "selenium is a test tool" in whole.stdout, whole.stdout[-3000:]


def test_ci_sets_the_variable_before_the_tests_run() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert f"export {NO_SKIPS_VARIABLE}=1" in script
    assert script.index(f"export {NO_SKIPS_VARIABLE}=1") < script.index("make test\n")
