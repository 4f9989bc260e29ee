"""Analysis results: one record per layer, the totals, and the stable JSON form of both."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from netspec.analysis.cost import CONVENTIONS
from netspec.analysis.memory import TrainingMemory
from netspec.analysis.params import ParamCount, layer_count
from netspec.analysis.receptive_field import ReceptiveField, TimeField
from netspec.diagnostics import Diagnostic, NetspecError, show_value
from netspec.ir import Frame, Network
from netspec.ops import REGISTRY, Shape
from netspec.ops.base import is_symbolic

if TYPE_CHECKING:
    from netspec.analysis.symbolic import SizeConditions

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LayerRecord:
    name: str
    op: str  # the canonical op name
    label: str  # op.describe(attrs): "conv 3x3/2, 64"
    path: tuple[Frame, ...]  # block instances, outermost first
    inputs: tuple[str, ...]
    output_shape: Shape  # per sample
    count: ParamCount
    param_bytes: int  # trainable and frozen parameters
    macs: int
    flops: int
    receptive_field: ReceptiveField | None
    activation_bytes: int  # the output, per sample
    attrs: dict | None = None  # the op's arguments, kept where they hold size symbols
    backward_flops: tuple = (0, 0)  # (input gradient, weight gradient), per sample

    @property
    def params(self) -> int:
        return self.count.params


@dataclass(frozen=True)
class Totals:
    count: ParamCount
    param_bytes: int
    buffer_bytes: int
    macs: int
    flops: int
    activation_bytes: int  # per sample: the input and every layer output that owns memory
    backward_flops: tuple = (0, 0)  # (input gradients, weight gradients), per sample

    @property
    def params(self) -> int:
        return self.count.params

    @property
    def training_flops(self):
        """Forward and backward of one sample (times the batch for a step)."""
        return self.flops + self.backward_flops[0] + self.backward_flops[1]


@dataclass
class Analysis:
    """What `netspec.analyze` returns: per-layer records in topological order, totals, the
    training-memory estimate and the warnings (dropped rows, misaligned paths)."""

    network: str
    input_shapes: dict[str, Shape]
    outputs: list[str]
    batch: int
    dtype: str
    count_convention: str
    layers: list[LayerRecord]
    totals: Totals
    memory: TrainingMemory
    frozen: frozenset[str]
    warnings: list[Diagnostic] = field(default_factory=list)
    # Symbolic sizes (`input x: [3, H, W]`): what the conditions say about them; None for a
    # concrete analysis. Shapes, MACs, FLOPs, bytes and the memory estimate are then SymPy
    # expressions in the size symbols; `at(H=224, W=224)` evaluates them.
    sizes: SizeConditions | None = None
    # Layers whose output reaches no output: compile drops them, so no row, total or memory
    # figure counts them (the lowering warned about each branch).
    dead: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_name = {r.name: r for r in self.layers}

    @property
    def symbolic(self) -> bool:
        return self.sizes is not None

    def at(self, **sizes: int) -> Analysis:
        """The analysis at concrete sizes (`at(H=224, W=224)`): every expression evaluated
        exactly. A size below a layer's minimum is an error naming the layer; sizes at
        which input rows go unread give warnings, as a concrete analysis does."""
        if self.sizes is None:
            raise NetspecError(Diagnostic("error", "this analysis has no size symbols"))
        from netspec.analysis.symbolic import evaluate_analysis

        return evaluate_analysis(self, sizes)

    def layer(self, name: str) -> LayerRecord:
        return self._by_name[name]

    # ---- display: print() and notebooks show the summary table, repr() stays one line ----

    def __str__(self) -> str:
        from netspec.analysis.summary import render

        return render(self, "table")

    def __repr__(self) -> str:
        from netspec.analysis.summary import _si, show

        inputs = ", ".join(f"{name} {show(s)}" for name, s in self.input_shapes.items())
        return (f"<Analysis {self.network!r}: input {inputs}, {len(self.layers)} layers, "
                f"{self.totals.params:,} params, {_si(self.totals.macs)} MACs>")

    def _repr_markdown_(self) -> str:
        # Jupyter renders this as a table (the text of `netspec summary --format markdown`).
        from netspec.analysis.summary import render

        return render(self, "markdown")

    @property
    def convention(self) -> str:
        return CONVENTIONS[self.count_convention]

    @property
    def output(self) -> LayerRecord:
        return self._by_name[self.outputs[0]]

    def to_dict(self, depth: int | None = None) -> dict:
        """The JSON document of `netspec summary --format json` (schema in docs/analyzer.md).

        `layers` lists every layer, or with `depth` the rows of that depth whose sums are
        the totals: layers up to it and block instances collapsed at it."""
        t = self.totals
        doc = {
            "schema_version": SCHEMA_VERSION,
            "network": self.network,
            "input": {name: list(s) for name, s in self.input_shapes.items()},
            "batch": self.batch,
            "dtype": self.dtype,
            "convention": self.convention,
            "flops_convention": self.count_convention,
            "layers": [r.to_dict() for r in rows(self, depth) if r.leaf],
            "totals": {
                "params": t.params, "trainable_params": t.count.trainable,
                "frozen_params": t.count.frozen, "buffers": t.count.buffers,
                "param_bytes": t.param_bytes, "buffer_bytes": t.buffer_bytes,
                "macs": t.macs, "flops": t.flops,
                "backward_flops": t.backward_flops[0] + t.backward_flops[1],
                "backward_flops_input": t.backward_flops[0],
                "backward_flops_weight": t.backward_flops[1],
                "training_flops": t.training_flops,
                "training_flops_per_step": self.batch * t.training_flops,
                "activation_bytes_per_sample": t.activation_bytes,
            },
            "output": _output_dict(self.output),
            "outputs": [{"name": o, **_output_dict(self.layer(o))} for o in self.outputs],
            "training_memory": {
                "batch": self.memory.batch, "dtype": self.memory.dtype,
                "optimizer": self.memory.optimizer, "params": self.memory.params,
                "gradients": self.memory.gradients,
                "optimizer_state": self.memory.optimizer_state,
                "buffers": self.memory.buffers, "activations": self.memory.activations,
                "saved_for_backward": self.memory.saved_for_backward,
                "total": self.memory.total, "peak_at": self.memory.peak_at,
            },
            "warnings": [w.message for w in self.warnings],
            "dead_layers": list(self.dead),
        }
        if self.sizes is not None:
            doc["sizes"] = self.sizes.to_dict()
            if self.memory.peak_candidates:
                doc["training_memory"]["peak_candidates"] = [
                    {"bytes_per_sample": e, "at": w} for e, w in self.memory.peak_candidates]
        return jsonable(doc)


@dataclass(frozen=True)
class Row:
    """A line of the summary: one layer, or one block instance with the subtotals of its
    layers. `leaf` rows partition the network (their sums are the totals)."""

    name: str
    depth: int  # block nesting: 0 = the network's own layers
    kind: str  # "layer" | "block"
    op: str  # the layer's label, or the block call "bottleneck(c=64, s=2, proj=false)"
    output_shape: Shape
    count: ParamCount
    macs: int
    flops: int
    receptive_field: ReceptiveField | None
    activation_bytes: int
    leaf: bool
    inputs: tuple[str, ...] = ()  # the tensors it reads (a block: from outside it)
    backward_flops: tuple = (0, 0)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "depth": self.depth, "op": self.op,
                "inputs": list(self.inputs),
                "output_shape": list(self.output_shape), "params": self.count.params,
                "trainable_params": self.count.trainable, "frozen_params": self.count.frozen,
                "buffers": self.count.buffers, "macs": self.macs, "flops": self.flops,
                "backward_flops_input": self.backward_flops[0],
                "backward_flops_weight": self.backward_flops[1],
                "receptive_field": field_dict(self.receptive_field),
                "activation_bytes": self.activation_bytes}


def rows(analysis: Analysis, depth: int | None = None) -> list[Row]:
    """The summary's lines in layer order: each block instance opens with a row of its
    subtotals, its layers follow one level deeper. With `depth`, nothing deeper than it is
    shown and block instances at that depth stand for all their layers."""
    members: dict[str, list[LayerRecord]] = {}
    for r in analysis.layers:
        for frame in r.path:
            members.setdefault(frame.instance, []).append(r)
    consumers: dict[str, set[str]] = {}
    for r in analysis.layers:
        for i in r.inputs:
            consumers.setdefault(i, set()).add(r.name)
    out: list[Row] = []
    opened: set[str] = set()
    for r in analysis.layers:
        for level, frame in enumerate(r.path):
            if frame.instance in opened:
                continue
            opened.add(frame.instance)
            if depth is None or level <= depth:
                out.append(_block_row(frame, level, members[frame.instance], consumers,
                                      analysis.outputs, leaf=level == depth))
        if depth is None or len(r.path) <= depth:
            out.append(Row(r.name, len(r.path), "layer", r.label, r.output_shape, r.count,
                           r.macs, r.flops, r.receptive_field, r.activation_bytes, leaf=True,
                           inputs=r.inputs, backward_flops=r.backward_flops))
    return out


def _block_row(frame: Frame, level: int, layers: list[LayerRecord],
               consumers: dict[str, set[str]], outputs: list[str], leaf: bool) -> Row:
    inside = {r.name for r in layers}
    exits = [r for r in layers if r.name in outputs or consumers.get(r.name, set()) - inside]
    last = (exits or layers)[-1]  # the block's output tensor
    count = ParamCount()
    for r in layers:
        count += r.count
    args = ", ".join(f"{k}={show_value(v)}" for k, v in frame.args)
    entering = tuple(dict.fromkeys(i for r in layers for i in r.inputs if i not in inside))
    return Row(frame.instance, level, "block", f"{frame.block}({args})", last.output_shape,
               count, sum(r.macs for r in layers), sum(r.flops for r in layers),
               last.receptive_field, sum(r.activation_bytes for r in layers), leaf,
               inputs=entering,
               backward_flops=(sum(r.backward_flops[0] for r in layers),
                               sum(r.backward_flops[1] for r in layers)))




def field_dict(rf: ReceptiveField | TimeField | None) -> dict | None:
    """A receptive field as JSON: numbers when both axes agree, else [h, w] pairs."""
    if rf is None:
        return None
    if isinstance(rf, TimeField):  # along time, in words: "step", "past" or "all"
        return {"steps": rf.reach}
    return {"size": _scalar(rf.size), "jump": _scalar(rf.jump), "start": _scalar(rf.start),
            "padding": _scalar(rf.padding)}


def _scalar(pair: tuple) -> object:
    a, b = (quantity(x) for x in pair)
    return a if a == b else [a, b]


def jsonable(obj: object) -> object:
    """Lists, dicts and numbers for json.dumps; symbolic quantities as strings."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    return quantity(obj)


def quantity(x: object) -> object:
    """A number for JSON: ints stay ints, whole floats become ints, and a symbolic quantity
    becomes a string in SymPy's syntax (`64*ceiling(H/2)*ceiling(W/2)`)."""
    if isinstance(x, (int, float)):
        return int(x) if float(x).is_integer() else x
    if getattr(x, "free_symbols", None):
        from netspec.analysis.symbolic import readable

        return str(readable(x))
    return quantity(int(x) if getattr(x, "is_Integer", False) else float(x))


def _output_dict(record: LayerRecord) -> dict:
    return {"shape": list(record.output_shape),
            "receptive_field": field_dict(record.receptive_field)}


def layer_records(net: Network, frozen: frozenset[str],
                  itemsize: int) -> tuple[list[LayerRecord], Totals]:
    """Gather the node annotations of every pass into per-layer records and totals."""
    layers = []
    total = ParamCount()
    for name, data in _in_order(net):
        op = REGISTRY[data["op"]]
        c = layer_count(data["params"], name, frozen)
        total += c
        layers.append(LayerRecord(
            name, data["op"], op.describe(data["attrs"]), data["path"], tuple(data["inputs"]),
            data["shape"], c, c.params * itemsize, data["macs"], data["flops"],
            data["receptive_field"], data["activation_bytes"],
            data["attrs"] if any(is_symbolic(v) for v in _flat(data["attrs"])) else None,
            data["backward_flops"]))
    activations = sum(r.activation_bytes for r in layers if not REGISTRY[r.op].output_is_view)
    totals = Totals(total, total.params * itemsize, total.buffers * itemsize,
                    sum(r.macs for r in layers), sum(r.flops for r in layers), activations,
                    (sum(r.backward_flops[0] for r in layers),
                     sum(r.backward_flops[1] for r in layers)))
    return layers, totals


def _flat(attrs: dict) -> list:
    return [x for v in attrs.values() for x in (v if isinstance(v, (tuple, list)) else (v,))]


def _in_order(net: Network):
    nodes = dict(net.graph.nodes(data=True))
    return ((name, nodes[name]) for name in net.live())
