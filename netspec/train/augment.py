"""Training stage: data augmentation on (N, C, H, W) batches, vectorized and seeded."""
from __future__ import annotations

from dataclasses import dataclass

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
