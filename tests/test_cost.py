"""Cost pass: MACs and FLOPs against torchvision's documented figures and He et al. 2015."""
from __future__ import annotations

from pathlib import Path

import pytest

import netspec

SPECS = Path(__file__).parent / "specs"

# torchvision `Weights.meta["_ops"]`, shown as "GFLOPS" on the torchvision model docs pages
# (added in pytorch/vision PR #6936). Despite the name these are GIGA-MACs of the conv and
# linear layers, bias excluded, at batch 1 and 224x224: netspec's default convention.
# vgg13/vgg13_bn: 11.31 on pytorch.org/vision/main/models/generated/torchvision.models.vgg13.html.
TORCHVISION_GMACS = {
    "alexnet": 0.714,
    "vgg11": 7.609, "vgg11_bn": 7.609,
    "vgg13": 11.31, "vgg13_bn": 11.31,
    "vgg16": 15.470, "vgg16_bn": 15.470,
    "vgg19": 19.632, "vgg19_bn": 19.632,
    "resnet18": 1.814, "resnet34": 3.664, "resnet50": 4.089, "resnet101": 7.801,
    "resnet152": 11.514,
    "googlenet": 1.498,
    "mobilenet_v2": 0.301,
}

# He et al. 2015 (arXiv:1512.03385), Table 1, "FLOPs" = multiply-adds (§3.3), for the paper's
# layout ("V1": a downsampling bottleneck strides on its first 1x1 conv; tests/specs/
# resnet_v1_paper.net). ResNet-18/34 use basic blocks, the same in V1 and torchvision's V1.5.
# The table rounds to one decimal and not consistently, so the tolerance is 0.1 G.
HE_2015_GMACS = {
    "resnet18": ("resnet18", {}, 1.8),
    "resnet34": ("resnet34", {}, 3.6),
    "resnet50": (SPECS / "resnet_v1_paper.net", {"n2": 3, "n3": 4, "n4": 6, "n5": 3}, 3.8),
    "resnet101": (SPECS / "resnet_v1_paper.net", {"n2": 3, "n3": 4, "n4": 23, "n5": 3}, 7.6),
    "resnet152": (SPECS / "resnet_v1_paper.net", {"n2": 3, "n3": 8, "n4": 36, "n5": 3}, 11.3),
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_GMACS))
def test_macs_match_torchvision_ops_within_1_percent(name):
    macs = netspec.analyze(netspec.load(name)).totals.macs
    assert macs / 1e9 == pytest.approx(TORCHVISION_GMACS[name], rel=0.01)


def test_resnet50_macs_to_the_last_digit_torchvision_prints():
    assert round(netspec.analyze(netspec.load("resnet50")).totals.macs / 1e9, 3) == 4.089


@pytest.mark.parametrize("name", sorted(HE_2015_GMACS))
def test_macs_match_he_et_al_table_1(name):
    spec, depths, gmacs = HE_2015_GMACS[name]
    a = netspec.analyze(netspec.load(str(spec), overrides=depths))
    assert abs(a.totals.macs / 1e9 - gmacs) <= 0.1


def test_v1_and_v1_5_resnet50_share_params_but_not_macs():
    v1 = netspec.analyze(netspec.load(str(SPECS / "resnet_v1_paper.net"))).totals
    v15 = netspec.analyze(netspec.load("resnet50")).totals
    assert v1.params == v15.params
    assert v1.macs < v15.macs  # V1.5's strided 3x3 convs run on 4x the positions of V1's 1x1s


def test_conv_macs_are_output_positions_times_kernel_volume():
    # A MAC per weight per output position: C_out * OH * OW * (C_in / groups) * KH * KW.
    net = netspec.parse("network n { input x: [16, 10, 10]\n"
                        "output x -> c: conv(32, k=3, s=2, p=1, groups=2) }")
    a = netspec.analyze(net)
    assert a.layer("c").macs == 32 * 5 * 5 * (16 // 2) * 3 * 3


def test_linear_macs_count_the_flattened_input():
    a = netspec.analyze(netspec.parse("network n { input x: [8, 4, 4]\n"
                                      "output x -> fc: linear(10) }"))
    assert a.layer("fc").macs == 8 * 4 * 4 * 10


def test_flops_are_twice_the_macs_by_default():
    t = netspec.analyze(netspec.load("resnet50")).totals
    assert t.flops == 2 * t.macs


def test_count_all_adds_bias_norm_activation_pool_and_add_flops():
    net = netspec.parse("network n { input x: [3, 8, 8]\n"
                        "y = x -> c: conv(4, k=3, p=1) -> bn -> relu\n"
                        "output y + y -> maxpool(2) }")
    a = netspec.analyze(net, count="all")
    out = 4 * 8 * 8
    conv_macs = out * 3 * 9
    assert a.layer("c").flops == 2 * conv_macs + out  # the bias add
    assert a.layer("batchnorm").flops == 4 * out
    assert a.layer("relu").flops == out
    assert a.layer("add").flops == out
    assert a.layer("maxpool").flops == 4 * 4 * 4 * 2 * 2  # one per window element
    assert a.totals.macs == conv_macs  # MACs keep torchvision's convention
    assert "residual adds" in a.convention


def test_an_unknown_count_convention_is_a_diagnostic():
    with pytest.raises(netspec.NetspecError, match="unknown FLOP convention `fvcore`"):
        netspec.analyze(netspec.load("lenet5"), count="fvcore")
