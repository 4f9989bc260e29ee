"""Runtime kernels: every backward against centered-difference gradients, in float64."""

import ast
import pathlib
import sys
import zlib

import numpy as np
import pytest
from _gradcheck import (
    KERNEL_CASES,
    LOSS_CASES,
    cast_inputs,
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    grads_by_input,
    kernel_pair,
    rel_error,
    run_forward,
)

from netspec import runtime

GRAD_TOL = 1e-8  # measured: 1e-12 .. 5e-11 in float64


def case_rng(case_id: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(case_id.encode()))


def differentiable_arrays(inputs: dict, grads: dict):
    """(label, input array, analytic gradient) for every float array input, list elements
    included (integer token ids have no gradient: their backward returns None)."""
    for name, value in inputs.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
            assert grads[name] is None, f"{name} holds integers, so its gradient must be None"
            continue
        if isinstance(value, list):
            assert isinstance(grads[name], list) and len(grads[name]) == len(value)
            for i, (v, g) in enumerate(zip(value, grads[name])):
                yield f"{name}[{i}]", v, g
        elif value is not None:
            yield name, value, grads[name]


@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: c["id"])
def test_backward_matches_numerical_gradient(case):
    rng = case_rng(case["id"])
    inputs = case["make"](rng)
    out, cache = run_forward(case, inputs)
    dout = rng.standard_normal(out.shape)
    _, backward = kernel_pair(case)
    grads = grads_by_input(case, inputs, backward(dout, cache))

    for name, value in inputs.items():
        if value is None:
            assert grads[name] is None, f"{name} is None, so its gradient must be None"

    for label, array, analytic in differentiable_arrays(inputs, grads):
        assert analytic.shape == array.shape, label
        numeric = eval_numerical_gradient_array(lambda _: run_forward(case, inputs)[0], array, dout)
        assert rel_error(analytic, numeric) < GRAD_TOL, (
            f"d{label}: {rel_error(analytic, numeric):.2e}"
        )


@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: c["id"])
def test_kernel_preserves_float32(case):
    rng = case_rng(case["id"])
    inputs = cast_inputs(case["make"](rng), np.float32)
    out, cache = run_forward(case, inputs)
    assert out.dtype == np.float32
    dout = rng.standard_normal(out.shape).astype(np.float32)
    _, backward = kernel_pair(case)
    grads = grads_by_input(case, inputs, backward(dout, cache))
    for label, _, grad in differentiable_arrays(inputs, grads):
        assert grad.dtype == np.float32, label


def test_every_runtime_kernel_has_a_case():
    ops = {name.removesuffix("_forward") for name in runtime.__all__ if name.endswith("_forward")}
    assert ops == {case["op"] for case in KERNEL_CASES}
    losses = {case["fn"] for case in LOSS_CASES}
    assert losses == {"softmax_loss", "svm_loss", "l1_penalty", "l2_penalty", "elastic_penalty"}


@pytest.mark.parametrize("case", LOSS_CASES, ids=lambda c: c["id"])
def test_loss_gradient_matches_numerical_gradient(case):
    fn = getattr(runtime, case["fn"])
    x, *args = case["make"](case_rng(case["id"]))
    kwargs = case.get("kwargs", {})
    value, analytic = fn(x, *args, **kwargs)
    assert isinstance(value, float)
    numeric = eval_numerical_gradient(lambda _: fn(x, *args, **kwargs)[0], x)
    assert rel_error(analytic, numeric) < GRAD_TOL


@pytest.mark.parametrize("case", LOSS_CASES, ids=lambda c: c["id"])
def test_loss_gradient_preserves_float32(case):
    x, *args = case["make"](case_rng(case["id"]))
    _, grad = getattr(runtime, case["fn"])(x.astype(np.float32), *args, **case.get("kwargs", {}))
    assert grad.dtype == np.float32


def test_softmax_loss_is_log_c_at_initialization():
    rng = np.random.default_rng(0)
    scores = 1e-3 * rng.standard_normal((500, 10))
    loss, _ = runtime.softmax_loss(scores, rng.integers(0, 10, 500))
    assert loss == pytest.approx(np.log(10), rel=1e-3)


def test_softmax_loss_survives_huge_scores():
    loss, dscores = runtime.softmax_loss(np.array([[1000.0, 0.0], [0.0, 1000.0]]), np.array([0, 0]))
    assert loss == pytest.approx(500.0)
    assert np.all(np.isfinite(dscores))


def test_svm_loss_is_c_minus_one_times_delta_for_equal_scores():
    loss, _ = runtime.svm_loss(np.zeros((4, 5)), np.array([0, 1, 2, 3]), delta=1.0)
    assert loss == pytest.approx(4.0)


@pytest.mark.parametrize(
    "stride, padding, dilation", [((1, 1), (1, 1), (1, 1)), ((2, 3), (1, 0), (2, 1))]
)
def test_col2im_is_the_adjoint_of_im2col(stride, padding, dilation):
    # <im2col(x), c> == <x, col2im(c)> for all x, c: col2im is exactly im2col's transpose.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 9, 8))
    cols = runtime.im2col(x, (3, 2), stride, padding, dilation)
    c = rng.standard_normal(cols.shape)
    back = runtime.col2im(c, x.shape, (3, 2), stride, padding, dilation)
    assert np.sum(cols * c) == pytest.approx(np.sum(x * back), rel=1e-12)


@pytest.mark.parametrize(
    "size, kernel, stride, padding, ceil_mode, expected",
    [
        (32, 3, 1, 1, False, 32),
        (7, 3, 2, 0, False, 3),
        (8, 3, 2, 0, True, 4),  # ceil((8-3)/2)+1
        (6, 2, 2, 1, True, 4),  # 4th window starts at 6 - 1 = 5 < H + P: kept
        (5, 2, 2, 1, True, 3),  # 4th window would start at 6 >= H + P = 6: dropped
    ],
)
def test_conv_output_size_follows_pytorch(size, kernel, stride, padding, ceil_mode, expected):
    assert runtime.conv_output_size(size, kernel, stride, padding, 1, ceil_mode) == expected


def test_batchnorm_eval_does_not_touch_running_statistics():
    rng = np.random.default_rng(0)
    mean, var = np.zeros(3), np.ones(3)
    runtime.batchnorm_forward(rng.standard_normal((4, 3)), None, None, mean, var, train=False)
    assert np.all(mean == 0) and np.all(var == 1)


def test_dropout_is_identity_at_eval_and_for_p_zero():
    x = np.ones((3, 4), dtype=np.float32)
    rng = np.random.default_rng(0)
    for train, p in [(False, 0.5), (True, 0.0)]:
        out, cache = runtime.dropout_forward(x, p, train, rng)
        assert out is x and cache is None
        assert runtime.dropout_backward(x, cache) is x


RUNTIME_DIR = pathlib.Path(runtime.__file__).parent


@pytest.mark.parametrize("path", sorted(RUNTIME_DIR.glob("*.py")), ids=lambda p: p.name)
def test_runtime_module_is_inlinable(path):
    # codegen --standalone pastes these modules into one file: only numpy, standard library
    # and runtime imports, no `from __future__` (it must be a file's first statement), no
    # np.add.at (slow).
    def allowed(module):
        return module.split(".")[0] in ("numpy", *sys.stdlib_module_names) and \
            module != "__future__"

    tree = ast.parse(path.read_text())
    # An import tried with `except ImportError` is optional (parallel.py's threadpoolctl:
    # without it a standalone module runs unsplit).
    optional = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try)
                and any(isinstance(h.type, ast.Name) and h.type.id == "ImportError"
                        for h in t.handlers)
                for n in t.body if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            assert all(allowed(a.name) for a in node.names), ast.unparse(node)
        elif isinstance(node, ast.ImportFrom):
            assert node.module.startswith("netspec.runtime") or allowed(node.module), \
                ast.unparse(node)
        elif isinstance(node, ast.Attribute) and node.attr == "at":
            pytest.fail(f"{path.name}: ufunc.at is too slow for the runtime")
    assert all(
        isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Expr,
                           ast.Assign))
        for n in tree.body
    ), "runtime modules hold top-level functions, classes and constants only"


def test_runtime_modules_still_work_pasted_into_one_file():
    # What `netspec compile --standalone` does: the modules in dependency order, the
    # cross-module imports dropped. The pasted kernels must agree with the package's.
    def without_runtime_imports(text: str) -> str:
        lines = text.splitlines()
        for node in ast.parse(text).body:  # an import may span lines: drop all of them
            if isinstance(node, ast.ImportFrom) and node.module.startswith("netspec.runtime"):
                lines[node.lineno - 1:node.end_lineno] = [""] * (node.end_lineno - node.lineno + 1)
        return "\n".join(lines)

    source = "\n".join(
        without_runtime_imports((RUNTIME_DIR / name).read_text())
        for name in ("parallel.py", "im2col.py", "winograd.py", "sequence.py", "layers.py",
                     "losses.py")
    )
    pasted: dict = {}
    exec(compile(source, "standalone.py", "exec"), pasted)  # noqa: S102 (our own source)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3))
    out, cache = pasted["conv2d_forward"](x, w, None, padding=(1, 1))
    np.testing.assert_array_equal(out, runtime.conv2d_forward(x, w, None, padding=(1, 1))[0])
    assert pasted["conv2d_backward"](out, cache)[2] is None


def test_erf_of_the_exact_gelu_against_math_erf():
    """The runtime's NumPy-only erf (exact GELU): float64 within 2e-15 of math.erf, float32
    within 5e-7 (8 ulps of 1.0; Numerical Recipes' fit, 1.2e-7 relative in erfc, then 1 -
    erfc in float32), tails and signs included; the float32 GELU within 1e-6 relative of the
    float64 one."""
    import math

    from netspec.runtime.sequence import _erf

    x = np.concatenate([np.linspace(-9, 9, 36001), [0.0, -0.0, 1e-300, -2.0, 2.0, 40.0]])
    expected = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(_erf(x), expected, rtol=0, atol=2e-15)
    x32 = x.astype(np.float32)
    got = _erf(x32)
    assert got.dtype == np.float32
    expected32 = np.array([math.erf(v) for v in x32.astype(np.float64)])
    np.testing.assert_allclose(got, expected32, rtol=0, atol=5e-7)
    assert np.all(np.sign(got) == np.sign(x32))  # an odd function, zero at zero
    gelu32 = runtime.gelu_forward(x32[np.abs(x32) < 6])[0]
    gelu64 = runtime.gelu_forward(x32[np.abs(x32) < 6].astype(np.float64))[0]
    np.testing.assert_allclose(gelu32, gelu64, rtol=1e-6, atol=1e-7)
