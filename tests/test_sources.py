"""Reading releases: paths and URLs, CSV and XLSX, long and wide layouts, clear errors."""

from __future__ import annotations

import codecs
import gzip
import http.server
import io
import json
import os
import struct
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipeline import sources
from tests.conftest import write_xlsx


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
    assert row["value"].item() == raw.loc[raw["country"] == "Canada", "1800"].item()


def test_year_text_is_kept_wherever_it_is_not_written_as_a_year() -> None:
    """``2.014e3`` and ``+2014`` parse as the whole year 2014: their text was dropped, so the gate never saw it."""
    years = ["2014", " 2014 ", "2014.0", "2.014e3", "+2014", "2014.5", "x"]
    staging = sources.to_staging(pd.DataFrame({"country": "A", "year": years, "co2": "1"}))
    assert staging["year_text"].isna().tolist() == [True] * 3 + [False] * 4
    assert staging["year_text"].astype(object).tolist()[3:] == ["2.014e3", "+2014", "2014.5", "x"]
    assert staging["year_text"].cat.codes.dtype == "int8"  # as sparse as before: the few odd texts are its only categories
    suite = json.loads((Path(sources.__file__).parents[1] / "expectations" / "emissions_raw.json").read_text())
    (regex,) = [e["kwargs"]["regex"] for e in suite["expectations"] if e["kwargs"].get("column") == "year_text"]
    assert regex == sources.YEAR_TEXT.pattern  # the staging table keeps exactly the texts the suite refuses


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


def _year_headers(data: bytes, change: Callable[[str], str]) -> bytes:
    """A wide CSV with ``change`` applied to each year's column name."""
    header, _, body = data.partition(b"\n")
    end = b"\r\n" if header.endswith(b"\r") else b"\n"
    names = header.rstrip(b"\r").decode().split(",")
    return ",".join([names[0], *(change(n) for n in names[1:])]).encode() + end + body


def test_wide_year_headers_written_as_whole_floats_are_those_years(gapminder_csv: Path, tmp_path: Path) -> None:
    """``2014.0`` (pandas and Excel exports) is year 2014: every column of it, or only the last, is read, not dropped."""
    data = gapminder_csv.read_bytes()
    expected = sources.read_source(data, "co2.csv")
    for change in (lambda n: f"{n}.0", lambda n: f"{n}.0" if n == "2014" else n, lambda n: f"{n}.00"):
        staging = sources.read_source(_year_headers(data, change), "co2.csv")
        pd.testing.assert_frame_equal(staging, expected)
    raw = pd.read_csv(gapminder_csv).head(5)
    xlsx = write_xlsx(tmp_path / "co2.xlsx", {"data": [[*raw.columns[:-1], "2014.0"], *raw.astype(object).values.tolist()]})
    from_xlsx = sources.read_source(xlsx.read_bytes(), xlsx.name)
    assert from_xlsx["year"].max() == 2014 and len(from_xlsx) == raw.drop(columns=["country"]).notna().sum().sum()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda n: "2014.5" if n == "2014" else n, r"column '2014.5' is not a whole year"),
        (lambda n: "2013.0" if n == "2014" else n, r"column '2013.0' is year 2013 again \(columns 215 and 216\)"),
    ],
    ids=["fractional", "year-twice"],
)
def test_wide_year_headers_that_are_no_year_of_their_own_are_refused(
    gapminder_csv: Path, change: Callable[[str], str], message: str
) -> None:
    with pytest.raises(sources.PermanentSourceError, match=message) as raised:
        sources.read_source(_year_headers(gapminder_csv.read_bytes(), change), "co2.csv")
    assert "\n" not in str(raised.value)


def _allow(*prefixes: str, dirs: tuple[Path, ...] = (), max_bytes: int = sources.DEFAULT_MAX_BYTES) -> sources.SourcePolicy:
    return sources.SourcePolicy(url_prefixes=prefixes, directories=dirs, max_bytes=max_bytes, timeout=10)


def test_fetch_over_http(http_dir: tuple[str, Path], gapminder_csv: Path) -> None:
    url, root = http_dir
    (root / "co2.csv").write_bytes(gapminder_csv.read_bytes())
    fetched = sources.fetch(f"{url}/co2.csv", policy=_allow(f"{url}/"))
    assert fetched.data == gapminder_csv.read_bytes() and fetched.file_name == "co2.csv"


def test_a_token_in_a_source_url_reaches_no_message_and_no_record(http_dir: tuple[str, Path], gapminder_csv: Path) -> None:
    """A signed or token URL works, but what is shown (messages, task logs) and recorded (the vintage's meta) hides the secret."""
    url, root = http_dir
    (root / "co2.csv").write_bytes(gapminder_csv.read_bytes())
    fetched = sources.fetch(f"{url}/co2.csv?token=s3cret&raw=", policy=_allow(f"{url}/"))
    assert fetched.data == gapminder_csv.read_bytes() and fetched.source == f"{url}/co2.csv?token=***&raw=***"
    with pytest.raises(sources.PermanentSourceError, match="404") as missing:
        sources.fetch(f"{url}/missing.csv?token=s3cret", policy=_allow(f"{url}/"))
    with pytest.raises(sources.PermanentSourceError, match="not an allowed source") as with_user:
        sources.fetch("http://someone:s3cret@127.0.0.1:9/co2.csv#s3cret", policy=_allow("http://127.0.0.1:9/"))
    with pytest.raises(sources.PermanentSourceError, match="unsupported source") as ftp:
        sources.fetch("ftp://someone:s3cret@example.org/co2.csv", policy=_allow())
    for raised in (missing, with_user, ftp):
        assert "s3cret" not in str(raised.value) and "***" in str(raised.value), raised.value


def test_unreachable_url_says_to_use_a_local_file() -> None:
    with pytest.raises(sources.TransientSourceError, match="set CO2CAST_SOURCE to a local file") as raised:
        sources.fetch("http://127.0.0.1:9/none.csv", policy=_allow("http://127.0.0.1:9/"))
    assert raised.value.transient


def test_404_is_permanent_and_says_so(http_dir: tuple[str, Path]) -> None:
    url, _ = http_dir
    with pytest.raises(sources.PermanentSourceError, match="404") as raised:
        sources.fetch(f"{url}/missing.csv", policy=_allow(f"{url}/"))
    assert not raised.value.transient and "retrying will not help" in str(raised.value)
    assert isinstance(raised.value, sources.SourceError)


def test_missing_file_is_named_and_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(sources.SourceError, match="does not exist") as raised:
        sources.fetch(str(tmp_path / "nope.csv"), policy=_allow(dirs=(tmp_path,)))
    assert str(raised.value).endswith(
        "does not exist (source '" + str(tmp_path / "nope.csv") + "'): check the path, or give an existing CSV/XLSX file or an http(s) URL"
    ), raised.value
    assert not raised.value.transient


def test_default_policy_allows_owid_the_embedded_file_and_the_working_tree(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pipeline.config import EMBEDDED_SOURCE, OWID_CO2_URL, Settings

    for key in ("CO2CAST_DATA_DIRS", "CO2CAST_ALLOWED_URLS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    policy = sources.SourcePolicy.from_settings(Settings())
    assert sources._url_allowed(OWID_CO2_URL, policy)
    assert not sources._url_allowed("http://127.0.0.1:8080/owid-co2-data.csv", policy)
    assert not sources._url_allowed("https://raw.githubusercontent.com/someone/else/owid.csv", policy)
    assert not sources._url_allowed("https://raw.githubusercontent.com:99999/owid/co2-data/x.csv", policy)
    assert not sources._url_allowed("https://user:pw@raw.githubusercontent.com/owid/co2-data/x.csv", policy)
    assert not sources._url_allowed("https://raw.githubusercontent.com.evil.example/owid/co2-data/x.csv", policy)
    assert sources.fetch(str(EMBEDDED_SOURCE), policy=policy).data == EMBEDDED_SOURCE.read_bytes()
    (tmp_path / "mine.csv").write_bytes(b"country,year,co2\n")
    assert sources.fetch("mine.csv", policy=policy).file_name == "mine.csv"


@pytest.mark.parametrize("path", ["/proc/self/environ", "/proc/self/cmdline", "/dev/zero", "/sys/kernel/mm/transparent_hugepage/enabled"])
def test_system_paths_are_refused_without_reading(path: str) -> None:
    everything = _allow(dirs=(Path("/"),))
    with pytest.raises(sources.PermanentSourceError, match="system path") as raised:
        sources.fetch(path, policy=everything)
    assert "\n" not in str(raised.value)


def test_files_outside_the_data_directories_and_escaping_links_are_refused(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "data", tmp_path / "secret"
    allowed.mkdir()
    outside.mkdir()
    (outside / "token.csv").write_text("country,year,co2\nSECRET-VALUE,2000,1\n")
    (allowed / "link.csv").symlink_to(outside / "token.csv")
    policy = _allow(dirs=(allowed,))
    with pytest.raises(sources.PermanentSourceError, match="outside the allowed data directories") as raised:
        sources.fetch(str(outside / "token.csv"), policy=policy)
    assert "SECRET" not in str(raised.value)
    with pytest.raises(sources.PermanentSourceError, match="is a link to") as raised:
        sources.fetch(str(allowed / "link.csv"), policy=policy)
    assert "SECRET" not in str(raised.value)
    (allowed / ".env").write_text("country,year,co2\nX,2000,1\n")
    with pytest.raises(sources.PermanentSourceError, match="hidden"):
        sources.fetch(str(allowed / ".env"), policy=policy)


def test_file_urls_are_percent_decoded_and_still_confined(tmp_path: Path) -> None:
    """``file:///…/my%20data/owid.csv`` is ``…/my data/owid.csv`` (RFC 8089); the decoded path is resolved, then confined."""
    allowed, outside = tmp_path / "my data", tmp_path / "secret"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "owid.csv").write_bytes(b"country,year,co2\nX,2000,1\n")
    (outside / "token.csv").write_text("country,year,co2\nSECRET-VALUE,2000,1\n")
    (allowed / "my link.csv").symlink_to(outside / "token.csv")
    (allowed / ".env").write_text("country,year,co2\nX,2000,1\n")
    policy = _allow(dirs=(allowed,))
    base = allowed.as_uri()
    assert "%20" in base
    for url in (f"{base}/owid.csv", f"file://localhost{allowed.as_uri().removeprefix('file://')}/owid.csv", f"{base}/owid%2Ecsv"):
        fetched = sources.fetch(url, policy=policy)
        assert fetched.data.startswith(b"country") and fetched.source == str(allowed / "owid.csv"), url
    for url, words in [
        (f"{base}/%2e%2e/secret/token.csv", "outside the allowed data directories"),
        (f"{base}/..%2Fsecret%2Ftoken.csv", "outside the allowed data directories"),
        (f"{base}/my%20link.csv", "is a link to"),
        (f"{base}/%2Eenv", "hidden"),
        ("file:///%70roc/self/environ", "system path"),
        (f"{base}/owid.csv%00.txt", "NUL"),
        (f"file://example.com{allowed.as_uri().removeprefix('file://')}/owid.csv", "local files only"),
    ]:
        with pytest.raises(sources.PermanentSourceError, match=words) as raised:
            sources.fetch(url, policy=policy)
        assert "\n" not in str(raised.value) and "SECRET" not in str(raised.value), url


def test_special_files_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(sources.PermanentSourceError, match="not a regular file"):
        sources.fetch(str(fifo), policy=_allow(dirs=(tmp_path,)))
    with pytest.raises(sources.PermanentSourceError, match="not a regular file"):
        sources.fetch(str(tmp_path), policy=_allow(dirs=(tmp_path,)))


def test_a_file_over_the_cap_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    big.write_bytes(b"country,year,co2\n" + b"X,2000,1\n" * 1000)
    with pytest.raises(sources.PermanentSourceError, match="cap") as raised:
        sources.fetch(str(big), policy=_allow(dirs=(tmp_path,), max_bytes=1000))
    assert "X,2000" not in str(raised.value)


def test_gzip_is_decompressed_within_the_cap(owid_csv: Path) -> None:
    data = gzip.compress(owid_csv.read_bytes())
    assert len(sources.read_source(data, "owid.csv.gz")) > 100_000
    with pytest.raises(sources.PermanentSourceError, match="decompresses to more than"):
        sources.read_source(gzip.compress(b"country,year,co2\n" + b"\n" * 5_000_000), "bomb.csv.gz", max_bytes=1_000_000)


def test_same_content_other_bytes_has_the_same_content_hash(small_owid: Path) -> None:
    data = small_owid.read_bytes()
    variants = [codecs.BOM_UTF8 + data, data.replace(b"\n", b"\r\n"), gzip.compress(data), data.rstrip(b"\n")]
    assert {sources.content_sha256(v) for v in variants} == {sources.content_sha256(data)}
    assert sources.content_sha256(data.replace(b"Canada", b"Kanada")) != sources.content_sha256(data)


def _xlsx(path: Path, sheets: dict[str, list[list[object]]], cells: dict[tuple[int, int], object] | None = None) -> bytes:
    return write_xlsx(path, sheets, cells).read_bytes()


def test_xlsx_formula_without_saved_value_is_refused(tmp_path: Path) -> None:
    data = _xlsx(tmp_path / "f.xlsx", {"data": [["country", "year", "co2", "co2_per_capita"], ["X", 2000, "=1+1", 1.0]]})
    with pytest.raises(sources.PermanentSourceError, match=r"cell C2 .* formula with no saved value"):
        sources.read_source(data, "f.xlsx")


def test_xlsx_data_on_another_sheet_names_the_sheets(tmp_path: Path) -> None:
    data = _xlsx(tmp_path / "s.xlsx", {"Notes": [["About this file"]], "Data": [["country", "year", "co2"], ["X", 2000, 1.0]]})
    with pytest.raises(sources.PermanentSourceError, match="'Notes', 'Data'"):
        sources.read_source(data, "s.xlsx")


def test_xlsx_with_a_hidden_first_sheet_is_refused(tmp_path: Path) -> None:
    """A hidden sheet ahead of the one a person sees (an old copy of the table) is not read silently."""
    import openpyxl

    path = tmp_path / "h.xlsx"
    book = openpyxl.Workbook()
    old = book.active
    old.title = "old"
    for row in [["country", "year", "co2"], ["Canada", 2014, 600.0]]:
        old.append(row)
    old.sheet_state = "hidden"
    shown = book.create_sheet("data")
    for row in [["country", "year", "co2"], ["Canada", 2014, 577.4]]:
        shown.append(row)
    book.active = 1
    book.save(path)
    with pytest.raises(sources.PermanentSourceError, match=r"h\.xlsx: its first sheet 'old' is hidden; .*'old', 'data'"):
        sources.read_source(path.read_bytes(), "h.xlsx")


TABLE = [["country", "year", "co2", "co2_per_capita"], ["Kenya", 2013, 12.1, 0.28], ["Kenya", 2014, 12.6, 0.29]]

# Reads a workbook with the process's address space capped at what it uses after the imports
# plus 1 GiB, and prints the staging table's rows as JSON.
_CAPPED_READ = """
import json, re, resource, sys
from pipeline import sources
import openpyxl
size = int(re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
limit = size + 1024**3
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
frame = sources.read_source(open(sys.argv[1], "rb").read(), "stray.xlsx")
print(json.dumps(frame[["entity", "year", "variable", "value"]].astype(str).values.tolist()))
"""


def test_xlsx_stray_cell_far_from_the_table_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """One value at XFD1048576 (the last cell Excel has) beside a small table.

    openpyxl pads every row to the sheet's extent: read naively, a 5 KB workbook becomes a
    million rows of 16,384 cells (about 128 GB of lists). Read in a child whose address space
    is capped 1 GiB above its size after the imports, the table must come back as without it.
    """
    plain = sources.read_source(_xlsx(tmp_path / "plain.xlsx", {"data": TABLE}), "plain.xlsx")
    stray = write_xlsx(tmp_path / "stray.xlsx", {"data": TABLE}, cells={(1_048_576, 16_384): "x", (40_000, 2): 2014})
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    child = subprocess.run([sys.executable, "-c", _CAPPED_READ, str(stray)], capture_output=True, text=True, env=env, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    expected = plain[["entity", "year", "variable", "value"]].astype(str).values.tolist()
    # The stray year in column B, row 40,000, is a row of its own (no entity), as in a CSV.
    got = json.loads(child.stdout)
    assert [row for row in got if row[0] == "Kenya"] == expected
    assert len(got) >= len(expected)


def test_xlsx_blank_rows_are_skipped_like_blank_csv_lines(tmp_path: Path) -> None:
    rows = [TABLE[0], [None] * 4, TABLE[1], [None, None], TABLE[2], [None] * 4]
    from_xlsx = sources.read_source(_xlsx(tmp_path / "b.xlsx", {"data": rows}), "b.xlsx")
    csv = "\n".join(",".join("" if v is None else str(v) for v in row) for row in rows) + "\n"
    from_csv = sources.read_source(csv.encode(), "b.csv")
    pd.testing.assert_frame_equal(from_xlsx.reset_index(drop=True), from_csv.reset_index(drop=True), check_dtype=False)
    assert len(from_xlsx) == 4


def test_xlsx_without_column_names_in_the_first_row_is_refused(tmp_path: Path) -> None:
    data = _xlsx(tmp_path / "n.xlsx", {"data": [[None, None], *TABLE]})
    with pytest.raises(sources.PermanentSourceError, match=r"first row of the first sheet 'data' is empty; co2cast reads the column names"):
        sources.read_source(data, "n.xlsx")


def test_xlsx_that_unpacks_past_the_cap_is_refused_before_unpacking(tmp_path: Path) -> None:
    """A zip can declare far more than it holds (a decompression bomb): its parts' sizes count."""
    data = _xlsx(tmp_path / "big.xlsx", {"data": TABLE + [["Kenya", 1900 + i, float(i), 0.1] for i in range(100)]})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    assert len(data) < unpacked
    with pytest.raises(sources.PermanentSourceError, match=rf"unpacks to {unpacked:,} bytes, more than the {unpacked - 1:,}-byte cap"):
        sources.read_source(data, "big.xlsx", max_bytes=unpacked - 1)
    assert len(sources.read_source(data, "big.xlsx", max_bytes=unpacked)) == 2 * 102


def _declare_size(data: bytearray, member: str, size: int) -> None:
    """Set a zip member's declared uncompressed size, in its central directory entry and local header."""
    end = bytes(data).rindex(b"PK\x05\x06")
    (count,), (offset,) = struct.unpack_from("<H", data, end + 10), struct.unpack_from("<I", data, end + 16)
    for _ in range(count):
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, offset + 28)
        if bytes(data[offset + 46 : offset + 46 + name_length]).decode() == member:
            struct.pack_into("<I", data, offset + 24, size)
            struct.pack_into("<I", data, struct.unpack_from("<I", data, offset + 42)[0] + 22, size)
        offset += 46 + name_length + extra_length + comment_length


def test_xlsx_part_larger_than_it_declares_is_refused(tmp_path: Path) -> None:
    """A part whose headers understate its size is cut at the declared size and fails its CRC."""
    data = bytearray(_xlsx(tmp_path / "lie.xlsx", {"data": TABLE}))
    _declare_size(data, "xl/worksheets/sheet1.xml", 10)
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        assert archive.getinfo("xl/worksheets/sheet1.xml").file_size == 10
    with pytest.raises(sources.PermanentSourceError, match=r"lie.xlsx is not a readable XLSX workbook \(BadZipFile: Bad CRC-32"):
        sources.read_source(bytes(data), "lie.xlsx")


def _zipped(name: str, data: bytes) -> bytes:
    """A ZIP archive holding one file."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("a.csv", b"", "empty"),
        ("a.csv", b"\xff\xfe\x00\x01", "UTF-8"),
        ("a.parquet", b"PAR1....", "unknown format"),
        ("a.csv", b"foo,bar\n1,2\n", "no layout co2cast reads"),
        ("a.csv", b"country;year;co2\nX;2000;1\n", "another delimiter"),
        ("a.csv", b"country\tyear\tco2\nX\t2000\t1\n", "its header holds tabs, not commas: it is tab-separated"),
        ("a.csv", b"country,year,gdp\nX,2000,1\n", "none of the variables"),
        ("a.csv", b"country,year,co2\nX,2000,1\nY,20", "truncated"),
        ("a.csv", b"country,year,co2,co2\nX,2000,1,2\n", r"column 'co2' appears twice \(columns 3 and 4\)"),
        ("a.csv", b"country,year,co2\nX\x00Y,2000,1\n", "NUL byte"),
        # Zeros after 4 KiB of good text (an interrupted copy) were "probably Windows-1252 or ISO-8859-1 (Latin-1) text".
        (
            "a.csv",
            b"country,year,co2\n" + b"X,2000,1\n" * 1000 + b"\x00" * 64,
            "NUL byte at offset 9,017 [(]a damaged copy padded with zeros",
        ),
        ("a.csv", b'country,year,co2\n"Foo, ""Bar""\nBaz",2000,1\n', "control character U[+]000A"),
        ("a.csv", b"country,year,co2\nFoo\tBar,2000,1\n", "control character U[+]0009"),
        ("a.csv", "country,year,co2\nFoo\u0085Bar,2000,1\n".encode(), "control character U[+]0085"),  # C1 next line
        ("a.csv", "country,year,co2\nFoo\u2028Bar,2000,1\n".encode(), "control character U[+]2028"),  # line separator
        ("a.csv", "country,year,co2\nKenya\u202eaynek,2000,1\n".encode(), "control character U[+]202E"),  # right-to-left override
        ("a.csv", "country,year,co2\nCura\u00e7ao,2000,1\n".encode("cp1252"), "Windows-1252"),
        ("a.csv", "country,year,co2\nX,2000,1\n".encode("utf-16"), "UTF-16"),
        ("a.csv.gz", b"\x1f\x8b\x08\x00garbage", "damaged or truncated gzip"),
        # A download that returned a web page or an API's error, and a zipped CSV, were only "in no layout" / "KeyError".
        (
            "a.csv",
            b"<!DOCTYPE html>\n<html><body>Not found</body></html>\n",
            "HTML or XML page, not a table: the download returned a web page",
        ),
        ("a.csv", b'{"error": "rate limited"}\n', "starts like a JSON document"),
        (
            "a.zip",
            _zipped("owid.csv", b"country,year,co2\nX,2000,1\n"),
            r"ZIP archive, not an XLSX workbook \(it holds 'owid.csv'\): unzip it",
        ),
    ],
)
def test_unreadable_sources_raise_clear_errors(name: str, data: bytes, message: str) -> None:
    with pytest.raises(sources.PermanentSourceError, match=message) as raised:
        sources.read_source(data, name)
    assert "\n" not in str(raised.value) and len(str(raised.value)) < 400


@pytest.mark.parametrize("last", [b"0.", b"7.1e"])
def test_a_wide_file_cut_inside_its_last_number_is_refused(gapminder_csv: Path, last: bytes) -> None:
    """Gapminder's file has no final line end, so its last line is whole however short: "0.78" cut to "0." was read as 0."""
    data = gapminder_csv.read_bytes()
    assert not data.endswith(b"\n") and data.endswith(b",0.776,0.78")  # the release as Gapminder writes it
    sources.read_source(data, "co2.csv")  # read whole
    cut = data.removesuffix(b"0.78") + last  # "0.78" cut after its point; "7.1e-05" cut in its exponent
    with pytest.raises(sources.PermanentSourceError, match=r"co2\.csv looks truncated: its last line has .* stops inside a number"):
        sources.read_source(cut, "co2.csv")


@pytest.mark.parametrize(
    ("field", "cut"),
    [
        ("0.", True),
        ("12.", True),
        ("1e", True),
        ("2.5E-", True),
        ("-3.", True),
        ("0.7", False),
        ("12", False),
        ("1e-5", False),
        ("", False),
        ("Canada", False),
        ("1.e5", False),
        ("-", True),
        ("+", True),
        (".", True),
        ("-.", True),
    ],
)
def test_cut_number(field: str, cut: bool) -> None:
    assert sources._cut_number(field) is cut


def test_accepted_variants_give_the_same_table(small_owid: Path) -> None:
    data = small_owid.read_bytes()
    expected = sources.read_source(data, "a.csv")
    for variant in (codecs.BOM_UTF8 + data, data.replace(b"\n", b"\r\n"), gzip.compress(data)):
        pd.testing.assert_frame_equal(sources.read_source(variant, "a.csv"), expected)


def test_column_names_in_messages_are_capped_and_sanitised() -> None:
    secret = "AWS_SECRET=" + "x" * 500
    with pytest.raises(sources.PermanentSourceError) as raised:
        sources.read_source(f"{secret}\n1\n".encode(), "environ.csv")
    assert len(str(raised.value)) < 400 and "x" * 100 not in str(raised.value)


def test_the_header_is_the_first_csv_record_not_the_first_line() -> None:
    """A quoted name with a line break does not end the header: the names after it are checked too."""
    body = b'"iso\ncode",country,year,co2,co2\nCAN,Canada,2014,1,1\n'
    assert sources._csv_header(body, "x.csv") == ["iso\ncode", "country", "year", "co2", "co2"]
    with pytest.raises(sources.PermanentSourceError, match="control character"):
        sources.read_source(body, "x.csv")
