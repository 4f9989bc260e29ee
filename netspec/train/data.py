"""Training stage: data sets (digits, CIFAR-10 python batches, MNIST IDX, .npz), split, normalized.

Every loader returns raw arrays; ``load_dataset`` then applies the same steps to all of them:
keep the chosen classes, carve a test split if the format has none, carve a validation split,
compute per-channel mean/std on the training split only, and normalize every split with it.
Splits are stratified and seeded with ``split_seed`` (not the training seed), so the test set
stays the same whatever the training run.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

FORMATS = ("digits", "cifar10", "mnist", "npz", "imagefolder", "text", "copy", "sort")


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
    # (seed, epoch) -> that epoch's (x_train, y_train), the same count every epoch; the loop
    # calls it as each epoch starts (text: windows at a random offset, netspec.train.text)
    recut: Callable[[int, int], tuple[np.ndarray, np.ndarray]] | None = field(
        default=None, repr=False)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Apply the training split's statistics to new inputs (e.g. at predict time)."""
        return normalize(x, self.mean, self.std)


# ---------------------------------------------------------------- the pipeline

def load_dataset(cfg, input_shape: tuple[int, ...] | None = None) -> Dataset:
    """Load ``cfg.data`` (a TrainConfig) or ``cfg`` itself (a DataConfig) into a Dataset.

    The config needs: type, path, val, test, normalize, classes, limit, split_seed.
    ``input_shape`` (the spec's) sizes the images of an image folder, read lazily from disk.
    A TrainConfig's ``normalize = [mean, std]`` replaces the training split's statistics.
    """
    dc = getattr(cfg, "data", cfg)
    fixed = cfg.normalize if hasattr(cfg, "data") else None
    if dc.type == "imagefolder":
        from netspec.train.imagefolder import load_image_folder

        return load_image_folder(dc, input_shape, fixed)
    if fixed is not None and dc.type in ("text", "copy", "sort"):
        from netspec.train.config import ConfigError

        raise ConfigError("normalize", f"{dc.type} data is token ids, which are not "
                                       "normalized", "drop normalize")
    if dc.type == "text":
        from netspec.train.text import load_text

        if not dc.context:
            raise DataError(dc.path, "text data needs a context length (data.context)")
        return load_text(dc.path, dc.context, dc.val, dc.test, dc.limit, dc.offset)
    if dc.type in ("copy", "sort"):
        from netspec.train.tasks import length_for, make_task

        length = dc.length or (length_for(input_shape, dc.type) if input_shape else None)
        if not length:
            raise DataError(f"data = {dc.type}", "the task needs a sequence length "
                                                 "(data.length, or the spec's input [T])")
        data = make_task(dc.type, length, dc.examples, dc.val, dc.test, dc.split_seed)
        if dc.limit:
            data.x_train, data.y_train = data.x_train[:dc.limit], data.y_train[:dc.limit]
        return data
    raw = read_raw(dc.type, dc.path)
    return prepare(raw, dc, fixed)


def read_raw(kind: str, path: str | None) -> RawData:
    if kind not in LOADERS:
        raise DataError(path or kind, f"unknown data format '{kind}' (known: {', '.join(FORMATS)})")
    if kind != "digits" and not path:
        raise DataError(kind, f"data type '{kind}' needs a path")
    return LOADERS[kind](path)


def prepare(raw: RawData, dc, fixed: list | None = None) -> Dataset:
    rng = np.random.default_rng(dc.split_seed)
    where = dc.path or dc.type
    x, y = as_images(raw.x_train), check_labels(where, raw.y_train, "training labels")
    has_test = raw.x_test is not None
    x_test = as_images(raw.x_test) if has_test else x[:0]
    y_test = check_labels(where, raw.y_test, "test labels") if has_test else y[:0]
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
    if fixed is not None:
        mean, std = fixed_stats(fixed, x.dtype, x.shape[1] if x.ndim > 1 else 1)
    elif dc.normalize:
        mean, std = channel_stats(x)
    else:
        mean, std = np.zeros(1, np.float32), np.ones(1, np.float32)
    return Dataset(
        normalize(x, mean, std), y, normalize(x_val, mean, std), y_val,
        normalize(x_test, mean, std), y_test, num_classes=len(classes),
        input_shape=tuple(x.shape[1:]), mean=mean, std=std, classes=classes, name=dc.type,
    )


MAX_CLASSES = 1_000_000  # more classes than this is a corrupt label, not a data set


def check_labels(path: str | Path, labels: np.ndarray, name: str) -> np.ndarray:
    """Class labels as int64: integers from 0, or a DataError naming the file. Floats are
    refused rather than truncated, negative labels rather than wrapped to the last class."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(path, f"{name} must be one label per example, found shape "
                              f"{labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise DataError(path, f"{name} must be integer class labels, found {labels.dtype} "
                              "values (netspec does not round them)")
    if labels.size and labels.min() < 0:
        raise DataError(path, f"{name} holds a negative label ({int(labels.min())}); class "
                              "labels count from 0")
    if labels.size and labels.max() >= MAX_CLASSES:
        raise DataError(path, f"{name} holds the label {int(labels.max()):,}: more classes "
                              f"than the limit of {MAX_CLASSES:,}, so the file is corrupt")
    return labels.astype(np.int64)


def class_list(dc, raw: RawData, labels: np.ndarray) -> list[int]:
    """Original labels in class-index order: the configured subset, or 0..K-1."""
    if raw.num_classes is not None and labels.size and labels.max() >= raw.num_classes:
        raise DataError(dc.path or dc.type, f"label {int(labels.max())} is out of range for "
                                            f"{raw.num_classes} classes")
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
    if not classes:
        return x[:0], y[:0]
    # By sorted search, not a table indexed by label: a label of 2**40 must not build one.
    wanted = np.asarray(classes, np.int64)
    order = np.argsort(wanted, kind="stable")
    ranked = wanted[order]
    pos = np.minimum(np.searchsorted(ranked, y), len(ranked) - 1)
    mask = ranked[pos] == y
    relabeled = order[pos]
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


def fixed_stats(fixed: list, dtype: np.dtype, channels: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """`normalize = [mean, std]` in the data's own units. As torchvision's ToTensor then
    Normalize: 8-bit images (uint8 arrays, image files) are read as values in [0, 1], i.e.
    (x / 255 - mean) / std = (x - 255 mean) / (255 std); other data as it is."""
    scale = 255.0 if np.dtype(dtype) == np.uint8 else 1.0
    mean, std = (np.asarray(v, np.float64) for v in fixed)
    for values in (mean, std):
        if values.size not in (1, channels):
            from netspec.train.config import ConfigError

            count = "one number" if channels == 1 else f"1 or {channels} numbers"
            raise ConfigError("normalize", f"{values.size} values per statistic, but the data "
                                           f"has {channels} channel{'s' if channels > 1 else ''}",
                              f"give {count} for the mean and for the std")
    mean, std = (np.broadcast_to(v, (channels,)) if channels > 1 else v for v in (mean, std))
    return (mean * scale).astype(np.float32), (std * scale).astype(np.float32)


def normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std per channel, as float32."""
    shape = (1, -1) + (1,) * (x.ndim - 2) if mean.size > 1 else ()
    out = (x.astype(np.float32) - np.reshape(mean, shape)) / np.reshape(std, shape)
    return out.astype(np.float32, copy=False)


def fit_sequence_view(data: Dataset, shape: tuple[int, ...]) -> bool:
    """Read one-channel images [1, H, W] as sequences [H, W] (row t is step t, the
    "sequential MNIST" view) when the network's input is [H, W]; True if it applied."""
    if len(shape) != 2 or tuple(data.input_shape) != (1, *shape):
        return False
    for split in ("x_train", "x_val", "x_test"):
        x = getattr(data, split)
        setattr(data, split, x.reshape(len(x), *shape))
    data.input_shape = tuple(shape)
    return True


# ---------------------------------------------------------------- digits (built in)

def load_digits(path: str | None = None) -> RawData:
    """The 8x8 digits shipped in the package (netspec/data/digits.npz, the copy scikit-learn
    bundles; netspec/data/README.md says where it comes from): 1797 images (N, 1, 8, 8),
    values 0..16, offline, without importing scikit-learn and SciPy (~2 s)."""
    from importlib.resources import files

    with files("netspec.data").joinpath("digits.npz").open("rb") as f, \
            np.load(f, allow_pickle=False) as archive:
        images, target = archive["images"], archive["target"]
    return RawData(images[:, None].astype(np.float32), target.astype(np.int64), num_classes=10)


# ---------------------------------------------------------------- CIFAR-10 python batches

def _unshared(load_op):
    """A memo fetch that refuses shared containers (see NumpyOnlyUnpickler)."""
    def load(self):
        load_op(self)
        if isinstance(self.stack[-1], (list, tuple, dict)):
            raise pickle.UnpicklingError(
                "the pickle shares a list, tuple or dict between several places; CIFAR-10 "
                "batches never do, and a few such references nested make a small file "
                "expand exponentially (a \"billion laughs\")")
    return load


class NumpyOnlyUnpickler(pickle._Unpickler):
    """Unpickles plain containers and numpy arrays only; any other global is refused.

    A pickle can name any importable callable (os.system, subprocess.Popen, ...) and call it
    while loading, so netspec never uses a plain unpickler on files it is handed. Its work
    is bounded too: the pure-Python unpickler (so each operation can be checked) refuses a
    memo reference to a container, which is how a 3 KB pickle holds 2**60 elements whose
    hashing, printing or conversion would never finish; the rest is linear in the file.
    """

    dispatch: ClassVar[dict] = {
        **pickle._Unpickler.dispatch,
        pickle.GET[0]: _unshared(pickle._Unpickler.load_get),
        pickle.BINGET[0]: _unshared(pickle._Unpickler.load_binget),
        pickle.LONG_BINGET[0]: _unshared(pickle._Unpickler.load_long_binget),
    }

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
        table[(f"{prefix}.multiarray", "_reconstruct")] = _bounded_reconstruct
        table[(f"{prefix}.multiarray", "scalar")] = core.multiarray.scalar
        table[(f"{prefix}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return table


MAX_PICKLE_BYTES = 512 << 20  # a CIFAR-10 batch is 31 MB; unpickling is linear in the file


def _bounded_reconstruct(subtype, shape, dtype):
    """numpy's array reconstructor, refusing a shape that declares more memory than is
    available (it would allocate it before the pickle's data is even read)."""
    from netspec.files import available_memory

    core = getattr(np, "_core", None) or np.core
    dims = shape if isinstance(shape, tuple) else (shape,)
    if not all(isinstance(d, int) and d >= 0 for d in dims):
        raise pickle.UnpicklingError(f"bad array shape {dims!r:.80}")
    if math.prod(dims) * np.dtype(dtype).itemsize > available_memory():
        raise pickle.UnpicklingError(f"an array of shape {dims!r:.80} is larger than the "
                                     "memory available")
    return core.multiarray._reconstruct(subtype, shape, dtype)


def safe_unpickle(path: Path) -> object:
    """Unpickle a data file with NumpyOnlyUnpickler. Its work is bounded by the file: only a
    regular file of at most MAX_PICKLE_BYTES is read, unpickling is linear in it, and an
    array may not declare more memory than is available (see _bounded_reconstruct)."""
    from netspec.files import FileLimitError, read_bytes

    try:
        data = read_bytes(path, MAX_PICKLE_BYTES, "pickle")
    except FileLimitError as e:
        raise DataError(path, e.message) from None
    try:
        return NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except MemoryError:
        raise DataError(path, "the pickle declares more memory than is available") from None
    except pickle.UnpicklingError as e:
        raise DataError(path, f"not a plain data pickle: {e}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise DataError(path, f"truncated or malformed pickle ({type(e).__name__}: {e})") from None


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch: dict with data (N, 3072) uint8 in CHW order and labels (N,) -> (N, 3, 32, 32)."""
    batch = safe_unpickle(path)
    if not isinstance(batch, dict):
        raise DataError(path, f"expected a dict, found {type(batch).__name__}")
    batch = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        keys = sorted(repr(k)[:40] for k in batch if isinstance(k, str))[:20]
        raise DataError(path, f"missing 'data' or 'labels' (keys: {keys})")
    # Types are checked before anything walks the values: a small pickle can hold a list
    # nested a thousand deep through shared references (a "billion laughs"), which
    # np.asarray or str() would walk element by element for ever.
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray):
        raise DataError(path, f"'data' must be an array, found {type(data).__name__}")
    if isinstance(labels, (list, tuple)):
        if not all(type(v) is int for v in labels):
            raise DataError(path, "'labels' must be a flat list of integers")
    elif not isinstance(labels, np.ndarray):
        raise DataError(path, f"'labels' must be a list or an array, found "
                              f"{type(labels).__name__}")
    labels = check_labels(path, np.asarray(labels), "labels")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(path, f"expected data (N, 3072) and N labels, found {data.shape} and "
                              f"{labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


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
    """An IDX file (gzipped or not): magic 0x0000 TT NN, then NN big-endian int32 dims, data.

    The dimensions are read first and the data's size checked against the file (or, for
    gzip, against the memory available) before it is read or inflated; only a regular file
    is opened, so a FIFO or /dev/zero behind the name is refused instead of read forever."""
    from netspec.files import FileLimitError, check_fits, open_regular

    try:
        with open_regular(path, "data file") as f:
            size = os.fstat(f.fileno()).st_size
            gzipped = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            stream = _GunzipReader(f, path) if gzipped else f
            head = stream.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in IDX_DTYPES:
                raise DataError(path, f"bad IDX magic number {head.hex() or '(empty file)'} "
                                      "(expected 0000 08 01 for labels, 0000 08 03 for images)")
            ndim = head[3]
            raw_dims = stream.read(4 * ndim)
            if len(raw_dims) != 4 * ndim:
                raise DataError(path, f"truncated header: {ndim} dimensions declared")
            dims = tuple(int(d) for d in np.frombuffer(raw_dims, ">i4"))
            dtype = np.dtype(IDX_DTYPES[head[2]])
            nbytes = math.prod(dims) * dtype.itemsize
            header = 4 + 4 * ndim
            if gzipped:
                check_fits(path, nbytes, "IDX file (its header's dimensions)")
            elif size != header + nbytes:
                raise DataError(path, f"size {size} bytes does not match the header (dims "
                                      f"{dims}, expected {header + nbytes} bytes): truncated?")
            body = stream.read(nbytes)
            extra = stream.read(1)
    except FileLimitError as e:
        raise DataError(path, e.message) from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(path, f"corrupt gzip stream: {e}") from None
    if len(body) != nbytes or extra:
        raise DataError(path, f"size does not match the header (dims {dims}, expected "
                              f"{header + nbytes} bytes): truncated?")
    return np.frombuffer(body, dtype).reshape(dims).astype(dtype.newbyteorder("="))


class _GunzipReader:
    """Reads a gzip stream incrementally: read(n) inflates at most n bytes, so a header can
    be read (and the size it declares checked) before the body is inflated."""

    def __init__(self, f, path: Path):
        self.f, self.path = f, path
        self.inflater = zlib.decompressobj(wbits=31)  # gzip container
        self.pending = b""

    def read(self, n: int) -> bytes:
        out = []
        need = n
        while need > 0:
            data = self.pending or self.f.read(1 << 16)
            self.pending = b""
            if not data:
                break
            chunk = self.inflater.decompress(data, need)
            self.pending = self.inflater.unconsumed_tail
            out.append(chunk)
            need -= len(chunk)
            if self.inflater.eof:
                break
        return b"".join(out)


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
    from netspec.files import FileLimitError
    from netspec.files import load_npz as read_npz

    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file")
    if path.is_file():  # (FIFOs and devices: the bounded reader refuses them)
        with open(path, "rb") as f:
            if f.read(2) != b"PK":  # NumPy would take it for a pickle and advise allow_pickle
                raise DataError(path, "not an .npz archive (np.savez writes one)")
    try:
        arrays = read_npz(path, "data set")  # sized from its headers before reading
    except FileLimitError as e:
        raise DataError(path, e.message) from None
    except ValueError as e:
        what = ("holds pickled Python objects, which netspec never loads" if "pickle" in str(e)
                else f"cannot read arrays ({e})")
        raise DataError(path, f"not a plain .npz of arrays: {what}") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:
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
    if x.dtype.kind not in "biuf":
        raise DataError(path, f"x_{split} holds {x.dtype} values; the examples must be numbers")
    if split == "train" and len(x) == 0:
        raise DataError(path, "x_train holds no examples")
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
    if p.suffix in (".txt", ".md", ".text"):
        return "text"
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

