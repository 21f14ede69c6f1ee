"""The simple (Elman) RNN of reference 002 in numpy.

Forward pass for one time step, and a dense layer on the last step::

    a = W x + R h⁻ + b        h = tanh(a)        (h⁻ = 0 at the start of each window)
    out = W_dense h_T + b_dense

Backpropagation through time (``δ•`` = dLoss/d•)::

    δh = Δ + Rᵀ δa⁺           δa = δh ⊙ (1 - h²)
    δW = Σ δa xᵀ              δR = Σ δa⁺ hᵀ          δb = Σ δa

with ``Δ`` from the dense layer on the last step only. Reference 002 writes ``U`` for the
input and ``W`` for the recurrent matrix; here they are ``W`` and ``R`` as in the LSTM.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import numpy as np

from pipeline.models.neural import NeuralForecaster, RecurrentNet, Workspace, glorot_uniform, orthogonal


class RNNCache(NamedTuple):
    """Forward-pass values for backpropagation, time-major.

    Attributes:
        xh: per step the stacked column ``[x_t; h_{t-1}; 1]``, ``(T + 1, n_in + H + 1, B)``;
            the state after step ``t`` is ``xh[t + 1, n_in : n_in + H]``.
        n_in: input features per step.
    """

    xh: np.ndarray
    n_in: int


def rnn_forward(params: dict[str, np.ndarray], X: np.ndarray, work: Workspace | None = None) -> tuple[np.ndarray, RNNCache]:
    """Run the RNN over a batch of windows and the dense layer on the last state.

    Vectorised over the batch; per step one matrix product ``[W R b] [x_t; h_{t-1}; 1]``
    (rows: units, columns: windows) and one ``tanh``.

    Args:
        params: ``W (H, n_in)``, ``R (H, H)``, ``b (H,)`` as in ``W x + R h⁻ + b``;
            ``W_dense (n_out, H)``, ``b_dense (n_out,)``.
        X: windows, ``(B, T, n_in)``.
        work: scratch to reuse between calls (see :class:`~pipeline.models.neural.Workspace`);
            the cache then lives in it. Default: fresh arrays.

    Returns:
        ``(outputs (B, n_out), cache)``.
    """
    work = Workspace() if work is None else work
    W, R, b = params["W"], params["R"], params["b"]
    dtype = W.dtype
    B, T, n_in = X.shape
    H = R.shape[0]
    U = np.concatenate([W, R, b[:, None]], axis=1)
    xh = work.empty("xh", (T + 1, n_in + H + 1, B), dtype)
    xh[:T, :n_in] = X.transpose(1, 2, 0)
    xh[T, :n_in] = 0
    xh[0, n_in:-1] = 0  # h_0 = 0
    xh[:, -1] = 1  # the bias row
    for t in range(T):
        ht = xh[t + 1, n_in:-1]
        np.matmul(U, xh[t], out=ht)
        np.tanh(ht, out=ht)
    out = (params["W_dense"] @ xh[T, n_in:-1]).T
    out += params["b_dense"]
    return out, RNNCache(xh=xh, n_in=n_in)


def rnn_backward(
    params: dict[str, np.ndarray], cache: RNNCache, d_out: np.ndarray, grads: dict[str, np.ndarray], work: Workspace | None = None
) -> None:
    """Backpropagation through time for :func:`rnn_forward`, writing into ``grads``.

    The derivatives ``1 - h²`` of all steps are computed at once before the loop, so a step
    is one product and one matrix product; the weight gradients are one batched product
    over all steps after it.

    Args:
        params: the parameters the forward pass used.
        cache: what the forward pass returned.
        d_out: dLoss/d outputs, ``(B, n_out)``.
        grads: arrays shaped like ``params``, overwritten with the gradients.
        work: scratch to reuse between calls; default: fresh arrays.
    """
    work = Workspace() if work is None else work
    R = params["R"]
    xh, n_in = cache
    T = xh.shape[0] - 1
    H, B = R.shape[0], xh.shape[2]
    dtype = R.dtype
    np.matmul(d_out.T, xh[T, n_in:-1].T, out=grads["W_dense"])
    grads["b_dense"][:] = d_out.sum(axis=0)
    dh = work.empty("dh", (H, B), dtype)
    np.matmul(params["W_dense"].T, d_out.T, out=dh)
    # δa_t = δh_t ⊙ (1 - h_t²): the factor for all steps at once, then one product per step.
    da = work.empty("da", (T, H, B), dtype)
    h = xh[1:, n_in:-1]
    np.multiply(h, h, out=da)
    np.subtract(1, da, out=da)
    RT = R.T
    for t in range(T - 1, -1, -1):
        da[t] *= dh
        if t > 0:
            np.matmul(RT, da[t], out=dh)
    # δ[W R b] = Σ_t δa_t [x_t; h_{t-1}; 1]ᵀ: one batched product and a sum over steps.
    dU_t = work.empty("dU_t", (T, H, xh.shape[1]), dtype)
    np.matmul(da, xh[:T].transpose(0, 2, 1), out=dU_t)
    dU = dU_t.sum(axis=0)
    grads["W"][:] = dU[:, :n_in]
    grads["R"][:] = dU[:, n_in:-1]
    grads["b"][:] = dU[:, -1]


class RNNNet(RecurrentNet):
    """The Elman RNN with a dense output layer, parameters in one flat vector."""

    forward_pass = staticmethod(rnn_forward)
    backward_pass = staticmethod(rnn_backward)

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        H = self.hidden
        return {"W": (H, self.n_in), "R": (H, H), "b": (H,), "W_dense": (self.n_out, H), "b_dense": (self.n_out,)}

    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        """Glorot input and output weights, orthogonal recurrent weights, zero biases.

        Args:
            rng: the seeded generator.

        Returns:
            Flat parameters in the network's dtype.
        """
        theta = np.zeros(self.size)
        v = self.layout.views(theta)
        v["W"][:] = glorot_uniform(rng, self.n_in, self.hidden, (self.hidden, self.n_in))
        v["R"][:] = orthogonal(rng, self.hidden)
        v["W_dense"][:] = glorot_uniform(rng, self.hidden, self.n_out, (self.n_out, self.hidden))
        return theta.astype(self.dtype)

    def named(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Views under the reference's names: ``W (H, n_in)``, ``R (H, H)``, ``b``, dense.

        Args:
            theta: flat parameters (or a flat gradient).

        Returns:
            name -> view.
        """
        v = self.layout.views(theta)
        return dict(v)


class RNNForecaster(NeuralForecaster):
    """Simple-RNN forecaster; hyperparameters as in :class:`~pipeline.models.neural.NeuralForecaster`."""

    family: ClassVar[str] = "rnn"
    net_class: ClassVar[type[RecurrentNet]] = RNNNet
