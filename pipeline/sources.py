"""Read a release of the emissions data from a path or URL into one tidy table.

Two layouts are understood, in CSV or XLSX:

* OWID's long format: ``country, year, <variable columns>`` (``iso_code`` optional);
* Gapminder's wide format: one row per country, one column per year, one variable. A year's
  column may be headed ``2014.0`` (how pandas and Excel export a number); ``2014.5``, or one
  year headed twice (``2014`` and ``2014.0``), is refused.

Both become a *staging* table, one row per (entity, year, variable), that keeps the source's
text next to the parsed numbers so that the Great Expectations gate can point at a row whose
text is not a number instead of silently turning it into a missing value.

Fetching is bounded and confined (:class:`SourcePolicy`): only allowed URL prefixes and data
directories, no system or special files, a size cap enforced while streaming, and one overall
deadline for a download. Parsing is strict: anything ambiguous (duplicate columns, control
characters in names, formulas without saved values, another encoding than UTF-8, data on
another sheet than the first, an XLSX whose first row has no names) is a one-line error. What
is accepted on purpose: a UTF-8 byte order mark, CRLF line ends, gzip compression (``.csv.gz``,
decompressed within the same cap), blank rows. An XLSX file must unpack within the same cap,
and its rows are read only as wide as its header (a stray cell far from the table costs
nothing).

No message ever quotes the file's content beyond short, sanitised names (:func:`clean`).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import gzip
import hashlib
import io
import os
import re
import stat
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from pipeline.errors import Co2castError, PermanentError, TransientError
from pipeline.redact import redact_url

#: The OWID variables kept in the curated table (emissions in Mt CO2, per capita in t/person).
OWID_VARIABLES: tuple[str, ...] = (
    "co2",
    "co2_per_capita",
    "coal_co2",
    "oil_co2",
    "gas_co2",
    "cement_co2",
    "flaring_co2",
    "population",
)
#: The variables the default series need; a long-format release without them is rejected.
REQUIRED_LONG_VARIABLES: tuple[str, ...] = ("co2", "co2_per_capita")
#: Gapminder's wide CO2 file is tonnes per person.
WIDE_VARIABLE = "co2_per_capita"

ENTITY_COLUMNS = ("country", "entity", "geo", "name")
#: A wide file's year column, as written: ``2014``, or ``2014.0`` as pandas and Excel export a
#: number (a fraction, ``2014.5``, is read to be refused by name, not dropped).
YEAR_COLUMN = re.compile(r"^\d{4}(?:\.\d+)?$")
WHOLE_YEAR_COLUMN = re.compile(r"^(\d{4})(?:\.0+)?$")
#: A year cell as the ``emissions_raw`` suite's ``year_text`` expectation accepts it (ASCII only);
#: the staging table keeps the text of every other year cell for the suite to refuse.
YEAR_TEXT = re.compile(r"^[ \t]*[0-9]{4}(?:\.0+)?[ \t]*$")
STAGING_COLUMNS = ["entity", "iso_code", "year_text", "year", "variable", "value_text", "value"]
XLSX_MAGIC = b"PK\x03\x04"
GZIP_MAGIC = b"\x1f\x8b"
#: Default cap on a release's size, fetched and decompressed (CO2CAST_MAX_SOURCE_BYTES).
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
#: Paths never read as a source, whatever the allowed directories say.
SYSTEM_DIRS = (Path("/proc"), Path("/sys"), Path("/dev"))
CHUNK = 1 << 20
#: Rows of a CSV parsed at a time (bounded memory for large releases).
CSV_CHUNK_ROWS = 100_000
#: A CSV header longer than this is not a header (a one-line body, a binary file).
MAX_HEADER_BYTES = 1 << 20
#: Characters no name holds and no message repeats: ASCII and C1 control characters (NUL, tab,
#: line breaks, U+0085), Unicode's line and paragraph separators, and the bidirectional marks and
#: overrides (U+202E turns the rest of a line around on screen).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class SourceError(Co2castError, ValueError):
    """A source cannot be fetched or read; the message says what to do.

    ``transient`` is true for network failures, which a retry may cure; a missing file or a
    malformed one will fail the same way again. Raise :class:`PermanentSourceError` or
    :class:`TransientSourceError`; ``SourceError(message, transient=True)`` still works.
    """

    def __init__(self, message: str, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class PermanentSourceError(SourceError, PermanentError):
    """The source is refused or unreadable; a person has to change it or the settings."""


class TransientSourceError(SourceError, TransientError):
    """The source could not be fetched this time (network, 5xx, deadline); retry later."""


def clean(text: object, limit: int = 60) -> str:
    """Text derived from input, safe to put in a message: printable, one line, capped."""
    value = CONTROL.sub("?", str(text))
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass(frozen=True)
class SourcePolicy:
    """Where sources may come from and how much of them is read.

    Attributes:
        url_prefixes: an http(s) source must start with one of these.
        directories: a file source must resolve (symlinks followed) to a regular file inside
            one of these; the embedded data directory is always allowed.
        max_bytes: the largest release read, fetched or decompressed.
        timeout: seconds for a whole download (connect, headers and body), not per read.
    """

    url_prefixes: tuple[str, ...] = ()
    directories: tuple[Path, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout: float = 60.0

    @classmethod
    def from_settings(cls, settings: Any) -> SourcePolicy:
        """The policy the settings describe (``allowed_urls``, ``data_dirs``, caps)."""
        from pipeline.config import EMBEDDED_SOURCE

        urls = tuple(u.strip() for u in settings.allowed_urls.split(",") if u.strip())
        dirs = [EMBEDDED_SOURCE.parent, *(Path(d.strip()).expanduser() for d in settings.data_dirs.split(",") if d.strip())]
        return cls(url_prefixes=urls, directories=tuple(dirs), max_bytes=settings.max_source_bytes, timeout=settings.fetch_timeout)


@dataclass(frozen=True)
class Fetched:
    """Bytes of one release as fetched, with where they came from (a URL :func:`~pipeline.redact.redact_url`)."""

    data: bytes
    file_name: str
    source: str


def fetch(source: str, timeout: float | None = None, policy: SourcePolicy | None = None) -> Fetched:
    """Fetch a release from an allowed local path or HTTP(S) URL, bounded in size and time.

    Args:
        source: a file path (``file://`` URLs work too, percent-decoded) or an ``http(s)://`` URL.
        timeout: seconds for the whole download; overrides the policy's.
        policy: where sources may come from; by default built from the current settings.

    Returns:
        The bytes and the file name to keep them under.

    Raises:
        PermanentSourceError: the source is not allowed, missing, not a regular file, too big,
            or the server answered 4xx.
        TransientSourceError: the server is unreachable, answered 5xx, was too slow, or cut
            the body short.
    """
    # Spaces around a pasted path or URL (the DAG's source param, CO2CAST_SOURCE, --source): urllib drops them,
    # but the file name kept them and the release was quarantined as of an unknown format '.csv '.
    source = source.strip()
    if not source:
        raise PermanentSourceError("the source is empty: give a file path or an http(s) URL")
    if policy is None:
        from pipeline.config import get_settings

        policy = SourcePolicy.from_settings(get_settings())
    if timeout is not None:
        policy = SourcePolicy(policy.url_prefixes, policy.directories, policy.max_bytes, timeout)
    parsed = urlparse(source)
    if parsed.scheme in ("http", "https"):
        return _fetch_url(source, policy)
    if parsed.scheme not in ("", "file"):
        raise PermanentSourceError(f"unsupported source {clean(redact_url(source), 120)!r}: give a file path or an http(s):// URL")
    path = _file_url_path(source) if parsed.scheme == "file" else Path(source).expanduser()
    return _fetch_file(path, source, policy)


def _file_url_path(url: str) -> Path:
    """The local path a ``file:`` URL names (RFC 8089): its path percent-decoded, as ``url2pathname`` does.

    ``file:///tmp/my%20data/owid.csv`` is ``/tmp/my data/owid.csv``. Only the decoded path is
    checked afterwards (:func:`_fetch_file` resolves it, then confines it to the data
    directories), so an encoded ``%2e%2e`` or ``%2f`` is no way around the checks. A host other
    than ``localhost`` names a file on another machine, which co2cast does not read.
    """
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise PermanentSourceError(
            f"source {clean(redact_url(url), 160)} names the host {clean(parsed.hostname or '?', 60)!r}: co2cast reads local files only "
            "(file:///path, or a plain path)"
        )
    return Path(unquote(parsed.path))


# -- files -----------------------------------------------------------------------------------


def _within(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _fetch_file(path: Path, source: str, policy: SourcePolicy) -> Fetched:
    absolute = path if path.is_absolute() else Path.cwd() / path
    shown = clean(absolute, 160)
    if "\x00" in str(absolute):  # from a file URL's %00; no file name holds one
        raise PermanentSourceError(f"source {shown} has a NUL character in its path: no file has that name; check the source")
    if any(_within(Path(os.path.normpath(absolute)), d) for d in SYSTEM_DIRS):
        raise PermanentSourceError(f"source {shown} is a system path (/proc, /sys, /dev): co2cast reads release files only")
    try:
        resolved = absolute.resolve(strict=True)
    except FileNotFoundError:
        raise PermanentSourceError(
            f"source file {shown} does not exist (source {clean(source, 160)!r}): check the path, or give an existing CSV/XLSX file "
            "or an http(s) URL"
        ) from None
    except RuntimeError as error:  # Python 3.11's "Symlink loop" (later versions raise OSError ELOOP)
        raise PermanentSourceError(f"cannot read source file {shown}: its symbolic links form a loop; point it at a file") from error
    except OSError as error:
        raise PermanentSourceError(f"cannot read source file {shown}: {clean(error.strerror or error, 80)}") from error
    if any(_within(resolved, d) for d in SYSTEM_DIRS):
        raise PermanentSourceError(f"source {shown} leads to {clean(resolved, 120)}, a system path: co2cast reads release files only")
    allowed = [d.resolve() for d in policy.directories]
    home = next((d for d in allowed if _within(resolved, d)), None)
    if home is None:
        where = ", ".join(clean(d, 80) for d in allowed)
        link = f" (it is a link to {clean(resolved, 120)})" if resolved != Path(os.path.normpath(absolute)) else ""
        raise PermanentSourceError(
            f"source file {shown}{link} is outside the allowed data directories ({where}): "
            "move it there or add its directory to CO2CAST_DATA_DIRS"
        )
    if any(part.startswith(".") for part in resolved.relative_to(home).parts):
        raise PermanentSourceError(f"source {shown} is a hidden file or in a hidden directory: co2cast does not read those as releases")
    try:
        info = os.stat(resolved)
        if not stat.S_ISREG(info.st_mode):
            raise PermanentSourceError(f"source {shown} is not a regular file (a directory, device, FIFO or socket)")
        if info.st_size > policy.max_bytes:
            raise PermanentSourceError(_too_big(shown, f"{info.st_size:,} bytes", policy.max_bytes))
        # O_NONBLOCK: a FIFO swapped in after the check must not block the open.
        fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise PermanentSourceError(f"source {shown} is not a regular file")
            data = handle.read(policy.max_bytes + 1)
    except PermanentSourceError:
        raise
    except OSError as error:
        raise PermanentSourceError(f"cannot read source file {shown}: {clean(error.strerror or error, 80)}") from error
    if len(data) > policy.max_bytes:
        raise PermanentSourceError(_too_big(shown, None, policy.max_bytes))
    return Fetched(data, resolved.name, str(resolved))


def _too_big(shown: str, size: str | None, cap: int) -> str:
    amount = f"{size}, more" if size else "more"
    return f"source {shown} is {amount} than the {cap:,}-byte cap (CO2CAST_MAX_SOURCE_BYTES); raise the cap if the release is genuine"


# -- HTTP ------------------------------------------------------------------------------------


def _dot_segments(path: str) -> bool:
    """Whether a URL path has a ``.`` or ``..`` segment, raw or percent-encoded (``%2e%2e``, ``..%2f``).

    The server resolves them, so ``<allowed prefix>/../secret`` would leave the prefix: such a
    URL is refused rather than normalised (servers differ in what they resolve). Decoded until
    stable, ``\\`` taken as a separator too, ``;params`` ignored.
    """
    decoded, previous = path, None
    while decoded != previous:
        decoded, previous = unquote(decoded), decoded
    return any(segment.split(";")[0] in (".", "..") for segment in re.split(r"[/\\]", decoded))


def _url_allowed(url: str, policy: SourcePolicy) -> bool:
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError:  # a malformed host or port
        return False
    if parsed.scheme not in ("http", "https") or parsed.username or parsed.password or _dot_segments(parsed.path):
        return False
    normal = f"{parsed.scheme}://{(parsed.hostname or '').lower()}{f':{port}' if port else ''}{parsed.path}"
    return any(normal.startswith(prefix) for prefix in policy.url_prefixes)


def _refuse_url(url: str, policy: SourcePolicy, what: str = "source URL") -> PermanentSourceError:
    try:
        dots = _dot_segments(urlparse(url).path)
    except ValueError:
        dots = False
    if dots:
        return PermanentSourceError(
            f"{what} {clean(redact_url(url), 160)} is not an allowed source: its path has a '.' or '..' segment "
            "(raw or percent-encoded), which could leave the allowed prefix; give the URL without them"
        )
    allowed = ", ".join(clean(p, 80) for p in policy.url_prefixes) or "none"
    return PermanentSourceError(
        f"{what} {clean(redact_url(url), 160)} is not an allowed source (allowed URL prefixes: {allowed}); "
        "add its prefix to CO2CAST_ALLOWED_URLS to allow it"
    )


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an allowed URL: a redirect must not reach an internal host."""

    def __init__(self, policy: SourcePolicy) -> None:
        self.policy = policy

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # urllib's signature
        if not _url_allowed(newurl, self.policy):
            raise _refuse_url(newurl, self.policy, what=f"{clean(redact_url(req.full_url), 120)} redirects to")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch_url(source: str, policy: SourcePolicy) -> Fetched:
    if not _url_allowed(source, policy):
        raise _refuse_url(source, policy)
    shown = clean(redact_url(source), 160)
    name = Path(urlparse(source).path).name or "source.csv"
    deadline = time.monotonic() + policy.timeout
    opener = urllib.request.build_opener(_CheckedRedirects(policy))
    request = urllib.request.Request(source, headers={"User-Agent": "co2cast", "Accept-Encoding": "identity"})  # noqa: S310 (scheme checked)
    try:
        with opener.open(request, timeout=policy.timeout) as response:
            data = _read_body(response, shown, policy, deadline)
    except SourceError:
        raise
    except urllib.error.HTTPError as error:
        raise _status_error(shown, error.code, error.reason) from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, SourceError):  # raised inside the redirect handler
            raise reason from None
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise _deadline_error(shown, policy) from None
        raise TransientSourceError(
            f"cannot download {shown}: {clean(reason, 100)}. Without network access, set CO2CAST_SOURCE "
            "to a local file (a path to a CSV or XLSX release)."
        ) from None
    return Fetched(data, name, redact_url(source))  # recorded in the vintage's metadata: no token


def _status_error(shown: str, code: int, reason: object) -> SourceError:
    text = f"{code} {clean(reason, 40)}".strip()
    if 400 <= code < 500 and code not in (408, 425, 429):
        return PermanentSourceError(f"{shown} answered HTTP {text}: check the URL (CO2CAST_SOURCE); retrying will not help")
    return TransientSourceError(f"{shown} answered HTTP {text}: the server has a problem; try again later")


def _deadline_error(shown: str, policy: SourcePolicy) -> TransientSourceError:
    return TransientSourceError(
        f"downloading {shown} took longer than {policy.timeout:g} s (CO2CAST_FETCH_TIMEOUT, the whole download); try again later"
    )


def _read_body(response: Any, shown: str, policy: SourcePolicy, deadline: float) -> bytes:
    """The body in chunks: refused past the cap, abandoned at the deadline, checked for length."""
    declared = response.headers.get("Content-Length")
    expected = int(declared) if declared and declared.strip().isdigit() else None
    if expected is not None and expected > policy.max_bytes:
        raise PermanentSourceError(_too_big(shown, f"{expected:,} bytes (Content-Length)", policy.max_bytes))
    sock = getattr(getattr(response.fp, "raw", None), "_sock", None)
    parts: list[bytes] = []
    total = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _deadline_error(shown, policy)
        if sock is not None:
            sock.settimeout(remaining)  # each read waits at most until the overall deadline
        try:
            chunk = response.read1(CHUNK)
        except (TimeoutError, OSError) as error:
            if isinstance(error, TimeoutError) or "timed out" in str(error):
                raise _deadline_error(shown, policy) from None
            raise TransientSourceError(f"the connection to {shown} broke after {total:,} bytes: {clean(error, 80)}; try again") from None
        except Exception as error:  # http.client.IncompleteRead and friends from a chunked body
            what = type(error).__name__
            raise TransientSourceError(f"the body from {shown} ended early after {total:,} bytes ({what}); try again") from None
        if not chunk:
            break
        total += len(chunk)
        if total > policy.max_bytes:
            raise PermanentSourceError(_too_big(shown, None, policy.max_bytes))
        parts.append(chunk)
    if expected is not None and total < expected:
        raise TransientSourceError(
            f"the body from {shown} ended after {total:,} of {expected:,} bytes (connection closed early); try again"
        )
    return b"".join(parts)


# -- parsing ---------------------------------------------------------------------------------


def read_raw(data: bytes, file_name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> pd.DataFrame:
    """Parse a CSV or XLSX release into a table of strings, as the source wrote them.

    Only the columns co2cast reads are kept (entity, year, ``iso_code``, the OWID variables
    or the year columns of a wide file); ``frame.attrs["header"]`` has every column name.

    Raises:
        PermanentSourceError: empty, truncated, not UTF-8 text, not a table, an unknown format,
            or ambiguous (see the module docstring).
    """
    if data.startswith(GZIP_MAGIC):
        data, file_name = _gunzip(data, file_name, max_bytes)
    if not data.strip():
        raise PermanentSourceError(f"{file_name} is empty: the release has no data")
    suffix = Path(file_name).suffix.lower()
    if data.startswith(XLSX_MAGIC) or suffix in (".xlsx", ".xlsm"):
        return _read_xlsx(data, file_name, max_bytes)
    if suffix not in ("", ".csv", ".txt"):
        raise PermanentSourceError(f"{file_name}: unknown format {clean(suffix, 20)!r}; co2cast reads CSV and XLSX files")
    return _read_csv(data, file_name)


def _gunzip(data: bytes, file_name: str, max_bytes: int) -> tuple[bytes, str]:
    """A gzip-compressed release (``.csv.gz``): its content within the cap, and its name without ``.gz``."""
    parts: list[bytes] = []
    total = 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while chunk := stream.read(CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise PermanentSourceError(
                        f"{file_name} decompresses to more than the {max_bytes:,}-byte cap (CO2CAST_MAX_SOURCE_BYTES); "
                        "raise the cap if the release is genuine"
                    )
                parts.append(chunk)
    except (OSError, EOFError, zlib.error) as error:
        what = clean(error, 80)
        raise PermanentSourceError(f"{file_name} is a damaged or truncated gzip file ({what}); fetch the release again") from error
    name = file_name[: -len(".gz")] if file_name.lower().endswith(".gz") else file_name
    return b"".join(parts), name


def _wanted(column: str) -> bool:
    """A column co2cast reads from either layout."""
    name = column.strip()
    lower = name.lower()
    return lower in ENTITY_COLUMNS or lower in ("year", "iso_code") or name in OWID_VARIABLES or bool(YEAR_COLUMN.match(name))


def _check_header(header: list[str], file_name: str) -> None:
    names = [h.strip() for h in header]
    for name in names:
        if CONTROL.search(name):
            raise PermanentSourceError(f"{file_name}: a column name contains a control character ({clean(name, 40)!r}); fix the header")
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        year = WHOLE_YEAR_COLUMN.match(name)
        key = year.group(1) if year else name.lower()  # 2014 and 2014.0 are one year
        if key and key in seen:
            again = f"is year {key} again" if year and names[seen[key] - 1] != name else "appears twice"
            raise PermanentSourceError(
                f"{file_name}: column {clean(name, 40)!r} {again} (columns {seen[key]} and {position}); remove the duplicate"
            )
        seen.setdefault(key, position)


def _read_xlsx(data: bytes, file_name: str, max_bytes: int) -> pd.DataFrame:
    """The first sheet of a workbook: the column names from its first row, then every row that is not blank.

    Rows are read only as wide as the header's last named column, and blank rows are skipped as
    pandas skips blank CSV lines: openpyxl pads every row to the sheet's extent, and one stray
    cell (a value or some formatting at ``XFD1048576``) would otherwise make a few kilobytes a
    million rows of 16,384 cells.
    """
    import openpyxl

    _check_xlsx_size(data, file_name, max_bytes)
    try:
        values_book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        formula_book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=False)
        sheets = list(values_book.sheetnames)
        if not sheets:
            raise PermanentSourceError(f"{file_name} has no sheet")
        values_sheet, formula_sheet = values_book[sheets[0]], formula_book[sheets[0]]
        if getattr(values_sheet, "sheet_state", "visible") != "visible":  # what a person opening it does not see
            raise PermanentSourceError(
                f"{file_name}: its first sheet {clean(sheets[0], 40)!r} is hidden{_other_sheets(sheets)}, or unhide it if it is the data"
            )
        first = next(values_sheet.iter_rows(min_row=1, max_row=1, values_only=True), ())
        width = max((column for column, value in enumerate(first, start=1) if (_cell_text(value) or "").strip()), default=0)
        if width == 0:
            raise PermanentSourceError(
                f"{file_name}: the first row of the first sheet {clean(sheets[0], 40)!r} is empty; "
                f"co2cast reads the column names from it{_other_sheets(sheets)}"
            )
        rows: list[list[Any]] = [list(first[:width])]
        pairs = zip(
            values_sheet.iter_rows(min_row=2, max_col=width, values_only=True),
            formula_sheet.iter_rows(min_row=2, max_col=width, values_only=True),
            strict=False,
        )
        for number, (values, formulas) in enumerate(pairs, start=2):
            if values.count(None) == len(values) and formulas.count(None) == len(formulas):
                continue  # a blank row
            for column, (value, formula) in enumerate(zip(values, formulas, strict=False), start=1):
                if value is None and isinstance(formula, str) and formula.startswith("="):
                    cell = f"{openpyxl.utils.get_column_letter(column)}{number}"
                    raise PermanentSourceError(
                        f"{file_name}: cell {cell} of sheet {clean(sheets[0], 40)!r} is a formula with no saved value; "
                        "open the workbook in a spreadsheet program and save it so the values are stored"
                    )
            rows.append(list(values))
        values_book.close()
        formula_book.close()
    except SourceError:
        raise
    except Exception as error:  # openpyxl raises many types for a damaged workbook
        raise PermanentSourceError(f"{file_name} is not a readable XLSX workbook ({type(error).__name__}: {clean(error, 80)})") from error
    # Excel turns year headers into numbers: give them back their text.
    header = [_cell_text(c) or "" for c in rows[0]]
    _check_header(header, file_name)
    frame = pd.DataFrame([[_cell_text(v) for v in row] for row in rows[1:]], columns=[h.strip() for h in header], dtype=object)
    frame = frame[[c for c in frame.columns if _wanted(c)]]
    frame.attrs["header"] = [h.strip() for h in header]
    frame.attrs["sheets"] = sheets
    return frame


def _other_sheets(sheets: list[str]) -> str:
    if len(sheets) < 2:
        return ""
    names = ", ".join(repr(clean(s, 30)) for s in sheets)
    return f"; co2cast reads the first sheet only, and the workbook has sheets {names}: move the data to the first sheet"


def _check_xlsx_size(data: bytes, file_name: str, max_bytes: int) -> None:
    """Refuse a workbook whose parts unpack to more than the source cap, before anything is unpacked.

    An XLSX file is a zip archive: a few megabytes can declare gigabytes of sheet XML. Python's
    zip reader stops at each part's declared size (and fails the CRC past it), so checking the
    declared sizes bounds what openpyxl can unpack.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise PermanentSourceError(f"{file_name} is not a readable XLSX workbook ({type(error).__name__}: {clean(error, 80)})") from error
    unpacked = sum(info.file_size for info in members)
    if not any(info.filename == "[Content_Types].xml" for info in members):
        names = ", ".join(repr(clean(info.filename, 40)) for info in members[:3]) + (" …" if len(members) > 3 else "")
        raise PermanentSourceError(
            f"{file_name} is a ZIP archive, not an XLSX workbook (it holds {names or 'nothing'}): "
            "unzip it and give co2cast the CSV or XLSX file"
        )
    if unpacked > max_bytes:
        raise PermanentSourceError(
            f"{file_name} unpacks to {unpacked:,} bytes, more than the {max_bytes:,}-byte cap (CO2CAST_MAX_SOURCE_BYTES); "
            "raise the cap if the release is genuine"
        )


def _cell_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def _guess_encoding(data: bytes) -> str:
    """Name the encoding of text that is not UTF-8, when it can be told."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "UTF-32 text (byte order mark)"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "UTF-16 text (byte order mark)"
    head = data[:4096]
    if head and head.count(0) * 3 > len(head):
        odd, even = head[1::2], head[0::2]
        if odd.count(0) * 2 > len(odd) or even.count(0) * 2 > len(even):
            return "UTF-16 text (every other byte is zero)"
        return "binary data"
    if 0 in head:
        return "binary data (it contains NUL bytes)"
    try:
        data[:CHUNK].decode("cp1252")
    except UnicodeDecodeError:
        return "neither UTF-8 nor a single-byte text encoding (binary data?)"
    return "probably Windows-1252 or ISO-8859-1 (Latin-1) text"


def _check_utf8(data: bytes, file_name: str) -> None:
    """UTF-8 without NUL bytes, checked in chunks (no decoded copy of a large file is kept)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for start in range(0, len(data), CHUNK):
            decoder.decode(data[start : start + CHUNK], final=start + CHUNK >= len(data))
    except UnicodeDecodeError as error:
        raise PermanentSourceError(f"{file_name} is not UTF-8 text: it is {_guess_encoding(data)}; save it as UTF-8 CSV") from error
    nul = data.find(b"\x00")
    if nul >= 0:
        guess = _guess_encoding(data)
        if guess.startswith("UTF-"):
            raise PermanentSourceError(f"{file_name} is not UTF-8 text: it is {guess} (NUL byte at offset {nul:,}); save it as UTF-8 CSV")
        # UTF-8 text apart from NULs: a copy padded with zeros (an interrupted write), or no text file at all.
        raise PermanentSourceError(
            f"{file_name} is not a text file as it stands: it holds a NUL byte at offset {nul:,} "
            "(a damaged copy padded with zeros, or binary data); fetch or export it again"
        )


def _read_csv(data: bytes, file_name: str) -> pd.DataFrame:
    chunks = list(_csv_chunks(data, file_name))
    frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    frame.attrs = dict(chunks[0].attrs)
    return frame


def _csv_chunks(data: bytes, file_name: str, rows: int = CSV_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The CSV in chunks of ``rows`` rows, as text, after the checks on the whole file.

    Streaming keeps only one chunk's Python strings alive at a time: a 200 MB release is read
    in bounded memory (see ``benchmarks/bench_ingest_memory.py``).
    """
    _check_utf8(data, file_name)
    # BytesIO shares a bytes object's buffer until written to: no copy of the release.
    body = data[len(codecs.BOM_UTF8) :] if data.startswith(codecs.BOM_UTF8) else data
    first_end = body.find(b"\n", 0, MAX_HEADER_BYTES + 1)
    first_cr = body.find(b"\r", 0, MAX_HEADER_BYTES + 1 if first_end < 0 else first_end)
    if first_cr >= 0 and first_cr + 1 != first_end:
        raise PermanentSourceError(_bare_cr(file_name))
    if first_end < 0 and len(body) > MAX_HEADER_BYTES:
        raise PermanentSourceError(f"{file_name}: its first line is longer than {MAX_HEADER_BYTES:,} bytes; that is not a CSV header")
    header = _csv_header(body, file_name)
    _check_delimiter(header, file_name)
    _check_header(header, file_name)
    # A download cut off mid-row ends without a newline and with a short last row; pandas
    # would fill the missing fields with NaN and hide it.
    if first_end >= 0 and not data.endswith((b"\n", b"\r")):
        last = data[data.rfind(b"\n") + 1 :].decode("utf-8")
        if "\r" in last:
            raise PermanentSourceError(_bare_cr(file_name))
        fields = _csv_line(last, file_name, "its last line")
        # A last line that stops right after a separator, or inside a number ("0." of "0.78", "1e"
        # of "1e-05"), with no line end, was cut there too. A cut between two digits ("0.7" of
        # "0.78") cannot be told from a release written without a final line end (Gapminder's).
        cut = "after a separator" if last.endswith(",") else "inside a number" if _cut_number(fields[-1]) else None
        if len(fields) < len(header) or cut:
            raise PermanentSourceError(
                f"{file_name} looks truncated: its last line has {len(fields)} of {len(header)} fields"
                f"{f', stops {cut}' if cut and len(fields) >= len(header) else ''} and has no line end. Fetch the release again."
            )
    try:
        reader = pd.read_csv(
            io.BytesIO(body),
            encoding="utf-8",
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            usecols=lambda c: _wanted(str(c)),
            chunksize=rows,
        )
        with reader:
            produced = False
            for chunk in reader:
                chunk.columns = [str(c).strip() for c in chunk.columns]
                chunk.attrs["header"] = [h.strip() for h in header]
                produced = True
                yield chunk
            if not produced:
                empty = pd.DataFrame(columns=[h.strip() for h in header if _wanted(h)], dtype=object)
                empty.attrs["header"] = [h.strip() for h in header]
                yield empty
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        raise PermanentSourceError(f"{file_name} is not a readable CSV table: {clean(error, 120)}") from error


def _cut_number(field: str) -> bool:
    """Whether a field is a number cut short: ``0.``, ``1e``, ``2e-``, or a sign or point alone (``-``, ``.``)."""
    text = field.strip()
    return text != "" and re.fullmatch(r"[+-]?(\d+\.|\d*\.?\d+[eE][+-]?|\.?)", text) is not None


def _csv_header(body: bytes, file_name: str) -> list[str]:
    """The column names: the first CSV record, not the first line.

    A quoted name may hold a line break (refused by :func:`_check_header` as a control
    character), and the names after it are checked too (a duplicate among them).
    """
    head = body[:MAX_HEADER_BYTES].decode("utf-8", errors="replace")
    try:
        return next(csv.reader(io.StringIO(head, newline="")), [])
    except csv.Error as error:  # a field over csv.field_size_limit()
        raise PermanentSourceError(f"{file_name}: its header is not a readable CSV line ({clean(error, 80)}); fix the file") from error


def _check_delimiter(header: list[str], file_name: str) -> None:
    """Refuse a tab-separated file: its header is one name full of tabs, not a control character in a name.

    A TSV saved as ``.csv`` (a spreadsheet's "tab-delimited text") reads as one column whose
    name holds every tab; :func:`_check_header` would call that a control character, which
    sends a person looking for a stray character instead of at the export.
    """
    tabs = sum(name.count("\t") for name in header)
    if tabs and tabs >= len(header):  # more tabs than the commas that split the header
        raise PermanentSourceError(
            f"{file_name}: its header holds tabs, not commas: it is tab-separated (TSV); co2cast reads comma-separated files, "
            "re-export it as CSV"
        )


def _bare_cr(file_name: str) -> str:
    return f"{file_name} ends lines with a bare carriage return (CR, old Mac style); save it with LF or CRLF line ends"


def _csv_line(line: str, file_name: str, what: str) -> list[str]:
    """The fields of one CSV line; a line Python's reader refuses is a one-line error."""
    try:
        return next(csv.reader([line]), [])
    except csv.Error as error:  # a field over csv.field_size_limit(), a stray line break
        raise PermanentSourceError(f"{file_name}: {what} is not a readable CSV line ({clean(error, 80)}); fix the file") from error


def to_staging(raw: pd.DataFrame, file_name: str = "source") -> pd.DataFrame:
    """Turn a raw table (long or wide) into the staging table ``STAGING_COLUMNS``.

    Raises:
        PermanentSourceError: the layout is neither OWID's long nor Gapminder's wide format,
            required columns are missing, or an entity name holds a control character.
    """
    columns = list(raw.columns)
    lower = {c.lower(): c for c in columns}
    entity_col = next((lower[c] for c in ENTITY_COLUMNS if c in lower), None)
    year_cols = [c for c in columns if YEAR_COLUMN.match(c)]
    header = raw.attrs.get("header", columns)
    if entity_col is not None and "year" in lower:
        _check_entities(raw[entity_col], file_name)
        staging = _long_to_staging(raw, entity_col, lower["year"], lower.get("iso_code"), file_name, header)
    elif entity_col is not None and len(year_cols) >= 2:
        fractional = [c for c in year_cols if not WHOLE_YEAR_COLUMN.match(c)]
        if fractional:
            raise PermanentSourceError(
                f"{file_name}: column {clean(fractional[0], 40)!r} is not a whole year"
                f"{f' ({len(fractional)} columns are not)' if len(fractional) > 1 else ''}; a wide file has one column per year "
                "(2014, or 2014.0): fix the header"
            )
        _check_entities(raw[entity_col], file_name)
        staging = _wide_to_staging(raw, entity_col, year_cols)
    else:
        raise PermanentSourceError(_layout_message(header, file_name, raw.attrs.get("sheets", [])))
    return _compact(staging)


def _compact(staging: pd.DataFrame) -> pd.DataFrame:
    """Parse the numbers; keep the source's text only where it is not a clean number.

    Names become categoricals and the text columns hold the source text only for the rows
    the gate must look at (a value that is not a number, a year not written as
    :data:`YEAR_TEXT`: ``2014.5``, but also ``2.014e3`` or ``+2014``, which parse as whole years),
    which keeps a large release's staging table small. The year texts are matched once per
    distinct text (a categorical's categories), not once per row.
    """
    year = pd.to_numeric(staging["year_text"], errors="coerce")
    value = pd.to_numeric(staging["value_text"], errors="coerce")
    year_text = _category(staging["year_text"])
    categories = year_text.categories
    year_text = year_text.remove_categories(categories[[YEAR_TEXT.fullmatch(text) is not None for text in categories]])
    return pd.DataFrame(
        {
            "entity": _category(staging["entity"]),
            "iso_code": _category(staging["iso_code"]),
            "year_text": year_text,
            "year": year.astype("float64").to_numpy(),
            "variable": _category(staging["variable"]),
            "value_text": _category(staging["value_text"].where(value.isna())),
            "value": value.astype("float64").to_numpy(),
        }
    )[STAGING_COLUMNS]


def _category(column: pd.Series) -> pd.Categorical:
    """Text as a categorical over ``str`` categories (also when every value is missing).

    Factorised without turning every value into a Python object (pandas' ``str`` columns
    are Arrow-backed): only the distinct names become categories.
    """
    if not isinstance(column.dtype, pd.StringDtype):
        column = column.astype("str")
    categorical = column.astype("category").array
    if categorical.categories.dtype != "str":
        categorical = categorical.set_categories(categorical.categories.astype("str"))
    return categorical


def _check_entities(names: pd.Series, file_name: str) -> None:
    """Entity names are printable: a NUL, tab or line break inside a name is a broken file."""
    unique = pd.Series(names.dropna().unique(), dtype=object).astype(str)
    bad = unique[unique.str.contains(CONTROL.pattern, regex=True)]
    if len(bad):
        name = bad.iloc[0]
        char = CONTROL.search(name).group()  # type: ignore[union-attr]
        raise PermanentSourceError(
            f"{file_name}: entity name {clean(name, 40)!r} contains the control character U+{ord(char):04X}"
            f"{f' ({len(bad)} names do)' if len(bad) > 1 else ''}; fix the names in the source"
        )


def _long_to_staging(raw: pd.DataFrame, entity: str, year: str, iso: str | None, file_name: str, header: list[str]) -> pd.DataFrame:
    variables = [v for v in OWID_VARIABLES if v in raw.columns]
    if not variables:
        raise PermanentSourceError(
            f"{file_name} has country and year columns but none of the variables co2cast uses ({', '.join(OWID_VARIABLES)})"
        )
    frame = raw[[entity, year, *variables]].copy()
    frame["iso_code"] = raw[iso] if iso else pd.NA
    frame = frame.rename(columns={entity: "entity", year: "year_text"})
    tidy = frame.melt(id_vars=["entity", "iso_code", "year_text"], var_name="variable", value_name="value_text")
    return tidy[tidy["value_text"].notna()]


def _wide_to_staging(raw: pd.DataFrame, entity: str, year_cols: list[str]) -> pd.DataFrame:
    frame = raw[[entity, *year_cols]].rename(columns={entity: "entity"})
    tidy = frame.melt(id_vars=["entity"], var_name="year_text", value_name="value_text")
    tidy = tidy[tidy["value_text"].notna()].copy()
    tidy["iso_code"] = pd.NA
    tidy["variable"] = WIDE_VARIABLE
    return tidy


def _layout_message(columns: list[str], file_name: str, sheets: list[str] | None = None) -> str:
    shown = ", ".join(repr(clean(c, 30)) for c in columns[:8]) + (" …" if len(columns) > 8 else "")
    message = (
        f"{file_name} is in no layout co2cast reads: it needs either 'country' and 'year' columns "
        f"(OWID long format) or a 'country' column and one column per year (Gapminder wide "
        f"format). Missing columns; found {len(columns)} column(s): {shown}."
    )
    if len(columns) == 1 and any(sep in columns[0] for sep in (";", "\t", "|")):
        sep = next(sep for sep in (";", "\t", "|") if sep in columns[0])
        message += f" The header contains {sep!r}: the file seems to use another delimiter than ','."
    if len(columns) == 1:
        message += _not_a_table(columns[0])
    if sheets and len(sheets) > 1:
        message += _other_sheets(sheets) + "."
    return message


def _not_a_table(header: str) -> str:
    """What a one-column header that starts like a web page or a JSON document is (a download that went wrong)."""
    start = header.lstrip().lower()
    if start.startswith(("<!doctype html", "<html", "<?xml", "<head", "<body")):
        return (
            " It is an HTML or XML page, not a table: the download returned a web page (an error or sign-in page?); check the source URL."
        )
    if start.startswith(("{", "[")):
        return " It starts like a JSON document, not a CSV table (an API's answer or error?); check the source URL."
    return ""


def read_source(data: bytes, file_name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> pd.DataFrame:
    """Bytes of a release to the staging table (``read_raw`` then ``to_staging``).

    A CSV is read and staged chunk by chunk, so only one chunk of text is in memory at once.
    """
    if data.startswith(GZIP_MAGIC):
        data, file_name = _gunzip(data, file_name, max_bytes)
    suffix = Path(file_name).suffix.lower()
    if not data.strip() or data.startswith(XLSX_MAGIC) or suffix not in ("", ".csv", ".txt"):
        return to_staging(read_raw(data, file_name, max_bytes), file_name)
    parts = [to_staging(chunk, file_name) for chunk in _csv_chunks(data, file_name)]
    if len(parts) == 1:
        return parts[0]
    from pandas.api.types import union_categoricals

    columns: dict[str, Any] = {}
    for column in STAGING_COLUMNS:
        pieces = [p.pop(column) for p in parts]  # hand each column over, chunk by chunk
        if isinstance(pieces[0].dtype, pd.CategoricalDtype):
            columns[column] = union_categoricals(pieces)
        else:
            columns[column] = np.concatenate([piece.to_numpy() for piece in pieces])
        del pieces
    return pd.DataFrame(columns)[STAGING_COLUMNS]


def content_sha256(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """sha256 of a release's content with encoding details normalised away.

    gzip is decompressed, a UTF-8 byte order mark dropped, CRLF and CR line ends made LF,
    and a final line end ensured, so a re-save of the same table hashes the same. XLSX and
    other binary files hash as their bytes.
    """
    if data.startswith(GZIP_MAGIC):
        try:
            data, _ = _gunzip(data, "source.gz", max_bytes)
        except SourceError:
            return hashlib.sha256(data).hexdigest()
    if data.startswith(XLSX_MAGIC):
        return hashlib.sha256(data).hexdigest()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return hashlib.sha256(data).hexdigest()
