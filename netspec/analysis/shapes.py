"""Analysis pass: the output shape of every layer, from the input shapes forward."""
from __future__ import annotations

from netspec.diagnostics import Diagnostic, NetspecError, Note
from netspec.ir import Network
from netspec.ops import REGISTRY, ShapeError


def layer_notes(data: dict) -> list[Note]:
    """`in layer3.1 (basic)` notes for a layer made inside block instances, innermost first."""
    return [Note(f"in {f.instance} ({f.block})", f.span) for f in reversed(data["path"])]


def infer_shapes(net: Network, input_shapes: dict[str, tuple[int, ...]] | None = None) -> None:
    """Set node["shape"] (per sample, batch axis implicit) and node["warnings"] everywhere.

    Raises NetspecError at the first layer whose inputs it cannot accept."""
    g = net.graph
    for name in net.order():
        data = g.nodes[name]
        op = REGISTRY[data["op"]]
        ins = [g.nodes[i]["shape"] for i in data["inputs"]]
        if data["op"] == "input" and input_shapes and name in input_shapes:
            data["shape"] = tuple(input_shapes[name])
            data["warnings"] = []
            continue
        try:
            data["shape"] = tuple(op.shape(data["attrs"], ins))
        except ShapeError as exc:
            raise NetspecError(Diagnostic(
                "error", f"{name}: {exc.message}", data["span"], exc.hint,
                layer_notes(data))) from None
        data["warnings"] = [Diagnostic("warning", f"{name}: {w}", data["span"], None,
                                       layer_notes(data))
                            for w in op.shape_warnings(data["attrs"], ins)]
