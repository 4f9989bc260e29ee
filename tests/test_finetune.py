"""The recipe "fine-tune a torchvision ResNet-18 on your own images" (docs/training.md), end to
end through the command line, against independent torch models.

The reference networks are written by hand with torch.nn in torchvision's module layout
(tests/test_specs.py: ResNet-18, GoogLeNet; torchvision itself is not installed), so their
state dicts are what `torch.save(torchvision_model.state_dict(), path)` writes. The reference
preprocessing is torchvision's, by hand: Pillow's RGB pixels resized bilinearly, / 255, then
(x - mean) / std. The images are tiny generated PNGs whose class is their dominant colour.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from netspec.cli import main
from netspec.train import read_weights

torch = pytest.importorskip("torch")
from _torchvision import TORCHVISION

MEAN = np.array([0.485, 0.456, 0.406])  # ImageNet's, as torchvision's pretrained weights
STD = np.array([0.229, 0.224, 0.225])
CLASSES = ("blue", "green", "red")  # sorted folder names: class indices 0, 1, 2


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """16 images of 40x40 per class (resized to the network's 32x32 when read)."""
    root = tmp_path_factory.mktemp("photos") / "train"
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(16):
            x = rng.integers(0, 100, (40, 40, 3)).astype(np.uint8)
            x[:, :, 2 - label] = rng.integers(150, 256)
            Image.fromarray(x).save(root / name / f"{i:02}.png")
    return root


def reference_input(path, side: int, mean=MEAN, std=STD) -> np.ndarray:
    """torchvision's Resize((side, side)) + ToTensor + Normalize(mean, std), by hand."""
    with Image.open(path) as image:
        image = image.convert("RGB").resize((side, side), Image.BILINEAR)
        x = np.asarray(image, np.float64).transpose(2, 0, 1) / 255.0
    return ((x - mean[:, None, None]) / std[:, None, None]).astype(np.float32)


def torch_model(name: str, seed: int):
    torch.manual_seed(seed)
    model = TORCHVISION[name]()
    with torch.no_grad():  # running statistics that are not the defaults, so they count
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    model = torch_model("resnet18", 0)
    path = tmp_path_factory.mktemp("weights") / "r18.pt"
    torch.save(model.state_dict(), path)
    return model, path


def run(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_with_the_state_dict_equals_torch_on_the_same_images(resnet18_file, images,
                                                                      capsys):
    model, weights = resnet18_file
    code, out, _ = run(["predict", "resnet18", "--weights", weights, "--input", "3x32x32",
                        "--normalize", "imagenet", "--inputs", images, "--top", "3",
                        "--format", "json"], capsys)
    assert code == 0
    rows = json.loads(out)
    files = sorted(str(p) for p in images.rglob("*.png"))
    assert [r["file"] for r in rows] == files
    with torch.no_grad():
        x = torch.from_numpy(np.stack([reference_input(f, 32) for f in files]))
        prob = torch.softmax(model(x), dim=1).numpy()
    top = np.argsort(-prob, axis=1)[:, :3]
    assert [r["predicted"] for r in rows] == top.tolist()
    np.testing.assert_allclose([r["probability"] for r in rows],
                               np.take_along_axis(prob, top, 1), atol=1e-4)


def test_fine_tuning_resnet18_on_a_folder_of_images(resnet18_file, images, tmp_path, capsys):
    _, weights = resnet18_file
    run_dir = tmp_path / "run"
    code, out, err = run([
        "train", "resnet18", "--input", "3x32x32", "--init-from", weights, "--reinit", "fc",
        "--freeze", "conv1", "--freeze", "bn1", "--freeze", "layer*", "--data", images,
        "--normalize", "imagenet", "--epochs", "4", "--batch", "4", "--lr", "0.01",
        "--val", "0", "--no-progress", "-o", run_dir], capsys)
    assert code == 0, err
    assert f"init from {weights}: loaded 102 of the model's 102 tensors; missing 0, " \
           "unexpected 0, mismatched 0" in err
    ckpt = read_weights(run_dir / "best.npz")
    source = torch.load(weights, weights_only=True)
    for name, value in ckpt.params.items():  # the frozen features are the file's
        if not name.startswith("fc."):
            np.testing.assert_array_equal(value, source[name].numpy())
    assert ckpt.params["fc.weight"].shape == (3, 512)
    assert ckpt.extra["data.class_names"].tolist() == list(CLASSES)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_loss"] < records[0]["train_loss"] / 2
    result = json.loads((run_dir / "results.json").read_text())
    assert result["test"]["accuracy"] >= 0.85 and result["test"]["n"] == 9
    # predict names the classes, from the checkpoint alone (shape, statistics, names)
    code, out, _ = run(["predict", "resnet18", "--weights", run_dir / "best.npz", "--inputs",
                        images / "red" / "03.png", "--top", "2"], capsys)
    assert code == 0 and out.startswith(f"{images / 'red' / '03.png'}: red (")
    assert out.count("(") == 2


def test_googlenet_state_dicts_get_a_note_and_its_advice_reproduces_transform_input(
        images, tmp_path, capsys):
    """torchvision's pretrained GoogLeNet applies transform_input to ImageNet-normalized
    input; the spec lacks that step, and the note's normalize = [0.5, 0.5] replaces it."""
    model = torch_model("googlenet", 1)
    weights = tmp_path / "googlenet.pt"
    torch.save(model.state_dict(), weights)
    image = images / "green" / "00.png"
    x = torch.from_numpy(reference_input(image, 64)[None])
    with torch.no_grad():  # torchvision's GoogLeNet._transform_input, written out
        channels = [x[:, c:c + 1] * (STD[c] / 0.5) + (MEAN[c] - 0.5) / 0.5 for c in range(3)]
        prob = torch.softmax(model(torch.cat(channels, 1).float()), dim=1).numpy()[0]
    code, out, err = run(["predict", "googlenet", "--weights", weights, "--input", "3x64x64",
                          "--normalize", "[0.5, 0.5]", "--inputs", image, "--top", "3",
                          "--format", "json"], capsys)
    assert code == 0
    assert "note: torchvision's pretrained GoogLeNet weights expect transform_input=True" in err
    row = json.loads(out)[0]
    assert row["predicted"] == np.argsort(-prob)[:3].tolist()
    np.testing.assert_allclose(row["probability"], np.sort(prob)[::-1][:3], atol=1e-4)
