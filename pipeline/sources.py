"""Read a release of the emissions data from a path or URL into one tidy table.

Two layouts are understood, in CSV or XLSX:

* OWID's long format: ``country, year, <variable columns>`` (``iso_code`` optional);
* Gapminder's wide format: one row per country, one column per year, one variable.

Both become a *staging* table, one row per (entity, year, variable), that keeps the source's
text next to the parsed numbers so that the Great Expectations gate can point at a row whose
text is not a number instead of silently turning it into a missing value.
"""

from __future__ import annotations

import gzip
import io
import re
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from pipeline.errors import Co2castError

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
YEAR_COLUMN = re.compile(r"^\d{4}$")
STAGING_COLUMNS = ["entity", "iso_code", "year_text", "year", "variable", "value_text", "value"]
XLSX_MAGIC = b"PK\x03\x04"
GZIP_MAGIC = b"\x1f\x8b"


class SourceError(Co2castError, ValueError):
    """A source cannot be fetched or read; the message says what to do.

    ``transient`` is true for network failures, which a retry may cure; a missing file or a
    malformed one will fail the same way again.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Fetched:
    """Bytes of one release as fetched, with where they came from."""

    data: bytes
    file_name: str
    source: str


def fetch(source: str, timeout: float = 60.0) -> Fetched:
    """Fetch a release from a local path or an HTTP(S) URL.

    Args:
        source: a file path (``file://`` URLs work too) or an ``http(s)://`` URL.
        timeout: seconds to wait for an HTTP server.

    Returns:
        The bytes and the file name to keep them under.

    Raises:
        SourceError: the URL is unreachable or the file does not exist or cannot be read.
    """
    parsed = urlparse(source)
    if parsed.scheme in ("http", "https"):
        name = Path(parsed.path).name or "source.csv"
        try:
            with urllib.request.urlopen(source, timeout=timeout) as response:  # noqa: S310 (scheme checked)
                return Fetched(response.read(), name, source)
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise SourceError(
                f"cannot download {source}: {error}. Without network access, set CO2CAST_SOURCE "
                "to a local file (a path to a CSV or XLSX release).",
                transient=True,
            ) from error
    path = Path(parsed.path) if parsed.scheme == "file" else Path(source).expanduser()
    if parsed.scheme not in ("", "file"):
        raise SourceError(f"unsupported source {source!r}: give a file path or an http(s):// URL")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceError(f"source file {path} does not exist (CO2CAST_SOURCE={source!r})") from None
    except OSError as error:
        raise SourceError(f"cannot read source file {path}: {error}") from error
    return Fetched(data, path.name, str(path.resolve()))


def read_raw(data: bytes, file_name: str) -> pd.DataFrame:
    """Parse a CSV or XLSX release into a table of strings, as the source wrote them.

    Raises:
        SourceError: empty, truncated, not text, not a table, or an unknown format.
    """
    if data.startswith(GZIP_MAGIC):
        data, file_name = _gunzip(data, file_name)
    if not data.strip():
        raise SourceError(f"{file_name} is empty: the release has no data")
    suffix = Path(file_name).suffix.lower()
    if data.startswith(XLSX_MAGIC) or suffix in (".xlsx", ".xlsm"):
        return _read_xlsx(data, file_name)
    if suffix not in ("", ".csv", ".txt"):
        raise SourceError(f"{file_name}: unknown format {suffix!r}; co2cast reads CSV and XLSX files")
    return _read_csv(data, file_name)


def _gunzip(data: bytes, file_name: str) -> tuple[bytes, str]:
    """A gzip-compressed release (``.csv.gz``): its content, and its name without ``.gz``."""
    try:
        content = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise SourceError(f"{file_name} is a damaged or truncated gzip file ({error}); fetch the release again") from error
    name = file_name[: -len(".gz")] if file_name.lower().endswith(".gz") else file_name
    return content, name


def _read_xlsx(data: bytes, file_name: str) -> pd.DataFrame:
    try:
        frame = pd.read_excel(io.BytesIO(data), sheet_name=0, dtype=str, engine="openpyxl")
    except Exception as error:  # openpyxl raises many types for a damaged workbook
        raise SourceError(f"{file_name} is not a readable XLSX workbook: {error}") from error
    # Excel turns year headers into numbers: give them back their text.
    frame.columns = [str(int(c)) if isinstance(c, float) and c.is_integer() else str(c).strip() for c in frame.columns]
    return frame


def _read_csv(data: bytes, file_name: str) -> pd.DataFrame:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SourceError(f"{file_name} is not UTF-8 text (byte {error.start}); is it a CSV file?") from error
    lines = text.splitlines()
    header_fields = lines[0].count(",")
    # A download cut off mid-row ends without a newline and with a short last row; pandas
    # would fill the missing fields with NaN and hide it.
    if len(lines) > 1 and not text.endswith(("\n", "\r")) and lines[-1].count(",") < header_fields:
        raise SourceError(
            f"{file_name} looks truncated: its last line has {lines[-1].count(',') + 1} of "
            f"{header_fields + 1} fields and no line end. Fetch the release again."
        )
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise SourceError(f"{file_name} is not a readable CSV table: {error}") from error
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def to_staging(raw: pd.DataFrame, file_name: str = "source") -> pd.DataFrame:
    """Turn a raw table (long or wide) into the staging table ``STAGING_COLUMNS``.

    Raises:
        SourceError: the layout is neither OWID's long nor Gapminder's wide format, or
            required columns are missing.
    """
    columns = list(raw.columns)
    lower = {c.lower(): c for c in columns}
    entity_col = next((lower[c] for c in ENTITY_COLUMNS if c in lower), None)
    year_cols = [c for c in columns if YEAR_COLUMN.match(c)]
    if entity_col is not None and "year" in lower:
        staging = _long_to_staging(raw, entity_col, lower["year"], lower.get("iso_code"), file_name)
    elif entity_col is not None and len(year_cols) >= 2:
        staging = _wide_to_staging(raw, entity_col, year_cols)
    else:
        raise SourceError(_layout_message(columns, file_name))
    staging["year"] = pd.to_numeric(staging["year_text"], errors="coerce")
    staging["value"] = pd.to_numeric(staging["value_text"], errors="coerce")
    return staging[STAGING_COLUMNS].reset_index(drop=True)


def _long_to_staging(raw: pd.DataFrame, entity: str, year: str, iso: str | None, file_name: str) -> pd.DataFrame:
    variables = [v for v in OWID_VARIABLES if v in raw.columns]
    if not variables:
        raise SourceError(f"{file_name} has country and year columns but none of the variables co2cast uses ({', '.join(OWID_VARIABLES)})")
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


def _layout_message(columns: list[str], file_name: str) -> str:
    shown = ", ".join(repr(c) for c in columns[:8]) + (" …" if len(columns) > 8 else "")
    message = (
        f"{file_name} is in no layout co2cast reads: it needs either 'country' and 'year' columns "
        f"(OWID long format) or a 'country' column and one column per year (Gapminder wide "
        f"format). Missing columns; found {len(columns)} column(s): {shown}."
    )
    if len(columns) == 1 and any(sep in columns[0] for sep in (";", "\t", "|")):
        sep = next(sep for sep in (";", "\t", "|") if sep in columns[0])
        message += f" The header contains {sep!r}: the file seems to use another delimiter than ','."
    return message


def read_source(data: bytes, file_name: str) -> pd.DataFrame:
    """Bytes of a release to the staging table (``read_raw`` then ``to_staging``)."""
    return to_staging(read_raw(data, file_name), file_name)
