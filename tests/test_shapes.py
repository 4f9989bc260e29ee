"""Shape pass: the notes' output-size formulas, errors that point at the spec, warnings."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import netspec

ROOT = Path(__file__).parent.parent
GOLDEN = Path(__file__).parent / "golden" / "analysis"


def shapes(text: str, input_shape=None) -> dict[str, tuple[int, ...]]:
    a = netspec.analyze(netspec.parse(text), input_shape)
    return {r.name: r.output_shape for r in a.layers}


def one_layer(call: str, input_shape: str = "[3, 32, 32]") -> netspec.Analysis:
    return netspec.analyze(netspec.parse(f"network n {{ input x: {input_shape}\n"
                                         f"output x -> y: {call} }}"))


@pytest.mark.parametrize("size, k, s, p, d, expected", [
    (224, 7, 2, 3, 1, 112),  # ResNet conv1
    (227, 11, 4, 0, 1, 55),  # AlexNet conv1 on the paper's 227: (227 - 11)/4 + 1
    (32, 5, 1, 0, 1, 28),  # LeNet-5 C1
    (32, 3, 1, 2, 2, 32),  # dilated 3x3 with "same" padding 2
    (56, 1, 2, 0, 1, 28),  # ResNet projection shortcut
    (7, 3, 3, 0, 1, 2),  # floor: (7 - 3)/3 + 1 = 2.33
])
def test_conv_output_is_h_plus_2p_minus_f_over_s_plus_1(size, k, s, p, d, expected):
    a = one_layer(f"conv(8, k={k}, s={s}, p={p}, d={d})", f"[3, {size}, {size}]")
    assert a.layer("y").output_shape == (8, expected, expected)


def test_pooling_output_and_ceil_mode():
    # GoogLeNet's 3x3/2 pools round up (torchvision ceil_mode=True): 112 -> 56, not 55.
    assert one_layer("maxpool(3, s=2)", "[64, 112, 112]").layer("y").output_shape == (64, 55, 55)
    assert one_layer("maxpool(3, s=2, ceil=true)",
                     "[64, 112, 112]").layer("y").output_shape == (64, 56, 56)


def test_concat_adds_channels_of_googlenet_inception3a():
    a = netspec.analyze(netspec.load("googlenet"))
    assert a.layer("inception3a.concat").output_shape == (64 + 128 + 32 + 32, 28, 28)


def test_linear_flattens_its_input_and_global_pooling_keeps_channels():
    s = shapes("network n { input x: [512, 7, 7]\n"
               "output x -> g: global_avgpool -> f: flatten -> fc: linear(10) }")
    assert (s["g"], s["f"], s["fc"]) == ((512, 1, 1), (512,), (10,))


def test_input_shape_override_reshapes_the_whole_network():
    a = netspec.analyze(netspec.load("resnet18"), (3, 64, 64))
    assert a.layer("layer4.1.relu_1").output_shape == (512, 2, 2)
    assert a.layers[0].label == "input 3x64x64"
    assert a.layer("fc").params == 513_000  # after global pooling the size does not matter


def test_a_bad_input_shape_override_is_a_diagnostic():
    with pytest.raises(netspec.NetspecError, match="bad input shape"):
        netspec.analyze(netspec.load("lenet5"), (1, 0, 32))


@pytest.mark.parametrize("call, input_shape, message", [
    ("conv(8, k=40)", "[3, 32, 32]", "a 40x40 kernel does not fit the 32x32 input padded to 32x32"),
    ("conv(8, k=3, d=20, p=1)", "[3, 32, 32]",
     "a 3x3 kernel (dilated to 41x41) does not fit the 32x32 input padded to 34x34"),
    ("conv(8, k=3, groups=2)", "[3, 32, 32]", "groups=2 does not divide the 3 input channels"),
    ("maxpool(3, p=2)", "[3, 32, 32]", "padding must be at most half the window size"),
    ("conv(8, k=3)", "[64]", "conv needs a [C, H, W] input, got [64]"),
    ("groupnorm(groups=4)", "[6, 8, 8]", "groupnorm groups=4 does not divide 6 channels"),
])
def test_impossible_shapes_are_errors_at_the_layer(call, input_shape, message):
    with pytest.raises(netspec.NetspecError) as exc:
        one_layer(call, input_shape)
    d = exc.value.diagnostics[0]
    assert d.message == f"y: {message}"
    assert (d.span.line, d.span.col) == (2, 16)  # the call, after `output x -> y: `


def test_mismatched_add_names_both_inputs_and_hints_a_projection():
    with pytest.raises(netspec.NetspecError) as exc:
        netspec.analyze(netspec.parse("network n { input x: [64, 56, 56]\n"
                                      "y = x -> conv(128, k=3, s=2, p=1)\noutput y + x }"))
    d = exc.value.diagnostics[0]
    assert d.message == "add: cannot add tensors of shape [128,28,28] and [64,56,56]"
    assert d.hint == "the shortcut needs a projection: x -> conv(128, k=1, s=2) -> bn"
    assert [n.message for n in d.notes] == ["input 1 is `conv` of shape [128,28,28]",
                                            "input 2 is `x` of shape [64,56,56]"]


def test_a_shape_error_inside_a_block_points_at_the_block_line_and_its_instance(monkeypatch):
    monkeypatch.chdir(ROOT)  # spans print paths relative to the working directory
    with pytest.raises(netspec.NetspecError) as exc:
        netspec.analyze(netspec.load("tests/specs/bad_residual.net"))
    d = exc.value.diagnostics[0]
    assert d.span.path == os.path.join("specs", "blocks", "resnet.net")
    assert d.span.source.line(d.span.line).strip() == "output y + shortcut -> relu"
    call_site = os.path.join("tests", "specs", "bad_residual.net") + ":8"
    assert d.notes[-1].message == f"in layer3.1 (basic, {call_site})"
    assert d.render() + "\n" == (GOLDEN / "shape_error_in_block.txt").read_text()


def test_rows_a_window_never_reads_are_a_warning():
    a = one_layer("conv(8, k=3, s=2)", "[3, 8, 8]")
    (warning,) = a.warnings
    assert warning.severity == "warning"
    assert warning.message == ("y: (H + 2P - F) / S = (8 + 0 - 3) / 2 is not an integer: "
                               "the last row and column of the 8x8 input are never read")
    assert warning in a.warnings and warning.span.line == 2


@pytest.mark.parametrize("call, input_shape", [
    ("conv(64, k=7, s=2, p=3)", "[3, 224, 224]"),  # only a padding row is left over
    ("conv(64, k=1, s=2)", "[64, 56, 56]"),  # a 1x1/2 skips every other row by design
    ("maxpool(3, s=2, ceil=true)", "[64, 112, 112]"),  # ceil mode covers the rest
])
def test_no_warning_when_no_input_row_is_lost(call, input_shape):
    assert not one_layer(call, input_shape).warnings


def test_one_axis_can_lose_rows_alone():
    a = one_layer("conv(8, k=[3, 2], s=2)", "[3, 8, 8]")
    (warning,) = a.warnings
    assert warning.message == ("y: (H + 2P - F) / S = (8 + 0 - 3) / 2 is not an integer: "
                               "the last row of the 8x8 input is never read")


def test_every_bundled_spec_analyzes_without_warnings():
    from netspec.lower import library_dir

    for f in sorted(os.listdir(library_dir())):
        if f.endswith(".net"):
            assert not netspec.analyze(netspec.load(f[:-4])).warnings, f
