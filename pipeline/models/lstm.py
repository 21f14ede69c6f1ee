"""The vanilla LSTM of "LSTM: A Search Space Odyssey" (Greff et al. 2017) in numpy.

Forward pass for one time step (reference 001; ``σ`` logistic, ``⊙`` elementwise)::

    z̄ = W_z x + R_z y⁻ + b_z                      z = tanh(z̄)        block input
    ī = W_in x + R_in y⁻ + p_in ⊙ c⁻ + b_in        i = σ(ī)           input gate
    f̄ = W_for x + R_for y⁻ + p_for ⊙ c⁻ + b_for    f = σ(f̄)           forget gate
    c = z ⊙ i + c⁻ ⊙ f                                                cell
    ō = W_out x + R_out y⁻ + p_out ⊙ c + b_out     o = σ(ō)           output gate
    y = tanh(c) ⊙ o                                                   block output

with ``y⁻, c⁻`` the previous step's output and cell (zero at the start of each window).
Backpropagation through time, from the last step back (``δ•`` = dLoss/d•)::

    δy = Δ + R_zᵀ δz̄⁺ + R_inᵀ δī⁺ + R_forᵀ δf̄⁺ + R_outᵀ δō⁺
    δō = δy ⊙ tanh(c) ⊙ σ'(ō)
    δc = δy ⊙ o ⊙ tanh'(c) + p_out ⊙ δō + p_in ⊙ δī⁺ + p_for ⊙ δf̄⁺ + δc⁺ ⊙ f⁺
    δf̄ = δc ⊙ c⁻ ⊙ σ'(f̄)      δī = δc ⊙ z ⊙ σ'(ī)      δz̄ = δc ⊙ i ⊙ tanh'(z̄)

(``⁺`` = the next step's value; ``Δ`` comes from the dense layer on the last step only) and
the parameter gradients are sums over steps: ``δW_• = Σ δ•̄ xᵀ``, ``δR_• = Σ δ•̄⁺ yᵀ``,
``δp_in = Σ c⁻ ⊙ δī``, ``δp_for = Σ c⁻ ⊙ δf̄``, ``δp_out = Σ c ⊙ δō``, ``δb_• = Σ δ•̄``.

For speed the four gates are stored fused: ``W`` is ``(4H, n_in)``, ``R`` ``(4H, H)`` and
``b`` ``(4H,)`` with row blocks in the order z, in, for, out, so a time step is one
``(4H, H) @ (H, B)`` matmul; the input projection for all steps is one batched matmul before
the loop, and the weight gradients are one each after it. :meth:`LSTMNet.named` gives the
reference's per-gate arrays (``W_z = W[:H]``, ``R_in = R[H:2H]``, ``p_out``, …) as views.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import numpy as np

from pipeline.models.neural import NeuralForecaster, RecurrentNet, glorot_uniform, orthogonal

GATES: tuple[str, ...] = ("z", "in", "for", "out")
PEEPHOLES: tuple[str, ...] = ("in", "for", "out")


class LSTMCache(NamedTuple):
    """Forward-pass values backpropagation needs, time-major (``(T, units, B)``).

    Attributes:
        xy: per step the stacked column ``[x_t; y_{t-1}; 1]``, ``(T + 1, n_in + H + 1, B)``;
            the block output of step ``t`` is ``xy[t + 1, n_in : n_in + H]``.
        gates: activated gates ``[z; i; f; o]``, ``(T, 4H, B)``.
        c: cells with the zero initial cell first, ``(T + 1, H, B)``.
        tanh_c: ``tanh(c)`` per step, ``(T, H, B)``.
        n_in: input features per step.
    """

    xy: np.ndarray
    gates: np.ndarray
    c: np.ndarray
    tanh_c: np.ndarray
    n_in: int


def lstm_forward(params: dict[str, np.ndarray], X: np.ndarray) -> tuple[np.ndarray, LSTMCache]:
    """Run the LSTM over a batch of windows and the dense layer on the last output.

    Vectorised over the batch; the loop is over time steps only. Per step, the stacked column
    ``[x_t; y_{t-1}; 1]`` times ``[W R b]`` gives the pre-activations of all four gates in
    one matrix product (rows: units, columns: windows, so each gate is a contiguous block).
    The logistic function is computed as ``σ(x) = (1 + tanh(x / 2)) / 2`` with the ``1/2``
    folded into a copy of the sigmoid gates' weights and peepholes, so z, i and f take one
    ``tanh`` call (``scipy.special.expit`` is several times slower than numpy's ``tanh``).

    Args:
        params: ``W (4H, n_in)``, ``R (4H, H)`` and ``b (4H,)`` with row blocks z, in, for,
            out (``W[:H]`` is the reference's ``W_z``); ``p (3, H)`` the peepholes in, for,
            out; ``W_dense (n_out, H)``, ``b_dense (n_out,)``.
        X: windows, ``(B, T, n_in)``.

    Returns:
        ``(outputs (B, n_out), cache)``.
    """
    W, R, p, b = params["W"], params["R"], params["p"], params["b"]
    dtype = W.dtype
    B, T, n_in = X.shape
    H = R.shape[1]
    K = n_in + H + 1
    U = np.empty((4 * H, K), dtype=dtype)
    U[:, :n_in] = W
    U[:, n_in:-1] = R
    U[:, -1] = b
    U[H:] *= 0.5
    p_half = p * dtype.type(0.5)
    p_if, p_o = p_half[:2, :, None], p_half[2][:, None]
    xy = np.empty((T + 1, K, B), dtype=dtype)
    xy[:T, :n_in] = X.transpose(1, 2, 0)
    xy[T, :n_in] = 0
    xy[0, n_in:-1] = 0  # y_0 = 0
    xy[:, -1] = 1  # the bias column
    gates = np.empty((T, 4 * H, B), dtype=dtype)
    c = np.empty((T + 1, H, B), dtype=dtype)
    tanh_c = np.empty((T, H, B), dtype=dtype)
    c[0] = 0
    tmp = np.empty((H, B), dtype=dtype)
    tmp2 = np.empty((2, H, B), dtype=dtype)
    for t in range(T):
        g = gates[t]
        c_prev, ct = c[t], c[t + 1]
        np.matmul(U, xy[t], out=g)
        if t > 0:  # c_0 = 0: no peephole input at the first step
            # Input and forget gates peek at the previous cell.
            np.multiply(p_if, c_prev, out=tmp2)
            g[H : 3 * H] += tmp2.reshape(2 * H, B)
        zif = g[: 3 * H]
        np.tanh(zif, out=zif)
        gif = g[H : 3 * H]
        gif *= 0.5
        gif += 0.5
        np.multiply(g[:H], g[H : 2 * H], out=ct)
        if t > 0:
            np.multiply(c_prev, g[2 * H : 3 * H], out=tmp)
            ct += tmp
        # The output gate peeks at the new cell.
        ot = g[3 * H :]
        np.multiply(p_o, ct, out=tmp)
        ot += tmp
        np.tanh(ot, out=ot)
        ot *= 0.5
        ot += 0.5
        np.tanh(ct, out=tanh_c[t])
        np.multiply(ot, tanh_c[t], out=xy[t + 1, n_in:-1])
    out = (params["W_dense"] @ xy[T, n_in:-1]).T
    out += params["b_dense"]
    return out, LSTMCache(xy=xy, gates=gates, c=c, tanh_c=tanh_c, n_in=n_in)


def lstm_backward(params: dict[str, np.ndarray], cache: LSTMCache, d_out: np.ndarray, grads: dict[str, np.ndarray]) -> None:
    """Backpropagation through time for :func:`lstm_forward`, writing into ``grads``.

    Args:
        params: the parameters the forward pass used.
        cache: what the forward pass returned.
        d_out: dLoss/d outputs, ``(B, n_out)``.
        grads: arrays shaped like ``params``, overwritten with the gradients.
    """
    R, p = params["R"], params["p"]
    xy, gates, c, tanh_c, n_in = cache
    T, H4, B = gates.shape
    H = H4 // 4
    dtype = R.dtype
    np.matmul(d_out.T, xy[T, n_in:-1].T, out=grads["W_dense"])
    grads["b_dense"][:] = d_out.sum(axis=0)
    dy = params["W_dense"].T @ d_out.T
    dgates = np.empty((T, 4 * H, B), dtype=dtype)  # δz̄, δī, δf̄, δō per step
    dc = np.empty((H, B), dtype=dtype)
    carry = np.empty((H, B), dtype=dtype)  # what c reaches through step t + 1
    tmp = np.empty((H, B), dtype=dtype)
    tmp2 = np.empty((2 * H, B), dtype=dtype)
    RT = np.ascontiguousarray(R.T)
    # δ[W R b] = Σ_t δg_t [x_t; y_{t-1}; 1]ᵀ, one small product per step: it stays
    # single-threaded and near peak speed, where one product over all T * B columns is a
    # long-and-thin shape that OpenBLAS threads badly on small, busy machines.
    dU = np.zeros((4 * H, n_in + H + 1), dtype=dtype)
    dU_t = np.empty_like(dU)
    p_if, p_o = p[:2, :, None], p[2][:, None]
    for t in range(T - 1, -1, -1):
        g, dg = gates[t], dgates[t]
        zt, it, ft, ot = g[:H], g[H : 2 * H], g[2 * H : 3 * H], g[3 * H :]
        tc = tanh_c[t]
        # δō = δy ⊙ tanh(c) ⊙ o(1 - o)
        do = dg[3 * H :]
        np.subtract(1, ot, out=tmp)
        tmp *= ot
        np.multiply(dy, tc, out=do)
        do *= tmp
        # δc = δy ⊙ o ⊙ (1 - tanh²c) + p_out ⊙ δō + carry
        np.multiply(tc, tc, out=dc)
        np.subtract(1, dc, out=dc)
        dc *= ot
        dc *= dy
        np.multiply(p_o, do, out=tmp)
        dc += tmp
        if t < T - 1:
            dc += carry
        # δī = δc ⊙ z ⊙ i(1 - i) and δf̄ = δc ⊙ c⁻ ⊙ f(1 - f), the two blocks at once
        gif = g[H : 3 * H]
        np.subtract(1, gif, out=tmp2)
        tmp2 *= gif
        np.multiply(dc, zt, out=dg[H : 2 * H])
        np.multiply(dc, c[t], out=dg[2 * H : 3 * H])
        dg[H : 3 * H] *= tmp2
        # δz̄ = δc ⊙ i ⊙ (1 - z²)
        np.multiply(zt, zt, out=tmp)
        np.subtract(1, tmp, out=tmp)
        tmp *= it
        np.multiply(dc, tmp, out=dg[:H])
        np.matmul(dg, xy[t].T, out=dU_t)
        dU += dU_t
        if t > 0:
            # What flows back to step t - 1: through the forget path, the peepholes, and y⁻.
            np.multiply(dc, ft, out=carry)
            np.multiply(p_if, dg[H : 3 * H].reshape(2, H, B), out=tmp2.reshape(2, H, B))
            carry += tmp2[:H]
            carry += tmp2[H:]
            np.matmul(RT, dg, out=dy)
    grads["W"][:] = dU[:, :n_in]
    grads["R"][:] = dU[:, n_in:-1]
    grads["b"][:] = dU[:, -1]
    # Peepholes: c_0 = 0, so step 0 adds nothing to the input and forget peepholes.
    dif = dgates[:, H : 3 * H].reshape(T, 2, H, B)
    grads["p"][:2] = np.einsum("tkhb,thb->kh", dif, c[:T])
    grads["p"][2] = np.einsum("thb,thb->h", dgates[:, 3 * H :], c[1:])


class LSTMNet(RecurrentNet):
    """The peephole LSTM with a dense output layer, parameters in one flat vector."""

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        H = self.hidden
        return {
            "W": (4 * H, self.n_in),
            "R": (4 * H, H),
            "p": (3, H),
            "b": (4 * H,),
            "W_dense": (self.n_out, H),
            "b_dense": (self.n_out,),
        }

    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        """Glorot input weights, orthogonal recurrent blocks, forget bias 1, peepholes 0.

        A forget-gate bias of 1 keeps the cell's memory open early in training (Jozefowicz
        et al. 2015); peepholes start at zero and are learned.

        Args:
            rng: the seeded generator.

        Returns:
            Flat parameters in the network's dtype.
        """
        H = self.hidden
        theta = np.zeros(self.size)
        v = self.layout.views(theta)
        v["W"][:] = glorot_uniform(rng, self.n_in, H, (4 * H, self.n_in))
        for k in range(4):
            v["R"][k * H : (k + 1) * H] = orthogonal(rng, H)
        v["b"][2 * H : 3 * H] = 1.0
        v["W_dense"][:] = glorot_uniform(rng, H, self.n_out, (self.n_out, H))
        return theta.astype(self.dtype)

    def forward(self, theta: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, LSTMCache]:
        """See :func:`lstm_forward`."""
        return lstm_forward(self.layout.views(theta), X)

    def backward(self, theta: np.ndarray, cache: LSTMCache, d_out: np.ndarray) -> np.ndarray:
        """See :func:`lstm_backward`; returns the flat gradient."""
        grad = np.empty_like(theta)
        lstm_backward(self.layout.views(theta), cache, d_out, self.layout.views(grad))
        return grad

    def named(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Per-gate views under the reference's names.

        Args:
            theta: flat parameters (or a flat gradient).

        Returns:
            ``W_z, W_in, W_for, W_out`` ``(H, n_in)``; ``R_*`` ``(H, H)``; ``p_in, p_for,
            p_out`` and ``b_*`` ``(H,)``; ``W_dense`` ``(n_out, H)``; ``b_dense``.
        """
        v = self.layout.views(theta)
        H = self.hidden
        out: dict[str, np.ndarray] = {}
        for k, gate in enumerate(GATES):
            block = slice(k * H, (k + 1) * H)
            out[f"W_{gate}"] = v["W"][block]
            out[f"R_{gate}"] = v["R"][block]
            out[f"b_{gate}"] = v["b"][block]
        for k, gate in enumerate(PEEPHOLES):
            out[f"p_{gate}"] = v["p"][k]
        out["W_dense"] = v["W_dense"]
        out["b_dense"] = v["b_dense"]
        return out


class LSTMForecaster(NeuralForecaster):
    """Peephole LSTM forecaster (see :class:`~pipeline.models.neural.NeuralForecaster`).

    Args:
        window: values per input window.
        hidden: LSTM units.
        d: differencing order before scaling.
        epochs: most training epochs.
        lr: learning rate.
        clip: global-norm gradient clip.
        patience: early-stopping patience in epochs.
        val_frac: share of (the most recent) windows for early stopping.
        seed: seeds the weights; same seed and data give identical forecasts.
        dtype: ``"float64"`` or ``"float32"``.
        optimizer: ``"adam"`` or ``"sgd"``.
        min_origins: fewest in-sample origins per horizon for the interval spread.
    """

    family: ClassVar[str] = "lstm"
    net_class: ClassVar[type[RecurrentNet]] = LSTMNet
