"""Architecture diagrams: the plan against the IR, the SVG that the real `dot` draws against
the plan, golden DOT, hostile layer names, and `netspec draw` with and without Graphviz."""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import pytest

import netspec
from netspec.cli import main
from netspec.diagnostics import NetspecError
from netspec.render import draw, plan, quote_id, shortcut_edges
from netspec.specfiles import library_specs

SPECS = sorted(library_specs())
GOLDEN = Path(__file__).parent / "golden" / "render"
SVG = "{http://www.w3.org/2000/svg}"
DOT = shutil.which("dot")
needs_dot = pytest.mark.skipif(DOT is None, reason="Graphviz's `dot` is not installed "
                               "(apt-get install graphviz)")

NESTED = """
block inner(c) {
    input x
    output x -> conv: conv(c, k=1) -> relu
}
block outer(c) {
    input x
    output x -> a: inner(c) * 3 -> pool: maxpool(1)
}
network nested {
    input x: [4, 8, 8]
    output x -> s: outer(4) * 3 -> fc: linear(2)
}
"""


def analyzed(name: str) -> netspec.Network:
    net = netspec.load(name)
    netspec.analyze(net)
    return net


def shape_text(shape) -> str:
    return "×".join(str(d) for d in shape)


# ---- reading what dot drew ---------------------------------------------------------------

@dataclasses.dataclass
class Drawn:
    nodes: dict[str, ET.Element]  # title -> <g class="node">
    clusters: dict[str, ET.Element]
    edges: list[tuple[str, ET.Element]]  # (title "tail->head", <g class="edge">)

    def node_text(self, title: str) -> list[str]:
        return [t.text or "" for t in self.nodes[title].iter(SVG + "text")]

    def edge_labels(self) -> list[str]:
        return sorted(t.text for _, g in self.edges for t in g.iter(SVG + "text"))

    def center(self, title: str) -> tuple[float, float]:
        """Middle of a node's outline (polygon, path or ellipse) in SVG coordinates."""
        xs, ys = [], []
        for el in self.nodes[title]:
            if el.tag == SVG + "ellipse":
                xs.append(float(el.get("cx")))
                ys.append(float(el.get("cy")))
            elif el.tag in (SVG + "polygon", SVG + "path"):
                nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?",
                                                     el.get("points") or el.get("d"))]
                xs += nums[0::2]
                ys += nums[1::2]
        return (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2


def run_dot(source: str, fmt: str = "svg") -> bytes:
    done = subprocess.run([DOT, f"-T{fmt}"], input=source.encode("utf-8"),
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b"", f"dot warned: {done.stderr.decode()}"
    return done.stdout


def parse_svg(data: bytes) -> Drawn:
    root = ET.fromstring(data)
    nodes, clusters, edges = {}, {}, []
    for g in root.iter(SVG + "g"):
        title = g.find(SVG + "title")
        if g.get("class") == "node":
            nodes[title.text] = g
        elif g.get("class") == "cluster":
            clusters[title.text] = g
        elif g.get("class") == "edge":
            edges.append((title.text, g))
    return Drawn(nodes, clusters, edges)


def svg_of(net, **kwargs) -> Drawn:
    return parse_svg(run_dot(draw(net, **kwargs).source))


# ---- every spec, through the real dot ----------------------------------------------------

@needs_dot
@pytest.mark.parametrize("name", SPECS)
def test_fully_open_diagram_shows_exactly_the_ir(name):
    """Every block open and no run folded: one node per layer, one cluster per block
    instance, one edge per IR edge labelled with its source's output shape."""
    net = analyzed(name)
    drawn = svg_of(net, depth=None, collapse_repeats=False)
    g = net.graph
    assert set(drawn.nodes) == set(g.nodes)
    instances = {f.instance for _, d in g.nodes(data=True) for f in d["path"]}
    assert set(drawn.clusters) == {f"cluster_{i}" for i in instances}
    assert sorted(title for title, _ in drawn.edges) == sorted(f"{u}->{v}" for u, v in g.edges)
    assert drawn.edge_labels() == sorted(shape_text(g.nodes[u]["shape"]) for u, _ in g.edges)


@needs_dot
@pytest.mark.parametrize("name", SPECS)
def test_default_diagram_draws_its_plan_and_the_plan_covers_the_ir(name):
    net = analyzed(name)
    layout = plan(net)
    drawn = svg_of(net)
    assert set(drawn.nodes) == set(layout.nodes)
    assert set(drawn.clusters) == {f"cluster_{c}" for c in layout.clusters}
    assert sorted(t for t, _ in drawn.edges) == sorted(f"{e.tail}->{e.head}"
                                                       for e in layout.edges)
    assert drawn.edge_labels() == sorted(shape_text(e.shape) for e in layout.edges)
    # The plan: every layer is drawn by exactly one node; a layer node is a real layer.
    g = net.graph
    assert set(layout.node_of) == set(g.nodes)
    for node in layout.nodes.values():
        assert (node.id in g) == (node.run is None)
    # Every IR edge between layers drawn by different nodes is drawn, with its shape.
    drawn_edges = {(e.tail, e.head): e.shape for e in layout.edges}
    for u, v in g.edges:
        tail, head = layout.node_of[u], layout.node_of[v]
        if tail != head and (tail, head) in drawn_edges:
            assert drawn_edges[(tail, head)] == g.nodes[u]["shape"]
    assert nx.is_directed_acyclic_graph(layout.graph())


@needs_dot
@pytest.mark.parametrize("name", ["lenet5", "resnet18", "googlenet"])
def test_png_is_rendered(name):
    data = run_dot(draw(analyzed(name)).source, "png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100


# ---- what the default depth shows --------------------------------------------------------

@needs_dot
def test_resnet152_default_is_its_stage_table():
    """He et al. 2015, Table 1: 3, 8, 36, 3 bottlenecks; the first of each stage differs
    (projection or stride), the rest are one node each."""
    drawn = svg_of(analyzed("resnet152"))
    assert list(drawn.nodes) == ["x", "conv1", "bn1", "relu", "maxpool", "layer1.0",
                                 "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1",
                                 "layer4.0", "layer4.1", "avgpool", "fc"]
    assert drawn.clusters == {}
    assert drawn.node_text("layer1.1")[0] == "layer1.1–2 ×2"
    assert drawn.node_text("layer2.1")[0] == "layer2.1–7 ×7"
    assert drawn.node_text("layer3.1")[0] == "layer3.1–35 ×35"
    assert drawn.node_text("layer4.1")[0] == "layer4.1–2 ×2"
    # bottleneck(256): 1x1 1024->256, 3x3 256->256, 1x1 256->1024, three batch norms
    one = 1024 * 256 + 256 * 256 * 9 + 256 * 1024 + 2 * (256 + 256 + 1024)
    assert 35 * one == 39_101_440
    assert "39.1M params" in drawn.node_text("layer3.1")
    assert "→ 1024×14×14" in drawn.node_text("layer3.1")


@needs_dot
def test_googlenet_default_opens_inception_modules_with_branches_side_by_side():
    net = analyzed("googlenet")
    drawn = svg_of(net)
    g = net.graph
    # depth 1: layers at most one block deep, and each block nested in a module as a node
    expected = {n for n, d in g.nodes(data=True) if len(d["path"]) <= 1}
    expected |= {d["path"][1].instance for _, d in g.nodes(data=True) if len(d["path"]) > 1}
    assert set(drawn.nodes) == expected
    assert set(drawn.clusters) == {f"cluster_{m}" for m in (
        "conv1", "conv2", "conv3", "inception3a", "inception3b", "inception4a",
        "inception4b", "inception4c", "inception4d", "inception4e", "inception5a",
        "inception5b")}
    heads = [f"inception4a.branch{k}" for k in ("1", "2.0", "3.0", "4.0")]
    centers = [drawn.center(h) for h in heads]
    assert len({round(y) for _, y in centers}) == 1, "branches start on one rank"
    assert [x for x, _ in centers] == sorted(x for x, _ in centers), "in spec order"


def test_default_depth_opens_what_fits():
    assert plan(analyzed("resnet152")).depth == 0
    assert plan(analyzed("googlenet")).depth == 1
    assert plan(analyzed("resnet18")).depth is None  # its one level fits: 56 nodes tall


# ---- depth, runs and shortcuts -----------------------------------------------------------

def test_depth_closes_nested_blocks_and_runs_fold_at_every_level():
    net = netspec.parse(NESTED)
    netspec.analyze(net)
    full = plan(net, depth=None)
    assert list(full.nodes) == ["x", "s.0.a.0.conv", "s.0.a.0.relu", "s.0.pool", "fc"]
    assert [(c.id, c.run.count, c.parent) for c in full.clusters.values()] == [
        ("s.0", 3, None), ("s.0.a.0", 3, "s.0")]
    one = plan(net, depth=1)
    assert list(one.nodes) == ["x", "s.0.a.0", "s.0.pool", "fc"]
    assert one.nodes["s.0.a.0"].run.count == 3
    assert list(plan(net, depth=0).nodes) == ["x", "s.0", "fc"]
    unfolded = plan(net, depth=None, collapse_repeats=False)
    assert len(unfolded.nodes) == len(net) and len(unfolded.clusters) == 3 + 9


def test_folded_run_has_one_way_in_and_out():
    layout = plan(analyzed("resnet152"), depth=None)
    into = [(e.tail, e.head) for e in layout.edges if e.head.startswith("layer3.1.")
            and not e.tail.startswith("layer3.1.")]
    out = [(e.tail, e.head) for e in layout.edges if e.tail.startswith("layer3.1.")
           and not e.head.startswith("layer3.1.")]
    assert into == [("layer3.0.relu_2", "layer3.1.conv1"), ("layer3.0.relu_2", "layer3.1.add")]
    assert out == [("layer3.1.relu_2", "layer4.0.conv1"),
                   ("layer3.1.relu_2", "layer4.0.downsample.0")]
    assert layout.clusters["layer3.1"].run.count == 35


def test_instances_with_different_input_shapes_do_not_fold():
    net = netspec.parse("""
        block unit(c) {
            input x
            output x -> conv: conv(c, k=1) -> relu
        }
        network n {
            input x: [3, 4, 4]
            output x -> u: unit(8) * 3
        }""")
    netspec.analyze(net)
    runs = [c.run for c in plan(net, depth=None).clusters.values()]
    assert [r.count for r in runs] == [1, 2]  # u.0 sees 3 channels, u.1 and u.2 see 8


def test_residual_shortcuts_are_identity_edges_and_projection_chains():
    g = analyzed("resnet18")
    edges = shortcut_edges(g)
    assert ("maxpool", "layer1.0.add") in edges
    assert ("layer1.0.relu_1", "layer1.1.add") in edges
    assert {("layer1.1.relu_1", "layer2.0.downsample.0"),
            ("layer2.0.downsample.0", "layer2.0.downsample.1"),
            ("layer2.0.downsample.1", "layer2.0.add")} <= edges
    assert not any(v.endswith("add") and u.endswith("bn2") for u, v in edges)
    assert len(edges) == 5 + 3 * 3  # 5 identity blocks, 3 projection chains of 3 edges


def test_inception_branches_are_not_shortcuts():
    assert shortcut_edges(analyzed("googlenet")) == set()


@needs_dot
def test_shortcut_edges_are_dashed():
    drawn = svg_of(analyzed("resnet18"), depth=None, collapse_repeats=False)
    dashed = {title for title, g in drawn.edges
              if any(p.get("stroke-dasharray") for p in g.iter(SVG + "path"))}
    assert dashed == {f"{u}->{v}" for u, v in shortcut_edges(analyzed("resnet18"))}


# ---- options -----------------------------------------------------------------------------

@needs_dot
def test_no_shapes_hides_edge_labels():
    drawn = svg_of(analyzed("lenet5"), shapes=False)
    assert drawn.edge_labels() == []


@needs_dot
def test_annotations_add_params_macs_and_receptive_field():
    drawn = svg_of(analyzed("resnet18"), depth=0, annotate=("params", "macs", "rf"))
    # conv1: 64 x 3 x 7 x 7 weights, 112 x 112 outputs of 147 MACs each, a 7-pixel field
    assert drawn.node_text("conv1") == ["conv1", "conv 7x7/2, 64", "9.41K params",
                                        "118M MACs", "rf 7"]
    assert "relu" not in [t for t in drawn.node_text("relu") if "params" in t]
    # basic(64) x 2 = 2 x (2 convs 64*64*9 + 2 bns of 64): one params line, MACs, field
    text = drawn.node_text("layer1.0")
    assert text.count("148K params") == 1 and "462M MACs" in text


@needs_dot
def test_rankdir_lr_lays_the_network_out_left_to_right():
    drawn = svg_of(analyzed("lenet5"), rankdir="LR")
    (x0, y0), (x1, y1) = drawn.center("x"), drawn.center("output")
    assert x1 - x0 > abs(y1 - y0)
    drawn = svg_of(analyzed("lenet5"))
    (x0, y0), (x1, y1) = drawn.center("x"), drawn.center("output")
    assert y1 - y0 > abs(x1 - x0)


def test_bad_options_are_errors_not_ignored():
    net = analyzed("lenet5")
    with pytest.raises(NetspecError, match="annotation `flops`"):
        draw(net, annotate=["flops"])
    with pytest.raises(NetspecError, match="rankdir"):
        draw(net, rankdir="BT")
    with pytest.raises(ValueError, match="depth"):
        draw(net, depth=-1)


def test_draw_analyzes_a_fresh_network():
    assert "x" in draw(netspec.load("lenet5")).source


# ---- golden DOT --------------------------------------------------------------------------

@pytest.mark.parametrize("variant, kwargs", [
    ("default", {}),
    ("depth0", {"depth": 0, "annotate": ("params", "macs", "rf")}),
])
def test_golden_dot(variant, kwargs):
    net = netspec.load(str(GOLDEN / "tiny.net"))
    source = draw(net, **kwargs).source
    path = GOLDEN / f"tiny.{variant}.dot"
    if os.environ.get("NETSPEC_UPDATE_GOLDEN"):
        path.write_text(source, encoding="utf-8")
    assert source == path.read_text(encoding="utf-8")


# ---- hostile names -----------------------------------------------------------------------

HOSTILE = ['a"b', "back\\slash", "trail\\", "<b>bold</b>", "amp&co", "col:on", "node",
           "x -> y", "{brace}", "ü∂", "", "'q'", "]", "a;b=c"]


def hostile(net: netspec.Network) -> netspec.Network:
    """`net` with every layer and block instance renamed to something DOT must quote."""
    rename = {n: f"{HOSTILE[k % len(HOSTILE)]}#{k}" for k, n in enumerate(net.graph.nodes)}
    frames = {}
    for _, data in net.graph.nodes(data=True):
        for f in data["path"]:
            frames.setdefault(f.instance, f"{HOSTILE[len(frames) % len(HOSTILE)]}@{len(frames)}")
    g = nx.relabel_nodes(net.graph, rename)
    for _, data in g.nodes(data=True):
        data["inputs"] = [rename[i] for i in data["inputs"]]
        data["path"] = tuple(dataclasses.replace(f, instance=frames[f.instance],
                                                 block='blk<&>"\\') for f in data["path"])
    return dataclasses.replace(net, graph=g, inputs=[rename[i] for i in net.inputs],
                               outputs=[rename[o] for o in net.outputs], _order=None,
                               name='net<"&>\\')


def test_quote_id_escapes_quotes_and_backslashes():
    assert quote_id("plain") == '"plain"'
    assert quote_id('a"b') == '"a\\"b"'
    assert quote_id("trail\\") == '"trail\\\\"'
    assert quote_id("new\nline") == '"new\\x0aline"'


@needs_dot
def test_hostile_names_are_escaped():
    net = hostile(analyzed("resnet18"))
    drawn = svg_of(net, depth=None, collapse_repeats=False)

    def stored(name):  # the id dot keeps: quote_id's text without the outer quotes
        return quote_id(name)[1:-1].replace('\\"', '"')

    assert set(drawn.nodes) == {stored(n) for n in net.graph.nodes}
    assert len(drawn.edges) == net.graph.number_of_edges()
    instances = {f.instance for _, d in net.graph.nodes(data=True) for f in d["path"]}
    assert set(drawn.clusters) == {stored("cluster_" + i) for i in instances}
    for name in net.graph.nodes:  # the label shows the name itself, markup and all
        if net.graph.nodes[name]["op"] != "input":
            assert name in drawn.node_text(stored(name))[0]


# ---- the command -------------------------------------------------------------------------

@needs_dot
@pytest.mark.parametrize("suffix, magic", [("svg", b"<?xml"), ("png", b"\x89PNG"),
                                           ("pdf", b"%PDF"), ("dot", b"digraph")])
def test_cli_format_follows_the_suffix(tmp_path, capsys, suffix, magic):
    out = tmp_path / f"net.{suffix}"
    assert main(["draw", "lenet5", "-o", str(out)]) == 0
    assert out.read_bytes().startswith(magic)
    assert capsys.readouterr().out.startswith(f"wrote {out}")


def test_cli_format_option_and_unknown_suffix(tmp_path, capsys):
    out = tmp_path / "diagram.txt"
    assert main(["draw", "lenet5", "-o", str(out), "--format", "dot"]) == 0
    assert out.read_text().startswith("digraph")
    assert main(["draw", "lenet5", "-o", str(out)]) == 2  # a usage error naming -o
    assert "cannot tell the format" in capsys.readouterr().err


def test_cli_options_reach_the_drawing(tmp_path):
    out = tmp_path / "r.dot"
    assert main(["draw", "resnet18", "-o", str(out), "--depth", "0", "--rankdir", "LR",
                 "--no-shapes", "--annotate", "params,macs"]) == 0
    text = out.read_text()
    assert "rankdir=LR" in text and "label=\"64" not in text and "MACs" in text
    assert '"layer1.0" [' in text and "cluster_" not in text


def test_cli_without_dot_writes_the_dot_file_and_says_how_to_install(tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "net.svg"
    assert main(["draw", "lenet5", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "apt-get install graphviz" in err and "Traceback" not in err
    assert not out.exists()
    assert (tmp_path / "net.dot").read_text() == draw(analyzed("lenet5")).source


def test_cli_spec_errors_are_diagnostics(tmp_path, capsys):
    bad = tmp_path / "bad.net"
    bad.write_text("network n {\n    input x: [3, 8, 8]\n    output x -> conv(4, k=9)\n}\n")
    assert main(["draw", str(bad), "-o", str(tmp_path / "o.svg")]) == 1
    err = capsys.readouterr().err
    assert "bad.net:3" in err and "error" in err and "Traceback" not in err


# GPT-2 small (Radford et al. 2019) from the bundled blocks, with its head untied from the
# token embedding: 124,439,808 parameters with the head tied (the published count), plus a
# 50257x768 head weight and its bias.
GPT2_SMALL = """import "blocks/transformer.net"
network gpt2_small {
    input x: [1024] int
    output x -> tok: embedding(50257, 768) -> pos: pos_embedding -> drop: dropout(0.1)
             -> layers: decoder(768, 12, 3072, drop=0.1) * 12
             -> norm: layernorm -> head: linear(50257)
}
"""


@needs_dot
def test_a_twelve_block_gpt_folds_into_one_box_marked_x12():
    net = netspec.parse(GPT2_SMALL)
    assert netspec.analyze(net).totals.params == 124_439_808 + 50257 * 768 + 50257
    text = netspec.draw(net).source
    assert "×12" in text
    nodes = re.findall(r'^\s*"([^"]+)" \[label=<', text, re.MULTILINE)
    assert nodes.count("layers.0.self_attn") == 1  # the block is drawn once...
    assert not re.search(r'"layers\.(?:[1-9]|1[01])\.', text)  # ...not twelve times
