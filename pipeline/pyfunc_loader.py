"""MLflow's entry point for a registered co2cast model: ``loader_module="pipeline.pyfunc_loader"``.

This module is part of the installed package; the artefact carries no code. MLflow calls
:func:`_load_pyfunc` with the artefact's data directory, which holds the forecaster's
``model.json`` + ``arrays.npz`` (see ``pipeline.models.base``) and ``serving.json``. Loading
unpickles nothing, and ``model.json`` may only name forecaster classes of this package.

Input: a DataFrame with a ``year`` column (years after the training data, up to the horizon
end). Output: one row per year with ``year, mean, lo_80, hi_80, lo_95, hi_95``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.models.base import Forecaster, load_forecaster


def requested_years(model_input: Any) -> list[int]:
    """The years a caller asks for, from the ``year`` column of the input."""
    frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    if "year" not in frame.columns:
        raise ValueError("give the years to forecast in a 'year' column")
    return [int(y) for y in frame["year"]]


class ServedForecaster:
    """Forecast any years between the end of the training data and the horizon end."""

    def __init__(self, forecaster: Forecaster, horizon_end: int, levels: tuple[int, ...]) -> None:
        self.forecaster = forecaster
        self.horizon_end = horizon_end
        self.levels = levels

    def get_raw_model(self) -> Forecaster:
        """The fitted forecaster (MLflow's ``PyFuncModel.get_raw_model`` returns it)."""
        return self.forecaster

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """The forecast rows for the requested years."""
        years = requested_years(model_input)
        last = int(self.forecaster.years_[-1])
        if not years:
            raise ValueError("no years requested")
        if min(years) <= last or max(years) > self.horizon_end:
            raise ValueError(f"this model forecasts the years {last + 1}..{self.horizon_end}; asked for {min(years)}..{max(years)}")
        forecast = self.forecaster.predict(max(years) - last, levels=self.levels).to_frame()
        return forecast[forecast["year"].isin(years)].reset_index(drop=True)


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> ServedForecaster:
    directory = Path(data_path)
    serving = json.loads((directory / "serving.json").read_text())
    return ServedForecaster(load_forecaster(directory), int(serving["horizon_end"]), tuple(int(v) for v in serving["levels"]))
