"""The two UIs in headless Chromium, after `make run` and `make up`, as a person would see them.

The module runs `scripts/run_local.sh` (make run) and `scripts/up.sh` (make up) on a fresh
co2cast home, drives Debian's chromium through selenium and its chromedriver, asserts on the
rendered pages, saves a screenshot of each under ``$CO2CAST_HOME/test-artifacts/browser/``
(printed), and stops the stack with `scripts/down.sh`. Run with ``make ui-test`` (or
``pytest -m browser``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import MISSING, headless_chromium

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAGE_TIMEOUT = 90
SHOTS = Path(os.environ.get("CO2CAST_HOME", ROOT / ".co2cast")) / "test-artifacts" / "browser"


def require_chromium() -> None:
    if MISSING is not None:
        pytest.skip(MISSING)


def stack_env(home: Path) -> dict[str, str]:
    """What the Makefile exports for make run / make up, on ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CO2CAST_", "AIRFLOW", "MLFLOW_", "AWS_"))}
    env.update(
        {
            "CO2CAST_HOME": str(home),
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "GX_ANALYTICS_ENABLED": "false",
            "PATH": f"{BIN}:{env.get('PATH', '')}",
        }
    )
    return env


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """make run, then make up, on a fresh home; make down afterwards.

    With ``CO2CAST_UI_URLS`` set to a running stack's ``$CO2CAST_HOME/up/urls.env`` (after your
    own make run and make up), the tests look at that stack instead and leave it running.
    """
    require_chromium()
    if os.environ.get("CO2CAST_UI_URLS"):
        yield read_urls(Path(os.environ["CO2CAST_UI_URLS"]))
        return
    home = tmp_path_factory.mktemp("ui-home")
    env = stack_env(home)
    for script in ("run_local.sh", "up.sh"):
        result = subprocess.run(["bash", f"scripts/{script}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
        if result.returncode != 0:
            subprocess.run(["bash", "scripts/down.sh"], cwd=ROOT, env=env, capture_output=True, timeout=120)
            pytest.fail(f"scripts/{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    try:
        yield read_urls(home / "up" / "urls.env")
    finally:
        subprocess.run(["bash", "scripts/down.sh"], cwd=ROOT, env=env, capture_output=True, timeout=120)


def read_urls(path: Path) -> dict[str, str]:
    """The URLs and Airflow login make up wrote."""
    urls = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    urls["password"] = json.loads(Path(urls["AIRFLOW_PASSWORDS_FILE"]).read_text())["admin"]
    return urls


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_chromium()
    with headless_chromium(window="1440,1600") as driver:
        SHOTS.mkdir(parents=True, exist_ok=True)
        for stale in SHOTS.glob("*.png"):  # only this session's pictures
            stale.unlink()
        print(f"\nscreenshots: {SHOTS}")
        yield driver


def page_text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def open_page(driver: Any, url: str, *texts: str, shot: str) -> str:
    """Open ``url``, wait until every one of ``texts`` is rendered, save a screenshot."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    # The UIs are single-page apps: the body read can be replaced while it is read; read it again.
    wait = WebDriverWait(driver, PAGE_TIMEOUT, poll_frequency=1, ignored_exceptions=(StaleElementReferenceException,))

    def rendered(d: Any) -> str | bool:
        body = page_text(d)
        return body if all(text in body for text in texts) else False

    try:
        body = wait.until(rendered)
    except TimeoutException:
        driver.save_screenshot(str(SHOTS / f"{shot}-FAILED.png"))
        missing = [text for text in texts if text not in page_text(driver)]
        raise AssertionError(f"{url} never showed {missing}; screenshot {SHOTS / shot}-FAILED.png") from None
    driver.save_screenshot(str(SHOTS / f"{shot}.png"))
    return body


@pytest.fixture(scope="module")
def airflow(ui: dict[str, str], browser: Any) -> Any:
    """The browser, signed in to the Airflow UI through its login form."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, ui["AIRFLOW_URL"] + "/", "Sign in", shot="airflow-login")
    wait = WebDriverWait(browser, PAGE_TIMEOUT, poll_frequency=1, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(expected_conditions.element_to_be_clickable((By.NAME, "username"))).send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(ui["password"])
    wait.until(expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "button[type=submit]"))).click()
    wait.until(lambda d: "/auth/login" not in d.current_url)  # signed in: back on the UI
    return browser


def test_airflow_lists_both_dags(ui: dict[str, str], airflow: Any) -> None:
    text = open_page(airflow, ui["AIRFLOW_URL"] + "/dags", "co2_ingest", "co2_forecast", shot="airflow-dags")
    assert "2 Dags" in text


def test_airflow_shows_a_finished_forecast_run(ui: dict[str, str], airflow: Any) -> None:
    from selenium.webdriver.common.by import By

    open_page(airflow, ui["AIRFLOW_URL"] + "/dags/co2_forecast/runs", "Dag Run ID", "manual__", shot="airflow-forecast-runs")
    rows = [row.text for row in airflow.find_elements(By.CSS_SELECTOR, "tbody tr")]
    finished = [row for row in rows if row.startswith("manual__") and "Success" in row]
    assert finished, rows  # make run's co2_forecast, through airflow dags test, on the same database


def test_mlflow_shows_registered_models_with_aliases(ui: dict[str, str], browser: Any) -> None:
    open_page(browser, ui["MLFLOW_URL"] + "/#/models", "co2cast.canada.co2_per_capita", "co2cast.world.co2", shot="mlflow-models")
    text = open_page(
        browser, ui["MLFLOW_URL"] + "/#/models/co2cast.canada.co2_per_capita", "@ champion", "@ arima", "@ lstm", shot="mlflow-model-canada"
    )
    assert "Version 1" in text


def test_mlflow_experiment_opens_on_its_runs(ui: dict[str, str], browser: Any) -> None:
    text = open_page(
        browser, ui["MLFLOW_EXPERIMENT_URL"], "canada.co2_per_capita asof=2014", "world.co2 asof=2014", shot="mlflow-experiment-runs"
    )
    assert "Detect Issues" not in text  # not the GenAI overview
