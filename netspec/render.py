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

# Fill colours by op family (ColorBrewer "Paired", light half), legend order.
FAMILY_COLORS = {
    "input": "#e0e0e0",
    "conv": "#a6cee3",
    "linear": "#b2df8a",
    "pool": "#fdbf6f",
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


def auto_depth(net: Network, collapse_repeats: bool = True) -> int | None:
    """The deepest depth whose plan fits MAX_HEIGHT x MAX_NODES (0 if none does); None when
    every block fits open or there are no blocks."""
    levels = max((len(data["path"]) for _, data in net.graph.nodes(data=True)), default=0)
    for depth in range(levels, -1, -1):
        layout = plan(net, depth, collapse_repeats)
        if len(layout.nodes) <= MAX_NODES and layout.height() <= MAX_HEIGHT:
            return None if depth == levels else depth
    return 0 if levels else None


def plan(net: Network, depth: int | None | str = "auto", collapse_repeats: bool = True) -> Plan:
    """Decide which nodes, clusters and edges stand for which layers of `net`."""
    if depth == "auto":
        depth = auto_depth(net, collapse_repeats)
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)
                              or depth < 0):
        raise ValueError(f'depth must be a non-negative integer, None or "auto", '
                         f"not {depth!r}")
    g = net.graph
    order = net.order()
    frames = _instances(net)
    runs = _runs(net, frames, collapse_repeats)
    run_of = {f.instance: (run, k) for run in runs for k, f in enumerate(run.instances)}

    out = Plan(depth=depth)
    for name in order:
        path = g.nodes[name]["path"]
        moves: list[tuple[str, str]] = []  # a folded run's later instance -> its first
        cluster: list[str] = []
        closed = None
        for level, frame in enumerate(path, start=1):
            run, k = run_of[_moved(frame.instance, moves)]
            if depth is not None and level > depth:
                closed = run
                break
            if k > 0:
                moves.append((run.instances[k].instance, run.head.instance))
            if run.head.instance not in out.clusters:
                out.clusters[run.head.instance] = Cluster(run.head.instance, run,
                                                          cluster[-1] if cluster else None)
            cluster.append(run.head.instance)
        node_id = closed.head.instance if closed is not None else _moved(name, moves)
        if node_id not in out.nodes:
            out.nodes[node_id] = Node(node_id, [], closed, tuple(cluster))
        node = out.nodes[node_id]
        node.layers.append(name)
        node.is_input |= name in net.inputs
        node.is_output |= name in net.outputs
        out.node_of[name] = node_id

    shortcuts = shortcut_edges(net)
    merged: dict[tuple[str, str], Edge] = {}
    for u, v in _edges_in_order(net):
        if _crosses_run(g.nodes[u]["path"], g.nodes[v]["path"], run_of):
            continue  # instance k feeds instance k+1 of a folded run: drawn as one cluster
        tail, head = out.node_of[u], out.node_of[v]
        if tail == head:
            continue  # inside a closed block
        shape = g.nodes[u].get("shape")
        is_shortcut = (u, v) in shortcuts
        edge = merged.get((tail, head))
        if edge is None:
            merged[(tail, head)] = Edge(tail, head, shape, is_shortcut)
            out.edges.append(merged[(tail, head)])
        else:
            edge.shortcut &= is_shortcut
    return out


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

    runs: list[Run] = []
    last: dict[str | None, Run] = {}  # parent instance -> the run of its latest child
    signatures: dict[str, Any] = {}
    for inst, frame in frames.items():
        current = last.get(parent[inst])
        if collapse:
            signatures[inst] = _signature(net, frame, members[inst])
            prev = current.instances[-1].instance if current else None
            if (prev is not None and signatures[inst] is not None
                    and signatures[inst] == signatures[prev]
                    and _chained(net, members[prev], members[inst])):
                current.instances.append(frame)
                continue
        last[parent[inst]] = Run([frame], level[inst])
        runs.append(last[parent[inst]])
    return runs


def _signature(net: Network, frame: Frame, layers: list[str]) -> Any:
    """What must agree for two instances to be drawn as one: block, arguments, each layer's
    op, attributes and wiring (names relative to the instance), nested instances, and the
    shapes entering the instance. None if names do not follow the instance prefix."""
    g = net.graph
    prefix = frame.instance + "."
    inside = set(layers)
    rows = []
    for name in layers:
        if not name.startswith(prefix):
            return None
        data = g.nodes[name]
        depth = len(_path_to(data["path"], frame))
        if any(not f.instance.startswith(prefix) for f in data["path"][depth:]):
            return None
        nested = tuple((f.block, f.instance[len(prefix):], f.args)
                       for f in data["path"][depth:])
        wiring = tuple(i[len(prefix):] if i in inside else ("<in>", g.nodes[i].get("shape"))
                       for i in data["inputs"])
        rows.append((name[len(prefix):], data["op"], repr(sorted(data["attrs"].items())),
                     wiring, nested))
    return (frame.block, frame.args, tuple(rows))


def _path_to(path: tuple[Frame, ...], frame: Frame) -> tuple[Frame, ...]:
    for k, f in enumerate(path):
        if f.instance == frame.instance:
            return path[:k + 1]
    raise ValueError(frame.instance)


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
    is one edge (x -> add); a projection shortcut is its chain (x -> conv -> bn -> add)."""
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
        for u in inputs:
            chain = _branch(g, u, v)  # [fork, ..., u]
            fork = chain[0]
            others = [w for w in inputs if w != u]
            rivals = [w for w in others if w == fork or nx.has_path(g, fork, w)]
            if not rivals or any(w in chain for w in others):
                continue
            mine = len(chain) - 1
            theirs = max(_longest_from(g, fork, w, position) for w in rivals)
            if mine < theirs:
                out.update(zip(chain, chain[1:] + [v]))
    return out


def _branch(g: nx.DiGraph, u: str, merge: str) -> list[str]:
    """Walk back from u while each layer has one input and feeds only the next: the chain
    [fork, ..., u] of the branch ending in u."""
    chain = [u]
    nxt = merge
    while True:
        node = chain[0]
        preds = list(g.predecessors(node))
        if set(g.successors(node)) != {nxt} or len(preds) != 1:
            return chain
        nxt = node
        chain.insert(0, preds[0])


def _longest_from(g: nx.DiGraph, source: str, target: str, position: dict[str, int]) -> int:
    """Layers on the longest path source -> target, excluding source (0 if the same). Only
    layers between the two in topological order can lie on it, so the search walks back
    from target no further than source."""
    between, stack = set(), [target]
    while stack:
        n = stack.pop()
        if n not in between and position[n] > position[source]:
            between.add(n)
            stack.extend(g.predecessors(n))
    length = {source: 0}
    for n in sorted(between, key=position.__getitem__):
        reached = [length[p] for p in g.predecessors(n) if p in length]
        if reached:
            length[n] = 1 + max(reached)
    return length.get(target, 0)


# ---- the drawing -------------------------------------------------------------------------

def draw(net: Network, depth: int | None | str = "auto", rankdir: str = "TB",
         shapes: bool = True, annotate: Iterable[str] = (),
         collapse_repeats: bool = True) -> graphviz.Digraph:
    """The architecture diagram of `net` as a graphviz.Digraph (shown inline in Jupyter;
    `.pipe(format="svg")`, `.source` for DOT).

    depth             block nesting drawn open (clusters); deeper instances are one node
                      each. 0 closes every block, None opens every block, "auto" (the
                      default) the deepest that keeps the diagram 60 nodes tall
    rankdir           "TB" (top to bottom) or "LR" (left to right)
    shapes            label edges with the tensor shape they carry (per sample)
    annotate          any of "params", "macs", "rf": extra lines in node labels
    collapse_repeats  draw a run of identical chained block instances once, marked `xN`
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
    successors that no other successor leads to), when they share a cluster, on one rank."""
    drawn = layout.graph()
    groups: dict[str | None, list[list[str]]] = defaultdict(list)
    for fork in layout.nodes:
        succ = [e.head for e in layout.edges if e.tail == fork]
        if len(succ) < 2:
            continue
        heads = [s for s in succ
                 if not any(t != s and nx.has_path(drawn, t, s) for t in succ)]
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
