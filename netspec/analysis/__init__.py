"""Analyze stage: passes over the IR (shapes, params, cost, receptive field, memory)."""
from __future__ import annotations

from collections.abc import Iterable

from netspec.analysis.cost import CONVENTIONS, count_cost
from netspec.analysis.memory import activation_memory, itemsize, training_memory
from netspec.analysis.params import count_params
from netspec.analysis.receptive_field import ReceptiveField, receptive_fields
from netspec.analysis.report import SCHEMA_VERSION, Analysis, LayerRecord, Row, layer_records, rows
from netspec.analysis.shapes import infer_shapes
from netspec.diagnostics import Diagnostic, NetspecError
from netspec.ir import Network
from netspec.ops import ArgError, Shape
from netspec.ops.io import check_input_shape


def analyze(net: Network, input_shape: Shape | None = None, *, freeze: Iterable[str] = (),
            batch: int = 1, dtype: str = "float32", optimizer: str = "sgd",
            count: str = "torchvision") -> Analysis:
    """Run every analysis pass over `net` in order, annotating its nodes in place, and
    return the per-layer records and totals.

    input_shape overrides the (first) input's declared shape, per sample: (3, 32, 32).
    freeze: globs of layer or parameter names (`layer1.*`, `fc.weight`) not trained.
    batch, dtype, optimizer: what the training-memory estimate assumes.
    count: "torchvision" (FLOPs = 2 MACs, conv and linear only) or "all" (every op)."""
    itemsize(dtype)  # an unknown dtype fails before any pass runs
    if count not in CONVENTIONS:
        raise NetspecError(Diagnostic("error", f"unknown count convention `{count}`", None,
                                      "use " + " or ".join(CONVENTIONS)))
    overrides = {net.inputs[0]: _checked(input_shape)} if input_shape is not None else None

    warnings = infer_shapes(net, overrides)
    frozen = count_params(net, freeze)
    count_cost(net, count)
    warnings += receptive_fields(net)
    activation_memory(net, dtype)
    layers, totals = layer_records(net, frozen, itemsize(dtype))
    memory = training_memory(net, totals.count, batch, dtype, optimizer)
    inputs = {name: net.node(name)["shape"] for name in net.inputs}
    return Analysis(net.name, inputs, list(net.outputs), batch, dtype, count, layers, totals,
                    memory, frozen, warnings)


def _checked(shape) -> Shape:
    try:
        return check_input_shape(list(shape))
    except (ArgError, TypeError) as exc:
        message = exc.message if isinstance(exc, ArgError) else str(exc)
        raise NetspecError(Diagnostic("error", f"bad input shape {shape!r}: {message}")) \
            from None


__all__ = [
    "SCHEMA_VERSION",
    "Analysis",
    "LayerRecord",
    "ReceptiveField",
    "Row",
    "analyze",
    "rows",
]
