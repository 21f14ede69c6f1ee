"""``AIRFLOW__CORE__HOSTNAME_CALLABLE`` for the native stack: each Celery worker names itself.

Both workers run on one machine, so the default (the FQDN) would not tell them apart on the
task instances they ran.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    """``CO2CAST_WORKER_NAME`` when set, else the machine's FQDN."""
    return os.environ.get("CO2CAST_WORKER_NAME") or socket.getfqdn()
