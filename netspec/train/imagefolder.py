"""Training stage: a folder of images per class (torchvision's ImageFolder layout), read lazily.

    train_dir/cat/0001.png, train_dir/cat/0002.jpg, ..., train_dir/dog/0001.png, ...

Classes are the subfolders in sorted order (class index 0 = the first name, as torchvision
numbers them); images are decoded with Pillow, converted to the spec's channels (L or RGB)
and resized (bilinear) to its input size. Nothing is held in memory but the file list: each
split is an ``ImageArray`` that decodes and normalizes the images a batch asks for, so the
NumPy backend streams from disk in its own process and the torch backend through DataLoader
worker processes (netspec.train.streaming). Splits, class subsets and the limit follow
netspec.train.data with the same seeded stratified splits; the per-channel mean and std come
from a seeded sample of up to STATS_SAMPLE training images.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from netspec.train.data import DataError, Dataset, fixed_stats, stratified_split

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
              ".pgm")
STATS_SAMPLE = 2000
MAX_PIXELS = 64 * 1024 * 1024  # a larger image is refused (a decompression bomb)


def is_image_folder(path: str | Path) -> bool:
    """A directory with at least one subdirectory holding an image file."""
    root = Path(path)
    if not root.is_dir():
        return False
    return any(sub.is_dir() and any(f.suffix.lower() in EXTENSIONS for f in sub.iterdir())
               for sub in root.iterdir())


def scan(root: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(image paths, class index per image, class names) of an ImageFolder directory."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "not a directory (expected one subfolder of images per class)")
    names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise DataError(root, "no class subfolders (expected train_dir/<class>/<image>)")
    paths, labels = [], []
    for index, name in enumerate(names):
        files = sorted(f for f in (root / name).iterdir()
                       if f.is_file() and f.suffix.lower() in EXTENSIONS)
        if not files:
            raise DataError(root / name, f"class folder with no images ({', '.join(EXTENSIONS)})")
        paths += [str(f) for f in files]
        labels += [index] * len(files)
    return paths, np.asarray(labels, np.int64), names


def decode(path: str, shape: tuple[int, int, int]) -> np.ndarray:
    """One image as float32 (C, H, W), values 0..255, in the spec's channels and size."""
    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape
    if channels not in (1, 3):
        raise DataError(path, f"images become 1 (L) or 3 (RGB) channels, not {channels}")
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise DataError(path, f"{image.width}x{image.height} pixels is more than "
                                      f"netspec decodes ({MAX_PIXELS} pixels)")
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (width, height):
                image = image.resize((width, height), Image.BILINEAR)
            array = np.asarray(image, dtype=np.float32)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(path, f"cannot decode the image ({type(e).__name__}: {e})") from None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


@dataclass(frozen=True)
class ImageArray:
    """Images on disk that index like an (N, C, H, W) float32 array, normalized on read."""

    paths: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mean: np.ndarray
    std: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), *self.image_shape)

    ndim = 4
    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.read(self.paths[index])
        picked = np.arange(len(self.paths))[index]
        out = np.empty((len(picked), *self.image_shape), np.float32)
        for row, i in enumerate(picked):
            out[row] = self.read(self.paths[i])
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def read(self, path: str) -> np.ndarray:
        x = decode(path, self.image_shape)
        return ((x - self.mean.reshape(-1, 1, 1)) / self.std.reshape(-1, 1, 1)).astype(np.float32)

    def subset(self, rows: np.ndarray) -> ImageArray:
        return replace(self, paths=tuple(self.paths[i] for i in rows))

    def with_stats(self, mean: np.ndarray, std: np.ndarray) -> ImageArray:
        """The same images normalized with other statistics (a checkpoint's)."""
        return replace(self, mean=np.asarray(mean, np.float32), std=np.asarray(std, np.float32))


def image_shape(paths: list[str], input_shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    """The spec's input shape, or the first image's (channels from its mode)."""
    if input_shape is not None:
        if len(input_shape) != 3:
            raise DataError(paths[0], f"image folders feed image networks (C, H, W), not an "
                                      f"input of shape {list(input_shape)}")
        return tuple(int(d) for d in input_shape)
    from PIL import Image

    with Image.open(paths[0]) as image:
        channels = 1 if image.mode in ("L", "1", "I", "F", "I;16") else 3
        return channels, image.height, image.width


def channel_stats(images: ImageArray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (float64 sums) over a seeded sample of the training images."""
    rows = np.sort(rng.permutation(len(images))[:STATS_SAMPLE])
    total = np.zeros(images.image_shape[0])
    squares = np.zeros(images.image_shape[0])
    for i in rows:
        x = decode(images.paths[i], images.image_shape).astype(np.float64)
        total += x.sum(axis=(1, 2))
        squares += (x * x).sum(axis=(1, 2))
    count = len(rows) * images.image_shape[1] * images.image_shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def load_image_folder(dc, input_shape: tuple[int, ...] | None = None,
                      fixed: list | None = None) -> Dataset:
    """The splits of an ImageFolder directory as lazy ImageArrays (a DataConfig ``dc``);
    ``fixed``: normalize = [mean, std] on pixel values in [0, 1], as torchvision's."""
    paths, labels, names = scan(dc.path)
    shape = image_shape(paths, input_shape)
    rng = np.random.default_rng(dc.split_seed)
    rows = np.arange(len(paths))
    classes = list(range(len(names)))
    if dc.classes:
        missing = sorted(set(dc.classes) - set(classes))
        if missing:
            raise DataError(dc.path, f"classes {missing} do not exist (there are "
                                     f"{len(names)}: 0..{len(names) - 1} = {', '.join(names)})")
        classes = list(dc.classes)
        lookup = np.full(len(names), -1, np.int64)
        lookup[classes] = np.arange(len(classes))
        rows, labels = rows[lookup[labels] >= 0], lookup[labels][lookup[labels] >= 0]
    keep, held = stratified_split(labels, dc.test, rng)
    test_rows, test_y = rows[held], labels[held]
    rows, labels = rows[keep], labels[keep]
    keep, held = stratified_split(labels, dc.val, rng)
    val_rows, val_y = rows[held], labels[held]
    rows, labels = rows[keep], labels[keep]
    if dc.limit:
        pick = np.sort(rng.permutation(len(labels))[: dc.limit])
        rows, labels = rows[pick], labels[pick]
    raw = ImageArray(tuple(paths), shape, np.zeros(shape[0], np.float32),
                     np.ones(shape[0], np.float32))
    train = raw.subset(rows)
    if fixed is not None:  # image files hold 8-bit pixels, read as 0..255
        mean, std = fixed_stats(fixed, np.uint8, shape[0])
    elif dc.normalize:
        mean, std = channel_stats(train, np.random.default_rng(dc.split_seed))
    else:
        mean, std = raw.mean, raw.std
    split = {name: raw.subset(r).with_stats(mean, std)
             for name, r in (("train", rows), ("val", val_rows), ("test", test_rows))}
    return Dataset(split["train"], labels, split["val"], val_y, split["test"], test_y,
                   num_classes=len(classes), input_shape=shape, mean=mean, std=std,
                   classes=classes, name=Path(dc.path).name or "images",
                   class_names=[names[c] for c in classes])
