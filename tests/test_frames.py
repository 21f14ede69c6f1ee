"""Parquet bytes read through Arrow's own memory (:mod:`pipeline.frames`)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline import frames


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def test_reads_what_pandas_reads_from_the_bytes() -> None:
    frame = pd.DataFrame(
        {"year": np.arange(2015, 2036), "mean": np.linspace(1.0, 2.0, 21), "family": ["arima"] * 20 + [None], "flag": [True] * 21}
    )
    data = _parquet(frame)
    pd.testing.assert_frame_equal(frames.read_parquet(data), pd.read_parquet(io.BytesIO(data)))
    pd.testing.assert_frame_equal(frames.read_parquet(data), frame, check_dtype=False)


def test_hands_pyarrow_no_python_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """The abort at exit comes from Arrow workers releasing buffers that wrap Python objects: the reader gives it none."""
    seen = []
    real = pd.read_parquet
    monkeypatch.setattr(pd, "read_parquet", lambda source, **kwargs: seen.append(source) or real(source, **kwargs))
    frames.read_parquet(_parquet(pd.DataFrame({"a": [1, 2]})))
    assert len(seen) == 1 and isinstance(seen[0], pa.BufferReader)


@pytest.mark.parametrize("data", [b"", b"PAR1 not a table", _parquet(pd.DataFrame({"a": [1]}))[:-9]])
def test_unreadable_bytes_raise_what_pandas_raises(data: bytes) -> None:
    with pytest.raises((OSError, ValueError)):
        frames.read_parquet(data)
