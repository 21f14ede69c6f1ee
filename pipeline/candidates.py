"""The production line-up: which candidates every series runs, and who serves forecasts.

Candidates are model *instances* with their hyperparameters, not import paths: the run key
hashes each one's class and ``get_params()``, so changing a value here or a default in a model
class retrains instead of reusing an old run. A new candidate is one more entry in
:func:`default_candidates`; a new policy is one more callable of the
:data:`pipeline.core.SelectPolicy` shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
    """Until a promotion gate exists, the newest model of one family serves forecasts.

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
