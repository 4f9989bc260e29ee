"""Analyze stage: passes over the IR (shapes, params, cost, receptive field, memory)."""
from __future__ import annotations

from collections.abc import Iterable

from netspec.analysis.cost import CONVENTIONS, convention, count_cost
from netspec.analysis.memory import activation_memory, itemsize, training_memory
from netspec.analysis.params import count_params
from netspec.analysis.receptive_field import ReceptiveField, receptive_fields
from netspec.analysis.report import SCHEMA_VERSION, Analysis, LayerRecord, Row, layer_records, rows
from netspec.analysis.shapes import infer_shapes, layer_notes
from netspec.diagnostics import Diagnostic, NetspecError
from netspec.ir import Network
from netspec.ops import ArgError, Shape
from netspec.ops.io import check_input_shape


def analyze(net: Network, input_shape: Shape | None = None, *, freeze: Iterable[str] = (),
            batch: int = 1, dtype: str = "float32", optimizer: str = "sgd",
            flops: str | None = None, count: str | None = None) -> Analysis:
    """Run every analysis pass over `net` in order, annotating its nodes in place, and
    return the per-layer records and totals.

    input_shape overrides the (first) input's declared shape, per sample: (3, 32, 32), or
    with size names (3, "H", "W"): every size-dependent figure is then a SymPy expression
    and `Analysis.at(H=224, W=224)` evaluates it.
    freeze: globs of layer or parameter names (`layer1.*`, `fc.weight`) not trained.
    batch, dtype, optimizer: what the training-memory estimate assumes.
    flops: the FLOP convention, "2mac" (default: 1 MAC = 2 FLOPs, as PyTorch's
    FlopCounterMode), "mac" or "exact" (multiplies and adds apart, every op), or "all";
    count: its former name ("torchvision" = "2mac", "all")."""
    itemsize(dtype)  # an unknown dtype fails before any pass runs
    wanted = flops or count or "2mac"
    conv = convention(wanted)
    if conv is None:
        raise NetspecError(Diagnostic("error", f"unknown FLOP convention `{wanted}`", None,
                                      "use " + ", ".join(CONVENTIONS)))
    count = conv
    overrides = {net.inputs[0]: _checked(input_shape)} if input_shape is not None else None
    symbols = _size_symbols(net, overrides)
    if symbols:
        return _symbolic(net, overrides, symbols, freeze, batch, dtype, optimizer, count)

    warnings = infer_shapes(net, overrides)
    frozen = count_params(net, freeze)
    count_cost(net, count)
    warnings += receptive_fields(net)
    activation_memory(net, dtype)
    layers, totals = layer_records(net, frozen, itemsize(dtype))
    memory = training_memory(net, totals.count, batch, dtype, optimizer)
    inputs = {name: net.node(name)["shape"] for name in net.inputs}
    return Analysis(net.name, inputs, list(net.outputs), batch, dtype, count, layers, totals,
                    memory, frozen, warnings, dead=_dead(net))


def _dead(net: Network) -> list[str]:
    """The layers reaching no output, which compile drops and no figure counts."""
    live = set(net.live())
    return [name for name in net.order() if name not in live]


def _size_symbols(net: Network, overrides: dict | None) -> list:
    """The size symbols of the inputs (none for a concrete analysis)."""
    shapes = [(overrides or {}).get(n) or net.node(n)["attrs"]["shape"] for n in net.inputs]
    found = []
    for shape in shapes:
        for d in shape:
            if not isinstance(d, int) and d not in found:
                found.append(d)
    return found


def _symbolic(net: Network, overrides, symbols, freeze, batch, dtype, optimizer,
              count) -> Analysis:
    """The passes over symbolic sizes: the shape rules record the conditions they cannot
    decide; what they imply about the sizes is derived before the memory pass needs it."""
    from netspec.analysis import symbolic
    from netspec.ops import base

    sink = base.SizeConditions()
    base._conditions.append(sink)
    try:
        warnings = infer_shapes(net, overrides)
    finally:
        base._conditions.remove(sink)
    where = [c for n in net.inputs for c in net.node(n)["attrs"].get("where", ())]
    sizes = symbolic.derive(symbols, sink.items, where)
    frozen = count_params(net, freeze)
    for name in net.order():
        for p in net.node(name)["params"]:
            if any(symbolic.is_symbolic(d) for d in p.shape):
                data = net.node(name)
                raise NetspecError(Diagnostic(
                    "error", f"{name}: the size of `{name}.{p.name}` "
                    f"{list(p.shape)} depends on the input size", data["span"],
                    "give the input a fixed size (parameters cannot depend on it), or pool "
                    "to a fixed size before it (global_avgpool, adaptive_avgpool)",
                    layer_notes(data)))
    count_cost(net, count)
    warnings += receptive_fields(net)
    activation_memory(net, dtype)
    layers, totals = layer_records(net, frozen, itemsize(dtype))
    memory = training_memory(net, totals.count, batch, dtype, optimizer, sizes.minimum)
    inputs = {name: net.node(name)["shape"] for name in net.inputs}
    return Analysis(net.name, inputs, list(net.outputs), batch, dtype, count, layers, totals,
                    memory, frozen, warnings, sizes, dead=_dead(net))


def _checked(shape) -> Shape:
    if any(isinstance(d, str) for d in shape):
        from netspec.analysis.symbolic import dim

        try:
            shape = [dim(d) for d in shape]
        except ValueError as exc:
            raise NetspecError(Diagnostic("error", f"bad input shape {shape!r}: {exc}")) \
                from None
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
