"""Training stage: data sets (digits, CIFAR-10 python batches, MNIST IDX, .npz), split, normalized.

Every loader returns raw arrays; ``load_dataset`` then applies the same steps to all of them:
keep the chosen classes, carve a test split if the format has none, carve a validation split,
compute per-channel mean/std on the training split only, and normalize every split with it.
Splits are stratified and seeded with ``split_seed`` (not the training seed), so the test set
stays the same whatever the training run.
"""
from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMATS = ("digits", "cifar10", "mnist", "npz", "imagefolder")


class DataError(Exception):
    """A data file is missing or malformed; names the path and what is wrong."""

    def __init__(self, path: str | Path, message: str):
        self.path, self.message = str(path), message
        super().__init__(f"{path}: {message}")


@dataclass
class RawData:
    """What a format loader returns: images (N, C, H, W) or features (N, D), integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    num_classes: int | None = None


@dataclass
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    mean: np.ndarray = field(default_factory=lambda: np.zeros(1, np.float32))
    std: np.ndarray = field(default_factory=lambda: np.ones(1, np.float32))
    classes: list[int] = field(default_factory=list)  # original label of each class index
    name: str = ""
    class_names: list[str] = field(default_factory=list)  # imagefolder: folder of each class

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Apply the training split's statistics to new inputs (e.g. at predict time)."""
        return normalize(x, self.mean, self.std)


# ---------------------------------------------------------------- the pipeline

def load_dataset(cfg, input_shape: tuple[int, ...] | None = None) -> Dataset:
    """Load ``cfg.data`` (a TrainConfig) or ``cfg`` itself (a DataConfig) into a Dataset.

    The config needs: type, path, val, test, normalize, classes, limit, split_seed.
    ``input_shape`` (the spec's) sizes the images of an image folder, read lazily from disk.
    """
    dc = getattr(cfg, "data", cfg)
    if dc.type == "imagefolder":
        from netspec.train.imagefolder import load_image_folder

        return load_image_folder(dc, input_shape)
    raw = read_raw(dc.type, dc.path)
    return prepare(raw, dc)


def read_raw(kind: str, path: str | None) -> RawData:
    if kind not in LOADERS:
        raise DataError(path or kind, f"unknown data format '{kind}' (known: {', '.join(FORMATS)})")
    if kind != "digits" and not path:
        raise DataError(kind, f"data type '{kind}' needs a path")
    return LOADERS[kind](path)


def prepare(raw: RawData, dc) -> Dataset:
    rng = np.random.default_rng(dc.split_seed)
    x, y = as_images(raw.x_train), raw.y_train.astype(np.int64)
    has_test = raw.x_test is not None
    x_test = as_images(raw.x_test) if has_test else x[:0]
    y_test = raw.y_test.astype(np.int64) if has_test else y[:0]
    classes = class_list(dc, raw, np.concatenate([y, y_test]))
    x, y = keep_classes(x, y, classes)
    x_test, y_test = keep_classes(x_test, y_test, classes)
    if not has_test:
        keep, held = stratified_split(y, dc.test, rng)
        x, y, x_test, y_test = x[keep], y[keep], x[held], y[held]
    keep, held = stratified_split(y, dc.val, rng)
    x, y, x_val, y_val = x[keep], y[keep], x[held], y[held]
    if dc.limit:
        pick = np.sort(rng.permutation(len(y))[: dc.limit])
        x, y = x[pick], y[pick]
    if dc.normalize:
        mean, std = channel_stats(x)
    else:
        mean, std = np.zeros(1, np.float32), np.ones(1, np.float32)
    return Dataset(
        normalize(x, mean, std), y, normalize(x_val, mean, std), y_val,
        normalize(x_test, mean, std), y_test, num_classes=len(classes),
        input_shape=tuple(x.shape[1:]), mean=mean, std=std, classes=classes, name=dc.type,
    )


def class_list(dc, raw: RawData, labels: np.ndarray) -> list[int]:
    """Original labels in class-index order: the configured subset, or 0..K-1."""
    if not dc.classes:
        return list(range(raw.num_classes or int(labels.max(initial=-1)) + 1))
    missing = sorted(set(dc.classes) - set(np.unique(labels).tolist()))
    if missing:
        raise DataError(dc.path or dc.type, f"classes {missing} do not occur in the data")
    return list(dc.classes)


def as_images(x: np.ndarray) -> np.ndarray:
    """(N, H, W) gains a channel axis; (N, D) features and (N, C, H, W) images stay."""
    x = np.asarray(x)
    return x[:, None] if x.ndim == 3 else x


def keep_classes(x: np.ndarray, y: np.ndarray, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Keep the listed original labels and renumber them 0..k-1 in the listed order."""
    lookup = np.full(max(int(y.max(initial=0)), max(classes)) + 1, -1, np.int64)
    lookup[classes] = np.arange(len(classes))
    relabeled = lookup[y]
    mask = relabeled >= 0
    return x[mask], relabeled[mask]


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out), holding out round(fraction * n_c) of each class c."""
    held = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        held.append(idx[: round(fraction * len(idx))])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(y)), held_idx), held_idx


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over (N, H, W) for images; one value for (N, D) features."""
    axes = (0, 2, 3) if x.ndim == 4 else None
    x64 = x.astype(np.float64)
    mean, std = np.atleast_1d(x64.mean(axis=axes)), np.atleast_1d(x64.std(axis=axes))
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std per channel, as float32."""
    shape = (1, -1) + (1,) * (x.ndim - 2) if mean.size > 1 else ()
    out = (x.astype(np.float32) - np.reshape(mean, shape)) / np.reshape(std, shape)
    return out.astype(np.float32, copy=False)


# ---------------------------------------------------------------- digits (built in)

def load_digits(path: str | None = None) -> RawData:
    """scikit-learn's bundled 8x8 digits: 1797 images (N, 1, 8, 8), values 0..16, offline."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return RawData(bunch.images[:, None].astype(np.float32), bunch.target, num_classes=10)


# ---------------------------------------------------------------- CIFAR-10 python batches

class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; any other global is refused.

    A pickle can name any importable callable (os.system, subprocess.Popen, ...) and call it
    while loading, so netspec never uses a plain unpickler on files it is handed.
    """

    def find_class(self, module: str, name: str):
        allowed = allowed_globals()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': netspec unpickles only numpy "
                "arrays, numbers, strings, lists and dicts")
        return allowed[(module, name)]


def allowed_globals() -> dict[tuple[str, str], Callable]:
    """The numpy array-reconstruction globals, under numpy 1.x and 2.x module names."""
    import codecs

    core = getattr(np, "_core", None) or np.core
    table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
             ("_codecs", "encode"): codecs.encode}  # protocol-2 pickles wrap bytes in it
    for prefix in ("numpy.core", "numpy._core"):
        table[(f"{prefix}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        table[(f"{prefix}.multiarray", "scalar")] = core.multiarray.scalar
        table[(f"{prefix}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return table


def safe_unpickle(path: Path) -> object:
    try:
        with open(path, "rb") as f:
            return NumpyOnlyUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(path, f"not a plain data pickle: {e}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise DataError(path, f"truncated or malformed pickle ({type(e).__name__}: {e})") from None


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch: dict with data (N, 3072) uint8 in CHW order and labels (N,) -> (N, 3, 32, 32)."""
    batch = safe_unpickle(path)
    if not isinstance(batch, dict):
        raise DataError(path, f"expected a dict, found {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(path, f"missing 'data' or 'labels' (keys: {sorted(map(str, batch))})")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(path, f"expected data (N, 3072) and N labels, found {data.shape} and "
                              f"{labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(path: str) -> RawData:
    """A cifar-10-batches-py directory: data_batch_1..5 and test_batch."""
    root = Path(path)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if not root.is_dir():
        raise DataError(root, "not a directory (expected CIFAR-10's cifar-10-batches-py)")
    train_files = sorted(root.glob("data_batch_*"))
    if not train_files:
        raise DataError(root, "no data_batch_1..5 files (expected CIFAR-10's python version)")
    train = [read_cifar_batch(p) for p in train_files]
    test = read_cifar_batch(root / "test_batch") if (root / "test_batch").exists() else None
    return RawData(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                   *(test or (None, None)), num_classes=10)


# ---------------------------------------------------------------- MNIST IDX

IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not): magic 0x0000 TT NN, then NN big-endian int32 dims, data."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(path, f"corrupt gzip stream: {e}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES:
        raise DataError(path, f"bad IDX magic number {raw[:4].hex() or '(empty file)'} "
                              "(expected 0000 08 01 for labels, 0000 08 03 for images)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], ">i4")) if len(raw) >= header else ()
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(dims) != ndim or len(raw) != expected:
        raise DataError(path, f"size {len(raw)} bytes does not match the header (dims {dims}, "
                              f"expected {expected} bytes): truncated?")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def find_idx(root: Path, stem: str) -> Path:
    """train-images-idx3-ubyte, train-images.idx3-ubyte, either with .gz."""
    kind = "idx3" if "images" in stem else "idx1"
    for name in (f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte"):
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.exists():
                return candidate
    raise DataError(root, f"missing {stem}-{kind}-ubyte[.gz]")


def load_mnist(path: str) -> RawData:
    """A directory of MNIST-format IDX files (MNIST, Fashion-MNIST, ...)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(root, "not a directory (expected MNIST IDX files)")
    arrays = {stem: read_idx(find_idx(root, stem)) for stem in
              ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    for split in ("train", "t10k"):
        images, labels = arrays[f"{split}-images"], arrays[f"{split}-labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(root, f"{split}: images {images.shape} and labels {labels.shape} "
                                  "do not pair up")
    return RawData(arrays["train-images"][:, None], arrays["train-labels"],
                   arrays["t10k-images"][:, None], arrays["t10k-labels"])


# ---------------------------------------------------------------- .npz arrays

def load_npz(path: str) -> RawData:
    """x_train, y_train and optionally x_test, y_test; loaded with allow_pickle=False."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:
        raise DataError(path, f"cannot read arrays ({e}); object arrays are refused") from None
    except (OSError, EOFError) as e:
        raise DataError(path, f"not a readable .npz file ({e})") from None
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise DataError(path, f"missing array '{key}' (found: {', '.join(arrays) or 'none'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(path, "x_test and y_test must both be present or both absent")
    for split in ("train", "test"):
        if f"x_{split}" in arrays:
            check_pair(path, split, arrays[f"x_{split}"], arrays[f"y_{split}"])
    return RawData(arrays["x_train"], arrays["y_train"], arrays.get("x_test"),
                   arrays.get("y_test"))


def check_pair(path: Path, split: str, x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim not in (2, 3, 4) or y.ndim != 1 or len(x) != len(y):
        raise DataError(path, f"x_{split} {x.shape} / y_{split} {y.shape}: expected x (N, D), "
                              "(N, H, W) or (N, C, H, W) and y (N,)")
    if not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise DataError(path, f"y_{split} must hold non-negative integer class labels")


LOADERS: dict[str, Callable[[str | None], RawData]] = {
    "digits": load_digits, "cifar10": load_cifar10, "mnist": load_mnist, "npz": load_npz,
}


def infer_format(path: str | Path) -> str:
    """Guess the data format of a path given on the command line."""
    p = Path(path)
    if p.suffix == ".npz":
        return "npz"
    if p.is_dir():
        if any(p.glob("data_batch_*")) or (p / "cifar-10-batches-py").is_dir():
            return "cifar10"
        if any(p.glob("*idx3-ubyte*")):
            return "mnist"
        from netspec.train.imagefolder import is_image_folder

        if is_image_folder(p):
            return "imagefolder"
    raise DataError(p, "cannot tell the data format: expected a .npz file, a CIFAR-10 "
                       "batches directory, a directory of MNIST IDX files or a folder of "
                       "images per class")

