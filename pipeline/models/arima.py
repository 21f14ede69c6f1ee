"""ARIMA with an AIC search over (p, q), the study's winning model, on statsmodels.

The differencing order comes from the ADF + KPSS rule of :func:`pipeline.diagnostics.ndiffs`
unless it is given. Orders are compared by AIC on the training window, which is comparable
across (p, q) for a fixed ``d`` and trend, not across different ``d`` (the likelihood is of a
differently differenced series), so ``d`` is fixed first and only (p, q) are searched.

Trend (``trend=None``, the default, picks by ``d``):

* ``d = 0``: ``"c"``, a constant mean;
* ``d = 1``: ``"t"``, a linear trend in levels, which statsmodels turns into a constant in the
  differences, i.e. a *drift*: yearly CO2 series keep moving in one direction, and without a
  drift the forecast of a trending series is flat;
* ``d >= 2``: ``"n"``, because a drift in the second differences would be a quadratic trend in
  levels, which explodes over a 2050 horizon.

Speed: each candidate is built with ``concentrate_scale=True`` (the innovation variance is
profiled out of the likelihood: one parameter fewer for the optimiser and its numerical
gradients, and usually fewer iterations; the AIC still counts it, so values equal the
unconcentrated model's at the optimum) and fitted with ``cov_type="none"`` (no numerical
Hessian: the search needs the likelihood, not standard errors), warnings silenced, and
statsmodels' own optimiser settings otherwise (``maxiter=50`` by default), so the chosen
candidate's parameters are exactly those of ``ARIMA(y, order, trend,
concentrate_scale=True).fit()``. The one exception is ``p = q = 0`` with trend ``"n"`` (e.g.
ARIMA(0,2,0), the stepwise search's (0, 0) start when ``d >= 2``): there the variance is the
only parameter, statsmodels cannot concentrate it out (it fails with "not enough values to
unpack"), so that model is built unconcentrated (:func:`concentrate_scale`). ``low_memory=True`` is deliberately not used: it is no faster
here and its log-likelihood counts the diffuse first observations, which shifts the AIC by an
amount that varies with the order. BLAS is limited to one thread while fitting
(:func:`pipeline.blas.single_threaded_blas`): the matrices are tiny and idle-spinning BLAS threads on a busy
machine were the largest cost.

Search: the default ``search="stepwise"`` is the Hyndman–Khandakar walk of R's ``auto.arima``
(start from (2,2), (0,0), (1,0), (0,1); move to the first neighbour (p±1, q±1) that lowers the AIC; stop when none
does); ``search="grid"`` fits every (p, q) up to ``max_p``/``max_q``. Candidates whose optimiser
did not converge, or that fail, are kept in ``search_`` but not chosen while a converged one
exists.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from statsmodels.tsa.ar_model import AutoReg, ar_select_order
from statsmodels.tsa.arima.model import ARIMA

from pipeline.blas import single_threaded_blas
from pipeline.models.base import Forecaster
from pipeline.stationarity import ndiffs


def default_trend(d: int) -> str:
    """The trend term used when none is given (see the module docstring).

    Args:
        d: the differencing order.

    Returns:
        ``"c"`` for ``d = 0``, ``"t"`` (drift) for ``d = 1``, ``"n"`` otherwise.
    """
    return {0: "c", 1: "t"}.get(int(d), "n")


def concentrate_scale(p: int, q: int, trend: str) -> bool:
    """Whether a candidate is built with ``concentrate_scale=True``.

    Not when the innovation variance would be the only parameter (``p = q = 0``, trend
    ``"n"``): statsmodels cannot profile out a model's last parameter. Fitting and
    rebuilding from saved parameters both ask this, so the parameter vector (with or without
    ``sigma2``) means the same thing in both.

    Args:
        p: AR order.
        q: MA order.
        trend: statsmodels trend term.

    Returns:
        ``True`` unless ``p == q == 0`` and ``trend == "n"``.
    """
    return not (int(p) == 0 and int(q) == 0 and trend == "n")


class ArimaForecaster(Forecaster):
    """ARIMA(p, d, q) chosen by AIC, forecasting levels with 80/95 % intervals.

    Args:
        order: a fixed ``(p, d, q)``, or ``None`` to search.
        max_p: largest AR order searched.
        max_q: largest MA order searched.
        d: differencing order; ``None`` takes it from the ADF + KPSS rule.
        trend: statsmodels trend (``"n"``, ``"c"``, ``"t"``, ``"ct"``); ``None`` picks by ``d``.
        search: ``"stepwise"`` (Hyndman–Khandakar) or ``"grid"`` (every p, q).
        max_d: largest ``d`` the rule may pick.
        maxiter: optimiser iterations per candidate (statsmodels' default is 50).

    Attributes:
        order_: the chosen ``(p, d, q)``.
        trend_: the trend term used.
        aic_: AIC of the chosen model on the training window.
        params_: fitted parameters (array, statsmodels order; names in ``param_names_``).
        search_: one dict per candidate tried, in order: ``p, d, q, trend, aic, converged,
            error``.
        results_: the statsmodels results object the forecasts come from.
    """

    family: ClassVar[str] = "arima"
    min_obs: ClassVar[int] = 10

    def __init__(
        self,
        order: tuple[int, int, int] | list[int] | None = None,
        max_p: int = 3,
        max_q: int = 3,
        d: int | None = None,
        trend: str | None = None,
        search: str = "stepwise",
        max_d: int = 2,
        maxiter: int = 50,
    ) -> None:
        self.order = order
        self.max_p = max_p
        self.max_q = max_q
        self.d = d
        self.trend = trend
        self.search = search
        self.max_d = max_d
        self.maxiter = maxiter

    # -- fitting ---------------------------------------------------------------------------
    def _fit(self, y: np.ndarray) -> None:
        with single_threaded_blas():
            self._search(y)

    def _search(self, y: np.ndarray) -> None:
        if self.order is not None:
            p, d, q = (int(v) for v in self.order)
            candidates_needed = [(p, q)]
        else:
            d = int(self.d) if self.d is not None else ndiffs(y, max_d=self.max_d)
            candidates_needed = []
        trend = self.trend if self.trend is not None else default_trend(d)

        tried: dict[tuple[int, int], tuple[dict[str, Any], Any]] = {}

        def attempt(p: int, q: int) -> float:
            """Fit (p, d, q) once; return its AIC for selection (inf if unusable)."""
            if (p, q) not in tried:
                tried[(p, q)] = self._fit_candidate(y, (p, d, q), trend)
            row, _ = tried[(p, q)]
            return row["aic"] if row["converged"] and row["aic"] is not None else math.inf

        if candidates_needed:
            attempt(*candidates_needed[0])
        elif self.search == "grid":
            for p in range(int(self.max_p) + 1):
                for q in range(int(self.max_q) + 1):
                    attempt(p, q)
        elif self.search == "stepwise":
            self._stepwise(attempt)
        else:
            raise ValueError(f"unknown search {self.search!r}; use 'stepwise' or 'grid'")

        rows = [row for row, _ in tried.values()]
        usable = [(row, res) for row, res in tried.values() if res is not None and row["aic"] is not None]
        if not usable:
            errors = "; ".join(f"({r['p']},{r['d']},{r['q']}): {r['error']}" for r in rows)
            raise RuntimeError(f"no ARIMA candidate could be fitted: {errors}")
        converged = [(row, res) for row, res in usable if row["converged"]]
        # Prefer converged fits; a non-converged one only when nothing converged at all.
        best_row, best_res = min(converged or usable, key=lambda pair: pair[0]["aic"])

        self.order_ = (int(best_row["p"]), int(best_row["d"]), int(best_row["q"]))
        self.trend_ = trend
        self.aic_ = float(best_row["aic"])
        self.params_ = np.asarray(best_res.params, dtype=np.float64)
        self.param_names_ = [str(name) for name in best_res.model.param_names]
        self.search_ = rows
        # Forecast from a filter at the chosen parameters: the very path load() takes, so a
        # loaded model forecasts bit-for-bit what this one does.
        self.results_ = self._rebuild(y)

    def _stepwise(self, attempt: Callable[[int, int], float]) -> None:
        max_p, max_q = int(self.max_p), int(self.max_q)
        starts = [(2, 2), (0, 0), (1, 0), (0, 1)]
        scores = {}
        for p, q in starts:
            p, q = min(p, max_p), min(q, max_q)
            scores[(p, q)] = attempt(p, q)
        best = min(scores, key=lambda key: scores[key])
        best_aic = scores[best]
        moves = [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, 1), (-1, 1), (1, -1)]
        improved = True
        # Each accepted move lowers the AIC, and the grid is finite, so this ends.
        while improved:
            improved = False
            for dp, dq in moves:
                p, q = best[0] + dp, best[1] + dq
                if not (0 <= p <= max_p and 0 <= q <= max_q):
                    continue
                aic = attempt(p, q)
                if aic < best_aic:
                    best, best_aic, improved = (p, q), aic, True
                    break

    def _fit_candidate(self, y: np.ndarray, order: tuple[int, int, int], trend: str) -> tuple[dict[str, Any], Any]:
        row: dict[str, Any] = {"p": order[0], "d": order[1], "q": order[2], "trend": trend, "aic": None, "converged": False, "error": None}
        try:
            with warnings.catch_warnings():
                # ConvergenceWarning, non-stationary/non-invertible start values: recorded in
                # the row instead of flooding the task log.
                warnings.simplefilter("ignore")
                concentrate = concentrate_scale(order[0], order[2], trend)
                result = ARIMA(y, order=order, trend=trend, concentrate_scale=concentrate).fit(
                    cov_type="none", method_kwargs={"maxiter": int(self.maxiter)}
                )
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as error:
            row["error"] = f"{type(error).__name__}: {error}"
            return row, None
        aic = float(result.aic)
        row["aic"] = aic if math.isfinite(aic) else None
        row["converged"] = bool(result.mle_retvals.get("converged", False)) if result.mle_retvals else False
        return row, result

    def _rebuild(self, y: np.ndarray) -> Any:
        with warnings.catch_warnings(), single_threaded_blas():
            warnings.simplefilter("ignore")
            concentrate = concentrate_scale(self.order_[0], self.order_[2], self.trend_)
            return ARIMA(y, order=self.order_, trend=self.trend_, concentrate_scale=concentrate).filter(self.params_)

    # -- forecasting -----------------------------------------------------------------------
    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        with single_threaded_blas():
            forecast = self.results_.get_forecast(h)
        mean = np.asarray(forecast.predicted_mean, dtype=np.float64)
        bounds = {}
        for level in levels:
            interval = np.asarray(forecast.conf_int(alpha=1 - level / 100), dtype=np.float64)
            bounds[level] = (interval[:, 0], interval[:, 1])
        return mean, bounds

    # -- persistence -----------------------------------------------------------------------
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        state = {
            "order": list(self.order_),
            "trend": self.trend_,
            "aic": self.aic_,
            # float -> JSON -> float round-trips exactly (shortest repr), so no npz needed.
            "params": [float(v) for v in self.params_],
            "param_names": self.param_names_,
            "search": self.search_,
        }
        return state, {}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.order_ = tuple(int(v) for v in state["order"])
        self.trend_ = str(state["trend"])
        self.aic_ = float(state["aic"])
        self.params_ = np.asarray(state["params"], dtype=np.float64)
        self.param_names_ = list(state["param_names"])
        self.search_ = list(state["search"])
        self.results_ = self._rebuild(self.y_)


class ArmaForecaster(ArimaForecaster):
    """ARMA(p, q) on the levels around a linear trend (``d = 0``), (p, q) by a stepwise AIC search.

    A trend-stationary alternative to ARIMA's differencing: deviations from a straight line
    revert, instead of every shock persisting.

    Args:
        max_p: largest AR order searched.
        max_q: largest MA order searched.
        trend: statsmodels trend term (``"ct"``: constant and linear trend).
        maxiter: optimiser iterations per candidate.
    """

    family: ClassVar[str] = "arma"
    order: ClassVar[None] = None
    d: ClassVar[int] = 0
    max_d: ClassVar[int] = 0
    search: ClassVar[str] = "stepwise"

    def __init__(self, max_p: int = 1, max_q: int = 1, trend: str = "ct", maxiter: int = 50) -> None:
        self.max_p = max_p
        self.max_q = max_q
        self.trend = trend
        self.maxiter = maxiter


class ArForecaster(Forecaster):
    """AR(p) on the levels around a trend, by least squares (statsmodels ``AutoReg``).

    The lags are chosen by AIC with ``ar_select_order`` (all lags up to ``max_p`` compared on
    the same sample); intervals are ``AutoReg``'s dynamic forecast intervals. Least squares is
    deterministic, so loading refits on the saved series.

    Args:
        max_p: largest AR order searched.
        trend: ``"c"``, ``"t"``, ``"ct"`` (constant and linear trend) or ``"n"``.

    Attributes:
        lags_: the chosen lags (empty: trend only).
    """

    family: ClassVar[str] = "ar"
    min_obs: ClassVar[int] = 10

    def __init__(self, max_p: int = 3, trend: str = "ct") -> None:
        self.max_p = max_p
        self.trend = trend

    def _fit(self, y: np.ndarray) -> None:
        with warnings.catch_warnings(), single_threaded_blas():
            warnings.simplefilter("ignore")
            max_p = max(0, min(int(self.max_p), y.size // 3))
            selected = ar_select_order(y, maxlag=max_p, trend=str(self.trend), ic="aic").ar_lags
            self.lags_ = [int(lag) for lag in (selected or [])]
            self.results_ = AutoReg(y, lags=self.lags_ or 0, trend=str(self.trend)).fit()
        self.params_ = np.asarray(self.results_.params, dtype=np.float64)

    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        n = self.y_.size
        with warnings.catch_warnings(), single_threaded_blas():
            warnings.simplefilter("ignore")
            prediction = self.results_.get_prediction(start=n, end=n + h - 1)
            mean = np.asarray(prediction.predicted_mean, dtype=np.float64)
            bounds = {}
            for level in levels:
                interval = np.asarray(prediction.conf_int(alpha=1 - level / 100), dtype=np.float64)
                bounds[level] = (interval[:, 0], interval[:, 1])
        return mean, bounds

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"lags": self.lags_, "params": [float(v) for v in self.params_]}, {}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self._fit(self.y_)
        if self.lags_ != list(state["lags"]) or not np.allclose(self.params_, state["params"], rtol=1e-9, atol=1e-12):
            raise ValueError("refitting the saved series did not reproduce the saved AR model")
