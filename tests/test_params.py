"""Parameter pass: counts against torchvision's published figures, buffers, freezing, bytes."""
from __future__ import annotations

import os

import pytest

import netspec
from netspec.analysis.params import frozen_names
from netspec.lower import library_dir

# torchvision `Weights.meta["num_params"]` (torchvision/models/{alexnet,vgg,resnet,googlenet}.py,
# shown as "num_params" on the torchvision model docs pages), which counts parameters only:
# batch-norm running statistics are buffers and not included. GoogLeNet without aux heads.
TORCHVISION_NUM_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
    "alexnet": 61_100_840,
    "googlenet": 6_624_904,
    "mobilenet_v2": 3_504_872,
}

# Szegedy et al. 2014 (arXiv:1409.4842), the network of Table 1 (5x5 convs, biases, no batch
# norm, no auxiliary heads): 6,998,552 from its filter counts. torchvision's googlenet differs
# (3x3 "5x5" branch, pytorch/vision issue #906; bias-free convs with batch norm).
PAPER_NUM_PARAMS = {"googlenet_paper": 6_998_552}

# Specs without a torchvision counterpart, counted by hand from the spec (weights + biases).
HAND_COUNTS = {
    # LeNet-5 (LeCun et al. 1998): C1 6*(1*5*5)+6, C3 16*(6*5*5)+16, C5 120*(16*5*5)+120,
    # F6 84*120+84, output 10*84+10.
    "lenet5": (6 * 25 + 6) + (16 * 6 * 25 + 16) + (120 * 16 * 25 + 120) + (84 * 120 + 84)
              + (10 * 84 + 10),
    # 64 -> 256 -> 128 -> 10
    "mlp": (64 * 256 + 256) + (256 * 128 + 128) + (128 * 10 + 10),
    "softmax": 64 * 10 + 10,
    "svm": 64 * 10 + 10,
    # three bias-free 3x3 convs (1->32, 32->32, 32->64), their batch norms' gamma and beta,
    # and a linear layer on the 64x2x2 map.
    "digits_cnn": 9 * (1 * 32 + 32 * 32 + 32 * 64 + 64 * 64) + 2 * (32 + 32 + 64 + 64)
    + (64 * 4 * 10 + 10),
    # U-Net at width 16: double convs (two bias-free 3x3 convs, two batch norms) down
    # 3->16->32->64->128->256, 2x2 transposed convs with bias halving the channels, double
    # convs on the concatenations, a 1x1 conv to 2 classes. (At width 64 it is
    # milesial/Pytorch-UNet's 31,037,698: tests/test_specs_mobilenet_unet.py.)
    "unet": sum(9 * a * b + 9 * b * b + 4 * b for a, b in
                [(3, 16), (16, 32), (32, 64), (64, 128), (128, 256),
                 (256, 128), (128, 64), (64, 32), (32, 16)])
    + sum(a * (a // 2) * 4 + a // 2 for a in (256, 128, 64, 32)) + (16 * 2 + 2),
    # Recurrences as torch counts them: gates * H * (I + H) weights and two biases of
    # gates * H per layer (LSTM 4 gates, GRU 3), then the linear head.
    "lstm_digits": 4 * 128 * (8 + 128) + 2 * 4 * 128 + (128 * 10 + 10),
    "gru_digits": 3 * 128 * (8 + 128) + 2 * 3 * 128 + (128 * 10 + 10),
    # embedding 96x64, LSTM(64, 256, 2 layers), head 256 -> 96
    "char_lstm": 96 * 64 + 4 * 256 * (64 + 256) + 2 * 4 * 256 + 4 * 256 * (256 + 256)
    + 2 * 4 * 256 + (256 * 96 + 96),
    # GPT, d = 128: token (96) and position (64) embeddings; per block attention 4d² + 4d,
    # two layer norms 4d, feed-forward d -> 4d -> d; final norm 2d; head d -> 96.
    "gpt_tiny": 96 * 128 + 64 * 128 + 4 * ((4 * 128 * 128 + 4 * 128) + 4 * 128
                                           + (128 * 512 + 512) + (512 * 128 + 128))
    + 2 * 128 + (128 * 96 + 96),
    # gpt_alibi: gpt_tiny without the position table (ALiBi has no parameters)
    "gpt_alibi": 96 * 128 + 4 * ((4 * 128 * 128 + 4 * 128) + 4 * 128
                                 + (128 * 512 + 512) + (512 * 128 + 128))
    + 2 * 128 + (128 * 96 + 96),
    # ViT, d = 64: patch embedding 4 -> 64, class token, 17 positions; per block attention,
    # norms, feed-forward d -> 2d -> d; final norm; head 64 -> 10.
    "vit_digits": (4 * 64 + 64) + 64 + 17 * 64 + 4 * ((4 * 64 * 64 + 4 * 64) + 4 * 64
                                                      + (64 * 128 + 128) + (128 * 64 + 64))
    + 2 * 64 + (64 * 10 + 10),
}


@pytest.fixture(scope="module")
def analyses():
    cache: dict[str, netspec.Analysis] = {}

    def get(name: str, **kwargs):
        key = (name, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = netspec.analyze(netspec.load(name), **kwargs)
        return cache[key]

    return get


@pytest.mark.parametrize("name", sorted(TORCHVISION_NUM_PARAMS))
def test_params_equal_torchvision_num_params(analyses, name):
    totals = analyses(name).totals
    assert totals.params == TORCHVISION_NUM_PARAMS[name]
    assert totals.count.trainable == totals.params and totals.count.frozen == 0


@pytest.mark.parametrize("name, shape", [("vgg16", (3, 32, 32)), ("alexnet", (3, 64, 64))])
def test_adaptive_avgpool_keeps_torchvision_params_at_small_inputs(analyses, name, shape):
    # AdaptiveAvgPool2d fixes the classifier's input at 512x7x7 (AlexNet: 256x6x6),
    # so the count does not depend on the image size.
    assert analyses(name, input_shape=shape).totals.params == TORCHVISION_NUM_PARAMS[name]


def test_googlenet_as_published_has_6_998_552_params(analyses):
    assert analyses("googlenet_paper").totals.params == PAPER_NUM_PARAMS["googlenet_paper"]


@pytest.mark.parametrize("name", sorted(HAND_COUNTS))
def test_params_equal_hand_count(analyses, name):
    assert HAND_COUNTS["lenet5"] == 61_706
    assert analyses(name).totals.params == HAND_COUNTS[name]


def test_every_bundled_spec_has_a_reference_count():
    bundled = {f[:-4] for f in os.listdir(library_dir()) if f.endswith(".net")}
    assert bundled == set(TORCHVISION_NUM_PARAMS) | set(PAPER_NUM_PARAMS) | set(HAND_COUNTS)


def test_cs231n_conv_weight_count_is_f2_c1_c2_over_groups_plus_bias():
    net = netspec.parse("network n { input x: [16, 8, 8]\n"
                        "output x -> c: conv(32, k=3, p=1, groups=4) }")
    a = netspec.analyze(net)
    assert a.layer("c").params == 3 * 3 * (16 // 4) * 32 + 32


def test_batchnorm_running_statistics_are_buffers_not_params(analyses):
    a = analyses("resnet50")
    bn = a.layer("bn1")
    assert (bn.count.trainable, bn.count.buffers) == (2 * 64, 2 * 64)
    # Every batch norm has as many running statistics as gamma/beta entries.
    bn_affine = sum(r.params for r in a.layers if r.op == "batchnorm")
    assert a.totals.count.buffers == bn_affine == 53_120


def test_params_annotate_nodes_with_their_param_specs():
    net = netspec.load("resnet18")
    netspec.analyze(net)
    specs = net.node("layer1.0.bn1")["params"]
    assert [(p.name, p.kind, p.shape) for p in specs] == [
        ("weight", "param", (64,)), ("bias", "param", (64,)),
        ("running_mean", "buffer", (64,)), ("running_var", "buffer", (64,))]


def test_param_bytes_follow_the_dtype(analyses):
    a32, a64 = analyses("lenet5"), analyses("lenet5", dtype="float64")
    assert a32.totals.param_bytes == 4 * 61_706
    assert a64.totals.param_bytes == 8 * 61_706


def test_freezing_a_stage_by_its_name_freezes_all_its_layers(analyses):
    a = analyses("resnet18", freeze=("layer1",))
    layer1 = sum(r.params for r in a.layers if r.name.startswith("layer1."))
    assert a.totals.count.frozen == layer1 == 2 * (2 * 36_864 + 2 * 128)
    assert a.totals.count.trainable == 11_689_512 - layer1
    assert a.totals.params == 11_689_512  # torchvision's count includes frozen parameters


def test_freeze_globs_match_layer_and_parameter_names(analyses):
    a = analyses("resnet18", freeze=("fc.weight", "layer4.*"))
    assert "fc.weight" in a.frozen and "fc.bias" not in a.frozen
    assert "layer4.1.bn2.weight" in a.frozen
    assert not any(n.endswith("running_mean") for n in a.frozen)  # buffers are never trained


def test_freezing_a_top_level_name_does_not_reach_into_blocks(analyses):
    a = analyses("resnet18", freeze=("conv1",))
    assert a.frozen == {"conv1.weight"}


def test_a_freeze_pattern_matching_nothing_is_an_error_with_a_suggestion():
    net = netspec.load("resnet18")
    netspec.analyze(net)
    with pytest.raises(netspec.NetspecError) as exc:
        frozen_names(net, ["layr1"])
    d = exc.value.diagnostics[0]
    assert "`layr1` matches no parameter" in d.message
    assert d.hint == "did you mean `layer1`?"
