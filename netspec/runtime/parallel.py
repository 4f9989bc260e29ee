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
- With one thread (the default) nothing is split, and every kernel takes plain arrays.

Results equal the unsplit computation up to float rounding (gradients and batch statistics
are summed in another order).
"""

import functools
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

_THREADS = 1  # shards per batch (1: no split)
_POOL = None  # ThreadPoolExecutor of _THREADS - 1 workers, made on first use


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
    """Split each batch over n threads from now on (1: no split)."""
    global _THREADS, _POOL
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads must be a positive integer, not {n!r}")
    n = int(n)
    if _POOL is not None and n != _THREADS:
        _POOL.shutdown(wait=True)
        _POOL = None
    _THREADS = n


def get_threads() -> int:
    """Threads a batch is split over (1: no split)."""
    return _THREADS


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max(_THREADS - 1, 1), thread_name_prefix="netspec-shard")
    return _POOL


def run(fn, *per_shard) -> list:
    """[fn(a[0], b[0], ...), fn(a[1], b[1], ...), ...] for sequences a, b, ... of one item per
    shard: shard 0 on the calling thread, the others on the pool, all finished on return (the
    first error is raised after every shard has stopped)."""
    jobs = list(zip(*per_shard, strict=True))
    if len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    futures = [_pool().submit(fn, *job) for job in jobs[1:]]
    try:
        first = fn(*jobs[0])
        return [first] + [f.result() for f in futures]
    except BaseException:  # an error, or Ctrl-C: no shard may still run when it propagates
        wait(futures)
        raise


def split(x: np.ndarray, n: int | None = None) -> "Shards | np.ndarray":
    """x split along axis 0 into n (default: the thread count) views of near-equal size;
    x itself when that is one shard (a batch is never split below one sample per shard)."""
    n = min(_THREADS if n is None else n, len(x))
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
