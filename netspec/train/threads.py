"""Training stage: how many cores a training run uses, and how.

NumPy runs one array operation on one core; only BLAS (the GEMMs) is multi-threaded. Left
at that, a conv network's im2col copies, pooling, ReLU and batch norm (half of a step) run on
one core while the others wait, and OpenBLAS's idle workers spin between GEMMs. So netspec
parallelizes the other way round: `threads(n)` splits every batch over n threads
(netspec.runtime.parallel: each kernel runs one shard per thread, NumPy releases the GIL) and
runs each GEMM on one BLAS thread. The CIFAR CNN step of benchmarks/bench_train_step.py went
from 1.7-2.0x PyTorch's time to 1.1-1.3x on 2 cores (docs/performance.md).

A split costs a thread handoff per kernel call (tens of microseconds) and, on cores busy with
other work, waits for a descheduled thread: the default digits CNN (0.5 ms GEMMs) trained
10x slower on 2 busy cores with 2 BLAS threads than with 1. So networks of small layers train
on one thread, the others on every core this process may use: image networks with the batch
split, vector networks (all GEMM) unsplit on multi-threaded BLAS.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from netspec.runtime.parallel import SMALL_GEMM_MACS, available_cores

__all__ = ["SMALL_GEMM_MACS", "auto_threads", "available_cores", "blas_threads",
           "splits_batch", "threads"]


def auto_threads(layer_macs: list[int], batch: int) -> int:
    """1 when every layer's GEMM for a batch is small, else every available core."""
    largest = max(layer_macs, default=0) * batch
    return 1 if largest < SMALL_GEMM_MACS else available_cores()


def splits_batch(net) -> bool:
    """Whether an analyzed network runs faster with the batch split over the threads than
    unsplit on multi-threaded BLAS: True for image networks (a layer computing a tensor with
    spatial axes: im2col copies, pooling and norms over H x W are half the step), False for
    vector networks (MLPs, linear classifiers, even on flattened images), whose step is almost
    all GEMM; there BLAS's own threads did better (the 784-512-256-10 MLP: 7.0-7.5 ms a step
    unsplit on 2 threads, 7.3-11.8 ms split; docs/performance.md)."""
    return any(len(data.get("shape", ())) >= 2 and data["inputs"]  # a layer, not an input
               for _, data in net.graph.nodes(data=True))


@contextmanager
def blas_threads(threads: int | None) -> Iterator[None]:
    """Run the block with at most `threads` BLAS threads (None: leave the BLAS alone).

    threadpoolctl is a declared dependency; should it be missing this does nothing.
    """
    if threads is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a declared dependency
        yield
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield


@contextmanager
def threads(n: int, split: bool = True) -> Iterator[None]:
    """Run compiled models in the block on n threads: each batch split into n shards, one per
    thread, and one BLAS thread per GEMM; with split=False, unsplit batches on n BLAS threads
    (n = 1: one thread either way). Outside such a block each model chooses for itself
    (netspec.runtime.parallel.auto_plan: NETSPEC_THREADS or every core). Restores the
    previous setting and BLAS threads on exit. Results equal a one-thread run up to float
    rounding (sums over the shards; docs/performance.md, "Threads by default")."""
    from netspec.runtime import parallel

    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads must be a positive integer, not {n!r}")
    before = parallel.get_threads() if parallel.threads_were_set() else None
    parallel.set_threads(n if split else 1)
    try:
        with blas_threads(1 if split else n):
            yield
    finally:
        if before is None:
            parallel.use_default_threads()
        else:
            parallel.set_threads(before)
