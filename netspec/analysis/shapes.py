"""Analysis pass: the output shape of every layer, from the input shapes forward."""
from __future__ import annotations

from netspec.diagnostics import Diagnostic, NetspecError, Note
from netspec.ir import Network
from netspec.ops import REGISTRY, Shape, ShapeError
from netspec.ops.base import collecting


def layer_notes(data: dict) -> list[Note]:
    """`in layer3.1 (basic, specs/resnet18.net:9)` notes for a layer made inside block
    instances, innermost first (as lowering writes them)."""
    return [Note(f.describe(), f.span) for f in reversed(data["path"])]


def show(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def infer_shapes(net: Network, input_shapes: dict[str, Shape] | None = None,
                 errors: list[Diagnostic] | None = None) -> list[Diagnostic]:
    """Set node["shape"] (per sample, batch axis implicit) and node["warnings"] everywhere;
    `input_shapes` overrides the shapes the spec declares for its inputs.

    Raises NetspecError at the first layer whose inputs it cannot accept, or, given an
    `errors` list, records every such layer there and goes on: a layer fed by a failed one
    gets no shape and no error of its own (no cascade). Returns the warnings (rows or
    columns of an input that a window never reads)."""
    nodes = dict(net.graph.nodes(data=True))  # plain dict lookups: NodeView is slow
    overrides = input_shapes or {}
    warnings: list[Diagnostic] = []
    sink = collecting()  # a symbolic analysis: undecided conditions are recorded per layer
    tokens = {name for name in net.inputs if nodes[name]["attrs"].get("dtype") == "int"}
    for name in net.order():
        data = nodes[name]
        if sink is not None:
            sink.layer = name
        op = REGISTRY[data["op"]]
        ins = [nodes[i].get("shape") for i in data["inputs"]]
        if errors is not None and any(shape is None for shape in ins):
            data["shape"], data["warnings"] = None, []
            continue
        if name in overrides:  # the input takes the given shape, as if the spec said it
            data["attrs"] = {**data["attrs"], "shape": tuple(overrides[name])}
        try:
            _check_tokens(op, [i in tokens for i in data["inputs"]])
            data["shape"] = tuple(op.shape(data["attrs"], ins))
        except ShapeError as exc:
            diagnostic = Diagnostic("error", f"{name}: {exc.message}", data["span"], exc.hint,
                                    _merge_notes(net, data) + layer_notes(data))
            if errors is None:
                raise NetspecError(diagnostic) from None
            errors.append(diagnostic)
            data["shape"], data["warnings"] = None, []
            continue
        data["warnings"] = [Diagnostic("warning", f"{name}: {w}", data["span"], None,
                                       layer_notes(data))
                            for w in op.shape_warnings(data["attrs"], ins)]
        warnings.extend(data["warnings"])
    return warnings


def _check_tokens(op, are_tokens: list[bool]) -> None:
    """Token ids (an `int` input) feed embeddings only, and embeddings read nothing else."""
    if op.token_input and not all(are_tokens):
        raise ShapeError(f"{op.name} reads token ids, but its input holds float values",
                         "declare the input as tokens: input x: [T] int")
    if not op.token_input and any(are_tokens):
        raise ShapeError(f"{op.name} cannot read token ids (integers)",
                         "turn them into vectors first: x -> embedding(vocab, dim)")


def _merge_notes(net: Network, data: dict) -> list[Note]:
    """Where each input of a merge comes from, so a mismatched add names its branches."""
    if len(data["inputs"]) < 2:
        return []
    return [Note(f"input {k + 1} is `{i}` of shape "
                 + "[" + ",".join(str(d) for d in net.node(i)["shape"]) + "]",
                 net.node(i)["span"]) for k, i in enumerate(data["inputs"])]
