"""ONNX export against onnx's checker and shape inference and onnxruntime's output.

For each spec: the exported model passes onnx.checker; onnx.shape_inference (strict) gives
every layer's output tensor the analyzer's shape with the dynamic batch axis; initializers are
named as the state dict; onnxruntime's output on random input equals the NumPy model's eval
output from the same weights (float32, rtol 1e-4).
"""
import os
import sys

import networkx as nx
import numpy as np
import pytest
from _specs import BUNDLED, SEQUENCE_ZOO, SMALL_INPUT, TEST_SPECS, narrowed
from _specs import spec_id as _id

import netspec
from netspec import onnxgen
from netspec.diagnostics import NetspecError
from netspec.ops import REGISTRY, Op

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

HERE = os.path.dirname(__file__)

# The widest specs (the VGGs and AlexNet: 61-144M float32 parameters; ResNet-101/152; the
# paper GoogLeNet and the TF-Slim/paper ResNets at 224x224) take 30-100 s each here to
# export, serialize and run at full width: they are checked as narrowed twins (the same
# layers and arguments at 1/8 of the widths, tests/_specs.py).
HEAVY = {"alexnet", "resnet34", "resnet101", "resnet152", "googlenet_paper", "resnet_v1_paper",
         "resnet_v1_slim"} | {n for n in BUNDLED if n.startswith("vgg")}
SPECS = [s for s in BUNDLED + TEST_SPECS if _id(s) not in HEAVY]
HEAVY_SPECS = [s for s in BUNDLED + TEST_SPECS if _id(s) in HEAVY]
RTOL = 1e-4


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def inferred_shapes(model) -> dict[str, list]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    values = list(inferred.graph.value_info) + list(inferred.graph.output)
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in values}


def random_input(model_proto, model, n=2, seed=0) -> np.ndarray:
    """float32 values, or int64 token ids anywhere in the vocabulary: below the rows of every
    table the graph's input indexes (the embeddings' Gather)."""
    rng = np.random.default_rng(seed)
    shape = (n,) + tuple(model.input_shape)
    if model.input_dtype == "int":
        graph = model_proto.graph
        rows = {t.name: t.dims[0] for t in graph.initializer}
        vocab = min(rows[node.input[0]] for node in graph.node
                    if node.op_type == "Gather" and node.input[1] == graph.input[0].name)
        return rng.integers(0, vocab, shape).astype(np.int64)
    return rng.standard_normal(shape).astype(np.float32)


def assert_matches_numpy(model_proto, model, n=2, seed=0):
    x = random_input(model_proto, model, n, seed)
    sess = session(model_proto)
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x})
    expected = model.forward(x)
    scale = float(np.abs(expected).max())
    # MobileNetV2's 53 float32 conv and batch-norm layers drift further from the NumPy
    # model (measured 1.1e-5 and 1.9e-5 absolute at scales 0.6 and 7): a looser floor.
    floor = 1e-1 if model.name == "mobilenet_v2" else 1e-2
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=RTOL * scale * floor)


def check_export(make, shape):
    """make(): a fresh Network. The export passes the checker, shape inference gives every
    live layer the analyzer's shape with a symbolic batch axis, the initializers are the live
    layers' state-dict tensors, every layer names a node, and onnxruntime equals NumPy."""
    net = make()
    proto = onnxgen.export(net, input_shape=shape, seed=3)  # checked by onnx.checker inside
    onnx.checker.check_model(proto)
    shapes = inferred_shapes(proto)
    g = net.graph
    live = nx.ancestors(g, net.outputs[0]) | {net.outputs[0]}
    for name in net.order():
        if name in net.inputs or name not in live or g.nodes[name]["op"] == "dropout":
            continue
        # ONNX's shape inference renames the batch symbol after a Resize (`unk__0`): the
        # batch axis must stay symbolic, the others equal the analyzer's.
        batch, *rest = shapes[name]
        assert isinstance(batch, str) and batch and rest == list(g.nodes[name]["shape"]), name
    model = netspec.compile(make(), input_shape=shape, seed=3)
    initializers = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    owned = {f"{n}.{t.name}" for n in live for t in REGISTRY[g.nodes[n]["op"]].params(
        g.nodes[n]["attrs"], [g.nodes[i]["shape"] for i in g.nodes[n]["inputs"]])}
    assert initializers == {k: v.shape for k, v in model.state_dict().items() if k in owned}
    assert {node.name for node in proto.graph.node} >= \
        {n for n in live if n not in net.inputs and g.nodes[n]["op"] != "dropout"}
    assert_matches_numpy(proto, model)


@pytest.mark.parametrize("spec", SPECS, ids=_id)
def test_export_checks_infers_the_analyzers_shapes_and_equals_numpy(spec):
    check_export(lambda: netspec.load(spec), SMALL_INPUT.get(_id(spec)))


@pytest.mark.parametrize("spec", HEAVY_SPECS, ids=_id)
def test_narrowed_heavy_spec_exports_equal_to_numpy(spec):
    """The widest specs as their narrowed twins (tests/_specs.py: every layer and argument
    but the widths), at 64x64 where the spec allows."""
    check_export(lambda: narrowed(spec), None if _id(spec) == "googlenet_paper" else (3, 64, 64))


def test_every_op_outside_the_specs(tmp_path):
    """Norms on images and vectors, every activation, maxout, ceil-mode average pool,
    dilated grouped conv, uneven adaptive pooling, batch norm on vectors, trailing dropout."""
    text = """network zoo {
        input x: [4, 9, 9]
        a = x -> c1: conv(8, k=3, p=2, d=2, groups=2) -> ln: layernorm -> e: elu(alpha = 0.7)
        b = x -> c2: conv(8, k=1, bias=false) -> inn: instancenorm -> l: leaky_relu(0.2)
        c = x -> c3: conv(8, k=3, p="same") -> inn2: instancenorm(affine = false) -> s: sigmoid
        output (a, b, c) -> add -> gn: groupnorm(4) -> mo: maxout(2) -> t: tanh
            -> ap: avgpool(3, s=2, p=1, ceil=true) -> ad: adaptive_avgpool([3, 2])
            -> mp: maxpool(2, s=1, ceil=true) -> sm: softmax -> id: identity
            -> f: flatten -> fc1: linear(12) -> bnv: bn(momentum = 0.3) -> lnv: layernorm
            -> r: relu -> fc2: linear(5) -> d: dropout(0.5)
    }"""
    model = netspec.compile(netspec.parse(text), seed=2)
    rng = np.random.default_rng(0)
    state = {k: v + 0.1 * rng.standard_normal(v.shape).astype(np.float32)
             for k, v in model.state_dict().items()}
    state = {k: np.abs(v) if k.endswith("running_var") else v for k, v in state.items()}
    model.load_state_dict(state)
    weights = tmp_path / "zoo.npz"
    model.save(weights)
    proto = onnxgen.export(netspec.parse(text), tmp_path / "zoo.onnx", weights=weights)
    assert onnx.load(str(tmp_path / "zoo.onnx")) == proto
    assert "Dropout" not in {n.op_type for n in proto.graph.node}
    net = netspec.parse(text)
    netspec.analyze(net)
    shapes = inferred_shapes(proto)
    for name in net.order():
        if name in shapes:
            assert shapes[name] == ["N", *net.graph.nodes[name]["shape"]], name
    assert_matches_numpy(proto, model, n=3)


@pytest.mark.parametrize("text", SEQUENCE_ZOO, ids=["tokens", "patches"])
def test_every_sequence_op_with_perturbed_weights(text):
    """Every sequence op and option (recurrent layers, directions, last step; causal and
    bias-free attention; both GELUs; class token, patches, pooling over time) from weights
    with nonzero biases, so a gate block out of ONNX's order or a bias in the wrong half of
    B changes the output."""
    model = netspec.compile(netspec.parse(text), seed=4)
    rng = np.random.default_rng(1)
    model.load_state_dict({k: v + 0.3 * rng.standard_normal(v.shape).astype(np.float32)
                           for k, v in model.state_dict().items()})
    net = netspec.parse(text)
    proto = onnxgen.export(net, weights=model.state_dict())
    netspec.analyze(net)
    shapes = inferred_shapes(proto)
    for name in net.order():
        if name not in net.inputs:
            assert shapes[name] == ["N", *net.graph.nodes[name]["shape"]], name
    if model.input_dtype == "int":
        assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert_matches_numpy(proto, model, n=3)


def test_dynamic_batch_axis_and_eval_mode_batch_norm():
    proto = onnxgen.export(os.path.join(HERE, "specs", "tiny_vgg_bn.net"))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [3, 16, 16]
    assert proto.opset_import[0].version == onnxgen.OPSET
    model = netspec.compile(os.path.join(HERE, "specs", "tiny_vgg_bn.net"))
    for n in (1, 5):  # one sample: batch norm must use running statistics, not the batch's
        assert_matches_numpy(proto, model, n=n, seed=n)


def test_weights_from_a_training_checkpoint(tmp_path):
    from netspec.train.checkpoint import Checkpoint, save_checkpoint

    model = netspec.compile("softmax", seed=9)
    params = {k: v for k, v in model.params.items()}
    save_checkpoint(tmp_path / "ckpt.npz", Checkpoint(params, dict(model.buffers)))
    proto = onnxgen.export("softmax", weights=tmp_path / "ckpt.npz")
    fresh = netspec.compile("softmax", seed=0)
    fresh.load_state_dict(model.state_dict())
    assert_matches_numpy(proto, fresh)


def test_weights_that_do_not_fit_are_a_diagnostic(tmp_path):
    np.savez(tmp_path / "w.npz", **{"fc.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(NetspecError, match="do not fit network `softmax`.*missing fc.bias"):
        onnxgen.export("softmax", weights=tmp_path / "w.npz")


def test_a_corrupt_weights_file_names_the_flag(tmp_path):
    (tmp_path / "w.npz").write_bytes(b"not a zip")
    with pytest.raises(NetspecError, match="--weights"):
        onnxgen.export("softmax", weights=tmp_path / "w.npz")


@pytest.mark.parametrize("op", sorted(n for n in REGISTRY if n != "input"))
def test_every_op_has_an_onnx_lowering(op):
    assert type(REGISTRY[op]).onnx is not Op.onnx, \
        f"op `{op}` has no ONNX lowering (onnx in netspec/ops/)"


# ---- the command line -------------------------------------------------------------------------

def test_cli_exports_a_file_onnxruntime_runs(tmp_path, capsys):
    from netspec.cli import main

    out = tmp_path / "lenet5.onnx"
    assert main(["export", "lenet5", "-o", str(out), "--seed", "4"]) == 0
    assert f"opset {onnxgen.OPSET}" in capsys.readouterr().err
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert_matches_numpy(proto, netspec.compile("lenet5", seed=4))


def test_cli_missing_weights_file(tmp_path, capsys):
    from netspec.cli import main

    assert main(["export", "lenet5", "-o", str(tmp_path / "m.onnx"),
                 "--weights", str(tmp_path / "nope.npz")]) == 2
    err = capsys.readouterr().err
    assert "--weights" in err and "no such checkpoint file" in err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_without_onnx_names_the_extra(tmp_path, capsys, monkeypatch):
    from netspec.cli import main

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    assert main(["export", "lenet5", "-o", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "netspec[onnx]" in err and "Traceback" not in err


def test_cli_compile_torch_without_torch_names_the_extra(tmp_path, capsys, monkeypatch):
    """Writing torch source needs no torch; the API that builds the module does."""
    from netspec.cli import main

    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["compile", "lenet5", "--target", "torch", "-o", str(tmp_path / "m.py")]) == 0
    with pytest.raises(NetspecError) as info:
        netspec.compile("lenet5", target="torch")
    assert "netspec[torch]" in info.value.diagnostics[0].hint


# ---- symbolic input sizes ---------------------------------------------------------------------

SYMBOLIC = """network symnet {
    input x: [3, H, W]
    output x -> c: conv(4, k=3, s=2, p=1) -> bn -> relu -> gap: global_avgpool -> fc: linear(2)
}"""


def test_symbolic_sizes_stay_named_axes_in_onnx_and_torch():
    """`input x: [3, H, W]`: the ONNX input has axes N, H, W and runs at any size; the torch
    module too; both equal the NumPy model compiled for the size."""
    proto = onnxgen.export(netspec.parse(SYMBOLIC), seed=1)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, "H", "W"]
    module = None
    try:
        module = netspec.compile(netspec.parse(SYMBOLIC), seed=1, target="torch").eval()
    except NetspecError as exc:  # torch not installed
        assert "netspec[torch]" in exc.diagnostics[0].hint
    for size in ((9, 12), (16, 16)):
        model = netspec.compile(netspec.parse(SYMBOLIC), input_shape=(3, *size), seed=1)
        assert_matches_numpy(proto, model)
        if module is not None:
            import torch

            x = np.random.default_rng(0).standard_normal((2, 3, *size)).astype(np.float32)
            np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(),
                                       model.forward(x), rtol=1e-4, atol=1e-5)


def test_a_parameter_sized_by_a_symbolic_input_is_a_diagnostic():
    text = "network n { input x: [3, H, W]\n output x -> flatten -> fc: linear(2) }"
    with pytest.raises(NetspecError, match="fc.weight.*depends on the input size"):
        onnxgen.export(netspec.parse(text))
    from netspec import torchgen

    with pytest.raises(NetspecError, match="fc.weight.*depends on the input size"):
        torchgen.generate(netspec.parse(text))
