"""Both pools against PyTorch over every small kernel, stride, padding, dilation, ceil_mode and
count_include_pad: the analyzer's output shape, the runtime's forward and its gradient, on
inputs from 1 pixel (smaller than the window) up. Where PyTorch refuses a geometry, the
analyzer and the runtime must refuse it too."""
import itertools

import numpy as np
import pytest

import netspec
from netspec import runtime
from netspec.ops import REGISTRY, ShapeError

torch = pytest.importorskip("torch")
F = torch.nn.functional

SIZES = [(1, 2), (2, 5), (3, 4), (5, 6), (7, 7)]  # (H, W), several smaller than the window


def _geometries(with_dilation: bool):
    dilations = (1, 2) if with_dilation else (1,)
    for k, s, p, d, ceil in itertools.product((1, 2, 3), (1, 2, 3), (0, 1), dilations,
                                              (False, True)):
        if 2 * p <= k:  # PyTorch: padding at most half the window
            yield k, s, p, d, ceil


MAX_CASES = [(k, s, p, d, ceil) for k, s, p, d, ceil in _geometries(True)]
AVG_CASES = [(k, s, p, ceil, count) for k, s, p, _, ceil in _geometries(False)
             for count in (True, False)]


def _torch_or_error(fn):
    try:
        return fn(), None
    except RuntimeError as exc:
        return None, exc


def _analyzer_shape(op: str, attrs: dict, shape: tuple[int, int, int]):
    try:
        return REGISTRY[op].shape(attrs, [shape])
    except ShapeError:
        return None


def _check(op, attrs, forward, backward, kwargs, torch_fn):
    rng = np.random.default_rng(0)
    for h, w in SIZES:
        x = rng.permutation(2 * 3 * h * w).reshape(2, 3, h, w).astype(np.float64)  # no ties
        xt = torch.tensor(x, requires_grad=True)
        expected, error = _torch_or_error(lambda xt=xt: torch_fn(xt))
        shape = _analyzer_shape(op, attrs, (3, h, w))
        if error is not None:
            assert shape is None, f"{h}x{w}: torch refuses ({error}), the analyzer gives {shape}"
            with pytest.raises(ValueError):
                forward(x, **kwargs)
            continue
        assert shape == tuple(expected.shape[1:]), f"{h}x{w}: analyzer shape"
        out, cache = forward(x, **kwargs)
        np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-12,
                                   err_msg=f"{h}x{w}: forward")
        if not np.isfinite(out).all():
            # A dilated window whose taps all fall in the padding (H=1, k=2, p=1, d=2): -inf
            # in both; PyTorch's backward reads out of bounds there, so no gradient to compare.
            continue
        dout = rng.standard_normal(out.shape)
        expected.backward(torch.tensor(dout))
        np.testing.assert_allclose(backward(dout, cache), xt.grad.numpy(), rtol=1e-12,
                                   atol=1e-12, err_msg=f"{h}x{w}: dx")


@pytest.mark.parametrize("k, s, p, d, ceil", MAX_CASES,
                         ids=[f"k{k}s{s}p{p}d{d}{'-ceil' if c else ''}" for k, s, p, d, c in MAX_CASES])
def test_maxpool_matches_torch(k, s, p, d, ceil):
    attrs = {"k": (k, k), "s": (s, s), "p": (p, p), "d": (d, d), "ceil": ceil}
    kwargs = REGISTRY["maxpool"].kernel_args(attrs)
    _check("maxpool", attrs, runtime.maxpool2d_forward, runtime.maxpool2d_backward, kwargs,
           lambda xt: F.max_pool2d(xt, k, s, p, dilation=d, ceil_mode=ceil))


@pytest.mark.parametrize("k, s, p, ceil, count", AVG_CASES,
                         ids=[f"k{k}s{s}p{p}{'-ceil' if c else ''}{'' if n else '-nopad'}"
                              for k, s, p, c, n in AVG_CASES])
def test_avgpool_matches_torch(k, s, p, ceil, count):
    attrs = {"k": (k, k), "s": (s, s), "p": (p, p), "ceil": ceil, "count_pad": count}
    kwargs = REGISTRY["avgpool"].kernel_args(attrs)
    _check("avgpool", attrs, runtime.avgpool2d_forward, runtime.avgpool2d_backward, kwargs,
           lambda xt: F.avg_pool2d(xt, k, s, p, ceil_mode=ceil, count_include_pad=count))


def test_ceil_pool_over_a_one_pixel_row_compiles_and_runs():
    # The minimal case: a 2x2/2 ceil window over a 1x5 input hangs past the bottom.
    model = netspec.compile(netspec.parse("""
        network n { input x: [2, 1, 5]  output x -> maxpool(2, s=2, ceil=true) -> flatten }"""),
        dtype="float64")
    x = np.arange(20.0).reshape(2, 2, 1, 5)
    expected = F.max_pool2d(torch.tensor(x), 2, 2, ceil_mode=True).flatten(1).numpy()
    np.testing.assert_array_equal(model.forward(x), expected)


@pytest.mark.parametrize("size", [16, 24])
def test_bundled_googlenet_runs_at_small_inputs_like_torchvision(size):
    # torchvision's GoogLeNet runs at 16x16 and 24x24, where its ceil_mode pools overhang
    # (maxpool3 and maxpool4 read 2x2 and 1x1 maps): same shapes and same scores.
    from _torchvision import GoogLeNet

    model = netspec.compile(netspec.load("googlenet"), input_shape=(3, size, size),
                            dtype="float64")
    twin = GoogLeNet().double().eval()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()},
                         strict=False)
    x = np.random.default_rng(0).standard_normal((2, 3, size, size))
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-7, atol=1e-9)
