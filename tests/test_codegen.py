"""The code generator and the Model API: generated source (golden, deterministic, ruff-clean,
injection-proof, standalone), every bundled spec compiling and running, caches and memory,
initialization, reinit, state dicts."""
import ast
import builtins
import importlib.util
import inspect
import keyword
import os
import shutil
import subprocess
import sys
import tracemalloc

import networkx as nx
import numpy as np
import pytest

import netspec
from netspec.analysis.fusion import fused_layers
from netspec.cli import main
from netspec.codegen import generate, sanitize
from netspec.diagnostics import NetspecError
from netspec.model import INIT_STD, StateDictError
from netspec.specfiles import library_specs

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
GOLDEN = os.path.join(HERE, "golden", "codegen")
SPECS = os.path.join(HERE, "specs")


def load_file(path: str):
    """Import a generated file as a module of its own."""
    name = "generated_" + os.path.basename(path)[:-3]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def golden_net():
    with open(os.path.join(GOLDEN, "tiny_residual.net"), encoding="utf-8") as f:
        return netspec.parse(f.read(), "tiny_residual.net")


# ---- generated source -----------------------------------------------------------------------

def test_generated_source_matches_golden_file():
    """NETSPEC_UPDATE_GOLDEN=1 rewrites the expected file after a deliberate change."""
    source = generate(golden_net())
    path = os.path.join(GOLDEN, "tiny_residual.py")
    if os.environ.get("NETSPEC_UPDATE_GOLDEN"):
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
    with open(path, encoding="utf-8") as f:
        assert source == f.read()


def test_generation_is_byte_identical_across_runs_and_hash_seeds():
    script = ("import sys, netspec; from netspec.codegen import generate; "
              "sys.stdout.write(generate(netspec.load('googlenet'), standalone=True))")
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True, env=dict(os.environ, PYTHONHASHSEED="12345")).stdout
    outputs = {other} | {generate(netspec.load("googlenet"), standalone=True) for _ in range(2)}
    assert len(outputs) == 1


def test_header_names_spec_and_input_shape():
    head = generate(golden_net()).splitlines()[:3]
    assert "tiny_residual.net" in head[0] and "network tiny_residual" in head[0]
    assert "(N, 2, 6, 6)" in head[1] and "(N, 3)" in head[1]


def test_one_statement_per_layer_named_after_it():
    """Every layer has its statement and cache entry, except a ReLU another kernel applies,
    which a comment names at the statement that applies it."""
    net = golden_net()
    source = generate(net)
    forward = source.split("def _forward")[1].split("def _backward")[0]
    assert "layer1_conv1, c['layer1.conv1'] = conv2d_forward(" in forward
    fused = fused_layers(net)
    assert fused == {"relu": ("bn1", "after"), "layer1.relu": ("layer1.bn1", "after"),
                     "layer1.relu_1": ("layer1.add", "after")}
    for layer in net.order()[1:]:
        assert forward.count(f"c[{layer!r}]") == (0 if layer in fused else 1)
    for layer, (host, _) in fused.items():
        assert f"# {host} applies {layer}, in place on its output (fused)" in forward


def test_fan_out_gradients_are_summed_in_backward():
    backward = generate(golden_net()).split("def _backward")[1]
    assert "d_layer1_bn2, d_relu = add_backward(" in backward
    assert "d_relu = d_relu + part" in backward


RUFF = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed")
@pytest.mark.parametrize("standalone", [False, True], ids=["imports", "standalone"])
def test_generated_code_passes_ruff(tmp_path, standalone):
    nets = {"golden": golden_net(), "googlenet": netspec.load("googlenet"),
            "vgg": netspec.load(os.path.join(SPECS, "tiny_vgg_bn.net")),
            "hostile": hostile_net()}
    files = []
    for name, net in nets.items():
        files.append(tmp_path / f"{name}.py")
        files[-1].write_text(generate(net, standalone=standalone))
    result = subprocess.run([RUFF, "check", "--no-cache", "--config",
                             os.path.join(ROOT, "pyproject.toml"), *map(str, files)],
                            check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- every spec of the library --------------------------------------------------------------

def small_input(name: str) -> tuple[int, ...] | None:
    """The smallest square input from 32 up that an ImageNet-sized spec accepts (a fixed 7x7
    average pool needs the full 224), so the forward stays fast."""
    net = netspec.load(name)
    shape = tuple(net.node(net.inputs[0])["attrs"]["shape"])
    if len(shape) != 3 or shape[1] <= 32:
        return None
    for side in range(32, shape[1], 32):
        try:
            netspec.analyze(netspec.load(name), (shape[0], side, side))
            return (shape[0], side, side)
        except NetspecError:
            continue
    return None


@pytest.mark.parametrize("name", sorted(library_specs()))
def test_bundled_spec_compiles_imports_and_runs(name, tmp_path, capsys):
    net = netspec.load(name)
    shape = small_input(name)
    out = tmp_path / f"{name}.py"
    argv = ["compile", name, "-o", str(out)]
    if shape:
        argv += ["--input", "x".join(map(str, shape))]
    assert main(argv) == 0
    assert out.read_text() == generate(net, shape)
    builtins.compile(generate(net, shape, standalone=True), f"{name}-standalone.py", "exec")

    model = load_file(str(out)).Network()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, (2,) + model.input_shape) if model.input_dtype == "int" else \
        rng.standard_normal((2,) + model.input_shape)  # token ids, or values
    scores = model.forward(x)
    assert scores.shape == (2,) + model.output_shape and scores.dtype == np.float32
    assert np.isfinite(scores).all()
    for t in model.tensors:
        if t.init in INIT_STD:
            assert np.count_nonzero(model.params[t.name]) > 0, t.name


def test_standalone_module_needs_only_numpy(tmp_path):
    """With netspec unimportable, the standalone file still trains; same seed, same model."""
    path = tmp_path / "resnet_standalone.py"
    spec = os.path.join(SPECS, "tiny_resnet_basic.net")
    assert main(["compile", spec, "--standalone", "-o", str(path)]) == 0
    script = f"""
import sys, importlib.util, numpy as np
sys.modules["netspec"] = None  # any `import netspec` now fails
spec = importlib.util.spec_from_file_location("standalone", {str(path)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
model = module.Network(dtype="float64", seed=3)
x = np.random.default_rng(0).standard_normal((4, 3, 12, 12))
loss, grads = model.loss(x, np.array([0, 1, 2, 3]))
np.savez(sys.argv[1], loss=loss, **grads)
"""
    result_file = tmp_path / "result.npz"
    subprocess.run([sys.executable, "-c", script, str(result_file)], check=True)
    model = netspec.compile(spec, dtype="float64", seed=3)
    x = np.random.default_rng(0).standard_normal((4, 3, 12, 12))
    loss, grads = model.loss(x, np.array([0, 1, 2, 3]))
    with np.load(result_file) as result:
        assert result["loss"] == loss
        for name, g in grads.items():
            np.testing.assert_array_equal(result[name], g)


def test_in_process_compile_runs_the_generated_source():
    """One execution path: netspec.compile executes the very text `netspec compile` writes."""
    path = os.path.join(SPECS, "tiny_inception.net")
    model = netspec.compile(path)
    assert model.source == generate(netspec.load(path))
    assert inspect.getsource(type(model)._forward) in model.source
    assert inspect.getsource(type(model)._backward) in model.source


def test_compile_prints_to_stdout_without_output(capsys):
    assert main(["compile", "lenet5"]) == 0
    assert capsys.readouterr().out == generate(netspec.load("lenet5"))


def test_compile_rejects_a_bad_input_shape(capsys):
    with pytest.raises(SystemExit):
        main(["compile", "lenet5", "--input", "3xx"])
    assert "not a shape" in capsys.readouterr().err


# ---- hostile names --------------------------------------------------------------------------

HOSTILE = ['a"; import os; os.system("touch pwned") #', "__import__('builtins').PWNED = 1",
           "self", "class", "c", "p", "1st", "relu_forward", "Model", "x\ny = 1", "'''",
           '"""', "d_x", "ﬁ", "", "part", "train", "layer.0", "layer_0"]


def hostile_net():
    """A parsed network whose layers, network name and path are renamed to hostile strings
    (the language itself only allows identifiers, so this is built on the IR)."""
    text = """network n {
        input x: [2, 4, 4]
        a = x -> c1: conv(3, k=3, p=1) -> b1: bn -> r1: relu
        b = a -> c2: conv(3, k=1) -> r2: tanh
        output (a, b, a) -> s: add -> d: dropout(0.1) -> f: flatten -> fc1: linear(6)
            -> e: elu -> fc2: linear(4) -> i: identity -> sm: softmax -> l: leaky_relu
            -> t1: tanh -> t2: sigmoid -> t3: relu -> t4: identity
    }"""
    net = netspec.parse(text)
    mapping = dict(zip(net.order(), HOSTILE))
    net.graph = nx.relabel_nodes(net.graph, mapping)
    for data in net.graph.nodes.values():
        data["inputs"] = [mapping[i] for i in data["inputs"]]
    net.inputs = [mapping[i] for i in net.inputs]
    net.outputs = [mapping[o] for o in net.outputs]
    net._order = None
    net.name = 'evil"""\nimport os #'
    net.path = "evil\nos.system('x').net"
    return net


def test_hostile_names_cannot_inject_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = hostile_net()
    source = generate(net)
    tree = ast.parse(source)
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [n.module for n in imports] == ["netspec.model", "netspec.runtime"]
    calls = {n.func.id for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not calls & {"exec", "eval", "__import__", "compile", "open"}
    assert all(line.startswith("#") for line in source.splitlines()[:3])

    model = netspec.compile(net, dtype="float64")
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 4))
    loss, grads = model.loss(x, np.array([0, 1, 2]))
    assert np.isfinite(loss)
    assert {name.rsplit(".", 1)[0] for name in grads} == \
        {HOSTILE[1], HOSTILE[2], HOSTILE[4], HOSTILE[9], HOSTILE[11]}
    assert model.name == net.name and model.spec == os.path.basename(net.path)
    assert not hasattr(builtins, "PWNED") and not os.path.exists("pwned")


def test_identifiers_are_safe_and_unique():
    net = hostile_net()
    tree = ast.parse(generate(net))
    forward = next(n for n in ast.walk(tree)
                   if isinstance(n, ast.FunctionDef) and n.name == "_forward")
    targets = [s.targets[0].elts[0].id for s in forward.body
               if isinstance(s, ast.Assign) and isinstance(s.value, ast.Call)]
    # one statement per layer but the input and the ReLUs other kernels apply
    assert len(set(targets)) == len(targets) == len(HOSTILE) - 1 - len(fused_layers(net))
    assert all(t.isidentifier() and t.isascii() and not keyword.iskeyword(t) for t in targets)
    assert sanitize("class") == "t_class" and sanitize("1st") == "t_1st"
    assert sanitize("relu_forward") == "t_relu_forward" and sanitize("layer1.0.conv1") == \
        "t_layer1_0_conv1"


def test_compile_needs_one_input_and_one_output():
    net = netspec.parse("network two { input x: [3]\n output x -> a: linear(2) -> b: relu }")
    net.outputs = ["a", "b"]
    with pytest.raises(NetspecError, match="exactly one of each"):
        generate(net)


def test_unknown_loss_is_a_diagnostic():
    text = 'network n { input x: [3]\n output x -> fc: linear(2)\n train { loss = softmax } }'
    net = netspec.parse(text)
    net.train["loss"] = {"type": "hinge; import os"}
    with pytest.raises(NetspecError, match="unknown loss"):
        generate(net)


# ---- caches and memory -----------------------------------------------------------------------

def chain_model(depth=20):
    text = f"network chain {{ input x: [8, 32, 32]\n output x -> [tanh] * {depth} }}"
    return netspec.compile(netspec.parse(text), dtype="float64")


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_eval_forward_keeps_no_caches_and_frees_activations():
    model = chain_model()
    x = np.random.default_rng(0).standard_normal((8, 8, 32, 32))
    activation = x.nbytes
    assert peak_bytes(lambda: model.forward(x)) < 3 * activation  # not 20 activations
    assert model._cache is None
    with pytest.raises(RuntimeError, match="backward needs a forward"):
        model.backward(np.ones_like(x))
    assert peak_bytes(lambda: model.forward(x, train=True)) > 19 * activation


def test_backward_frees_each_cache_once_used():
    model = chain_model(depth=5)
    x = np.random.default_rng(0).standard_normal((2, 8, 32, 32))
    model.forward(x, train=True)
    cache = model._cache
    sizes = []

    class Recorder(dict):
        def pop(self, key):
            value = super().pop(key)
            sizes.append(len(self))
            return value

    model._cache = Recorder(cache)
    model.backward(np.ones((2, 8, 32, 32)))
    assert sizes == [4, 3, 2, 1, 0] and model._cache is None


def test_keep_cache_allows_an_eval_mode_backward():
    model = netspec.compile(os.path.join(SPECS, "tiny_vgg_bn.net"), dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16))
    before = {k: v.copy() for k, v in model.buffers.items()}
    _, grads = model.loss(x, np.array([1, 2]), train=False)
    assert set(grads) == set(model.params)
    for k, v in model.buffers.items():  # eval mode leaves the running statistics alone
        np.testing.assert_array_equal(v, before[k])


# ---- the Model API ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["tiny_inception", "tiny_resnet_basic", "lenet5"])
def test_backward_without_input_grad_gives_the_same_parameter_gradients(spec):
    """input_grad=False (what training uses) skips the input's gradient: the maxpool branch
    reading the input, the first convs' dx, the shortcut sum, and nothing else."""
    path = os.path.join(SPECS, spec + ".net") if spec.startswith("tiny") else spec
    model = netspec.compile(path, dtype="float64")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3,) + model.input_shape)
    y = rng.integers(0, model.output_shape[0], 3)
    buffers = {k: v.copy() for k, v in model.buffers.items()}
    _, dscores = model.data_loss(model.forward(x, train=True), y)
    dx = model.backward(dscores)
    full = dict(model.grads)
    for k, v in buffers.items():  # the same batch statistics the second time
        model.buffers[k][...] = v
    model.forward(x, train=True)
    assert dx.shape == x.shape and model.backward(dscores, input_grad=False) is None
    assert list(model.grads) == list(full)
    for k, expected in full.items():
        np.testing.assert_array_equal(model.grads[k], expected)


def test_loss_equals_forward_data_loss_backward():
    model = netspec.compile("lenet5", dtype="float64")
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32))
    y = np.array([0, 5, 9])
    loss, grads = model.loss(x, y)
    grads = {k: v.copy() for k, v in grads.items()}
    scores = model.forward(x, train=True)
    expected, dscores = netspec.runtime.softmax_loss(scores, y)
    model.backward(dscores)
    assert loss == expected and list(grads) == list(model.params)
    for k in grads:
        np.testing.assert_array_equal(grads[k], model.grads[k])


def test_predict_is_the_argmax_of_eval_scores():
    model = netspec.compile("mlp")
    x = np.random.default_rng(0).standard_normal((10, 1, 8, 8))
    np.testing.assert_array_equal(model.predict(x, batch_size=3), model.forward(x).argmax(1))


def test_default_dtype_is_float32_throughout():
    model = netspec.compile("digits_cnn")
    _, grads = model.loss(np.zeros((4, 1, 8, 8)), np.arange(4))
    assert {v.dtype for v in [*model.params.values(), *model.buffers.values(),
                              *grads.values()]} == {np.dtype(np.float32)}


def test_forward_checks_the_input_shape():
    with pytest.raises(ValueError, match=r"expected input \(N, 1, 32, 32\)"):
        netspec.compile("lenet5").forward(np.zeros((2, 1, 28, 28)))


def test_init_is_seeded_and_independent_of_dtype():
    a, b = netspec.compile("lenet5", seed=1), netspec.compile("lenet5", seed=1)
    c, d = netspec.compile("lenet5", seed=2), netspec.compile("lenet5", seed=1, dtype="float64")
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
        np.testing.assert_array_equal(a.params[name], d.params[name].astype(np.float32))
    assert not np.array_equal(a.params["c1.weight"], c.params["c1.weight"])
    a.init(2)
    np.testing.assert_array_equal(a.params["c1.weight"], c.params["c1.weight"])


@pytest.mark.parametrize("init, std", [("he", np.sqrt(2 / 1024)),
                                       ("xavier", np.sqrt(2 / (1024 + 512))),
                                       ("normal", 0.01), ("gpt2", 0.02)])
def test_weight_init_scales(init, std):
    text = f'network n {{ input x: [1024]\n output x -> fc: linear(512, init="{init}") }}'
    model = netspec.compile(netspec.parse(text), dtype="float64")
    w = model.params["fc.weight"]
    assert abs(w.std() / std - 1) < 0.01 and abs(w.mean()) < 3 * std / np.sqrt(w.size)
    assert not model.params["fc.bias"].any()


def test_batchnorm_starts_as_identity():
    model = netspec.compile(os.path.join(SPECS, "tiny_vgg_bn.net"))
    assert (model.params["features.1.weight"] == 1).all()
    assert (model.params["features.1.bias"] == 0).all()
    assert (model.buffers["features.1.running_var"] == 1).all()
    assert (model.buffers["features.1.running_mean"] == 0).all()


def test_reinit_one_layer_draws_what_init_would():
    model = netspec.compile("lenet5", seed=0)
    before = model.state_dict()
    model.reinit("c3", seed=7)
    fresh = netspec.compile("lenet5", seed=7)
    for name, value in model.state_dict().items():
        expected = fresh.params[name] if name.startswith("c3.") else before[name]
        np.testing.assert_array_equal(value, expected)


def test_reinit_head_for_a_new_class_count():
    model = netspec.compile("lenet5", dtype="float64")
    assert model.head == "output"
    model.reinit("output", seed=1, num_outputs=3)
    assert model.params["output.weight"].shape == (3, 84) and model.output_shape == (3,)
    x = np.random.default_rng(0).standard_normal((4, 1, 32, 32))
    assert model.forward(x).shape == (4, 3)
    _, grads = model.loss(x, np.array([0, 1, 2, 0]))
    assert grads["output.weight"].shape == (3, 84)
    assert model.state_dict()["output.bias"].shape == (3,)
    with pytest.raises(ValueError, match="only the head"):
        model.reinit("f6", seed=1, num_outputs=3)
    with pytest.raises(KeyError, match="no layer 'nope'"):
        model.reinit("nope")


def test_head_is_found_through_parameter_free_layers_only():
    resnet = netspec.compile(os.path.join(SPECS, "tiny_resnet_basic.net"))
    assert resnet.head == "fc"
    text = "network n { input x: [4]\n output x -> fc: linear(3) -> bn: bn }"
    assert netspec.compile(netspec.parse(text)).head is None


def test_state_dict_copies_in_layer_order_with_torch_names():
    model = netspec.compile(os.path.join(SPECS, "tiny_resnet_basic.net"))
    state = model.state_dict()
    assert list(state)[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                               "bn1.running_var", "layer1.0.conv1.weight"]
    state["conv1.weight"][...] = 5
    assert not (model.params["conv1.weight"] == 5).any()


def test_load_state_dict_reports_and_strict_raises():
    model = netspec.compile("lenet5")
    state = model.state_dict()
    state["extra.weight"] = np.zeros(2)
    state["c1.bias"] = np.zeros(7)
    del state["f6.bias"]
    state["c3.num_batches_tracked"] = np.array(3)  # PyTorch's counter is ignored
    with pytest.raises(StateDictError) as info:
        model.load_state_dict(state)
    report = info.value.report
    assert report.missing == ["f6.bias"]
    assert report.unexpected == ["extra.weight"]
    assert report.mismatched == [("c1.bias", (7,), (6,))]

    state["c1.weight"] = np.ones((6, 1, 5, 5))
    report = model.load_state_dict(state, strict=False)
    assert "c1.weight" in report.loaded and not report.ok
    assert (model.params["c1.weight"] == 1).all()


def test_save_and_load_round_trip_through_npz(tmp_path):
    model = netspec.compile(os.path.join(SPECS, "tiny_vgg_bn.net"), seed=1)
    model.loss(np.random.default_rng(0).standard_normal((4, 3, 16, 16)), np.arange(4))
    path = tmp_path / "weights.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == set(model.state_dict())
    other = netspec.compile(os.path.join(SPECS, "tiny_vgg_bn.net"), seed=2, dtype="float64")
    assert other.load(path).ok
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[name], value.astype(np.float64))
    assert not [p for p in os.listdir(tmp_path) if p != "weights.npz"]  # no temp file left


def test_trainer_facing_attributes():
    model = netspec.compile("mlp")
    assert model.frozen == set() and isinstance(model.rng, np.random.Generator)
    assert model.grads == {}
    assert list(model.params) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                  "fc3.weight", "fc3.bias"]
    assert "mlp" in repr(model) and "50,826 parameters" in repr(model)


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_relus_give_the_same_bits_as_separate_layers(monkeypatch, threads):
    """A ReLU applied inside batch norm, add or max pool (netspec/analysis/fusion.py) gives
    the loss and every gradient of the same network with the ReLU as its own layer, bit for
    bit, whole or split over threads."""
    spec = """import "blocks/resnet.net"
    network fused_check {
        input x: [3, 12, 12]
        output x -> conv(8, k=3, p=1, bias=false) -> bn -> relu -> maxpool(3, s=2, p=1)
                 -> basic(8) -> conv(8, k=3, p=1) -> relu -> maxpool(2)
                 -> flatten -> linear(5)
    }"""
    fused = netspec.compile(netspec.parse(spec), seed=3)
    assert len(fused_layers(fused.network)) == 4 and "relu_forward" not in fused.source
    monkeypatch.setattr("netspec.codegen.fused_layers", lambda net: {})
    separate = netspec.compile(netspec.parse(spec), seed=3)
    assert separate.source.count("relu_forward(") == 4
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 12, 12)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    with netspec.threads(threads):
        (loss_a, grads_a), (loss_b, grads_b) = fused.loss(x, y), separate.loss(x, y)
    assert loss_a == loss_b and grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert np.array_equal(grads_a[name], grads_b[name]), name
    for name in fused.buffers:  # batch norm's running statistics
        assert np.array_equal(fused.buffers[name], separate.buffers[name]), name
