"""Memory pass: activation sizes (the CS231n VGG-16 walk-through) and the training-step
estimate, checked against a tracemalloc measurement of netspec's own NumPy kernels."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import netspec
from netspec.analysis.memory import OPTIMIZER_SCRATCH, OPTIMIZER_SLOTS

# CS231n, "Convolutional Neural Networks", section "VGGNet in detail"
# (cs231n.github.io/convolutional-networks): per layer of VGG-16 on 224x224x3, the output
# [H x W x C], its "memory" (values, rounded in the notes) and its weights (biases left out).
# The notes fold each ReLU into its CONV row. "TOTAL params: 138M parameters".
CS231N_VGG16 = [
    ("INPUT", (224, 224, 3), "150K", 0),
    ("CONV3-64", (224, 224, 64), "3.2M", (3 * 3 * 3) * 64),
    ("CONV3-64", (224, 224, 64), "3.2M", (3 * 3 * 64) * 64),
    ("POOL2", (112, 112, 64), "800K", 0),
    ("CONV3-128", (112, 112, 128), "1.6M", (3 * 3 * 64) * 128),
    ("CONV3-128", (112, 112, 128), "1.6M", (3 * 3 * 128) * 128),
    ("POOL2", (56, 56, 128), "400K", 0),
    ("CONV3-256", (56, 56, 256), "800K", (3 * 3 * 128) * 256),
    ("CONV3-256", (56, 56, 256), "800K", (3 * 3 * 256) * 256),
    ("CONV3-256", (56, 56, 256), "800K", (3 * 3 * 256) * 256),
    ("POOL2", (28, 28, 256), "200K", 0),
    ("CONV3-512", (28, 28, 512), "400K", (3 * 3 * 256) * 512),
    ("CONV3-512", (28, 28, 512), "400K", (3 * 3 * 512) * 512),
    ("CONV3-512", (28, 28, 512), "400K", (3 * 3 * 512) * 512),
    ("POOL2", (14, 14, 512), "100K", 0),
    ("CONV3-512", (14, 14, 512), "100K", (3 * 3 * 512) * 512),
    ("CONV3-512", (14, 14, 512), "100K", (3 * 3 * 512) * 512),
    ("CONV3-512", (14, 14, 512), "100K", (3 * 3 * 512) * 512),
    ("POOL2", (7, 7, 512), "25K", 0),
    ("FC", (1, 1, 4096), "4096", 7 * 7 * 512 * 4096),
    ("FC", (1, 1, 4096), "4096", 4096 * 4096),
    ("FC", (1, 1, 1000), "1000", 4096 * 1000),
]


def _rounded(label: str) -> float:
    scale = {"K": 1e3, "M": 1e6}.get(label[-1], 1)
    return float(label.rstrip("KM")) * scale


def test_cs231n_vgg16_walkthrough_rows():
    net = netspec.load("vgg16")
    a = netspec.analyze(net)
    rows = [r for r in a.layers if r.op in ("input", "conv", "maxpool", "linear")]
    assert len(rows) == len(CS231N_VGG16)
    for r, (kind, (h, w, c), memory, weights) in zip(rows, CS231N_VGG16):
        values = h * w * c
        assert r.output_shape in ((c, h, w), (c,)), kind
        assert r.activation_bytes == 4 * values, kind  # float32, one sample
        assert values == pytest.approx(_rounded(memory), rel=0.06), kind
        weight = next((p.size for p in net.node(r.name)["params"] if p.name == "weight"), 0)
        assert weight == weights, kind
    total_weights = sum(row[3] for row in CS231N_VGG16)
    assert round(total_weights / 1e6) == 138  # "TOTAL params: 138M parameters"
    assert a.totals.params == total_weights + 13_416  # plus the biases the notes leave out
    # The notes' "TOTAL memory: 24M * 4 bytes ~= 93MB / image" does not follow from their own
    # rows (cs231n/cs231n.github.io issue #88); the rows sum to 15.2M values.
    assert round(sum(h * w * c for _, (h, w, c), _, _ in CS231N_VGG16) / 1e6, 1) == 15.2


def test_activation_bytes_are_one_sample_s_output_in_the_dtype():
    a = netspec.analyze(netspec.load("lenet5"), dtype="float64")
    assert a.layer("c1").activation_bytes == 8 * 6 * 28 * 28
    # Forward total: the input and every output that owns memory (reshapes share theirs).
    assert a.totals.activation_bytes == sum(r.activation_bytes for r in a.layers)


def test_optimizer_slots_match_netspec_train():
    from netspec.train.optim import OPTIMIZERS

    assert OPTIMIZER_SLOTS == {name: len(cls.slots) for name, cls in OPTIMIZERS.items()}


@pytest.mark.parametrize("optimizer, slots", [("sgd", 0), ("momentum", 1), ("nesterov", 1),
                                              ("adagrad", 1), ("rmsprop", 1), ("adam", 2),
                                              ("adamw", 2)])
def test_optimizer_state_is_slots_plus_scratch_per_trainable_parameter(optimizer, slots):
    m = netspec.analyze(netspec.load("resnet18"), optimizer=optimizer).memory
    params = 11_689_512 * 4
    assert (m.params, m.gradients) == (params, params)
    assert m.optimizer_state == (slots + OPTIMIZER_SCRATCH) * params
    assert m.total == m.params + m.gradients + m.optimizer_state + m.buffers + m.activations


def test_frozen_parameters_have_gradients_but_no_optimizer_state():
    m = netspec.analyze(netspec.load("resnet18"), optimizer="adam", freeze=["layer4"]).memory
    layer4 = 8_393_728  # the two basic blocks of 512 channels, with their batch norms
    assert m.optimizer_state == 3 * (11_689_512 - layer4) * 4
    assert m.gradients == 11_689_512 * 4


def test_activation_memory_grows_linearly_with_the_batch_but_conv_workspace_stops_at_a_chunk():
    from netspec.runtime.layers import CONV_CHUNK

    def memory(batch):
        return netspec.analyze(netspec.load("resnet18"), batch=batch).memory

    one, chunk, many = memory(1), memory(CONV_CHUNK), memory(4 * CONV_CHUNK)
    assert chunk.saved_for_backward == CONV_CHUNK * one.saved_for_backward
    assert many.saved_for_backward == 4 * CONV_CHUNK * one.saved_for_backward
    # Per added sample, activations grow less beyond a chunk: the conv columns stop growing.
    up_to_chunk = (chunk.activations - one.activations) / (CONV_CHUNK - 1)
    beyond = (many.activations - chunk.activations) / (3 * CONV_CHUNK)
    assert beyond < up_to_chunk
    assert many.activations >= many.saved_for_backward
    assert many.params == one.params


def test_conv_keeps_its_input_not_its_im2col_columns_for_the_backward():
    # conv 3x3 on [3, 8, 8] -> [4, 8, 8]: the backward builds the columns again.
    a = netspec.analyze(netspec.parse("network n { input x: [3, 8, 8]\n"
                                      "output x -> conv(4, k=3, p=1) }"))
    assert a.memory.saved_for_backward == 4 * (3 * 8 * 8 + 4 * 8 * 8)
    # (the input batch the caller holds, which the conv reads again, and the output the
    # loss reads); the forward's peak adds the columns C_in*k*k x H_out*W_out and the GEMM
    # result beside them, for up to CONV_CHUNK samples at once.
    columns, result = 3 * 3 * 3 * 8 * 8, 4 * 8 * 8
    assert a.memory.activations >= 4 * (3 * 8 * 8 + columns + result)


def test_unknown_dtype_and_optimizer_are_diagnostics():
    net = netspec.load("lenet5")
    with pytest.raises(netspec.NetspecError, match="unknown dtype `int8`"):
        netspec.analyze(net, dtype="int8")
    with pytest.raises(netspec.NetspecError, match="unknown optimizer `lbfgs`"):
        netspec.analyze(net, optimizer="lbfgs")


# ---- the estimate against a measurement ---------------------------------------------------

def _train_step_peak(net, batch: int) -> int:
    """tracemalloc peak of one training step of the compiled model on one thread (forward,
    loss, backward, as model.loss runs them: fused layers, each output dropped after its
    last use, each cache after its backward). Parameters and the batch exist before tracing
    starts; gradients do not."""
    model = netspec.compile(net, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + model.input_shape).astype(np.float32)
    y = np.zeros(batch, dtype=np.int64)
    with netspec.threads(1):
        tracemalloc.start()
        model.loss(x, y)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


# Small widths keep the GEMMs cheap, a large batch makes activations dominate.
SMALL_RESNET = """import "blocks/resnet.net"
network small_resnet {
    input x: [3, 32, 32]
    output x -> conv(16, k=3, p=1, bias=false) -> bn -> relu
             -> layer1: basic(16) * 2
             -> layer2: basic(32, s = 2 if i == 0 else 1) * 2
             -> layer3: basic(64, s = 2 if i == 0 else 1) * 2
             -> global_avgpool -> fc: linear(10)
}"""
SMALL_INCEPTION = """import "blocks/inception.net"
network small_inception {
    input x: [3, 32, 32]
    output x -> conv_bn(32, 3, p=1) -> maxpool(3, s=2, ceil=true)
             -> inception(16, 16, 24, 4, 8, 8) -> inception(24, 24, 32, 8, 16, 16)
             -> maxpool(2) -> global_avgpool -> dropout(0.2) -> linear(10)
}"""


@pytest.mark.parametrize("net, batch", [
    (lambda: netspec.load("digits_cnn"), 64),  # a chain: conv, batch norm, pools, dropout
    (lambda: netspec.parse(SMALL_RESNET), 8),  # residual adds, strided convs, projections
    (lambda: netspec.parse(SMALL_INCEPTION), 8),  # four-branch concats, ceil-mode pools
], ids=["digits_cnn", "small_resnet", "small_inception"])
def test_training_estimate_is_within_25_percent_of_the_measured_peak(net, batch):
    net = net()
    m = netspec.analyze(net, batch=batch).memory
    measured = _train_step_peak(net, batch)
    # Measured: activations, caches, workspace and the gradients, not the parameters.
    assert m.activations + m.gradients == pytest.approx(measured, rel=0.25)
