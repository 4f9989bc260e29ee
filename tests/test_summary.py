"""`netspec summary`: the table, depth collapsing, the JSON schema, CSV and Markdown, errors.

NETSPEC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_summary.py rewrites the golden
files after a deliberate change of the output.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

import netspec
from netspec.analysis import SCHEMA_VERSION, rows
from netspec.cli import main

ROOT = Path(__file__).parent.parent
GOLDEN = Path(__file__).parent / "golden" / "analysis"
UPDATE = bool(os.environ.get("NETSPEC_UPDATE_GOLDEN"))


def summary(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["summary", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text()


def test_lenet5_table_matches_golden(capsys):
    code, out, err = summary(capsys, "lenet5")
    assert (code, err) == (0, "")
    check_golden("summary_lenet5.txt", out)


def test_lenet5_json_matches_golden(capsys):
    code, out, _ = summary(capsys, "lenet5", "--format", "json")
    assert code == 0
    check_golden("summary_lenet5.json", out)


def test_table_states_totals_and_the_mac_convention(capsys):
    _, out, _ = summary(capsys, "resnet50", "--depth", "0")
    assert "Params: 25,557,032 (97.49 MiB): 25,557,032 trainable, 0 frozen" in out
    assert "MACs: 4,089,184,256 (4.09G); FLOPs: 8,178,368,512 (8.18G)" in out
    assert ("Convention: --flops 2mac: 1 MAC = 1 multiply-add = 2 FLOPs (PyTorch's "
            "FlopCounterMode, DeepSpeed); MACs count conv and linear weights, bias "
            "excluded, as torchvision's `_ops`") in out
    assert "Training step estimate (batch 1, float32, sgd)" in out


def test_depth_0_collapses_each_block_instance_into_one_row(capsys):
    _, out, _ = summary(capsys, "resnet50", "--depth", "0")
    lines = out.splitlines()
    row = next(line for line in lines if line.startswith("layer1.0 "))
    assert "bottleneck(c=64, s=1, proj=true)" in row and "75,008" in row
    assert not any("layer1.0.conv1" in line for line in lines)


def test_nested_blocks_indent_by_depth(capsys):
    # GoogLeNet: inception instances hold conv_bn instances.
    _, out, _ = summary(capsys, "googlenet")
    assert "\n  inception3a.branch1  " in out
    assert "\n    inception3a.branch1.conv  " in out
    _, out, _ = summary(capsys, "googlenet", "--depth", "1")
    assert "\n  inception3a.branch1  " in out
    assert "inception3a.branch1.conv" not in out


@pytest.mark.parametrize("depth", [None, 0, 1, 2])
def test_leaf_rows_partition_the_network_at_every_depth(depth):
    a = netspec.analyze(netspec.load("googlenet"))
    leaves = [r for r in rows(a, depth) if r.leaf]
    assert sum(r.count.params for r in leaves) == a.totals.params
    assert sum(r.macs for r in leaves) == a.totals.macs


def test_a_collapsed_block_reports_its_output_tensor():
    a = netspec.analyze(netspec.load("resnet18"))
    block = next(r for r in rows(a, 0) if r.name == "layer2.0")
    assert (block.kind, block.output_shape) == ("block", (128, 28, 28))
    assert block.receptive_field == a.layer("layer2.0.relu_1").receptive_field


def test_json_has_the_documented_schema(capsys):
    _, out, _ = summary(capsys, "resnet18", "--format", "json", "--batch", "8")
    doc = json.loads(out)
    assert doc["schema_version"] == SCHEMA_VERSION == 1
    assert {"network", "input", "batch", "dtype", "convention", "layers", "totals", "output",
            "outputs", "training_memory", "warnings"} <= doc.keys()
    assert {"params", "trainable_params", "frozen_params", "buffers", "macs",
            "flops"} <= doc["totals"].keys()
    layer = doc["layers"][1]
    assert layer["name"] == "conv1" and layer["op"] == "conv 7x7/2, 64"
    assert layer["output_shape"] == [64, 112, 112]
    assert (layer["params"], layer["macs"]) == (9_408, 118_013_952)
    assert layer["receptive_field"] == {"size": 7, "jump": 2, "start": 0, "padding": 3}
    # After global pooling over layer4's 7x7 grid: 435 + 6 * 32, centred at 3 * 32.
    assert doc["output"] == {"shape": [1000], "receptive_field": {
        "size": 627, "jump": 32, "start": 96, "padding": 217}}
    assert doc["totals"]["params"] == 11_689_512 and doc["totals"]["buffers"] == 9_600
    assert doc["training_memory"]["batch"] == 8


def test_json_layers_follow_depth_and_sum_to_the_totals(capsys):
    _, out, _ = summary(capsys, "resnet50", "--format", "json", "--depth", "0")
    doc = json.loads(out)
    kinds = {layer["name"]: layer["kind"] for layer in doc["layers"]}
    assert kinds["layer3.5"] == "block" and kinds["fc"] == "layer"
    assert sum(layer["params"] for layer in doc["layers"]) == doc["totals"]["params"]


def test_non_square_fields_are_h_w_pairs_in_json():
    a = netspec.analyze(netspec.parse("network n { input x: [3, 16, 16]\n"
                                      "output x -> c: conv(4, k=[3, 1], p=[1, 0]) }"))
    layer = a.to_dict()["layers"][1]
    assert layer["receptive_field"]["size"] == [3, 1]


def test_csv_has_one_row_per_layer_with_numbers(capsys):
    _, out, _ = summary(capsys, "vgg16", "--format", "csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert len(table) == len(netspec.load("vgg16"))
    assert sum(int(r["params"]) for r in table) == 138_357_544
    pool5 = next(r for r in table if r["name"] == "features.30")
    assert (pool5["output_shape"], pool5["rf_size"], pool5["rf_jump"]) == ("512x7x7", "212",
                                                                            "32")


def test_markdown_is_a_pipe_table(capsys):
    _, out, _ = summary(capsys, "lenet5", "--format", "markdown")
    lines = out.splitlines()
    assert lines[0] == "## lenet5: input x [1, 32, 32], batch 1, float32"
    assert lines[2].startswith("| Layer | Op | Output | Params |")
    assert lines[3].startswith("| --- | --- | --- | ---: |")
    assert "- Params: 61,706" in out


def test_input_freeze_count_and_batch_options(capsys):
    _, out, _ = summary(capsys, "resnet18", "--format", "json", "--input", "3x64x64",
                        "--freeze", "layer1", "fc.*", "--count", "all")
    doc = json.loads(out)
    assert doc["input"] == {"x": [3, 64, 64]}
    assert doc["layers"][1]["output_shape"] == [64, 32, 32]
    assert doc["totals"]["frozen_params"] == 147_968 + 513_000
    assert doc["totals"]["flops"] > 2 * doc["totals"]["macs"]


@pytest.mark.parametrize("argv, message", [
    (["--input", "3x2.5"], "argument --input: '3x2.5' is not a shape"),
    (["--at", "H=0"], "argument --at: 'H=0' is not a list of sizes"),
    (["--input", "0x5"], "argument --input: '0x5' is not a shape"),
    (["--batch", "0"], "argument --batch: '0' is not a positive integer"),
    (["--depth", "-1"], "argument --depth: '-1' is not a depth"),
])
def test_bad_options_are_usage_errors_not_tracebacks(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["summary", "lenet5", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_shape_error_is_a_rendered_diagnostic(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = summary(capsys, "tests/specs/bad_residual.net")
    assert (code, out) == (1, "")
    assert err == (GOLDEN / "shape_error_in_block.txt").read_text()


def test_an_input_too_small_for_the_network_is_a_diagnostic(capsys):
    code, _, err = summary(capsys, "lenet5", "--input", "1x8x8")
    assert code == 1
    assert "error: c3: a 5x5 kernel does not fit the 2x2 input padded to 2x2" in err


def test_warnings_go_to_stderr_and_into_the_json(capsys):
    spec = str(ROOT / "tests" / "specs" / "alexnet_v2_slim.net")
    code, out, err = summary(capsys, spec, "--format", "json")
    assert code == 0
    assert err.count("warning: ") == 4
    assert "conv1: (H + 2P - F) / S = (224 + 0 - 11) / 4 is not an integer" in err
    assert len(json.loads(out)["warnings"]) == 4
