"""Benchmark: one training step of a compiled netspec model against the same model in PyTorch CPU.

    python benchmarks/bench_train_step.py [--threads N] [--no-split] [--repeats R] [--burst K]
                                          [--only mlp,cnn,...] [--breakdown] [--no-memory]
                                          [--no-keep-freed-memory]

A step is forward, softmax cross-entropy, backward and an SGD-momentum update (lr 0.01,
mu 0.9) on a fixed float32 batch, for both sides. Both start from the same weights (the
netspec state dict loaded into the torch module), and the first step's losses are compared
as a check that the two models are the same network.

Threads: both sides use N (default: what NumPy's BLAS uses, threadpoolctl): torch through
torch.set_num_threads, netspec through its default Python API (no context manager) with
NETSPEC_THREADS=N: an image network's batch split over N threads with one BLAS thread per
GEMM, a vector network unsplit on N BLAS threads, as `netspec train` runs them
(--no-split: `with netspec.threads(N, split=False)`, unsplit on N BLAS threads).

Timing: after warm-up steps, bursts of K netspec steps and K torch steps alternate (ABBA
order); a sample is a burst's time per step, and each side's median over the repeats is
reported, so machine load hits both alike. Steps within a burst run back to back, as in a
training loop. Each burst starts after --settle seconds idle: both libraries' idle worker
threads spin for a while after a parallel region, and on 2 cores the spinning threads of one
slowed the next step of the other by up to 10x (the MLP at 2 threads: 140 ms instead of 12).
Like `netspec train`, the process first tells malloc to keep freed memory
(netspec.train.allocator), which both sides share. The GEMM ceiling is a 2048^3 float32
np.matmul on N BLAS threads, measured between the workloads in the same run; "% GEMM" is the
step's useful FLOPs (3 x the analyzer's forward MACs x 2: the forward, the input gradients
and the weight gradients are one GEMM's worth each) over time, as a fraction of that ceiling.

Memory (a separate, untimed step): netspec's peak is tracemalloc's (NumPy reports every
array to it) over a whole step, counting params, grads, optimizer state, batch and
activations. torch's is the same total: the bytes of its params, momentum buffers, batch
and running statistics, plus the peak of its allocator's running sum during the step as
torch.profiler(profile_memory=True) records it. The analyzer's estimate is
netspec.analyze(net, batch=N, optimizer="momentum").memory.total.
"""

import argparse
import contextlib
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
# torchvision's models written out (tests/_torchvision.py; torchvision is not a dependency)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from _torchvision import TORCHVISION, Inception, basic_block

import netspec
from netspec.train.allocator import keep_freed_memory
from netspec.train.optim import Momentum
from netspec.train.threads import splits_batch

LR, MU = 0.01, 0.9

# ---- the workloads: a spec, the same network in torch, the batch --------------------------

MLP = """
network mlp(num_classes = 10) {
    input x: [784]
    output x -> fc1: linear(512) -> relu -> fc2: linear(256) -> relu -> fc3: linear(num_classes)
}
"""

CNN = """
network cifar_cnn(num_classes = 10) {
    input x: [3, 32, 32]
    output x -> conv1: conv(32, k=3, p=1) -> relu -> maxpool(2)     # 32x16x16
             -> conv2: conv(64, k=3, p=1) -> relu -> maxpool(2)     # 64x8x8
             -> flatten -> fc: linear(num_classes)
}
"""

CNN_BN = """
network cifar_cnn_bn(num_classes = 10) {
    input x: [3, 32, 32]
    output x -> conv1: conv(32, k=3, p=1, bias=false) -> bn1: bn -> relu -> maxpool(2)
             -> conv2: conv(64, k=3, p=1, bias=false) -> bn2: bn -> relu -> maxpool(2)
             -> flatten -> fc: linear(num_classes)
}
"""

RESNET = """
import "blocks/resnet.net"

# Two basic blocks of ResNet-18's first stage; a pooled linear head makes the loss.
network resnet_blocks(num_classes = 10) {
    input x: [64, 16, 16]
    output x -> layer1: basic(64) * 2 -> avgpool: global_avgpool -> fc: linear(num_classes)
}
"""

INCEPTION = """
import "blocks/inception.net"

# GoogLeNet's inception3a (torchvision's form); a pooled linear head makes the loss.
network inception_module(num_classes = 10) {
    input x: [192, 28, 28]
    output x -> inception3a: inception(64, 96, 128, 16, 32, 32)
             -> avgpool: global_avgpool -> fc: linear(num_classes)
}
"""


class TorchMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 512), nn.Linear(512, 256), nn.Linear(256, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class TorchCNN(nn.Module):
    def __init__(self, bn: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1, bias=not bn)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=not bn)
        self.bn1 = nn.BatchNorm2d(32) if bn else nn.Identity()
        self.bn2 = nn.BatchNorm2d(64) if bn else nn.Identity()
        self.fc = nn.Linear(64 * 8 * 8, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(x.flatten(1))


class TorchResNetBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(basic_block(64, 64), basic_block(64, 64))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.layer1(x).mean(dim=(2, 3)))


class TorchInceptionModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(self.inception3a(x).mean(dim=(2, 3)))


# name: (spec text or bundled spec name, torch module factory, batch[, input shape])
WORKLOADS = {
    "mlp": (MLP, TorchMLP, 256),
    "cnn": (CNN, lambda: TorchCNN(bn=False), 64),
    "cnn_bn": (CNN_BN, lambda: TorchCNN(bn=True), 64),
    "resnet": (RESNET, TorchResNetBlocks, 32),
    "inception": (INCEPTION, TorchInceptionModule, 16),
    "resnet18": ("resnet18", TORCHVISION["resnet18"], 8, (3, 224, 224)),
}
DEFAULT_WORKLOADS = ("mlp", "cnn", "cnn_bn", "resnet", "inception")  # resnet18: --only
LABELS = {
    "mlp": "(a) MLP 784-512-256-10",
    "cnn": "(b) CIFAR CNN",
    "cnn_bn": "(c) CIFAR CNN + BN",
    "resnet": "(d) 2 ResNet basic 64x16x16",
    "inception": "(e) Inception 192x28x28",
    "resnet18": "(f) ResNet-18 3x224x224",
}


# ---- the two training steps ------------------------------------------------------------------

class NetspecStep:
    """forward, loss, backward, momentum update of a compiled model."""

    def __init__(self, model, x, y):
        self.model, self.x, self.y = model, x, y
        self.opt = Momentum(lr=LR, mu=MU)

    def __call__(self) -> float:
        loss, grads = self.model.loss(self.x, self.y)
        self.opt.step(self.model.params, grads)
        return loss

    def phases(self) -> dict:
        """Seconds of each phase of one step."""
        m, t0 = self.model, time.perf_counter()
        scores = m.forward(self.x, train=True)
        t1 = time.perf_counter()
        _, dscores = m.data_loss(scores, self.y)
        m.backward(dscores)
        t2 = time.perf_counter()
        self.opt.step(m.params, m.grads)
        return {"forward": t1 - t0, "loss+backward": t2 - t1, "update": time.perf_counter() - t2}


class TorchStep:
    def __init__(self, module, x, y):
        self.module, self.x, self.y = module.train(), torch.from_numpy(x), torch.from_numpy(y)
        self.opt = torch.optim.SGD(module.parameters(), lr=LR, momentum=MU)

    def __call__(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.module(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss.item()

    def phases(self) -> dict:
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        scores = self.module(self.x)
        t1 = time.perf_counter()
        F.cross_entropy(scores, self.y).backward()
        t2 = time.perf_counter()
        self.opt.step()
        return {"forward": t1 - t0, "loss+backward": t2 - t1, "update": time.perf_counter() - t2}


def network(name: str):
    """The workload's network (analyzed at its input shape)."""
    spec, shape = WORKLOADS[name][0], workload_shape(name)
    net = netspec.load(spec) if "{" not in spec else netspec.parse(spec, f"<bench {name}>")
    netspec.analyze(net, shape)
    return net


def workload_shape(name: str):
    """The input shape the workload sets, None for the spec's own."""
    return WORKLOADS[name][3] if len(WORKLOADS[name]) > 3 else None


def build(name: str):
    """(network, compiled model, torch module with the same weights, x, y)."""
    _, torch_factory, batch = WORKLOADS[name][:3]
    net = network(name)
    model = netspec.compile(net, input_shape=workload_shape(name), seed=0)
    module = torch_factory()
    state = {k: torch.from_numpy(v) for k, v in model.state_dict().items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"{name}: state dicts differ: missing {missing}, extra {unexpected}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + model.input_shape, dtype=np.float32)
    y = rng.integers(0, model.output_shape[0], batch)
    return net, model, module, x, y


# ---- measuring -------------------------------------------------------------------------------

def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def settled(fn, settle: float, burst: int = 1) -> float:
    """Seconds per call over `burst` back-to-back calls of fn, after `settle` seconds idle: the
    other library's worker threads, which spin for a while after their last parallel region
    (OpenBLAS ~0.1 s, OpenMP less), go to sleep instead of taking a core from these calls."""
    time.sleep(settle)
    start = time.perf_counter()
    for _ in range(burst):
        fn()
    return (time.perf_counter() - start) / burst


def interleaved(a, b, repeats: int, settle: float = 0.0, burst: int = 1,
                warmup: int = 2) -> tuple[list[float], list[float]]:
    """Seconds per call of a and b, bursts of each alternating in ABBA order after warm-up
    calls of each."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for r in range(repeats):
        if r % 2 == 0:
            ta.append(settled(a, settle, burst))
            tb.append(settled(b, settle, burst))
        else:
            tb.append(settled(b, settle, burst))
            ta.append(settled(a, settle, burst))
    return ta, tb


def gemm_gflops(threads: int, repeats: int = 3, n: int = 2048) -> list[float]:
    """float32 GEMM throughput samples of this machine through np.matmul (n^3) on `threads`
    BLAS threads."""
    with blas_limit(threads):
        return _gemm_gflops(repeats, n)


def _gemm_gflops(repeats: int, n: int) -> list[float]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    return [2 * n**3 / timed(lambda: a @ b) / 1e9 for _ in range(repeats)]


def netspec_peak_bytes(name: str) -> int:
    """tracemalloc's peak over the third training step, everything the step holds included."""
    tracemalloc.start()
    try:
        _, model, _, x, y = build(name)
        step = NetspecStep(model, x, y)
        for k in range(3):
            if k == 2:
                tracemalloc.reset_peak()
            step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def torch_peak_bytes(name: str) -> int:
    """Persistent tensors (params, momentum, buffers, batch) + the allocator's peak during a step.

    Gradients freed by zero_grad(set_to_none=True) were allocated before profiling started, so
    their frees are not recorded; the running sum starts from memory without them.
    """
    from torch.profiler import ProfilerActivity, profile

    _, _, module, x, y = build(name)
    step = TorchStep(module, x, y)
    step()
    step()
    tensors = list(module.parameters()) + list(module.buffers()) + [step.x, step.y]
    tensors += [v for s in step.opt.state.values() for v in s.values() if torch.is_tensor(v)]
    persistent = sum(t.numel() * t.element_size() for t in tensors)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return persistent + peak


def step_gflop(net, batch: int, shape=None) -> float:
    """Useful GFLOP of a training step: forward, input-gradient and weight-gradient GEMMs."""
    macs = netspec.analyze(net, shape, batch=batch).totals.macs
    return 3 * 2 * macs * batch / 1e9


# ---- the report ------------------------------------------------------------------------------

def blas_threads() -> int:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return os.cpu_count() or 1
    counts = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    return max(counts) if counts else os.cpu_count() or 1


def blas_limit(n: int):
    """A context with NumPy's BLAS on n threads."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(n, user_api="blas")


def splits(net, threads: int, no_split: bool) -> bool:
    """Whether netspec splits this workload's batch: what the default API and `netspec train`
    choose (netspec.train.threads.splits_batch), unless --no-split."""
    return not no_split and threads > 1 and splits_batch(net)


def netspec_threads(threads: int, no_split: bool):
    """The context netspec runs in: none (the default API, NETSPEC_THREADS set for the
    process), or with --no-split `netspec.threads(N, split=False)`."""
    return netspec.threads(threads, split=False) if no_split else contextlib.nullcontext()


def spread(samples: list[float]) -> str:
    """Interquartile range as a percentage of the median: the noise of a row."""
    q = statistics.quantiles(samples, n=4)
    return f"{100 * (q[2] - q[0]) / statistics.median(samples):.0f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of each side (default: what NumPy's BLAS uses)")
    parser.add_argument("--no-split", action="store_true",
                        help="run netspec unsplit on N BLAS threads instead of splitting the "
                             "batch over N threads with one BLAS thread each (what "
                             "netspec.threads and netspec train do)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--settle", type=float, default=0.25, metavar="SECONDS",
                        help="idle time before each timed burst, so the other library's "
                             "spinning threads sleep (default 0.25)")
    parser.add_argument("--burst", type=int, default=4, metavar="K",
                        help="steps timed back to back, as a training loop runs them; a "
                             "sample is their mean (default 4)")
    parser.add_argument("--only", default=",".join(DEFAULT_WORKLOADS),
                        help="comma-separated workloads: " + ", ".join(WORKLOADS))
    parser.add_argument("--breakdown", action="store_true",
                        help="also time forward / loss+backward / update of each side")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--memory-only", action="store_true", help="only the memory table")
    parser.add_argument("--no-keep-freed-memory", action="store_true",
                        help="leave glibc's malloc as it is (netspec train calls "
                             "netspec.train.allocator.keep_freed_memory; both sides share it)")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    threads = args.threads or blas_threads()
    torch.set_num_threads(threads)
    os.environ["NETSPEC_THREADS"] = str(threads)  # netspec's documented override, no context
    kept = not args.no_keep_freed_memory and keep_freed_memory()

    how = (f"unsplit on {threads} BLAS threads (netspec.threads(N, split=False))"
           if args.no_split else
           f"the default API with NETSPEC_THREADS={threads}: image networks split over "
           f"{threads} threads with 1 BLAS thread each, vector networks unsplit on {threads} "
           "BLAS threads")
    print(f"threads={threads}: torch.set_num_threads({threads}); netspec {how}")
    print(f"numpy {np.__version__}  torch {torch.__version__}"
          f"  float32  SGD momentum  median of {args.repeats} bursts of {args.burst} steps, "
          f"interleaved")
    print(f"malloc keeps freed memory (as netspec train): {'yes' if kept else 'no'}")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if not args.memory_only:
        timing(args, names, threads)
    if not args.no_memory:
        memory(args, names, threads)


def timing(args, names: list[str], threads: int) -> None:
    """The time table: each workload's steps interleaved with torch's, and the phases."""
    ceiling = gemm_gflops(threads)
    rows, phases = [], {}
    for name in names:
        net, model, module, x, y = build(name)
        split = splits(net, threads, args.no_split)
        ours, theirs = NetspecStep(model, x, y), TorchStep(module, x, y)
        with netspec_threads(threads, args.no_split):
            loss_gap = abs(ours() - theirs())  # the first step: same weights, same batch
            t_ours, t_theirs = interleaved(ours, theirs, args.repeats, args.settle, args.burst)
            if args.breakdown:
                pa, pb = [], []
                for _ in range(max(3, args.repeats // 3)):
                    time.sleep(args.settle)
                    pa.append(ours.phases())
                    time.sleep(args.settle)
                    pb.append(theirs.phases())
                phases[name] = [{k: statistics.median(p[k] for p in side) for k in side[0]}
                                for side in (pa, pb)]
        ceiling += gemm_gflops(threads)
        rows.append((name, len(x), t_ours, t_theirs,
                     step_gflop(net, len(x), workload_shape(name)), loss_gap, split))

    peak = statistics.median(ceiling)
    print(f"np.matmul float32 GEMM ceiling (2048^3, {threads} BLAS threads): {peak:.1f} GFLOP/s "
          f"(median of {len(ceiling)}, range {min(ceiling):.1f}-{max(ceiling):.1f})")
    print(f"load average after: {os.getloadavg()[0]:.1f}\n")
    head = (f"{'workload':30} {'split':>5} {'batch':>5} {'netspec ms':>10} {'torch ms':>9} {'ratio':>6} "
            f"{'netspec img/s':>13} {'torch img/s':>11} {'GFLOP':>6} {'netspec %GEMM':>13} "
            f"{'torch %GEMM':>11} {'noise':>9}")
    print(head)
    print("-" * len(head))
    for name, batch, t_ours, t_theirs, gflop, gap, split in rows:
        a, b = statistics.median(t_ours), statistics.median(t_theirs)
        print(f"{LABELS[name]:30} {'yes' if split else 'no':>5} {batch:5d} {1e3 * a:10.2f} {1e3 * b:9.2f} {a / b:6.2f} "
              f"{batch / a:13.0f} {batch / b:11.0f} {gflop:6.2f} "
              f"{100 * gflop / a / peak:12.0f}% {100 * gflop / b / peak:10.0f}% "
              f"{spread(t_ours):>4}/{spread(t_theirs):>4}")
        if gap > 1e-3:
            print(f"  warning: first-step losses differ by {gap:.2e}")
    print("noise: interquartile range / median of the netspec / torch samples")

    if phases:
        print(f"\n{'phase medians, ms':30} {'':>8} {'forward':>8} {'loss+bwd':>8} {'update':>8}")
        for name, sides in phases.items():
            for side, p in zip(("netspec", "torch"), sides):
                print(f"{LABELS[name]:30} {side:>8} " + " ".join(
                    f"{1e3 * v:8.2f}" for v in p.values()))


def memory(args, names: list[str], threads: int) -> None:
    """The memory table: one step's peak of each side and the analyzer's estimate."""
    print(f"\n{'peak memory of a step, MB':30} {'netspec':>8} {'torch':>8} {'analyzer':>8} "
          f"{'ratio':>6} {'est/ns':>6}")
    for name in names:
        net = network(name)
        estimate = netspec.analyze(net, workload_shape(name), batch=WORKLOADS[name][2],
                                   optimizer="momentum").memory.total
        with netspec_threads(threads, args.no_split):
            ours = netspec_peak_bytes(name)
        mb = [ours / 1e6, torch_peak_bytes(name) / 1e6, estimate / 1e6]
        print(f"{LABELS[name]:30} " + " ".join(f"{v:8.1f}" for v in mb)
              + f" {mb[0] / mb[1]:6.2f} {mb[2] / mb[0]:6.2f}")
    print("netspec: tracemalloc peak; torch: tensors + torch.profiler allocator peak; "
          "analyzer: analyze(batch, optimizer='momentum').memory.total; ratio: "
          "netspec / torch; est/ns: analyzer / netspec")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
