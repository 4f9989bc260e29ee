"""The training commands end to end: train, eval --format json, predict, knn, fine-tuning."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from netspec.cli import main

TINY = """
network tiny(num_classes = 10) {
    input x: [1, 8, 8]
    output x -> conv(8, k=3, p=1) -> relu -> maxpool(2) -> fc: linear(num_classes)
    train {
        optimizer = adam(lr = 0.01)
        epochs = 2
        batch = 64
        data = digits
    }
}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    spec = root / "tiny.net"
    spec.write_text(TINY)
    out = root / "run"
    assert main(["train", str(spec), "-o", str(out), "--no-progress", "--limit", "600"]) == 0
    return spec, out


def test_train_writes_checkpoints_metrics_and_curves(trained):
    _, out = trained
    for name in ("last.npz", "best.npz", "metrics.jsonl", "curves.png"):
        assert (out / name).exists(), name


def test_eval_json_reports_loss_accuracy_and_n(trained, capsys):
    spec, out = trained
    capsys.readouterr()
    assert main(["eval", str(spec), "--weights", str(out / "best.npz"), "--format", "json",
                 "--limit", "600"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 359  # digits' fixed 20% test split (1797 examples)
    assert 0.5 < result["accuracy"] <= 1.0  # two epochs of a tiny CNN: far above chance (0.1)
    assert result["loss"] < np.log(10)


def test_eval_and_training_on_two_split_threads_match_one_thread(trained, tmp_path, capsys):
    spec, out = trained
    results = []
    for threads in ("1", "2"):
        capsys.readouterr()
        assert main(["eval", str(spec), "--weights", str(out / "best.npz"), "--format", "json",
                     "--limit", "600", "--threads", threads]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["accuracy"] == results[1]["accuracy"]
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-5)
    # Training with the batch split over 2 threads follows the 1-thread run (float rounding).
    assert main(["train", str(spec), "-o", str(tmp_path / "two"), "--no-progress",
                 "--limit", "600", "--threads", "2"]) == 0
    one, two = ([json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
                for d in (out, tmp_path / "two"))
    assert [r["epoch"] for r in one] == [r["epoch"] for r in two]
    assert [r["train_loss"] for r in two] == pytest.approx([r["train_loss"] for r in one],
                                                           rel=1e-3)


def test_eval_with_a_checkpoint_of_another_model_is_a_clear_error(trained, tmp_path, capsys):
    _, out = trained
    other = tmp_path / "other.net"
    other.write_text(TINY.replace("conv(8", "conv(4"))
    assert main(["eval", str(other), "--weights", str(out / "best.npz")]) == 1
    err = capsys.readouterr().err
    assert "does not fit this model" in err and "Traceback" not in err


def test_eval_with_a_corrupt_checkpoint_names_the_file(trained, tmp_path, capsys):
    spec, _ = trained
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["eval", str(spec), "--weights", str(bad)]) == 1
    assert str(bad) in capsys.readouterr().err


def test_predict_prints_classes_for_saved_inputs(trained, tmp_path, capsys):
    from sklearn.datasets import load_digits

    spec, out = trained
    images = load_digits().images[:5].astype(np.float32)
    path = tmp_path / "five.npy"
    np.save(path, images)
    capsys.readouterr()
    assert main(["predict", str(spec), "--weights", str(out / "best.npz"), "--inputs",
                 str(path), "--format", "json", "--top", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 5 and all(len(r["predicted"]) == 2 for r in rows)
    assert all(0 <= r["predicted"][0] <= 9 for r in rows)


def test_fine_tune_on_a_class_subset_reinitializes_the_head(trained, tmp_path, capsys):
    spec, out = trained
    assert main(["train", str(spec), "--init-from", str(out / "best.npz"), "--reinit", "fc",
                 "--classes", "0,1,2", "--freeze", "conv", "--epochs", "1",
                 "-o", str(tmp_path / "ft"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "loaded 4" in captured.err  # conv and fc weights + biases, before fc is rebuilt
    assert "test accuracy" in captured.out
    state = np.load(tmp_path / "ft" / "last.npz", allow_pickle=False)
    head = [k for k in state.files if k.endswith("fc.weight")]
    assert head and state[head[0]].shape[0] == 3  # the head now scores 3 classes
    conv = [k for k in state.files if k.endswith("conv.weight")]
    before = np.load(out / "best.npz", allow_pickle=False)
    assert np.array_equal(state[conv[0]], before[conv[0]])  # frozen


def test_bad_training_setting_points_at_the_spec_line(tmp_path, capsys):
    spec = tmp_path / "bad.net"
    spec.write_text(TINY.replace("epochs = 2", "epocs = 2"))
    assert main(["train", str(spec), "-o", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "bad.net:7:" in err and "epocs" in err and "did you mean" in err.lower()


def test_missing_data_file_is_a_clear_error(tmp_path, capsys):
    spec = tmp_path / "tiny.net"
    spec.write_text(TINY)
    assert main(["train", str(spec), "--data", str(tmp_path / "nope.npz"),
                 "-o", str(tmp_path / "r")]) == 2  # a usage error: the flag's value
    err = capsys.readouterr().err
    assert "--data" in err and "nope.npz" in err and "no such file or directory" in err


def test_input_shape_mismatch_names_both_shapes(tmp_path, capsys):
    assert main(["train", "lenet5", "-o", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "[1, 32, 32]" in err and "[1, 8, 8]" in err


def test_knn_json(capsys):
    assert main(["knn", "--k", "1,3", "--folds", "3", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["k"] in (1, 3) and report["n"] == 359
    assert report["accuracy"] >= 0.97  # CS231n-style kNN on raw digits pixels


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "netspec", "check", "resnet18"],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "ok" in result.stdout
