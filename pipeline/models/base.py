"""The forecaster contract every co2cast model follows.

scikit-learn / statsforecast style: ``__init__`` stores hyperparameters and validates nothing;
``fit(y, years)`` checks and converts the input once, here, then calls ``_fit`` and returns
``self``; fitted state lives in attributes ending in ``_``; ``predict(h, levels)`` returns a
:class:`Forecast` on the original scale. Models save themselves to plain files (JSON for
parameters, ``.npz`` for arrays) so loading one back runs no pickle.
"""

from __future__ import annotations

import functools
import inspect
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from pipeline.maths import json_default

DEFAULT_LEVELS: tuple[int, ...] = (80, 95)


class NotFittedError(RuntimeError):
    """Raised when ``predict`` or ``save`` is called before ``fit``."""


@dataclass(frozen=True)
class Forecast:
    """Point forecasts and prediction intervals for consecutive years.

    Attributes:
        years: the forecast years, consecutive integers.
        mean: point forecast per year.
        lower: level (e.g. 80) -> lower bound per year.
        upper: level -> upper bound per year.
    """

    years: np.ndarray
    mean: np.ndarray
    lower: dict[int, np.ndarray] = field(default_factory=dict)
    upper: dict[int, np.ndarray] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """The fixed forecast schema: ``year, mean, lo_<level>, hi_<level>`` for each level."""
        frame = pd.DataFrame({"year": self.years.astype(int), "mean": self.mean})
        for level in sorted(self.lower):
            frame[f"lo_{level}"] = self.lower[level]
            frame[f"hi_{level}"] = self.upper[level]
        return frame


def check_series(y: Any, years: Any | None = None, *, min_obs: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Validate a yearly series and return it as float64 values and int64 years.

    Args:
        y: the observations, one per year.
        years: the years of ``y``; consecutive integers. Defaults to ``0 .. len(y) - 1``.
        min_obs: the fewest observations accepted.

    Returns:
        ``(y, years)`` as 1-D numpy arrays.

    Raises:
        ValueError: when the series is not 1-D, too short, not finite, or its years are not
            consecutive.
    """
    values = np.asarray(y, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"a series must be one-dimensional, got shape {values.shape}")
    if values.size < min_obs:
        raise ValueError(f"a series needs at least {min_obs} observations, got {values.size}")
    if not np.all(np.isfinite(values)):
        raise ValueError("a series must not contain NaN or infinite values")
    if years is None:
        year_arr = np.arange(values.size, dtype=np.int64)
    else:
        year_arr = np.asarray(years)
        if year_arr.shape != values.shape:
            raise ValueError(f"years has shape {year_arr.shape} but y has shape {values.shape}")
        if not np.all(np.equal(np.mod(year_arr, 1), 0)):
            raise ValueError("years must be whole numbers")
        year_arr = year_arr.astype(np.int64)
        if np.any(np.diff(year_arr) != 1):
            raise ValueError("years must be consecutive (one observation per year, no gaps)")
    return values, year_arr


def check_levels(levels: Any) -> tuple[int, ...]:
    """Validate interval levels given in percent, e.g. ``(80, 95)``."""
    checked = tuple(int(level) for level in levels)
    for level in checked:
        if not 0 < level < 100:
            raise ValueError(f"interval levels are percentages in (0, 100), got {level}")
    return checked


class Forecaster(ABC):
    """Base class: input checks once, here; models implement ``_fit`` and ``_predict``.

    Subclasses set ``family`` (``"arima"``, ``"lstm"``, ``"naive"``, …) and, when they need
    more history than three points, ``min_obs``.
    """

    family: ClassVar[str] = "base"
    min_obs: ClassVar[int] = 3

    # -- public contract -------------------------------------------------------------------
    def fit(self, y: Any, years: Any | None = None) -> Self:
        """Fit the model to a yearly series.

        Args:
            y: observations, one per year, on the original scale.
            years: their consecutive years (defaults to ``0 .. n-1``).

        Returns:
            ``self``, fitted.
        """
        values, year_arr = check_series(y, years, min_obs=self.min_obs)
        self._reset()
        self._fit(values)
        self.y_ = values
        self.years_ = year_arr
        return self

    def predict(self, h: int, levels: Any = DEFAULT_LEVELS) -> Forecast:
        """Forecast the ``h`` years after the last fitted year.

        Args:
            h: the horizon, a positive number of years.
            levels: interval levels in percent.

        Returns:
            A :class:`Forecast` on the original scale.
        """
        self._check_fitted()
        if int(h) != h or h < 1:
            raise ValueError(f"the horizon must be a positive whole number of years, got {h}")
        h = int(h)
        checked = check_levels(levels)
        mean, bounds = self._predict(h, checked)
        years = np.arange(int(self.years_[-1]) + 1, int(self.years_[-1]) + 1 + h, dtype=np.int64)
        return Forecast(
            years=years,
            mean=np.asarray(mean, dtype=np.float64),
            lower={lv: np.asarray(bounds[lv][0], dtype=np.float64) for lv in checked},
            upper={lv: np.asarray(bounds[lv][1], dtype=np.float64) for lv in checked},
        )

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters given to ``__init__`` (scikit-learn convention)."""
        return {name: getattr(self, name) for name in _init_params(type(self))}

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` has run."""
        return hasattr(self, "y_")

    # -- persistence: JSON + npz, no pickle --------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to a directory as ``model.json`` and ``arrays.npz``.

        Returns:
            The directory written.
        """
        self._check_fitted()
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        state, arrays = self._get_state()
        document = {
            "class": class_path(type(self)),
            "family": self.family,
            "params": {name: encode_param(value) for name, value in self.get_params().items()},
            "state": state,
            "children": sorted(self._fitted_children()),
        }
        for name, child in self._fitted_children().items():
            child.save(directory / "children" / name)
        (directory / "model.json").write_text(json.dumps(document, indent=2, sort_keys=True, default=json_default))
        np.savez(directory / "arrays.npz", y_=self.y_, years_=self.years_, **arrays)
        return directory

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Rebuild a model saved with :meth:`save` (``allow_pickle=False``)."""
        directory = Path(path)
        document = json.loads((directory / "model.json").read_text())
        expected = class_path(cls)
        if document["class"] != expected:
            raise ValueError(f"{directory} holds a {document['class']}, not a {expected}")
        model = cls(**{name: decode_param(value) for name, value in document["params"].items()})
        with np.load(directory / "arrays.npz", allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        model.y_ = arrays.pop("y_")
        model.years_ = arrays.pop("years_")
        model._set_children({name: load_forecaster(directory / "children" / name) for name in document.get("children", [])})
        model._set_state(document["state"], arrays)
        return model

    # -- for subclasses -------------------------------------------------------------------
    @abstractmethod
    def _fit(self, y: np.ndarray) -> None:
        """Fit on a checked float64 series; set attributes ending in ``_``."""

    @abstractmethod
    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        """Return ``(mean, {level: (lower, upper)})`` on the original scale."""

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted state beyond ``y_``/``years_``: a JSON-able dict and named arrays."""
        return {}, {}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_get_state` returned."""
        return None

    def _fitted_children(self) -> dict[str, Forecaster]:
        """Fitted inner models a wrapper holds; each is saved in its own sub-directory."""
        return {}

    def _set_children(self, children: dict[str, Forecaster]) -> None:
        """Take back the inner models :meth:`_fitted_children` returned (before ``_set_state``)."""
        return None

    def _reset(self) -> None:
        """Forget a previous fit: drop every attribute ending in ``_``."""
        for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("_")]:
            delattr(self, name)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(y, years) first")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


#: model.json may only name classes from this package: it cannot make a loader run other code.
ALLOWED_MODULE_PREFIX = "pipeline."


def load_forecaster(path: str | Path) -> Forecaster:
    """Rebuild any saved co2cast forecaster; ``model.json`` names its class."""
    directory = Path(path)
    name = json.loads((directory / "model.json").read_text())["class"]
    return _import_forecaster_class(name).load(directory)


@functools.cache
def _init_params(cls: type) -> tuple[str, ...]:
    """The names of ``cls.__init__``'s hyperparameters (``self`` and ``**kwargs`` left out)."""
    parameters = inspect.signature(cls.__init__).parameters
    return tuple(name for name, p in parameters.items() if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD)


def class_path(cls: type) -> str:
    """``module.QualifiedName`` of a class, as written to ``model.json``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _import_forecaster_class(name: str) -> type[Forecaster]:
    import importlib

    module_name, _, class_name = name.rpartition(".")
    if not module_name.startswith(ALLOWED_MODULE_PREFIX):
        raise ValueError(f"{name} is not a co2cast forecaster (only classes under {ALLOWED_MODULE_PREFIX!r} load)")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Forecaster)):
        raise ValueError(f"{name} is not a Forecaster")
    return cls


def to_spec(model: Forecaster) -> dict[str, Any]:
    """A JSON-able description of an (unfitted) model: its class and every hyperparameter.

    Nested forecasters (a wrapper's inner model, a combination's members) are described the
    same way, recursively, so the spec is complete: hashing it identifies the model.

    Args:
        model: any forecaster.

    Returns:
        ``{"class": "pipeline.models....", "params": {...}}``.
    """
    return {"class": class_path(type(model)), "params": {name: encode_param(value) for name, value in model.get_params().items()}}


def from_spec(spec: dict[str, Any]) -> Forecaster:
    """Build the unfitted model a :func:`to_spec` document describes (package classes only)."""
    cls = _import_forecaster_class(str(spec["class"]))
    return cls(**{name: decode_param(value) for name, value in spec["params"].items()})


def clone(model: Forecaster) -> Forecaster:
    """A fresh, unfitted copy with the same hyperparameters (nested models cloned too)."""
    return type(model)(**{name: _clone_param(value) for name, value in model.get_params().items()})


def _clone_param(value: Any) -> Any:
    if isinstance(value, Forecaster):
        return clone(value)
    if isinstance(value, list | tuple):
        return type(value)(_clone_param(item) for item in value)
    if isinstance(value, dict):
        return {key: _clone_param(item) for key, item in value.items()}
    return value


def encode_param(value: Any) -> Any:
    """A hyperparameter as JSON: forecasters become ``{"$forecaster": spec}``, tuples lists."""
    if value is None or type(value) in (bool, int, float, str):
        return value  # already JSON (the run key describes every candidate at every size: keep this cheap)
    if isinstance(value, Forecaster):
        return {"$forecaster": to_spec(value)}
    if isinstance(value, list | tuple):
        return [encode_param(item) for item in value]
    if isinstance(value, dict):
        return {str(key): encode_param(item) for key, item in value.items()}
    return json.loads(json.dumps(value, default=json_default))


def decode_param(value: Any) -> Any:
    """Inverse of :func:`encode_param` (lists stay lists; models are rebuilt unfitted)."""
    if isinstance(value, dict):
        if set(value) == {"$forecaster"}:
            return from_spec(value["$forecaster"])
        return {key: decode_param(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_param(item) for item in value]
    return value
