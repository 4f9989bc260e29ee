"""Training stage: the crops and flips of netspec.train.augment, applied on a torch device.

The random numbers come from ``Augment.draw`` (the run's NumPy augmentation stream), so a
torch run crops and flips exactly the images the NumPy backend would, in the same way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from netspec.train.augment import Augment, Draws


def random_crop(x: torch.Tensor, pad: int, dy, dx) -> torch.Tensor:
    """Zero-pad by ``pad``, then crop each image's H x W window at offset (dy[i], dx[i])."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.as_tensor(dy, device=x.device)
    dx = torch.as_tensor(dx, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(x: torch.Tensor, flip) -> torch.Tensor:
    """Mirror left-right the images whose ``flip`` is true."""
    mask = torch.as_tensor(flip, device=x.device)[:, None, None, None]
    return torch.where(mask, x.flip(-1), x)


def apply_draws(x: torch.Tensor, draws: Draws, augment: Augment) -> torch.Tensor:
    """Augment a batch (N, C, H, W) on its device with the given draws."""
    if draws.dy is not None:
        x = random_crop(x, augment.pad, draws.dy, draws.dx)
    if draws.flip is not None:
        x = random_flip(x, draws.flip)
    return x
