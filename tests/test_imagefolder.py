"""`--data DIR` with one folder of images per class (ImageFolder), on both backends.

The images are tiny generated PNGs and JPEGs: each class lights a different quadrant, so a
small CNN learns them in a couple of epochs. The reference for decoding is Pillow itself
(convert + resize + per-channel statistics computed with NumPy); the reference for the loop is
the same data held in memory.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from netspec.cli import main
from netspec.train import TrainConfig, load_dataset, train
from netspec.train.data import DataError, infer_format
from netspec.train.imagefolder import ImageArray, scan

CLASSES = ("circle", "cross", "square")  # sorted: class index = position
SPEC = """
network folder_cnn(num_classes = 3) {
    input x: [1, 8, 8]
    output x -> conv1: conv(4, k=3, p=1) -> relu -> maxpool(2) -> flatten
             -> fc: linear(num_classes)
    train {
        optimizer = adam(lr = 0.02)
        batch = 8
        epochs = 2
    }
}
"""


def pattern(label: int, rng: np.random.Generator, size: int = 8) -> np.ndarray:
    x = rng.integers(0, 60, (size, size)).astype(np.uint8)
    h = size // 2
    corner = [(slice(0, h), slice(0, h)), (slice(0, h), slice(h, size)),
              (slice(h, size), slice(0, h))][label]
    x[corner] = 200 + rng.integers(0, 55)
    return x


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 classes x 16 images; a few are RGB JPEGs or 16x16 (converted and resized)."""
    root = tmp_path_factory.mktemp("images") / "train"
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(16):
            if i == 3:
                big = pattern(label, rng, 16)
                Image.fromarray(np.stack([big] * 3, -1)).save(root / name / f"{i:02}.jpg")
            else:
                Image.fromarray(pattern(label, rng)).save(root / name / f"{i:02}.png")
        (root / name / "notes.txt").write_text("not an image")
    return root


def test_classes_are_the_sorted_folder_names_and_only_images_count(folder):
    paths, labels, names = scan(folder)
    assert names == list(CLASSES)
    assert len(paths) == 48 and np.bincount(labels).tolist() == [16, 16, 16]
    assert all(p.endswith((".png", ".jpg")) for p in paths)
    assert infer_format(folder) == "imagefolder"


def test_images_decode_like_pillow_converts_and_resizes_them(folder):
    cfg = TrainConfig.from_spec({"data": {"type": "imagefolder", "path": str(folder),
                                          "val": 0.125, "test": 0.25}})
    data = load_dataset(cfg, (1, 8, 8))
    assert isinstance(data.x_train, ImageArray) and data.x_train.shape[1:] == (1, 8, 8)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (30, 6, 12)  # round(0.125 * 12) = 2 per class
    assert data.class_names == list(CLASSES)
    expected = []
    for path in data.x_train.paths:
        with Image.open(path) as image:
            image = image.convert("L").resize((8, 8), Image.BILINEAR)
            expected.append(np.asarray(image, np.float32)[None])
    raw = np.stack(expected)
    np.testing.assert_allclose(data.mean, [raw.mean()], rtol=1e-5)
    np.testing.assert_allclose(data.std, [raw.std()], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(data.x_train), (raw - raw.mean()) / raw.std(),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.x_train[[5, 1]], np.asarray(data.x_train)[[5, 1]])


def test_streamed_images_train_exactly_as_the_same_images_in_memory(folder, tmp_path):
    import netspec

    net = netspec.parse(SPEC, "folder_cnn.net")
    cfg = TrainConfig.from_spec({**net.train, "data": {"type": "imagefolder",
                                                       "path": str(folder)},
                                 "augment": "crop_flip"})
    streamed = load_dataset(cfg, (1, 8, 8))
    in_memory = load_dataset(cfg, (1, 8, 8))
    for split in ("x_train", "x_val", "x_test"):
        setattr(in_memory, split, np.asarray(getattr(in_memory, split)))
    runs = [train(netspec.compile(net), cfg, d, tmp_path / str(i), progress=False)
            for i, d in enumerate((streamed, in_memory))]
    assert [r.train_loss for r in runs[0].records] == [r.train_loss for r in runs[1].records]


def test_both_backends_train_on_a_folder_from_the_command_line(folder, tmp_path, capsys):
    pytest.importorskip("torch")
    spec = tmp_path / "folder_cnn.net"
    spec.write_text(SPEC)
    results = {}
    for backend in ("numpy", "torch"):  # torch: DataLoader worker processes decode
        out = tmp_path / backend
        assert main(["train", str(spec), "--data", str(folder), "--backend", backend, "-o",
                     str(out), "--no-progress", "--epochs", "3", "--threads", "1"]) == 0
        assert "test accuracy" in capsys.readouterr().out
        assert main(["eval", str(spec), "--data", str(folder), "--weights",
                     str(out / "best.npz"), "--format", "json"]) == 0
        results[backend] = json.loads(capsys.readouterr().out)
    for result in results.values():
        assert result["n"] == 9 and result["accuracy"] >= 0.6  # 3 per class; chance: 1/3


def test_a_corrupt_image_is_an_error_naming_the_file(folder, tmp_path, capsys):
    bad = tmp_path / "train"
    for name in CLASSES:
        (bad / name).mkdir(parents=True)
        for f in sorted((folder / name).glob("*.png"))[:4]:
            (bad / name / f.name).write_bytes(f.read_bytes())
    (bad / "cross" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    spec = tmp_path / "folder_cnn.net"
    spec.write_text(SPEC)
    # with normalization the statistics pass meets it first; without, the batches do (torch:
    # in a DataLoader worker process)
    for backend, normalize in (("numpy", "true"), ("torch", "true"), ("torch", "false")):
        code = main(["train", str(spec), "--data", str(bad), "--backend", backend,
                     "--no-progress",
                     "--epochs", "1", "-o", str(tmp_path / backend), "--set",
                     f"data.normalize={normalize}", "--set", "data.val=0", "--set",
                     "data.test=0", "--threads", "1"])
        err = capsys.readouterr().err
        assert code == 1 and "broken.png" in err and "cannot decode the image" in err, err
        assert "Traceback" not in err


def test_an_empty_class_folder_or_a_missing_directory_is_a_clear_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a" / "0.png")
    with pytest.raises(DataError, match="class folder with no images"):
        scan(tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        scan(tmp_path / "missing")
