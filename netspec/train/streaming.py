"""Training stage: a torch DataLoader over data read from disk (an image folder), per epoch.

Worker processes decode and normalize the images of upcoming batches while the model trains
on the current one. The batches follow the run's epoch order exactly: batch k of worker
``rank`` is ``order[k * batch:(k + 1) * batch][rank::world]``, from the batch the run is at
(a resumed run continues mid-epoch), so streamed and in-memory data train identically.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class IndexedImages(Dataset):
    """(index, image (C, H, W), label) by row of a lazily read split."""

    def __init__(self, images, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return i, torch.from_numpy(self.images[i]), int(self.labels[i])


class EpochBatches(Sampler):
    """This worker's share of each global batch of the epoch, from batch ``start`` on."""

    def __init__(self, order: np.ndarray, batch: int, start: int, rank: int, world: int):
        self.order, self.batch, self.start = order, batch, start
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return max(0, -(-len(self.order) // self.batch) - self.start)

    def __iter__(self):
        for k in range(self.start, self.start + len(self)):
            yield self.order[k * self.batch:(k + 1) * self.batch][self.rank::self.world].tolist()


def loader_workers(world: int) -> int:
    """Decoding processes per training process: the cores shared among the trainers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return int(os.environ.get("NETSPEC_LOADER_WORKERS", max(1, (cores or 1) // world)))


def epoch_loader(data, order: np.ndarray, batch: int, start: int, workers, pin: bool
                 ) -> DataLoader:
    """Batches (indices, x, y) of ``data``'s training split for the rest of the epoch."""
    n = loader_workers(workers.world)
    return DataLoader(IndexedImages(data.x_train, data.y_train),
                      batch_sampler=EpochBatches(order, batch, start, workers.rank,
                                                 workers.world),
                      num_workers=n, pin_memory=pin, prefetch_factor=4 if n else None)
