"""Notebook display: an analysis prints as the summary table and shows as a Markdown table, a
Network shows as its diagram (SVG from the real `dot`), a compiled model has summary() and
draw(). Checked by calling the `_repr_*` methods Jupyter calls, against published figures,
the analyzer's records and the model's own arrays."""
from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pytest

import netspec
from netspec.analysis import rows
from netspec.render import plan

SVG = "{http://www.w3.org/2000/svg}"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's `dot` is not "
                               "installed (apt-get install graphviz)")


def test_analysis_prints_as_the_summary_table_with_published_figures():
    a = netspec.analyze(netspec.load("resnet18"))
    text = str(a)
    # torchvision's resnet18: 11,689,512 parameters, 1.814 GMACs (published-figures.md).
    assert "Params: 11,689,512" in text
    assert "MACs: 1,814" in text and "(1.81G)" in text
    assert text.startswith("resnet18: input x [3, 224, 224], batch 1, float32\n")
    for r in a.layers:
        assert r.name in text
    assert len(text) < 31_751 // 2  # not the dataclass dump it used to be
    short = repr(a)
    assert "\n" not in short and len(short) < 200
    assert "11,689,512 params" in short and "1.81G MACs" in short


def test_analysis_shows_as_a_markdown_table_of_every_row():
    a = netspec.analyze(netspec.load("lenet5"))
    md = a._repr_markdown_()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert table[0].startswith("| Layer | Op | Output | Params | MACs")
    body = table[2:]  # header and alignment lines first
    assert len(body) == len(rows(a))
    for line, record in zip(body, a.layers):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == record.name
        assert cells[3] == f"{record.params:,}"
    assert f"Params: {a.totals.params:,}" in md
    assert a.totals.params == 61_706  # LeNet-5 as in the paper's layer sizes


def test_network_repr_is_one_line():
    net = netspec.load("resnet50")
    text = repr(net)
    assert "\n" not in text and len(text) < 200
    assert "'resnet50'" in text and f"{len(net)} layers" in text


@needs_dot
def test_network_displays_as_its_diagram():
    net = netspec.load("lenet5")
    svg = net._repr_svg_()
    root = ET.fromstring(svg)  # valid XML, as dot wrote it
    assert root.tag == SVG + "svg"
    titles = {g.find(SVG + "title").text for g in root.iter(SVG + "g")
              if g.get("class") == "node"}
    assert titles == set(plan(net).nodes)
    assert set(net.order()) <= titles  # lenet5 is drawn fully open: one node per layer


def test_too_large_a_network_is_refused_with_draw_s_message():
    text = "network wide {\n input x: [4]\n output x" + " -> linear(4)" * 1_200 + "\n}\n"
    net = netspec.parse(text)
    with pytest.raises(netspec.NetspecError, match="more than Graphviz lays out"):
        net._repr_svg_()


def test_model_summary_counts_the_model_s_own_arrays():
    model = netspec.compile("resnet18", input_shape=(3, 32, 32))
    a = model.summary()
    assert a.input_shapes["x"] == (3, 32, 32)
    assert a.totals.params == model.num_params == 11_689_512
    assert a.totals.count.frozen == 0
    model.frozen = {n for n in model.params if n.startswith("conv1.")}
    frozen = sum(model.params[n].size for n in model.frozen)
    assert model.summary().totals.count.frozen == frozen
    assert "Params: 11,689,512" in str(a)


@needs_dot
def test_model_draw_labels_edges_with_the_model_s_shapes():
    model = netspec.compile("lenet5")
    graph = model.draw(depth=None)
    root = ET.fromstring(graph.pipe(format="svg", quiet=True))
    labels = {t.text for g in root.iter(SVG + "g") if g.get("class") == "edge"
              for t in g.iter(SVG + "text")}
    first = netspec.analyze(netspec.load("lenet5")).layers
    shape = "×".join(str(d) for d in first[1].output_shape)
    assert shape in labels
