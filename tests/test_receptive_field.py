"""Receptive-field pass against Araujo, Norris & Sim, "Computing Receptive Fields of
Convolutional Neural Networks" (Distill 2019), and the CS231n stacked-conv rule."""
from __future__ import annotations

from pathlib import Path

import pytest

import netspec

SPECS = Path(__file__).parent / "specs"


def field(spec, layer: str, **overrides):
    net = netspec.load(str(spec), overrides=overrides or None)
    return netspec.analyze(net).layer(layer).receptive_field


def field_of(text: str, layer: str):
    return netspec.analyze(netspec.parse(text)).layer(layer).receptive_field


@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("depth", [1, 2, 3, 6])
def test_stacked_stride_1_convs_see_1_plus_l_times_k_minus_1(depth, kernel):
    # CS231n: three stacked 3x3 convs see 7x7; in general L stacked KxK convs see 1 + L(K-1).
    rf = field_of(f"network n {{ input x: [3, 64, 64]\n"
                  f"output x -> s: conv(8, k={kernel}, p={kernel // 2}) * {depth} }}",
                  f"s.{depth - 1}")
    assert rf.size == (1 + depth * (kernel - 1),) * 2
    assert rf.jump == (1, 1) and rf.start == (0, 0)  # centred padding keeps the centre


def test_dilation_widens_the_kernel_to_d_times_k_minus_1_plus_1():
    # Dilations 1, 2, 4 of a 3x3: steps of 2, 4, 8 -> 1 + 2 + 4 + 8 = 15 (as in WaveNet).
    rf = field_of("network n { input x: [1, 64, 64]\noutput x -> conv(4, k=3, p=1)"
                  " -> conv(4, k=3, p=2, d=2) -> last: conv(4, k=3, p=4, d=4) }", "last")
    assert rf.size == (15, 15)


def test_size_jump_and_start_follow_the_forward_recursion():
    # conv 7x7/2 p3: r = 7, j = 2, start = 0 + (3 - 3) = 0; then maxpool 2x2/2 (no padding):
    # r = 7 + 1*2 = 9, j = 4, start = 0 + (0.5 - 0) * 2 = 1; a non-square conv 3x1.
    rf = field_of("network n { input x: [3, 64, 64]\noutput x -> conv(8, k=7, s=2, p=3)"
                  " -> maxpool(2) -> last: conv(8, k=[3, 1], p=[1, 0]) }", "last")
    assert rf.size == (9 + 2 * 4, 9)
    assert rf.jump == (4, 4)
    assert rf.start == (1, 1)
    assert rf.padding == (7, 3)  # Araujo et al.'s effective padding P = (r - 1)/2 - start


# Araujo et al., Table (TF-Slim models, 224x224 input): r / S / P, at the last feature map
# before the classifier. Computed here for specs in TF-Slim's layouts (tests/specs), since
# padding and stride placement differ from torchvision's.
@pytest.mark.parametrize("spec, layer, depths, expected", [
    (SPECS / "alexnet_v2_slim.net", "pool5", {}, (195, 32, 64)),
    ("vgg16", "features.30", {}, (212, 32, 90)),  # torchvision's VGG-16 has TF-Slim's padding
    # google-research/receptive_field (the paper's companion code): vgg_a = VGG-11.
    ("vgg11", "features.20", {}, (150, 32, 59)),
    (SPECS / "resnet_v1_slim.net", "block4.2.relu_2", {}, (483, 32, 239)),
    (SPECS / "resnet_v1_slim.net", "block4.2.relu_2", {"n3": 23}, (1027, 32, 511)),
    (SPECS / "resnet_v1_slim.net", "block4.2.relu_2", {"n2": 8, "n3": 36}, (1507, 32, 751)),
])
def test_receptive_fields_match_araujo_et_al_table(spec, layer, depths, expected):
    rf = field(spec, layer, **depths)
    assert (rf.size[0], rf.jump[0], rf.padding[0]) == expected
    assert rf.size[0] == rf.size[1]


@pytest.mark.parametrize("spec, layer, depths, expected", [
    # torchvision's AlexNet pads conv1 by 2: the same size and jump, P grows by 2.
    ("alexnet", "features.12", {}, (195, 32, 66)),
    # He et al.'s own layout (stride on the first 1x1): TF-Slim's size, torchvision's padding.
    (SPECS / "resnet_v1_paper.net", "layer4.2.relu_1", {}, (483, 32, 241)),
    # torchvision's V1.5 strides the 3x3 of a stage's first block: 3x3s at jump 4, 8 and 16
    # move one block earlier, so the field is 427, not 483.
    ("resnet50", "layer4.2.relu_1", {}, (427, 32, 213)),
])
def test_receptive_fields_of_torchvision_layouts(spec, layer, depths, expected):
    rf = field(spec, layer, **depths)
    assert (rf.size[0], rf.jump[0], rf.padding[0]) == expected


def test_padding_does_not_change_the_size():
    valid = field_of("network n { input x: [3, 64, 64]\noutput x -> c: conv(8, k=5) }", "c")
    same = field_of("network n { input x: [3, 64, 64]\noutput x -> c: conv(8, k=5, p=2) }", "c")
    assert valid.size == same.size == (5, 5)
    assert (valid.start, same.start) == ((2, 2), (0, 0))


def test_a_merge_takes_the_largest_field_over_its_paths():
    # GoogLeNet's inception3a: the 3x3 and "5x5" (3x3 in torchvision) branches see further
    # than the 1x1 branch; the concat carries the largest field.
    a = netspec.analyze(netspec.load("googlenet"))
    branch1 = a.layer("inception3a.branch1.conv").receptive_field
    branch2 = a.layer("inception3a.branch2.1.conv").receptive_field
    concat = a.layer("inception3a.concat").receptive_field
    assert branch1.size < branch2.size == concat.size
    assert not a.warnings  # every branch is centred: aligned


def test_a_linear_layer_sees_the_whole_flattened_map():
    # VGG-16's first fc sees all 7x7 units of pool5: 212 + 6 * 32.
    a = netspec.analyze(netspec.load("vgg16"))
    assert a.layer("classifier.0").receptive_field.size == (212 + 6 * 32,) * 2


def test_residual_shortcuts_of_resnet_are_aligned():
    a = netspec.analyze(netspec.load("resnet50"))
    main = a.layer("layer2.0.bn3").receptive_field
    shortcut = a.layer("layer2.0.downsample.1").receptive_field
    assert (main.jump, main.start) == (shortcut.jump, shortcut.start)
    assert main.size > shortcut.size
    assert a.layer("layer2.0.add").receptive_field == main
    assert not a.warnings


def test_misaligned_paths_into_an_add_warn():
    # A 2x2/2 pool centres its first unit at 0.5, a 1x1/2 conv at 0: unit (i, j) of the sum
    # mixes features half a pixel apart.
    net = netspec.parse("network n { input x: [4, 8, 8]\n"
                        "a = x -> maxpool(2)\nb = x -> conv(4, k=1, s=2)\n"
                        "output a + b }")
    a = netspec.analyze(net)
    (warning,) = a.warnings
    assert warning.message.startswith("add: the paths into this add are spatially misaligned")
    assert "start 0.5" in warning.message and "start 0" in warning.message
    assert warning.span.line == 4


def test_misalignment_after_global_pooling_does_not_matter():
    net = netspec.parse("network n { input x: [4, 8, 8]\n"
                        "a = x -> maxpool(2) -> global_avgpool\n"
                        "b = x -> conv(4, k=1, s=2) -> global_avgpool\n"
                        "output a + b }")
    assert not netspec.analyze(net).warnings


def test_a_network_without_a_spatial_input_has_no_receptive_field():
    a = netspec.analyze(netspec.parse("network n { input x: [64]\n"
                                      "output x -> linear(32) -> relu -> linear(10) }"))
    assert all(r.receptive_field is None for r in a.layers)


def test_the_flattened_digits_cnn_output_sees_its_whole_8x8_input_and_more():
    a = netspec.analyze(netspec.load("digits_cnn"))
    rf = a.output.receptive_field
    # convs 3, 3 (r 5), pool 2 (r 6, j 2), convs 3, 3 (r 10, 14), pool 2 (r 16, j 4),
    # fc over the 2x2 grid.
    assert rf.size == (16 + 1 * 4,) * 2


def test_adaptive_avgpool_dividing_its_input_is_an_ordinary_window():
    # 8 -> 2 rows: windows of 4 rows, 4 apart, as avgpool(4); 6 -> 3 columns likewise k=s=2.
    rf = field_of("network n { input x: [1, 8, 6]\noutput x -> a: adaptive_avgpool([2, 3]) }", "a")
    assert rf.size == (4, 2) and rf.jump == (4, 2) and rf.start == (1.5, 0.5)


def test_adaptive_avgpool_with_uneven_windows_credits_each_unit_with_the_whole_axis():
    # 5 -> 3 rows: windows [0, 2), [1, 4), [3, 5) are not evenly spaced; each unit is credited
    # with all 5 rows (jump 0). 1 -> 7 columns (upsampling): every unit sees the one column.
    rf = field_of("network n { input x: [1, 5, 1]\noutput x -> a: adaptive_avgpool([3, 7]) }", "a")
    assert rf.size == (5, 1) and rf.jump == (0, 0) and rf.start == (2, 0)
