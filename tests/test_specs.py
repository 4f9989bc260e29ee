"""The spec library: every spec checks clean, and the ResNet, VGG, AlexNet and GoogLeNet specs
line up with torchvision's models of the same name, layer by layer.

torchvision is not installed here, so the reference models (tests/_torchvision.py) are small,
faithful re-implementations of torchvision's module structure (same attribute names, same
layer hyper-parameters, same forward), built here on the `meta` device: no memory, no
compute, but real state_dict keys and shapes and real per-module output shapes.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

import netspec
from netspec import verify
from netspec.ops import REGISTRY

torch = pytest.importorskip("torch")
nn = torch.nn

from _torchvision import TORCHVISION

SPECS = Path(__file__).parent.parent / "specs"
ALL_SPECS = sorted(SPECS.glob("*.net"))


# ---- every spec in the library ----------------------------------------------------

@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.stem)
def test_spec_checks_clean(path):
    net = netspec.load(str(path))
    verify(net)
    assert not net.warnings, [w.render() for w in net.warnings]
    netspec.analyze(net)
    assert all("shape" in data for _, data in net.graph.nodes(data=True))


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.stem)
def test_spec_reads_as_documentation(path):
    text = path.read_text()
    assert text.startswith("#"), "a spec opens with a comment saying what it is"
    assert max(len(line) for line in text.splitlines()) <= 100


def test_resnet50_reads_in_40_lines_or_fewer():
    assert len((SPECS / "resnet50.net").read_text().splitlines()) <= 40


# Published parameter counts (torchvision's model zoo tables; LeCun 1998 with a fully
# connected C3; Szegedy 2014 as in Caffe's bvlc_googlenet without auxiliary heads).
PARAMS = {
    "lenet5": 61_706, "alexnet": 61_100_840, "vgg11": 132_863_336, "vgg11_bn": 132_868_840,
    "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "vgg19": 143_667_240,
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808, "googlenet": 6_624_904,
    "googlenet_paper": 6_998_552, "mobilenet_v2": 3_504_872,
}


def spec_params(net: netspec.Network) -> dict[str, tuple[int, ...]]:
    """{"layer1.0.conv1.weight": shape, ...}: parameters and buffers, named as PyTorch would."""
    netspec.analyze(net)
    g, out = net.graph, {}
    for name in net.order():
        data = g.nodes[name]
        ins = [g.nodes[i]["shape"] for i in data["inputs"]]
        for p in REGISTRY[data["op"]].params(data["attrs"], ins):
            out[f"{name}.{p.name}"] = (tuple(p.shape), p.kind)
    return out


@pytest.mark.parametrize("name, count", PARAMS.items())
def test_parameter_count_matches_the_published_number(name, count):
    params = spec_params(netspec.load(name))
    assert sum(math.prod(s) for s, kind in params.values() if kind == "param") == count


# ---- torchvision's module structure: tests/_torchvision.py ---------------------

# Layers a spec has that torchvision computes with a function, not a module: the
# residual add, the second ReLU of a block (torchvision calls one ReLU module several
# times: see test_reused_modules_match_numbered_layers), GoogLeNet's F.relu and torch.cat,
# MobileNetV2's F.adaptive_avg_pool2d and torch.flatten.
FUNCTIONAL = {"add", "concat", "relu", "global_avgpool", "flatten"}


def torchvision_model(name: str) -> nn.Module:
    with torch.device("meta"):
        return TORCHVISION[name]().eval()


def module_calls(model: nn.Module, shape=(3, 224, 224)) -> dict[str, list[tuple]]:
    """Each leaf module's output shape (batch axis dropped), once per call, in call order."""
    calls: dict[str, list[tuple]] = {}
    hooks = [m.register_forward_hook(
        lambda mod, args, out, name=name: calls.setdefault(name, []).append(tuple(out.shape[1:])))
        for name, m in model.named_modules() if not list(m.children())]
    with torch.no_grad():
        model(torch.empty((1, *shape), device="meta"))
    for h in hooks:
        h.remove()
    return calls


def spec_name(module: str, call: int) -> str:
    """The k-th call of a reused torch module is the spec's layer `name_k` (relu, relu_1)."""
    return module if call == 0 else f"{module}_{call}"


@pytest.fixture(scope="module", params=sorted(TORCHVISION))
def pair(request):
    net = netspec.load(request.param)
    netspec.analyze(net)
    return request.param, net, torchvision_model(request.param)


@pytest.fixture(scope="module")
def calls(pair):
    return module_calls(pair[2])


def test_state_dict_keys_and_shapes_match_torchvision(pair):
    _, net, model = pair
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()
                if not k.endswith("num_batches_tracked")}
    got = {k: shape for k, (shape, _) in spec_params(net).items()}
    assert sorted(got) == sorted(expected)
    assert got == expected


def test_every_torchvision_module_is_a_spec_layer_of_the_same_op(pair):
    _, net, model = pair
    op_of = {nn.Conv2d: "conv", nn.BatchNorm2d: "batchnorm", nn.ReLU: "relu",
             nn.MaxPool2d: "maxpool", nn.Linear: "linear", nn.Dropout: "dropout",
             nn.ReLU6: "relu6"}
    for mod_name, module in model.named_modules():
        if list(module.children()):
            continue
        assert mod_name in net.graph, mod_name
        op = net.node(mod_name)["op"]
        if isinstance(module, nn.AdaptiveAvgPool2d):
            # (1, 1) is a global average pool; VGG's (7, 7) and AlexNet's (6, 6) are
            # adaptive pools of that output size.
            size = module.output_size
            if size in ((1, 1), 1):
                assert op == "global_avgpool", mod_name
            else:
                assert op == "adaptive_avgpool", mod_name
                expected = (size, size) if isinstance(size, int) else tuple(size)
                assert net.node(mod_name)["attrs"]["out"] == expected, mod_name
        else:
            assert op == op_of[type(module)], mod_name


def test_spec_layers_beyond_torchvision_modules_are_functional_ones(pair):
    _, net, model = pair
    modules = {n for n, m in model.named_modules() if not list(m.children())}
    extra = {n for n in net.graph if n not in modules and n not in net.inputs}
    assert {REGISTRY[net.node(n)["op"]].name for n in extra} <= FUNCTIONAL
    # numbered repeats of a reused module (relu_1) and torchvision's functional relus,
    # adds and concats are the only additions
    assert all(re.sub(r"_\d+$", "", n.rsplit(".", 1)[-1]) in FUNCTIONAL for n in extra), extra


def test_layer_hyperparameters_match_torchvision(pair):
    _, net, model = pair
    for mod_name, m in model.named_modules():
        attrs = net.node(mod_name)["attrs"] if mod_name in net.graph else None
        if isinstance(m, nn.Conv2d):
            assert (attrs["out"], attrs["k"], attrs["s"], attrs["p"], attrs["d"],
                    attrs["groups"], attrs["bias"]) == (
                m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                m.bias is not None), mod_name
        elif isinstance(m, nn.MaxPool2d):
            pair_of = (lambda v: (v, v))
            assert (attrs["k"], attrs["s"], attrs["p"], attrs["ceil"]) == (
                pair_of(m.kernel_size), pair_of(m.stride), pair_of(m.padding),
                m.ceil_mode), mod_name
        elif isinstance(m, nn.BatchNorm2d):
            assert (attrs["eps"], attrs["momentum"]) == (m.eps, m.momentum), mod_name
        elif isinstance(m, nn.Dropout):
            assert attrs["p"] == m.p, mod_name
        elif isinstance(m, nn.Linear):
            assert (attrs["out"], attrs["bias"]) == (m.out_features, m.bias is not None)


def test_reused_modules_match_numbered_layers_and_output_shapes(pair, calls):
    net = pair[1]
    for mod_name, shapes in calls.items():
        for k, shape in enumerate(shapes):
            layer = spec_name(mod_name, k)
            assert layer in net.graph, layer
            got = net.node(layer)["shape"]
            # torchvision flattens before the classifier with torch.flatten; a spec leaves
            # that to `linear`, so AlexNet's first dropout sees [256, 6, 6], not [9216].
            assert got == shape or (len(shape) == 1 and math.prod(got) == shape[0]), layer


def test_layer_counts_match_torchvision(pair, calls):
    name, net, model = pair
    by_op: dict[str, int] = {}
    for n in net.graph:
        by_op[net.node(n)["op"]] = by_op.get(net.node(n)["op"], 0) + 1
    assert by_op.get("conv", 0) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert by_op.get("batchnorm", 0) == sum(isinstance(m, nn.BatchNorm2d)
                                            for m in model.modules())
    assert by_op.get("linear", 0) == sum(isinstance(m, nn.Linear) for m in model.modules())
    relu_calls = sum(len(v) for k, v in calls.items()
                     if isinstance(model.get_submodule(k), nn.ReLU))
    if name != "googlenet":  # torchvision's googlenet applies F.relu, not modules
        assert by_op.get("relu", 0) == relu_calls


# ---- the paper's GoogLeNet beside torchvision's --------------------------------------

def test_googlenet_paper_differs_from_torchvision_only_where_the_paper_does():
    paper, tv = netspec.load("googlenet_paper"), netspec.load("googlenet")
    assert paper.node("inception3a.branch3.1.conv")["attrs"]["k"] == (5, 5)
    assert tv.node("inception3a.branch3.1.conv")["attrs"]["k"] == (3, 3)
    assert not any(d["op"] == "batchnorm" for _, d in paper.graph.nodes(data=True))
    assert paper.node("conv1.conv")["attrs"]["bias"] is True
    netspec.analyze(paper)
    assert paper.node("inception5b.concat")["shape"] == (1024, 7, 7)
    assert paper.node("fc")["shape"] == (1000,)
