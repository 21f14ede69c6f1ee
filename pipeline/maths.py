"""Small shared helpers for numbers: the one JSON encoder for numpy values.

A leaf module (numpy only). Every JSON writer of the package (the object store, MLflow
artefacts, model files) passes :func:`json_default` as ``default=``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def json_default(value: Any) -> Any:
    """Turn what :mod:`json` cannot write into what it can: numpy scalars and arrays, paths.

    Args:
        value: an object ``json.dumps`` met and could not encode.

    Returns:
        A plain Python equivalent (``int``/``float``/``bool``, a list, a string).

    Raises:
        TypeError: for any other type, as ``json.dumps`` expects of a ``default``.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
