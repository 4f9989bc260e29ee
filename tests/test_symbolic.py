"""Symbolic sizes: every bundled spec analyzed over [C, H, W] and evaluated at several sizes
equals the concrete analysis at those sizes exactly; the derived smallest sizes and
congruences agree with what the concrete analysis accepts and warns about."""
from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

import netspec
from netspec.diagnostics import NetspecError

SPECS = Path(__file__).parent.parent / "specs"
ALL = sorted(p.stem for p in SPECS.glob("*.net"))
IMAGE = [n for n in ALL if len(netspec.load(n).node(netspec.load(n).inputs[0])["attrs"]
                                ["shape"]) == 3]


@cache
def symbolic(name: str):
    net = netspec.load(name)
    c = net.node(net.inputs[0])["attrs"]["shape"][0]
    return netspec.analyze(net, input_shape=(c, "H", "W"), batch=8, optimizer="adam")


def concrete(name: str, h: int, w: int):
    net = netspec.load(name)
    c = net.node(net.inputs[0])["attrs"]["shape"][0]
    return netspec.analyze(net, input_shape=(c, h, w), batch=8, optimizer="adam")


def _sizes(name: str) -> list[tuple[int, int]]:
    m = symbolic(name).sizes.minimum
    h, w = m["H"], m["W"]
    return [(h, w), (224, 224), (h + 37, 2 * w + 5)]


def _fixed_size(name: str) -> bool:
    """Specs whose linear layer reads a flattened feature map: the input size is fixed."""
    try:
        symbolic(name)
    except NetspecError:  # a located diagnostic (a parameter sized by the input, patches)
        return True
    return False


@pytest.mark.parametrize("name", IMAGE)
def test_symbolic_analysis_evaluates_to_the_concrete_one(name):
    if _fixed_size(name):  # a linear layer reads the flattened map: the error says so
        return
    a = symbolic(name)
    for h, w in _sizes(name):
        try:
            got = a.at(H=h, W=w).to_dict()
        except NetspecError:  # a size the spec rejects (U-Net's skips: H % 16 == 0): so
            with pytest.raises(NetspecError):  # does the concrete analysis
                concrete(name, h, w)
            continue
        want = concrete(name, h, w).to_dict()
        got.pop("warnings"), want.pop("warnings")
        assert got == want, (name, h, w)


def test_fixed_size_specs_say_why():
    fixed = [n for n in IMAGE if _fixed_size(n)]
    # conv -> flatten -> linear, a fixed 7x7 pool before the classifier, or a linear
    # classifier on the pixels
    assert {"lenet5", "digits_cnn", "googlenet_paper", "mlp", "softmax", "svm"} <= set(fixed)
    assert not {"resnet50", "vgg16", "googlenet", "alexnet", "unet"} & set(fixed)
    with pytest.raises(NetspecError, match="depends on the input size"):
        symbolic("lenet5")


@pytest.mark.parametrize("name", ["resnet50", "vgg16", "googlenet", "alexnet", "resnet18"])
def test_the_minimum_size_is_where_the_concrete_analysis_starts_to_accept(name):
    m = symbolic(name).sizes.minimum["H"]
    concrete(name, m, m)
    if m > 1:
        with pytest.raises(NetspecError, match="does not fit"):
            concrete(name, m - 1, 256)


@pytest.mark.parametrize("name", ["vgg11", "alexnet", "resnet50", "googlenet"])
def test_the_congruence_is_where_the_concrete_analysis_drops_no_rows(name):
    a = symbolic(name)
    low = a.sizes.minimum["H"]
    for h in range(max(low, 64), max(low, 64) + 64):
        warned = any("never read" in w.message and "row" in w.message
                     for w in concrete(name, h, 224).warnings)
        at = a.at(H=h, W=224)
        assert warned == any("rows" in w.message for w in at.warnings), (name, h)


def test_resnet50_macs_formula():
    a = symbolic("resnet50")
    macs = str(netspec.analysis.symbolic.readable(a.totals.macs))
    assert "ceiling(H/32)*ceiling(W/32)" in macs and "floor" not in macs
    assert a.at(H=224, W=224).totals.macs == 4_089_184_256  # torchvision's figure
    assert a.sizes.minimum == {"H": 1, "W": 1}
    assert a.sizes.no_dropped_rows == {"H": "every H", "W": "every W"}


def test_vgg16_needs_multiples_of_32_to_read_every_row():
    a = symbolic("vgg16")
    assert a.sizes.minimum == {"H": 32, "W": 32}
    assert a.sizes.no_dropped_rows["H"] == "H ≡ 0 (mod 32)"


def test_at_rejects_bad_sizes():
    a = symbolic("vgg16")
    with pytest.raises(NetspecError, match="does not fit"):
        a.at(H=16, W=224)
    with pytest.raises(NetspecError, match="no value for W"):
        a.at(H=224)
    with pytest.raises(NetspecError, match="unknown size Q"):
        a.at(H=224, W=224, Q=3)


def test_plot_points_are_the_concrete_analyses(tmp_path):
    from netspec.analysis.plot import curves, plot

    a = symbolic("resnet18")
    xs, macs, memory = curves(a, [32, 100, 224])
    for n, m, b in zip(xs, macs, memory):
        c = concrete("resnet18", n, n)
        assert (m, b) == (c.totals.macs, c.memory.total)
    assert curves(symbolic("vgg11"), [16, 64])[0] == [64]  # 16 is below VGG's minimum
    out = plot([a, symbolic("vgg11")], tmp_path / "sizes.svg", [32, 64, 96])
    text = out.read_text()
    assert text.startswith("<?xml") and "resnet18" in text and "vgg11" in text


def test_plot_from_the_command_line(tmp_path, capsys):
    from netspec.cli import main

    out = tmp_path / "cost.png"
    assert main(["summary", "resnet18", "vgg11", "--plot", str(out), "--sizes", "32:96:32"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["summary", "lenet5", "--plot", str(tmp_path / "x.png")]) == 1
    assert "depends on the input size" in capsys.readouterr().err


def test_where_constraints_bound_the_sizes():
    net = netspec.parse('import "blocks/resnet.net"\nnetwork b {\n'
                        "  input x: [3, H, W] where H >= 64, H % 32 == 0\n"
                        "  output x -> conv(8, k=3, s=2, p=1) -> bottleneck(16, proj=true)\n}",
                        str(SPECS / "b.net"))
    a = netspec.analyze(net)
    assert a.sizes.minimum == {"H": 64, "W": 1}
    assert a.at(H=96, W=5).output.output_shape == (64, 48, 3)
    with pytest.raises(NetspecError, match="does not satisfy the spec's constraint"):
        a.at(H=100, W=5)
