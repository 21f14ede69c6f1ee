"""Forecast combinations: the mean or median of several forecasters.

Combinations won the large forecasting competitions on yearly data (M3, M4): averaging models
that err differently cancels part of their errors. The point forecast is the mean (or median)
of the members' point forecasts; each interval bound is the mean (or median) of the members'
bounds at that level — quantile averaging (Vincentisation), which keeps bounds ordered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from pipeline.models.base import Forecast, Forecaster, clone

AGGREGATES = {"mean": np.mean, "median": np.median}


def combine(forecasts: Sequence[Forecast], method: str = "mean") -> Forecast:
    """Combine member forecasts for the same years into one.

    Args:
        forecasts: one forecast per member, same years and levels.
        method: ``"mean"`` or ``"median"``.

    Returns:
        The combined :class:`~pipeline.models.base.Forecast`.

    Raises:
        ValueError: on an unknown method, no forecasts, or forecasts for different years.
    """
    if method not in AGGREGATES:
        raise ValueError(f"unknown combination {method!r}; choose one of {sorted(AGGREGATES)}")
    if not forecasts:
        raise ValueError("a combination needs at least one member forecast")
    years = forecasts[0].years
    if any(not np.array_equal(f.years, years) for f in forecasts):
        raise ValueError("member forecasts cover different years")
    aggregate = AGGREGATES[method]
    levels = sorted(forecasts[0].lower)
    return Forecast(
        years=years.copy(),
        mean=aggregate(np.stack([f.mean for f in forecasts]), axis=0),
        lower={lv: aggregate(np.stack([f.lower[lv] for f in forecasts]), axis=0) for lv in levels},
        upper={lv: aggregate(np.stack([f.upper[lv] for f in forecasts]), axis=0) for lv in levels},
    )


class CombinationForecaster(Forecaster):
    """Mean or median of the forecasts of several members, each fitted on the same series.

    Args:
        members: the member forecasters (templates: each fit works on fresh clones).
        method: ``"mean"`` or ``"median"``.

    Attributes:
        members_: the fitted clones, in order.
    """

    family: ClassVar[str] = "combination"

    def __init__(self, members: Sequence[Forecaster] = (), method: str = "mean") -> None:
        self.members = members
        self.method = method

    @property
    def min_obs(self) -> int:  # type: ignore[override]
        """The largest minimum among the members (every member must fit)."""
        return max([3, *(int(member.min_obs) for member in self.members)])

    def _fit(self, y: np.ndarray) -> None:
        if not self.members:
            raise ValueError("a combination needs at least one member")
        if self.method not in AGGREGATES:
            raise ValueError(f"unknown combination {self.method!r}; choose one of {sorted(AGGREGATES)}")
        self.members_ = [clone(member).fit(y) for member in self.members]

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        combined = combine([member.predict(h, levels) for member in self.members_], str(self.method))
        return combined.mean, {lv: (combined.lower[lv], combined.upper[lv]) for lv in levels}

    def _fitted_children(self) -> dict[str, Forecaster]:
        return {f"member_{i}": member for i, member in enumerate(self.members_)}

    def _set_children(self, children: dict[str, Forecaster]) -> None:
        self.members_ = [children[f"member_{i}"] for i in range(len(children))]
