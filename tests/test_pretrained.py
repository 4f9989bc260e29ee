"""Practical training with weights from elsewhere: `train --input CxHxW`, fixed input
normalization (`normalize = [mean, std]`), and one weight format read by Model.load,
`--weights` and `--init-from`.

References: a spec that declares the shape `--input` gives (identical runs), the normalization
formula of torchvision's ToTensor + Normalize computed by hand on pixels Pillow decodes, and
the arrays a training run holds.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import netspec
from netspec.cli import main
from netspec.train import TrainConfig, load_dataset, read_weights

SPEC = """
network small(num_classes = 10) {{
    input x: [1, {side}, {side}]
    output x -> conv1: conv(4, k=3, p=1) -> relu -> maxpool(2) -> flatten -> fc: linear(num_classes)
    train {{
        optimizer = adam(lr = 0.01)
        epochs = 1
        batch = 32
        {extra}
    }}
}}
"""
QUICK = ["--no-progress", "--limit", "150"]


def write_spec(tmp_path, name: str, side: int = 8, extra: str = "") -> str:
    path = tmp_path / f"{name}.net"
    path.write_text(SPEC.format(side=side, extra=extra))
    return str(path)


def results(run) -> dict:
    return json.loads((run / "results.json").read_text())


# ---------------------------------------------------------------- train --input

def test_train_input_runs_as_a_spec_declaring_that_shape(tmp_path, capsys):
    wide = write_spec(tmp_path, "wide", side=32)   # declares [1, 32, 32]; digits are 8x8
    exact = write_spec(tmp_path, "exact", side=8)
    assert main(["train", wide, "--input", "1x8x8", "-o", str(tmp_path / "a"), *QUICK]) == 0
    assert main(["train", exact, "-o", str(tmp_path / "b"), *QUICK]) == 0
    assert results(tmp_path / "a")["test"] == results(tmp_path / "b")["test"]
    a, b = (read_weights(tmp_path / r / "last.npz") for r in ("a", "b"))
    assert a.state["input_shape"] == [1, 8, 8]
    for name, value in b.params.items():
        np.testing.assert_array_equal(a.params[name], value)
    # eval and predict run at the shape the checkpoint was trained at, without the flag
    capsys.readouterr()
    assert main(["eval", wide, "--weights", str(tmp_path / "a" / "best.npz"),
                 "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == \
        results(tmp_path / "a")["test"]["accuracy"]


def test_a_shape_mismatch_hints_at_input_not_at_editing_the_spec(tmp_path, capsys):
    assert main(["train", "lenet5", "--epochs", "1", "-o", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "hint: give the network the data's shape with --input 1x8x8" in err
    assert "change the spec" not in err


def test_an_input_the_layers_refuse_is_located_and_names_the_flag(tmp_path, capsys):
    assert main(["train", "lenet5", "--input", "1x8x8", "-o", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "lenet5.net:" in err and "note: with the input shape given on the command line: " \
        "--input 1x8x8" in err


# ---------------------------------------------------------------- normalize = [mean, std]

def test_fixed_statistics_replace_the_training_splits(tmp_path):
    from sklearn.datasets import load_digits

    cfg = TrainConfig.from_spec({"normalize": [8, 4], "data": {"type": "digits", "val": 0}})
    data = load_dataset(cfg)
    raw = load_digits().images.astype(np.float32)  # digits are not 8-bit: taken as they are
    assert data.mean.tolist() == [8.0] and data.std.tolist() == [4.0]
    expected = (raw - 8) / 4
    got = np.concatenate([data.x_train, data.x_test])[:, 0]
    assert sorted(map(bytes, got)) == sorted(map(bytes, expected))  # the same images


def test_imagenet_statistics_on_8_bit_images_are_torchvisions(tmp_path):
    """ToTensor (x / 255) then Normalize(mean, std), computed by hand on Pillow's pixels, for
    an .npz of uint8 images and for image files."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 3, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(12) % 2)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    cfg = TrainConfig.from_spec({"normalize": "imagenet", "data": {
        "type": "npz", "path": str(tmp_path / "d.npz"), "val": 0, "test": 0}})
    data = load_dataset(cfg)
    reference = (x / 255.0 - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(data.x_train, reference, rtol=1e-5, atol=1e-5)
    for label in (0, 1):
        (tmp_path / "imgs" / f"c{label}").mkdir(parents=True)
    for i, image in enumerate(x):
        Image.fromarray(image.transpose(1, 2, 0)).save(tmp_path / "imgs" / f"c{i % 2}" /
                                                        f"{i:02}.png")
    cfg = TrainConfig.from_spec({"normalize": "imagenet", "data": {
        "type": "imagefolder", "path": str(tmp_path / "imgs"), "val": 0, "test": 0}})
    data = load_dataset(cfg, (3, 4, 4))
    first = data.x_train[0]
    pixels = np.asarray(Image.open(data.x_train.paths[0]), np.float64).transpose(2, 0, 1)
    np.testing.assert_allclose(first, (pixels / 255 - mean[:, None, None]) / std[:, None, None],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value, message", [
    ("imagnet", "did you mean 'imagenet'"), ([1, 0], "every std must be > 0"),
    ([[1, 2], [1, 2, 3]], "2 means but 3 stds"), (["a", 1], "the mean must be a number"),
    (5, "must be [mean, std]")])
def test_bad_statistics_are_refused_naming_the_setting(value, message):
    from netspec.train import ConfigError

    with pytest.raises(ConfigError, match=r"train\.normalize") as e:
        TrainConfig.from_spec({"normalize": value})
    assert message in str(e.value)


def test_statistics_per_channel_must_match_the_network_and_the_data(tmp_path, capsys):
    assert main(["train", write_spec(tmp_path, "s"), "--normalize", "imagenet",
                 "-o", str(tmp_path / "r"), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "--normalize imagenet" in err and "3 values per statistic, but the network's " \
        "input has 1 channel" in err
    spec = write_spec(tmp_path, "t", extra="normalize = imagenet")
    assert main(["train", spec, "-o", str(tmp_path / "r"), *QUICK]) == 1
    assert "t.net:" in capsys.readouterr().err  # located at the setting
    np.savez(tmp_path / "rgb.npz", x_train=np.zeros((20, 3, 8, 8), np.uint8),
             y_train=np.arange(20) % 2)
    cfg = TrainConfig.from_spec({"normalize": "imagenet", "data": str(tmp_path / "rgb.npz")})
    load_dataset(cfg)  # three channels: fine
    cfg = TrainConfig.from_spec({"normalize": [[1, 2], [1, 2]],
                                 "data": str(tmp_path / "rgb.npz")})
    with pytest.raises(ValueError, match="2 values per statistic, but the data has 3"):
        load_dataset(cfg)


def test_the_checkpoint_keeps_the_statistics_for_eval_and_predict(tmp_path, capsys):
    spec = write_spec(tmp_path, "s", extra="normalize = [8, 4]")
    assert main(["train", spec, "-o", str(tmp_path / "r"), *QUICK]) == 0
    ckpt = read_weights(tmp_path / "r" / "best.npz")
    assert ckpt.extra["data.mean"].tolist() == [8.0] and ckpt.config["normalize"] == [[8.0],
                                                                                      [4.0]]
    plain = write_spec(tmp_path, "plain")  # the same network without the setting
    capsys.readouterr()
    assert main(["eval", plain, "--weights", str(tmp_path / "r" / "best.npz"),
                 "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == \
        results(tmp_path / "r")["test"]["accuracy"]
    # a plain state dict has no statistics: the flag gives them
    model = netspec.compile(plain)
    model.load(tmp_path / "r" / "best.npz")
    model.save(tmp_path / "w.npz")
    assert main(["eval", plain, "--weights", str(tmp_path / "w.npz"), "--normalize", "[8, 4]",
                 "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == \
        results(tmp_path / "r")["test"]["accuracy"]


# ---------------------------------------------------------------- one weight format

def test_model_save_files_and_training_checkpoints_read_each_other(tmp_path, capsys):
    spec = write_spec(tmp_path, "s")
    assert main(["train", spec, "-o", str(tmp_path / "r"), *QUICK]) == 0
    ckpt = read_weights(tmp_path / "r" / "last.npz")
    model = netspec.compile(spec, seed=5)
    assert model.load(tmp_path / "r" / "last.npz").ok  # a training checkpoint
    for name, value in ckpt.model_state().items():
        np.testing.assert_array_equal(model.state_dict()[name], value)
    model.save(tmp_path / "saved.npz")
    with np.load(tmp_path / "saved.npz", allow_pickle=False) as f:  # plain names, no pickles
        assert sorted(f.files) == sorted(ckpt.model_state())
    # --init-from reads the Model.save file and loads every tensor
    capsys.readouterr()
    assert main(["train", spec, "--init-from", str(tmp_path / "saved.npz"),
                 "-o", str(tmp_path / "r2"), *QUICK]) == 0
    assert "loaded 4 of the model's 4 tensors; missing 0, unexpected 0, mismatched 0" in \
        capsys.readouterr().err
    strict = netspec.compile(write_spec(tmp_path, "wide", side=16))  # other fc shape
    with pytest.raises(ValueError, match="fc.weight: given"):
        strict.load(tmp_path / "saved.npz")
    report = strict.load(tmp_path / "saved.npz", strict=False)
    assert sorted(report.loaded) == ["conv1.bias", "conv1.weight", "fc.bias"]
    assert [m[0] for m in report.mismatched] == ["fc.weight"]


# ---------------------------------------------------------------- predict on image files

def test_predict_on_images_refuses_what_it_cannot_read_naming_the_flag(tmp_path, capsys):
    spec = write_spec(tmp_path, "s")
    netspec.compile(spec).save(tmp_path / "w.npz")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    cases = [
        (tmp_path / "empty", ["--normalize", "[0, 16]"], "the folder holds no images"),
        (tmp_path / "bad.png", ["--normalize", "[0, 16]"], "cannot decode the image"),
        (tmp_path / "ok.png", [], "holds no input statistics"),  # a plain state dict
    ]
    for path, extra, message in cases:
        capsys.readouterr()
        code = main(["predict", spec, "--weights", str(tmp_path / "w.npz"), "--inputs",
                     str(path), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
        assert ("--weights" if not extra else f"--inputs {path}") in err
    assert main(["predict", spec, "--weights", str(tmp_path / "w.npz"), "--inputs",
                 str(tmp_path / "ok.png"), "--normalize", "[0, 16]", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path / 'ok.png'}: ") and out.count("%") == 3
