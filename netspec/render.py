"""Render stage: IR -> graphviz.Digraph (architecture diagrams).

The drawing is planned first (`plan`: which node, cluster and edge stands for which layers)
and written as DOT second (`draw`), so tests can check the plan against the IR and the SVG
against the plan. Vocabulary:

  level     a block instance's nesting: a frame at path[0] is level 1, path[1] level 2, ...
  depth N   instances at levels <= N are drawn open, as clusters; an instance at level N + 1
            is drawn closed, as one node (its params and output shape); None draws all open
  run       consecutive sibling instances of one block with identical arguments, structure
            and input shape, each feeding only the next (`layer3.1` ... `layer3.35`). With
            `collapse_repeats`, a closed run is one node marked `x35` and an open run is one
            cluster, the first instance drawn for all of them, marked `x35`.
  shortcut  the branch into an elementwise merge (inputs and output of one shape) that
            bypasses the other branch's layers: a residual connection. Drawn dashed.
"""
from __future__ import annotations

import html
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import graphviz
import networkx as nx

from netspec.diagnostics import Diagnostic, NetspecError, show_value
from netspec.ir import Frame, Network
from netspec.ops import REGISTRY

# depth="auto" draws the deepest level that keeps the diagram at most MAX_HEIGHT nodes
# tall (its longest chain) and MAX_NODES nodes in all: GoogLeNet opens its Inception
# modules (44 tall), ResNet-18 its blocks (56), while ResNet-50/152 stay one node per run of
# bottlenecks (15 tall; open they would be 87). See docs/diagrams.md.
MAX_HEIGHT = 60
MAX_NODES = 150
ANNOTATIONS = ("params", "macs", "rf")
# Graphviz's dot takes seconds for a thousand nodes and minutes (or hours, with wide
# fan-out) for tens of thousands: `netspec draw` refuses to lay out more (draw(max_nodes=)).
MAX_LAYOUT_NODES = 1_000

# Fill colours by op family (ColorBrewer "Paired", light half), legend order.
FAMILY_COLORS = {
    "input": "#e0e0e0",
    "conv": "#a6cee3",
    "linear": "#b2df8a",
    "pool": "#fdbf6f",
    "resample": "#fdbf6f",
    "norm": "#cab2d6",
    "activation": "#ffff99",
    "merge": "#fb9a99",
    "regularization": "#f2f2f2",
    "reshape": "#f2f2f2",
}
BLOCK_COLOR = "#d9e4ef"
SHORTCUT_COLOR = "#d62728"
CLUSTER_FILLS = ("#f6f8fb", "#eef2f7", "#e6ecf3")  # by level, lighter outside
FONT = "Helvetica"
LEGEND_COLUMNS = 6


# ---- the plan --------------------------------------------------------------------------

@dataclass
class Run:
    """Sibling block instances drawn as one: a single instance, or `x k` identical ones."""

    instances: list[Frame]
    level: int  # 1 = top-level block instance

    @property
    def head(self) -> Frame:
        return self.instances[0]

    @property
    def count(self) -> int:
        return len(self.instances)


@dataclass
class Node:
    """One drawn node: a layer, or a closed run of block instances."""

    id: str  # DOT node id (a layer's name, or the run's first instance's name)
    layers: list[str]  # the IR layers it stands for
    run: Run | None = None  # set for a closed block (run)
    cluster: tuple[str, ...] = ()  # enclosing cluster ids, outermost first
    is_input: bool = False
    is_output: bool = False


@dataclass
class Cluster:
    id: str  # the head instance's name
    run: Run
    parent: str | None


@dataclass
class Edge:
    tail: str
    head: str
    shape: tuple[int, ...] | None  # the tensor flowing: the IR source layer's output
    shortcut: bool


@dataclass
class Plan:
    nodes: dict[str, Node] = field(default_factory=dict)  # by id, in drawing order
    clusters: dict[str, Cluster] = field(default_factory=dict)  # by id, outermost first
    edges: list[Edge] = field(default_factory=list)
    node_of: dict[str, str] = field(default_factory=dict)  # IR layer -> drawn node id
    depth: int | None = None  # the depth drawn

    def graph(self) -> nx.DiGraph:
        drawn = nx.DiGraph()
        drawn.add_nodes_from(self.nodes)
        drawn.add_edges_from((e.tail, e.head) for e in self.edges)
        return drawn

    def height(self) -> int:
        """Nodes on the longest chain: the diagram's length along rankdir."""
        return nx.dag_longest_path_length(self.graph()) + 1 if self.nodes else 0


@dataclass
class _Structure:
    """What every plan of one network shares, whatever the depth: its block instances,
    their runs and the residual shortcuts. Computed once per drawing, not once per depth
    tried."""

    frames: dict[str, Frame]
    runs: list[Run]
    run_of: dict[str, tuple[Run, int]]
    shortcuts: set[tuple[str, str]]


def _structure(net: Network, collapse_repeats: bool) -> _Structure:
    frames = _instances(net)
    runs = _runs(net, frames, collapse_repeats)
    run_of = {f.instance: (run, k) for run in runs for k, f in enumerate(run.instances)}
    return _Structure(frames, runs, run_of, shortcut_edges(net))


def auto_depth(net: Network, collapse_repeats: bool = True,
               _shared: _Structure | None = None) -> int | None:
    """The deepest depth whose plan fits MAX_HEIGHT x MAX_NODES (0 if none does); None when
    every block fits open or there are no blocks."""
    levels = max((len(data["path"]) for _, data in net.graph.nodes(data=True)), default=0)
    shared = _shared or _structure(net, collapse_repeats)

    def fits(depth: int) -> bool:
        layout = _plan(net, depth, shared)
        return len(layout.nodes) <= MAX_NODES and layout.height() <= MAX_HEIGHT

    # Opening a level never shrinks a plan, so the depths that fit are 0..best: a binary
    # search plans log2(levels) depths instead of every one.
    if not fits(0):
        return 0 if levels else None
    lo, hi = 0, levels  # fits(lo); the answer is in lo..hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return None if lo == levels else lo


def plan(net: Network, depth: int | None | str = "auto", collapse_repeats: bool = True) -> Plan:
    """Decide which nodes, clusters and edges stand for which layers of `net`."""
    shared = _structure(net, collapse_repeats)
    if depth == "auto":
        depth = auto_depth(net, collapse_repeats, shared)
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)
                              or depth < 0):
        raise ValueError(f'depth must be a non-negative integer, None or "auto", '
                         f"not {depth!r}")
    return _plan(net, depth, shared)


def _plan(net: Network, depth: int | None, shared: _Structure) -> Plan:
    g = net.graph
    run_of = shared.run_of
    inputs, outputs = set(net.inputs), set(net.outputs)
    out = Plan(depth=depth)
    known: dict[str, tuple] = {}  # instance -> where its layers go (see _place)
    for name in net.order():
        path = g.nodes[name]["path"]
        cluster, closed, real, moved, moves = _place(path, depth, run_of, out, known)
        node_id = closed.head.instance if closed is not None else _rename(name, real, moved, moves)
        if node_id not in out.nodes:
            out.nodes[node_id] = Node(node_id, [], closed, cluster)
        node = out.nodes[node_id]
        node.layers.append(name)
        node.is_input |= name in inputs
        node.is_output |= name in outputs
        out.node_of[name] = node_id

    merged: dict[tuple[str, str], Edge] = {}
    for u, v in _edges_in_order(net):
        if _crosses_run(g.nodes[u]["path"], g.nodes[v]["path"], run_of):
            continue  # instance k feeds instance k+1 of a folded run: drawn as one cluster
        tail, head = out.node_of[u], out.node_of[v]
        if tail == head:
            continue  # inside a closed block
        shape = g.nodes[u].get("shape")
        is_shortcut = (u, v) in shared.shortcuts
        edge = merged.get((tail, head))
        if edge is None:
            merged[(tail, head)] = Edge(tail, head, shape, is_shortcut)
            out.edges.append(merged[(tail, head)])
        else:
            edge.shortcut &= is_shortcut
    return out


def _place(path: tuple[Frame, ...], depth: int | None, run_of: dict[str, tuple[Run, int]],
           out: Plan, known: dict[str, tuple]) -> tuple:
    """Where the layers with block path `path` are drawn: (enclosing cluster ids, the closed
    run they disappear into or None, and how their names move). Adds the clusters opened.

    Names move into the first instance of each folded run on the way down:
    layer3.7.conv1 -> layer3.1.conv1. `real`/`moved` are the innermost open instance's name
    before and after. `known` holds the answer for each instance already placed, so each
    instance is placed once per plan, from its parent's answer."""
    start = len(path)
    while start > 0 and path[start - 1].instance not in known:
        start -= 1
    state = known[path[start - 1].instance] if start else ((), None, "", "", [])
    for level in range(start + 1, len(path) + 1):
        frame = path[level - 1]
        cluster, closed, real, moved, moves = state
        if closed is None:
            here = _rename(frame.instance, real, moved, moves)
            run, k = run_of[here]
            if depth is not None and level > depth:
                closed = run
            else:
                if k > 0:
                    moves = moves + [(here, run.head.instance)]
                    here = run.head.instance
                real, moved = frame.instance, here
                if run.head.instance not in out.clusters:
                    out.clusters[run.head.instance] = Cluster(
                        run.head.instance, run, cluster[-1] if cluster else None)
                cluster = cluster + (run.head.instance,)
        state = known[frame.instance] = (cluster, closed, real, moved, moves)
    return state


def _rename(name: str, real: str, moved: str, moves: list[tuple[str, str]]) -> str:
    """`name` moved as its enclosing instance `real` was (to `moved`): one slice when the
    name extends the instance's, as lowering names them; the full list of moves otherwise."""
    if not real or name.startswith(real + "."):
        return moved + name[len(real):]
    return _moved(name, moves)


def _moved(name: str, moves: list[tuple[str, str]]) -> str:
    """`name` after each (instance, first instance) renaming in turn: layer3.7.conv1 ->
    layer3.1.conv1."""
    for old, new in moves:
        if name == old or name.startswith(old + "."):
            name = new + name[len(old):]
    return name


def _instances(net: Network) -> dict[str, Frame]:
    """Every block instance, in order of first appearance."""
    frames: dict[str, Frame] = {}
    for name in net.order():
        for frame in net.graph.nodes[name]["path"]:
            frames.setdefault(frame.instance, frame)
    return frames


def _edges_in_order(net: Network) -> Iterable[tuple[str, str]]:
    for v in net.order():
        seen = set()
        for u in net.graph.nodes[v]["inputs"]:
            if u not in seen:
                seen.add(u)
                yield u, v


def _crosses_run(path_u: tuple[Frame, ...], path_v: tuple[Frame, ...],
                 run_of: dict[str, tuple[Run, int]]) -> bool:
    """True when u and v lie in different instances of one folded run."""
    for fu, fv in zip(path_u, path_v):
        if fu.instance == fv.instance:
            continue
        ru, rv = run_of[fu.instance], run_of[fv.instance]
        return ru[0] is rv[0] and ru[0].count > 1
    return False


# ---- runs of identical instances ---------------------------------------------------------

def _runs(net: Network, frames: dict[str, Frame], collapse: bool) -> list[Run]:
    """Group sibling instances into runs (each instance alone when not `collapse`)."""
    g = net.graph
    members: dict[str, list[str]] = defaultdict(list)  # instance -> its layers (any level)
    parent: dict[str, str | None] = {}
    level: dict[str, int] = {}
    for name in net.order():
        path = g.nodes[name]["path"]
        for k, frame in enumerate(path):
            members[frame.instance].append(name)
            parent.setdefault(frame.instance, path[k - 1].instance if k else None)
            level.setdefault(frame.instance, k + 1)

    signatures = _signatures(net, frames, parent, level) if collapse else {}
    runs: list[Run] = []
    last: dict[str | None, Run] = {}  # parent instance -> the run of its latest child
    for inst, frame in frames.items():
        current = last.get(parent[inst])
        if collapse:
            prev = current.instances[-1].instance if current else None
            if (prev is not None and signatures[inst] is not None
                    and signatures[inst] == signatures[prev]
                    and _chained(net, members[prev], members[inst])):
                current.instances.append(frame)
                continue
        last[parent[inst]] = Run([frame], level[inst])
        runs.append(last[parent[inst]])
    return runs


def _signatures(net: Network, frames: dict[str, Frame], parent: dict[str, str | None],
                level: dict[str, int]) -> dict[str, int | None]:
    """What must agree for two instances to be drawn as one, as a number per instance
    (equal numbers, equal structure): block, arguments, each layer's op, attributes and
    wiring (names relative to the instance), nested instances, and the shapes entering the
    instance. None if names do not follow the instance prefix.

    Built bottom-up, an instance's from its own layers and its children's numbers, so the
    work is linear in the layers however deep the nesting (a copy of every nested layer per
    enclosing instance took minutes and gigabytes for 2**15 layers 15 blocks deep)."""
    g = net.graph
    own: dict[str, list[str]] = defaultdict(list)  # instance -> layers directly inside it
    children: dict[str, list[str]] = defaultdict(list)
    for name in net.order():
        path = g.nodes[name]["path"]
        if path:
            own[path[-1].instance].append(name)
    for inst in frames:
        if parent[inst] is not None:
            children[parent[inst]].append(inst)

    def inside(layer: str, inst: str) -> bool:
        path = g.nodes[layer]["path"]
        return len(path) >= level[inst] and path[level[inst] - 1].instance == inst

    numbers: dict[Any, int] = {}  # structure -> its number (interned)
    signature: dict[str, int | None] = {}
    entries: dict[str, list[str]] = {}  # instance -> layers outside it that feed it
    for inst in reversed(frames):  # an instance's children come after it in `frames`
        frame, prefix = frames[inst], inst + "."
        rows: list[Any] = []
        feeds: list[str] = []
        ok = True
        for name in own[inst]:
            data = g.nodes[name]
            if not name.startswith(prefix):
                ok = False
                break
            wiring = []
            for i in data["inputs"]:
                if inside(i, inst):
                    wiring.append(i[len(prefix):] if i.startswith(prefix) else None)
                else:
                    wiring.append(("<in>", _frozen(g.nodes[i].get("shape"))))
                    feeds.append(i)
            rows.append((name[len(prefix):], data["op"], repr(sorted(data["attrs"].items())),
                         tuple(wiring)))
        for child in children[inst]:
            if not ok or signature[child] is None or not child.startswith(prefix):
                ok = False
                break
            wiring = []
            for i in entries[child]:
                if inside(i, inst):
                    wiring.append(i[len(prefix):] if i.startswith(prefix) else None)
                else:
                    wiring.append(("<in>", _frozen(g.nodes[i].get("shape"))))
                    feeds.append(i)
            rows.append((child[len(prefix):], signature[child], tuple(wiring)))
        entries[inst] = list(dict.fromkeys(feeds))
        if not ok:
            signature[inst] = None
            continue
        key = (frame.block, _frozen(frame.args), tuple(rows))
        signature[inst] = numbers.setdefault(key, len(numbers))
    return signature


def _frozen(value: Any) -> Any:
    """`value` with lists as tuples, so it can key a dict (block arguments may be lists)."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _chained(net: Network, first: list[str], second: list[str]) -> bool:
    """`first`'s only exit is into `second`, `second`'s only entry is from `first`, and no
    layer of `first` is a network output."""
    g = net.graph
    a, b = set(first), set(second)
    if a & set(net.outputs):
        return False
    exits = {(u, v) for u in a for v in g.successors(u) if v not in a}
    entries = {(u, v) for v in b for u in g.predecessors(v) if u not in b}
    return bool(entries) and all(v in b for _, v in exits) and all(u in a for u, _ in entries)


# ---- residual shortcuts ------------------------------------------------------------------

def shortcut_edges(net: Network) -> set[tuple[str, str]]:
    """Edges of residual shortcuts: into an elementwise merge (every input of the merge's
    output shape), the branch that leaves the fork and rejoins without passing through the
    other branch's layers, when it has fewer layers than that branch. An identity shortcut
    is one edge (x -> add); a projection shortcut is its chain (x -> conv -> bn -> add).

    Each search is bounded by topological position (nothing after the merge can lie between
    fork and merge) and done once per (merge, fork), so a merge of 5,000 branches or a
    32,000-layer chain stays near-linear."""
    g = net.graph
    position = {n: k for k, n in enumerate(net.order())}
    out: set[tuple[str, str]] = set()
    for v in g.nodes:
        data = g.nodes[v]
        inputs = list(dict.fromkeys(data["inputs"]))
        if (REGISTRY[data["op"]].family != "merge" or len(inputs) < 2
                or data.get("shape") is None
                or any(g.nodes[i].get("shape") != data["shape"] for i in inputs)):
            continue
        input_set = set(inputs)
        per_fork: dict[str, list[tuple[int, str]]] = {}  # fork -> reachable inputs, longest first
        for u in inputs:
            chain = _branch(g, u, v)  # [fork, ..., u]
            fork = chain[0]
            if fork not in per_fork:
                lengths = _longest_paths(g, fork, position[v], position)
                per_fork[fork] = sorted(((lengths[w], w) for w in inputs if w in lengths),
                                        reverse=True)
            rivals = [(n, w) for n, w in per_fork[fork][:2] if w != u]
            if not rivals or any(w in input_set and w != u for w in chain):
                continue
            if len(chain) - 1 < rivals[0][0]:
                out.update(zip(chain, chain[1:] + [v]))
    return out


def _branch(g: nx.DiGraph, u: str, merge: str) -> list[str]:
    """Walk back from u while each layer has one input and feeds only the next: the chain
    [fork, ..., u] of the branch ending in u."""
    chain = [u]
    nxt = merge
    while True:
        node = chain[-1]
        preds = list(g.predecessors(node))
        if len(preds) != 1 or g.out_degree(node) != 1 or next(iter(g.successors(node))) != nxt:
            return chain[::-1]
        nxt = node
        chain.append(preds[0])


def _longest_paths(g: nx.DiGraph, source: str, limit: int,
                   position: dict[str, int]) -> dict[str, int]:
    """Layers on the longest path from source to each layer it reaches before topological
    position `limit` (source itself: 0). Only those layers can lie between a fork and its
    merge, so the search stops there."""
    reach, stack = {source}, [source]
    while stack:
        for s in g.successors(stack.pop()):
            if s not in reach and position[s] < limit:
                reach.add(s)
                stack.append(s)
    length = {source: 0}
    for n in sorted(reach, key=position.__getitem__):
        if n != source:
            length[n] = 1 + max(length[p] for p in g.predecessors(n) if p in length)
    return length


# ---- the drawing -------------------------------------------------------------------------

def draw(net: Network, depth: int | None | str = "auto", rankdir: str = "TB",
         shapes: bool = True, annotate: Iterable[str] = (),
         collapse_repeats: bool = True, max_nodes: int | None = None) -> graphviz.Digraph:
    """The architecture diagram of `net` as a graphviz.Digraph (shown inline in Jupyter;
    `.pipe(format="svg")`, `.source` for DOT).

    depth             block nesting drawn open (clusters); deeper instances are one node
                      each. 0 closes every block, None opens every block, "auto" (the
                      default) the deepest that keeps the diagram 60 nodes tall
    rankdir           "TB" (top to bottom) or "LR" (left to right)
    shapes            label edges with the tensor shape they carry (per sample)
    annotate          any of "params", "macs", "rf": extra lines in node labels
    collapse_repeats  draw a run of identical chained block instances once, marked `xN`
    max_nodes         refuse (NetspecError) a diagram of more nodes, before writing it;
                      `netspec draw` passes MAX_LAYOUT_NODES unless it writes DOT only
    """
    annotate = tuple(annotate)
    bad = [a for a in annotate if a not in ANNOTATIONS]
    if bad:
        raise NetspecError(Diagnostic("error", f"unknown annotation `{bad[0]}`", None,
                                      f"choose from {', '.join(ANNOTATIONS)}"))
    if rankdir not in ("TB", "LR"):
        raise NetspecError(Diagnostic("error", f"rankdir must be TB or LR, not `{rankdir}`"))
    _ensure_analyzed(net)
    layout = plan(net, depth, collapse_repeats)
    if max_nodes is not None and len(layout.nodes) > max_nodes:
        raise NetspecError(Diagnostic(
            "error", f"the diagram of `{net.name}` would have {len(layout.nodes):,} nodes, "
            f"more than Graphviz lays out in reasonable time (the limit is {max_nodes:,})",
            None, "draw fewer: --depth 0 closes every block; or write the DOT text alone "
            "with --format dot"))
    return _to_dot(net, layout, rankdir, shapes, annotate)


def _ensure_analyzed(net: Network) -> None:
    # Labels read the analyzer's shape, params and macs of every node.
    if any(not {"shape", "params", "macs"} <= data.keys()
           for _, data in net.graph.nodes(data=True)):
        from netspec.analysis import analyze
        analyze(net)


def _to_dot(net: Network, layout: Plan, rankdir: str, shapes: bool,
            annotate: tuple[str, ...]) -> graphviz.Digraph:
    dot = graphviz.Digraph(
        graph_attr={"rankdir": rankdir, "fontname": FONT, "nodesep": "0.25",
                    "ranksep": "0.3", "labelloc": "t", "newrank": "true"},
        node_attr={"fontname": FONT, "fontsize": "11", "shape": "box",
                   "style": "rounded,filled", "color": "#555555", "penwidth": "0.8",
                   "margin": "0.12,0.04", "height": "0.3"},
        edge_attr={"fontname": FONT, "fontsize": "9", "fontcolor": "#666666",
                   "color": "#666666", "arrowsize": "0.6"})
    body = dot.body
    body.append(f'\tlabel=<<TABLE BORDER="0" CELLSPACING="0"><TR><TD>{_bold(net.name, 16)}'
                f"</TD></TR><TR><TD>{_legend(layout, net)}</TD></TR></TABLE>>\n")

    children: dict[str | None, list[str]] = defaultdict(list)
    for cid, cluster in layout.clusters.items():
        children[cluster.parent].append(cid)
    nodes_in: dict[str | None, list[Node]] = defaultdict(list)
    for node in layout.nodes.values():
        nodes_in[node.cluster[-1] if node.cluster else None].append(node)

    rank_groups = _branch_heads(layout)

    def emit(cluster_id: str | None, indent: str) -> None:
        for cid in children[cluster_id]:
            cluster = layout.clusters[cid]
            body.append(f"{indent}subgraph {quote_id('cluster_' + cid)} {{\n")
            fill = CLUSTER_FILLS[min(cluster.run.level, len(CLUSTER_FILLS)) - 1]
            style = "rounded,filled,bold" if cluster.run.count > 1 else "rounded,filled"
            label = _html_label(_cluster_lines(cluster.run, cluster.parent))
            body.append(f'{indent}\tgraph [label={label} labeljust=l style="{style}" '
                        f'fillcolor="{fill}" color="#8da0b6" fontsize=11 margin=10]\n')
            emit(cid, indent + "\t")
            body.append(f"{indent}}}\n")
        for node in nodes_in[cluster_id]:
            body.append(f"{indent}{quote_id(node.id)} "
                        f"[{_node_attrs(net, node, annotate)}]\n")
        for group in rank_groups.get(cluster_id, []):
            body.append(f"{indent}{{rank=same; {'; '.join(quote_id(n) for n in group)}}}\n")

    emit(None, "\t")
    for edge in layout.edges:
        attrs = []
        if shapes and edge.shape is not None:
            attrs.append(f'label="{_fmt_shape(edge.shape)}"')
        if edge.shortcut:
            attrs.append(f'style=dashed color="{SHORTCUT_COLOR}" penwidth=1.2 weight=0')
        else:
            attrs.append("weight=2")
        body.append(f"\t{quote_id(edge.tail)} -> {quote_id(edge.head)} [{' '.join(attrs)}]\n")
    return dot


def _branch_heads(layout: Plan) -> dict[str | None, list[list[str]]]:
    """Parallel branches side by side: the first nodes of the branches leaving a fork (its
    successors that no other successor leads to), when they share a cluster, on one rank.
    One search per fork from all its successors at once, bounded by topological position."""
    drawn = layout.graph()
    position = {n: k for k, n in enumerate(nx.topological_sort(drawn))}
    groups: dict[str | None, list[list[str]]] = defaultdict(list)
    for fork in layout.nodes:
        succ = list(drawn.successors(fork))
        if len(succ) < 2:
            continue
        last = max(position[s] for s in succ)
        reached: set[str] = set()  # strictly below some successor
        stack = list(succ)
        while stack:
            for t in drawn.successors(stack.pop()):
                if t not in reached and position[t] <= last:
                    reached.add(t)
                    stack.append(t)
        heads = [s for s in succ if s not in reached]
        clusters = {layout.nodes[h].cluster for h in heads}
        if len(heads) > 1 and len(clusters) == 1:
            cluster = clusters.pop()
            groups[cluster[-1] if cluster else None].append(heads)
    return groups


def _node_attrs(net: Network, node: Node, annotate: tuple[str, ...]) -> str:
    g = net.graph
    if node.run is not None:
        lines = _block_lines(net, node.run, node.layers, annotate, node.cluster)
        attrs = f'shape=box3d style=filled fillcolor="{BLOCK_COLOR}" margin="0.16,0.1"'
    else:
        name = node.layers[0]
        data = g.nodes[name]
        op = REGISTRY[data["op"]]
        shown = _strip(node.id, node.cluster[-1] if node.cluster else None)
        label = op.describe(data["attrs"])
        if node.is_input:
            label = f"input {_fmt_shape(data['shape'])}" if data.get("shape") else "input"
        lines = [_bold(shown)] if shown not in (label, op.name) else []
        lines.append(html.escape(_clean(label)))
        if not node.is_input:
            lines += _annotation_lines(net, [name], annotate)
        attrs = f'fillcolor="{FAMILY_COLORS.get(op.family, "#ffffff")}"'
        if node.is_input:
            attrs += " shape=oval style=filled"
    if node.is_output:
        attrs += " peripheries=2"
    return f"label={_html_label(lines)} {attrs}"


def _strip(name: str, within: str | None) -> str:
    """A name inside its enclosing cluster's instance: `conv1` in `layer3.1`."""
    if within is not None and name.startswith(within + "."):
        return name[len(within) + 1:]
    return name


def _cluster_lines(run: Run, within: str | None) -> list[str]:
    return [_bold(_run_name(run, within)) + html.escape(": " + _clean(_call(run.head)))
            + (f" <B>×{run.count}</B>" if run.count > 1 else "")]


def _block_lines(net: Network, run: Run, layers: list[str], annotate: tuple[str, ...],
                 cluster: tuple[str, ...]) -> list[str]:
    g = net.graph
    name = _run_name(run, cluster[-1] if cluster else None)
    lines = [_bold(f"{name} ×{run.count}" if run.count > 1 else name),
             html.escape(_clean(_call(run.head)))]
    lines.append(f"{_si(_params(net, layers))} params")
    out = _outputs(net, layers)
    shapes = [g.nodes[o].get("shape") for o in out]
    if shapes and all(s is not None for s in shapes):
        lines.append("→ " + ", ".join(_fmt_shape(s) for s in shapes))
    lines += _annotation_lines(net, layers, tuple(a for a in annotate if a != "params"))
    return lines


def _outputs(net: Network, layers: list[str]) -> list[str]:
    inside = set(layers)
    return [n for n in layers if n in net.outputs
            or any(s not in inside for s in net.graph.successors(n))]


def _run_name(run: Run, within: str | None = None) -> str:
    """`layer3.1`, or `layer3.1–35` for a run (numbered siblings), else `a … b`; relative
    to the enclosing cluster's instance `within`."""
    first, last = (_strip(f.instance, within) for f in (run.head, run.instances[-1]))
    if run.count == 1:
        return first
    a, b = re.match(r"(.*?)(\d+)$", first), re.match(r"(.*?)(\d+)$", last)
    if a and b and a.group(1) == b.group(1):
        return f"{first}–{b.group(2)}"
    return f"{first} … {last}"


def _call(frame: Frame) -> str:
    args = ", ".join(f"{k}={show_value(v)}" for k, v in frame.args)
    return f"{frame.block}({args})"




# ---- annotations -------------------------------------------------------------------------

def _annotation_lines(net: Network, layers: list[str], annotate: tuple[str, ...]) -> list[str]:
    lines = []
    for key in annotate:
        if key == "params":  # a zero count is left out: relu, bn's MACs, pools
            value = _params(net, layers)
            text = f"{_si(value)} params" if value else None
        elif key == "macs":
            value = _macs(net, layers)
            text = f"{_si(value)} MACs" if value else None
        else:
            text = _receptive_field(net, _outputs(net, layers) or layers[-1:])
        if text:
            lines.append(f'<FONT POINT-SIZE="9" COLOR="#444444">{html.escape(text)}</FONT>')
    return lines


def _params(net: Network, layers: list[str]) -> int:
    """Trainable parameters of these layers (the analyzer's ParamSpecs)."""
    return sum(math.prod(p.shape) for name in layers
               for p in net.graph.nodes[name]["params"] if p.kind == "param")


def _macs(net: Network, layers: list[str]) -> int:
    return sum(int(net.graph.nodes[name]["macs"]) for name in layers)


def _receptive_field(net: Network, layers: list[str]) -> str | None:
    fields = [net.graph.nodes[n].get("receptive_field") for n in layers]
    if any(f is None for f in fields):
        return None
    return "rf " + ", ".join(_fmt_rf(f) for f in fields)


def _fmt_rf(rf: Any) -> str:
    size = getattr(rf, "size", rf)
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"
    return str(size)


# ---- legend ------------------------------------------------------------------------------

def _legend(layout: Plan, net: Network) -> str:
    """The key under the title: the families drawn, closed blocks, shortcuts, outputs."""
    families = {REGISTRY[net.graph.nodes[node.layers[0]]["op"]].family
                for node in layout.nodes.values() if node.run is None}
    cells = [f'<TD BGCOLOR="{color}" BORDER="1" STYLE="rounded">{family}</TD>'
             for family, color in FAMILY_COLORS.items() if family in families]
    if any(node.run is not None for node in layout.nodes.values()):
        cells.append(f'<TD BGCOLOR="{BLOCK_COLOR}" BORDER="1">block</TD>')
    if any(edge.shortcut for edge in layout.edges):
        cells.append(f'<TD><FONT COLOR="{SHORTCUT_COLOR}">- - - shortcut</FONT></TD>')
    cells.append('<TD><TABLE BORDER="1" CELLBORDER="1" CELLSPACING="1" CELLPADDING="2" '
                 'STYLE="rounded"><TR><TD STYLE="rounded">output</TD></TR></TABLE></TD>')
    rows = [cells[k:k + LEGEND_COLUMNS] for k in range(0, len(cells), LEGEND_COLUMNS)]
    table = '<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="4" CELLPADDING="2">'
    # one table per row, so columns do not align to the widest entry
    return ('<FONT POINT-SIZE="10"><TABLE BORDER="0" CELLSPACING="0" CELLPADDING="0">'
            + "".join(f"<TR><TD>{table}<TR>{''.join(row)}</TR></TABLE></TD></TR>"
                      for row in rows) + "</TABLE></FONT>")


# ---- DOT text ----------------------------------------------------------------------------

def quote_id(name: str) -> str:
    """A DOT identifier for any string: double-quoted, backslashes doubled and quotes escaped
    (DOT keeps every `\\x` pair verbatim but `\\"`), control characters as `\\xNN`. The id dot
    stores (and writes as the SVG <title>) is this text without the outer quotes; distinct
    names give distinct ids."""
    text = name.replace("\\", "\\\\").replace('"', '\\"')
    text = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)
    return f'"{text}"'


def _html_label(lines: list[str]) -> str:
    return "<" + "<BR/>".join(lines) + ">"


def _bold(text: str, size: int | None = None) -> str:
    inner = f"<B>{html.escape(_clean(text))}</B>"
    return f'<FONT POINT-SIZE="{size}">{inner}</FONT>' if size else inner


def _clean(text: str) -> str:
    """Control characters cannot appear in Graphviz's (XML) HTML labels."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape)


def _si(n: int) -> str:
    """3 significant digits with a K/M/G/T suffix: 25.6M."""
    if abs(n) < 1000:
        return str(n)
    for suffix, scale in (("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        if abs(n) < scale * 1000 or suffix == "T":
            value = n / scale
            return f"{value:.3g}{suffix}" if value < 100 else f"{value:.0f}{suffix}"
    raise AssertionError
