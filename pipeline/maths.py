"""Small shared maths and encoding helpers: one definition each, imported everywhere.

This module is a leaf: it imports nothing from the package, so any layer (transforms,
models, backtest, adapters) may use it without an import running back up.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import PurePath
from typing import Any

import numpy as np
from scipy import stats


@lru_cache(maxsize=64)
def z(level: float) -> float:
    """The standard-normal quantile that bounds a central interval of ``level`` percent.

    Args:
        level: the interval's coverage in percent, in (0, 100), e.g. ``95``.

    Returns:
        ``Φ⁻¹(0.5 + level / 200)``, e.g. about 1.95996 for 95.

    Raises:
        ValueError: when ``level`` is not in (0, 100).
    """
    if not 0 < level < 100:
        raise ValueError(f"interval levels are percentages in (0, 100), got {level}")
    return float(stats.norm.ppf(0.5 + float(level) / 200.0))


def integrated_error_std(psi: np.ndarray, order: int, scale: float = 1.0) -> np.ndarray:
    """Forecast-error standard deviations of a linear process summed ``order`` times.

    A forecast error ``h`` steps ahead of a process with impulse response ``ψ`` (``ψ_0 = 1``)
    and innovations of standard deviation ``σ`` is ``Σ_{i<h} ψ_i ε_{h-i}``. Summing the process
    ``order`` times (undoing differences) turns ``ψ`` into its ``order``-fold running sum ``Ψ``,
    and the error's variance is ``σ² Σ_{i<h} Ψ_i²``.

    Args:
        psi: ``ψ_0 .. ψ_{h-1}`` (any common scale: ``σ ψ`` with ``scale=1`` works too).
        order: how many times the process is summed (0: the process itself).
        scale: ``σ``, multiplied in last.

    Returns:
        The ``h`` standard deviations ``scale · sqrt(cumsum(Ψ²))``.
    """
    weights = np.asarray(psi, dtype=np.float64)
    for _ in range(int(order)):
        weights = np.cumsum(weights)
    return scale * np.sqrt(np.cumsum(np.square(weights)))


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` hook for numpy scalars and arrays, tuples, sets and paths.

    Args:
        value: an object the standard encoder does not know.

    Returns:
        A JSON-able equivalent (Python scalar, list or string).

    Raises:
        TypeError: for anything else, as the standard encoder would.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
