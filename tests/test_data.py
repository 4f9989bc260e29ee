"""Data sets, the restricted unpickler, IDX/npz readers, normalization and augmentation."""
import gzip
import pickle
import struct
from dataclasses import replace

import numpy as np
import pytest
from sklearn.datasets import load_digits as sklearn_digits

from netspec.train.augment import Augment, random_crop, random_flip
from netspec.train.config import DataConfig
from netspec.train.data import (
    DataError,
    NumpyOnlyUnpickler,
    infer_format,
    load_dataset,
    read_idx,
)

DIGITS = DataConfig()


# ---------------------------------------------------------------- digits

def test_digits_are_images_split_three_ways():
    d = load_dataset(DIGITS)
    assert d.x_train.shape[1:] == (1, 8, 8) and d.input_shape == (1, 8, 8)
    assert d.x_train.dtype == np.float32 and d.num_classes == 10
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 1797
    assert len(d.y_test) == pytest.approx(0.2 * 1797, abs=10)
    assert np.bincount(d.y_test).min() >= 35  # stratified: every class ~20%


def test_the_shipped_digits_equal_scikit_learns():
    from netspec.train.data import load_digits

    raw, bunch = load_digits(), sklearn_digits()
    np.testing.assert_array_equal(raw.x_train[:, 0], bunch.images.astype(np.float32))
    np.testing.assert_array_equal(raw.y_train, bunch.target)
    assert raw.x_train.dtype == np.float32 and raw.x_train.shape == (1797, 1, 8, 8)


def test_digits_split_is_fixed_and_disjoint():
    raw = load_dataset(replace(DIGITS, normalize=False))
    again = load_dataset(replace(DIGITS, normalize=False))
    np.testing.assert_array_equal(raw.x_test, again.x_test)
    rows = {r.tobytes() for r in sklearn_digits().images.astype(np.float32)}
    seen = [{x[0].tobytes() for x in split} for split in (raw.x_train, raw.x_val, raw.x_test)]
    assert all(s <= rows for s in seen)
    # digits has a few duplicate images; the splits share at most those
    assert len(seen[0] & seen[2]) < 5 and len(seen[0] & seen[1]) < 5


def test_normalization_statistics_come_from_the_training_split_only():
    raw = load_dataset(replace(DIGITS, normalize=False))
    d = load_dataset(DIGITS)
    assert d.mean[0] == pytest.approx(raw.x_train.astype(np.float64).mean(), rel=1e-6)
    assert d.std[0] == pytest.approx(raw.x_train.astype(np.float64).std(), rel=1e-6)
    assert d.x_train.mean() == pytest.approx(0, abs=1e-5)
    assert d.x_train.std() == pytest.approx(1, abs=1e-4)
    assert abs(d.x_test.mean()) > 1e-4  # the test split is only shifted, not re-centred
    np.testing.assert_allclose(d.normalize(raw.x_test), d.x_test, rtol=1e-6)


def test_class_subset_is_relabelled_in_the_given_order():
    d = load_dataset(replace(DIGITS, classes=[7, 3], normalize=False))
    assert d.num_classes == 2 and d.classes == [7, 3]
    full = load_digits_by_label()
    first_seven = {x[0].tobytes() for x in d.x_train[d.y_train == 0]}
    assert first_seven <= full[7]


def load_digits_by_label():
    b = sklearn_digits()
    return {c: {x.astype(np.float32).tobytes() for x in b.images[b.target == c]}
            for c in range(10)}


def test_limit_caps_training_examples():
    assert len(load_dataset(replace(DIGITS, limit=100)).y_train) == 100


# ---------------------------------------------------------------- CIFAR-10 batches

def write_cifar_batch(path, n, seed):
    """CIFAR-10's python format: a protocol-2 pickle of a dict with bytes keys."""
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"test batch", b"labels": rng.integers(0, 10, n).tolist(),
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"filenames": [b"img%d.png" % i for i in range(n)]}
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return batch


@pytest.fixture
def cifar_dir(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    batches = [write_cifar_batch(root / f"data_batch_{i}", 30, i) for i in (1, 2)]
    write_cifar_batch(root / "test_batch", 20, 9)
    return root, batches


def test_cifar_batches_load_as_chw_images(cifar_dir):
    root, batches = cifar_dir
    cfg = DataConfig("cifar10", path=str(root.parent), val=0.0, normalize=False)
    d = load_dataset(cfg)
    assert d.x_train.shape == (60, 3, 32, 32) and d.x_test.shape == (20, 3, 32, 32)
    expected = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([b[b"labels"] for b in batches])
    # rows come back in order with val=0; pixel (c, i, j) is data[c*1024 + i*32 + j]
    np.testing.assert_array_equal(d.x_train, expected.astype(np.float32))
    np.testing.assert_array_equal(d.y_train, labels)
    assert d.x_train[5, 2, 3, 4] == batches[0][b"data"][5, 2 * 1024 + 3 * 32 + 4]


def test_cifar_normalization_is_per_channel(cifar_dir):
    d = load_dataset(DataConfig("cifar10", path=str(cifar_dir[0]), val=0.2))
    assert d.mean.shape == (3,) and d.std.shape == (3,)
    np.testing.assert_allclose(d.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)


class Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("payload,name", [
    (lambda: Exploit(), "os.system"),
    (lambda: {b"data": eval}, "builtins.eval"),
    (lambda: {b"labels": __import__("subprocess").Popen}, "subprocess.Popen"),
])
def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch, payload, name):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "cifar"
    root.mkdir()
    (root / "data_batch_1").write_bytes(pickle.dumps(payload(), protocol=2))
    with pytest.raises(DataError, match="refusing to load global") as err:
        load_dataset(DataConfig("cifar10", path=str(root)))
    assert name.split(".")[-1] in str(err.value) and "data_batch_1" in str(err.value)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_reads_numpy_arrays(tmp_path, protocol):
    obj = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "n": np.int64(3), "s": [1, "x"]}
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    with open(path, "rb") as f:
        back = NumpyOnlyUnpickler(f).load()
    np.testing.assert_array_equal(back["a"], obj["a"])
    assert back["n"] == 3 and back["s"] == [1, "x"]


def test_cifar_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="not a directory") as err:
        load_dataset(DataConfig("cifar10", path=str(tmp_path / "missing")))
    assert "missing" in str(err.value)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": 1}, protocol=2)[:-5])
    with pytest.raises(DataError, match="data_batch_1"):
        load_dataset(DataConfig("cifar10", path=str(tmp_path)))


# ---------------------------------------------------------------- MNIST IDX

def idx_bytes(array: np.ndarray) -> bytes:
    """IDX as the MNIST page defines it: 0x0000, type 0x08, ndim, big-endian dims, data."""
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_mnist(root, gz: bool):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (40, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, 40),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, 10)}
    for name, a in arrays.items():
        data = idx_bytes(a)
        (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_load(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz)
    d = load_dataset(DataConfig("mnist", path=str(tmp_path), val=0.0, normalize=False))
    assert d.x_train.shape == (40, 1, 28, 28) and d.num_classes == 10
    np.testing.assert_array_equal(d.x_test[:, 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(d.y_train, arrays["train-labels-idx1-ubyte"])
    assert infer_format(tmp_path) == "mnist"


def test_idx_bad_magic_and_truncation_are_reported(tmp_path):
    good = idx_bytes(np.zeros((2, 3, 3)))
    (tmp_path / "magic").write_bytes(b"\x12\x34" + good[2:])
    with pytest.raises(DataError, match="bad IDX magic") as err:
        read_idx(tmp_path / "magic")
    assert "magic" in str(err.value)
    (tmp_path / "short").write_bytes(good[:-4])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")


def test_mnist_missing_file_is_named(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels"):
        load_dataset(DataConfig("mnist", path=str(tmp_path)))


# ---------------------------------------------------------------- .npz

def test_npz_without_test_split_gets_one_carved(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.standard_normal((100, 5)).astype(np.float32),
             y_train=np.repeat(np.arange(4), 25))
    d = load_dataset(DataConfig("npz", path=str(tmp_path / "d.npz"), val=0.1, test=0.2))
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (72, 8, 20)
    assert d.input_shape == (5,) and d.num_classes == 4


def test_npz_with_test_split_keeps_it(tmp_path):
    x = np.zeros((10, 6, 6), np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(10) % 2, x_test=x[:4],
             y_test=np.array([0, 1, 0, 1]))
    d = load_dataset(DataConfig("npz", path=str(tmp_path / "d.npz"), val=0.0))
    assert d.x_train.shape == (10, 1, 6, 6) and len(d.y_test) == 4


@pytest.mark.parametrize("arrays,message", [
    ({"x_train": np.zeros((3, 2))}, "missing array 'y_train'"),
    ({"x_train": np.zeros((3, 2)), "y_train": np.zeros(4, int)}, "expected x"),
    ({"x_train": np.zeros((3, 2)), "y_train": np.zeros(3)}, "integer class labels"),
    ({"x_train": np.zeros((3, 2)), "y_train": np.zeros(3, int), "x_test": np.zeros((1, 2))},
     "both be present"),
    ({"x_train": np.array([{}, {}], dtype=object), "y_train": np.zeros(2, int)},
     "pickled Python objects, which netspec never loads"),
])
def test_malformed_npz_is_reported(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(DataConfig("npz", path=str(path)))
    assert str(path) in str(err.value)


def test_missing_npz_names_the_path(tmp_path):
    with pytest.raises(DataError, match="no such file") as err:
        load_dataset(DataConfig("npz", path=str(tmp_path / "none.npz")))
    assert "none.npz" in str(err.value)


# ---------------------------------------------------------------- augmentation

def crop_reference(x, pad, dy, dx):
    """One image at a time, by slicing the zero-padded image."""
    out = np.empty_like(x)
    for i in range(len(x)):
        p = np.pad(x[i], ((0, 0), (pad, pad), (pad, pad)))
        out[i] = p[:, dy[i]:dy[i] + x.shape[2], dx[i]:dx[i] + x.shape[3]]
    return out


def test_random_crop_equals_per_image_slicing_of_the_padded_image():
    x = np.random.default_rng(0).standard_normal((16, 3, 7, 5)).astype(np.float32)
    got = random_crop(x, 2, np.random.default_rng(1))
    offsets = np.random.default_rng(1)
    dy, dx = offsets.integers(0, 5, 16), offsets.integers(0, 5, 16)
    np.testing.assert_array_equal(got, crop_reference(x, 2, dy, dx))
    assert got.dtype == np.float32


def test_random_flip_mirrors_the_chosen_images():
    x = np.random.default_rng(0).standard_normal((32, 2, 4, 4))
    got = random_flip(x, np.random.default_rng(5))
    chosen = np.random.default_rng(5).random(32) < 0.5
    np.testing.assert_array_equal(got[chosen], x[chosen][..., ::-1])
    np.testing.assert_array_equal(got[~chosen], x[~chosen])
    assert 0 < chosen.sum() < 32


def test_augment_is_seeded_and_none_is_identity():
    x = np.random.default_rng(0).standard_normal((8, 1, 8, 8))
    aug = Augment("crop_flip", pad=2)
    a = aug(x, np.random.default_rng(3))
    np.testing.assert_array_equal(a, aug(x, np.random.default_rng(3)))
    assert not np.array_equal(a, x)
    assert Augment("none")(x, np.random.default_rng(3)) is x
