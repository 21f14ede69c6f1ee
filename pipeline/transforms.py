"""Series transforms with exact inverses, and a wrapper that lets any model use them.

Elementwise transforms (log, sqrt, reciprocal, Box–Cox) are monotone, so a quantile of the
transformed forecast maps to the same quantile in levels exactly. Differencing of order ``d``
is inverted the way the original study had to work it out: a forecast of differences is turned
back into levels by cumulative sums starting from the last observed values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from scipy import optimize, special, stats

from pipeline.models.base import Forecaster, _json_default, load_forecaster


class Transform:
    """A fitted, invertible transform of a 1-D series."""

    name: ClassVar[str] = "identity"

    def fit(self, y: np.ndarray) -> Self:
        """Learn what the inverse needs from the training series; returns ``self``."""
        self._check_domain(np.asarray(y, dtype=np.float64))
        return self

    def transform(self, y: np.ndarray) -> np.ndarray:
        """Map ``y`` to the transformed scale."""
        y = np.asarray(y, dtype=np.float64)
        self._check_domain(y)
        return self._forward(y)

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        """Map values on the transformed scale back to levels, elementwise."""
        return self._inverse(np.asarray(z, dtype=np.float64))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description, enough to rebuild the fitted transform."""
        return {"name": self.name}

    def _check_domain(self, y: np.ndarray) -> None:
        return None

    def _forward(self, y: np.ndarray) -> np.ndarray:
        return y

    def _inverse(self, z: np.ndarray) -> np.ndarray:
        return z


class Log(Transform):
    """Natural logarithm; needs strictly positive values."""

    name = "log"

    def _check_domain(self, y: np.ndarray) -> None:
        if np.any(y <= 0):
            raise ValueError("log needs strictly positive values; the series has zeros or negatives")

    def _forward(self, y: np.ndarray) -> np.ndarray:
        return np.log(y)

    def _inverse(self, z: np.ndarray) -> np.ndarray:
        return np.exp(z)


class Sqrt(Transform):
    """Square root; needs non-negative values."""

    name = "sqrt"

    def _check_domain(self, y: np.ndarray) -> None:
        if np.any(y < 0):
            raise ValueError("sqrt needs non-negative values; the series has negatives")

    def _forward(self, y: np.ndarray) -> np.ndarray:
        return np.sqrt(y)

    def _inverse(self, z: np.ndarray) -> np.ndarray:
        return np.square(z)


class Reciprocal(Transform):
    """``1 / y``; needs values that are not zero. Its own inverse."""

    name = "reciprocal"

    def _check_domain(self, y: np.ndarray) -> None:
        if np.any(y == 0):
            raise ValueError("reciprocal needs non-zero values; the series has zeros")

    def _forward(self, y: np.ndarray) -> np.ndarray:
        return 1.0 / y

    def _inverse(self, z: np.ndarray) -> np.ndarray:
        return 1.0 / z


class BoxCox(Transform):
    """Box–Cox power transform; ``lmbda=None`` estimates it by maximum likelihood on fit."""

    name = "boxcox"

    def __init__(self, lmbda: float | None = None) -> None:
        self.lmbda = lmbda

    def fit(self, y: np.ndarray) -> Self:
        y = np.asarray(y, dtype=np.float64)
        self._check_domain(y)
        if self.lmbda is None:
            # Bounded like R's forecast::BoxCox.lambda: an unbounded search can pick a lambda
            # so large that the inverse loses most of its digits.
            fitted = stats.boxcox_normmax(y, method="mle", optimizer=_bounded_lambda)
            self.lmbda_ = float(fitted)
        else:
            self.lmbda_ = float(self.lmbda)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "lmbda": self._fitted_lambda()}

    def _fitted_lambda(self) -> float:
        if not hasattr(self, "lmbda_"):
            if self.lmbda is None:
                raise RuntimeError("BoxCox with an estimated lambda must be fitted first")
            self.lmbda_ = float(self.lmbda)
        return self.lmbda_

    def _check_domain(self, y: np.ndarray) -> None:
        if np.any(y <= 0):
            raise ValueError("Box-Cox needs strictly positive values; the series has zeros or negatives")

    def _forward(self, y: np.ndarray) -> np.ndarray:
        return special.boxcox(y, self._fitted_lambda())

    def _inverse(self, z: np.ndarray) -> np.ndarray:
        return special.inv_boxcox(z, self._fitted_lambda())


LAMBDA_BOUNDS = (-1.0, 2.0)


def _bounded_lambda(objective: Any) -> Any:
    return optimize.minimize_scalar(objective, bounds=LAMBDA_BOUNDS, method="bounded")


class Difference:
    """Differencing of order ``d`` with exact inverses.

    ``transform`` returns the ``n - d`` values of the ``d``-th difference. ``inverse_transform``
    rebuilds the whole training series from them and the first values remembered on fit;
    ``inverse_forecast`` turns forecast differences into levels that continue the series from
    its last observed values.
    """

    name: ClassVar[str] = "difference"

    def __init__(self, order: int = 1) -> None:
        self.order = order

    def fit(self, y: np.ndarray) -> Self:
        y = np.asarray(y, dtype=np.float64)
        if self.order < 0:
            raise ValueError(f"the differencing order must be >= 0, got {self.order}")
        if y.size <= self.order:
            raise ValueError(f"differencing of order {self.order} needs more than {self.order} values")
        # heads_[k] / tails_[k]: first / last value of the k-th difference, k = 0 .. d-1.
        self.heads_ = np.array([np.diff(y, k)[0] for k in range(self.order)])
        self.tails_ = np.array([np.diff(y, k)[-1] for k in range(self.order)])
        return self

    def transform(self, y: np.ndarray) -> np.ndarray:
        return np.diff(np.asarray(y, dtype=np.float64), self.order)

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        """Rebuild the fitted series from its ``d``-th difference."""
        out = np.asarray(z, dtype=np.float64)
        for k in reversed(range(self.order)):
            out = np.concatenate([[self.heads_[k]], self.heads_[k] + np.cumsum(out)])
        return out

    def inverse_forecast(self, z: np.ndarray) -> np.ndarray:
        """Levels for the years after the fitted series, from forecast ``d``-th differences."""
        out = np.asarray(z, dtype=np.float64)
        for k in reversed(range(self.order)):
            out = self.tails_[k] + np.cumsum(out)
        return out

    def integrate_std(self, std: np.ndarray) -> np.ndarray:
        """Standard deviations of integrated forecast errors, assuming independent errors.

        Exact for a random walk (``d = 1`` and white-noise differences); an approximation
        otherwise, used only where a model has no level-scale intervals of its own.
        """
        variance = np.square(np.asarray(std, dtype=np.float64))
        for _ in range(self.order):
            variance = np.cumsum(variance)
        return np.sqrt(variance)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "order": self.order}


ELEMENTWISE: dict[str, type[Transform]] = {
    "identity": Transform,
    "log": Log,
    "sqrt": Sqrt,
    "reciprocal": Reciprocal,
    "boxcox": BoxCox,
}


def make_transform(name: str, **kwargs: Any) -> Transform:
    """Build an elementwise transform by name (``identity``, ``log``, ``sqrt``, ``reciprocal``, ``boxcox``)."""
    try:
        return ELEMENTWISE[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown transform {name!r}; choose one of {sorted(ELEMENTWISE)}") from None


class TransformedForecaster(Forecaster):
    """Run any forecaster on a transformed and/or differenced series, forecast in levels.

    Args:
        model: the inner forecaster (unfitted); it is fitted on the transformed series.
        transform: name of an elementwise transform applied first.
        d: differencing order applied after the transform.
        boxcox_lambda: Box–Cox lambda (``None`` estimates it).
    """

    family: ClassVar[str] = "transformed"

    def __init__(self, model: Forecaster, transform: str = "identity", d: int = 0, boxcox_lambda: float | None = None) -> None:
        self.model = model
        self.transform = transform
        self.d = d
        self.boxcox_lambda = boxcox_lambda

    @property
    def min_obs(self) -> int:  # type: ignore[override]
        return self.model.min_obs + self.d

    def _fit(self, y: np.ndarray) -> None:
        kwargs = {"lmbda": self.boxcox_lambda} if self.transform == "boxcox" else {}
        self.transform_ = make_transform(self.transform, **kwargs).fit(y)
        scaled = self.transform_.transform(y)
        self.difference_ = Difference(self.d).fit(scaled)
        self.model.fit(self.difference_.transform(scaled))

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        inner = self.model.predict(h, levels)
        mean = self.transform_.inverse_transform(self.difference_.inverse_forecast(inner.mean))
        bounds = {}
        for level in levels:
            z = stats.norm.ppf(0.5 + level / 200)
            std = (inner.upper[level] - inner.lower[level]) / (2 * z)
            centre = self.difference_.inverse_forecast(inner.mean)
            half = z * self.difference_.integrate_std(std)
            lo = self.transform_.inverse_transform(centre - half)
            hi = self.transform_.inverse_transform(centre + half)
            # reciprocal is decreasing: keep lower <= upper on the level scale.
            bounds[level] = (np.minimum(lo, hi), np.maximum(lo, hi))
        return mean, bounds

    # -- persistence: the inner model is saved beside the wrapper's own files -----------------
    def save(self, path: str | Path) -> Path:
        """Write ``model.json`` + ``arrays.npz`` and the inner model under ``inner/``."""
        self._check_fitted()
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / "inner")
        document = {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "family": self.family,
            "params": {"transform": self.transform, "d": self.d, "boxcox_lambda": self.boxcox_lambda},
            "state": {"transform": self.transform_.to_dict()},
        }
        (directory / "model.json").write_text(json.dumps(document, indent=2, sort_keys=True, default=_json_default))
        np.savez(directory / "arrays.npz", y_=self.y_, years_=self.years_, heads_=self.difference_.heads_, tails_=self.difference_.tails_)
        return directory

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Rebuild a wrapper saved with :meth:`save` (no pickle)."""
        directory = Path(path)
        document = json.loads((directory / "model.json").read_text())
        model = cls(load_forecaster(directory / "inner"), **document["params"])
        described = dict(document["state"]["transform"])
        name = described.pop("name")
        model.transform_ = make_transform(name, **described)
        if name == "boxcox":
            model.transform_.lmbda_ = float(described["lmbda"])
        with np.load(directory / "arrays.npz", allow_pickle=False) as npz:
            model.y_, model.years_ = npz["y_"], npz["years_"]
            model.difference_ = Difference(int(document["params"]["d"]))
            model.difference_.heads_, model.difference_.tails_ = npz["heads_"], npz["tails_"]
        return model
