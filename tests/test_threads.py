"""The training process: its threads (one for networks of small layers, else a batch split
over every core with one BLAS thread per GEMM) and malloc keeping freed memory for the next
step."""
import subprocess
import sys

import pytest

import netspec
from netspec.runtime import parallel
from netspec.train.threads import (
    SMALL_GEMM_MACS,
    auto_threads,
    available_cores,
    blas_threads,
    splits_batch,
    threads,
)

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_thread_counts() -> list[int]:
    return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]


def test_the_default_digits_cnn_trains_on_one_thread():
    net = netspec.load("digits_cnn")
    netspec.analyze(net)
    macs = [data["macs"] for _, data in net.graph.nodes(data=True)]
    assert auto_threads(macs, batch=net.train.get("batch", 32)) == 1


def test_a_layer_with_a_large_gemm_uses_every_available_core():
    assert auto_threads([SMALL_GEMM_MACS // 64], batch=64) == available_cores()
    assert auto_threads([SMALL_GEMM_MACS // 64 - 1], batch=64) == 1
    assert auto_threads([], batch=64) == 1


def test_image_networks_split_the_batch_and_vector_networks_do_not():
    for name, split in [("mlp", False), ("softmax", False), ("digits_cnn", True),
                        ("resnet18", True)]:
        net = netspec.load(name)
        netspec.analyze(net)
        assert splits_batch(net) is split, name


def test_threads_without_split_gives_blas_the_threads():
    with threads(2, split=False):
        assert parallel.get_threads() == 1
        assert set(blas_thread_counts()) <= {2}
    assert parallel.get_threads() == 1


def test_blas_threads_limits_inside_the_block_and_restores_after():
    before = blas_thread_counts()
    with blas_threads(1):
        assert set(blas_thread_counts()) <= {1}
    assert blas_thread_counts() == before
    with blas_threads(None):
        assert blas_thread_counts() == before


def test_threads_splits_batches_with_one_blas_thread_and_restores_after():
    before = blas_thread_counts()
    with threads(3):
        assert parallel.get_threads() == 3
        assert set(blas_thread_counts()) <= {1}
    assert parallel.get_threads() == 1
    assert blas_thread_counts() == before
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="positive integer"), threads(bad):
            pass
    assert parallel.get_threads() == 1


def test_threads_is_restored_when_the_block_raises():
    with pytest.raises(RuntimeError), threads(2):
        raise RuntimeError("stop")
    assert parallel.get_threads() == 1


# ---- keeping freed memory (netspec.train.allocator) --------------------------------------

REUSE = """
import resource, sys
import numpy as np
from netspec.train.allocator import keep_freed_memory
if sys.argv[1] == "keep" and not keep_freed_memory():
    print("unsupported")
    sys.exit()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(2**24, np.float32)  # 64 MB, above glibc's largest mmap threshold
del a
before = faults()
for _ in range(3):
    a = np.ones(2**24, np.float32)
    del a
print(faults() - before)
"""


def page_faults(mode: str) -> str:
    return subprocess.run([sys.executable, "-c", REUSE, mode], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_keep_freed_memory_reuses_large_blocks_instead_of_faulting_them_in_again():
    kept = page_faults("keep")  # in a child process: the setting lasts for the process
    if kept == "unsupported":
        pytest.skip("not glibc")
    assert int(kept) < 50 < int(page_faults("default"))
