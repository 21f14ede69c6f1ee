"""Numerical and contract tests of the numpy LSTM and simple RNN (pipeline.models.lstm / rnn)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.maths import z
from pipeline.models.lstm import LSTMForecaster, LSTMNet
from pipeline.models.neural import SGD, RecurrentNet, clip_by_global_norm, make_windows, train
from pipeline.models.rnn import RNNForecaster, RNNNet

NETS = [pytest.param(LSTMNet, id="lstm"), pytest.param(RNNNet, id="rnn")]
FORECASTERS = [pytest.param(LSTMForecaster, id="lstm"), pytest.param(RNNForecaster, id="rnn")]
FAST = {"window": 6, "hidden": 8, "epochs": 150, "patience": 30}


def _random_problem(net: RecurrentNet, seed: int = 0, batch: int = 5, steps: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 0.5, net.size)  # every parameter non-zero, peepholes included
    X = rng.normal(size=(batch, steps, net.n_in))
    target = rng.normal(size=(batch, net.n_out))
    return theta, X, target


# -- gradients -------------------------------------------------------------------------------
@pytest.mark.parametrize("net_class", NETS)
def test_reused_workspace_gives_what_a_fresh_net_gives(net_class: type[RecurrentNet]) -> None:
    """loss_and_grad reuses scratch arrays between calls: shapes that change must not leak state."""
    net = net_class(n_in=1, hidden=5, n_out=1, dtype="float64")
    shapes = [(7, 4), (3, 6), (7, 4), (11, 2), (3, 6)]
    for i, (batch, steps) in enumerate(shapes):
        theta, X, target = _random_problem(net, seed=i % 3, batch=batch, steps=steps)
        fresh = net_class(n_in=1, hidden=5, n_out=1, dtype="float64")
        expected = fresh.loss_and_grad(theta, X, target, n_train=batch - 1)
        got = net.loss_and_grad(theta, X, target, n_train=batch - 1)
        assert got[0] == expected[0] and got[1] == expected[1]
        np.testing.assert_array_equal(got[2], expected[2])


@pytest.mark.parametrize("net_class", NETS)
def test_gradients_match_central_differences(net_class: type[RecurrentNet]) -> None:
    net = net_class(n_in=2, hidden=3, n_out=2)
    theta, X, target = _random_problem(net)
    _, _, grad = net.loss_and_grad(theta, X, target)
    numeric = np.empty_like(theta)
    eps = 1e-6
    for k in range(theta.size):
        up, down = theta.copy(), theta.copy()
        up[k] += eps
        down[k] -= eps
        numeric[k] = (net.loss_and_grad(up, X, target)[0] - net.loss_and_grad(down, X, target)[0]) / (2 * eps)
    analytic_named, numeric_named = net.named(grad), net.named(numeric)
    if net_class is LSTMNet:
        gates = ("z", "in", "for", "out")
        expected = {f"{kind}_{g}" for kind in ("W", "R", "b") for g in gates} | {"p_in", "p_for", "p_out"}
    else:
        expected = {"W", "R", "b"}
    expected |= {"W_dense", "b_dense"}
    assert set(analytic_named) == expected
    for name, analytic in analytic_named.items():
        num = numeric_named[name]
        assert np.linalg.norm(num) > 0, f"{name}: finite differences are all zero, the check would be empty"
        rel = np.linalg.norm(analytic - num) / max(np.linalg.norm(analytic), np.linalg.norm(num))
        assert rel <= 1e-6, f"{name}: relative error {rel:.2e}"


def test_validation_tail_does_not_move_the_weights() -> None:
    net = LSTMNet(n_in=1, hidden=4)
    theta, X, target = _random_problem(net, batch=6)
    _, _, grad_train_only = net.loss_and_grad(theta, X[:4], target[:4])
    train_loss, val_loss, grad = net.loss_and_grad(theta, X, target, n_train=4)
    np.testing.assert_allclose(grad, grad_train_only, rtol=1e-12, atol=1e-14)
    assert np.isfinite(val_loss) and np.isfinite(train_loss)


# -- against torch ---------------------------------------------------------------------------
def _torch_pass(torch, module, dense, X: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    out, _ = module(torch.from_numpy(X))
    pred = dense(out[:, -1])
    loss = torch.mean((pred - torch.from_numpy(target)) ** 2)
    loss.backward()
    return pred.detach().numpy(), float(loss.detach())


def test_lstm_without_peepholes_matches_torch() -> None:
    torch = pytest.importorskip("torch", reason="torch is a test extra: pip install torch==2.13.0")
    net = LSTMNet(n_in=2, hidden=5, n_out=1)
    theta, X, target = _random_problem(net, batch=7, steps=6)
    named = net.named(theta)
    for gate in ("in", "for", "out"):
        named[f"p_{gate}"][:] = 0.0
    out, _ = net.forward(theta, X)
    _, _, grad = net.loss_and_grad(theta, X, target)
    g = net.named(grad)

    lstm = torch.nn.LSTM(2, 5, batch_first=True).double()
    dense = torch.nn.Linear(5, 1).double()
    order = ("in", "for", "z", "out")  # torch stacks i, f, g (block input), o
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(np.concatenate([named[f"W_{k}"] for k in order])))
        lstm.weight_hh_l0.copy_(torch.from_numpy(np.concatenate([named[f"R_{k}"] for k in order])))
        lstm.bias_ih_l0.copy_(torch.from_numpy(np.concatenate([named[f"b_{k}"] for k in order])))
        lstm.bias_hh_l0.zero_()
        dense.weight.copy_(torch.from_numpy(named["W_dense"]))
        dense.bias.copy_(torch.from_numpy(named["b_dense"]))
    pred, _ = _torch_pass(torch, lstm, dense, X, target)

    np.testing.assert_allclose(out, pred, rtol=0, atol=1e-8)
    H = 5
    for name, torch_grad in (("W", lstm.weight_ih_l0.grad), ("R", lstm.weight_hh_l0.grad), ("b", lstm.bias_ih_l0.grad)):
        blocks = torch_grad.numpy()
        for k, gate in enumerate(order):
            np.testing.assert_allclose(g[f"{name}_{gate}"], blocks[k * H : (k + 1) * H], rtol=0, atol=1e-8, err_msg=f"{name}_{gate}")
    # Torch's second bias gets the same gradient as the first; ours is the single b.
    np.testing.assert_allclose(lstm.bias_hh_l0.grad.numpy(), lstm.bias_ih_l0.grad.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(g["W_dense"], dense.weight.grad.numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(g["b_dense"], dense.bias.grad.numpy(), rtol=0, atol=1e-8)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def test_lstm_with_peepholes_matches_the_reference_equations_by_hand() -> None:
    """Torch has no peepholes, so they are checked here against reference 001's forward pass,
    written out per gate for one window at a time: in and forget gates peek at c(t-1), the
    output gate at c(t). The finite-difference test cannot see a wrong peephole that forward
    and backward share."""
    n_in, H, n_out, batch, steps = 2, 3, 2, 4, 3
    net = LSTMNet(n_in=n_in, hidden=H, n_out=n_out)
    rng = np.random.default_rng(21)
    ref = {}
    for gate in ("z", "in", "for", "out"):
        ref[f"W_{gate}"] = rng.normal(0.0, 0.6, (H, n_in))
        ref[f"R_{gate}"] = rng.normal(0.0, 0.6, (H, H))
        ref[f"b_{gate}"] = rng.normal(0.0, 0.3, H)
    for gate in ("in", "for", "out"):
        ref[f"p_{gate}"] = rng.uniform(0.8, 1.5, H) * rng.choice([-1.0, 1.0], H)  # large: each peephole moves the output
    ref["W_dense"] = rng.normal(0.0, 0.6, (n_out, H))
    ref["b_dense"] = rng.normal(0.0, 0.3, n_out)
    theta = np.zeros(net.size)
    views = net.named(theta)
    for name, value in ref.items():
        views[name][...] = value
    X = rng.normal(0.0, 1.5, (batch, steps, n_in))

    def by_hand(x_seq: np.ndarray) -> np.ndarray:
        y_prev, c_prev = np.zeros(H), np.zeros(H)
        for x in x_seq:
            z_t = np.tanh(ref["W_z"] @ x + ref["R_z"] @ y_prev + ref["b_z"])
            i_t = _sigmoid(ref["W_in"] @ x + ref["R_in"] @ y_prev + ref["p_in"] * c_prev + ref["b_in"])
            f_t = _sigmoid(ref["W_for"] @ x + ref["R_for"] @ y_prev + ref["p_for"] * c_prev + ref["b_for"])
            c_t = z_t * i_t + c_prev * f_t
            o_t = _sigmoid(ref["W_out"] @ x + ref["R_out"] @ y_prev + ref["p_out"] * c_t + ref["b_out"])
            y_prev, c_prev = o_t * np.tanh(c_t), c_t
        return ref["W_dense"] @ y_prev + ref["b_dense"]

    for k in range(1, steps + 1):  # windows of 1, 2 and 3 steps: the output after each step
        expected = np.array([by_hand(X[b, :k]) for b in range(batch)])
        out, _ = net.forward(theta, X[:, :k])
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12, err_msg=f"after {k} steps")
    # The check is sharp: the same net with any one peephole zeroed gives a visibly other output.
    for gate in ("in", "for", "out"):
        other = theta.copy()
        net.named(other)[f"p_{gate}"][:] = 0.0
        assert np.max(np.abs(net.forward(other, X)[0] - net.forward(theta, X)[0])) > 1e-3, gate


def test_rnn_matches_torch() -> None:
    torch = pytest.importorskip("torch", reason="torch is a test extra: pip install torch==2.13.0")
    net = RNNNet(n_in=2, hidden=5, n_out=1)
    theta, X, target = _random_problem(net, batch=7, steps=6)
    named = net.named(theta)
    out, _ = net.forward(theta, X)
    _, _, grad = net.loss_and_grad(theta, X, target)
    g = net.named(grad)

    rnn = torch.nn.RNN(2, 5, nonlinearity="tanh", batch_first=True).double()
    dense = torch.nn.Linear(5, 1).double()
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(named["W"]))
        rnn.weight_hh_l0.copy_(torch.from_numpy(named["R"]))
        rnn.bias_ih_l0.copy_(torch.from_numpy(named["b"]))
        rnn.bias_hh_l0.zero_()
        dense.weight.copy_(torch.from_numpy(named["W_dense"]))
        dense.bias.copy_(torch.from_numpy(named["b_dense"]))
    pred, _ = _torch_pass(torch, rnn, dense, X, target)

    np.testing.assert_allclose(out, pred, rtol=0, atol=1e-8)
    np.testing.assert_allclose(g["W"], rnn.weight_ih_l0.grad.numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(g["R"], rnn.weight_hh_l0.grad.numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(g["b"], rnn.bias_ih_l0.grad.numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(g["W_dense"], dense.weight.grad.numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(g["b_dense"], dense.bias.grad.numpy(), rtol=0, atol=1e-8)


# -- clipping --------------------------------------------------------------------------------
def test_clip_by_global_norm_keeps_direction_and_bounds_norm() -> None:
    grad = np.array([3.0, 4.0, 12.0])  # norm 13
    clipped, norm = clip_by_global_norm(grad.copy(), 1.0)
    assert norm == pytest.approx(13.0)
    assert np.linalg.norm(clipped) == pytest.approx(1.0)
    np.testing.assert_allclose(clipped * 13.0, grad)
    small = np.array([0.1, 0.2])
    np.testing.assert_array_equal(clip_by_global_norm(small.copy(), 1.0)[0], small)


@pytest.mark.parametrize("net_class", NETS)
def test_exploding_setting_updates_are_bounded_by_the_clip(net_class: type[RecurrentNet]) -> None:
    net = net_class(n_in=1, hidden=6)
    theta = net.init_params(np.random.default_rng(0))
    for name, view in net.named(theta).items():
        if name.startswith("R"):
            view *= 30.0  # huge recurrent weights
    X = np.random.default_rng(1).normal(size=(40, 8, 1))
    target = np.full((40, 1), 1e4)  # far-off targets: huge loss gradient
    raw_norm = np.linalg.norm(net.loss_and_grad(theta, X, target)[2])
    assert raw_norm > 1e3
    lr, clip = 10.0, 0.5  # a learning rate that would blow up without clipping
    sgd, current = SGD(lr=lr), theta.copy()
    for _ in range(20):
        clipped, _ = clip_by_global_norm(net.loss_and_grad(current, X, target)[2], clip)
        update = sgd.step(current, clipped)
        assert np.linalg.norm(update) <= lr * clip * (1 + 1e-12)
    # The training loop clips the same way: raw norms explode (an unclipped step would move the
    # weights by lr * norm > 1e4), yet the kept weights moved at most best_epoch * lr * clip.
    result = train(net, theta, X, target, n_train=40, epochs=20, lr=lr, clip=clip, patience=100, optimizer="sgd")
    assert max(result.grad_norm) > 1e3
    assert result.best_epoch > 0
    assert np.linalg.norm(result.theta - theta) <= result.best_epoch * lr * clip * (1 + 1e-9)


# -- determinism and persistence --------------------------------------------------------------
def _series(n: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 10 + 0.05 * t + np.sin(2 * np.pi * t / 12) + 0.1 * rng.standard_normal(n)


@pytest.mark.parametrize("model_class", FORECASTERS)
def test_same_seed_same_forecast_other_seed_other_forecast(model_class: type[LSTMForecaster]) -> None:
    y = _series()
    first = model_class(seed=3, **FAST).fit(y).predict(5)
    second = model_class(seed=3, **FAST).fit(y).predict(5)
    other = model_class(seed=4, **FAST).fit(y).predict(5)
    np.testing.assert_array_equal(first.mean, second.mean)
    np.testing.assert_array_equal(first.lower[95], second.lower[95])
    assert not np.array_equal(first.mean, other.mean)


@pytest.mark.parametrize("model_class", FORECASTERS)
def test_save_load_round_trip_without_pickle(model_class: type[LSTMForecaster], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    y = _series()
    model = model_class(dtype="float32", **FAST).fit(y, np.arange(1900, 1980))
    expected = model.predict(12)
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["family"] == model_class.family

    def no_pickle(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading must not unpickle")

    monkeypatch.setattr("pickle.load", no_pickle)
    monkeypatch.setattr("pickle.loads", no_pickle)
    loaded = model_class.load(tmp_path / "m")
    got = loaded.predict(12)
    np.testing.assert_array_equal(got.years, expected.years)
    np.testing.assert_array_equal(got.mean, expected.mean)
    for level in (80, 95):
        np.testing.assert_array_equal(got.lower[level], expected.lower[level])
        np.testing.assert_array_equal(got.upper[level], expected.upper[level])
    assert loaded.get_params() == model.get_params()


# -- learning and intervals -------------------------------------------------------------------
@pytest.mark.parametrize("model_class", FORECASTERS)
@pytest.mark.parametrize("d", [0, 1])
def test_learns_a_sine_better_than_the_naive_forecast(model_class: type[LSTMForecaster], d: int) -> None:
    t = np.arange(140)
    y = 5 + np.sin(2 * np.pi * t / 14)
    train_y, test_y = y[:126], y[126:]
    forecast = model_class(d=d, window=14, hidden=12, epochs=400, patience=60).fit(train_y).predict(test_y.size)
    rmse = np.sqrt(np.mean((test_y - forecast.mean) ** 2))
    naive = np.sqrt(np.mean((test_y - train_y[-1]) ** 2))
    assert rmse < 0.5 * naive


def test_difference_is_inverted_exactly() -> None:
    """A series that is exactly linear: d = 1 leaves a constant, forecast continues the line."""
    y = 2.0 + 0.5 * np.arange(40)
    forecast = LSTMForecaster(**FAST).fit(y).predict(6)
    np.testing.assert_allclose(forecast.mean, 2.0 + 0.5 * np.arange(40, 46), atol=1e-9)


def test_interval_coverage_on_random_walks_is_near_nominal() -> None:
    """Fit on random walks; the bands match the exact random-walk bands and cover simulated futures.

    For a unit random walk the exact h-step interval is ``last ± z · sqrt(h)``. Averaged over six
    walks the model's half-widths must be within 10 % of it, and its coverage of 1000 simulated
    futures per walk near nominal: bands scaled by 0.85 or 1.25 fail both checks.
    """
    h, n_future = 10, 1000
    covered: dict[int, list[float]] = {80: [], 95: []}
    ratios = []
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        y = np.cumsum(rng.standard_normal(200))
        forecast = LSTMForecaster(window=8, hidden=8, epochs=150, patience=30).fit(y).predict(h)
        futures = y[-1] + np.cumsum(rng.standard_normal((n_future, h)), axis=1)
        for level in covered:
            inside = (futures >= forecast.lower[level]) & (futures <= forecast.upper[level])
            covered[level].append(inside.mean())
        ratios.append((forecast.upper[95] - forecast.lower[95]) / (2 * z(95) * np.sqrt(np.arange(1, h + 1))))
        # Intervals widen with the horizon, as accumulated random-walk errors do.
        assert np.all(np.diff(forecast.upper[95] - forecast.lower[95]) > 0)
    assert 0.90 <= np.mean(ratios) <= 1.10
    assert 0.745 <= np.mean(covered[80]) <= 0.86
    assert 0.915 <= np.mean(covered[95]) <= 0.98


def test_windows_and_contract_basics() -> None:
    X, target = make_windows(np.arange(6.0), 3)
    np.testing.assert_array_equal(X[:, :, 0], [[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    np.testing.assert_array_equal(target[:, 0], [3, 4, 5])
    model = RNNForecaster(window=4, d=2)
    assert model.min_obs == 11
    with pytest.raises(ValueError, match="at least 11"):
        model.fit(np.arange(10.0))
    forecast = LSTMForecaster(**FAST).fit(_series(), np.arange(1900, 1980)).predict(3, levels=(50, 90))
    assert list(forecast.to_frame().columns) == ["year", "mean", "lo_50", "hi_50", "lo_90", "hi_90"]
    assert np.all(forecast.lower[90] <= forecast.lower[50]) and np.all(forecast.upper[50] <= forecast.upper[90])
