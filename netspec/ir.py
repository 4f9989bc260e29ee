"""The IR: a networkx.DiGraph with one node per layer, plus the network's metadata.

Node keys (fixed; `verify` checks them):
  op      canonical op name, a key of netspec.ops.REGISTRY
  attrs   the op's resolved arguments, defaults filled (pairs as tuples)
  inputs  ordered list of input node ids (a node may appear twice: `x + x`)
  span    netspec.diagnostics.Span of the layer's call in the spec
  path    tuple of Frame, outermost block instance first ("where did this layer come from")
Analysis (netspec.analyze) adds: shape, params, macs, flops, receptive_field, activation_bytes.
Node ids are hierarchical names: "conv1", "layer2.0.downsample.0", "fc".
Edges u -> v exist for every input; the edge attribute `index` is u's first position in
v's inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from netspec.diagnostics import Diagnostic, Span

NODE_KEYS = frozenset({"op", "attrs", "inputs", "span", "path"})
ANALYSIS_KEYS = frozenset({"shape", "params", "macs", "flops", "backward_flops",
                           "receptive_field", "activation_bytes", "warnings"})


@dataclass(frozen=True)
class Frame:
    """One block instance on a layer's path: `layer3.1` is an instance of `basic`."""

    block: str
    instance: str
    args: tuple[tuple[str, Any], ...]
    span: Span  # the call site

    def describe(self) -> str:
        return f"in {self.instance} ({self.block}, {self.span.path}:{self.span.line})"


@dataclass
class Network:
    name: str
    graph: nx.DiGraph
    inputs: list[str]
    outputs: list[str]
    path: str = "<string>"
    params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    train_spans: dict[str, Span] = field(default_factory=dict)
    warnings: list[Diagnostic] = field(default_factory=list)
    _order: list[str] | None = field(default=None, repr=False)

    def order(self) -> list[str]:
        """Layers in a deterministic topological order (the spec's own order on ties)."""
        if self._order is None:
            seq = {n: i for i, n in enumerate(self.graph.nodes)}
            if all(seq[u] < seq[v] for u, v in self.graph.edges):
                self._order = list(self.graph.nodes)  # lowering adds nodes in this order
            else:
                self._order = list(nx.lexicographical_topological_sort(self.graph, key=seq.get))
        return self._order

    def live(self) -> list[str]:
        """The layers that compute something: the inputs and every layer an output depends
        on, in order. The others (a branch whose result is never used, which lowering warns
        about) are dropped by compile and not counted by the analyzer's totals."""
        alive = set(self.inputs) | set(self.outputs)
        for out in self.outputs:
            alive |= nx.ancestors(self.graph, out)
        return [name for name in self.order() if name in alive]

    def node(self, name: str) -> dict[str, Any]:
        return self.graph.nodes[name]

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def __repr__(self) -> str:
        # One line: the dataclass default would print every node's attributes.
        return (f"<Network {self.name!r}: {len(self)} layers, inputs {self.inputs}, "
                f"outputs {self.outputs}, from {self.path}>")

    def _repr_svg_(self) -> str:
        """The diagram (netspec.draw at its defaults, laid out by Graphviz's dot) as SVG text,
        which Jupyter shows inline. Too large a network is refused with draw's message."""
        from netspec import render

        graph = render.draw(self, max_nodes=render.MAX_LAYOUT_NODES)
        return graph.pipe(format="svg", quiet=True).decode("utf-8")


def verify(net: Network) -> None:
    """Check the IR's invariants between stages (tests and debug mode)."""
    from netspec.ops import REGISTRY

    g = net.graph
    assert nx.is_directed_acyclic_graph(g), "IR has a cycle"
    for name, data in g.nodes(data=True):
        missing = NODE_KEYS - data.keys()
        assert not missing, f"{name}: missing keys {sorted(missing)}"
        extra = data.keys() - NODE_KEYS - ANALYSIS_KEYS
        assert not extra, f"{name}: unknown keys {sorted(extra)}"
        op = REGISTRY[data["op"]]
        n_in = len(data["inputs"])
        assert n_in >= op.min_inputs and (op.max_inputs is None or n_in <= op.max_inputs), \
            f"{name}: {data['op']} with {n_in} inputs"
        assert set(data["inputs"]) == set(g.predecessors(name)), f"{name}: edges != inputs"
        for arg in op.args:
            assert arg.name in data["attrs"], f"{name}: attr {arg.name} unresolved"
    for name in net.inputs:
        assert g.nodes[name]["op"] == "input"
    for name in net.outputs:
        assert name in g
