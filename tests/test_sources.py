"""Reading releases: paths and URLs, CSV and XLSX, long and wide layouts, clear errors."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipeline import sources


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on loopback serving a temporary directory."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()


def test_owid_long_layout(owid_csv: Path) -> None:
    staging = sources.read_source(owid_csv.read_bytes(), owid_csv.name)
    assert list(staging.columns) == sources.STAGING_COLUMNS
    canada = staging[(staging["entity"] == "Canada") & (staging["variable"] == "co2_per_capita")]
    assert canada["year"].min() == 1800 and canada["year"].max() == 2014 and len(canada) == 215
    assert canada["iso_code"].unique().tolist() == ["CAN"]
    raw = pd.read_csv(owid_csv)
    expected = raw.loc[(raw["country"] == "Canada") & (raw["year"] == 1979), "co2_per_capita"].item()
    assert canada.loc[canada["year"] == 1979, "value"].item() == pytest.approx(expected)
    assert set(staging["variable"]) == set(sources.OWID_VARIABLES)


def test_gapminder_wide_layout(gapminder_csv: Path) -> None:
    staging = sources.read_source(gapminder_csv.read_bytes(), gapminder_csv.name)
    raw = pd.read_csv(gapminder_csv)
    assert len(staging) == raw.drop(columns=["country"]).notna().sum().sum()
    assert set(staging["variable"]) == {"co2_per_capita"}
    row = staging[(staging["entity"] == "Canada") & (staging["year"] == 1800)]
    assert row["value"].item() == pytest.approx(0.00568)


def test_xlsx_gives_the_same_table_as_csv(gapminder_csv: Path, tmp_path: Path) -> None:
    raw = pd.read_csv(gapminder_csv).head(20)
    xlsx = tmp_path / "study.xlsx"
    raw.to_excel(xlsx, index=False)
    csv = tmp_path / "study.csv"
    raw.to_csv(csv, index=False)
    from_xlsx = sources.read_source(xlsx.read_bytes(), xlsx.name)
    from_csv = sources.read_source(csv.read_bytes(), csv.name)
    pd.testing.assert_frame_equal(
        from_xlsx[["entity", "year", "variable", "value"]], from_csv[["entity", "year", "variable", "value"]], check_dtype=False
    )


def test_fetch_over_http(http_dir: tuple[str, Path], gapminder_csv: Path) -> None:
    url, root = http_dir
    (root / "co2.csv").write_bytes(gapminder_csv.read_bytes())
    fetched = sources.fetch(f"{url}/co2.csv")
    assert fetched.data == gapminder_csv.read_bytes() and fetched.file_name == "co2.csv"


def test_unreachable_url_says_to_use_a_local_file(http_dir: tuple[str, Path]) -> None:
    url, _ = http_dir
    with pytest.raises(sources.SourceError, match="set CO2CAST_SOURCE to a local file"):
        sources.fetch(f"{url}/missing.csv", timeout=5)
    with pytest.raises(sources.SourceError, match="set CO2CAST_SOURCE to a local file"):
        sources.fetch("http://127.0.0.1:9/none.csv", timeout=5)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(sources.SourceError, match="does not exist"):
        sources.fetch(str(tmp_path / "nope.csv"))


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("a.csv", b"", "empty"),
        ("a.csv", b"\xff\xfe\x00\x01", "UTF-8"),
        ("a.parquet", b"PAR1....", "unknown format"),
        ("a.csv", b"foo,bar\n1,2\n", "no layout co2cast reads"),
        ("a.csv", b"country;year;co2\nX;2000;1\n", "another delimiter"),
        ("a.csv", b"country,year,gdp\nX,2000,1\n", "none of the variables"),
        ("a.csv", b"country,year,co2\nX,2000,1\nY,20", "truncated"),
    ],
)
def test_unreadable_sources_raise_clear_errors(name: str, data: bytes, message: str) -> None:
    with pytest.raises(sources.SourceError, match=message):
        sources.read_source(data, name)
