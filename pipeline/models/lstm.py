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
``b`` ``(4H,)`` with row blocks in the order z, in, for, out, so a time step's four
pre-activations are one matrix product of ``[b W R]`` with the stacked column
``[1; x_t; y_{t-1}]`` (the input projection and the bias ride along: two more columns, no
separate product or addition), and the weight gradients are one batched product after the
loop. :meth:`LSTMNet.named` gives the reference's per-gate arrays (``W_z = W[:H]``,
``R_in = R[H:2H]``, ``p_out``, …) as views.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import numpy as np

from pipeline.models.neural import NeuralForecaster, RecurrentNet, Workspace, glorot_uniform, orthogonal

GATES: tuple[str, ...] = ("z", "in", "for", "out")
PEEPHOLES: tuple[str, ...] = ("in", "for", "out")


class LSTMCache(NamedTuple):
    """Forward-pass values backpropagation needs, time-major (``(T, units, B)``).

    Attributes:
        xy: per step the stacked column ``[1; x_t; y_{t-1}]``, ``(T + 1, 1 + n_in + H, B)``;
            the block output of step ``t`` is ``xy[t + 1, 1 + n_in :]``.
        gates: activated gates ``[z; i; f; o]``, ``(T, 4H, B)``.
        cells: ``(T + 1, 2, H, B)``; ``cells[t, 0]`` is the cell entering step ``t`` (zero
            for ``t = 0``, so ``cells[t + 1, 0]`` is step ``t``'s cell) and ``cells[t, 1]``
            is ``tanh`` of step ``t``'s cell (``cells[T, 1]`` is unused). Paired like this,
            the forget and output gates' derivatives are scaled by them in one call.
        peep: the peepholes in, for, out spelled out over the batch, ``(3, H, B)``.
        n_in: input features per step.
    """

    xy: np.ndarray
    gates: np.ndarray
    cells: np.ndarray
    peep: np.ndarray
    n_in: int


def lstm_forward(params: dict[str, np.ndarray], X: np.ndarray, work: Workspace | None = None) -> tuple[np.ndarray, LSTMCache]:
    """Run the LSTM over a batch of windows and the dense layer on the last output.

    Vectorised over the batch; the loop is over time steps only. Per step, the stacked column
    ``[1; x_t; y_{t-1}]`` times ``[b W R]`` gives the pre-activations of all four gates in
    one matrix product (rows: units, columns: windows, so each gate is a contiguous block):
    the input projection ``W x_t + b`` rides along in the recurrent product at no extra call,
    and at the first step (``y_0 = 0``) only ``[b W]`` is multiplied. The logistic function
    is computed as ``σ(x) = (1 + tanh(x / 2)) / 2`` with the ``1/2`` folded into a copy of
    the sigmoid gates' weights and peepholes, so z, i and f take one ``tanh`` call
    (``scipy.special.expit`` is several times slower than numpy's ``tanh``).

    Args:
        params: ``W (4H, n_in)``, ``R (4H, H)`` and ``b (4H,)`` with row blocks z, in, for,
            out (``W[:H]`` is the reference's ``W_z``); ``p (3, H)`` the peepholes in, for,
            out; ``W_dense (n_out, H)``, ``b_dense (n_out,)``.
        X: windows, ``(B, T, n_in)``.
        work: scratch to reuse between calls (see :class:`~pipeline.models.neural.Workspace`);
            the cache then lives in it. Default: fresh arrays.

    Returns:
        ``(outputs (B, n_out), cache)``.
    """
    work = Workspace() if work is None else work
    W, R, p, b = params["W"], params["R"], params["p"], params["b"]
    dtype = W.dtype
    B, T, n_in = X.shape
    H = R.shape[1]
    K = 1 + n_in + H
    U = work.empty("U", (4 * H, K), dtype)
    U[:, 0] = b
    U[:, 1 : 1 + n_in] = W
    U[:, 1 + n_in :] = R
    U[H:] *= 0.5
    # Peepholes spelled out over the batch: numpy multiplies equal-shaped arrays several times
    # faster than one broadcast along the batch. The backward pass reuses them from the cache;
    # the forward pass uses a halved copy, like the sigmoid rows of U.
    peep = work.empty("peep", (3, H, B), dtype)
    np.copyto(peep, p[:, :, None])
    half_peep = work.empty("half_peep", (3, H, B), dtype)
    np.multiply(peep, dtype.type(0.5), out=half_peep)
    xy = work.empty("xy", (T + 1, K, B), dtype)
    xy[:, 0] = 1  # the bias row
    xy[:T, 1 : 1 + n_in] = X.transpose(1, 2, 0)
    xy[T, 1 : 1 + n_in] = 0
    xy[0, 1 + n_in :] = 0  # y_0 = 0 (the first step skips it; the R gradient reads it)
    gates = work.empty("gates", (T, 4 * H, B), dtype)
    G = gates.reshape(T, 4, H, B)  # G[t, k]: gate k (z, i, f, o) of step t
    cells = work.empty("cells", (T + 1, 2, H, B), dtype)
    cells[0, 0] = 0
    tmp = work.empty("tmp", (2, H, B), dtype)
    tmp0 = tmp[0]
    for t in range(T):
        g = G[t]
        c_prev, ct, tanh_ct = cells[t, 0], cells[t + 1, 0], cells[t, 1]
        if t > 0:
            np.matmul(U, xy[t], out=gates[t])
            # ī += p_in ⊙ c⁻ and f̄ += p_for ⊙ c⁻ in one product (c_0 = 0: none at t = 0).
            np.multiply(half_peep[:2], c_prev, out=tmp)
            g[1:3] += tmp
        else:
            np.matmul(U[:, : 1 + n_in], xy[0, : 1 + n_in], out=gates[0])
        # z = tanh(z̄), i = σ(ī), f = σ(f̄): one tanh, then (1 + ·) / 2 on i and f.
        np.tanh(g[:3], out=g[:3])
        g[1:3] *= 0.5
        g[1:3] += 0.5
        # c = z ⊙ i + c⁻ ⊙ f
        np.multiply(g[0], g[1], out=ct)
        if t > 0:
            np.multiply(c_prev, g[2], out=tmp0)
            ct += tmp0
        # ō += p_out ⊙ c (the output gate peeks at the new cell); o = σ(ō); y = o ⊙ tanh(c)
        ot = g[3]
        np.multiply(half_peep[2], ct, out=tmp0)
        ot += tmp0
        np.tanh(ot, out=ot)
        ot *= 0.5
        ot += 0.5
        np.tanh(ct, out=tanh_ct)
        np.multiply(ot, tanh_ct, out=xy[t + 1, 1 + n_in :])
    out = (params["W_dense"] @ xy[T, 1 + n_in :]).T
    out += params["b_dense"]
    return out, LSTMCache(xy=xy, gates=gates, cells=cells, peep=peep, n_in=n_in)


def lstm_backward(
    params: dict[str, np.ndarray], cache: LSTMCache, d_out: np.ndarray, grads: dict[str, np.ndarray], work: Workspace | None = None
) -> None:
    """Backpropagation through time for :func:`lstm_forward`, writing into ``grads``.

    One step at a time from the last, each in a few numpy calls on ``(., H, B)`` arrays that
    stay in the CPU cache: first the factors that do not depend on the incoming gradient
    (the gates' derivatives times the values they multiply), then::

        δō = δy ⊙ A_o      δc = δy ⊙ A_c + δc⁺ ⊙ A_carry⁺      [δz̄; δī; δf̄] = δc ⊙ A_zif
        δy⁻ = Rᵀ [δz̄; δī; δf̄; δō]

    Computing the factors for all steps at once before the loop takes fewer numpy calls but
    streams arrays of ``T · 5H · B`` values through memory a dozen times: at hidden 32 in
    float64 (batch 200, window 10) this backward pass took 1.9 ms that way and 1.6 ms step by
    step; at hidden 16 in float32, where those arrays fit in the cache, the two were level
    (6 December 2026). The weight and peephole gradients are batched products after the loop.

    Args:
        params: the parameters the forward pass used.
        cache: what the forward pass returned.
        d_out: dLoss/d outputs, ``(B, n_out)``.
        grads: arrays shaped like ``params``, overwritten with the gradients.
        work: scratch to reuse between calls; default: fresh arrays.
    """
    work = Workspace() if work is None else work
    R = params["R"]
    xy, gates, cells, peep, n_in = cache
    T, H4, B = gates.shape
    H = H4 // 4
    K = xy.shape[1]
    dtype = R.dtype
    np.matmul(d_out.T, xy[T, 1 + n_in :].T, out=grads["W_dense"])
    grads["b_dense"][:] = d_out.sum(axis=0)
    dy = work.empty("dy", (H, B), dtype)
    np.matmul(params["W_dense"].T, d_out.T, out=dy)

    G = gates.reshape(T, 4, H, B)
    dgates = work.empty("dgates", (T, 5, H, B), dtype)  # δz̄, δī, δf̄, δō, δc per step
    # The step's scratch, reused from step to step so it stays in the CPU cache: the
    # activations' derivatives D, the factors A = [A_z, A_i, A_f, A_o, A_c] and the carry.
    D = work.empty("deriv", (4, H, B), dtype)
    A = work.empty("a", (5, H, B), dtype)
    s = work.empty("s", (2, H, B), dtype)
    carry = work.empty("carry", (H, B), dtype)
    D_z, D_ifo, D_zi, D_fo = D[0], D[1:], D[:2], D[2:]
    A_zi, A_fo, A_zif, A_if, A_o, A_c = A[:2], A[2:4], A[:3], A[1:3], A[3], A[4]
    s0, p_if, p_out = s[0], peep[:2], peep[2]
    RT = R.T
    for t in range(T - 1, -1, -1):
        g, dg, c_pair = G[t], dgates[t], cells[t]
        # D: tanh' = 1 - z² and σ' = g - g² (one subtraction fewer than g (1 - g)).
        np.square(g, out=D)
        np.subtract(1, D_z, out=D_z)
        np.subtract(g[1:], D_ifo, out=D_ifo)
        # A_z = i ⊙ tanh'(z̄), A_i = z ⊙ σ'(ī) (z and i swapped by a reversed view: one
        # call), A_f = c⁻ ⊙ σ'(f̄) and A_o = tanh c ⊙ σ'(ō) (c⁻ and tanh c are paired in the
        # cache: one call), and the direct part of δc, A_c = o ⊙ tanh'(c) + p_out ⊙ A_o.
        np.multiply(g[1::-1], D_zi, out=A_zi)
        np.multiply(c_pair, D_fo, out=A_fo)
        np.square(c_pair[1], out=s0)
        np.subtract(1, s0, out=s0)
        np.multiply(s0, g[3], out=A_c)
        np.multiply(p_out, A_o, out=s0)
        A_c += s0
        # δō = δy ⊙ A_o; δc = δy ⊙ A_c + δc⁺ ⊙ A_carry⁺; [δz̄; δī; δf̄] = δc ⊙ A_zif
        dc = dg[4]
        np.multiply(dy, A_o, out=dg[3])
        np.multiply(dy, A_c, out=dc)
        if t < T - 1:
            np.multiply(dgates[t + 1, 4], carry, out=s0)
            dc += s0
        np.multiply(dc, A_zif, out=dg[:3])
        if t > 0:
            # What δc passes on to δc⁻: the forget path and the in/for peepholes,
            # A_carry = f + p_in ⊙ A_i + p_for ⊙ A_f.
            np.multiply(p_if, A_if, out=s)
            np.add(s0, s[1], out=carry)
            carry += g[2]
            np.matmul(RT, dg[:4].reshape(4 * H, B), out=dy)

    # δ[b W R] = Σ_t δg_t [1; x_t; y_{t-1}]ᵀ: one batched product (the stacked columns
    # copied batch-major first, the layout BLAS runs fastest on here) and a sum over steps.
    xy_t = work.empty("xy_t", (T, B, K), dtype)
    np.copyto(xy_t, xy[:T].transpose(0, 2, 1))
    dU_t = work.empty("dU_t", (T, 4 * H, K), dtype)
    np.matmul(dgates[:, :4].reshape(T, 4 * H, B), xy_t, out=dU_t)
    dU = dU_t.sum(axis=0)
    grads["b"][:] = dU[:, 0]
    grads["W"][:] = dU[:, 1 : 1 + n_in]
    grads["R"][:] = dU[:, 1 + n_in :]
    # Peepholes: δp_in = Σ c⁻ ⊙ δī, δp_for = Σ c⁻ ⊙ δf̄, δp_out = Σ c ⊙ δō.
    dpeep = work.empty("dpeep", (T, 3, H, B), dtype)
    np.multiply(dgates[:, 1:3], cells[:T, :1], out=dpeep[:, :2])
    np.multiply(dgates[:, 3], cells[1:, 0], out=dpeep[:, 2])
    grads["p"][:] = dpeep.sum(axis=0).sum(axis=-1)


class LSTMNet(RecurrentNet):
    """The peephole LSTM with a dense output layer, parameters in one flat vector."""

    forward_pass = staticmethod(lstm_forward)
    backward_pass = staticmethod(lstm_backward)

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
    """Peephole LSTM forecaster; hyperparameters as in :class:`~pipeline.models.neural.NeuralForecaster`."""

    family: ClassVar[str] = "lstm"
    net_class: ClassVar[type[RecurrentNet]] = LSTMNet
