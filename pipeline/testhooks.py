"""A test-only hook that holds a run at a named point so a fault test can kill it there.

**For tests only.** When ``CO2CAST_TEST_PAUSE_AT`` names a point (e.g. ``after_register``), the
process prints ``co2cast-test: paused at <point>`` to stderr and sleeps
``CO2CAST_TEST_PAUSE_SECONDS`` (default 600) there; ``tests/test_faults_forecast.py`` waits for
that line and kills the process with SIGKILL, which makes the kill point deterministic. Unset
(always, in production) it does nothing.

Points: ``after_log`` (models logged, nothing registered), ``after_register`` (versions
registered and family aliases moved), ``after_gate`` (``@champion`` moved too, run not
complete), ``after_files`` (forecast files written, no manifest), ``after_manifest`` (manifest
written, ``latest.json`` not moved).
"""

from __future__ import annotations

import os
import sys
import time

ENV_POINT = "CO2CAST_TEST_PAUSE_AT"
ENV_SECONDS = "CO2CAST_TEST_PAUSE_SECONDS"


def pause_point(name: str) -> None:
    """Sleep here when the test-only ``CO2CAST_TEST_PAUSE_AT`` names this point; otherwise return at once."""
    if os.environ.get(ENV_POINT) != name:
        return
    print(f"co2cast-test: paused at {name}", file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get(ENV_SECONDS, "600")))
