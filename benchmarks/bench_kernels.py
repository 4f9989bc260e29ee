"""Benchmark: netspec NumPy kernels vs torch CPU, forward+backward, float32, same thread count.

    python benchmarks/bench_kernels.py [--threads N] [--repeats R] [--quick] [--settle S]
                                       [--no-keep-freed-memory]

Each row runs the NumPy pair and the torch pair alternately (ABBA order, so machine load hits
both alike), each call after --settle idle seconds so the other library's worker threads,
which spin for a while after their last parallel region, sleep instead of taking a core; it
reports the median of the repeats. Like `netspec train`, the process first tells malloc to
keep freed memory (netspec.train.allocator; both sides share it), so the large im2col
buffers are not page-faulted in afresh on every call. The conv rows also give the fraction of
this machine's float32 GEMM throughput the NumPy conv reaches (a big np.matmul, measured in the
same run). A breakdown of the CIFAR conv shows where its time goes.
"""

import argparse
import os
import sys
import time

# The thread count must be fixed before numpy (OpenBLAS) and torch load their pools.
_parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
_parser.add_argument("--threads", type=int, default=os.cpu_count())
_parser.add_argument("--repeats", type=int, default=7)
_parser.add_argument("--quick", action="store_true", help="CIFAR shapes only, 3 repeats")
_parser.add_argument("--settle", type=float, default=0.2, metavar="SECONDS")
_parser.add_argument("--no-keep-freed-memory", action="store_true")
ARGS = _parser.parse_args()
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from netspec import runtime
from netspec.train.allocator import keep_freed_memory

torch.set_num_threads(ARGS.threads)
F = torch.nn.functional


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def settled_ms(fn) -> float:
    """ms of one call of fn, after ARGS.settle seconds idle."""
    time.sleep(ARGS.settle)
    return median_ms(fn, 1)


def interleaved(numpy_fn, torch_fn, repeats: int) -> tuple[float, float]:
    """Median ms of each, single settled calls in ABBA order after a warm-up call of each."""
    numpy_fn()
    torch_fn()
    np_times, torch_times = [], []
    for r in range(repeats):
        if r % 2 == 0:
            np_times.append(settled_ms(numpy_fn))
            torch_times.append(settled_ms(torch_fn))
        else:
            torch_times.append(settled_ms(torch_fn))
            np_times.append(settled_ms(numpy_fn))
    return float(np.median(np_times)), float(np.median(torch_times))


def gemm_gflops(repeats: int) -> float:
    """float32 GEMM throughput of this machine through np.matmul (2048^3)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    b = rng.standard_normal((2048, 2048), dtype=np.float32)
    a @ b
    return 2 * 2048**3 / (median_ms(lambda: a @ b, repeats) / 1e3) / 1e9


def cpu_seconds() -> tuple[float, float, float] | None:
    """(busy CPU seconds of the whole machine, of this process, wall clock); None off Linux."""
    try:
        with open("/proc/stat") as stat:
            jiffies = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return None
    idle = jiffies[3] + jiffies[4]  # idle + iowait
    times = os.times()
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(jiffies) - idle) / hz, times.user + times.system, time.perf_counter()


def other_processes_share(before, after) -> float | None:
    """Fraction of the machine's CPU time other processes used between two cpu_seconds()."""
    if before is None or after is None:
        return None
    busy, own, wall = (a - b for a, b in zip(after, before))
    return max(0.0, busy - own) / (wall * os.cpu_count())


# ----------------------------------------------------------------------------------------------
# The three kernels, each as (numpy fwd+bwd, torch fwd+bwd, GFLOP of fwd+bwd or None)


def conv_pair(n, c_in, hw, c_out, k=3, stride=1, pad=1):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c_in, hw, hw), dtype=np.float32)
    w = (rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)).astype(np.float32)
    b = np.zeros(c_out, dtype=np.float32)
    oh = (hw + 2 * pad - k) // stride + 1
    dout = rng.standard_normal((n, c_out, oh, oh), dtype=np.float32)

    def numpy_fn():
        _, cache = runtime.conv2d_forward(x, w, b, (stride, stride), (pad, pad))
        runtime.conv2d_backward(dout, cache)

    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    dt = torch.tensor(dout)

    def torch_fn():
        F.conv2d(xt, wt, bt, stride, pad).backward(dt)

    # forward, dx and dw are one GEMM's worth of multiply-adds each
    gflop = 3 * 2 * n * c_out * c_in * k * k * oh * oh / 1e9
    return numpy_fn, torch_fn, gflop


def maxpool_pair(n, c, hw, k, stride, pad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
    oh = (hw + 2 * pad - k) // stride + 1
    dout = rng.standard_normal((n, c, oh, oh), dtype=np.float32)

    def numpy_fn():
        _, cache = runtime.maxpool2d_forward(x, (k, k), (stride, stride), (pad, pad))
        runtime.maxpool2d_backward(dout, cache)

    xt, dt = torch.tensor(x, requires_grad=True), torch.tensor(dout)

    def torch_fn():
        F.max_pool2d(xt, k, stride, pad).backward(dt)

    return numpy_fn, torch_fn, None


def batchnorm_pair(n, c, hw):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
    gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)
    mean, var = np.zeros(c, np.float32), np.ones(c, np.float32)
    dout = rng.standard_normal(x.shape, dtype=np.float32)

    def numpy_fn():
        _, cache = runtime.batchnorm_forward(x, gamma, beta, mean, var, True)
        runtime.batchnorm_backward(dout, cache)

    xt, dt = torch.tensor(x, requires_grad=True), torch.tensor(dout)
    gt, bt = torch.tensor(gamma, requires_grad=True), torch.tensor(beta, requires_grad=True)
    mt, vt = torch.tensor(mean), torch.tensor(var)

    def torch_fn():
        F.batch_norm(xt, mt, vt, gt, bt, training=True).backward(dt)

    return numpy_fn, torch_fn, None


CIFAR = [
    ("conv 3x3 64->64 p1", "64x64x32x32", conv_pair(64, 64, 32, 64)),
    ("maxpool 2x2 s2", "64x64x32x32", maxpool_pair(64, 64, 32, 2, 2, 0)),
    ("batchnorm train", "64x64x32x32", batchnorm_pair(64, 64, 32)),
]
IMAGENET = [
    ("conv 3x3 64->64 p1", "8x64x56x56", conv_pair(8, 64, 56, 64)),
    ("conv 3x3 256->256 p1", "8x256x14x14", conv_pair(8, 256, 14, 256)),
    ("conv 1x1 64->256 s1", "8x64x56x56", conv_pair(8, 64, 56, 256, k=1, pad=0)),
    ("conv 1x1 192->64 s1", "16x192x28x28", conv_pair(16, 192, 28, 64, k=1, pad=0)),
    ("maxpool 3x3 s2 p1", "8x64x56x56", maxpool_pair(8, 64, 56, 3, 2, 1)),
    ("batchnorm train", "8x64x56x56", batchnorm_pair(8, 64, 56)),
    ("batchnorm train", "8x256x14x14", batchnorm_pair(8, 256, 14)),
]


def conv_breakdown(repeats: int) -> list[tuple[str, float]]:
    """Where the CIFAR conv's fwd+bwd time goes: the steps conv2d_forward/backward take."""
    rng = np.random.default_rng(0)
    n, c, hw, k = 64, 64, 32, 3
    x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
    w = rng.standard_normal((c, c, k, k), dtype=np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    dout = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
    w2 = w.reshape(c, -1)
    w_flip = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[..., ::-1, ::-1]).reshape(c, -1)
    cols = runtime.im2col(x, (k, k), (1, 1), (1, 1))
    out_cn = w2 @ cols
    dout_cn = np.ascontiguousarray(dout.transpose(1, 0, 2, 3)).reshape(c, -1)
    out = np.empty_like(x)

    def to_nchw():
        np.add(out_cn.reshape(c, n, hw, hw).transpose(1, 0, 2, 3), b.reshape(1, -1, 1, 1), out=out)

    steps = [
        ("fwd: im2col (strided copy)", lambda: runtime.im2col(x, (k, k), (1, 1), (1, 1))),
        ("fwd: GEMM w @ cols", lambda: w2 @ cols),
        ("fwd: to NCHW + bias", to_nchw),
        ("bwd: dout to (C_out, N*H*W)", lambda: np.ascontiguousarray(dout.transpose(1, 0, 2, 3))),
        ("bwd: dw GEMM (cols @ dout^T)^T", lambda: (cols @ dout_cn.T).T.copy()),
        ("bwd: db sum", lambda: dout_cn.sum(axis=1)),
        ("bwd: dx im2col of padded dout", lambda: runtime.im2col(dout, (k, k), (1, 1), (1, 1))),
        ("bwd: dx GEMM flipped w @ cols", lambda: w_flip @ cols),
        ("bwd: dx to NCHW", to_nchw),
    ]
    rows = [(name, median_ms(fn, repeats)) for name, fn in steps]
    rows.append(("total of the steps", sum(ms for _, ms in rows)))

    def col2im_path():
        runtime.col2im(w2.T @ dout_cn, x.shape, (k, k), (1, 1), (1, 1))

    rows.append(("(stride > 1 path) dx = col2im(w^T @ dout)", median_ms(col2im_path, repeats)))
    return rows


def main() -> None:
    repeats = 3 if ARGS.quick else ARGS.repeats
    kept = not ARGS.no_keep_freed_memory and keep_freed_memory()
    print(
        f"threads={ARGS.threads}  numpy {np.__version__}  torch {torch.__version__}  "
        f"float32  median of {repeats}  settle {ARGS.settle} s  malloc keeps freed memory: {kept}"
    )
    machine_before = cpu_seconds()
    peak = gemm_gflops(repeats)
    print(f"np.matmul float32 GEMM (2048^3): {peak:.1f} GFLOP/s\n")
    header = f"{'kernel (fwd+bwd)':24} {'shape NCHW':13} {'numpy ms':>9} {'torch ms':>9} {'ratio':>6} {'GEMM %':>7}"
    print(header)
    print("-" * len(header))
    rows = CIFAR if ARGS.quick else CIFAR + IMAGENET
    for name, shape, (numpy_fn, torch_fn, gflop) in rows:
        t_np, t_torch = interleaved(numpy_fn, torch_fn, repeats)
        frac = f"{100 * gflop / (t_np / 1e3) / peak:6.0f}%" if gflop else ""
        print(f"{name:24} {shape:13} {t_np:9.1f} {t_torch:9.1f} {t_np / t_torch:6.2f} {frac:>7}")
    print("\nCIFAR conv 3x3 64->64, 64x64x32x32, phase by phase:")
    time.sleep(ARGS.settle)
    for phase, ms in conv_breakdown(repeats):
        print(f"  {phase:48} {ms:7.1f} ms")
    others = other_processes_share(machine_before, cpu_seconds())
    if others is not None:
        print(f"\nother processes used {100 * others:.0f}% of the machine's CPU during the run")
        if others > 0.05:
            print(
                "warning: the machine was shared; a multi-threaded BLAS suffers from that more"
                " than torch does (rerun when idle, or with --threads 1)"
            )


if __name__ == "__main__":
    main()
