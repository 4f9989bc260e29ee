"""Training stage: let a training process reuse the memory of its large temporaries.

A training step allocates and frees the same large arrays every time (im2col columns of
tens of MB, their gradients). glibc's malloc serves blocks above its mmap threshold (at most
32 MB) with fresh mmap'd pages and unmaps them on free, and gives the top of its heap back
to the OS above the trim threshold: every step then faults in and zeroes those pages again.
On the 2-core VM of docs/performance.md that was 9,000-13,000 page faults and 11-13% of the
time of a ResNet-block or Inception-module step. Keeping freed memory in the heap makes the
next step reuse it; the peak stays the same, but the process does not shrink until it exits.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**30  # give back only a free heap top above 1 GiB


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve every block from its heap and keep what is freed there.

    Process-wide and for the rest of the process: call it from a program that trains
    (`netspec train` does), not from a library. Returns False where it does not apply
    (not glibc: macOS, Windows, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc only: musl's mallopt does nothing
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                    TRIM_THRESHOLD))
