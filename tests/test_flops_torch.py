"""The analyzer's FLOPs in the `2mac` convention against PyTorch's FlopCounterMode, forward
and forward + backward, on an equivalent torch model of every bundled spec (built here from
the IR with torch.nn modules on the meta device: no memory, no weights, real shapes).

FlopCounterMode counts the GEMM-like aten ops (mm, addmm, bmm, convolution and its
backward); the analyzer's static backward skips the input gradient of a layer whose input
needs none, as autograd does for the first conv."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

import netspec

torch = pytest.importorskip("torch")
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ALL = sorted(p.stem for p in (Path(__file__).parent.parent / "specs").glob("*.net"))
# Sequence specs (embeddings, RNNs, attention) have no twin here: their generated torch
# modules are counted instead (test_sequence_specs_flops_match_flop_counter_mode);
# test_uncovered_specs_are_exactly_the_sequence_ones keeps the list honest.
UNCOVERED = {"char_lstm", "gpt_alibi", "gpt_tiny", "gru_digits", "lstm_digits", "vit_digits"}
SPECS = [n for n in ALL if n not in UNCOVERED]
SMALL = 64  # the input size for image networks whose size is free (keeps torch quick)


def _module(op: str, attrs: dict, ins: list[tuple]) -> nn.Module | None:
    """The torch module of one layer; None for merges and the input."""
    c = ins[0][0] if ins else 0
    table = {
        "conv": lambda: nn.Conv2d(c, attrs["out"], attrs["k"], attrs["s"], attrs["p"],
                                  attrs["d"], attrs["groups"], attrs["bias"]),
        "linear": lambda: nn.Sequential(nn.Flatten(), nn.Linear(math.prod(ins[0]),
                                                                attrs["out"], attrs["bias"])),
        "batchnorm": lambda: (nn.BatchNorm2d if len(ins[0]) == 3 else nn.BatchNorm1d)(c),
        "relu": nn.ReLU, "tanh": nn.Tanh, "flatten": nn.Flatten,
        "relu6": nn.ReLU6, "hardswish": nn.Hardswish,
        "conv_transpose": lambda: nn.ConvTranspose2d(
            c, attrs["out"], attrs["k"], attrs["s"], attrs["p"], attrs["out_pad"],
            attrs["groups"], attrs["bias"], attrs["d"]),
        "upsample": lambda: nn.Upsample(
            size=attrs["size"], scale_factor=attrs["scale"], mode=attrs["mode"],
            align_corners=attrs["align_corners"] if attrs["mode"] == "bilinear" else None),
        "pad": lambda: nn.ConstantPad2d((attrs["p"][2], attrs["p"][3], attrs["p"][0],
                                         attrs["p"][1]), attrs["value"]),
        "dropout": lambda: nn.Dropout(attrs["p"]),
        "maxpool": lambda: nn.MaxPool2d(attrs["k"], attrs["s"], attrs["p"],
                                        ceil_mode=attrs["ceil"]),
        "avgpool": lambda: nn.AvgPool2d(attrs["k"], attrs["s"], attrs["p"],
                                        ceil_mode=attrs["ceil"]),
        "global_avgpool": lambda: nn.AdaptiveAvgPool2d(1),
        "adaptive_avgpool": lambda: nn.AdaptiveAvgPool2d(attrs["out"]),
    }
    if op in ("input", "add", "concat"):
        return None
    assert op in table, f"no torch twin for op `{op}`: add it to tests/test_flops_torch.py"
    return table[op]()


class Twin(nn.Module):
    """The network's layers as torch modules, run in the IR's topological order."""

    def __init__(self, net: netspec.Network):
        super().__init__()
        self.net = net
        self.order = net.order()
        self.layers = nn.ModuleDict()
        for name in self.order:
            data = net.node(name)
            ins = [net.node(i)["shape"] for i in data["inputs"]]
            m = _module(data["op"], data["attrs"], ins)
            if m is not None:
                self.layers[name.replace(".", "__")] = m

    def forward(self, x):
        values = {}
        for name in self.order:
            data = self.net.node(name)
            ins = [values[i] for i in data["inputs"]]
            if data["op"] == "input":
                values[name] = x
            elif data["op"] == "add":
                values[name] = sum(ins[1:], ins[0])
            elif data["op"] == "concat":
                values[name] = torch.cat(ins, dim=1)
            else:
                values[name] = self.layers[name.replace(".", "__")](ins[0])
        return [values[o] for o in self.net.outputs]


def _analysis(name: str):
    net = netspec.load(name)
    shape = net.node(net.inputs[0])["attrs"]["shape"]
    if len(shape) == 3:  # the smallest convenient size the spec allows
        try:
            small = (shape[0], SMALL, SMALL)
            return net, netspec.analyze(net, input_shape=small, flops="2mac"), small
        except netspec.NetspecError:  # a fixed-size spec (a 7x7 pool before its classifier)
            net = netspec.load(name)
    return net, netspec.analyze(net, flops="2mac"), tuple(shape)


def _torch_flops(net, shape) -> tuple[int, int]:
    with torch.device("meta"):
        model = Twin(net).train()
        x = torch.empty((2, *shape))
    with FlopCounterMode(display=False) as forward:
        outs = model(x)
    with FlopCounterMode(display=False) as both:
        outs = model(x)
        sum(o.sum() for o in outs).backward()
    return forward.get_total_flops(), both.get_total_flops()


@pytest.mark.parametrize("name", SPECS)
def test_forward_and_training_flops_match_flop_counter_mode(name):
    net, a, shape = _analysis(name)
    torch_forward, torch_training = _torch_flops(net, shape)
    batch = 2
    assert a.totals.flops * batch == torch_forward  # equal, not only within 1%
    # FlopCounterMode counts a grouped conv's weight gradient as if groups were 1
    # (conv_backward_flop passes the whole C_in): groups times the GEMMs the kernels run.
    grouped = sum(2 * r.macs * (net.node(r.name)["attrs"]["groups"] - 1)
                  for r in a.layers if r.op == "conv" and net.node(r.name)["attrs"]["groups"] > 1)
    assert (a.totals.training_flops + grouped) * batch == torch_training


def test_the_first_layer_computes_no_input_gradient():
    a = netspec.analyze(netspec.load("resnet18"), flops="2mac")
    conv1, fc = a.layer("conv1"), a.layer("fc")
    assert conv1.backward_flops == (0, 2 * conv1.macs)
    assert fc.backward_flops == (2 * fc.macs, 2 * fc.macs)


def test_the_conventions_relate_as_documented():
    net = netspec.parse("network n { input x: [3, 8, 8]\n"
                        "output x -> c: conv(4, k=3, p=1) -> bn -> relu -> flatten"
                        " -> f: linear(5) }")
    mac, two, exact = (netspec.analyze(net, flops=f) for f in ("mac", "2mac", "exact"))
    c_mac = 4 * 8 * 8 * 3 * 9
    assert mac.layer("c").flops == c_mac and two.layer("c").flops == 2 * c_mac
    # K multiplies and K - 1 adds per output, plus the bias add: 2K per output
    assert exact.layer("c").flops == 2 * c_mac
    assert exact.layer("f").flops == 2 * 256 * 5
    assert exact.layer("relu").flops == 256 and two.layer("relu").flops == 0
    assert mac.layer("f").backward_flops == (256 * 5, 256 * 5)
    for a, key in ((mac, "mac"), (two, "2mac"), (exact, "exact")):
        assert a.to_dict()["flops_convention"] == key
        assert a.convention.startswith(key + ":")


def test_uncovered_specs_are_exactly_the_sequence_ones():
    lacking = set()
    for name in ALL:
        net = netspec.load(name)
        netspec.analyze(net)
        for layer in net.order():
            data = net.node(layer)
            ins = [net.node(i)["shape"] for i in data["inputs"]]
            try:
                _module(data["op"], data["attrs"], ins)
            except AssertionError:
                lacking.add(name)
    assert lacking == UNCOVERED


# ---- the sequence specs: their generated torch modules ------------------------------------


def _counted(name: str) -> tuple:
    """The analysis (2mac) and FlopCounterMode's forward and training FLOPs of the spec's
    generated torch module on a batch of 2 (real CPU tensors: the sequence specs are small).
    torch's math attention replaces its fused CPU kernel (aten._scaled_dot_product_flash_
    attention_for_cpu, which FlopCounterMode has no formula for) and oneDNN's fused LSTM
    (aten.mkldnn_rnn_layer, the same) is switched off, so every product is an mm, addmm or
    bmm it counts: Q Kᵀ and the weighted sum of V are the bmm's."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # context 16 for the language models (T² still counts)
    over = {"context": 16} if name in ("char_lstm", "gpt_alibi", "gpt_tiny") else {}
    net = netspec.load(name, overrides=over)
    analysis = netspec.analyze(net, flops="2mac")
    module = netspec.compile(netspec.load(name, overrides=over), target="torch").train()
    data = net.node(net.inputs[0])
    shape = (2, *data["attrs"]["shape"])
    x = torch.randint(0, 5, shape) if data["attrs"].get("dtype") == "int" else torch.randn(shape)
    mkldnn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        with sdpa_kernel(SDPBackend.MATH):
            with FlopCounterMode(display=False) as forward:
                module(x)
            with FlopCounterMode(display=False) as both:
                module(x).sum().backward()
    finally:
        torch.backends.mkldnn.enabled = mkldnn
    return net, analysis, forward, both


@pytest.mark.parametrize("name", sorted(UNCOVERED))
def test_sequence_specs_flops_match_flop_counter_mode(name):
    """Forward and forward + backward FLOPs equal torch's count exactly, recurrences (the
    hidden state's gradient flows through T - 1 steps even when the input needs none) and
    attention's T² products (2·T²·D MACs a layer forward, twice that backward) included."""
    _, a, forward, both = _counted(name)
    batch = 2
    assert a.totals.flops * batch == forward.get_total_flops()
    assert a.totals.training_flops * batch == both.get_total_flops()
    quadratic = sum(2 * 2 * r.output_shape[0] ** 2 * r.output_shape[1] for r in a.layers if r.op == "attention")
    counted = forward.get_flop_counts()["Global"]
    assert counted.get(torch.ops.aten.bmm, 0) == batch * quadratic  # the T² terms
