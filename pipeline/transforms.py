"""Series transforms with exact inverses (log, sqrt, reciprocal, Box–Cox, differencing).

Elementwise transforms (log, sqrt, reciprocal, Box–Cox) are monotone, so a quantile of the
transformed forecast maps to the same quantile in levels exactly. Differencing of order ``d``
is inverted the way the original study had to work it out: a forecast of differences is turned
back into levels by cumulative sums starting from the last observed values.

A leaf of the package: it imports nothing from ``pipeline``; the wrapper that lets any model
use these transforms, :class:`pipeline.models.transformed.TransformedForecaster`, imports it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
from scipy import optimize, special, stats


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

    def _lambda_for_maths(self) -> float:
        # The transform is continuous in lambda with log at 0. scipy's inv_boxcox loses the
        # value for subnormal lambdas (5e-324 * z underflows to 0 and the inverse returns
        # exp(z)), so a lambda that small is the log transform it converges to.
        lmbda = self._fitted_lambda()
        return 0.0 if abs(lmbda) < TINY_LAMBDA else lmbda

    def _forward(self, y: np.ndarray) -> np.ndarray:
        return special.boxcox(y, self._lambda_for_maths())

    def _inverse(self, z: np.ndarray) -> np.ndarray:
        return special.inv_boxcox(z, self._lambda_for_maths())


LAMBDA_BOUNDS = (-1.0, 2.0)
#: Below this |lambda| Box–Cox is computed as its limit, the log (within 1e-12 relative).
TINY_LAMBDA = 1e-12


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
        """JSON-able description (the order; the remembered values are arrays)."""
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


def transform_from_dict(described: dict[str, Any]) -> Transform:
    """Rebuild a fitted elementwise transform from :meth:`Transform.to_dict`."""
    described = dict(described)
    name = described.pop("name")
    transform = make_transform(name, **described)
    if isinstance(transform, BoxCox):
        transform.lmbda_ = float(described["lmbda"])
    return transform


def allowed(name: str, y: np.ndarray) -> bool:
    """Whether an elementwise transform's domain holds the whole series (e.g. log: all > 0)."""
    try:
        make_transform(name)._check_domain(np.asarray(y, dtype=np.float64))
    except ValueError:
        return False
    return True
