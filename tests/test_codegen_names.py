"""Generated-code names are collision-proof by construction: random sets of hostile labels
(builtins, keywords, private names that Python mangles, the runtime's and the methods' own
names, look-alikes of the layer prefixes) compile, and the model computes exactly what the
same network with plain labels computes, forward and backward."""
import builtins
import keyword

import numpy as np
import pytest

import netspec
from netspec import codegen
from netspec.diagnostics import NetspecError
from netspec.parser import keywords

# Labels chosen to collide with something in Python; those that are netspec keywords (`int`
# since token inputs) are left out, as a spec cannot write them.
HOSTILE = sorted(set({
    "float", "int", "np", "numpy", "len", "range", "print", "list", "dict", "tuple", "object",
    "self", "train", "c", "g", "p", "buf", "rng", "dout", "part", "part_0", "part_1", "_",
    "input_grad", "Model", "Tensor", "Network", "N", "n", "x", "relu_forward",
    "conv2d_forward", "linear_backward", "softmax_loss", "as_strided", "Shards",
    "__a", "_N__a", "_n__a", "__init__", "__class__", "__dict__", "_Net__a", "__",
    "t_a", "d_a", "t_t_a", "d_t_a", "t_", "d_", "a", "a_2", "a_2_2",
    "class", "def", "return", "lambda", "None", "True", "match", "case", "type",
    "exec", "eval", "__import__", "globals", "locals", "super", "isinstance",
}) - keywords())

NETWORK_NAMES = sorted({"float", "Model", "np", "n", "range"} - keywords())

BODY = """
    h0 = {0} -> {1}: conv(4, k=3, p=1) -> {2}: relu
    h1 = h0 -> {3}: conv(4, k=1) -> {4}: tanh
    h2 = (h0, h1) -> {5}: add -> {6}: leaky_relu(0.1)
    h3 = (h2, h1, h0) -> {7}: concat
    output h3 -> {8}: maxpool(2, s=2, ceil=true) -> {9}: flatten -> {10}: linear(5)
"""


def spec(labels, name="n"):
    return f"network {name} {{ input {labels[0]}: [2, 5, 5] " + BODY.format(*labels) + "}"


def run(text):
    model = netspec.compile(netspec.parse(text), dtype="float64", seed=1)
    rng = np.random.default_rng(0)
    for key in model.params:  # layer order, the same for any labels
        model.params[key][...] = rng.standard_normal(model.params[key].shape)
    x = rng.standard_normal((3, 2, 5, 5))
    y = np.array([0, 3, 4])
    loss, grads = model.loss(x, y)
    return model, loss, grads


def test_prefixes_are_free_in_the_generated_module():
    reserved = codegen._reserved()
    assert "float" in reserved and "np" in reserved and "Model" in reserved
    assert not [n for n in reserved if n.startswith((codegen.TENSOR_PREFIX,
                                                      codegen.GRAD_PREFIX))]


@pytest.mark.parametrize("seed", range(12))
def test_random_hostile_labels_compute_what_plain_labels_compute(seed):
    rng = np.random.default_rng(seed)
    labels = list(rng.choice(HOSTILE, 11, replace=False))
    plain = ["x"] + [f"l{k}" for k in range(10)]
    _, loss_ref, grads_ref = run(spec(plain))
    _, loss, grads = run(spec(labels, name=str(rng.choice(NETWORK_NAMES))))
    assert loss == loss_ref
    rename = dict(zip(plain[1:], labels[1:]))
    for key, grad in grads_ref.items():
        layer, tensor = key.rsplit(".", 1)
        np.testing.assert_array_equal(grads[f"{rename[layer]}.{tensor}"], grad)


def test_mangled_private_names_stay_distinct():
    # `__a` inside a class is mangled to `_N__a`: the two labels must not share a variable.
    text = """network n { input x: [4]
        a = x -> __a: linear(3)
        b = x -> _N__a: linear(3)
        output (a, b) -> add -> float: leaky_relu(0.5) }"""
    model = netspec.compile(netspec.parse(text), dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 4))
    w1, b1 = model.params["__a.weight"], model.params["__a.bias"]
    w2, b2 = model.params["_N__a.weight"], model.params["_N__a.bias"]
    h = x @ w1.T + b1 + x @ w2.T + b2
    np.testing.assert_allclose(model.forward(x), np.where(h > 0, h, 0.5 * h))


@pytest.mark.parametrize("value", ["1e400", "-1e400"])
def test_infinite_float_arguments_are_located_errors(value):
    text = f"network n {{ input x: [4]\n output x -> leaky_relu({value}) }}"
    with pytest.raises(NetspecError) as err:
        netspec.parse(text)
    d = err.value.diagnostics[0]
    assert "finite" in d.message and d.span.line == 2


def test_generated_identifiers_are_never_builtins_or_keywords():
    source = codegen.generate(netspec.parse(spec(["x"] + HOSTILE[:10])))
    import ast
    names = {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)
             and isinstance(n.ctx, ast.Store)}
    layer_names = {n for n in names if n.startswith(("t_", "d_"))}
    assert layer_names and not layer_names & (set(dir(builtins)) | set(keyword.kwlist))
