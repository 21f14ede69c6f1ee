"""The forecast viewer: a Streamlit page over what the pipeline published (``co2cast view``).

:mod:`pipeline.viewer.data` reads and checks the published files; ``app.py`` is the page.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The Streamlit script of the page.
APP = Path(__file__).resolve().parent / "app.py"


def streamlit_command(port: int = 8501, address: str = "127.0.0.1") -> list[str]:
    """The command that serves the viewer: loopback only, headless, no usage statistics.

    Args:
        port: the TCP port to listen on.
        address: the address to bind; loopback by default, so only this machine can see it.

    Returns:
        An argv list for :func:`os.execv` or :mod:`subprocess`.
    """
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        f"--server.address={address}",
        f"--server.port={port}",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        "--server.fileWatcherType=none",
        "--client.toolbarMode=viewer",
    ]
