"""Computed labels (`denselayer{i + 1}: dense_layer(32) * 6`): names built from the repeat
index and block parameters, checked against torchvision's DenseNet state-dict names."""
import re
from pathlib import Path

import numpy as np
import pytest

import netspec
from netspec.diagnostics import NetspecError

DOCS = Path(__file__).parent.parent / "docs" / "language.md"


def densenet_example() -> str:
    text = DOCS.read_text()
    return next(m.group(1) for m in re.finditer(r"```net\n(.*?)```", text, re.DOTALL)
                if "densenet_start" in m.group(1))


def names(text: str) -> list[str]:
    return netspec.parse(text).order()[1:]


def test_repeat_index_names_each_copy_without_a_suffix():
    text = "network n { input x: [4] output x -> fc{i + 1}: linear(4) * 3 }"
    assert names(text) == ["fc1", "fc2", "fc3"]


def test_computed_parts_mix_with_dots_text_and_sequences():
    text = """network n { input x: [4, 8, 8]
        output x -> features: [conv(4, k=1) -> block{i}_{2 * i}x.conv: conv(4, k=1) * 2]
                 -> head.part{1 + 1}: flatten }"""
    assert names(text) == ["features.0", "features.block0_0x.conv", "features.block1_2x.conv",
                           "head.part2"]


def test_block_parameters_and_strings_can_build_a_label():
    text = """block b(n, kind = "conv") { input x  output x -> the_{kind}{n}: conv(n, k=1) }
        network n { input x: [4, 8, 8] output x -> b(8) -> up: b(16, kind = "proj") }"""
    assert names(text) == ["b.the_conv8", "up.the_proj16"]


def test_a_computed_part_is_glued_to_its_text():
    # `denselayer {i}` (a space before the brace) is not a label: the brace must touch.
    with pytest.raises(NetspecError):
        netspec.parse("network n { input x: [4] output x -> fc {i}: linear(4) * 2 }")


@pytest.mark.parametrize("label, message", [
    ("fc{i - 1}", "non-negative integer or a name"),
    ("fc{0.5}", "non-negative integer or a name"),
    ('fc{"a-b"}', "non-negative integer or a name"),
    ("fc{i % 2}", "duplicate layer name `fc0`"),
])
def test_bad_computed_labels_are_located_errors(label, message):
    text = f"network n {{ input x: [4]\n output x -> {label}: linear(4) * 3 }}"
    with pytest.raises(NetspecError) as err:
        netspec.parse(text)
    d = err.value.diagnostics[0]
    assert message in d.message and d.span.line == 2


def test_densenet_block_matches_torchvision_names_shapes_and_outputs():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class DenseLayer(nn.Module):  # torchvision.models.densenet._DenseLayer (eval, no dropout)
        def __init__(self, c_in, growth=32, bn_size=4):
            super().__init__()
            self.norm1, self.relu1 = nn.BatchNorm2d(c_in), nn.ReLU()
            self.conv1 = nn.Conv2d(c_in, bn_size * growth, 1, bias=False)
            self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU()
            self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

        def forward(self, x):
            y = self.conv1(self.relu1(self.norm1(x)))
            return torch.cat([x, self.conv2(self.relu2(self.norm2(y)))], 1)

    class DenseBlock(nn.ModuleDict):
        def __init__(self, n, c_in, growth=32):
            super().__init__()
            for k in range(n):
                self.add_module(f"denselayer{k + 1}", DenseLayer(c_in + k * growth, growth))

        def forward(self, x):
            for layer in self.values():
                x = layer(x)
            return x

    twin = nn.Module()
    twin.denseblock1 = DenseBlock(6, 64)
    model = netspec.compile(netspec.parse(densenet_example()), input_shape=(64, 6, 6),
                            dtype="float64")
    ours = model.state_dict()
    theirs = {k: v for k, v in twin.double().state_dict().items()
              if not k.endswith("num_batches_tracked")}
    assert {k: v.shape for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.items()}, strict=False)
    x = np.random.default_rng(0).standard_normal((2, 64, 6, 6))
    with torch.no_grad():
        expected = twin.eval().denseblock1(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-9, atol=1e-9)


def test_fmt_keeps_computed_labels_glued():
    from netspec.fmt import format_text

    text = ("block b(n) { input x\n output x -> the_{ n }{n}x.conv{n}: conv(n, k=1)"
            " -> features: [ l{n}: relu ] -> 0: relu }\n"
            "network n { input x: [4, 2, 2]\n output x -> fc{i + 1}: b(3) * 2 }\n")
    out = format_text(text)
    assert "the_{n}{n}x.conv{n}: conv(n, k=1)" in out
    assert "[l{n}: relu]" in out and "-> 0: relu" in out and "fc{i + 1}: b(3) * 2" in out
    assert format_text(out) == out
