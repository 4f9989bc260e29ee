"""Lower stage: AST -> IR. Layer names, repeats, blocks, conditionals, imports, attributes."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import netspec
from netspec import verify
from netspec.diagnostics import NetspecError
from netspec.lower import MAX_LAYERS, MAX_REPEAT, library_dir

DOCS = Path(__file__).parent.parent / "docs" / "language.md"


def lower(text: str, **kw) -> netspec.Network:
    net = netspec.parse(text, "t.net", **kw)
    verify(net)
    return net


def names(text: str) -> list[str]:
    return list(lower(text).graph.nodes)


def net_of(pipeline: str, shape: str = "[3, 8, 8]", blocks: str = "") -> str:
    return f"{blocks}\nnetwork n {{\n  input x: {shape}\n  output x -> {pipeline}\n}}\n"


def lower_error(text: str) -> str:
    with pytest.raises(NetspecError) as info:
        netspec.parse(text, "t.net")
    return str(info.value)


BASIC = """
block basic(c, s = 1) {
    input x
    y = x -> conv1: conv(c, k=3, s=s, p=1, bias=false) -> bn1: bn -> relu
          -> conv2: conv(c, k=3, p=1, bias=false) -> bn2: bn
    if s != 1 {
        shortcut = x -> downsample: [conv(c, k=1, s=s, bias=false) -> bn]
    } else {
        shortcut = x
    }
    output y + shortcut -> relu
}
"""


# ---- naming

def test_unlabelled_layers_are_named_after_their_op_made_unique():
    assert names(net_of("conv(8, k=3) -> relu -> conv(8, k=3) -> relu")) == [
        "x", "conv", "relu", "conv_1", "relu_1"]


def test_aliases_name_layers_by_their_canonical_op():
    assert names(net_of("bn -> fc(10)")) == ["x", "batchnorm", "linear"]


def test_labels_name_layers():
    assert names(net_of("conv1: conv(8, k=3) -> bn1: bn -> relu")) == [
        "x", "conv1", "bn1", "relu"]


def test_a_label_is_never_reused_by_an_automatic_name():
    assert names(net_of("relu_1: relu -> relu -> relu -> relu")) == [
        "x", "relu_1", "relu", "relu_2", "relu_3"]


def test_labelled_sequence_numbers_its_layers_like_nn_sequential():
    assert names(net_of("features: [conv(8, k=3) -> relu -> maxpool(2)] -> fc: linear(10)")) \
        == ["x", "features.0", "features.1", "features.2", "fc"]


def test_unlabelled_group_inside_a_sequence_continues_its_numbering():
    # VGG: [conv -> relu] * 2 inside `features` gives features.0 .. features.3.
    assert names(net_of("features: [[conv(8, k=3, p=1) -> relu] * 2 -> maxpool(2)]")) == [
        "x", "features.0", "features.1", "features.2", "features.3", "features.4"]


def test_labels_inside_a_sequence_are_prefixed():
    assert names(net_of("head: [fc: linear(10) -> act: [relu -> tanh]]")) == [
        "x", "head.fc", "head.act.0", "head.act.1"]


def test_labelled_repeat_numbers_each_copy():
    assert names(net_of("stage: relu * 3")) == ["x", "stage.0", "stage.1", "stage.2"]


def test_labelled_repeat_of_a_sequence_numbers_copies_then_layers():
    assert names(net_of("stage: [relu -> tanh] * 2")) == [
        "x", "stage.0.0", "stage.0.1", "stage.1.0", "stage.1.1"]


def test_block_layers_are_prefixed_by_the_instance_like_torchvision():
    got = names(net_of("layer1: basic(8) * 2 -> layer2: basic(16, s=2)", blocks=BASIC))
    assert got[1:8] == ["layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu", "layer1.0.conv2",
                        "layer1.0.bn2", "layer1.0.add", "layer1.0.relu_1"]
    assert "layer2.0.downsample.0" not in got  # a single, unrepeated instance: no index
    assert ["layer2.downsample.0", "layer2.downsample.1"] == \
        [n for n in got if "downsample" in n]


def test_unlabelled_block_instances_are_named_after_the_block():
    got = names(net_of("basic(8) -> basic(8)", blocks=BASIC))
    assert "basic.conv1" in got and "basic_1.conv1" in got


def test_input_layer_is_named_after_the_input():
    net = lower(net_of("relu"))
    assert net.inputs == ["x"] and net.node("x")["op"] == "input"
    assert net.node("x")["attrs"] == {"shape": (3, 8, 8), "dtype": "float"}


def test_same_tensor_name_in_two_block_instances_does_not_clash():
    got = names(net_of("a: basic(8) -> b: basic(8)", blocks=BASIC))
    assert "a.conv1" in got and "b.conv1" in got


# ---- attributes

def test_defaults_are_filled_and_pairs_resolved():
    attrs = lower(net_of("conv(8, k=3)")).node("conv")["attrs"]
    assert attrs == {"out": 8, "k": (3, 3), "s": (1, 1), "p": (0, 0), "d": (1, 1),
                     "groups": 1, "bias": True, "init": "auto"}


def test_positional_and_keyword_arguments_bind_alike():
    a = lower(net_of("conv(8, 3, 2, 1)")).node("conv")["attrs"]
    b = lower(net_of("conv(out=8, k=3, s=2, p=1)")).node("conv")["attrs"]
    assert a == b


def test_same_padding_is_resolved_for_odd_kernels():
    attrs = lower(net_of('conv(8, k=[3, 5], p="same")')).node("conv")["attrs"]
    assert attrs["p"] == (1, 2)


def test_integer_argument_accepted_where_a_float_is_expected():
    assert lower(net_of("leaky_relu(0)")).node("leaky_relu")["attrs"]["slope"] == 0.0


def test_arithmetic_on_parameters():
    text = """network n(c = 64) {
        input x: [3, 8, 8]
        let half = c // 2
        output x -> conv(c * 4, k=1) -> conv(half, k=1) -> conv(c % 5 + 2 ** 3, k=1)
    }"""
    net = lower(text)
    assert [net.node(n)["attrs"]["out"] for n in ("conv", "conv_1", "conv_2")] == [256, 32, 12]


def test_network_parameters_can_be_overridden():
    text = "network n(num_classes = 1000) {\n input x: [3]\n output x -> fc: linear(num_classes)\n}"
    assert lower(text).node("fc")["attrs"]["out"] == 1000
    net = lower(text, overrides={"num_classes": 10})
    assert net.node("fc")["attrs"]["out"] == 10 and net.params == {"num_classes": 10}


def test_unknown_override_is_an_error():
    text = "network n(num_classes = 1000) {\n input x: [3]\n output x\n}"
    with pytest.raises(NetspecError, match="no parameter `num_class`"):
        netspec.parse(text, overrides={"num_class": 10})


def test_block_parameter_defaults_may_use_earlier_parameters():
    blocks = "block wide(c, out = c * 2) {\n input x\n output x -> conv(out, k=1)\n}"
    assert lower(net_of("wide(8)", blocks=blocks)).node("wide.conv")["attrs"]["out"] == 16


# ---- repeats and the index `i`

def test_repeat_index_counts_from_zero():
    net = lower(net_of("stage: conv(8 * (i + 1), k=1) * 3"))
    assert [net.node(f"stage.{k}")["attrs"]["out"] for k in range(3)] == [8, 16, 24]


def test_first_block_of_a_stage_strides_via_the_repeat_index():
    net = lower(net_of("layer2: basic(16, s = 2 if i == 0 else 1) * 2", blocks=BASIC))
    assert net.node("layer2.0.conv1")["attrs"]["s"] == (2, 2)
    assert net.node("layer2.1.conv1")["attrs"]["s"] == (1, 1)
    assert "layer2.0.downsample.0" in net.graph and "layer2.1.downsample.0" not in net.graph


def test_repeat_index_reaches_into_a_repeated_sequence():
    net = lower(net_of("s: [conv(4 + i, k=1) -> relu] * 2"))
    assert [net.node(n)["attrs"]["out"] for n in ("s.0.0", "s.1.0")] == [4, 5]


def test_inner_repeat_index_shadows_the_outer():
    net = lower(net_of("s: [t: conv(10 * (i + 1), k=1) * 2] * 2"))
    assert [net.node(f"s.{a}.t.{b}")["attrs"]["out"] for a in (0, 1) for b in (0, 1)] == \
        [10, 20, 10, 20]


def test_repeat_count_may_be_a_parameter():
    text = "network n(depth = 4) {\n input x: [3]\n output x -> s: relu * depth\n}"
    assert len(lower(text)) == 5


def test_repeat_count_limits():
    assert f"from 1 to {MAX_REPEAT}" in lower_error(net_of(f"relu * {MAX_REPEAT + 1}"))
    assert "not true" in lower_error(net_of("relu * true"))


def test_nested_repeats_past_the_layer_limit_stop_early():
    side = int(MAX_LAYERS ** 0.5) + 10
    message = lower_error(net_of(f"[[relu * {side}] * {side}]"))
    assert f"more than the limit of {MAX_LAYERS:,}" in message


# ---- conditionals and values

def test_if_else_picks_a_branch_per_instance():
    net = lower(net_of("a: basic(8) -> b: basic(8, s=2)", blocks=BASIC))
    assert "a.downsample.0" not in net.graph and "b.downsample.0" in net.graph


def test_else_if_chain():
    text = """network n(mode = "b") {
        input x: [3]
        if mode == "a" { y = x -> relu } else if mode == "b" { y = x -> tanh }
        else { y = x -> sigmoid }
        output y
    }"""
    assert names(text) == ["x", "tanh"]


def test_boolean_operators_short_circuit():
    # `proj` is never evaluated when the left side decides: an unset name is no error.
    text = "network n {\n input x: [3]\n if true or undefined { y = x } else { y = x }\n output y\n}"
    assert names(text) == ["x"]


def test_strings_compare_and_concatenate():
    text = 'network n(a = "re") {\n input x: [3]\n if a + "lu" == "relu" { y = x -> relu }' \
           ' else { y = x }\n output y\n}'
    assert names(text) == ["x", "relu"]


def test_division_is_true_division_and_floor_division_is_explicit():
    net = lower(net_of("dropout(1 / 4) -> leaky_relu(7 // 2)"))
    assert net.node("dropout")["attrs"]["p"] == 0.25
    assert net.node("leaky_relu")["attrs"]["slope"] == 3.0


# ---- graph structure

def test_edges_follow_the_pipeline():
    net = lower(net_of("conv(8, k=1) -> relu"))
    assert list(net.graph.edges) == [("x", "conv"), ("conv", "relu")]
    assert net.outputs == ["relu"]


def test_concat_keeps_the_tuple_order_on_inputs_and_edges():
    text = """network n {
        input x: [3, 8, 8]
        a = x -> conv(4, k=1)
        b = x -> conv(8, k=1)
        output (b, a, x) -> concat
    }"""
    net = lower(text)
    assert net.node("concat")["inputs"] == ["conv_1", "conv", "x"]
    assert [net.graph.edges[u, "concat"]["index"] for u in ("conv_1", "conv", "x")] == [0, 1, 2]


def test_add_of_a_tensor_with_itself_lists_it_twice_with_one_edge():
    net = lower("network n {\n input x: [3]\n output x + x\n}")
    assert net.node("add")["inputs"] == ["x", "x"]
    assert net.graph.number_of_edges() == 1


def test_residual_add_merges_the_block_input():
    net = lower(net_of("b: basic(3)", blocks=BASIC))
    assert net.node("b.add")["inputs"] == ["b.bn2", "x"]


def test_named_tensors_branch_and_merge():
    text = """network n {
        input x: [3, 8, 8]
        y = x -> conv(3, k=3, p=1)
        z = y + x -> relu
        output z
    }"""
    net = lower(text)
    assert set(net.graph.predecessors("add")) == {"conv", "x"}


def test_several_inputs_and_outputs():
    text = """network n {
        input image: [3, 8, 8]
        input extra: [10]
        a = image -> flatten -> fc: linear(10)
        output a + extra
        output extra -> relu
    }"""
    net = lower(text)
    assert net.inputs == ["image", "extra"] and net.outputs == ["add", "relu"]


def test_order_is_topological_and_follows_the_spec_on_ties():
    net = lower(net_of("b: basic(8, s=2)", blocks=BASIC))
    order = net.order()
    assert order[0] == "x" and order[-1] == "b.relu_1"
    assert all(order.index(u) < order.index(v) for u, v in net.graph.edges)


def test_spans_point_at_the_call_and_paths_at_the_block_instances():
    net = lower(net_of("layer1: basic(8) * 2", blocks=BASIC))
    node = net.node("layer1.1.conv1")
    assert node["span"].source.line(node["span"].line).strip().startswith("y = x -> conv1")
    (frame,) = node["path"]
    assert (frame.block, frame.instance) == ("basic", "layer1.1")
    assert dict(frame.args) == {"c": 8, "s": 1}
    assert frame.describe() == f"in layer1.1 (basic, t.net:{frame.span.line})"
    assert net.node("x")["path"] == ()


def test_nested_blocks_record_the_whole_path():
    blocks = BASIC + "block stage(c) {\n input x\n output x -> first: basic(c)\n}"
    net = lower(net_of("s: stage(8)", blocks=blocks))
    assert [f.instance for f in net.node("s.first.conv1")["path"]] == ["s", "s.first"]


def test_lowering_is_deterministic():
    a, b = netspec.load("googlenet"), netspec.load("googlenet")
    assert list(a.graph.nodes(data="attrs")) == list(b.graph.nodes(data="attrs"))
    assert list(a.graph.edges(data="index")) == list(b.graph.edges(data="index"))


# ---- networks, train sections, warnings

def test_the_last_network_is_lowered_unless_one_is_named():
    text = "network a {\n input x: [3]\n output x\n}\nnetwork b {\n input x: [3]\n output x\n}"
    assert netspec.parse(text).name == "b"
    assert netspec.parse(text, network="a").name == "a"
    with pytest.raises(NetspecError, match="did you mean `a`"):
        netspec.parse(text, network="aa")


def test_train_section_values_and_named_settings():
    net = netspec.load("digits_cnn")
    assert net.train["optimizer"] == {"type": "adam", "lr": 0.002}
    assert net.train["loss"] == {"type": "softmax"} and net.train["epochs"] == 30
    assert net.train_spans["epochs"].line > 1


def test_train_settings_may_use_network_parameters():
    text = "network n(e = 5) {\n input x: [3]\n output x\n train { epochs = e * 2 }\n}"
    assert netspec.parse(text).train == {"epochs": 10}


def test_warnings_are_collected_not_raised():
    text = "network n {\n input x: [3]\n unused = x -> relu\n output x -> tanh\n}"
    (w,) = lower(text).warnings
    assert w.severity == "warning" and "`unused` is never used" in w.message


def test_a_warning_inside_a_repeated_block_is_reported_once():
    blocks = "block b {\n input x\n side = x -> relu\n output x -> tanh\n}"
    assert len(lower(net_of("s: b * 4", blocks=blocks)).warnings) == 1


# ---- imports

def write(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)


def test_import_resolves_relative_to_the_importing_file(tmp_path):
    write(tmp_path, {"lib/act.net": 'import "more.net"\nblock act {\n input x\n output x -> more\n}',
                     "lib/more.net": "block more {\n input x\n output x -> relu\n}",
                     "net.net": 'import "lib/act.net"\n' + net_of("act")})
    assert list(netspec.load(str(tmp_path / "net.net")).graph.nodes) == ["x", "act.more.relu"]


def test_import_falls_back_to_the_bundled_library(tmp_path):
    write(tmp_path, {"net.net": 'import "blocks/resnet.net"\n' + net_of("basic(3)")})
    assert "basic.conv1" in netspec.load(str(tmp_path / "net.net")).graph
    assert (Path(library_dir()) / "blocks" / "resnet.net").is_file()


def test_a_file_imported_twice_by_a_diamond_defines_its_blocks_once(tmp_path):
    write(tmp_path, {"base.net": "block base {\n input x\n output x -> relu\n}",
                     "a.net": 'import "base.net"\nblock a {\n input x\n output x -> base\n}',
                     "b.net": 'import "base.net"\nblock b {\n input x\n output x -> base\n}',
                     "net.net": 'import "a.net"\nimport "b.net"\n' + net_of("a -> b")})
    assert len(netspec.load(str(tmp_path / "net.net"))) == 3


def test_an_import_cycle_is_an_error_naming_the_chain(tmp_path):
    write(tmp_path, {"a.net": 'import "b.net"\n' + net_of("relu"),
                     "b.net": 'import "c.net"\n', "c.net": 'import "a.net"\n'})
    with pytest.raises(NetspecError, match=r"import cycle: a.net -> b.net -> c.net -> a.net"):
        netspec.load(str(tmp_path / "a.net"))


def test_a_file_importing_itself_is_a_cycle(tmp_path):
    write(tmp_path, {"a.net": 'import "a.net"\n' + net_of("relu")})
    with pytest.raises(NetspecError, match="import cycle: a.net -> a.net"):
        netspec.load(str(tmp_path / "a.net"))


def test_a_syntax_error_in_an_imported_file_is_located_there(tmp_path):
    write(tmp_path, {"lib.net": "block b {\n input x\n output x ->\n}",
                     "net.net": 'import "lib.net"\n' + net_of("b")})
    message = lower_error_file(tmp_path / "net.net")
    assert re.match(r"\S*lib.net:4:1: error: unexpected `}`", message)


def test_an_unreadable_import_is_an_error(tmp_path):
    (tmp_path / "bin.net").write_bytes(b"\xff\xfe\x00")
    write(tmp_path, {"net.net": 'import "bin.net"\n' + net_of("relu")})
    assert 'cannot read import "bin.net"' in lower_error_file(tmp_path / "net.net")


def lower_error_file(path: Path) -> str:
    with pytest.raises(NetspecError) as info:
        netspec.load(str(path))
    return str(info.value)


# ---- the language reference cannot rot: every ```net example in it lowers cleanly

def doc_examples() -> list[tuple[int, str]]:
    text = DOCS.read_text()
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"```net\n(.*?)```", text, re.DOTALL)]


def test_language_doc_has_examples():
    assert len(doc_examples()) >= 15


@pytest.mark.parametrize("line, example", doc_examples(), ids=lambda v: str(v)[:12])
def test_language_doc_example_lowers(line, example, monkeypatch):
    monkeypatch.chdir(DOCS.parent)  # imports resolve as they would beside the doc
    net = netspec.parse(example, f"docs/language.md:{line}")
    verify(net)
    assert not net.warnings, [w.render() for w in net.warnings]
    netspec.analyze(net)  # and the shapes work out: the examples are real networks


def test_language_doc_lists_every_op_and_alias():
    from netspec.ops import REGISTRY

    table = DOCS.read_text().split("## Built-in ops", 1)[1].split("## Diagnostics", 1)[0]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", table, re.MULTILINE)}
    for op in REGISTRY.values():
        if op.name == "input":
            continue
        assert op.name in rows, op.name
        for alias in op.aliases:
            assert f"`{alias}`" in rows[op.name], (op.name, alias)
        for arg in op.args:
            assert f"`{arg.name}" in rows[op.name], (op.name, arg.name)


def test_imports_nested_too_deeply_are_an_error(tmp_path):
    chain = {f"m{k}.net": f'import "m{k + 1}.net"\n' for k in range(40)}
    chain["m40.net"] = "block leaf {\n input x\n output x\n}"
    chain["net.net"] = 'import "m0.net"\n' + net_of("leaf")
    write(tmp_path, chain)
    assert "imports nested too deeply" in lower_error_file(tmp_path / "net.net")
