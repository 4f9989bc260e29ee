"""Command line: a user's mistake or a bad file is a clear message, never an internal error,
and nothing already saved is lost (run directories, checkpoints, eval on class subsets,
predict inputs, output that cannot be written, bad loss settings, bad data sets)."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import netspec
from netspec.cli import main
from netspec.diagnostics import NetspecError

ROOT = Path(__file__).resolve().parents[1]
NETSPEC = [sys.executable, "-m", "netspec"]
TINY = """network tiny(num_classes = 10) {
    input x: [1, 8, 8]
    output x -> flatten -> fc1: linear(16) -> relu -> fc: linear(num_classes)
    train {
        optimizer = adam(lr = 0.01)
        epochs = 1
    }
}
"""
QUICK = ["--limit", "300", "--no-progress"]


@pytest.fixture
def spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.net"
    path.write_text(TINY)
    return path


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    assert "internal error" not in out.err and "Traceback" not in out.err, out.err
    return code, out.out, out.err


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# ---------------------------------------------------------------- run directories

def test_rerunning_train_never_replaces_an_earlier_run(spec, capsys):
    assert cli(["train", spec, *QUICK], capsys)[0] == 0
    first = snapshot(Path("runs/tiny"))
    code, out, _ = cli(["train", spec, *QUICK, "--seed", "1"], capsys)
    assert code == 0 and "runs/tiny-2/" in out
    assert snapshot(Path("runs/tiny")) == first
    assert (Path("runs/tiny-2") / "last.npz").exists()


def test_out_dir_holding_a_run_is_refused_without_overwrite(spec, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(["train", spec, *QUICK, "-o", run], capsys)[0] == 0
    before = snapshot(run)
    code, _, err = cli(["train", spec, *QUICK, "-o", run], capsys)
    assert code == 2 and f"-o {run}" in err and "--overwrite" in err and "--resume" in err
    assert snapshot(run) == before
    assert cli(["train", spec, *QUICK, "-o", run, "--overwrite", "--seed", "3"], capsys)[0] == 0
    assert snapshot(run)["last.npz"] != before["last.npz"]


def test_resume_without_out_continues_the_latest_run(spec, capsys):
    assert cli(["train", spec, *QUICK], capsys)[0] == 0
    assert cli(["train", spec, *QUICK], capsys)[0] == 0
    code, out, _ = cli(["train", spec, *QUICK, "--resume", "--epochs", "2"], capsys)
    assert code == 0 and "runs/tiny-2/" in out
    assert len(Path("runs/tiny-2/metrics.jsonl").read_text().splitlines()) == 2
    assert len(Path("runs/tiny/metrics.jsonl").read_text().splitlines()) == 1


def test_unwritable_run_directory_is_refused_before_training(spec, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = cli(["train", spec, *QUICK, "-o", blocker / "run"], capsys)
    assert code == 2 and "cannot write the run directory" in err
    assert "epoch" not in err  # refused before any epoch ran


def test_results_json_holds_the_test_accuracy(spec, capsys):
    code, out, _ = cli(["train", spec, *QUICK], capsys)
    assert code == 0
    results = json.loads(Path("runs/tiny/results.json").read_text())
    assert results["status"] == "completed" and results["network"] == "tiny"
    printed = out.split("test accuracy ")[1].split("%")[0]
    assert f"{100 * results['test']['accuracy']:.2f}" == printed
    assert results["test"]["n"] > 0 and results["final"]["epoch"] == 1
    assert results["checkpoint"] in ("best.npz", "last.npz")


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_checkpoints_keep_the_users_umask(tmp_path, umask):
    from netspec.train.checkpoint import Checkpoint, save_checkpoint

    old = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "last.npz", Checkpoint({"w": np.zeros(2)}))
        (tmp_path / "other").write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "last.npz").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "other").stat().st_mode)


# ---------------------------------------------------------------- training errors

def test_divergence_prints_no_numpy_warnings(spec, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = cli(["train", spec, *QUICK, "--optimizer", "sgd", "--lr", "1e30"],
                           capsys)
    assert code == 1 and "training diverged" in err
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], caught
    assert "RuntimeWarning" not in err


def test_resume_with_another_optimizer_is_a_clear_error(spec, tmp_path, capsys):
    assert cli(["train", spec, *QUICK, "-o", tmp_path / "r"], capsys)[0] == 0
    code, _, err = cli(["train", spec, *QUICK, "-o", tmp_path / "r", "--resume",
                        "--epochs", "2", "--optimizer", "sgd"], capsys)
    assert code == 1 and "trained with 'adam'" in err and "--optimizer adam" in err


def test_reinit_hint_shows_the_spec_syntax(spec, tmp_path, capsys):
    code, _, err = cli(["train", spec, *QUICK, "--param", "num_classes=3", "-o",
                        tmp_path / "r"], capsys)
    assert code == 1 and "reinit = [fc]" in err and "--reinit fc" in err


# ---------------------------------------------------------------- eval / predict on a subset

@pytest.fixture(scope="module")
def subset_run(tmp_path_factory):
    """netspec train --classes 3,5,8 --reinit fc: a 3-class head on a 10-class spec."""
    root = tmp_path_factory.mktemp("subset")
    spec = root / "tiny.net"
    spec.write_text(TINY)
    argv = ["train", spec, *QUICK, "--classes", "3,5,8", "--reinit", "fc", "-o", root / "run"]
    assert main([str(a) for a in argv]) == 0
    return spec, root / "run" / "best.npz"


def test_eval_uses_the_checkpoints_classes(subset_run, capsys):
    spec, weights = subset_run
    code, out, _ = cli(["eval", spec, "--weights", weights, "--format", "json"], capsys)
    result = json.loads(out)
    assert code == 0 and 0 < result["n"] < 150  # 3 of 10 classes of digits' test split
    assert result["accuracy"] > 1 / 3


def test_eval_with_the_class_count_as_a_param_works(subset_run, capsys):
    spec, weights = subset_run
    code, out, _ = cli(["eval", spec, "--weights", weights, "--param", "num_classes=3"],
                       capsys)
    assert code == 0 and "accuracy" in out


def test_eval_with_other_classes_names_the_checkpoints(subset_run, capsys):
    spec, weights = subset_run
    code, _, err = cli(["eval", spec, "--weights", weights, "--classes", "1,2,3"], capsys)
    assert code == 2 and "trained on classes 3,5,8" in err


def test_predict_reports_the_original_labels(subset_run, capsys):
    spec, weights = subset_run
    code, out, _ = cli(["predict", spec, "--weights", weights, "--format", "json"], capsys)
    rows = json.loads(out)
    assert code == 0
    assert {r["label"] for r in rows} == {3, 5, 8}
    assert {r["predicted"][0] for r in rows} <= {3, 5, 8}
    hits = np.mean([r["label"] == r["predicted"][0] for r in rows])
    assert hits > 1 / 3


def test_model_with_the_wrong_class_count_is_a_clear_error(spec, tmp_path, capsys):
    # A checkpoint that records no classes (written by the API), 10 outputs, 3-class data.
    from netspec.train.checkpoint import Checkpoint, save_checkpoint

    model = netspec.compile(str(spec))
    save_checkpoint(tmp_path / "w.npz", Checkpoint(dict(model.params), dict(model.buffers)))
    code, _, err = cli(["eval", spec, "--weights", tmp_path / "w.npz", "--classes", "1,2,3"],
                       capsys)
    assert code == 1 and "outputs 10 scores per example but the data has 3 classes" in err


# ---------------------------------------------------------------- files that are not what they should be

def not_checkpoints(tmp_path: Path) -> dict[str, Path]:
    files = {}
    np.save(tmp_path / "array.npy", np.zeros(3))
    files["npy"] = tmp_path / "array.npy"
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"a": 1}))
    files["pickle"] = tmp_path / "p.pkl"
    (tmp_path / "t.txt").write_text("hello")
    files["text"] = tmp_path / "t.txt"
    (tmp_path / "e.npz").write_bytes(b"")
    files["empty"] = tmp_path / "e.npz"
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    files["object npz"] = tmp_path / "obj.npz"
    return files


@pytest.mark.parametrize("kind", ["npy", "pickle", "text", "empty", "object npz"])
def test_weights_that_are_not_a_checkpoint(kind, spec, tmp_path, capsys):
    path = not_checkpoints(tmp_path)[kind]
    code, _, err = cli(["eval", spec, "--weights", path], capsys)
    assert code == 1 and "not a netspec checkpoint" in err and str(path) in err
    assert "allow_pickle" not in err and "pickle.load" not in err


def bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    cases = {}

    def save(name, array):
        np.save(tmp_path / f"{name}.npy", array)
        return tmp_path / f"{name}.npy"

    (tmp_path / "empty.npy").write_bytes(b"")
    cases["empty file"] = (tmp_path / "empty.npy", "is empty")
    cases["strings"] = (save("strings", np.array([["a"] * 8] * 8)), "must be numbers")
    cases["no examples"] = (save("none", np.zeros((0, 1, 8, 8))), "no examples")
    cases["wrong shape"] = (save("shape", np.zeros((2, 3, 8, 8))), "do not fit")
    cases["nan"] = (save("nan", np.full((2, 1, 8, 8), np.nan)), "NaN")
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 1, 8, 8)))
    cases["npz"] = (tmp_path / "x.npz", "an .npz archive")
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 8, 8), }"
    header = header.ljust(200_000 - 1) + b"\n"  # format 2.0: a 4-byte header length
    (tmp_path / "huge.npy").write_bytes(b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little")
                                        + header + bytes(256))
    cases["huge header"] = (tmp_path / "huge.npy", "header is too large")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases["objects"] = (tmp_path / "obj.npy", "never loads")
    (tmp_path / "text.npy").write_text("1 2 3")
    cases["text"] = (tmp_path / "text.npy", "not an .npy file")
    return cases


@pytest.mark.parametrize("kind", ["empty file", "strings", "no examples", "wrong shape", "nan",
                                  "npz", "huge header", "objects", "text"])
def test_bad_predict_inputs_are_usage_errors(kind, subset_run, tmp_path, capsys):
    spec, weights = subset_run
    path, message = bad_inputs(tmp_path)[kind]
    code, _, err = cli(["predict", spec, "--weights", weights, "--inputs", path], capsys)
    assert code == 2 and f"--inputs {path}" in err and message in err, err
    assert "allow_pickle" not in err


def test_predict_inputs_print_no_accuracy(subset_run, tmp_path, capsys):
    spec, weights = subset_run
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(0, 16, (3, 8, 8)))
    code, out, _ = cli(["predict", spec, "--weights", weights, "--inputs", tmp_path / "x.npy"],
                       capsys)
    assert code == 0 and "accuracy" not in out and len(out.splitlines()) == 3


@pytest.mark.parametrize("arrays, message", [
    ({"x_train": np.array([["a"] * 64] * 10), "y_train": np.zeros(10, int)}, "must be numbers"),
    ({"x_train": np.zeros((0, 1, 8, 8)), "y_train": np.zeros(0, int)}, "no examples"),
    ({"x_train": np.zeros((10, 1, 8, 8))}, "missing array 'y_train'"),
    ({"x_train": np.zeros((10, 1, 8, 8)), "y_train": np.zeros(7, int)}, "expected x"),
    ({"x_train": np.zeros((10, 1, 8, 8)), "y_train": np.linspace(0, 1, 10)}, "integer"),
    (b"hello", "not an .npz archive"),
])
def test_bad_data_sets_are_clear_errors(arrays, message, spec, tmp_path, capsys):
    path = tmp_path / "data.npz"
    if isinstance(arrays, bytes):
        path.write_bytes(arrays)
    else:
        np.savez(path, **arrays)
    code, _, err = cli(["train", spec, *QUICK, "--data", path, "-o", tmp_path / "r"], capsys)
    assert code == 1 and str(path) in err and message in err, err
    assert "allow_pickle" not in err


# ---------------------------------------------------------------- loss settings

LOSS_SETTINGS = ['svm(delta = "1")', "svm(delta = -2, squared = 3)", "5", '["softmax"]',
                 "svm(delta = foo(x=1))", 'svm(delta = "x")', "hinge"]


@pytest.mark.parametrize("loss", LOSS_SETTINGS)
@pytest.mark.parametrize("command", ["check", "compile", "summary"])
def test_bad_loss_settings_are_located_errors(command, loss, tmp_path, capsys):
    path = tmp_path / "loss.net"
    path.write_text(TINY.replace("epochs = 1", f"loss = {loss}"))
    code, _, err = cli([command, path], capsys)
    assert code == 1 and f"{path}:6:" in err and "train.loss" in err, err


def test_bad_loss_settings_fail_before_the_api_compiles():
    with pytest.raises(NetspecError, match="train.loss.delta"):
        netspec.compile(netspec.parse(TINY.replace("epochs = 1", 'loss = svm(delta = "1")'),
                                      "t.net"))


# ---------------------------------------------------------------- output

def test_compile_output_is_location_independent(tmp_path):
    a, b = tmp_path / "a", tmp_path / "deep" / "er"
    for d in (a, b):
        d.mkdir(parents=True)
        shutil.copy(ROOT / "specs" / "lenet5.net", d / "lenet5.net")
    outputs = [
        subprocess.run(NETSPEC + ["compile", "lenet5.net"], cwd=a, capture_output=True, check=True).stdout,
        subprocess.run(NETSPEC + ["compile", str(b / "lenet5.net")], cwd=tmp_path,
                       capture_output=True, check=True).stdout,
        subprocess.run(NETSPEC + ["compile", "er/lenet5.net"], cwd=b.parent,
                       capture_output=True, check=True).stdout,
    ]
    assert outputs[0] and outputs[0] == outputs[1] == outputs[2]
    bundled = subprocess.run(NETSPEC + ["compile", "lenet5"], cwd=tmp_path,
                             capture_output=True, check=True).stdout
    assert bundled == outputs[0]
    assert str(tmp_path).encode() not in bundled and str(ROOT).encode() not in bundled


def test_full_disk_is_a_clear_error():
    with open("/dev/full", "w") as full:
        result = subprocess.run(NETSPEC + ["ops"], stdout=full, stderr=subprocess.PIPE,
                                text=True, check=False)
    assert result.returncode == 1
    assert "cannot write standard output: No space left on device" in result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


def test_closed_stdout_is_a_clear_error():
    result = subprocess.run(NETSPEC + ["ops"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.close(1), check=False)
    assert result.returncode == 1 and "standard output is closed" in result.stderr
    assert "Traceback" not in result.stderr


def test_draw_format_conflicting_with_the_suffix_writes_nothing(tmp_path, capsys):
    code, _, err = cli(["draw", "lenet5", "-o", tmp_path / "r50.svg", "--format", "png"],
                       capsys)
    assert code == 2 and "--format png" in err and "r50.svg" in err
    assert not (tmp_path / "r50.svg").exists()
