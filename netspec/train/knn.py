"""Training stage: the notes' k-nearest-neighbour baseline, fully vectorized, k by cross-validation.

Distances are computed for a block of query rows against all training rows at once:
L2 through ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2 (one matrix product per block), L1 by
broadcasting |a_i - b_j| over a block sized to bound memory. Neighbours are ordered by
(distance, training index) and the vote breaks ties towards the smallest label, so results
never depend on sort internals.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

BLOCK_BYTES = 64 * 2**20  # memory bound for one block of the L1 broadcast


def l2_distances(a: np.ndarray, b: np.ndarray, squared: bool = False) -> np.ndarray:
    """(Na, D), (Nb, D) -> (Na, Nb) Euclidean distances, float64, without an (Na, Nb, D) array."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    d2 = np.einsum("ij,ij->i", a, a)[:, None] - 2.0 * (a @ b.T) + np.einsum("ij,ij->i", b, b)
    np.maximum(d2, 0.0, out=d2)  # rounding can leave tiny negatives
    return d2 if squared else np.sqrt(d2)


def l1_distances(a: np.ndarray, b: np.ndarray, block_bytes: int = BLOCK_BYTES) -> np.ndarray:
    """(Na, D), (Nb, D) -> (Na, Nb) Manhattan distances, broadcast over blocks of rows of a."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    out = np.empty((len(a), len(b)))
    rows = max(1, block_bytes // (8 * max(1, b.size)))
    for start in range(0, len(a), rows):
        block = a[start:start + rows]
        out[start:start + rows] = np.abs(block[:, None, :] - b[None, :, :]).sum(axis=2)
    return out


# ranking only needs a monotone function of the distance: squared L2 skips the sqrt
DISTANCES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "l1": l1_distances,
    "l2": lambda a, b: l2_distances(a, b, squared=True),
}


def nearest(d: np.ndarray, k: int) -> np.ndarray:
    """(M, N) distances -> (M, k) indices of the k nearest, by (distance, index)."""
    k = min(k, d.shape[1])
    part = np.argpartition(d, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(d, part, axis=1)
    out = np.take_along_axis(part, np.lexsort((part, vals), axis=1), axis=1)
    tied = (d <= vals.max(axis=1, keepdims=True)).sum(axis=1) > k  # a tie across the cut
    if tied.any():
        out[tied] = np.argsort(d[tied], axis=1, kind="stable")[:, :k]
    return out


def majority_vote(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(M, k) neighbour labels -> (M,) most frequent label; ties go to the smallest label."""
    counts = np.zeros((len(labels), num_classes), np.int64)
    np.add.at(counts, (np.arange(len(labels))[:, None], labels), 1)
    return counts.argmax(axis=1)


def flatten(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).reshape(len(x), -1)


@dataclass
class KNearestNeighbor:
    """``KNearestNeighbor(k=3, distance="l2").fit(x, y).predict(x_test)``; training memorizes."""

    k: int = 1
    distance: str = "l2"
    rows_per_block: int = 512
    x_train: np.ndarray = field(default=None, repr=False)
    y_train: np.ndarray = field(default=None, repr=False)
    num_classes: int = 0

    def fit(self, x: np.ndarray, y: np.ndarray) -> KNearestNeighbor:
        if self.distance not in DISTANCES:
            raise ValueError(f"unknown distance '{self.distance}' (l1 or l2)")
        self.x_train, self.y_train = flatten(x), np.asarray(y, np.int64)
        self.num_classes = int(self.y_train.max()) + 1
        return self

    def neighbors(self, x: np.ndarray, k: int) -> np.ndarray:
        """(M, k) training indices of the nearest neighbours, query rows in blocks."""
        x, dist = flatten(x), DISTANCES[self.distance]
        return np.concatenate([nearest(dist(x[s:s + self.rows_per_block], self.x_train), k)
                               for s in range(0, len(x), self.rows_per_block)]) \
            if len(x) else np.zeros((0, k), np.int64)

    def predict(self, x: np.ndarray, k: int | None = None) -> np.ndarray:
        k = k or self.k
        return majority_vote(self.y_train[self.neighbors(x, k)], self.num_classes)


@dataclass
class CrossValidation:
    ks: list[int]
    accuracies: np.ndarray  # (len(ks), folds)

    @property
    def mean(self) -> np.ndarray:
        return self.accuracies.mean(axis=1)

    @property
    def best_k(self) -> int:
        """Highest mean accuracy; among equals the smallest k."""
        return self.ks[int(np.argmax(self.mean))]


def cross_validate_k(x: np.ndarray, y: np.ndarray, ks: Sequence[int], folds: int = 5,
                     distance: str = "l2", seed: int = 0) -> CrossValidation:
    """Accuracy of every k on each of ``folds`` seeded folds; neighbours found once per fold."""
    x, y = flatten(x), np.asarray(y, np.int64)
    ks = sorted({int(k) for k in ks})
    parts = np.array_split(np.random.default_rng(seed).permutation(len(y)), folds)
    acc = np.zeros((len(ks), folds))
    classes = int(y.max()) + 1
    for f, held in enumerate(parts):
        train = np.setdiff1d(np.arange(len(y)), held)
        knn = KNearestNeighbor(distance=distance).fit(x[train], y[train])
        labels = knn.y_train[knn.neighbors(x[held], max(ks))]
        for i, k in enumerate(ks):
            acc[i, f] = np.mean(majority_vote(labels[:, :k], classes) == y[held])
    return CrossValidation(ks, acc)


@dataclass
class KnnReport:
    best_k: int
    distance: str
    cross_validation: CrossValidation
    test_accuracy: float
    n_train: int
    n_test: int
    seconds: float

    def to_dict(self) -> dict:
        return {"k": self.best_k, "distance": self.distance, "accuracy": self.test_accuracy,
                "n": self.n_test, "n_train": self.n_train, "seconds": self.seconds,
                "cv": {int(k): float(m) for k, m in zip(self.cross_validation.ks,
                                                        self.cross_validation.mean)}}


def run_knn(data, ks: Sequence[int] = (1, 3, 5, 7, 10), folds: int = 5, distance: str = "l2",
            seed: int = 0) -> KnnReport:
    """``netspec knn``: choose k by cross-validation on train+val, then score the test split."""
    start = time.perf_counter()
    x = np.concatenate([flatten(data.x_train), flatten(data.x_val)])
    y = np.concatenate([data.y_train, data.y_val])
    cv = cross_validate_k(x, y, ks, folds, distance, seed)
    knn = KNearestNeighbor(cv.best_k, distance).fit(x, y)
    accuracy = float(np.mean(knn.predict(data.x_test) == data.y_test))
    return KnnReport(cv.best_k, distance, cv, accuracy, len(y), len(data.y_test),
                     time.perf_counter() - start)
