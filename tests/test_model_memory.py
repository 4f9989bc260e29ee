"""The analyzer's training-memory estimate against the peak tracemalloc measures for one
training step (forward, loss, backward, optimizer update) of compiled float32 models."""
import os
import tracemalloc

import numpy as np
import pytest

import netspec
from netspec.train.optim import make_optimizer

SPECS = os.path.join(os.path.dirname(__file__), "specs")

# spec, per-sample input (None: the spec's), batch, optimizer: a plain chain, a residual
# stack, an Inception module, a real network where parameters dominate, and an
# encoder-decoder.
CASES = [
    ("lenet5", None, 64, "momentum"),
    (os.path.join(SPECS, "tiny_resnet_bottleneck.net"), None, 64, "sgd"),
    (os.path.join(SPECS, "tiny_inception.net"), None, 64, "adam"),
    ("resnet18", (3, 32, 32), 16, "adam"),
    # 3x3 convs run by Winograd (netspec.runtime.winograd)
    (os.path.join(SPECS, "resnet_blocks64.net"), None, 32, "momentum"),
    # transposed conv, resizes, padding, ceil-mode pooling, relu6 and hardswish
    (os.path.join(SPECS, "tiny_decoder.net"), None, 32, "momentum"),
]


def measured_step_peak(net, shape, batch: int, optimizer: str) -> int:
    """Peak traced bytes of the second training step (the first allocates optimizer state),
    counting everything the step holds: params, grads, optimizer state, input, activations."""
    rng = np.random.default_rng(0)
    tracemalloc.start()
    try:
        model = netspec.compile(net, input_shape=shape)
        opt = make_optimizer(optimizer, lr=1e-3)
        x = rng.standard_normal((batch,) + model.input_shape).astype(np.float32)
        y = rng.integers(0, model.output_shape[0], batch)
        for step in range(2):
            if step:
                tracemalloc.reset_peak()
            model.loss(x, y)
            opt.step(model.params, model.grads, model.frozen)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("spec, shape, batch, optimizer", CASES,
                         ids=[os.path.basename(c[0]).removesuffix(".net") for c in CASES])
def test_training_memory_estimate_within_25_percent(spec, shape, batch, optimizer):
    estimate = netspec.analyze(netspec.load(spec), shape, batch=batch,
                               optimizer=optimizer).memory
    peak = measured_step_peak(netspec.load(spec), shape, batch, optimizer)
    assert abs(estimate.total / peak - 1) < 0.25, (estimate.total, peak)
    # The activation part alone, the part the generated code's liveness decides.
    fixed = estimate.total - estimate.activations
    assert abs(estimate.activations / (peak - fixed) - 1) < 0.25, (estimate, peak)
