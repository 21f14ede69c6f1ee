"""The production line-up: which candidates every series runs, and who serves forecasts.

Candidates are model *instances* with their hyperparameters, not import paths: the run key
hashes each one's class and ``get_params()``, so changing a value here or a default in a model
class retrains instead of reusing an old run. A new candidate is one more entry in
:func:`default_candidates`; a new policy is one more callable of the
:data:`pipeline.core.SelectPolicy` shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.core import CandidateResult, Selection
from pipeline.models.arima import ArimaForecaster
from pipeline.models.base import Forecaster
from pipeline.models.baselines import DriftForecaster, NaiveForecaster
from pipeline.models.lstm import LSTMForecaster
from pipeline.models.rnn import RNNForecaster


def default_candidates() -> dict[str, Forecaster]:
    """Fresh, unfitted instances of every candidate, by name (the name is the registry alias)."""
    return {
        # Every hyperparameter at its class default: the run key hashes them all, so changing a
        # default in a model class retrains instead of silently reusing an old run.
        "arima": ArimaForecaster(),
        "lstm": LSTMForecaster(),
        "rnn": RNNForecaster(),
        "drift": DriftForecaster(),
        "naive": NaiveForecaster(),
    }


@dataclass(frozen=True)
class NewestFamilyChampion:
    """A fixed policy for tests and studies: the newest model of one family serves forecasts.

    Every candidate is fitted (each registered candidate's MLflow run carries its model); ``always_register``
    are registered every run, and the backtest winner too when it is not among them.

    Attributes:
        champion: the family that takes ``@champion``.
        always_register: families registered every run, in order.
        metric: the backtest score that names the best candidate (smaller is better).
    """

    champion: str = "arima"
    always_register: tuple[str, ...] = ("arima", "lstm")
    metric: str = "mase"

    def __call__(self, results: Mapping[str, CandidateResult]) -> Selection:
        """Decide for one series (ties go to the earlier candidate)."""
        if self.champion not in results:
            raise ValueError(f"the champion family {self.champion!r} is not among the candidates {sorted(results)}")
        best = min(results, key=lambda name: results[name].scores.get(self.metric, float("inf")))
        register = tuple(name for name in self.always_register if name in results)
        if best not in register:
            register += (best,)
        return Selection(
            champion=self.champion,
            best=best,
            register=register,
            fit=tuple(results),
            reason=f"newest {self.champion}: no promotion gate yet",
        )


#: Metric the production selection and the champion gate use unless ``CO2CAST_SELECTION_METRIC`` says otherwise.
DEFAULT_METRIC = "mase"

#: How many training points the reference candidate set (the one the run key hashes) is sized for.
REFERENCE_POINTS = 60


def zoo_candidates(n_points: int) -> dict[str, Forecaster]:
    """The model zoo sized for a series whose earliest backtest window has ``n_points`` values.

    See :func:`pipeline.models.registry.default_candidates`: every family of issue #8, the
    neural ones only from 20 points, and the fixed combinations.
    """
    from pipeline.models.registry import default_candidates as zoo

    return zoo(n_points)


@dataclass(frozen=True)
class ZooSelection:
    """The production policy: every candidate on one backtest, the winner published calibrated.

    Unlike :class:`NewestFamilyChampion` it works on the shared-window
    :class:`~pipeline.backtest.Evaluation` (``uses_evaluation``): failing candidates are
    dropped with their reason, short series get fewer windows, and
    :func:`pipeline.selection.select` chooses on ``metric`` (the default combination unless
    another candidate beats it by ``margin``; it must beat naive when there are enough
    windows, else ``fallback`` is published if it does, else naive). The champion gate
    against the current ``@champion`` runs in the task layer, where the registry is.

    Attributes:
        metric: lower-is-better backtest metric (``CO2CAST_SELECTION_METRIC``; MASE by default).
        always_register: families registered every run besides the winner (their aliases exist).
        margin: see :func:`pipeline.selection.select`.
        fallback: see :func:`pipeline.selection.select` (a field, so it is part of the run key).
        floor: the forecasts' floor (emissions are never negative).
        overlay: how many of the best-ranked candidates besides the registered ones are also
            fitted on the whole history, so their forecasts can be published beside the
            champion's (``candidates.parquet``, the viewer's overlay); they are not registered.
    """

    metric: str = DEFAULT_METRIC
    always_register: tuple[str, ...] = ("arima", "lstm")
    margin: float = 0.5
    fallback: str | None = "combo_short"  # registry.FALLBACK_CHOICE, not imported: the registry pulls in scikit-learn
    floor: float = 0.0
    overlay: int = 3
    uses_evaluation: bool = True

    def choose(self, evaluation: Any, refused: Mapping[str, str] | None = None) -> tuple[Selection, dict[str, Forecaster]]:
        """Decide for one series; returns the :class:`Selection` and name -> unfitted publishable model.

        Every fitted model (the registered ones, then the ``overlay`` best of the rest) is the
        candidate wrapped in :class:`~pipeline.models.calibrated.CalibratedForecaster` with its
        own backtest's interval factors and the zero floor. ``refused``: candidates whose
        forecast on the whole series cannot be published, and why (the core asks again with
        them when the first choice's forecast breaks the output bounds).
        """
        from pipeline.selection import publishable, select

        chosen = select(evaluation, metric=self.metric, margin=self.margin, floor=self.floor, refused=refused, fallback=self.fallback)
        register = tuple(name for name in self.always_register if name in evaluation.results)
        if chosen.winner not in register:
            register += (chosen.winner,)
        ranked = [name for name, value in chosen.ranking if math.isfinite(value) and name not in register]
        fit = register + tuple(ranked[: self.overlay])
        models = {name: publishable(evaluation.results[name], floor=self.floor) for name in fit}
        notes = [*evaluation.plan.notes, *(f"{name} dropped: {why}" for name, why in evaluation.failed.items())]
        reason = chosen.reason + (f" [{'; '.join(notes)}]" if notes else "")
        return (
            Selection(champion=chosen.winner, best=chosen.ranking[0][0], register=register, fit=fit, reason=reason),
            models,
        )
