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

from pipeline.maths import integrated_error_std


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

    def inverse_interval(self, centre: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean and interval in levels from a forecast on the transformed scale.

        A bound beyond the edge of the transform's range (:meth:`_range`: a square root below
        0, a Box–Cox value below ``-1/λ``) is the edge, whose level is the domain's edge (0):
        squaring a negative lower bound would turn it into a large positive one. Bounds are
        ordered after the inverse (the reciprocal is decreasing).

        Raises:
            ValueError: the centre leaves the range (no level has that value), or a bound at
                an open edge maps to an infinite level (e.g. a reciprocal interval reaching 0).
        """
        low, high = self._range()
        centre = np.asarray(centre, dtype=np.float64)
        if np.any(centre < low) or np.any(centre > high):
            raise ValueError(f"the forecast on the {self.name} scale leaves the transform's range [{low:.4g}, {high:.4g}]")
        with np.errstate(divide="ignore"):  # a reciprocal bound at 0: refused just below
            mean = self.inverse_transform(centre)
            a = self.inverse_transform(np.clip(lower, low, high))
            b = self.inverse_transform(np.clip(upper, low, high))
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError(f"the {self.name} forecast has no finite level: its interval reaches the edge of the transform's range")
        return mean, lo, hi

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description, enough to rebuild the fitted transform."""
        return {"name": self.name}

    def _range(self) -> tuple[float, float]:
        """The values the transform takes on its domain (its inverse's domain)."""
        return -np.inf, np.inf

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

    def _range(self) -> tuple[float, float]:
        return 0.0, np.inf

    def _forward(self, y: np.ndarray) -> np.ndarray:
        return np.sqrt(y)

    def _inverse(self, z: np.ndarray) -> np.ndarray:
        return np.square(z)


class Reciprocal(Transform):
    """``1 / y``; needs values that are not zero, all of one sign (it is monotone only on one side of 0). Its own inverse."""

    name = "reciprocal"

    def fit(self, y: np.ndarray) -> Self:
        super().fit(y)
        self.sign_ = float(np.sign(np.asarray(y, dtype=np.float64)[0]))
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name} | ({"sign": self.sign_} if hasattr(self, "sign_") else {})

    def _range(self) -> tuple[float, float]:
        # 1/y of a positive series is positive; a bound at 0 is an infinite level.
        sign = getattr(self, "sign_", 0.0)  # not recorded (an older artefact): unbounded, as before
        return (0.0, np.inf) if sign > 0 else (-np.inf, 0.0) if sign < 0 else (-np.inf, np.inf)

    def _check_domain(self, y: np.ndarray) -> None:
        if np.any(y == 0):
            raise ValueError("reciprocal needs non-zero values; the series has zeros")
        if np.any(y > 0) and np.any(y < 0):
            raise ValueError("reciprocal needs values of one sign; the series changes sign")

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

    def _range(self) -> tuple[float, float]:
        # (y^λ - 1) / λ for y > 0: above -1/λ for λ > 0 (level 0 at the edge), below it for λ < 0.
        lmbda = self._lambda_for_maths()
        if lmbda > 0:
            return -1.0 / lmbda, np.inf
        return (-np.inf, -1.0 / lmbda) if lmbda < 0 else (-np.inf, np.inf)

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
        """Standard deviations of level forecast errors, from those of the ``d``-th differences.

        The inner model's error variance at step ``j`` is taken to be ``σ² Σ_{i<j} ψ_i²``, a
        linear process with impulse weights ``ψ`` (``ψ_0 = 1``), so ``σ = std_1`` and
        ``ψ_j = sqrt(max(std_{j+1}² − std_j², 0)) / σ``. The ``d`` cumulative sums of
        :meth:`inverse_forecast` turn ``ψ`` into its ``d``-fold running sum ``Ψ`` and the level
        variance is ``σ² Σ_{i<h} Ψ_i²`` (:func:`pipeline.maths.integrated_error_std`, shared with
        the lagged-difference regressions). The variances give only ``|ψ_j|``: the result is
        exact when every ``ψ_j ≥ 0`` (a random walk of differences, naive on ``d = 1``, gives
        exactly ARIMA(0, d + 1, 0)), too wide when some are negative, and a shrinking inner
        ``std`` counts as no new error. For white-noise differences (constant ``std``) it is the
        independent-errors sum ``Σ_j w_hj² σ²`` (for ``d = 2``: ``σ² h(h+1)(2h+1)/6``). Treating
        the steps' errors as independent instead would give bands far too narrow around an
        inner model whose ``std`` grows with the horizon (95 % bands held 52 % at step 10 for
        naive on ``d = 1``).
        """
        variance = np.square(np.asarray(std, dtype=np.float64))
        with np.errstate(invalid="ignore"):
            step = np.diff(variance, prepend=0.0)
        step[np.isnan(step) & np.isinf(variance)] = 0.0  # infinite after infinite: already counted
        return integrated_error_std(np.sqrt(np.maximum(step, 0.0)), self.order)

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
    sign = described.pop("sign", None)
    transform = make_transform(name, **described)
    if isinstance(transform, BoxCox):
        transform.lmbda_ = float(described["lmbda"])
    if isinstance(transform, Reciprocal) and sign is not None:
        transform.sign_ = float(sign)
    return transform


def allowed(name: str, y: np.ndarray) -> bool:
    """Whether an elementwise transform's domain holds the whole series (e.g. log: all > 0)."""
    try:
        make_transform(name)._check_domain(np.asarray(y, dtype=np.float64))
    except ValueError:
        return False
    return True
