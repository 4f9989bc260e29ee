"""Winograd F(2x2, 3x3) convolution (netspec.runtime.winograd): the conv kernels' forward,
input gradient and weight gradient through it against PyTorch's conv2d and autograd (float32
and float64), numerical gradients (float64), a float64 direct convolution (the float32
error), and the shape rule that picks it."""
import numpy as np
import pytest
from _gradcheck import assert_conv_gradients

from netspec import runtime
from netspec.runtime import layers, winograd

# (x shape, C_out, padding): odd and even sizes, pad 0/1/2, C_in != C_out, a 1-row output
CASES = [
    ((5, 3, 6, 7), 4, 1),
    ((5, 4, 7, 7), 6, 0),
    ((5, 6, 8, 9), 5, 1),
    ((5, 3, 5, 4), 2, 2),
    ((5, 2, 3, 6), 3, 0),
]


@pytest.fixture
def forced(monkeypatch):
    """Winograd for every 3x3 stride-1 conv, chunks of 2 samples (5 samples: 2, 2 and 1), and
    a count of the Winograd calls, so a test knows the path it checks was taken."""
    monkeypatch.setattr(winograd, "WINOGRAD", True)
    monkeypatch.setattr(winograd, "WINOGRAD_FORCE", True)
    monkeypatch.setattr(layers, "CONV_CHUNK", 2)
    calls = {"conv": 0, "dw": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(layers, "winograd_conv", counted("conv", layers.winograd_conv))
    monkeypatch.setattr(layers, "winograd_weight_gradient",
                        counted("dw", layers.winograd_weight_gradient))
    return calls


def _torch_conv(x, w, b, padding, dout):
    torch = pytest.importorskip("torch")
    from torch.nn import functional as F

    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out = F.conv2d(xt, wt, bt, padding=padding)
    out.backward(torch.tensor(dout))
    return [t.detach().numpy() for t in (out, xt.grad, wt.grad, bt.grad)]


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("x_shape, c_out, pad", CASES)
def test_winograd_conv_and_its_gradients_match_torch(forced, x_shape, c_out, pad, dtype, rtol):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = (rng.standard_normal((c_out, x_shape[1], 3, 3)) / 3).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    out, cache = runtime.conv2d_forward(x, w, b, padding=(pad, pad))
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, dw, db = runtime.conv2d_backward(dout, cache)
    # forward: 3 chunks; backward: 3 chunks of dw and 3 of dx (pad <= 2: dx is a conv)
    assert forced == {"conv": 6, "dw": 3}
    for name, a, e in zip(("out", "dx", "dw", "db"), (out, dx, dw, db),
                          _torch_conv(x, w, b, pad, dout)):
        assert a.dtype == dtype and a.shape == e.shape, name
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * np.abs(e).max(), err_msg=name)


def test_winograd_gradients_match_numerical_gradients(forced):
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((3, 3, 5, 6)), rng.standard_normal((4, 3, 3, 3)), \
        rng.standard_normal(4)
    out, cache = runtime.conv2d_forward(x, w, b, padding=(1, 1))
    dout = rng.standard_normal(out.shape)
    dx, dw, db = runtime.conv2d_backward(dout, cache)
    assert forced["dw"] == 2 and forced["conv"] >= 4
    assert_conv_gradients(x, w, b, dout, dx, dw, db, padding=(1, 1))
    skipped, dw2, _ = runtime.conv2d_backward(dout, cache, need_dx=False)
    assert skipped is None
    np.testing.assert_allclose(dw2, dw, rtol=1e-12)


def test_a_large_padding_takes_dx_by_col2im(forced):
    # pad 3 > 2: dx is not a convolution of dout (negative padding); the forward and dw stay
    # Winograd, dx goes through col2im.
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 2, 4, 5)), rng.standard_normal((3, 2, 3, 3))
    out, cache = runtime.conv2d_forward(x, w, None, padding=(3, 3))
    dout = rng.standard_normal(out.shape)
    dx, dw, _ = runtime.conv2d_backward(dout, cache)
    assert forced == {"conv": 1, "dw": 1}
    direct = pytest.MonkeyPatch.context()
    with direct as m:
        m.setattr(winograd, "WINOGRAD", False)
        expected_out, cache2 = runtime.conv2d_forward(x, w, None, padding=(3, 3))
        expected_dx, expected_dw, _ = runtime.conv2d_backward(dout, cache2)
    for a, e in [(out, expected_out), (dx, expected_dx), (dw, expected_dw)]:
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def test_float32_winograd_error_against_a_float64_direct_conv(forced):
    """docs/performance.md quotes these: on a ResNet-like shape, the float32 Winograd conv
    and its gradients stay within a few float32 ulps of the float64 direct conv, no worse
    than 3x the float32 im2col kernel's own error."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 64, 14, 14))
    w = rng.standard_normal((64, 64, 3, 3)) / 24
    dout = rng.standard_normal((4, 64, 14, 14))

    def run(dtype):
        out, cache = runtime.conv2d_forward(x.astype(dtype), w.astype(dtype), None,
                                            padding=(1, 1))
        return (out,) + runtime.conv2d_backward(dout.astype(dtype), cache)[:2]

    with pytest.MonkeyPatch.context() as m:
        m.setattr(winograd, "WINOGRAD", False)
        exact = run(np.float64)
        direct32 = run(np.float32)
    wino32 = run(np.float32)
    for name, e, d, g in zip(("out", "dx", "dw"), exact, direct32, wino32):
        scale = np.abs(e).max()
        err_wino, err_direct = np.abs(g - e).max() / scale, np.abs(d - e).max() / scale
        assert err_wino < 1e-5, name
        assert err_wino < 3 * err_direct + 1e-7, (name, err_wino, err_direct)


def test_the_shape_rule_and_the_switch(monkeypatch):
    monkeypatch.setattr(winograd, "WINOGRAD", True)
    monkeypatch.setattr(winograd, "WINOGRAD_FORCE", False)
    applies = winograd.winograd_applies
    one = (1, 1)
    assert applies((64, 64, 3, 3), one, one, 1, (16, 16))  # ResNet block
    assert applies((128, 96, 3, 3), one, one, 1, (28, 28))  # Inception's 3x3
    assert applies((256, 256, 3, 3), one, one, 1, (14, 14))
    assert not applies((512, 512, 3, 3), one, one, 1, (7, 7))  # too few tiles
    assert not applies((64, 32, 3, 3), one, one, 1, (16, 16))  # too few channels
    assert not applies((32, 3, 3, 3), one, one, 1, (32, 32))
    assert not applies((64, 64, 3, 3), (2, 2), one, 1, (16, 16))  # stride 2
    assert not applies((64, 64, 3, 3), one, (2, 2), 1, (16, 16))  # dilation 2
    assert not applies((64, 32, 3, 3), one, one, 2, (16, 16))  # groups
    assert not applies((64, 64, 5, 5), one, one, 1, (16, 16))
    monkeypatch.setattr(winograd, "WINOGRAD_FORCE", True)
    assert applies((8, 3, 3, 3), one, one, 1, (2, 2))
    monkeypatch.setattr(winograd, "WINOGRAD", False)  # NETSPEC_WINOGRAD=0
    assert not applies((64, 64, 3, 3), one, one, 1, (16, 16))


def test_the_default_rule_runs_winograd_where_it_applies_and_matches_torch(monkeypatch):
    monkeypatch.setattr(winograd, "WINOGRAD", True)
    calls = []
    monkeypatch.setattr(layers, "winograd_conv",
                        lambda *a, _f=layers.winograd_conv: calls.append(1) or _f(*a))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 64, 14, 15), dtype=np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    out, cache = runtime.conv2d_forward(x, w, b, padding=(1, 1))
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    grads = runtime.conv2d_backward(dout, cache)
    assert len(calls) == 2  # the forward and dx, one chunk each
    for name, a, e in zip(("out", "dx", "dw", "db"), (out,) + grads,
                          _torch_conv(x, w, b, 1, dout)):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * np.abs(e).max(), err_msg=name)


def test_netspec_winograd_0_in_the_environment_turns_it_off():
    import subprocess
    import sys

    code = "from netspec.runtime import winograd; print(winograd.WINOGRAD)"
    for value, expected in [("0", "False"), ("1", "True")]:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env={"NETSPEC_WINOGRAD": value, "PATH": ""}, check=True)
        assert result.stdout.strip() == expected
