"""Training stage: data augmentation on (N, C, H, W) batches, vectorized and seeded.

``Augment.draw`` takes the same random numbers from the same stream as ``Augment.__call__``
without touching the images, so the torch backend applies identical crops and flips on the
device (netspec.train.torch_augment).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


def random_crop(x: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad by ``pad`` on each side, then crop an H x W window at a random offset per image.

    x: (N, C, H, W) -> (N, C, H, W); offsets uniform in [0, 2 * pad] on each axis.
    """
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dy = rng.integers(0, 2 * pad + 1, size=n)
    dx = rng.integers(0, 2 * pad + 1, size=n)
    rows = (dy[:, None] + np.arange(h))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx[:, None] + np.arange(w))[:, None, None, :]  # (N, 1, 1, W)
    return padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]


def random_flip(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each image left-right with probability ``p``."""
    flip = rng.random(len(x)) < p
    return np.where(flip[:, None, None, None], x[..., ::-1], x)


@dataclass(frozen=True)
class Augment:
    """The configured augmentation: "none", "crop", "flip" or "crop_flip"."""

    type: str = "none"
    pad: int = 2
    flip_p: float = 0.5

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if x.ndim != 4 or self.type == "none":
            return x
        if "crop" in self.type and self.pad > 0:
            x = random_crop(x, self.pad, rng)
        if "flip" in self.type:
            x = random_flip(x, rng, self.flip_p)
        return x

    def draw(self, n: int, ndim: int, rng: np.random.Generator) -> Draws | None:
        """The random offsets and flips ``__call__`` would draw for n images, in its order."""
        if ndim != 4 or self.type == "none":
            return None
        draws = Draws()
        if "crop" in self.type and self.pad > 0:
            draws = replace(draws, dy=rng.integers(0, 2 * self.pad + 1, size=n),
                            dx=rng.integers(0, 2 * self.pad + 1, size=n))
        if "flip" in self.type:
            draws = replace(draws, flip=rng.random(n) < self.flip_p)
        return draws


@dataclass(frozen=True)
class Draws:
    """Per-image crop offsets (dy, dx in [0, 2 * pad]) and flips of one batch; None: not drawn."""

    dy: np.ndarray | None = None
    dx: np.ndarray | None = None
    flip: np.ndarray | None = None

    def take(self, rows) -> Draws:
        """The draws of some images of the batch (a DDP worker's share)."""
        pick = (lambda a: None if a is None else a[rows])
        return Draws(pick(self.dy), pick(self.dx), pick(self.flip))
