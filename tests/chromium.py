"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by its ``chromedriver``.

Both browser tests (the Airflow and MLflow UIs of ``make up``, and the forecast viewer) start
it here, with the flags the machine needs and a throw-away profile.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
#: Why a browser test cannot run, or ``None`` when it can.
MISSING = (
    "Debian's chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver; .ci/run does)"
    if CHROMIUM is None or CHROMEDRIVER is None
    else None
)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
)


@contextmanager
def headless_chromium(window: str = "1440,1600") -> Iterator[Any]:
    """A selenium driver of headless Chromium with a fresh profile, quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if MISSING is not None:
        raise RuntimeError(MISSING)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        for flag in (*FLAGS, f"--window-size={window}", f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()
