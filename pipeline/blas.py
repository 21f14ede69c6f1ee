"""Run BLAS on one thread for a block of small-matrix work (ARIMA fits, LSTM/RNN passes)."""

from __future__ import annotations

import contextlib
import functools
from typing import Any


@functools.cache
def _controller() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries, built once on first use, not at import."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def single_threaded_blas() -> contextlib.AbstractContextManager[Any]:
    """Limit BLAS to one thread for the duration of a ``with`` block.

    A state-space ARIMA fit does thousands of BLAS calls on (p + q + d)-sized matrices and an
    LSTM pass multiplies ``4H x (H + 2)`` by ``(H + 2) x B`` matrices. OpenBLAS's worker
    threads cannot speed those up, and when the other core is busy (parallel Airflow tasks)
    waking and spinning them made the same work 5-20x slower on the 2-core machine. The limit is
    process-wide while it lasts.
    """
    return _controller().limit(limits=1, user_api="blas")
