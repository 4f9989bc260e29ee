"""End-to-end numerical gradient checks: the loss of a whole compiled model (float64) against
centered differences, for sampled entries of every parameter and of the input."""
import os

import numpy as np
import pytest
from _gradcheck import rel_error
from _sequence_graphs import ALL as SEQUENCE_GRAPHS

import netspec
from netspec.ops import REGISTRY

HERE = os.path.dirname(__file__)
H = 1e-6
ENTRIES = 6  # sampled entries per tensor

# Every op family on one graph: a tensor that fans out three ways (lrelu), a concat, an add
# that takes the same tensor twice, normalizations, all activations, pools and both losses.
EVERY_OP = """
network every_op(loss_kind = "svm") {
    input x: [3, 6, 6]
    a = x -> conv1: conv(4, k=3, p=1) -> lrelu: leaky_relu(0.1)
    b = a -> gn: groupnorm(2) -> elu
    c = a -> ln: layernorm -> sigmoid
    d = (b, c, a) -> cat: concat
    e = x -> inorm: instancenorm -> conv2: conv(12, k=1, init="xavier") -> tanh
    f = x -> ct: conv_transpose(12, k=3, s=2, p=1, out_pad=1) -> relu6
        -> mp: maxpool(3, s=2, p=1, d=2, ceil=true) -> hardswish
    g = x -> up: upsample(2, mode="bilinear") -> pd: pad([0, 1, 1, 0], value=0.5)
        -> cg: conv(3, k=3, s=2) -> un: upsample(size=[9, 9]) -> cg2: conv(12, k=4)
    output (d, e, e, f, g) -> sum: add -> mo: maxout(3) -> pool: avgpool(2, s=2)
        -> apool: adaptive_avgpool([2, 4]) -> flatten
        -> fc: linear(5, init="normal") -> identity -> softmax
    train { loss = svm(delta = 1.0, squared = true) }
}
"""

# Batch norm in train mode, strided and grouped conv, max pooling, seeded dropout, softmax loss.
CNN = """
network cnn {
    input x: [2, 7, 7]
    output x -> conv1: conv(6, k=3, s=2, p=1, groups=2) -> bn1: bn -> relu
             -> pool: maxpool(2, s=1, ceil=true) -> conv2: conv(4, k=[1, 3], bias=false)
             -> bn2: bn -> relu -> gap: global_avgpool -> drop: dropout(0.3)
             -> fc: linear(3)
}
"""


def numerical_loss_gradient(model, x, y, array, index, seed):
    def loss_at(value):
        array[index] = value
        model.rng = np.random.default_rng(seed)  # the same dropout masks every time
        return model.data_loss(model.forward(x, train=True), y)[0]

    old = array[index]
    try:
        return (loss_at(old + H) - loss_at(old - H)) / (2 * H)
    finally:
        array[index] = old


def check_model(model, n=4, seed=0):
    rng = np.random.default_rng(seed)
    if model.input_dtype == "int":  # token ids (every test vocabulary has at least 5)
        x = rng.integers(0, 5, (n,) + tuple(model.input_shape))
    else:
        x = rng.standard_normal((n,) + tuple(model.input_shape))
    out = model.output_shape  # (C,) scores, or (T, C) per-token scores
    y = rng.integers(0, out[-1], (n,) + tuple(out[:-1]))
    model.rng = np.random.default_rng(seed)
    scores = model.forward(x, train=True)
    _, dscores = model.data_loss(scores, y)
    dx = model.backward(dscores)
    analytic = dict(model.grads, x=dx)
    arrays = dict(model.params, x=x) if dx is not None else dict(model.params)
    for name, array in arrays.items():
        picks = [np.unravel_index(i, array.shape)
                 for i in rng.choice(array.size, min(ENTRIES, array.size), replace=False)]
        numeric = [numerical_loss_gradient(model, x, y, array, ix, seed) for ix in picks]
        exact = np.array([analytic[name][ix] for ix in picks])
        # A conv bias right before batch norm has a true gradient of 0: compare absolutely.
        assert rel_error(exact, numeric) < 1e-6 or np.abs(exact - numeric).max() < 1e-9, name


def test_gradient_checked_graphs_cover_the_op_registry():
    """A new op must join EVERY_OP, CNN or a sequence graph, so it gets an end-to-end
    gradient check."""
    used = {data["op"] for text in (EVERY_OP, CNN, *SEQUENCE_GRAPHS.values())
            for data in netspec.parse(text).graph.nodes.values()}
    assert used == set(REGISTRY)


# threads=2: the batch split in two uneven shards (netspec.runtime.parallel), each kernel
# running one shard per thread, batch norm summing the shards' statistics.
@pytest.mark.parametrize("threads", [1, 2])
def test_every_op_graph_gradients(threads):
    with netspec.threads(threads):
        check_model(netspec.compile(netspec.parse(EVERY_OP), dtype="float64", seed=3))


@pytest.mark.parametrize("threads", [1, 2])
def test_cnn_with_batchnorm_and_dropout_gradients(threads):
    with netspec.threads(threads):
        check_model(netspec.compile(netspec.parse(CNN), dtype="float64", seed=4), n=5)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("graph", sorted(SEQUENCE_GRAPHS))
def test_sequence_graph_gradients(graph, threads):
    with netspec.threads(threads):
        check_model(netspec.compile(netspec.parse(SEQUENCE_GRAPHS[graph]), dtype="float64",
                                    seed=7), n=3)


@pytest.mark.parametrize("name", ["tiny_inception", "tiny_resnet_bottleneck"])
def test_small_spec_gradients(name):
    path = os.path.join(HERE, "specs", name + ".net")
    check_model(netspec.compile(path, dtype="float64", seed=5), n=3)


def test_mlp_spec_gradients():
    check_model(netspec.compile("mlp", dtype="float64", seed=6))
