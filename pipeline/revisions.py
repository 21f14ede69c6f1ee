"""How much a new vintage revised one series' history. Pure functions, no I/O.

Data providers revise the past: OWID's releases re-estimate earlier years when a source
(the Global Carbon Project, CDIAC, UN population) is updated. A forecast trained on the old
history may then start from the wrong level. The forecast run compares the history it is given
with the history the series' published forecast was trained on, over the years both cover, and
reports the largest change relative to the series' scale.

Threshold (``CO2CAST_REVISION_THRESHOLD``, default 0.02): a revision is *material* when some
year moved by more than 2 % of the series' mean absolute level over the compared years, or a
year present before is gone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_THRESHOLD = 0.02


@dataclass(frozen=True)
class Revision:
    """What changed between two vintages of one series' history.

    Attributes:
        compared_years: years present in both histories.
        changed_years: years whose value differs (beyond float noise).
        dropped_years: years the previous history had and the current one lacks.
        max_change: the largest ``|current - previous|``.
        max_relative_change: ``max_change`` over the mean absolute level of the compared years.
        year_of_max_change: where it happened (``None`` when nothing changed).
        threshold: the relative change above which the revision is material.
        material: whether the forecast run warns about it (any revision retrains: the run key covers the history).
    """

    compared_years: int
    changed_years: int
    dropped_years: int
    max_change: float
    max_relative_change: float
    year_of_max_change: int | None
    threshold: float
    material: bool

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for MLflow params, the manifest and XCom."""
        return asdict(self)

    def describe(self) -> str:
        """One line for a person."""
        if not self.changed_years and not self.dropped_years:
            return f"history unchanged over {self.compared_years} years"
        if self.changed_years:
            text = (
                f"history revised: {self.changed_years} of {self.compared_years} years changed, largest "
                f"{self.max_relative_change:.1%} of the series' level in {self.year_of_max_change}"
            )
        else:  # only years dropped (a gap that moved the modelled stretch): no largest change to name
            text = f"history revised: none of {self.compared_years} years changed"
        if self.dropped_years:
            text += f"; {self.dropped_years} years dropped"
        return text + (" (material)" if self.material else "")


def compare_histories(previous: pd.Series, current: pd.Series, threshold: float = DEFAULT_THRESHOLD) -> Revision:
    """Compare two histories of one series (values indexed by year).

    Args:
        previous: the history a published forecast was trained on.
        current: the history now available, cut to the same last year or later.
        threshold: relative change that makes a revision material.
    """
    before = pd.Series(previous, dtype=float).dropna()
    after = pd.Series(current, dtype=float).dropna()
    before.index = before.index.astype(int)
    after.index = after.index.astype(int)
    common = before.index.intersection(after.index)
    dropped = len(before.index.difference(after.index))
    if len(common) == 0:
        return Revision(0, 0, dropped, 0.0, 0.0, None, threshold, dropped > 0)
    old, new = before.loc[common].to_numpy(), after.loc[common].to_numpy()
    change = np.abs(new - old)
    changed = ~np.isclose(new, old, rtol=1e-9, atol=1e-12)
    scale = float(np.mean(np.abs(old)))
    relative = float(change.max() / scale) if scale > 0 else (0.0 if not changed.any() else float("inf"))
    where = int(common[int(np.argmax(change))]) if changed.any() else None
    material = dropped > 0 or relative > threshold
    return Revision(
        compared_years=len(common),
        changed_years=int(changed.sum()),
        dropped_years=dropped,
        max_change=float(change.max()),
        max_relative_change=relative,
        year_of_max_change=where,
        threshold=threshold,
        material=bool(material),
    )
