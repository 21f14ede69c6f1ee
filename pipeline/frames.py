"""Parquet bytes from the object store as a DataFrame, read so the process can always exit cleanly.

``pd.read_parquet(io.BytesIO(data))`` hands pyarrow a Python file: each read it makes returns a
Python ``bytes`` object wrapped in an Arrow buffer (``arrow::py::PyBuffer``), and reads ahead on
pyarrow's I/O threads (``pre_buffer``). A future of such a read can outlive the call on a worker
thread; when that thread drops the last reference while the interpreter is shutting down, the
buffer's destructor asks for the GIL, CPython ends the thread with ``pthread_exit`` inside C++
code, and the process aborts with ``terminate called without an active exception`` (exit 134)
after its work is done (apache/arrow#34314). We saw it about once in 200 runs of
``co2cast scorecard`` (the backtrace: ``PyBuffer::~PyBuffer`` -> ``PyGILState_Ensure`` ->
``PyThread_exit_thread`` on an Arrow thread-pool worker). Copying the bytes into memory Arrow
owns first leaves no Python object for a worker to release. The copy is one pass over the file
and lives as long as the read: kilobytes for a forecast or a scorecard; for an ingest that
compares a release with the previous curated table, that table's compressed size, small beside
the frame it decodes to.
"""

from __future__ import annotations

import pandas as pd


def read_parquet(data: bytes) -> pd.DataFrame:
    """Parquet bytes as a DataFrame (as ``pd.read_parquet`` reads them), from a copy in Arrow's own memory.

    Raises:
        OSError, ValueError: the bytes are not a readable Parquet file (pyarrow's ``ArrowInvalid``
            is a ``ValueError``), as ``pd.read_parquet`` raises them.
    """
    import pyarrow as pa

    stream = pa.BufferOutputStream()
    stream.write(data)
    frame = pd.read_parquet(pa.BufferReader(stream.getvalue()))
    # Arrow's allocator keeps what the decode used and freed (some 180 MB for a 7-million-row
    # curated table, more than the frame itself) until its next allocation; give it back now
    # (under a millisecond).
    pa.default_memory_pool().release_unused()
    return frame
