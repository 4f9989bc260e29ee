"""A branch whose result reaches no output (lowering warns about it) is what compile drops:
the analyzer's rows, totals and memory estimate leave it out, and never name it as the peak."""
import numpy as np

import netspec
from netspec.analysis.summary import render

DEAD = """network n {
    input x: [3, 16, 16]
    unused = x -> big: conv(256, k=7, p=3) -> bigger: conv(256, k=7, p=3)
    output x -> conv1: conv(8, k=3, p=1) -> relu -> gap: global_avgpool -> flatten -> fc: linear(4)
}"""
LIVE = DEAD.replace("    unused = x -> big: conv(256, k=7, p=3) -> bigger: conv(256, k=7, p=3)\n", "")


def test_dead_branch_is_warned_about():
    assert any("never used" in w.message for w in netspec.parse(DEAD).warnings)


def test_dead_branch_is_left_out_of_rows_totals_and_memory():
    dead, live = netspec.analyze(netspec.parse(DEAD)), netspec.analyze(netspec.parse(LIVE))
    assert dead.dead == ["big", "bigger"]
    assert [r.name for r in dead.layers] == [r.name for r in live.layers]
    assert dead.totals == live.totals
    assert dead.memory == live.memory
    assert "big" not in dead.memory.peak_at
    assert dead.to_dict()["dead_layers"] == ["big", "bigger"]


def test_summary_says_what_it_left_out():
    text = render(netspec.analyze(netspec.parse(DEAD)))
    assert "Not counted: 2 layers reaching no output, which compile drops (big, bigger)" in text


def test_compile_drops_the_dead_branch_and_its_parameters():
    model = netspec.compile(netspec.parse(DEAD), dtype="float64")
    assert not [k for k in model.params if k.startswith("big")]
    reference = netspec.compile(netspec.parse(LIVE), dtype="float64")
    assert model.params.keys() == reference.params.keys()
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16))
    for k in model.params:
        model.params[k][...] = reference.params[k]
    np.testing.assert_array_equal(model.forward(x), reference.forward(x))
