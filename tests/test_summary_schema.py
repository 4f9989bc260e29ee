"""The JSON summary of every bundled spec (and symbolic ones) validates against the
published schema, docs/summary.schema.json, and its layer inputs rebuild the IR's edges."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import netspec

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).parent.parent
SCHEMA = json.loads((ROOT / "docs" / "summary.schema.json").read_text(encoding="utf-8"))
SPECS = sorted(p.stem for p in (ROOT / "specs").glob("*.net"))


def test_the_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("name", SPECS)
def test_every_bundled_spec_validates(name):
    net = netspec.load(name)
    doc = netspec.analyze(net, batch=4).to_dict()
    jsonschema.validate(doc, SCHEMA)
    jsonschema.validate(netspec.analyze(netspec.load(name), flops="exact").to_dict(depth=0),
                        SCHEMA)
    edges = {(i, layer["name"]) for layer in doc["layers"] for i in layer["inputs"]}
    assert edges == set(net.graph.edges)  # a tool can rebuild the graph


@pytest.mark.parametrize("name", ["resnet18", "vgg11"])
def test_symbolic_documents_validate(name):
    doc = netspec.analyze(netspec.load(name), input_shape=(3, "H", "W")).to_dict(depth=0)
    jsonschema.validate(doc, SCHEMA)
    assert "H" in doc["totals"]["macs"] and "W" in doc["totals"]["macs"]


def test_the_schema_rejects_a_broken_document():
    doc = netspec.analyze(netspec.load("lenet5")).to_dict()
    del doc["layers"][1]["inputs"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMA)
