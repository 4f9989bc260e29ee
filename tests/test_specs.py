"""The spec library: every spec checks clean, and the ResNet, VGG, AlexNet and GoogLeNet specs
line up with torchvision's models of the same name, layer by layer.

torchvision is not installed here, so the reference models below are small, faithful
re-implementations of torchvision's module structure (same attribute names, same layer
hyper-parameters, same forward), built on the `meta` device: no memory, no compute, but
real state_dict keys and shapes and real per-module output shapes.
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
nn, F = torch.nn, torch.nn.functional

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


# ---- torchvision's module structure, re-implemented ------------------------------

def conv3x3(c_in, c_out, stride=1):
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def conv1x1(c_in, c_out, stride=1):
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(c_in, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's V1.5 bottleneck: the stride is on the 3x3 conv2."""

    expansion = 4

    def __init__(self, c_in, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1(c_in, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.c_in = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.c_in != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.c_in, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.c_in, planes, stride, downsample)]
        self.c_in = planes * block.expansion
        layers += [block(self.c_in, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


VGG_CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, cfg, batch_norm=False, num_classes=1000):
        super().__init__()
        layers, c_in = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.Conv2d(c_in, v, kernel_size=3, padding=1))
                layers += [nn.BatchNorm2d(v)] if batch_norm else []
                layers.append(nn.ReLU(inplace=True))
                c_in = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class AlexNet(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class BasicConv2d(nn.Module):
    def __init__(self, c_in, c_out, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x):
        return torch.nn.functional.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, c_in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(c_in, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(c_in, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        # torchvision's "5x5" branch has a 3x3 kernel (pytorch/vision#906).
        self.branch3 = nn.Sequential(BasicConv2d(c_in, ch5x5red, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(c_in, pool_proj, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x),
                          self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """torchvision's googlenet with aux_logits=False, transform_input=False."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4c(self.inception4b(self.inception4a(x)))
        x = self.maxpool4(self.inception4e(self.inception4d(x)))
        x = self.inception5b(self.inception5a(x))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


class ConvBNReLU6(nn.Sequential):
    """torchvision's Conv2dNormActivation with MobileNetV2's ReLU6."""

    def __init__(self, c_in, c_out, k=3, stride=1, groups=1):
        super().__init__(nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups,
                                   bias=False), nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, c_in, c_out, stride, t):
        super().__init__()
        hidden = c_in * t
        self.use_res_connect = stride == 1 and c_in == c_out
        layers = [ConvBNReLU6(c_in, hidden, k=1)] if t != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's mobilenet_v2 (width_mult 1.0, round_nearest 8)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                    (6, 160, 3, 2), (6, 320, 1, 1)]
        features, c_in = [ConvBNReLU6(3, 32, stride=2)], 32
        for t, c, n, s in settings:
            for k in range(n):
                features.append(InvertedResidual(c_in, c, s if k == 0 else 1, t))
                c_in = c
        features.append(ConvBNReLU6(c_in, 1280, k=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


TORCHVISION = {
    "resnet18": lambda: ResNet(BasicBlock, [2, 2, 2, 2]),
    "resnet34": lambda: ResNet(BasicBlock, [3, 4, 6, 3]),
    "resnet50": lambda: ResNet(Bottleneck, [3, 4, 6, 3]),
    "resnet101": lambda: ResNet(Bottleneck, [3, 4, 23, 3]),
    "resnet152": lambda: ResNet(Bottleneck, [3, 8, 36, 3]),
    **{name: (lambda cfg=cfg: VGG(cfg)) for name, cfg in VGG_CFGS.items()},
    **{f"{name}_bn": (lambda cfg=cfg: VGG(cfg, batch_norm=True))
       for name, cfg in VGG_CFGS.items()},
    "alexnet": AlexNet,
    "googlenet": GoogLeNet,
    "mobilenet_v2": MobileNetV2,
}

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
