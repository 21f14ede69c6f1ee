"""The MLflow "model from code" that serves every co2cast forecaster.

MLflow logs this file's source, not a pickled object. On load it runs this file, and
:meth:`ForecasterModel.load_context` rebuilds the fitted forecaster from the plain files in the
``model`` artefact (``model.json`` + ``arrays.npz``, see ``pipeline.models.base``): loading a
registered co2cast model unpickles nothing.

Input: a DataFrame with a ``year`` column (any years after the training data, up to the horizon
end). Output: one row per year with
``year, mean, lo_80, hi_80, lo_95, hi_95``.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from pipeline.models.base import load_forecaster


def requested_years(model_input: Any) -> list[int]:
    """The years a caller asks for, from the ``year`` column of the input."""
    frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    if "year" not in frame.columns:
        raise ValueError("give the years to forecast in a 'year' column")
    return [int(y) for y in frame["year"]]


class ForecasterModel(PythonModel):
    """Forecast any years between the end of the training data and the horizon end."""

    def load_context(self, context: PythonModelContext) -> None:
        self.forecaster = load_forecaster(context.artifacts["model"])
        config = context.model_config or {}
        self.horizon_end = int(config.get("horizon_end", 2050))
        self.levels = tuple(int(level) for level in config.get("levels", (80, 95)))

    # No type hints on predict: MLflow would read them as a schema; the signature is logged instead.
    def predict(self, context, model_input, params=None):
        years = requested_years(model_input)
        last = int(self.forecaster.years_[-1])
        if not years:
            raise ValueError("no years requested")
        if min(years) <= last or max(years) > self.horizon_end:
            raise ValueError(f"this model forecasts the years {last + 1}..{self.horizon_end}; asked for {min(years)}..{max(years)}")
        forecast = self.forecaster.predict(max(years) - last, levels=self.levels).to_frame()
        return forecast[forecast["year"].isin(years)].reset_index(drop=True)


mlflow.models.set_model(ForecasterModel())
