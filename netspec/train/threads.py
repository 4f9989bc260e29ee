"""Training stage: how many BLAS threads a training run's GEMMs use.

A multi-threaded GEMM is split between threads that must all finish before it returns, and
OpenBLAS's idle threads spin between calls. For a small GEMM (a few hundred microseconds)
the split saves little even on idle cores, but on a machine whose cores are busy with other
work every call waits for a descheduled thread: the default digits CNN trained 10x slower
on 2 busy cores with 2 BLAS threads than with 1 (docs/performance.md). So small networks
train on one BLAS thread, and larger ones keep the BLAS default unless told otherwise.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# A layer GEMM below this many multiply-adds per batch (about 2 ms on one core) gains at
# most a millisecond from a second thread, and can lose many when the cores are shared.
SMALL_GEMM_MACS = 2**26


def auto_threads(layer_macs: list[int], batch: int) -> int | None:
    """1 when every layer's GEMM for a batch is small, else None (the BLAS default)."""
    largest = max(layer_macs, default=0) * batch
    return 1 if largest < SMALL_GEMM_MACS else None


@contextmanager
def blas_threads(threads: int | None) -> Iterator[None]:
    """Run the block with at most `threads` BLAS threads (None: leave the BLAS alone).

    threadpoolctl comes with scikit-learn, a netspec dependency; without it this does nothing.
    """
    if threads is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        yield
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield
