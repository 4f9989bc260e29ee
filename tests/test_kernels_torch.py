"""Runtime kernels against PyTorch CPU (float64): forward outputs, input and weight gradients."""

import zlib

import numpy as np
import pytest
from _gradcheck import KERNEL_CASES, grads_by_input, kernel_pair

from netspec import runtime

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional


def _relu(t, kw):
    """F.relu(t) for a kernel case with relu=True (a ReLU codegen fuses into the kernel)."""
    return F.relu(t) if kw.get("relu") else t


def _pool_args(kw):
    return {
        "kernel_size": kw["kernel"],
        "stride": kw["stride"],
        "padding": kw.get("padding", 0),
        "ceil_mode": kw.get("ceil_mode", False),
    }


def _maxpool_args(kw):
    return dict(_pool_args(kw), dilation=kw.get("dilation", 1))


def _avgpool_args(kw):
    return dict(_pool_args(kw), count_include_pad=kw.get("count_include_pad", True))


def _layernorm(t, kw):
    x = t["x"]
    if x.ndim == 3:  # a sequence: LayerNorm(D) at every step
        return F.layer_norm(x, x.shape[-1:], t["gamma"], t["beta"], kw.get("eps", 1e-5))
    if x.ndim == 2:
        return F.layer_norm(x, x.shape[1:], t["gamma"], t["beta"], kw.get("eps", 1e-5))
    return F.group_norm(x, 1, t["gamma"], t["beta"], kw.get("eps", 1e-5))


def _recurrent(module, t, kw):
    """torch's nn.RNN/LSTM/GRU called with the case's weights (functional_call keeps the
    graph to them), batch_first; last=True: the final hidden state of each direction."""
    x = t["x"]
    weights = {k: v for k, v in t.items() if k != "x"}
    bidirectional = kw.get("bidirectional", False)
    m = module(x.shape[-1], t["weight_hh_l0"].shape[1], num_layers=kw.get("layers", 1),
               bidirectional=bidirectional, batch_first=True, dtype=torch.float64)
    out, h = torch.func.functional_call(m, weights, (x,))
    if not kw.get("last"):
        return out
    h_n = h[0] if isinstance(h, tuple) else h
    return torch.cat([h_n[-2], h_n[-1]], -1) if bidirectional else h_n[-1]


def _attention(t, kw):
    x = t["x"]
    t_len, d = x.shape[1], x.shape[2]
    m = nn.MultiheadAttention(d, kw.get("heads", 1), bias=t["in_proj_bias"] is not None,
                              batch_first=True, dtype=torch.float64)
    params = {k: v for k, v in t.items() if k != "x" and v is not None}
    mask = torch.triu(torch.ones(t_len, t_len, dtype=torch.bool), 1) if kw.get("causal") else None
    if kw.get("alibi"):  # Press et al.'s slopes 2^(-b h / H), written out here independently
        heads = kw.get("heads", 1)
        slopes = torch.tensor([2 ** (-kw["alibi"] * h / heads) for h in range(1, heads + 1)],
                              dtype=torch.float64)
        pos = torch.arange(t_len, dtype=torch.float64)
        bias = -slopes[:, None, None] * (pos[None, :] - pos[:, None]).abs()
        if mask is not None:
            bias = bias.masked_fill(mask, float("-inf"))
        mask = bias.repeat(x.shape[0], 1, 1)  # (N heads, T, T), batch-major
    out, _ = torch.func.functional_call(m, params, (x, x, x),
                                        {"attn_mask": mask, "need_weights": False})
    return out


def _sinusoidal(t, kw):
    x = t["x"]
    t_len, d = x.shape[1], x.shape[2]
    pos = torch.arange(t_len, dtype=torch.float64)[:, None]
    angle = pos / 10000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    table = torch.stack([torch.sin(angle), torch.cos(angle)], -1).reshape(t_len, d)
    return x + table


def _patches(t, kw):
    x, p = t["x"], kw["size"]
    n, c = x.shape[:2]
    cols = x.unfold(2, p, p).unfold(3, p, p)  # (N, C, H/p, W/p, p, p)
    return cols.permute(0, 2, 3, 1, 4, 5).reshape(n, -1, c * p * p)


def _maxout(t, kw):
    x = t["x"]
    pieces = kw.get("pieces", 2)
    return x.unflatten(1, (x.shape[1] // pieces, pieces)).max(dim=2).values


def _upsample(t, kw):
    size, scale = kw.get("size"), kw.get("scale")
    mode = kw.get("mode", "nearest")
    extra = {"align_corners": kw.get("align_corners", False)} if mode == "bilinear" else {}
    return F.interpolate(t["x"], size=size, scale_factor=scale, mode=mode, **extra)


def _pad(t, kw):
    top, bottom, left, right = kw["pads"]
    return F.pad(t["x"], (left, right, top, bottom), value=kw.get("value", 0.0))


# op -> (tensors by input name, forward kwargs incl. fresh state as tensors) -> torch output
TORCH_OPS = {
    "linear": lambda t, kw: F.linear(t["x"] if t["x"].ndim == 3 else t["x"].flatten(1), t["w"],
                                     t["b"]),
    "conv2d": lambda t, kw: F.conv2d(t["x"], t["w"], t["b"], **kw),
    "conv_transpose2d": lambda t, kw: F.conv_transpose2d(t["x"], t["w"], t["b"], **kw),
    "maxpool2d": lambda t, kw: F.max_pool2d(_relu(t["x"], kw), **_maxpool_args(kw)),
    "avgpool2d": lambda t, kw: F.avg_pool2d(t["x"], **_avgpool_args(kw)),
    "global_avgpool": lambda t, kw: F.adaptive_avg_pool2d(t["x"], 1),
    "adaptive_avgpool": lambda t, kw: F.adaptive_avg_pool2d(t["x"], kw["output_size"]),
    "upsample": _upsample,
    "pad": _pad,
    "flatten": lambda t, kw: torch.flatten(t["x"], 1),
    "identity": lambda t, kw: t["x"] * 1,
    "concat": lambda t, kw: torch.cat(t["xs"], dim=1),
    "add": lambda t, kw: _relu(torch.stack(t["xs"]).sum(0), kw),
    "relu": lambda t, kw: F.relu(t["x"]),
    "relu6": lambda t, kw: F.relu6(t["x"]),
    "hardswish": lambda t, kw: F.hardswish(t["x"]),
    "leaky_relu": lambda t, kw: F.leaky_relu(t["x"], kw.get("slope", 0.01)),
    "elu": lambda t, kw: F.elu(t["x"], kw.get("alpha", 1.0)),
    "sigmoid": lambda t, kw: torch.sigmoid(t["x"]),
    "tanh": lambda t, kw: torch.tanh(t["x"]),
    "softmax": lambda t, kw: F.softmax(t["x"], dim=-1 if t["x"].ndim == 3 else 1),
    "gelu": lambda t, kw: nn.GELU(approximate=kw.get("approximate", "none"))(t["x"]),
    "embedding": lambda t, kw: F.embedding(t["x"], t["w"]),
    "pos_embedding": lambda t, kw: t["x"] + t["w"],
    "sinusoidal": _sinusoidal,
    "class_token": lambda t, kw: torch.cat(
        [t["token"].expand(t["x"].shape[0], 1, -1), t["x"]], 1),
    "patches": _patches,
    "seq_mean": lambda t, kw: t["x"].mean(1),
    "seq_select": lambda t, kw: t["x"][:, kw["index"]],
    "rnn": lambda t, kw: _recurrent(nn.RNN, t, kw),
    "lstm": lambda t, kw: _recurrent(nn.LSTM, t, kw),
    "gru": lambda t, kw: _recurrent(nn.GRU, t, kw),
    "attention": _attention,
    "maxout": _maxout,
    "batchnorm": lambda t, kw: _relu(F.batch_norm(
        t["x"],
        kw["running_mean"],
        kw["running_var"],
        t["gamma"],
        t["beta"],
        training=kw["train"],
        momentum=kw.get("momentum", 0.1),
        eps=kw.get("eps", 1e-5),
    ), kw),
    "layernorm": _layernorm,
    "instancenorm": lambda t, kw: F.instance_norm(
        t["x"], weight=t["gamma"], bias=t["beta"], eps=kw.get("eps", 1e-5)
    ),
    "groupnorm": lambda t, kw: F.group_norm(
        t["x"], kw["groups"], t["gamma"], t["beta"], kw.get("eps", 1e-5)
    ),
}
# Random ops are compared by their statistics instead (the dropout tests below).
NO_TORCH_EQUIVALENT = {"dropout"}

TORCH_CASES = [case for case in KERNEL_CASES
               if case["op"] in TORCH_OPS and not case.get("random")]


def to_torch(value, requires_grad=True):
    if value is None:
        return None
    if isinstance(value, list):
        return [to_torch(v, requires_grad) for v in value]
    if value.dtype.kind in "iu":  # token ids
        return torch.tensor(value)
    return torch.tensor(value, requires_grad=requires_grad)


def torch_grads(value):
    if value is None:
        return None
    if isinstance(value, list):
        return [v.grad.numpy() for v in value]
    return None if value.grad is None else value.grad.numpy()


def assert_close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-11, err_msg=what)


def test_every_kernel_is_compared_with_torch_or_exempt():
    assert {case["op"] for case in KERNEL_CASES} <= TORCH_OPS.keys() | NO_TORCH_EQUIVALENT


@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c["id"])
def test_kernel_matches_torch(case):
    rng = np.random.default_rng(zlib.crc32(case["id"].encode()))
    inputs = case["make"](rng)
    state = case.get("fresh", dict)()
    kwargs = dict(case.get("kwargs", {}))
    forward, backward = kernel_pair(case)
    out, cache = forward(*inputs.values(), **kwargs, **state)

    tensors = {name: to_torch(v) for name, v in inputs.items()}
    torch_state = {
        name: to_torch(v, requires_grad=False) for name, v in case.get("fresh", dict)().items()
    }
    expected = TORCH_OPS[case["op"]](tensors, dict(kwargs, **torch_state))
    assert_close(out, expected.detach().numpy(), "forward")

    dout = rng.standard_normal(out.shape)
    expected.backward(torch.tensor(dout))
    grads = grads_by_input(case, inputs, backward(dout, cache))
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        actual, wanted = grads[name], torch_grads(tensor)
        if wanted is None:  # token ids
            assert actual is None, f"d{name}"
            continue
        if isinstance(actual, list):
            for i, (a, w) in enumerate(zip(actual, wanted)):
                assert_close(a, w, f"d{name}[{i}]")
        else:
            assert_close(actual, wanted, f"d{name}")

    for name, value in state.items():  # running statistics updated exactly as torch does
        assert_close(value, torch_state[name].numpy(), name)


def test_batchnorm_train_then_eval_matches_torch_module():
    # Several training steps move the running statistics; eval then uses them, as torch does.
    rng = np.random.default_rng(3)
    bn = torch.nn.BatchNorm2d(4, momentum=0.3, dtype=torch.float64)
    gamma, beta = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))
    mean, var = np.zeros(4), np.ones(4)
    for step in range(3):
        x = rng.standard_normal((5, 4, 3, 3)) * (step + 1) + step
        out, _ = runtime.batchnorm_forward(x, gamma, beta, mean, var, True, momentum=0.3)
        assert_close(out, bn.train()(torch.tensor(x)).detach().numpy(), f"train step {step}")
    assert_close(mean, bn.running_mean.numpy(), "running_mean")
    assert_close(var, bn.running_var.numpy(), "running_var")
    x = rng.standard_normal((2, 4, 3, 3))
    out, _ = runtime.batchnorm_forward(x, gamma, beta, mean, var, False)
    assert_close(out, bn.eval()(torch.tensor(x)).detach().numpy(), "eval")


def test_conv2d_float32_matches_torch_at_a_realistic_size():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 16, 20, 18), dtype=np.float32)
    w = (rng.standard_normal((32, 16, 3, 3)) / 12).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    out, cache = runtime.conv2d_forward(x, w, b, padding=(1, 1))
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    dx, dw, db = runtime.conv2d_backward(dout, cache)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    expected = F.conv2d(xt, wt, bt, padding=1)
    expected.backward(torch.tensor(dout))
    for name, a, e in [
        ("out", out, expected),
        ("dx", dx, xt.grad),
        ("dw", dw, wt.grad),
        ("db", db, bt.grad),
    ]:
        assert a.dtype == np.float32, name
        np.testing.assert_allclose(a, e.detach().numpy(), rtol=1e-4, atol=1e-4, err_msg=name)


def _float32_close(pairs):
    for name, a, e in pairs:
        assert a.dtype == np.float32, name
        np.testing.assert_allclose(a, e.detach().numpy(), rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn-relu"])
def test_batchnorm_float32_matches_torch_at_a_realistic_size(relu):
    # The reductions run as einsum / matmul row dots in float32, as codegen's fused BN + ReLU.
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((16, 32, 14, 12)) * 3 + 1).astype(np.float32)
    gamma, beta = (rng.standard_normal(32).astype(np.float32) for _ in range(2))
    mean, var = np.zeros(32, np.float32), np.ones(32, np.float32)
    out, cache = runtime.batchnorm_forward(x, gamma, beta, mean, var, True, relu=relu)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    dx, dgamma, dbeta = runtime.batchnorm_backward(dout, cache)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    t_mean, t_var = torch.zeros(32), torch.ones(32)
    expected = F.batch_norm(xt, t_mean, t_var, gt, bt, training=True)
    expected = F.relu(expected) if relu else expected
    expected.backward(torch.tensor(dout))
    _float32_close([("out", out, expected), ("dx", dx, xt.grad), ("dgamma", dgamma, gt.grad),
                    ("dbeta", dbeta, bt.grad), ("running_mean", mean, t_mean),
                    ("running_var", var, t_var)])


@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1)])
def test_maxpool2d_with_fused_relu_float32_matches_torch(kernel, stride, padding):
    # pool(relu(x)) computed as relu(pool(x)); ties of zeros (whole windows below 0) included.
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 8, 28, 26)).astype(np.float32)
    x[:, :, :6] = np.minimum(x[:, :, :6], 0)
    x[:, :, 6:8] = 0
    k, s, p = (kernel, kernel), (stride, stride), (padding, padding)
    out, cache = runtime.maxpool2d_forward(x, k, s, p, relu=True)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    dx = runtime.maxpool2d_backward(dout, cache)
    xt = torch.tensor(x, requires_grad=True)
    expected = F.max_pool2d(F.relu(xt), kernel, stride, padding)
    expected.backward(torch.tensor(dout))
    _float32_close([("out", out, expected), ("dx", dx, xt.grad)])


def test_add_with_fused_relu_float32_matches_torch():
    rng = np.random.default_rng(7)
    a, b = (rng.standard_normal((4, 8, 9, 9)).astype(np.float32) for _ in range(2))
    out, cache = runtime.add_forward([a, b], relu=True)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    da, db = runtime.add_backward(dout, cache)
    at, bt = (torch.tensor(v, requires_grad=True) for v in (a, b))
    expected = F.relu(at + bt)
    expected.backward(torch.tensor(dout))
    _float32_close([("out", out, expected), ("da", da, at.grad), ("db", db, bt.grad)])


@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_maxpool2d_routes_ties_to_the_first_maximum_like_torch(kernel, stride, padding):
    # After a ReLU whole windows are 0: the gradient must go to one input, the first, as in
    # PyTorch, not be split or duplicated.
    rng = np.random.default_rng(8)
    x = np.maximum(rng.integers(-2, 2, (2, 3, 7, 6)), 0).astype(np.float64)
    k, s, p = (kernel, kernel), (stride, stride), (padding, padding)
    out, cache = runtime.maxpool2d_forward(x, k, s, p)
    dout = rng.standard_normal(out.shape)
    xt = torch.tensor(x, requires_grad=True)
    F.max_pool2d(xt, kernel, stride, padding).backward(torch.tensor(dout))
    assert_close(runtime.maxpool2d_backward(dout, cache), xt.grad.numpy(), "dx")


# ----------------------------------------------------------------------------------------------
# Dropout: random, so compare statistics and scaling (PyTorch uses p = drop probability too).


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_drops_a_fraction_p_and_scales_survivors_like_torch(p):
    x = np.ones((200, 1000), dtype=np.float32)
    out, _ = runtime.dropout_forward(x, p, True, np.random.default_rng(0))
    dropped = np.mean(out == 0)
    sigma = np.sqrt(p * (1 - p) / x.size)
    assert abs(dropped - p) < 5 * sigma
    torch_out = F.dropout(torch.ones(100, 100), p=p, training=True).numpy()
    assert np.unique(out[out != 0]) == pytest.approx(np.unique(torch_out[torch_out != 0]))
    assert out.mean() == pytest.approx(1.0, abs=5 * sigma / (1 - p))


def test_dropout_backward_uses_the_forward_mask():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 40))
    out, cache = runtime.dropout_forward(x, 0.4, True, rng)
    dout = rng.standard_normal(x.shape)
    dx = runtime.dropout_backward(dout, cache)
    np.testing.assert_array_equal(dx == 0, out == 0)
    np.testing.assert_allclose(dx[out != 0], dout[out != 0] / 0.6)


def test_dropout_at_eval_matches_torch_identity():
    x = np.random.default_rng(2).standard_normal((4, 5))
    out, _ = runtime.dropout_forward(x, 0.5, False, np.random.default_rng(0))
    np.testing.assert_array_equal(out, F.dropout(torch.tensor(x), 0.5, training=False).numpy())


# ----------------------------------------------------------------------------------------------
# Losses and penalties


def _scores_labels(seed, n=8, c=6):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c)) * 2, rng.integers(0, c, n)


def test_softmax_loss_matches_cross_entropy():
    scores, y = _scores_labels(0)
    loss, dscores = runtime.softmax_loss(scores, y)
    st = torch.tensor(scores, requires_grad=True)
    expected = F.cross_entropy(st, torch.tensor(y))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    assert_close(dscores, st.grad.numpy(), "dscores")


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("delta", [1.0, 0.5])
def test_svm_loss_is_c_times_multi_margin_loss(squared, delta):
    # torch.nn.functional.multi_margin_loss divides each sample's hinge sum by the number of
    # classes C; the CS231n SVM loss does not, so ours = C * torch's (loss and gradient).
    scores, y = _scores_labels(1)
    c = scores.shape[1]
    loss, dscores = runtime.svm_loss(scores, y, delta=delta, squared=squared)
    st = torch.tensor(scores, requires_grad=True)
    expected = F.multi_margin_loss(st, torch.tensor(y), p=2 if squared else 1, margin=delta)
    (c * expected).backward()
    assert loss == pytest.approx(c * expected.item(), rel=1e-12)
    assert_close(dscores, st.grad.numpy(), "dscores")


def test_l2_penalty_gradient_equals_torch_weight_decay():
    # One SGD step with weight_decay=lam and no loss gradient: w <- w - lr * lam * w.
    w = np.random.default_rng(5).standard_normal((4, 3))
    lam, lr = 0.3, 0.1
    value, dw = runtime.l2_penalty(w, lam)
    wt = torch.nn.Parameter(torch.tensor(w))
    wt.grad = torch.zeros_like(wt)
    torch.optim.SGD([wt], lr=lr, weight_decay=lam).step()
    assert_close(w - lr * dw, wt.detach().numpy(), "w after one step")
    assert value == pytest.approx(0.5 * lam * np.sum(w * w))


@pytest.mark.parametrize("l1, l2", [(0.3, 0.0), (0.2, 0.7)])
def test_elastic_and_l1_penalties_match_torch_autograd(l1, l2):
    w = np.random.default_rng(6).standard_normal((5, 4))
    value, dw = runtime.elastic_penalty(w, l1, l2)
    wt = torch.tensor(w, requires_grad=True)
    expected = l1 * wt.abs().sum() + 0.5 * l2 * (wt * wt).sum()
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-12)
    assert_close(dw, wt.grad.numpy(), "dw")
    if l2 == 0.0:
        value1, dw1 = runtime.l1_penalty(w, l1)
        assert value1 == pytest.approx(value) and np.allclose(dw1, dw)
