"""The forecast viewer in a real browser: headless Chromium against ``co2cast view``.

The test runs a real ingest and forecast through the command line into a temporary home,
starts the viewer with ``co2cast view`` on a free loopback port, and drives Debian's
``chromium`` through ``chromedriver`` (selenium). It saves a screenshot for a person to look at
(its path is printed; run pytest with ``-s`` to see it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.chromium import MISSING, headless_chromium

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CO2CAST_", "MLFLOW_", "AWS_"))}
    env.update({"CO2CAST_HOME": str(home), "GX_ANALYTICS_ENABLED": "false", "PATH": f"{BIN}:{env.get('PATH', '')}"})
    return env


def _co2cast(home: Path, *args: str) -> str:
    result = subprocess.run([str(BIN / "co2cast"), *args], env=_env(home), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _serve(home: Path, log_path: Path) -> Iterator[str]:
    """``co2cast view`` over a home on a free loopback port, until the block ends: its URL."""
    port = _free_port()
    log = log_path.open("w")
    server = subprocess.Popen([str(BIN / "co2cast"), "view", "--port", str(port)], env=_env(home), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the viewer did not start: {log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, owid_csv: Path) -> Path:
    """A co2cast home after a real ingest + forecast of Canada's CO2 per capita through the command line."""
    root = tmp_path_factory.mktemp("viewer-browser")
    lines = owid_csv.read_text().splitlines()
    source = root / "owid-canada-world.csv"
    source.write_text("\n".join([lines[0], *[ln for ln in lines[1:] if ln.split(",")[1] in {"Canada", "World"}]]) + "\n")
    home = root / "home"
    _co2cast(home, "ingest", "--source", str(source))
    _co2cast(home, "forecast", "--series", "Canada:co2_per_capita")
    return home


@pytest.fixture(scope="module")
def viewer(published: Path) -> Iterator[tuple[str, Path]]:
    """A running viewer over the published home: ``(url, home)``."""
    with _serve(published, published.parent / "viewer.log") as url:
        yield url, published


@pytest.fixture
def browser() -> Iterator[object]:
    """Headless Chromium with a fresh profile, driven through Debian's chromedriver."""
    with headless_chromium(window="1400,1400") as driver:
        yield driver


def test_page_shows_chart_and_champion_in_chromium(viewer: tuple[str, Path], browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, home = viewer
    latest = json.loads((home / "store" / "forecasts" / "canada.co2_per_capita" / "latest.json").read_text())
    wait = WebDriverWait(browser, 120)
    browser.get(url)
    chart = '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg'
    drawn = wait.until(lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, chart) if e.size["width"] > 200 and e.size["height"] > 200])
    assert drawn  # the chart was laid out with a real size
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Canada — CO2 per capita (t CO2 per person)" in body
    assert latest["model_name"] in body and f"v{latest['model_version']}" in body  # the champion's name and version
    assert "Provisional year" in body and "provisional" in body
    assert "Download" in body and "–2050 as CSV" in body
    assert "Traceback" not in body

    # The study's interaction: type an end year; the page follows it.
    end = browser.find_element(By.CSS_SELECTOR, 'input[aria-label="End year (up to 2050)"]')
    end.send_keys(Keys.CONTROL, "a")
    end.send_keys("2030", Keys.ENTER)
    wait.until(lambda d: "–2030 as CSV" in d.find_element(By.TAG_NAME, "body").text)
    wait.until(lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, chart) if e.size["width"] > 200])
    end.send_keys(Keys.CONTROL, "a")
    end.send_keys("2050", Keys.ENTER)
    wait.until(lambda d: "–2050 as CSV" in d.find_element(By.TAG_NAME, "body").text)
    browser.execute_script("document.activeElement.blur()")  # no focus ring in the picture
    time.sleep(1)  # let the chart's redraw settle before the picture (not an assertion)

    shot = tmp_path / "viewer.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"\nviewer screenshot: {shot}")


def test_what_the_store_holds_is_shown_as_written_and_a_damaged_pointer_leaves_out_its_series_only(
    published: Path, browser: object, tmp_path: Path
) -> None:
    """In a real browser: a manifest's vintage edited to a link and a damaged pointer in a folder named like an image."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    home = tmp_path / "home"
    shutil.copytree(published / "store", home / "store")
    forecasts = home / "store" / "forecasts"
    pointer_path = forecasts / "canada.co2_per_capita" / "latest.json"
    pointer = json.loads(pointer_path.read_text())
    manifest_path = home / "store" / pointer["manifest"]
    manifest = json.loads(manifest_path.read_text())
    link, image = "[click](https://evil.example)", "![x](evil.example.png)"
    raw = json.dumps({**manifest, "vintage": link}).encode()
    manifest_path.write_bytes(raw)
    # latest.json's copy of the vintage made to match too: it is checked against the manifest it serves.
    pointer_path.write_text(json.dumps({**pointer, "vintage": link, "manifest_sha256": hashlib.sha256(raw).hexdigest()}))
    (forecasts / image).mkdir()
    (forecasts / image / "latest.json").write_bytes(b"{")  # cut short

    with _serve(home, tmp_path / "viewer.log") as url:
        browser.get(url)
        alerts = '[data-testid="stAlert"]'
        WebDriverWait(browser, 120).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, alerts)) >= 2)
        shown = [e.text.replace("\u2060", "") for e in browser.find_elements(By.CSS_SELECTOR, alerts)]  # the invisible word joiner
        assert any(t.startswith(f"{image} is left out of the list: ") and "is not what co2cast wrote" in t for t in shown), shown
        assert any(f"the manifest names {link!r} as its vintage" in t and "(`co2cast forecast`)" in t for t in shown), shown
        for alert in browser.find_elements(By.CSS_SELECTOR, alerts):  # written out, not made into a link or an image
            assert not alert.find_elements(By.CSS_SELECTOR, "a, img, code"), alert.get_attribute("innerHTML")
        assert not browser.find_elements(By.CSS_SELECTOR, 'a[href*="evil"], img[src*="evil"]')
        assert "Traceback" not in browser.find_element(By.TAG_NAME, "body").text
