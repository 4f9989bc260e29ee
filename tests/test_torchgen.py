"""The torch target: generated torch.nn.Module source against the NumPy model (float64).

Every bundled spec and test spec compiles to a torch module whose state dict has the NumPy
model's names and shapes; from the same seed both hold the same initial weights, and their
scores, losses, every parameter gradient and the updated running statistics agree in eval and
train mode. torchvision-layout state dicts (the faithful rewrites of tests/_torchvision.py)
load strictly; the generated files are ruff-clean; a missing lowering is an error naming the
layer, the op and the target.
"""
import ast
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from _specs import BUNDLED, SEQUENCE_ZOO, SMALL_INPUT, TEST_SPECS, narrowed
from _specs import spec_id as _id

import netspec
from netspec import torchgen
from netspec.diagnostics import NetspecError
from netspec.ops import REGISTRY, Op

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

from _torchvision import TORCHVISION

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
RTOL, ATOL = 1e-7, 1e-9

# The float64 comparison runs on the full-size networks of each family whose lowering differs
# (ResNet-18: basic blocks and projections; GoogLeNet: concat, ceil-mode pools) and on the test
# specs, which shrink the others to a few thousand parameters with the same layers (tiny_vgg_bn:
# conv/bn/relu/maxpool/dropout/linear; tiny_resnet_bottleneck: bottlenecks). The wide ones
# (VGG, AlexNet, ResNet-34 and up: 21-144M parameters, four float64 copies each, 30-170 s a
# network on this loaded 2-core machine; the paper GoogLeNet only runs at 224x224) get the
# structural, state-dict and torchvision-layout tests at full width, and the numeric
# comparison as narrowed twins (tests/_specs.py: 1/8 of the widths, the same layers).
HEAVY = {"alexnet", "googlenet_paper", "resnet34", "resnet50", "resnet101", "resnet152",
         "resnet_v1_paper", "resnet_v1_slim"} | {n for n in BUNDLED if n.startswith("vgg")}
NUMERIC = [s for s in BUNDLED + TEST_SPECS if _id(s) not in HEAVY]
HEAVY_SPECS = [s for s in BUNDLED + TEST_SPECS if _id(s) in HEAVY]


def load(spec: str, drop_zero: bool = False):
    net = netspec.load(spec)
    return without_dropout(net) if drop_zero else net


def batch(model_input, n_classes, n=2, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + tuple(model_input)), rng.integers(0, n_classes, n)


def numpy_step(model, x, y, train):
    """Scores and loss; a network with image-shaped scores (a feature extractor) backpropagates
    the gradient of sum(scores * y) for a fixed random y instead of a classification loss."""
    scores = model.forward(x, train=train, keep_cache=True)
    if y.shape == scores.shape:
        loss, dscores = float((scores * y).sum()), y
    else:
        loss, dscores = model.data_loss(scores, y)
    model.backward(dscores)
    return scores, loss


def torch_step(module, x, y, train):
    module.train(train)
    module.zero_grad()
    scores = module(torch.from_numpy(x))
    if y.shape == tuple(scores.shape):
        loss = (scores * torch.from_numpy(y)).sum()
    else:
        loss = module.data_loss(scores, torch.from_numpy(y))
    loss.backward()
    return scores.detach().numpy(), loss.item()


def assert_same(model, module, numpy_out, torch_out, what):
    np.testing.assert_allclose(numpy_out[0], torch_out[0], rtol=RTOL, atol=ATOL,
                               err_msg=f"{what}: scores")
    np.testing.assert_allclose(numpy_out[1], torch_out[1], rtol=RTOL, err_msg=f"{what}: loss")
    params = dict(module.named_parameters())
    assert set(model.grads) == set(params)
    for name, grad in model.grads.items():
        theirs = params[name].grad
        theirs = np.zeros_like(grad) if theirs is None else theirs.numpy()  # a dead branch
        # a sum of thousands of products: an element may cancel to far below the others
        scale = float(np.abs(theirs).max())
        np.testing.assert_allclose(grad, theirs, rtol=RTOL, atol=ATOL + RTOL * scale,
                                   err_msg=f"{what}: gradient of {name}")
    buffers = dict(module.named_buffers())
    for name, value in model.buffers.items():
        np.testing.assert_allclose(value, buffers[name].numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"{what}: {name}")


# ---- numerics -----------------------------------------------------------------------------

def compare(make, shape, steps=2):
    """Same seed -> same initial state; then eval, and `steps` train steps (running statistics
    updated by the first), agree in scores, loss, every gradient and every buffer. make():
    a fresh Network (each side compiles its own)."""
    model = netspec.compile(make(), input_shape=shape, dtype="float64", seed=5)
    module = netspec.compile(make(), input_shape=shape, dtype="float64", seed=5, target="torch")
    ours, theirs = model.state_dict(), module.state_dict()
    assert list(ours) == [k for k in theirs if not k.endswith("num_batches_tracked")]
    for name, value in ours.items():
        assert theirs[name].dtype == torch.float64
        np.testing.assert_array_equal(value, theirs[name].numpy(), err_msg=name)
    x, y = batch(model.input_shape, model.output_shape[0])
    if model.input_dtype == "int":  # token ids
        x = np.random.default_rng(1).integers(0, 5, x.shape)
    if len(model.output_shape) > 1:
        y = np.random.default_rng(2).standard_normal((2,) + tuple(model.output_shape))
    assert_same(model, module, numpy_step(model, x, y, False), torch_step(module, x, y, False),
                "eval")
    for step in range(steps):
        assert_same(model, module, numpy_step(model, x, y, True),
                    torch_step(module, x, y, True), f"train step {step}")


def without_dropout(net):
    """Dropout draws differ between the two: compare train mode without it."""
    for data in net.graph.nodes.values():
        if data["op"] == "dropout":
            data["attrs"]["p"] = 0.0
        if "dropout" in data["attrs"]:  # attention's dropout on its weights
            data["attrs"]["dropout"] = 0.0
    return net


@pytest.mark.parametrize("spec", NUMERIC, ids=_id)
def test_torch_module_equals_numpy_model(spec):
    compare(lambda: load(spec, drop_zero=True), SMALL_INPUT.get(_id(spec)))


@pytest.mark.parametrize("spec", HEAVY_SPECS, ids=_id)
def test_narrowed_heavy_spec_equals_numpy_model(spec):
    """The widest specs as their narrowed twins (tests/_specs.py: every layer and argument
    but the widths), eval and one train step."""
    # 64x64: ResNet-101/152 end at 2x2, so train-mode batch norm sees 8 values a channel (at
    # 1x1, 2 values make it ill-conditioned enough to part float64 sums at 1e-6)
    shape = None if _id(spec) == "googlenet_paper" else (3, 64, 64)  # its 7x7 pool: 224
    compare(lambda: without_dropout(narrowed(spec)), shape, steps=1)


@pytest.mark.parametrize("text", SEQUENCE_ZOO, ids=["tokens", "patches"])
def test_every_sequence_op_equals_torch_with_perturbed_weights(text):
    """The sequence ops and options no bundled spec uses (bias-free attention, both GELUs,
    bidirectional last steps, ...), from weights with nonzero biases: eval and train mode
    agree in scores, loss and every gradient."""
    model = netspec.compile(netspec.parse(text), dtype="float64", seed=6)
    rng = np.random.default_rng(2)
    model.load_state_dict({k: v + 0.3 * rng.standard_normal(v.shape)
                           for k, v in model.state_dict().items()})
    module = netspec.compile(netspec.parse(text), dtype="float64", target="torch")
    module.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x, y = batch(model.input_shape, model.output_shape[0], n=3)
    if model.input_dtype == "int":
        x = np.random.default_rng(1).integers(0, 11, x.shape)
    for train in (False, True):
        assert_same(model, module, numpy_step(model, x, y, train),
                    torch_step(module, x, y, train), "train" if train else "eval")


def test_train_mode_dropout_is_inverted_dropout_with_the_spec_rate():
    module = netspec.compile("mlp", target="torch", dtype="float64")
    module.train()
    h = torch.ones(4000, 256, dtype=torch.float64)
    # the generated forward's statement for the dropout layer, run on a known input
    line = next(s for s in module.source.splitlines() if "F.dropout(" in s)
    rate = float(line.split("F.dropout(")[1].split(",")[1])
    assert rate == 0.2
    out = F.dropout(h, rate, module.training)
    assert abs((out == 0).double().mean().item() - 0.2) < 0.01
    assert set(out.unique().tolist()) == {0.0, 1 / 0.8}
    module.eval()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(module(x), module(x))  # eval: deterministic


def test_svm_loss_is_the_notes_hinge():
    net = netspec.load("svm")
    model = netspec.compile(net, dtype="float64", seed=1)
    module = netspec.compile(netspec.load("svm"), dtype="float64", seed=1, target="torch")
    x, y = batch(model.input_shape, 10, n=6)
    assert_same(model, module, numpy_step(model, x, y, True), torch_step(module, x, y, True),
                "svm")


def test_squared_svm_loss():
    text = """network lin {
        input x: [6]
        output x -> fc: linear(4)
        train { loss = svm(delta = 0.5, squared = true) }
    }"""
    model = netspec.compile(netspec.parse(text), dtype="float64")
    module = netspec.compile(netspec.parse(text), dtype="float64", target="torch")
    x, y = batch((6,), 4, n=5)
    assert_same(model, module, numpy_step(model, x, y, True), torch_step(module, x, y, True),
                "squared svm")


def test_every_norm_and_activation_on_images_and_vectors():
    """The ops no bundled spec uses, in one network: layer/instance/group norm, every
    activation, maxout, softmax, avgpool with ceil mode, dilated grouped conv, batch norm on
    vectors."""
    text = """network zoo {
        input x: [4, 9, 9]
        a = x -> c1: conv(8, k=3, p=2, d=2, groups=2) -> ln: layernorm -> e: elu(alpha = 0.7)
        b = x -> c2: conv(8, k=1, bias=false) -> inn: instancenorm -> l: leaky_relu(0.2)
        c = x -> c3: conv(8, k=3, p="same") -> inn2: instancenorm(affine = false) -> s: sigmoid
        output (a, b, c) -> add -> gn: groupnorm(4) -> mo: maxout(2) -> t: tanh
            -> ap: avgpool(3, s=2, p=1, ceil=true) -> sm: softmax
            -> f: flatten -> fc1: linear(12) -> bnv: bn(momentum = 0.3) -> lnv: layernorm
            -> r: relu -> fc2: linear(5)
    }"""
    model = netspec.compile(netspec.parse(text), dtype="float64", seed=2)
    module = netspec.compile(netspec.parse(text), dtype="float64", seed=2, target="torch")
    rng = np.random.default_rng(0)
    state = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in model.state_dict().items()}
    state = {k: np.abs(v) if k.endswith("running_var") else v for k, v in state.items()}
    model.load_state_dict(state)
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    x, y = batch(model.input_shape, 5, n=3)
    for train in (False, True, True):
        assert_same(model, module, numpy_step(model, x, y, train),
                    torch_step(module, x, y, train), f"train={train}")


# ---- structure and state dicts --------------------------------------------------------------

def meta_module(spec, input_shape=None):
    """The generated class built on the meta device: no memory, no init cost."""
    from netspec.codegen import load_source

    source = torchgen.generate(netspec.load(spec), input_shape)
    with torch.device("meta"):
        return load_source(source, "<test>").Network(init=False), source


@pytest.mark.parametrize("spec", BUNDLED + TEST_SPECS, ids=_id)
def test_state_dict_names_and_shapes_are_the_numpy_models(spec):
    net = netspec.load(spec)
    report = netspec.analyze(net)
    module, _ = meta_module(spec)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()
              if not k.endswith("num_batches_tracked")}
    assert shapes == {name: tuple(s.shape) for name, s in torchgen.plan(net).tensors}
    assert sum(p.numel() for p in module.parameters()) == report.totals.params


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_state_dict_loads_strictly(name):
    with torch.device("meta"):
        reference = TORCHVISION[name]()
    module, _ = meta_module(name)
    result = module.load_state_dict(reference.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_numpy_state_dict_loads_strictly_and_round_trips():
    model = netspec.compile(os.path.join(HERE, "specs", "tiny_vgg_bn.net"), seed=4)
    module = netspec.compile(os.path.join(HERE, "specs", "tiny_vgg_bn.net"), target="torch")
    module.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    back = {k: v.numpy() for k, v in module.state_dict().items()}
    report = model.load_state_dict(back)  # num_batches_tracked is ignored by name
    assert report.ok


def test_seed_gives_the_numpy_models_initial_weights():
    for seed in (0, 7):
        model = netspec.compile("lenet5", seed=seed)
        module = netspec.compile("lenet5", seed=seed, target="torch")
        for name, value in model.state_dict().items():
            assert module.state_dict()[name].dtype == torch.float32
            np.testing.assert_array_equal(value, module.state_dict()[name].numpy())


def test_standalone_file_initializes_as_the_spec_says(tmp_path):
    """Network() draws from torch's generator with the spec's rule: he std per weight,
    zero biases, unit batch-norm scales."""
    path = tmp_path / "net.py"
    path.write_text(torchgen.generate(netspec.load(os.path.join(HERE, "specs",
                                                                "tiny_vgg_bn.net"))))
    namespace = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102 - our output
    torch.manual_seed(0)
    module = namespace["Network"]()
    w = module.features["0"].weight
    assert abs(w.std().item() - (2 / 27) ** 0.5) < 0.03
    assert torch.count_nonzero(module.features["0"].bias) == 0
    assert torch.all(module.features["1"].weight == 1)
    w = module.classifier["3"].weight  # he: sqrt(2 / fan_in)
    assert abs(w.std().item() - (2 / 32) ** 0.5) < 0.05
    torch.manual_seed(0)
    again = namespace["Network"]()
    torch.testing.assert_close(again.features["0"].weight, module.features["0"].weight)


# ---- the generated source -------------------------------------------------------------------

def test_generated_files_are_ruff_clean_and_deterministic(tmp_path):
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.skip("ruff is not installed (the test extra installs it)")
    for name in BUNDLED:
        source = torchgen.generate(netspec.load(name))
        assert source == torchgen.generate(netspec.load(name)), name
        (tmp_path / f"{name}.py").write_text(source)
    result = subprocess.run([ruff, "check", "--no-cache", "--isolated", "--line-length", "100",
                             "--select", "E,F,W,I,UP,B", str(tmp_path)],
                            check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_file_imports_only_torch():
    tree = ast.parse(torchgen.generate(netspec.load("googlenet")))
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
               for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules == {"torch"}


def test_forward_is_straight_line():
    tree = ast.parse(torchgen.generate(netspec.load("resnet50")))
    forward = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                   and n.name == "forward")
    assert all(isinstance(s, (ast.Assign, ast.Return, ast.Expr)) for s in forward.body)
    assert sum(isinstance(s, ast.Assign) for s in forward.body) == len(netspec.load("resnet50")) - 1


def test_a_layer_named_like_an_ops_helper_function_keeps_the_helper():
    """alibi_bias (Op.torch_helper_defs) is a name of the generated file, as torch and loss
    are: a layer called so gets another variable, and the attention still calls the helper."""
    net = netspec.parse("""
network n {
    input x: [5] int
    output x -> alibi_bias: embedding(7, 4) -> attn: attention(2, causal=true, alibi=2)
        -> head: linear(7)
}
""", filename="specs/n.net")
    assert "alibi_bias" in torchgen.FILE_NAMES
    module = netspec.compile(net, dtype="float64", target="torch").eval()
    model = netspec.compile(net, dtype="float64")
    x = np.random.default_rng(0).integers(0, 7, (3, 5))
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), model.forward(x),
                               rtol=RTOL, atol=ATOL)


def test_hostile_layer_names_stay_data(tmp_path, monkeypatch):
    import builtins

    from test_codegen import HOSTILE, hostile_net

    monkeypatch.chdir(tmp_path)
    net = hostile_net()
    source = torchgen.generate(net)
    tree = ast.parse(source)
    calls = {n.func.id for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not calls & {"exec", "eval", "__import__", "compile", "open"}
    module = netspec.compile(hostile_net(), dtype="float64", target="torch")
    model = netspec.compile(hostile_net(), dtype="float64")
    assert set(module.state_dict()) - {k for k in module.state_dict()
                                       if k.endswith("num_batches_tracked")} == \
        set(model.state_dict())
    assert {k.rsplit(".", 1)[0] for k in model.state_dict()} >= {HOSTILE[1], HOSTILE[9]}
    x, _ = batch(model.input_shape, 4, n=3)
    module.eval()
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), model.forward(x),
                               rtol=RTOL, atol=ATOL)
    assert not hasattr(builtins, "PWNED") and not os.path.exists("pwned")


def test_a_layer_named_like_a_module_method_is_a_diagnostic():
    net = netspec.parse("network n { input x: [3]\n output x -> train: linear(2) }")
    with pytest.raises(NetspecError, match="`train` is an attribute of torch.nn.Module"):
        torchgen.generate(net)


class _Unlowered(Op):
    name = "unlowered"
    family = "activation"


def _onnx_export(net):
    pytest.importorskip("onnx")
    from netspec import onnxgen

    return onnxgen.export(net)


# Both lowering stages (torch source, ONNX) report an op without its hook the same way.
@pytest.mark.parametrize("target, lower", [("torch", torchgen.generate), ("onnx", _onnx_export)])
def test_an_op_without_a_lowering_is_an_error_naming_op_layer_and_target(target, lower,
                                                                        monkeypatch):
    monkeypatch.setitem(REGISTRY, "unlowered", _Unlowered())
    net = netspec.parse("network n { input x: [3]\n output x -> fc: linear(2) -> act: relu }")
    net.graph.nodes["act"]["op"] = "unlowered"
    with pytest.raises(NetspecError) as info:
        lower(net)
    message = str(info.value.diagnostics[0].message)
    assert "layer `act`" in message and "op `unlowered`" in message and target in message


@pytest.mark.parametrize("op", sorted(n for n in REGISTRY if n != "input"))
def test_every_op_has_a_torch_lowering(op):
    """Parametrized over the registry: a new op without a lowering fails here."""
    assert type(REGISTRY[op]).torch_forward is not Op.torch_forward, \
        f"op `{op}` has no torch lowering (torch_forward in netspec/ops/)"


def test_module_attribute_list_covers_the_installed_torch():
    public = {n for n in set(dir(nn.Module)) | set(dir(nn.ModuleDict)) if not n.startswith("_")}
    assert public <= torchgen.MODULE_ATTRIBUTES


# ---- the command line -------------------------------------------------------------------------

def test_cli_writes_a_module_that_imports_and_runs(tmp_path, capsys):
    from netspec.cli import main

    out = tmp_path / "lenet5.py"
    assert main(["compile", "lenet5", "--target", "torch", "-o", str(out)]) == 0
    assert "(torch)" in capsys.readouterr().err
    namespace = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)  # noqa: S102 - our output
    module = namespace["Network"]()
    assert module(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_cli_rejects_standalone_with_the_torch_target(capsys):
    from netspec.cli import main

    assert main(["compile", "lenet5", "--target", "torch", "--standalone"]) == 2  # usage
    assert "--standalone: is for --target numpy" in capsys.readouterr().err


def test_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    with pytest.raises(NetspecError) as info:
        netspec.compile("lenet5", target="torch")
    assert "netspec[torch]" in info.value.diagnostics[0].hint


def test_numpy_path_never_imports_torch():
    code = ("import sys, netspec; m = netspec.compile('lenet5'); "
            "from netspec import torchgen; torchgen.generate(netspec.load('lenet5')); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---- torch.compile ----------------------------------------------------------------------------

def test_torch_compile_captures_a_generated_resnet18_as_one_graph_equal_to_eager():
    """Dynamo traces the straight-line forward without a graph break (fullgraph=True) and the
    captured graph (aot_eager: forward and backward through AOTAutograd) equals eager in
    float64. Inductor's C++ code generation of the same graph takes about two minutes on this
    machine, so benchmarks/bench_torchgen.py runs it (--compile) instead of the suite."""
    module = netspec.compile("resnet18", input_shape=(3, 32, 32), dtype="float64",
                             target="torch")
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    y = torch.tensor([1, 2])
    module.train()
    scores = compiled(x)
    module.data_loss(scores, y).backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    module.zero_grad()
    expected = module(x)
    module.data_loss(expected, y).backward()
    torch.testing.assert_close(scores, expected, rtol=1e-10, atol=1e-12)
    for name, p in module.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-9, atol=1e-12, msg=name)
