"""Test helpers for the runtime kernels: numerical gradients and the table of kernel cases.

KERNEL_CASES is the one list both kernel test files parametrize over (gradient check, dtype,
PyTorch comparison): a new op is one new row. A row is a dict:

    id          test id, "<op>-<what it exercises>"
    op          kernel name: the test calls runtime.<op>_forward / runtime.<op>_backward
    make        rng -> dict of the differentiable inputs in forward order (array, None for a
                disabled bias/affine, or a list of arrays for multi-input ops)
    kwargs      fixed keyword arguments of the forward
    fresh       optional () -> dict of keyword arguments rebuilt for every forward call:
                state the forward mutates or consumes (running statistics, the dropout rng)
    random      optional True: draws random numbers, so no PyTorch comparison (statistics
                are compared instead)
"""

import numpy as np

from netspec import runtime

# ----------------------------------------------------------------------------------------------
# Numerical gradients (centered differences, the CS231n helpers)


def eval_numerical_gradient_array(f, x: np.ndarray, df: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Gradient of sum(f(x) * df) with respect to x, perturbing x in place one entry at a time."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        ix = it.multi_index
        old = x[ix]
        x[ix] = old + h
        pos = np.array(f(x), copy=True)
        x[ix] = old - h
        neg = np.array(f(x), copy=True)
        x[ix] = old
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad


def eval_numerical_gradient(f, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Gradient of the scalar f(x) with respect to x."""
    return eval_numerical_gradient_array(f, x, np.ones(()), h)


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / (||a|| + ||b||): scale-free, and not fooled by entries that are ~0 in both."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


# ----------------------------------------------------------------------------------------------
# Calling a case


def assert_conv_gradients(x, w, b, dout, dx, dw, db, **kwargs) -> None:
    """conv2d_backward's dx, dw, db against numerical gradients of conv2d_forward (float64,
    rel_error < 1e-8)."""
    def forward(x_, w_, b_):
        return runtime.conv2d_forward(x_, w_, b_, **kwargs)[0]

    for name, value, numeric in [
        ("dx", dx, eval_numerical_gradient_array(lambda v: forward(v, w, b), x, dout)),
        ("dw", dw, eval_numerical_gradient_array(lambda v: forward(x, v, b), w, dout)),
        ("db", db, eval_numerical_gradient_array(lambda v: forward(x, w, v), b, dout)),
    ]:
        assert rel_error(value, numeric) < 1e-8, name


def kernel_pair(case: dict):
    """The (forward, backward) functions of a case."""
    return getattr(runtime, case["op"] + "_forward"), getattr(runtime, case["op"] + "_backward")


def run_forward(case: dict, inputs: dict):
    """forward(*inputs, **kwargs, **fresh()) -> (out, cache)."""
    forward, _ = kernel_pair(case)
    kwargs = dict(case.get("kwargs", {}), **case.get("fresh", dict)())
    return forward(*inputs.values(), **kwargs)


def grads_by_input(case: dict, inputs: dict, grads) -> dict:
    """Name the backward's result after the inputs: a list for multi-input ops, a tuple
    (dx, dparams...) for ops with parameters, a bare dx otherwise."""
    if len(inputs) == 1:
        return dict(zip(inputs, [grads]))
    assert isinstance(grads, tuple) and len(grads) == len(inputs), case["id"]
    return dict(zip(inputs, grads))


def cast_inputs(inputs: dict, dtype) -> dict:
    """Inputs with every array cast to dtype (lists element-wise, None kept)."""

    def cast(v):
        if isinstance(v, list):
            return [cast(e) for e in v]
        if v is None or v.dtype.kind in "iu":  # token ids stay integers
            return v
        return v.astype(dtype)

    return {k: cast(v) for k, v in inputs.items()}


# ----------------------------------------------------------------------------------------------
# Input makers. Values are kept off the kinks (relu at 0, ties in a max) so that centered
# differences with h = 1e-5 never straddle one.


def distinct(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Values in [-1, 1] with every pair at least 1/size apart, in random order (no max ties)."""
    size = int(np.prod(shape))
    return (rng.permutation(size) / size * 2 - 1 + 0.5 / size).reshape(shape)


def off_zero(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Standard normals pushed at least 0.05 away from 0."""
    x = rng.standard_normal(shape)
    return x + 0.05 * np.sign(x)


def normal(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return scale * rng.standard_normal(shape)


def away_from(*kinks, scale=4.0):
    """Normals times scale, pushed at least 0.05 away from each kink (relu6 at 0 and 6)."""

    def make(rng: np.random.Generator, *shape: int) -> np.ndarray:
        x = scale * rng.standard_normal(shape)
        for k in kinks:
            near = np.abs(x - k) < 0.05
            x[near] = k + 0.05 * np.where(x[near] >= k, 1, -1)
        return x

    return make


def conv_inputs(x_shape, w_shape, bias=True, bias_size=None):
    def make(rng):
        return {
            "x": normal(rng, *x_shape),
            "w": normal(rng, *w_shape, scale=0.5),
            "b": normal(rng, bias_size or w_shape[0]) if bias else None,
        }

    return make


def x_only(shape, maker=normal):
    return lambda rng: {"x": maker(rng, *shape)}


def norm_inputs(x_shape, c, affine=True):
    def make(rng):
        return {
            "x": normal(rng, *x_shape, scale=2.0) + 0.5,
            "gamma": 1 + 0.5 * normal(rng, c) if affine else None,
            "beta": normal(rng, c) if affine else None,
        }

    return make


def batchnorm_state(c, seed=0):
    """Fresh running statistics (not all zeros/ones so eval mode is a real test)."""

    def fresh():
        rng = np.random.default_rng(seed)
        return {"running_mean": rng.standard_normal(c), "running_var": rng.uniform(0.5, 2.0, c)}

    return fresh


# ----------------------------------------------------------------------------------------------
# The table

KERNEL_CASES = [
    # linear
    {"id": "linear-2d", "op": "linear", "make": conv_inputs((4, 5), (3, 5))},
    {"id": "linear-4d-input-flattened", "op": "linear", "make": conv_inputs((3, 2, 3, 2), (4, 12))},
    {"id": "linear-no-bias", "op": "linear", "make": conv_inputs((4, 5), (3, 5), bias=False)},
    # conv2d
    {
        "id": "conv2d-3x3-pad1-nonsquare",
        "op": "conv2d",
        "make": conv_inputs((2, 3, 7, 6), (4, 3, 3, 3)),
        "kwargs": {"padding": (1, 1)},
    },
    {
        "id": "conv2d-stride2-pad1-kernel3x2",
        "op": "conv2d",
        "make": conv_inputs((2, 3, 7, 8), (4, 3, 3, 2)),
        "kwargs": {"stride": (2, 2), "padding": (1, 1)},
    },
    {
        "id": "conv2d-stride3x2-leftover-rows",
        "op": "conv2d",
        "make": conv_inputs((2, 2, 8, 7), (3, 2, 3, 3)),
        "kwargs": {"stride": (3, 2), "padding": (0, 1)},
    },
    {
        "id": "conv2d-dilation2x1",
        "op": "conv2d",
        "make": conv_inputs((2, 3, 8, 6), (2, 3, 3, 3)),
        "kwargs": {"padding": (2, 1), "dilation": (2, 1)},
    },
    {
        "id": "conv2d-dilation2-stride2",
        "op": "conv2d",
        "make": conv_inputs((1, 2, 9, 9), (3, 2, 3, 3)),
        "kwargs": {"stride": (2, 2), "padding": (1, 2), "dilation": (2, 2)},
    },
    {
        "id": "conv2d-groups2-stride2x1",
        "op": "conv2d",
        "make": conv_inputs((2, 4, 6, 7), (6, 2, 3, 3)),
        "kwargs": {"stride": (2, 1), "padding": (1, 0), "groups": 2},
    },
    {
        "id": "conv2d-depthwise-pad1",
        "op": "conv2d",
        "make": conv_inputs((2, 3, 5, 6), (3, 1, 3, 3)),
        "kwargs": {"padding": (1, 1), "groups": 3},
    },
    {
        "id": "conv2d-1x1-stride2-no-bias",
        "op": "conv2d",
        "make": conv_inputs((2, 4, 6, 5), (3, 4, 1, 1), bias=False),
        "kwargs": {"stride": (2, 2)},
    },
    {  # 1x1, stride 1, no padding: the pointwise path; dw from per-sample products
        "id": "conv2d-1x1-pointwise",
        "op": "conv2d",
        "make": conv_inputs((2, 4, 3, 3), (5, 4, 1, 1)),
    },
    {  # the pointwise path with more output channels than pixels: dw from one GEMM
        "id": "conv2d-1x1-pointwise-more-channels-than-pixels",
        "op": "conv2d",
        "make": conv_inputs((3, 3, 2, 2), (6, 3, 1, 1), bias=False),
    },
    {
        "id": "conv2d-pad-wider-than-kernel",
        "op": "conv2d",
        "make": conv_inputs((2, 2, 4, 5), (3, 2, 1, 2)),
        "kwargs": {"padding": (1, 1)},
    },
    # transposed convolution (weight: C_in, C_out/groups, KH, KW)
    {
        "id": "conv_transpose2d-k3-s2-p1-outpad1",
        "op": "conv_transpose2d",
        "make": conv_inputs((2, 3, 4, 5), (3, 4, 3, 3), bias_size=4),
        "kwargs": {"stride": (2, 2), "padding": (1, 1), "output_padding": (1, 1)},
    },
    {
        "id": "conv_transpose2d-k2-s2-unet-up",
        "op": "conv_transpose2d",
        "make": conv_inputs((2, 4, 3, 3), (4, 2, 2, 2), bias_size=2),
        "kwargs": {"stride": (2, 2)},
    },
    {
        "id": "conv_transpose2d-groups2-dilation2-stride1x2-no-bias",
        "op": "conv_transpose2d",
        "make": conv_inputs((2, 4, 3, 4), (4, 3, 3, 2), bias=False),
        "kwargs": {"stride": (1, 2), "padding": (2, 0), "dilation": (2, 1), "groups": 2,
                   "output_padding": (1, 1)},
    },
    {
        "id": "conv_transpose2d-k4-s3-p2-nonsquare",
        "op": "conv_transpose2d",
        "make": conv_inputs((1, 2, 3, 2), (2, 3, 4, 4), bias_size=3),
        "kwargs": {"stride": (3, 3), "padding": (2, 1), "output_padding": (2, 0)},
    },
    # pooling
    {
        "id": "maxpool2d-2x2-stride2",
        "op": "maxpool2d",
        "make": x_only((2, 3, 6, 8), distinct),
        "kwargs": {"kernel": (2, 2), "stride": (2, 2)},
    },
    {
        "id": "maxpool2d-3x3-stride2-pad1-nonsquare",
        "op": "maxpool2d",
        "make": x_only((2, 2, 7, 6), distinct),
        "kwargs": {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1)},
    },
    {  # a ReLU fused into the pool (codegen's relu -> maxpool), overlapping windows
        "id": "maxpool2d-3x3-stride2-pad1-relu",
        "op": "maxpool2d",
        "make": x_only((2, 3, 7, 8), distinct),
        "kwargs": {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1), "relu": True},
    },
    {
        "id": "maxpool2d-2x2-stride2-relu",
        "op": "maxpool2d",
        "make": x_only((2, 3, 6, 8), distinct),
        "kwargs": {"kernel": (2, 2), "stride": (2, 2), "relu": True},
    },
    {
        "id": "maxpool2d-ceil-mode",
        "op": "maxpool2d",
        "make": x_only((2, 2, 8, 7), distinct),
        "kwargs": {"kernel": (3, 3), "stride": (2, 2), "ceil_mode": True},
    },
    {
        "id": "maxpool2d-overlap-kernel2x3-stride1x2",
        "op": "maxpool2d",
        "make": x_only((1, 3, 5, 7), distinct),
        "kwargs": {"kernel": (2, 3), "stride": (1, 2), "padding": (1, 1)},
    },
    {  # stride 1: the flattened-image path, junk columns dropped
        "id": "maxpool2d-3x2-stride1-pad1-nonsquare",
        "op": "maxpool2d",
        "make": x_only((2, 3, 5, 7), distinct),
        "kwargs": {"kernel": (3, 2), "stride": (1, 1), "padding": (1, 1)},
    },
    {  # stride 1 with ceil_mode and no padding (GoogLeNet's pools are ceil_mode)
        "id": "maxpool2d-3x3-stride1-ceil",
        "op": "maxpool2d",
        "make": x_only((1, 2, 6, 5), distinct),
        "kwargs": {"kernel": (3, 3), "stride": (1, 1), "ceil_mode": True},
    },
    {
        "id": "avgpool2d-2x2-stride2",
        "op": "avgpool2d",
        "make": x_only((2, 3, 6, 4)),
        "kwargs": {"kernel": (2, 2), "stride": (2, 2)},
    },
    {
        "id": "avgpool2d-3x3-stride2-pad1-nonsquare",
        "op": "avgpool2d",
        "make": x_only((2, 2, 7, 6)),
        "kwargs": {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1)},
    },
    {
        "id": "avgpool2d-ceil-mode-pad1",
        "op": "avgpool2d",
        "make": x_only((2, 2, 8, 7)),
        "kwargs": {"kernel": (3, 2), "stride": (2, 2), "padding": (1, 1), "ceil_mode": True},
    },
    {
        "id": "maxpool2d-dilation2-ceil-overhang",
        "op": "maxpool2d",
        "make": x_only((2, 2, 7, 6), distinct),
        "kwargs": {"kernel": (2, 3), "stride": (2, 2), "padding": (1, 1), "dilation": (2, 2),
                   "ceil_mode": True},
    },
    {  # the window is larger than the 1-row input: ceil_mode keeps the overhanging window
        "id": "maxpool2d-ceil-window-past-a-1-row-input",
        "op": "maxpool2d",
        "make": x_only((2, 2, 1, 5), distinct),
        "kwargs": {"kernel": (2, 2), "stride": (2, 2), "ceil_mode": True},
    },
    {
        "id": "avgpool2d-ceil-pad1-count-pad-false",
        "op": "avgpool2d",
        "make": x_only((2, 2, 6, 7)),
        "kwargs": {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1), "ceil_mode": True,
                   "count_include_pad": False},
    },
    {"id": "global_avgpool", "op": "global_avgpool", "make": x_only((2, 3, 4, 5))},
    {
        "id": "adaptive_avgpool-5x7-to-3x2-uneven-windows",
        "op": "adaptive_avgpool",
        "make": x_only((2, 3, 5, 7)),
        "kwargs": {"output_size": (3, 2)},
    },
    {
        "id": "adaptive_avgpool-2x2-to-3x3-upsampling",
        "op": "adaptive_avgpool",
        "make": x_only((2, 2, 2, 2)),
        "kwargs": {"output_size": (3, 3)},
    },
    # resampling
    {
        "id": "upsample-nearest-x2",
        "op": "upsample",
        "make": x_only((2, 3, 3, 4)),
        "kwargs": {"scale": (2.0, 2.0), "mode": "nearest"},
    },
    {
        "id": "upsample-nearest-x1.5x3-noninteger",
        "op": "upsample",
        "make": x_only((2, 2, 4, 3)),
        "kwargs": {"scale": (1.5, 3.0), "mode": "nearest"},
    },
    {
        "id": "upsample-nearest-to-size-down",
        "op": "upsample",
        "make": x_only((2, 2, 7, 5)),
        "kwargs": {"size": (3, 8), "mode": "nearest"},
    },
    {
        "id": "upsample-bilinear-x2",
        "op": "upsample",
        "make": x_only((2, 3, 3, 4)),
        "kwargs": {"scale": (2.0, 2.0), "mode": "bilinear"},
    },
    {
        "id": "upsample-bilinear-to-size-align-corners",
        "op": "upsample",
        "make": x_only((2, 2, 4, 3)),
        "kwargs": {"size": (7, 5), "mode": "bilinear", "align_corners": True},
    },
    {
        "id": "upsample-bilinear-x0.5x2.5",
        "op": "upsample",
        "make": x_only((1, 2, 6, 3)),
        "kwargs": {"scale": (0.5, 2.5), "mode": "bilinear"},
    },
    {
        "id": "pad-asymmetric",
        "op": "pad",
        "make": x_only((2, 3, 3, 4)),
        "kwargs": {"pads": (1, 0, 2, 3)},
    },
    {
        "id": "pad-crop-and-constant",
        "op": "pad",
        "make": x_only((2, 2, 5, 4)),
        "kwargs": {"pads": (-1, 2, 0, -2), "value": 1.5},
    },
    # shape ops
    {"id": "flatten", "op": "flatten", "make": x_only((2, 3, 2, 2))},
    {"id": "identity", "op": "identity", "make": x_only((2, 3, 2, 2))},
    {
        "id": "concat-three-inputs",
        "op": "concat",
        "make": lambda rng: {"xs": [normal(rng, 2, c, 3, 2) for c in (1, 3, 2)]},
    },
    {
        "id": "add-three-inputs",
        "op": "add",
        "make": lambda rng: {"xs": [normal(rng, 2, 3, 2, 2) for _ in range(3)]},
    },
    {  # a ReLU fused into the sum (codegen's ResNet relu(y + x))
        "id": "add-relu",
        "op": "add",
        "make": lambda rng: {"xs": [normal(rng, 2, 3, 2, 2) for _ in range(2)]},
        "kwargs": {"relu": True},
    },
    # activations
    {"id": "relu", "op": "relu", "make": x_only((3, 4, 2, 2), off_zero)},
    {"id": "relu6", "op": "relu6", "make": x_only((3, 4, 3, 3), away_from(0, 6))},
    {"id": "hardswish", "op": "hardswish", "make": x_only((3, 4, 3, 3), away_from(-3, 3))},
    {
        "id": "leaky_relu-slope0.2",
        "op": "leaky_relu",
        "make": x_only((3, 4, 2, 2), off_zero),
        "kwargs": {"slope": 0.2},
    },
    {"id": "elu-alpha1.5", "op": "elu", "make": x_only((3, 5), off_zero), "kwargs": {"alpha": 1.5}},
    {
        "id": "sigmoid",
        "op": "sigmoid",
        "make": x_only((3, 2, 2, 3), lambda r, *s: normal(r, *s, scale=3)),
    },
    {"id": "tanh", "op": "tanh", "make": x_only((3, 2, 2, 3))},
    {
        "id": "softmax-2d",
        "op": "softmax",
        "make": x_only((3, 5), lambda r, *s: normal(r, *s, scale=3)),
    },
    {"id": "softmax-4d-over-channels", "op": "softmax", "make": x_only((2, 4, 2, 3))},
    {"id": "maxout-4d-pieces2", "op": "maxout", "make": x_only((2, 6, 2, 3), distinct)},
    {
        "id": "maxout-2d-pieces3",
        "op": "maxout",
        "make": x_only((3, 9), distinct),
        "kwargs": {"pieces": 3},
    },
    {
        "id": "dropout-train-p0.3",
        "op": "dropout",
        "make": x_only((4, 3, 3, 3)),
        "kwargs": {"p": 0.3, "train": True},
        "fresh": lambda: {"rng": np.random.default_rng(7)},
    },
    {
        "id": "dropout-eval",
        "op": "dropout",
        "make": x_only((4, 5)),
        "kwargs": {"p": 0.3, "train": False},
        "fresh": lambda: {"rng": np.random.default_rng(7)},
    },
    # normalization
    {
        "id": "batchnorm-train-4d",
        "op": "batchnorm",
        "make": norm_inputs((4, 3, 3, 2), 3),
        "kwargs": {"train": True, "momentum": 0.2},
        "fresh": batchnorm_state(3),
    },
    {  # a ReLU fused into batch norm (codegen's bn -> relu)
        "id": "batchnorm-train-4d-relu",
        "op": "batchnorm",
        "make": norm_inputs((4, 3, 3, 2), 3),
        "kwargs": {"train": True, "momentum": 0.2, "relu": True},
        "fresh": batchnorm_state(3),
    },
    {
        "id": "batchnorm-eval-2d-relu",
        "op": "batchnorm",
        "make": norm_inputs((5, 4), 4),
        "kwargs": {"train": False, "relu": True},
        "fresh": batchnorm_state(4),
    },
    {
        "id": "batchnorm-train-2d",
        "op": "batchnorm",
        "make": norm_inputs((6, 4), 4),
        "kwargs": {"train": True},
        "fresh": batchnorm_state(4),
    },
    {
        "id": "batchnorm-eval-4d",
        "op": "batchnorm",
        "make": norm_inputs((3, 3, 2, 3), 3),
        "kwargs": {"train": False, "eps": 1e-3},
        "fresh": batchnorm_state(3),
    },
    {
        "id": "batchnorm-train-no-affine",
        "op": "batchnorm",
        "make": norm_inputs((4, 2, 3, 3), 2, affine=False),
        "kwargs": {"train": True},
        "fresh": batchnorm_state(2),
    },
    {"id": "layernorm-4d", "op": "layernorm", "make": norm_inputs((3, 4, 2, 3), 4)},
    {"id": "layernorm-2d", "op": "layernorm", "make": norm_inputs((3, 7), 7)},
    {"id": "instancenorm-affine", "op": "instancenorm", "make": norm_inputs((2, 3, 3, 4), 3)},
    {
        "id": "instancenorm-no-affine",
        "op": "instancenorm",
        "make": norm_inputs((2, 3, 4, 3), 3, affine=False),
    },
    {
        "id": "groupnorm-2-groups",
        "op": "groupnorm",
        "make": norm_inputs((2, 6, 3, 2), 6),
        "kwargs": {"groups": 2},
    },
]


# ----------------------------------------------------------------------------------------------
# Sequence ops: (N, T, D) tensors, (N, T) token ids


def recurrent_inputs(gates, n, t, i_dim, hidden, layers=1, bidirectional=False):
    """x and torch-named weights (weight_ih_l0, ..., _reverse) for rnn (1), gru (3), lstm (4)."""
    def make(rng):
        out = {"x": normal(rng, n, t, i_dim)}
        dirs = 2 if bidirectional else 1
        for layer in range(layers):
            fan_in = i_dim if layer == 0 else hidden * dirs
            for d in range(dirs):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                out["weight_ih" + suffix] = normal(rng, gates * hidden, fan_in, scale=0.5)
                out["weight_hh" + suffix] = normal(rng, gates * hidden, hidden, scale=0.5)
                out["bias_ih" + suffix] = normal(rng, gates * hidden, scale=0.5)
                out["bias_hh" + suffix] = normal(rng, gates * hidden, scale=0.5)
        return out

    return make


def attention_inputs(n, t, d, bias=True):
    def make(rng):
        return {
            "x": normal(rng, n, t, d),
            "in_proj_weight": normal(rng, 3 * d, d, scale=0.5),
            "in_proj_bias": normal(rng, 3 * d, scale=0.5) if bias else None,
            "out_proj.weight": normal(rng, d, d, scale=0.5),
            "out_proj.bias": normal(rng, d, scale=0.5) if bias else None,
        }

    return make


SEQUENCE_CASES = [
    {"id": "linear-per-step", "op": "linear", "make": conv_inputs((2, 3, 5), (4, 5))},
    {"id": "layernorm-per-step", "op": "layernorm", "make": norm_inputs((2, 3, 6), 6)},
    {"id": "softmax-per-step", "op": "softmax", "make": x_only((2, 3, 5))},
    {"id": "gelu", "op": "gelu", "make": x_only((3, 4, 5), lambda r, *s: normal(r, *s, scale=2))},
    {"id": "gelu-tanh", "op": "gelu", "make": x_only((3, 4, 5),
                                                     lambda r, *s: normal(r, *s, scale=2)),
     "kwargs": {"approximate": "tanh"}},
    {
        "id": "embedding-repeated-ids",
        "op": "embedding",
        "make": lambda rng: {"x": np.array([[1, 3, 1, 0], [3, 3, 6, 1]]), "w": normal(rng, 7, 5)},
    },
    {
        "id": "pos_embedding",
        "op": "pos_embedding",
        "make": lambda rng: {"x": normal(rng, 2, 4, 3), "w": normal(rng, 4, 3)},
    },
    {"id": "sinusoidal", "op": "sinusoidal", "make": x_only((2, 5, 6))},
    {
        "id": "class_token",
        "op": "class_token",
        "make": lambda rng: {"x": normal(rng, 2, 3, 4), "token": normal(rng, 4)},
    },
    {"id": "patches-2x2", "op": "patches", "make": x_only((2, 3, 4, 6)), "kwargs": {"size": 2}},
    {"id": "seq_mean", "op": "seq_mean", "make": x_only((2, 5, 3))},
    {"id": "seq_select-first", "op": "seq_select", "make": x_only((2, 4, 3)),
     "kwargs": {"index": 0}},
    {"id": "seq_select-last", "op": "seq_select", "make": x_only((2, 4, 3)),
     "kwargs": {"index": -1}},
    {"id": "rnn", "op": "rnn", "make": recurrent_inputs(1, 2, 4, 3, 5)},
    {
        "id": "rnn-2-layers-bidirectional-last",
        "op": "rnn",
        "make": recurrent_inputs(1, 2, 3, 3, 2, layers=2, bidirectional=True),
        "kwargs": {"layers": 2, "bidirectional": True, "last": True},
    },
    {"id": "lstm", "op": "lstm", "make": recurrent_inputs(4, 2, 4, 3, 5)},
    {"id": "lstm-last", "op": "lstm", "make": recurrent_inputs(4, 3, 4, 2, 3),
     "kwargs": {"last": True}},
    {
        "id": "lstm-2-layers-bidirectional",
        "op": "lstm",
        "make": recurrent_inputs(4, 2, 3, 3, 2, layers=2, bidirectional=True),
        "kwargs": {"layers": 2, "bidirectional": True},
    },
    {
        "id": "lstm-bidirectional-last",
        "op": "lstm",
        "make": recurrent_inputs(4, 2, 4, 2, 3, bidirectional=True),
        "kwargs": {"bidirectional": True, "last": True},
    },
    {"id": "gru", "op": "gru", "make": recurrent_inputs(3, 2, 4, 3, 5)},
    {
        "id": "gru-2-layers-bidirectional-last",
        "op": "gru",
        "make": recurrent_inputs(3, 2, 3, 2, 3, layers=2, bidirectional=True),
        "kwargs": {"layers": 2, "bidirectional": True, "last": True},
    },
    {"id": "attention-1-head", "op": "attention", "make": attention_inputs(2, 4, 3)},
    {"id": "attention-2-heads-causal", "op": "attention", "make": attention_inputs(2, 5, 4),
     "kwargs": {"heads": 2, "causal": True}},
    {"id": "attention-2-heads-causal-alibi", "op": "attention",
     "make": attention_inputs(2, 5, 4), "kwargs": {"heads": 2, "causal": True, "alibi": 2.0}},
    {"id": "attention-3-heads-alibi", "op": "attention", "make": attention_inputs(2, 4, 6),
     "kwargs": {"heads": 3, "alibi": 8.0}},
    {"id": "attention-3-heads-no-bias", "op": "attention",
     "make": attention_inputs(2, 3, 6, bias=False), "kwargs": {"heads": 3}},
    {  # seeded dropout on the weights: the same mask every call, so centred differences work
        "id": "attention-dropout-train",
        "op": "attention",
        "make": attention_inputs(2, 4, 4),
        "kwargs": {"heads": 2, "causal": True, "dropout": 0.3, "train": True},
        "fresh": lambda: {"rng": np.random.default_rng(3)},
        "random": True,
    },
]
KERNEL_CASES += SEQUENCE_CASES


def labels(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    return rng.integers(0, c, n)


# Losses and penalties: f(input, *args) -> (value, grad wrt input).
LOSS_CASES = [
    {
        "id": "softmax_loss",
        "fn": "softmax_loss",
        "make": lambda rng: (normal(rng, 6, 5), labels(rng, 6, 5)),
    },
    {
        "id": "svm_loss",
        "fn": "svm_loss",
        "make": lambda rng: (distinct(rng, 6, 5) * 2.9, labels(rng, 6, 5)),
    },
    {
        "id": "svm_loss-squared-delta0.5",
        "fn": "svm_loss",
        "make": lambda rng: (distinct(rng, 6, 5) * 2.9, labels(rng, 6, 5)),
        "kwargs": {"delta": 0.5, "squared": True},
    },
    {"id": "l1_penalty", "fn": "l1_penalty", "make": lambda rng: (off_zero(rng, 4, 3, 2, 2), 0.3)},
    {"id": "l2_penalty", "fn": "l2_penalty", "make": lambda rng: (normal(rng, 4, 3, 2, 2), 0.3)},
    {
        "id": "elastic_penalty",
        "fn": "elastic_penalty",
        "make": lambda rng: (off_zero(rng, 5, 4), 0.2, 0.7),
    },
]
