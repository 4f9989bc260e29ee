"""Analyze stage: passes over the IR (shapes, params, cost, receptive field, memory)."""
from __future__ import annotations

from netspec.analysis.shapes import infer_shapes
from netspec.ir import Network


def analyze(net: Network, input_shape: tuple[int, ...] | None = None):
    """Run every analysis pass over `net` in order, annotating its nodes in place."""
    shapes = {net.inputs[0]: tuple(input_shape)} if input_shape else None
    infer_shapes(net, shapes)
    return net
