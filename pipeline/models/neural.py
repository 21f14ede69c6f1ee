"""What the numpy recurrent forecasters share: parameters, training loop, windows, intervals.

The LSTM (:mod:`pipeline.models.lstm`) and the simple RNN (:mod:`pipeline.models.rnn`) differ
only in their cell: a forward pass over a batch of windows and its backpropagation through
time. Everything else lives here, once:

* :class:`ParamLayout` keeps all weights of a network in one flat vector and hands out named
  views into it, so the optimiser and gradient clipping are a few whole-vector operations
  while the cell code still reads ``W``, ``R``, ``b``… by name.
* :func:`clip_by_global_norm`, :class:`Adam`, :func:`train` (full-batch, early stopping on a
  validation tail, best weights restored).
* :func:`make_windows` and :func:`recursive_forecast` (multi-step forecasts by feeding the
  model its own predictions).
* :class:`NeuralForecaster`, the :class:`~pipeline.models.base.Forecaster` both models are:
  difference (order ``d``), standardise, train on sliding windows, forecast recursively,
  invert exactly, and derive prediction intervals from the fitted model's own recursive
  errors by horizon.

No deep-learning framework is needed at run time; the networks are plain numpy (the LSTM's
logistic function is computed through ``tanh``), in float64 by default or float32 when asked.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pipeline.blas import single_threaded_blas
from pipeline.maths import z as normal_quantile
from pipeline.models.base import Forecaster
from pipeline.transforms import Difference

DTYPES: dict[str, type[np.floating[Any]]] = {"float64": np.float64, "float32": np.float32}
# Horizons whose error spread is estimated from in-sample origins at most; further ones are
# extrapolated. Bounds the fit's cost (one recursive pass per horizon) on long series.
MAX_ERROR_HORIZON = 60


def resolve_dtype(name: str) -> np.dtype[Any]:
    """The numpy dtype for a ``dtype`` hyperparameter (``"float64"`` or ``"float32"``).

    Args:
        name: the dtype's name.

    Returns:
        The numpy dtype.

    Raises:
        ValueError: for any other name.
    """
    try:
        return np.dtype(DTYPES[str(name)])
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}") from None


# -- parameters -------------------------------------------------------------------------------
class ParamLayout:
    """Named arrays laid out back to back in one flat vector.

    A network's parameters and their gradients are each one contiguous vector; the cell code
    works on reshaped views of it. Adam, clipping and copying the best weights are then single
    vector operations, and saving a model is saving one array.

    Args:
        shapes: name -> shape, in storage order.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        self.shapes = dict(shapes)
        self.slices: dict[str, slice] = {}
        offset = 0
        for name, shape in self.shapes.items():
            size = math.prod(shape)
            self.slices[name] = slice(offset, offset + size)
            offset += size
        self.size = offset

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Named views (not copies) into ``flat``: writing to a view writes to ``flat``.

        Args:
            flat: a contiguous vector of length :attr:`size`.

        Returns:
            name -> reshaped view.
        """
        if flat.shape != (self.size,):
            raise ValueError(f"expected a flat vector of {self.size} parameters, got shape {flat.shape}")
        return {name: flat[self.slices[name]].reshape(shape) for name, shape in self.shapes.items()}


class Workspace:
    """Scratch arrays kept between passes, one per name, reallocated only when the shape changes.

    A training pass over a couple of hundred windows needs a few arrays of up to a megabyte.
    Allocated afresh, arrays this size come from ``mmap`` and every page is faulted in again
    on each pass, which took as long as the arithmetic itself; reusing them avoids that. The
    arrays returned are only valid until the next pass that uses the same workspace, so a
    workspace belongs to one caller at a time (copies and pickles start empty).
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def empty(self, name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """An uninitialised array for ``name``, reused when shape and dtype match the last call.

        Args:
            name: which scratch array.
            shape: its shape.
            dtype: its dtype.

        Returns:
            The array (contents left over from the previous pass).
        """
        a = self._arrays.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self._arrays[name] = np.empty(shape, dtype=dtype)
        return a

    def __getstate__(self) -> dict[str, Any]:
        return {"_arrays": {}}


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int, shape: tuple[int, ...]) -> np.ndarray:
    """Glorot/Xavier uniform draws: keeps activations' variance roughly constant across layers.

    Args:
        rng: the random generator (seeded by the caller for reproducibility).
        fan_in: inputs per unit.
        fan_out: outputs per unit.
        shape: the shape drawn.

    Returns:
        A float64 array of ``shape``.
    """
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random ``n x n`` orthogonal matrix (QR of a Gaussian matrix, sign-fixed).

    Orthogonal recurrent weights neither shrink nor blow up the hidden state at the start of
    training, the usual choice for recurrent matrices (Saxe et al. 2014; Keras' default).

    Args:
        rng: the random generator.
        n: the size.

    Returns:
        A float64 ``(n, n)`` orthogonal matrix.
    """
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


class RecurrentNet(ABC):
    """A recurrent cell over windows plus a dense layer on its last output, with MSE loss.

    Subclasses define the layout (:meth:`_shapes`), the initialisation and the pure forward /
    backward functions. Inputs are batches of windows ``X`` of shape ``(batch, time, n_in)``;
    outputs ``(batch, n_out)``.

    Args:
        n_in: input features per time step (1 for a univariate series).
        hidden: hidden units.
        n_out: outputs of the dense layer.
        dtype: ``"float64"`` or ``"float32"``; parameters and arithmetic use it.
    """

    def __init__(self, n_in: int, hidden: int, n_out: int = 1, dtype: str = "float64") -> None:
        self.n_in = n_in
        self.hidden = hidden
        self.n_out = n_out
        self.dtype = resolve_dtype(dtype)
        self.layout = ParamLayout(self._shapes())
        # Scratch for predict and loss_and_grad, whose caches never outlive the call.
        self.work = Workspace()

    @property
    def size(self) -> int:
        """Number of trainable parameters."""
        return self.layout.size

    @abstractmethod
    def _shapes(self) -> dict[str, tuple[int, ...]]:
        """Storage names and shapes of the parameters."""

    @abstractmethod
    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        """Fresh flat parameters in :attr:`dtype`, drawn from ``rng``."""

    #: The architecture's pass functions, ``forward_pass(params, X, work)`` and
    #: ``backward_pass(params, cache, d_out, grads, work)`` (``staticmethod`` in subclasses).
    forward_pass: ClassVar[Callable[..., tuple[np.ndarray, Any]]]
    backward_pass: ClassVar[Callable[..., None]]

    def forward(self, theta: np.ndarray, X: np.ndarray, work: Workspace | None = None) -> tuple[np.ndarray, Any]:
        """``(outputs (batch, n_out), cache for backward)``; the cache lives in ``work`` if given."""
        return type(self).forward_pass(self.layout.views(theta), X, work)

    def backward(self, theta: np.ndarray, cache: Any, d_out: np.ndarray, work: Workspace | None = None) -> np.ndarray:
        """Flat gradient (a new array) of the loss given ``d_out = dLoss/d outputs``."""
        grad = np.empty_like(theta)
        type(self).backward_pass(self.layout.views(theta), cache, d_out, self.layout.views(grad), work)
        return grad

    @abstractmethod
    def named(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Views of ``theta`` under the reference's names (``W_z``, ``R_in``, ``p_out``, …)."""

    def predict(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Outputs for a batch of windows.

        Args:
            theta: flat parameters.
            X: windows, ``(batch, time, n_in)``.

        Returns:
            ``(batch, n_out)`` outputs.
        """
        return self.forward(theta, X, self.work)[0]

    def loss_and_grad(
        self, theta: np.ndarray, X: np.ndarray, target: np.ndarray, n_train: int | None = None
    ) -> tuple[float, float, np.ndarray]:
        """Mean squared error and its gradient over the first ``n_train`` windows.

        The remaining windows (the validation tail) go through the same forward pass, which
        gives their loss for early stopping at no extra pass; their output gradient is zero,
        so they do not move the weights.

        Args:
            theta: flat parameters.
            X: windows, ``(batch, time, n_in)``.
            target: ``(batch, n_out)`` targets.
            n_train: how many leading windows are trained on (default: all).

        Returns:
            ``(train_loss, validation_loss, flat_gradient)``; the validation loss is NaN when
            there is no validation tail.
        """
        n_train = X.shape[0] if n_train is None else n_train
        out, cache = self.forward(theta, X, self.work)
        err = out - target
        sq = np.square(err)
        train_loss = float(sq[:n_train].mean())
        val_loss = float(sq[n_train:].mean()) if n_train < X.shape[0] else math.nan
        d_out = np.zeros_like(err)
        d_out[:n_train] = err[:n_train] * (2.0 / (n_train * err.shape[1]))
        return train_loss, val_loss, self.backward(theta, cache, d_out, self.work)


# -- optimisation -------------------------------------------------------------------------------
def clip_by_global_norm(grad: np.ndarray, max_norm: float) -> tuple[np.ndarray, float]:
    """Rescale a gradient so its Euclidean norm is at most ``max_norm`` (in place).

    The direction is kept; only a step that would be too long is shortened, the remedy for
    exploding gradients in recurrent networks (Pascanu et al. 2013; reference 001 §3).

    Args:
        grad: the flat gradient, rescaled in place.
        max_norm: the largest norm let through; ``<= 0`` or ``inf`` disables clipping.

    Returns:
        ``(grad, norm_before_clipping)``.
    """
    norm = float(np.sqrt(np.dot(grad, grad)))
    if 0 < max_norm < norm:
        grad *= max_norm / norm
    return grad, norm


@dataclass
class Adam:
    """Adam (Kingma & Ba 2015) on one flat parameter vector, bias-corrected.

    Attributes:
        lr: the step size.
        beta1: decay of the first-moment average.
        beta2: decay of the second-moment average.
        eps: keeps the division finite.
    """

    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    t: int = 0
    m: np.ndarray | None = field(default=None, repr=False)
    v: np.ndarray | None = field(default=None, repr=False)

    def step(self, theta: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """Update ``theta`` in place from ``grad``.

        Args:
            theta: flat parameters, updated in place.
            grad: their gradient.

        Returns:
            The update added to ``theta``.
        """
        if self.m is None or self.v is None:
            self.m = np.zeros_like(theta)
            self.v = np.zeros_like(theta)
        self.t += 1
        self.m *= self.beta1
        self.m += (1 - self.beta1) * grad
        self.v *= self.beta2
        self.v += (1 - self.beta2) * np.square(grad)
        # Bias correction folded into the step size (same result, fewer array operations).
        step = self.lr * math.sqrt(1 - self.beta2**self.t) / (1 - self.beta1**self.t)
        update = -step * self.m / (np.sqrt(self.v) + self.eps)
        theta += update
        return update


@dataclass
class SGD:
    """Plain gradient descent; with clipping its update norm is at most ``lr * clip``."""

    lr: float = 0.01

    def step(self, theta: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """Update ``theta`` in place; returns the update."""
        update = -self.lr * grad
        theta += update
        return update


def make_optimizer(name: str, lr: float) -> Adam | SGD:
    """``"adam"`` or ``"sgd"`` with learning rate ``lr``."""
    if name == "adam":
        return Adam(lr=lr)
    if name == "sgd":
        return SGD(lr=lr)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")


@dataclass
class TrainResult:
    """What :func:`train` found.

    Attributes:
        theta: the weights with the lowest validation loss (or the last, without validation).
        best_epoch: the epoch those weights come from (0 = before any update).
        epochs_run: epochs actually run (early stopping may end sooner).
        train_loss: training loss per epoch, at the weights before that epoch's update.
        val_loss: validation loss per epoch, likewise.
        grad_norm: gradient norm before clipping, per epoch.
    """

    theta: np.ndarray
    best_epoch: int
    epochs_run: int
    train_loss: list[float]
    val_loss: list[float]
    grad_norm: list[float]


def train(
    net: RecurrentNet,
    theta: np.ndarray,
    X: np.ndarray,
    target: np.ndarray,
    n_train: int,
    *,
    epochs: int = 500,
    lr: float = 0.01,
    clip: float = 1.0,
    patience: int = 50,
    optimizer: str = "adam",
) -> TrainResult:
    """Full-batch training with gradient clipping and early stopping.

    One epoch is one forward + backward pass over all windows and one optimiser step. The
    series has a couple of hundred windows, so full batches are both the fastest choice and
    exactly reproducible (no shuffling). Windows from ``n_train`` on are the validation tail:
    they are scored in the same pass (see :meth:`RecurrentNet.loss_and_grad`); training stops
    after ``patience`` epochs without a better validation loss and the best weights are kept.

    Args:
        net: the network.
        theta: initial flat parameters (copied, not modified).
        X: all windows, training first then the validation tail, ``(batch, time, n_in)``.
        target: their targets, ``(batch, n_out)``.
        n_train: how many leading windows are trained on.
        epochs: the most epochs run.
        lr: the learning rate.
        clip: the global-norm gradient clip (``<= 0`` disables it).
        patience: epochs without validation improvement before stopping.
        optimizer: ``"adam"`` or ``"sgd"``.

    Returns:
        A :class:`TrainResult`.
    """
    theta = theta.copy()
    opt = make_optimizer(optimizer, lr)
    has_val = n_train < X.shape[0]
    best = theta.copy()
    best_loss = math.inf
    best_epoch = 0
    train_hist: list[float] = []
    val_hist: list[float] = []
    norms: list[float] = []
    epoch = 0
    for epoch in range(epochs + 1):
        train_loss, val_loss, grad = net.loss_and_grad(theta, X, target, n_train)
        train_hist.append(train_loss)
        val_hist.append(val_loss)
        score = val_loss if has_val else train_loss
        if not math.isfinite(score):
            break  # diverged: keep the best weights seen so far
        if score < best_loss:
            best_loss, best_epoch = score, epoch
            best[:] = theta
        elif epoch - best_epoch >= patience:
            break
        if epoch == epochs:
            break  # the last pass only scores the final weights
        grad, norm = clip_by_global_norm(grad, clip)
        norms.append(norm)
        opt.step(theta, grad)
    return TrainResult(theta=best, best_epoch=best_epoch, epochs_run=epoch, train_loss=train_hist, val_loss=val_hist, grad_norm=norms)


# -- windows and recursive forecasts ------------------------------------------------------------
def make_windows(z: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows of a series and the value after each.

    Args:
        z: the (transformed) series.
        window: inputs per window.

    Returns:
        ``(X, target)``: ``X[k] = z[k : k + window]`` with shape ``(n - window, window, 1)``,
        ``target[k] = z[k + window]`` with shape ``(n - window, 1)``.
    """
    z = np.asarray(z)
    X = np.lib.stride_tricks.sliding_window_view(z[:-1], window)
    return np.ascontiguousarray(X)[:, :, None], z[window:, None].copy()


def recursive_forecast(net: RecurrentNet, theta: np.ndarray, windows: np.ndarray, h: int) -> np.ndarray:
    """Forecast ``h`` steps from each window by feeding predictions back as inputs.

    Args:
        net: the network (univariate: ``n_in = n_out = 1``).
        theta: flat parameters.
        windows: ``(batch, window)`` last observed values, one row per forecast origin.
        h: the horizon.

    Returns:
        ``(batch, h)`` forecasts, all origins advanced together.
    """
    batch, window = windows.shape
    buf = np.empty((batch, window + h), dtype=net.dtype)
    buf[:, :window] = windows
    for j in range(h):
        buf[:, window + j] = net.predict(theta, buf[:, j : j + window, None])[:, 0]
    return buf[:, window:]


# -- the forecaster ---------------------------------------------------------------------------
class NeuralForecaster(Forecaster):
    """A recurrent network on the differenced, standardised series; forecasts in levels.

    Fitting: difference the series ``d`` times (:class:`~pipeline.transforms.Difference`),
    standardise the differences with their mean and standard deviation, cut sliding windows
    of ``window`` values with the next value as target, keep the last ``val_frac`` of windows
    as a validation tail, train from seeded weights with full-batch Adam, clipping and early
    stopping (:func:`train`). Forecasting: recurse from the last window, unscale, and undo the
    differencing exactly from the last observed values.

    Prediction intervals come from the fitted model's own multi-step errors. From every
    in-sample origin with a full window the model forecasts recursively, exactly as it does
    for the future, and the errors are measured on the level scale against what happened.
    For horizon ``j`` the interval is ``mean ± z_level · s_j`` with ``s_j`` the root mean
    square of the ``j``-step level errors (so a bias widens it) and ``z_level`` the normal
    quantile. Why this choice: the errors at long horizons come from heavily overlapping
    paths, too few and too dependent for stable tail quantiles, while their spread is well
    estimated; level errors already contain the accumulation through the inverse
    differencing, so no independence assumption is needed. ``s_j`` is estimated while at
    least ``min_origins`` origins reach horizon ``j`` (and up to ``MAX_ERROR_HORIZON``);
    beyond, it grows like ``sqrt(j)`` (random-walk accumulation) from the last estimated one.
    In-sample errors of a model stopped early on a validation tail are close to out-of-sample ones; the tests check that
    coverage on simulated random walks is near nominal. On the 20-60 points the zoo fits them on
    the bands cover less (a 95 % band held 0.66-0.82 of random-walk futures at 20 points, steps 1-10): what is
    published is calibrated on the backtest (:class:`~pipeline.models.calibrated.CalibratedForecaster`).

    On short series the validation tail (2-7 windows) often prefers the untrained network: a
    quarter of the LSTM fits on the OWID full-history panel to 2006 kept epoch 0, whose forecast
    is close to the drift, offset by the seed's initial weights. Training instead for
    ``max(best epoch, 20)`` epochs on every window was tried (5 December, validation 2007-2010
    only): the LSTM alone forecast worse (OWA 0.910 -> 0.950 on total CO2), the published
    champion moved within noise (0.874 -> 0.861 and 0.966 -> 0.965) through changed selections,
    and fits cost 4-7 % more CPU, which the all-series run cannot spare; so early stopping stays.

    Args:
        window: values per input window.
        hidden: hidden units.
        d: differencing order before scaling.
        epochs: most training epochs.
        lr: learning rate.
        clip: global-norm gradient clip (``<= 0`` disables it).
        patience: early-stopping patience in epochs.
        val_frac: share of windows (the most recent) used for early stopping.
        seed: seeds the weight initialisation; same seed and data give identical forecasts.
        dtype: ``"float64"`` or ``"float32"`` arithmetic for the network.
        optimizer: ``"adam"`` or ``"sgd"``.
        min_origins: fewest in-sample origins needed to estimate a horizon's error spread.
    """

    family: ClassVar[str] = "neural"
    net_class: ClassVar[type[RecurrentNet]]

    def __init__(
        self,
        window: int = 10,
        hidden: int = 16,
        d: int = 1,
        epochs: int = 500,
        lr: float = 0.01,
        clip: float = 1.0,
        patience: int = 50,
        val_frac: float = 0.15,
        seed: int = 0,
        dtype: str = "float64",
        optimizer: str = "adam",
        min_origins: int = 10,
    ) -> None:
        self.window = window
        self.hidden = hidden
        self.d = d
        self.epochs = epochs
        self.lr = lr
        self.clip = clip
        self.patience = patience
        self.val_frac = val_frac
        self.seed = seed
        self.dtype = dtype
        self.optimizer = optimizer
        self.min_origins = min_origins

    @property
    def min_obs(self) -> int:  # type: ignore[override]
        """``window + d`` values make one window; ask for a few more (train + validation)."""
        return int(self.window) + int(self.d) + 5

    def make_net(self) -> RecurrentNet:
        """The untrained network these hyperparameters describe."""
        return self.net_class(n_in=1, hidden=int(self.hidden), n_out=1, dtype=self.dtype)

    # -- fitting ---------------------------------------------------------------------------
    def _fit(self, y: np.ndarray) -> None:
        with single_threaded_blas():
            self._fit_network(y)

    def _fit_network(self, y: np.ndarray) -> None:
        self.difference_ = Difference(int(self.d)).fit(y)
        diffs = self.difference_.transform(y)
        self.loc_ = float(diffs.mean())
        std = float(diffs.std())
        # A constant difference (an exact linear trend for d = 1) has nothing to scale.
        self.scale_ = std if std > 0 else 1.0
        net = self.make_net()
        z = ((diffs - self.loc_) / self.scale_).astype(net.dtype)
        X, target = make_windows(z, int(self.window))
        n_val = min(max(1, round(float(self.val_frac) * X.shape[0])), X.shape[0] - 1) if self.val_frac > 0 else 0
        rng = np.random.default_rng(int(self.seed))
        result = train(
            net,
            net.init_params(rng),
            X,
            target,
            X.shape[0] - n_val,
            epochs=int(self.epochs),
            lr=float(self.lr),
            clip=float(self.clip),
            patience=int(self.patience),
            optimizer=str(self.optimizer),
        )
        self.net_ = net
        self.theta_ = result.theta
        self.best_epoch_ = result.best_epoch
        self.epochs_run_ = result.epochs_run
        self.train_loss_ = result.train_loss[result.best_epoch]
        self.val_loss_ = result.val_loss[result.best_epoch]
        self.horizon_rmse_ = self._horizon_rmse(y)

    def _scaled(self, y: np.ndarray) -> np.ndarray:
        return ((self.difference_.transform(y) - self.loc_) / self.scale_).astype(self.net_.dtype)

    def _horizon_rmse(self, y: np.ndarray) -> np.ndarray:
        """Root mean square level error of recursive forecasts by horizon, from in-sample origins."""
        z = self._scaled(y)
        w, d = int(self.window), int(self.d)
        m = z.size
        n_origins = m - w  # origins p = w .. m-1: forecast z[p], z[p+1], ... from z[p-w:p]
        need = min(int(self.min_origins), n_origins)
        h_max = min(n_origins - need + 1, MAX_ERROR_HORIZON)
        windows = np.lib.stride_tricks.sliding_window_view(z[: m - 1], w)[:n_origins]
        paths = recursive_forecast(self.net_, self.theta_, windows, h_max).astype(np.float64)
        levels = self._integrate(y, np.arange(w, m), paths * self.scale_ + self.loc_)
        # Level forecast for z-index p + j - 1 is for y-index p + d + j - 1.
        sq_sum = np.zeros(h_max)
        for j in range(1, h_max + 1):
            rows = n_origins - j + 1
            truth = y[w + d + j - 1 : w + d + j - 1 + rows]
            sq_sum[j - 1] = np.mean(np.square(truth - levels[:rows, j - 1]))
        return np.sqrt(sq_sum)

    def _integrate(self, y: np.ndarray, origins: np.ndarray, diffs: np.ndarray) -> np.ndarray:
        """Undo ``d``-th differencing for forecasts made at interior origins (vectorised).

        ``diffs[r]`` forecasts the ``d``-th differences from z-index ``origins[r]`` on; the
        levels continue the series from its values just before that point, the same
        cumulative sums :meth:`Difference.inverse_forecast` does at the series' end.
        """
        out = diffs
        d = int(self.d)
        for k in reversed(range(d)):
            # Last observed k-th difference before the origin: index origins + d - k - 1.
            tails = np.diff(y, k)[origins + d - k - 1]
            out = tails[:, None] + np.cumsum(out, axis=1)
        return out

    # -- forecasting -----------------------------------------------------------------------
    def _predict(self, h: int, levels: tuple[int, ...]) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        z = self._scaled(self.y_)
        last = z[-int(self.window) :][None, :]
        with single_threaded_blas():
            path = recursive_forecast(self.net_, self.theta_, last, h)[0].astype(np.float64)
        mean = self.difference_.inverse_forecast(path * self.scale_ + self.loc_)
        spread = self.horizon_spread(h)
        bounds = {}
        for level in levels:
            half = normal_quantile(level) * spread
            bounds[level] = (mean - half, mean + half)
        return mean, bounds

    def horizon_spread(self, h: int) -> np.ndarray:
        """Forecast error spread (level scale) for horizons ``1 .. h``.

        Args:
            h: the horizon.

        Returns:
            ``s_1 .. s_h``: estimated from in-sample errors where enough origins reach that
            far, then extended like ``sqrt(j)``.
        """
        self._check_fitted()
        known = self.horizon_rmse_
        if h <= known.size:
            return known[:h].copy()
        j = np.arange(known.size + 1, h + 1)
        return np.concatenate([known, known[-1] * np.sqrt(j / known.size)])

    # -- persistence -----------------------------------------------------------------------
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        state = {
            "loc": self.loc_,
            "scale": self.scale_,
            "best_epoch": self.best_epoch_,
            "epochs_run": self.epochs_run_,
            "train_loss": self.train_loss_,
            "val_loss": None if math.isnan(self.val_loss_) else self.val_loss_,
        }
        return state, {"theta": self.theta_, "horizon_rmse": self.horizon_rmse_}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.net_ = self.make_net()
        self.theta_ = arrays["theta"].astype(self.net_.dtype)
        self.horizon_rmse_ = arrays["horizon_rmse"]
        self.loc_ = float(state["loc"])
        self.scale_ = float(state["scale"])
        self.best_epoch_ = int(state["best_epoch"])
        self.epochs_run_ = int(state["epochs_run"])
        self.train_loss_ = float(state["train_loss"])
        self.val_loss_ = math.nan if state["val_loss"] is None else float(state["val_loss"])
        # Difference keeps only the first/last values of the fitted series: refit it on y_.
        self.difference_ = Difference(int(self.d)).fit(self.y_)
