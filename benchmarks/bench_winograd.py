"""Benchmark: the 3x3 stride-1 conv by im2col + GEMM against Winograd F(2x2, 3x3), one process.

    python benchmarks/bench_winograd.py [--threads 1] [--repeats 7] [--only NAME,...] [--torch]
                                        [--chunk N] [--rule] [--steps]

netspec.runtime.winograd.WINOGRAD is switched off and on around each call, so both kernels
(forward, and forward + backward with dx) run on the same data in the same process; calls
alternate in ABBA order (machine load hits both alike), each after a short idle pause, and
the table gives medians in ms and the ratio Winograd / im2col (< 1: Winograd is faster).
`--rule` runs the Winograd side through winograd_applies (the shape rule the kernels use)
instead of forcing Winograd on. The shapes are the per-shard convs of
docs/performance.md's workloads; --torch adds torch's conv2d on the same shapes. --steps
times whole training steps of two networks instead (the kernels' rule decides per conv).
"""

import argparse
import os
import sys
import time

_parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
_parser.add_argument("--threads", type=int, default=1)
_parser.add_argument("--repeats", type=int, default=7)
_parser.add_argument("--only", default="", help="comma-separated shape names, or all")
_parser.add_argument("--chunk", type=int, default=0,
                     help="samples per conv chunk (default: layers.CONV_CHUNK; 4 is a shard's "
                          "chunk when a batch is split over 2 threads)")
_parser.add_argument("--torch", action="store_true", help="also time torch's conv2d")
_parser.add_argument("--rule", action="store_true",
                     help="Winograd side as the kernels choose it (winograd.winograd_applies)")
_parser.add_argument("--settle", type=float, default=0.05, metavar="SECONDS")
_parser.add_argument("--steps", action="store_true",
                     help="time whole training steps (model.loss, the default API) of "
                          "bench_train_step's (d) and (f) instead, Winograd off / on")
ARGS = _parser.parse_args()
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)
os.environ.setdefault("NETSPEC_THREADS", str(ARGS.threads))

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from netspec.runtime import layers, winograd
from netspec.train.allocator import keep_freed_memory

# name: (N, C_in, H, W, C_out), padding 1 (the per-shard shapes of the bench_train_step
# workloads on 2 threads, and two ResNet-18 layers)
SHAPES = {
    "cifar_conv2": (32, 32, 16, 16, 64),
    "resnet_block": (16, 64, 16, 16, 64),
    "inception_3x3": (8, 96, 28, 28, 128),
    "resnet18_layer1": (4, 64, 56, 56, 64),
    "resnet18_layer3": (4, 256, 14, 14, 256),
    # small channel counts and maps: the first convs of the CIFAR CNN and the digits CNN,
    # the digits CNN's last 3x3 convs (4x4 and 2x2 maps), ResNet-18's layer2 and layer4
    "cifar_conv1": (32, 3, 32, 32, 32),
    "digits_conv1": (32, 1, 8, 8, 32),
    "digits_conv3": (32, 32, 4, 4, 64),
    "digits_conv4": (32, 64, 2, 2, 64),
    "resnet18_layer2": (4, 128, 28, 28, 128),
    "resnet18_layer4": (4, 512, 7, 7, 512),
}
DEFAULT = "cifar_conv2,resnet_block,inception_3x3,resnet18_layer1,resnet18_layer3"


def _forward(x, w, b):
    return layers.conv2d_forward(x, w, b, padding=(1, 1))[0]


def _forward_backward(x, w, b, dout):
    _, cache = layers.conv2d_forward(x, w, b, padding=(1, 1))
    return layers.conv2d_backward(dout, cache)


def _timed(fn, wino) -> float:
    """ms of one call with Winograd on (True), off (False) or as the rule says (None)."""
    time.sleep(ARGS.settle)
    enabled, force = winograd.WINOGRAD, winograd.WINOGRAD_FORCE
    winograd.WINOGRAD = wino is not False
    winograd.WINOGRAD_FORCE = wino is True
    try:
        start = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - start)
    finally:
        winograd.WINOGRAD_FORCE = force
        winograd.WINOGRAD = enabled


def interleaved(fn) -> tuple[float, float]:
    """Median ms of im2col and of Winograd, ABBA after one warm-up call of each."""
    wino = None if ARGS.rule or ARGS.steps else True
    _timed(fn, False)
    _timed(fn, wino)
    old, new = [], []
    for r in range(ARGS.repeats):
        order = [(False, old), (wino, new)]
        for flag, times in order if r % 2 == 0 else order[::-1]:
            times.append(_timed(fn, flag))
    return float(np.median(old)), float(np.median(new))


RESNET_BLOCKS = """
import "blocks/resnet.net"

network resnet_blocks(num_classes = 10) {
    input x: [64, 16, 16]
    output x -> layer1: basic(64) * 2 -> avgpool: global_avgpool -> fc: linear(num_classes)
}
"""


def steps() -> None:
    """Training steps of bench_train_step's (d) 2 ResNet basic blocks (batch 32) and (f)
    ResNet-18 at 224x224 (batch 8), Winograd off and on alternately (ABBA), the default
    API on NETSPEC_THREADS (--threads) threads."""
    import netspec

    rng = np.random.default_rng(0)
    print(f"training steps, {ARGS.threads} threads, repeats {ARGS.repeats}, load average "
          f"{os.getloadavg()[0]:.1f}")
    for name, source, shape, batch in [
            ("(d) 2 ResNet basic 64x16x16", netspec.parse(RESNET_BLOCKS), None, 32),
            ("(f) ResNet-18 3x224x224", netspec.load("resnet18"), (3, 224, 224), 8)]:
        model = netspec.compile(source, input_shape=shape)
        x = rng.standard_normal((batch,) + model.input_shape).astype(np.float32)
        y = rng.integers(0, model.output_shape[0], batch)
        old, new = interleaved(lambda m=model, x=x, y=y: m.loss(x, y))
        print(f"{name:<30} im2col {old:9.1f} ms  winograd {new:9.1f} ms  ratio "
              f"{new / old:.2f}", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


def main() -> None:
    keep_freed_memory()
    if ARGS.steps:
        steps()
        return
    rng = np.random.default_rng(0)
    if ARGS.chunk:
        layers.CONV_CHUNK = ARGS.chunk
    only = ARGS.only or DEFAULT
    names = list(SHAPES) if only == "all" else only.split(",")
    print(f"threads {ARGS.threads}, chunk {layers.CONV_CHUNK}, repeats {ARGS.repeats}, load average "
          f"{os.getloadavg()[0]:.1f}")
    header = f"{'shape':<16} {'pass':<8} {'im2col ms':>10} {'winograd ms':>12} {'ratio':>6}"
    print(header + (f" {'torch ms':>9}" if ARGS.torch else ""))
    for name in names:
        n, c, h, wd, k = SHAPES[name]
        x = rng.standard_normal((n, c, h, wd), dtype=np.float32)
        w = (rng.standard_normal((k, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        dout = rng.standard_normal((n, k, h, wd), dtype=np.float32)
        passes = [("fwd", lambda x=x, w=w, b=b: _forward(x, w, b)),
                  ("fwd+bwd", lambda x=x, w=w, b=b, d=dout: _forward_backward(x, w, b, d))]
        for label, fn in passes:
            old, new = interleaved(fn)
            row = f"{name:<16} {label:<8} {old:>10.2f} {new:>12.2f} {new / old:>6.2f}"
            if ARGS.torch:
                row += f" {_torch_ms(x, w, b, dout, label == 'fwd'):>9.2f}"
            print(row, flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


def _torch_ms(x, w, b, dout, forward_only: bool) -> float:
    """Median ms of torch's conv2d (and its autograd backward) on the same arrays."""
    import torch

    torch.set_num_threads(ARGS.threads)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    dt = torch.tensor(dout)
    times = []
    for _ in range(ARGS.repeats + 1):
        time.sleep(ARGS.settle)
        start = time.perf_counter()
        out = torch.nn.functional.conv2d(xt, wt, bt, padding=1)
        if not forward_only:
            out.backward(dt)
        times.append(1e3 * (time.perf_counter() - start))
    return float(np.median(times[1:]))


if __name__ == "__main__":
    main()
