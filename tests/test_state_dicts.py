"""Plain state dicts for --weights and --init-from: an .npz of named arrays (Model.save, np.savez)
and PyTorch .pt/.pth files (torch.load with weights_only=True), checked against an independent
torch ResNet-18 (torchvision's module structure, tests/test_specs.py) by equal outputs."""
from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pytest

import netspec
from netspec.cli import main
from netspec.train import CheckpointError, load_matching, load_weights, read_weights

torch = pytest.importorskip("torch")
from _torchvision import TORCHVISION

TINY = """
network tiny(num_classes = 10) {
    input x: [1, 8, 8]
    output x -> conv(8, k=3, p=1) -> relu -> maxpool(2) -> fc: linear(num_classes)
    train {
        optimizer = adam(lr = 0.01)
        epochs = 1
        batch = 64
        data = digits
    }
}
"""


@pytest.fixture(scope="module")
def torch_resnet18():
    torch.manual_seed(0)
    model = TORCHVISION["resnet18"]()
    with torch.no_grad():  # running statistics that are not the defaults, so they count
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _outputs(torch_model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch_model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".npz"])
def test_a_torch_resnet18_state_dict_gives_equal_outputs(torch_resnet18, tmp_path, suffix):
    path = tmp_path / f"resnet18{suffix}"
    state = torch_resnet18.state_dict()
    if suffix == ".npz":
        np.savez(path, **{k: v.numpy() for k, v in state.items()})
    else:
        torch.save(state, path)
    model = netspec.compile("resnet18", input_shape=(3, 32, 32))
    ckpt = load_weights(model, path)
    assert ckpt.extra == {} and "num_batches_tracked" not in " ".join(ckpt.params)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(model.forward(x), _outputs(torch_resnet18, x),
                               rtol=1e-4, atol=1e-4)


def test_init_from_reports_loaded_missing_unexpected_and_mismatched(torch_resnet18, tmp_path):
    state = dict(torch_resnet18.state_dict())
    state["fc.weight"] = torch.zeros(10, 512)  # a head for 10 classes
    state["fc.bias"] = torch.zeros(10)
    state["extra.weight"] = torch.zeros(3)
    del state["layer4.1.bn2.running_var"]
    path = tmp_path / "ft.pt"
    torch.save({"state_dict": state}, path)  # the Lightning-style wrapper is unwrapped
    model = netspec.compile("resnet18", input_shape=(3, 32, 32))
    report = load_matching(model, path)
    assert report.mismatched == [("fc.weight", (10, 512), (1000, 512)),
                                 ("fc.bias", (10,), (1000,))]
    assert report.unexpected == ["extra.weight"]
    assert report.missing == ["layer4.1.bn2.running_var"]
    expected = [k for k in torch_resnet18.state_dict()
                if not k.endswith("num_batches_tracked")
                and k not in ("fc.weight", "fc.bias", "layer4.1.bn2.running_var")]
    assert sorted(report.loaded) == sorted(expected)
    np.testing.assert_array_equal(model.params["conv1.weight"],
                                  state["conv1.weight"].numpy())
    text = report.summary()
    assert "mismatched fc.weight: file [10, 512] vs model [1000, 512]" in text
    assert "unexpected extra.weight: not in the model" in text
    assert "missing layer4.1.bn2.running_var: not in the file" in text


class _Payload:
    def __reduce__(self):
        return (sys.exit, ("unpickled code ran",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_with_code_is_refused_unrun(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"conv.weight": _Payload()}, f)
    with pytest.raises(CheckpointError, match="weights_only=True") as e:
        read_weights(path)
    assert str(path) in str(e.value)


def test_torch_files_that_are_not_state_dicts_name_what_they_hold(tmp_path):
    path = tmp_path / "t.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="holds a Tensor, not a state dict"):
        read_weights(path)
    torch.save({"a": torch.full((2,), float("nan"))}, path)
    with pytest.raises(CheckpointError, match="'a' holds NaN"):
        read_weights(path)


def test_without_torch_the_error_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(2)}, path)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    with pytest.raises(CheckpointError, match=r"needs torch: pip install 'netspec\[torch\]'"):
        read_weights(path)


def test_cli_eval_and_train_read_plain_state_dicts(tmp_path, capsys):
    spec = tmp_path / "tiny.net"
    spec.write_text(TINY)
    model = netspec.compile(str(spec), seed=3)
    model.save(tmp_path / "saved.npz")  # Model.save: a plain .npz of named arrays
    torch.save({k: torch.from_numpy(v) for k, v in model.state_dict().items()},
               tmp_path / "saved.pt")
    results = []
    for name in ("saved.npz", "saved.pt"):
        capsys.readouterr()
        assert main(["eval", str(spec), "--weights", str(tmp_path / name), "--format", "json",
                     "--limit", "300"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result.pop("weights") == str(tmp_path / name)
        results.append(result)
    assert results[0] == results[1] and results[0]["n"] > 0
    assert main(["train", str(spec), "-o", str(tmp_path / "run"), "--no-progress",
                 "--limit", "200", "--init-from", str(tmp_path / "saved.pt")]) == 0
    out, err = capsys.readouterr()
    assert "loaded 4 of the model's 4 tensors; missing 0, unexpected 0, mismatched 0" in out + err
