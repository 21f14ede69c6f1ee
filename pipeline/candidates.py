"""The line-ups: which candidates a series runs, and who serves forecasts.

Production runs :func:`zoo_candidates` (the model zoo of :mod:`pipeline.models.registry`, sized
per series) under :class:`ZooSelection`; :func:`study_candidates` under
:class:`NewestFamilyChampion` is the study's small fixed line-up that tests and studies use.

Candidates are model *instances* with their hyperparameters, not import paths: the run key
hashes each one's class and ``get_params()`` (the zoo's at every series length) and the
policy's fields, so changing a value here, in the registry or a default in a model class
retrains instead of reusing an old run. A new production candidate is one more entry in
:func:`pipeline.models.registry.default_candidates`; a new policy is one more callable of the
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


def study_candidates() -> dict[str, Forecaster]:
    """The study's line-up (ARIMA, LSTM, RNN and two baselines), fresh and unfitted, by name (the registry alias).

    Not what production runs (:func:`zoo_candidates`): a small fixed set for
    :class:`NewestFamilyChampion` in tests and studies.
    """
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

    Every setting of :func:`pipeline.selection.select` is a field with ``select``'s default, so
    the run key (which hashes the fields) moves with any of them; the names of the registry's
    defaults are written out because importing :mod:`pipeline.models.registry` here would pull
    in scikit-learn, and a test holds them equal.

    Attributes:
        metric: lower-is-better backtest metric (``CO2CAST_SELECTION_METRIC``; MASE by default).
        always_register: families registered every run besides the winner (their aliases exist).
        benchmark: the candidate everything must beat (``registry.BENCHMARK``).
        default: the candidate published unless another beats it clearly (``registry.DEFAULT_CHOICE``).
        margin: see :func:`pipeline.selection.select`.
        min_windows: fewest backtest windows to test a choice against the benchmark.
        calibrate: calibrate the published models' intervals on their backtest errors.
        floor: the forecasts' floor (emissions are never negative).
        short_default: published on a series with fewer windows (``registry.SHORT_SERIES_CHOICE``).
        fallback: tried when the choice does not beat the benchmark (``registry.FALLBACK_CHOICE``).
        overlay: how many of the best-ranked candidates besides the registered ones are also
            fitted on the whole history, so their forecasts can be published beside the
            champion's (``candidates.parquet``, the viewer's overlay); they are not registered.
    """

    metric: str = DEFAULT_METRIC
    always_register: tuple[str, ...] = ("arima", "lstm")
    benchmark: str = "naive"
    default: str | None = "combo_median"
    margin: float = 0.5
    min_windows: int = 4
    calibrate: bool = True
    floor: float = 0.0
    short_default: str | None = "combo_short"
    fallback: str | None = "combo_short"
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

        chosen = select(
            evaluation,
            metric=self.metric,
            benchmark=self.benchmark,
            default=self.default,
            margin=self.margin,
            min_windows=self.min_windows,
            calibrate=self.calibrate,
            floor=self.floor,
            short_default=self.short_default,
            refused=refused,
            fallback=self.fallback,
        )
        register = tuple(name for name in self.always_register if name in evaluation.results)
        if chosen.winner not in register:
            register += (chosen.winner,)
        ranked = [name for name, value in chosen.ranking if math.isfinite(value) and name not in register]
        fit = register + tuple(ranked[: self.overlay])
        models = {name: publishable(evaluation.results[name], calibrate=self.calibrate, floor=self.floor) for name in fit}
        notes = [*evaluation.plan.notes, *(f"{name} dropped: {why}" for name, why in evaluation.failed.items())]
        reason = chosen.reason + (f" [{'; '.join(notes)}]" if notes else "")
        return (
            Selection(champion=chosen.winner, best=chosen.ranking[0][0], register=register, fit=fit, reason=reason),
            models,
        )
