"""Runtime: intra-op parallelism by splitting the batch across threads.

NumPy runs an array operation on one core; only its GEMMs (BLAS) use more. A training step of a
conv network spends about half its time outside GEMMs (im2col copies, pooling, ReLU, batch
norm), so with multi-threaded BLAS the other cores idle for that half (docs/performance.md).
Instead, with `set_threads(n)`, `Model.forward` splits the batch into n `Shards` (views along
axis 0), and every kernel runs shard k on thread k: the calling thread does shard 0, a pool
of n - 1 threads the rest. NumPy releases the GIL inside its loops and BLAS calls, so the
shards really run at once; the BLAS itself should then run one thread per call
(`netspec.threads(n)` arranges both), which also keeps OpenBLAS's spinning workers off the
cores.

- A kernel whose samples do not interact (conv, linear, pooling, activations, per-sample
  norms, add, concat, flatten) is wrapped by `batchwise_forward` / `batchwise_backward`: it
  runs unchanged on each shard, and parameter gradients are summed over the shards.
- Batch norm combines per-shard sums into whole-batch statistics; dropout draws its mask for
  the whole batch, so the random stream is the one an unsplit batch uses.
- With one thread nothing is split, and every kernel takes plain arrays.

Who chooses the threads: `set_threads(n)` (what `netspec.threads(n)` does for its block)
fixes them for every model; otherwise (the default) each compiled model chooses per batch
(`auto_plan`, called by Model.forward): the NETSPEC_THREADS environment variable, or every
core this process may use, except a network whose largest layer is a small GEMM for the
batch, which runs on one thread; image networks split the batch over those threads with one
BLAS thread per GEMM, vector networks (all GEMM) run unsplit on that many BLAS threads.

Results equal the unsplit computation up to float rounding (gradients and batch statistics
are summed in another order); for one thread count and batch size they are the same on
every run (docs/performance.md states exactly what holds across thread counts).
"""

import functools
import os
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

_THREADS = None  # shards per batch set by set_threads; None: each model chooses (auto_plan)
_POOL = None  # ThreadPoolExecutor of (at least) shards - 1 workers, made on first use
_POOL_SIZE = 0
_RUNNING = 1  # shards of the run() in progress (read by kernels that work in chunks)
_BLAS = None  # threadpoolctl's controller of the BLAS libraries, made on first use
# A layer GEMM below this many multiply-adds per batch (about 2 ms on one core) gains at
# most a millisecond from a second thread, and can lose many when the cores are shared.
SMALL_GEMM_MACS = 2**26
ENV_THREADS = "NETSPEC_THREADS"


class Shards(list):
    """One tensor of a split batch: the arrays of its shards, shard k computed on thread k.

    A list, so the generated code passes it around like an array; `+` adds shard by shard
    (the generated backward sums the gradients of a tensor used twice that way).
    """

    __slots__ = ()

    def __add__(self, other):
        if not isinstance(other, Shards) or len(other) != len(self):
            raise TypeError("Shards add only to Shards of the same split")
        return Shards(run(np.add, self, other))

    __radd__ = __add__
    __iadd__ = __add__

    def __mul__(self, other):
        raise TypeError("Shards do not repeat; a shard-wise product needs run(np.multiply, ...)")

    __rmul__ = __imul__ = __mul__

    @property
    def sizes(self) -> list[int]:
        return [len(s) for s in self]


def set_threads(n: int) -> None:
    """Split each batch over n threads from now on, whatever the model (1: no split);
    `use_default_threads()` gives the choice back to the models."""
    global _THREADS
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads must be a positive integer, not {n!r}")
    _THREADS = int(n)


def use_default_threads() -> None:
    """Let each compiled model choose its threads again (auto_plan), as at start-up."""
    global _THREADS
    _THREADS = None


def get_threads() -> int:
    """Threads set_threads split batches over (1 when unset: split() leaves batches whole)."""
    return 1 if _THREADS is None else _THREADS


def threads_were_set() -> bool:
    """Whether set_threads (netspec.threads) decides the threads rather than each model."""
    return _THREADS is not None


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_threads() -> int | None:
    """NETSPEC_THREADS as a positive integer, None when unset or empty (every core)."""
    value = os.environ.get(ENV_THREADS, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{ENV_THREADS} must be a positive integer, not {value!r}")
    return int(value)


def auto_plan(largest_layer_macs: int, batch: int, splits_batch: bool) -> tuple[int, int]:
    """(shards, BLAS threads) a model runs a batch with when set_threads was not called:
    NETSPEC_THREADS threads if set, else 1 when the largest layer's GEMM for the batch is
    under SMALL_GEMM_MACS and every available core otherwise; image networks (splits_batch)
    split the batch over them with one BLAS thread each, the others stay unsplit on that
    many BLAS threads. Without threadpoolctl (a standalone module elsewhere) nothing is
    split, since the BLAS could not be held to one thread per shard."""
    n = default_threads()
    if n is None:
        n = 1 if largest_layer_macs * batch < SMALL_GEMM_MACS else available_cores()
    if splits_batch and n > 1 and batch > 1 and _blas_controller() is not None:
        return min(n, batch), 1
    return 1, n


def _blas_controller():
    """threadpoolctl's ThreadpoolController (made once: making one scans the loaded
    libraries, ~ms), or None without threadpoolctl."""
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # a standalone module on a machine without threadpoolctl
            _BLAS = False
        else:
            _BLAS = ThreadpoolController()
    return _BLAS or None


class blas_limit:
    """Context: the BLAS on at most n threads inside (None: left alone). Entering and
    leaving cost a few microseconds (the controller is made once)."""

    def __init__(self, n: int | None):
        self.n, self.limiter = n, None

    def __enter__(self):
        controller = _blas_controller() if self.n is not None else None
        if controller is not None:
            self.limiter = controller.limit(limits=self.n, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self.limiter is not None:
            self.limiter.restore_original_limits()
            self.limiter = None
        return False


def _pool(workers: int) -> ThreadPoolExecutor:
    """The shard pool, with at least `workers` threads."""
    global _POOL, _POOL_SIZE
    if _POOL is None or _POOL_SIZE < workers:
        if _POOL is not None:
            _POOL.shutdown(wait=True)
        _POOL = ThreadPoolExecutor(max(workers, 1), thread_name_prefix="netspec-shard")
        _POOL_SIZE = max(workers, 1)
    return _POOL


def run(fn, *per_shard) -> list:
    """[fn(a[0], b[0], ...), fn(a[1], b[1], ...), ...] for sequences a, b, ... of one item per
    shard: shard 0 on the calling thread, the others on the pool, all finished on return (the
    first error is raised after every shard has stopped)."""
    global _RUNNING
    jobs = list(zip(*per_shard, strict=True))
    if len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    before, _RUNNING = _RUNNING, len(jobs)
    futures = [_pool(len(jobs) - 1).submit(fn, *job) for job in jobs[1:]]
    try:
        first = fn(*jobs[0])
        return [first] + [f.result() for f in futures]
    except BaseException:  # an error, or Ctrl-C: no shard may still run when it propagates
        wait(futures)
        raise
    finally:
        _RUNNING = before


def shards_running() -> int:
    """How many shards the kernel calling this runs beside (1 outside run): a kernel that
    works in chunks divides its chunk by it, so a split batch holds no more at once."""
    return _RUNNING


def split(x: np.ndarray, n: int | None = None) -> "Shards | np.ndarray":
    """x split along axis 0 into n (default: the thread count) views of near-equal size;
    x itself when that is one shard (a batch is never split below one sample per shard)."""
    n = min(get_threads() if n is None else n, len(x))
    if n <= 1:
        return x
    return Shards(np.array_split(x, n))


def split_like(x: np.ndarray, sizes: list[int]) -> Shards:
    """x split along axis 0 into views of the given sizes (another tensor's Shards.sizes)."""
    if len(x) != sum(sizes):
        raise ValueError(f"a batch of {len(x)} does not split into shards of {list(sizes)}")
    bounds = np.cumsum(sizes)[:-1]
    return Shards(np.split(x, bounds))


def join(x):
    """The whole batch of Shards (one array, concatenated along axis 0); other values as they
    are."""
    return np.concatenate(x) if isinstance(x, Shards) else x


def _per_shard_inputs(x):
    """The per-shard first argument of a kernel call, or None when nothing is split: Shards
    as they are; a list of Shards (concat, add) as one list of arrays per shard."""
    if isinstance(x, Shards):
        return x
    if isinstance(x, list) and x and any(isinstance(t, Shards) for t in x):
        if not all(isinstance(t, Shards) for t in x):
            raise TypeError("a kernel got split and unsplit inputs together")
        return [list(shard) for shard in zip(*x, strict=True)]
    return None


def batchwise_forward(kernel):
    """Let a forward kernel whose samples do not interact take Shards: it runs on each shard
    and returns (Shards of outputs, Shards of caches)."""

    @functools.wraps(kernel)
    def forward(x, *args, **kwargs):
        xs = _per_shard_inputs(x)
        if xs is None:
            return kernel(x, *args, **kwargs)
        results = run(lambda xk: kernel(xk, *args, **kwargs), xs)
        return Shards(r[0] for r in results), Shards(r[1] for r in results)

    return forward


def sum_shards(parts: list):
    """The sum of per-shard partial results (a parameter's gradient, a batch statistic), added
    into the first shard's array, which must be fresh (a backward's parameter gradients and a
    reduction's results are), so a split holds one extra copy; the one part itself when
    nothing is split; None for None parts."""
    if parts[0] is None:
        return None
    total = parts[0]
    for part in parts[1:]:
        np.add(total, part, out=total)
    return total


def batchwise_backward(kernel):
    """The backward of a batchwise_forward kernel: dout and cache as Shards; dx stays split
    (None if the kernel skipped it), parameter gradients are summed over the shards."""

    @functools.wraps(kernel)
    def backward(dout, cache, *args, **kwargs):
        if not isinstance(dout, Shards):
            return kernel(dout, cache, *args, **kwargs)
        results = run(lambda d, c: kernel(d, c, *args, **kwargs), dout, cache)
        first = results[0]
        if isinstance(first, tuple):  # (dx, d<param>...)
            dx = None if first[0] is None else Shards(r[0] for r in results)
            grads = [sum_shards([r[i] for r in results]) for i in range(1, len(first))]
            return (dx, *grads)
        if isinstance(first, list):  # one dx per input (concat, add)
            return [Shards(r[i] for r in results) for i in range(len(first))]
        return Shards(results)

    return backward
