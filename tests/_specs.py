"""The spec lists the backend tests share (tests/test_torchgen.py, tests/test_onnx.py)."""
import os

from netspec.specfiles import library_specs

HERE = os.path.dirname(__file__)
BUNDLED = sorted(library_specs())
TEST_SPECS = sorted(os.path.join(HERE, "specs", f) for f in os.listdir(os.path.join(HERE, "specs"))
                    if f.endswith(".net") and f != "bad_residual.net")

# Cheap inputs where the spec allows a smaller image than its own (global or adaptive pooling
# before the classifier); batch 2 everywhere (batch norm trains on 2 values per channel).
SMALL_INPUT = {"alexnet": (3, 64, 64), "googlenet": (3, 32, 32),
               "alexnet_v2_slim": (3, 96, 96), "mobilenet_v2": (3, 32, 32)}
SMALL_INPUT |= {n: (3, 32, 32) for n in BUNDLED if n.startswith(("resnet", "vgg"))}


def spec_id(spec: str) -> str:
    """"resnet18" or "tiny_vgg_bn" for a bundled name or a test spec's path."""
    return os.path.basename(spec).removesuffix(".net")


# Every sequence op and option the bundled specs leave out (recurrent layers, directions and
# last steps of rnn, lstm and gru; causal and bias-free attention; both GELUs; pooling over
# time; class token and patches), for the torch and ONNX targets' tests.
SEQUENCE_ZOO = ["""network seqzoo {
    input x: [6] int
    h = x -> tok: embedding(11, 8) -> sinusoidal -> pos: pos_embedding -> cell: rnn(8)
          -> lstm2: lstm(4, layers=2, bidirectional=true) -> att: attention(2, causal=true)
          -> ln: layernorm -> g1: gelu -> nb: attention(4, bias=false)
          -> g2: gelu(approximate="tanh") -> fc: linear(6) -> softmax
    m = h -> mean
    f = h -> first
    l = h -> last
    b = h -> bigru: gru(3, layers=2, bidirectional=true, last=true)
    u = h -> uni: lstm(6, last=true)
    r = h -> birnn: rnn(3, bidirectional=true, last=true)
    output (m, f, l, b, u, r) -> add -> head: linear(4)
}""", """network patchzoo {
    input x: [2, 8, 12]
    output x -> patches(4) -> emb: linear(8) -> cls: class_token -> pos: pos_embedding
             -> att: attention(2) -> gru: gru(5, layers=3) -> first -> head: linear(3)
}"""]


# The widest specs (VGG, AlexNet, ResNet-34 and up, the paper GoogLeNet, the TF-Slim and
# paper ResNets: 21-144M parameters, 30-170 s a network in float64 on this shared 2-core
# machine) are compared numerically as narrowed twins: every conv and linear layer but the
# output one keeps its place, name, kernel, stride, padding, groups and bias with 1/8 of its
# outputs, and 10 classes. The layers, their arguments and the wiring the lowerings read are
# the spec's; only widths shrink (the full-width state dicts are checked by name and shape
# in tests/test_torchgen.py).
NARROW = 8


def narrowed(spec: str, factor: int = NARROW):
    """The spec's network, every conv and linear `out` but the output layer's divided by
    `factor`, num_classes 10 where the spec has it."""
    import netspec

    try:
        net = netspec.load(spec, overrides={"num_classes": 10})
    except netspec.NetspecError:  # no num_classes parameter
        net = netspec.load(spec)
    for name, data in net.graph.nodes.items():
        if name not in net.outputs and data["op"] in ("conv", "linear"):
            data["attrs"]["out"] = max(1, data["attrs"]["out"] // factor)
    return net
