"""Hostile input to compile, train and eval (issue 19): allocation bombs, files that are not
what they say (FIFOs, devices, archives and headers declaring gigabytes), corrupt labels,
NaN weights, divergence, tampered checkpoints, and the temporaries of a killed save.
Attack files are generated here (small: they lie about their size); the ones that would
allocate run in a child process under an address-space limit and a timeout."""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import netspec
from netspec.cli import main
from netspec.files import FileLimitError, load_npz
from netspec.train import CheckpointError, DataError, TrainConfig, load_dataset, train
from netspec.train.checkpoint import load_checkpoint, read_arrays
from netspec.train.data import read_cifar_batch, read_idx
from netspec.train.loop import DivergedError

SPEC = """
network tiny(num_classes = 10) {
    input x: [1, 8, 8]
    output x -> flatten -> fc1: linear(16) -> relu -> fc: linear(num_classes)
    train {
        optimizer = adam(lr = 0.01)
        epochs = 1
        batch = 64
        data = digits
    }
}
"""


def run_limited(code: str, limit: int = 2 << 30, seconds: int = 120) -> dict:
    """Run `code` in a child under RLIMIT_AS=`limit`; it prints one JSON object."""
    prelude = ("import resource, sys\n"
               f"resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n")
    proc = subprocess.run([sys.executable, "-c", prelude + code], check=False,
                          capture_output=True, text=True, timeout=seconds,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- allocation bombs ----------------------------------------------------------------

def test_allocation_bombs_are_refused_with_both_figures(tmp_path):
    (tmp_path / "conv.net").write_text(
        "network big {\n  input x: [3, 32, 32]\n"
        "  output x -> conv(100000, k=99, p=49) -> flatten -> linear(10)\n}\n")
    (tmp_path / "wide.net").write_text(SPEC.replace("linear(16)", "linear(4000000)"))
    result = run_limited(f"""
import json, io, contextlib
import netspec
from netspec.cli import main
out = {{}}
try:
    netspec.compile({str(tmp_path / "conv.net")!r})
    out["compile"] = "allocated"
except netspec.NetspecError as exc:
    out["compile"] = str(exc)
err = io.StringIO()
with contextlib.redirect_stderr(err):
    out["train_exit"] = main(["train", {str(tmp_path / "wide.net")!r}, "--no-progress",
                              "-o", {str(tmp_path / "run")!r}])
out["train"] = err.getvalue()
print(json.dumps(out))
""")
    assert "compiling `big` (its parameters) needs" in result["compile"]
    assert "GiB of memory available on this machine" in result["compile"]
    assert "--allow-large" in result["compile"]
    assert result["train_exit"] == 1
    assert "training `tiny` (batch 64, adam" in result["train"]
    assert "2.0 GiB of memory available" in result["train"]
    assert not (tmp_path / "run" / "last.npz").exists()


@pytest.mark.parametrize("arg", ["s=9223372036854775808", "k=" + "9" * 99, "p=" + "9" * 99,
                                 "s=[1, 4294967296]"])
def test_huge_integer_arguments_are_located_errors(arg):
    text = f"network n {{\n  input x: [3, 32, 32]\n  output x -> conv(8, {arg})\n}}"
    text = text.replace("conv(8, p=", "conv(8, k=3, p=").replace("conv(8, s=", "conv(8, k=3, s=")
    with pytest.raises(netspec.NetspecError) as info:
        netspec.parse(text, "a.net")
    assert "a.net:3:" in str(info.value) and "is too large" in str(info.value)


# ---- files that are not what they say ------------------------------------------------

def npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def test_an_npz_member_declaring_gigabytes_is_refused_from_its_header(tmp_path):
    lying = tmp_path / "lying.npz"
    with zipfile.ZipFile(lying, "w") as z:  # 6 GiB declared, 16 bytes held
        z.writestr("format_version.npy", npy_header((6 << 30,), "|u1") + b"\0" * 16)
    with pytest.raises(CheckpointError, match="declares 6,442,450,944 bytes of data"):
        read_arrays(lying)
    bomb = tmp_path / "bomb.npz"  # a real deflate bomb: 64 MiB of zeros in 64 KiB
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x_train.npy", npy_header((16 << 20,)) + bytes(64 << 20))
    assert bomb.stat().st_size < 200_000
    with pytest.raises(FileLimitError, match="declares 64.0 MiB"):
        load_npz(bomb, budget=32 << 20)


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_special_files_are_refused_as_data_and_checkpoints(tmp_path, kind):
    target = tmp_path / "file"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero")
    what = "a FIFO" if kind == "fifo" else "a device"
    with pytest.raises(CheckpointError, match=what):
        read_arrays(target)
    with pytest.raises(DataError, match=what):
        read_idx(target)
    with pytest.raises(DataError, match=what):
        read_cifar_batch(target)
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    (mnist / "train-images-idx3-ubyte").symlink_to(target)
    with pytest.raises(DataError, match=what):
        load_dataset(TrainConfig.from_spec({"data": {"type": "mnist", "path": str(mnist)}}))


def idx_bytes(dtype_code: int, dims: tuple[int, ...], body: bytes) -> bytes:
    return (bytes([0, 0, dtype_code, len(dims)]) + np.asarray(dims, ">i4").tobytes() + body)


def test_idx_sizes_come_from_the_header_before_inflating(tmp_path):
    huge = tmp_path / "huge.gz"  # declares 2**60 bytes of images, holds a few
    huge.write_bytes(gzip.compress(idx_bytes(0x08, (1 << 20, 1 << 20, 1 << 20), b"\0" * 64)))
    with pytest.raises(DataError, match="more than the"):
        read_idx(huge)
    padded = tmp_path / "padded.gz"  # a gzip bomb behind a small header: 1 image, 64 MiB
    padded.write_bytes(gzip.compress(idx_bytes(0x08, (1, 28, 28), bytes(64 << 20))))
    with pytest.raises(DataError, match="does not match the header"):
        read_idx(padded)
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(idx_bytes(0x08, (2, 3), bytes(range(6)))))
    np.testing.assert_array_equal(read_idx(good), np.arange(6).reshape(2, 3))


def test_a_billion_laughs_pickle_is_refused_quickly(tmp_path):
    laugh: list = [0]
    knot: tuple = (0,)
    for _ in range(60):  # 2**60 elements when walked, a few KB when pickled
        laugh, knot = [laugh, laugh], (knot, knot)
    deep: list = [0]
    for _ in range(60):  # nested without sharing: linear, refused by type instead
        deep = [deep]
    # {knot: 1} cannot even be built here (hashing the key never ends), so by hand:
    # EMPTY_DICT, the key's own pickle, BININT1 1, SETITEM, STOP.
    knot_dict = b"\x80\x02}" + pickle.dumps(knot, protocol=2)[2:-1] + b"K\x01s."
    for batch, message in [
            ({b"data": np.zeros((1, 3072), np.uint8), b"labels": laugh}, "billion laughs"),
            (knot_dict, "billion laughs"),
            ({b"data": np.zeros((1, 3072), np.uint8), b"labels": deep}, "flat list"),
            ({b"data": deep, b"labels": [0]}, "'data' must be an array")]:
        path = tmp_path / "data_batch_1"
        path.write_bytes(batch if isinstance(batch, bytes) else pickle.dumps(batch, protocol=2))
        assert path.stat().st_size < 10_000
        with pytest.raises(DataError, match=message):
            read_cifar_batch(path)
    real = tmp_path / "real_batch"  # what CIFAR-10's own batches hold still loads
    real.write_bytes(pickle.dumps({b"batch_label": b"training batch 1 of 5",
                                   b"labels": [3, 1], b"data": np.ones((2, 3072), np.uint8),
                                   b"filenames": [b"a.png", b"b.png"]}, protocol=2))
    x, y = read_cifar_batch(real)
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [3, 1]


class _HugeArray:
    def __reduce__(self):
        core = getattr(np, "_core", None) or np.core
        return core.multiarray._reconstruct, (np.ndarray, (1 << 50,), b"b")


def test_a_pickled_array_declaring_more_than_memory_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _HugeArray(), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="larger than the memory available"):
        read_cifar_batch(path)


# ---- labels --------------------------------------------------------------------------

def npz_data(tmp_path: Path, labels) -> TrainConfig:
    y = np.asarray(labels)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((len(y), 4), np.float32), y_train=y)
    return TrainConfig.from_spec({"data": {"type": "npz", "path": str(path)}})


@pytest.mark.parametrize("labels, message", [
    ([0, 1, 300_000_000], "label 300,000,000: more classes than the limit"),
    ([0, 1, 1 << 40], "more classes than the limit"),
    ([0, 1, -1], "non-negative integer class labels"),
    ([0.0, 1.5, 2.0], "non-negative integer class labels"),
])
def test_bad_labels_are_refused_not_tabulated_or_wrapped(tmp_path, labels, message):
    with pytest.raises(DataError, match=message):
        load_dataset(npz_data(tmp_path, labels))


def mnist_dir(tmp_path: Path, label_code: int, labels: bytes) -> Path:
    root = tmp_path / "mnist"
    root.mkdir()
    for split, n in (("train", 4), ("t10k", 4)):
        (root / f"{split}-images-idx3-ubyte").write_bytes(idx_bytes(0x08, (n, 2, 2),
                                                                    bytes(4 * n)))
        (root / f"{split}-labels-idx1-ubyte").write_bytes(idx_bytes(label_code, (n,), labels))
    return root


@pytest.mark.parametrize("code, labels, message", [
    (0x09, np.array([0, 1, -1, 2], "i1").tobytes(), "negative label \\(-1\\)"),
    (0x0D, np.array([0, 1.5, 2, 3], ">f4").tobytes(), "integer class labels, found float32"),
])
def test_mnist_labels_that_are_negative_or_fractional_are_errors(tmp_path, code, labels,
                                                                 message):
    root = mnist_dir(tmp_path, code, labels)
    with pytest.raises(DataError, match=message):
        load_dataset(TrainConfig.from_spec({"data": {"type": "mnist", "path": str(root),
                                                     "val": 0}}))


# ---- checkpoints: NaN, divergence, tampering, temporaries ------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hostile_train")
    spec = root / "tiny.net"
    spec.write_text(SPEC)
    assert main(["train", str(spec), "-o", str(root / "run"), "--no-progress",
                 "--limit", "300"]) == 0
    return spec, root / "run"


def tampered(run: Path, tmp_path: Path, change) -> Path:
    with np.load(run / "last.npz") as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    out = tmp_path / "tampered.npz"
    np.savez(out, **arrays)
    return out


def set_state(key, value):
    def change(arrays):
        state = json.loads(str(arrays["state"]))
        if value is KeyError:
            del state[key]
        else:
            state[key] = value
        arrays["state"] = np.asarray(json.dumps(state))
    return change


def test_a_checkpoint_of_nan_weights_is_refused_by_eval(run_dir, tmp_path, capsys):
    spec, run = run_dir
    bad = tampered(run, tmp_path, lambda a: a["param/fc.weight"].fill(np.nan))
    assert main(["eval", str(spec), "--weights", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "tampered.npz" in err and "'param/fc.weight' holds NaN" in err
    model = netspec.compile(netspec.load(str(spec)))
    np.savez(tmp_path / "w.npz", **{k: np.full_like(v, np.inf) for k, v in
                                    model.state_dict().items()})
    with pytest.raises(ValueError, match="w.npz: '.*' holds Inf values"):
        model.load(tmp_path / "w.npz")


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(format_version=np.asarray("one")), "'format_version' must be an int"),
    (lambda a: a.update(config=np.asarray("{not json")), "'config' is not valid JSON"),
    (lambda a: a.update(state=np.asarray("[1, 2]")), "'state' must be a JSON object"),
    (lambda a: a.update({"param/fc.weight": np.asarray(["x"] * 3)}),
     "'param/fc.weight' holds <U1 values, not numbers"),
    (lambda a: a.pop("state"), "missing the 'state' record"),
])
@pytest.mark.parametrize("how", ["--weights", "--init-from"])
def test_malformed_checkpoints_name_the_file_and_the_key(run_dir, tmp_path, capsys, change,
                                                         message, how):
    spec, run = run_dir
    bad = tampered(run, tmp_path, change)
    if how == "--weights":
        args = ["eval", str(spec), "--weights", str(bad)]
    else:
        args = ["train", str(spec), "--init-from", str(bad), "-o", str(tmp_path / "r"),
                "--no-progress", "--limit", "100"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "tampered.npz" in err and message in err, err


@pytest.mark.parametrize("change, message", [
    (set_state("model_rng", KeyError), "lacks 'model_rng'"),
    (set_state("model_rng", {"bit_generator": "nonsense"}), "training state is malformed"),
    (set_state("epoch", "two"), "must be counts"),
    (set_state("sums", [1, 2]), "'sums' must hold"),
    (lambda a: a.update({"extra/loader.order": np.asarray([10**9])}), "not a permutation"),
    (lambda a: a.pop("param/fc.weight"), "does not fit this model"),
])
def test_tampered_training_state_fails_resume_with_the_key(run_dir, tmp_path, capsys, change,
                                                           message):
    spec, run = run_dir
    out = tmp_path / "resumed"
    out.mkdir()
    tampered(run, tmp_path, change).rename(out / "last.npz")
    assert main(["train", str(spec), "-o", str(out), "--resume", "--epochs", "2",
                 "--no-progress", "--limit", "300"]) == 1
    err = capsys.readouterr().err
    assert "last.npz" in err and message in err, err


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    net = netspec.parse(SPEC)
    data = load_dataset(TrainConfig().data)
    cfg = TrainConfig.from_spec({"optimizer": {"type": "adam", "lr": 0.01}, "epochs": 1,
                                 "batch": 64, "seed": 1})
    train(netspec.compile(net), cfg, data, tmp_path, progress=False)
    good = (tmp_path / "last.npz").read_bytes()
    wild = TrainConfig.from_spec({"optimizer": {"type": "adam", "lr": 1e10}, "epochs": 3,
                                  "batch": 64, "seed": 1})
    with pytest.raises(DivergedError, match="more than 100 times the first batch"):
        train(netspec.compile(net), wild, data, tmp_path, resume=True, progress=False)
    assert (tmp_path / "last.npz").read_bytes() == good
    assert np.isfinite(load_checkpoint(tmp_path / "last.npz").params["fc.weight"]).all()


def test_temporaries_of_a_killed_save_are_removed_at_the_next_start(run_dir, tmp_path):
    spec, _run = run_dir
    out = tmp_path / "r"
    out.mkdir()
    stale = out / ".last.npz.k3j2x1.tmp"
    stale.write_bytes(b"\0" * 1000)  # what kill -9 during np.savez leaves behind
    keep = out / "notes.tmp"
    keep.write_text("mine")
    assert main(["train", str(spec), "-o", str(out), "--no-progress", "--limit", "100"]) == 0
    assert not stale.exists() and keep.exists()
