"""Analysis pass: activation memory per layer and an estimate of a training step's peak.

The model of the estimate (bytes; N = batch size, each term below per sample times N):

  params + gradients (one per parameter, frozen ones included: the backward computes them)
  + optimizer state (slots per trainable parameter: sgd 0, momentum and nesterov 1,
    adagrad and rmsprop 1, adam and adamw 2; plus the one scratch array per parameter that
    netspec.train's optimizers keep) + buffers
  + the peak, over the steps of the forward and the backward, of the activation memory
    that netspec.runtime's NumPy kernels hold at that step:
      forward, at layer l: every cache made so far (op.saved: batch norm's centred input,
        dropout's mask, max pooling's argmax bytes, ...), every tensor a cache refers to
        (conv's and linear's input, relu's output), every other tensor from its layer until
        its last consumer has run, and the layer's forward workspace (op.forward_workspace:
        conv's im2col columns, which it does not keep);
      backward, at layer l (layers run in reverse, each freeing its cache when done): the
        caches and referred tensors of layers l and before, the gradient of every tensor
        between its last consumer and its producer, and the layer's workspace
        (op.workspace: for conv the im2col columns built again and a channels-first copy of
        dout, then either the im2col of the padded dout (stride 1) or the column gradients
        and a padded dx (col2im)).
      A workspace is held for op.workspace_samples(batch) samples at once, not N (plus
      op.workspace_fixed, conv's weight-gradient product of a chunk): conv
      works through the batch CONV_CHUNK (8) samples at a time (with the batch split over
      threads, CONV_CHUNK / threads per shard: the same total).
      The gradients term counts every parameter's gradient at every step, as the forward
      holds the previous step's; the backward frees those first and makes each layer's at
      its step, so a backward step's activation bytes are net of the gradients of the
      layers before it (a network whose parameters outweigh its activations peaks late in
      the backward, not at its first layer).
      A training step does not compute the network input's gradient: a tensor whose
      gradient leads to no parameter (the input, and what parameter-free layers make of it
      alone) has no gradient, its layer no backward, and a layer with parameters reading it
      no dx (op.workspace(need_dx=False)).
    The input batch is held by the caller throughout; reshapes (flatten, identity) share
    their input's memory, and so does a ReLU that another layer's kernel applies
    (fusion.py), in place on that layer's output or on a max pool's (which then keeps it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from netspec.analysis.fusion import fused_layers
from netspec.analysis.params import ParamCount
from netspec.diagnostics import Diagnostic, NetspecError
from netspec.ir import Network
from netspec.ops import REGISTRY
from netspec.ops.base import NOTHING_SAVED, is_symbolic

DTYPE_BYTES = {"float16": 2, "float32": 4, "float64": 8}
# State arrays per trainable parameter (netspec.train.optim's `slots`).
OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1, "rmsprop": 1,
                   "adam": 2, "adamw": 2}
OPTIMIZER_SCRATCH = 1  # netspec.train keeps one temporary per parameter for its updates


@dataclass(frozen=True)
class TrainingMemory:
    """Estimated peak bytes of one training step, by component."""

    batch: int
    dtype: str
    optimizer: str
    params: int
    gradients: int
    optimizer_state: int
    buffers: int
    activations: int  # the activation peak for the whole batch, input batch included
    saved_for_backward: int  # caches and the tensors they refer to, at the end of forward
    peak_at: str  # "backward of layer3.0.conv2": where the activation peak happens
    # Symbolic sizes: the steps that may hold the peak, (bytes per sample, where), whose
    # Max is `activations` / batch; evaluating picks the peak at a size.
    peak_candidates: tuple = ()

    @property
    def total(self) -> int:
        return (self.params + self.gradients + self.optimizer_state + self.buffers
                + self.activations)


def itemsize(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise NetspecError(Diagnostic("error", f"unknown dtype `{dtype}`", None,
                                      "use " + ", ".join(DTYPE_BYTES)))
    return DTYPE_BYTES[dtype]


def optimizer_slots(optimizer: str) -> int:
    if optimizer not in OPTIMIZER_SLOTS:
        raise NetspecError(Diagnostic("error", f"unknown optimizer `{optimizer}`", None,
                                      "use " + ", ".join(OPTIMIZER_SLOTS)))
    return OPTIMIZER_SLOTS[optimizer]


def activation_memory(net: Network, dtype: str = "float32") -> None:
    """Set node["activation_bytes"]: the bytes of the layer's output for one sample."""
    size = itemsize(dtype)
    for _, data in net.graph.nodes(data=True):
        data["activation_bytes"] = math.prod(data["shape"]) * size


def training_memory(net: Network, count: ParamCount, batch: int, dtype: str,
                    optimizer: str, minimum: dict[str, int] | None = None) -> TrainingMemory:
    """The estimate documented at the top of this module, from per-sample timelines.
    `minimum`: the smallest size of each size symbol, for a symbolic analysis."""
    size = itemsize(dtype)
    slots = optimizer_slots(optimizer)
    if batch < 1:
        raise NetspecError(Diagnostic("error", f"batch size must be at least 1, not {batch}"))
    fwd, bwd, saved_end, fwd_ws, bwd_ws = _activation_timelines(net, size, batch)
    order = net.live()
    if minimum is not None:  # per-sample candidates, the workspaces' share divided by N
        candidates = _symbolic_peak(_per_sample(fwd, fwd_ws, batch),
                                    _per_sample(bwd, bwd_ws, batch), order, minimum)
        peak_bytes, where = _peak_of(candidates)
        activations = batch * peak_bytes
    else:
        fwd = [batch * a + b for a, b in zip(fwd, fwd_ws)]
        bwd = [batch * a + b for a, b in zip(bwd, bwd_ws)]
        peak_f, peak_b = max(fwd), max(bwd)
        where = (f"backward of {order[bwd.index(peak_b)]}" if peak_b >= peak_f
                 else f"forward of {order[fwd.index(peak_f)]}")
        activations = max(peak_f, peak_b)
    return TrainingMemory(
        batch, dtype, optimizer, params=count.params * size, gradients=count.params * size,
        optimizer_state=(slots + OPTIMIZER_SCRATCH) * count.trainable * size,
        buffers=count.buffers * size, activations=activations,
        saved_for_backward=batch * saved_end, peak_at=where,
        peak_candidates=tuple(candidates) if minimum is not None else ())


def _per_sample(timeline: list, workspace: list, batch: int) -> list:
    """Bytes per sample at each step of a symbolic timeline: the workspace's bytes (held for
    a chunk of samples, not N) shared over the batch."""
    import sympy

    return [t + _expanded(sympy.sympify(w) / batch) if w else t
            for t, w in zip(timeline, workspace)]


def _symbolic_peak(fwd: list, bwd: list, order: list[str],
                   minimum: dict[str, int]) -> list[tuple[object, str]]:
    """The steps that can hold the peak at some size (the others are below one of them at
    every size), in the concrete pass's order of preference: backward first."""
    from netspec.analysis.symbolic import peak

    candidates = [(b, f"backward of {order[k]}") for k, b in enumerate(bwd)] + \
                 [(f, f"forward of {order[k]}") for k, f in enumerate(fwd)]
    return peak(candidates, minimum)


def _peak_of(candidates: list[tuple[object, str]]) -> tuple[object, str]:
    """The exact Max of the candidates, and where the peak is."""
    if len(candidates) == 1:
        return candidates[0]
    import sympy

    return (sympy.Max(*[e for e, _ in candidates], evaluate=False),
            "the largest of: " + "; ".join(w for _, w in candidates))


def _activation_timelines(net: Network, size: int, batch: int):
    """Bytes per sample held at each layer's forward step and backward step, the bytes per
    sample held for the backward when the forward ends, and the workspace bytes of each
    layer's forward and backward step for the batch (held for op.workspace_samples(batch)
    samples). Every tensor and cache lives over an interval of steps, summed with
    difference arrays (linear in the number of layers)."""
    nodes = dict(net.graph.nodes(data=True))  # plain dict lookups: NodeView is slow
    order = net.live()
    # A ReLU a kernel applies (fusion.py) is in place on that kernel's output ("after": a
    # view of it, still kept for the backward) or runs on the pooled output ("before": its
    # tensor is never made, and the pool keeps its own output instead).
    fused = fused_layers(net)
    keeps_output = {host for host, where in fused.values() if where == "before"}
    hosts = {host for host, _ in fused.values()}
    n = len(order)
    index = {name: k for k, name in enumerate(order)}
    storage: dict[str, str] = {}  # tensor -> the tensor whose memory it is
    last_use = {name: index[name] for name in order}  # per storage: last forward consumer
    release = {}  # per storage kept for the backward: the earliest layer referring to it
    cached = [0] * n  # bytes of new cache arrays per layer
    workspace = [0] * n  # bytes of a backward's workspace, for the batch
    forward_workspace = [0] * n
    grads_before = [0] * (n + 1)  # bytes of the parameter gradients of the layers before k
    serves = {}  # tensor -> whether its gradient leads to a parameter gradient
    for k, name in enumerate(order):
        data = nodes[name]
        op = REGISTRY[data["op"]]
        ins = [nodes[i]["shape"] for i in data["inputs"]]
        specs = op.params(data["attrs"], ins)
        has_params = any(s.kind == "param" for s in specs)
        grads_before[k + 1] = grads_before[k] + _expanded(
            sum(s.size for s in specs if s.kind == "param") * size)
        serves[name] = name not in net.inputs and (
            has_params or any(serves[i] for i in data["inputs"]))
        storage[name] = storage[data["inputs"][0]] if op.output_is_view or name in fused \
            else name
        for i in data["inputs"]:
            last_use[storage[i]] = k
        saved = op.saved(data["attrs"], ins, data["shape"])
        if fused.get(name, ("", ""))[1] == "before":
            saved = NOTHING_SAVED
        elif name in keeps_output:
            saved = replace(saved, keeps_output=True)
        cached[k] = _expanded(saved.values * size + saved.index_bytes)
        samples = op.workspace_samples(data["attrs"], batch)
        forward_workspace[k] = _expanded(
            samples * op.forward_workspace(data["attrs"], ins, data["shape"]) * size)
        if serves[name]:
            need_dx = all(serves[i] for i in data["inputs"])
            # a kernel applying a fused ReLU first masks dout into a new array
            masked = math.prod(data["shape"]) if name in hosts else 0
            workspace[k] = _expanded(
                (samples * (op.workspace(data["attrs"], ins, data["shape"], need_dx) + masked)
                 + op.workspace_fixed(data["attrs"], ins, data["shape"], batch, need_dx))
                * size)
        refs = ([storage[i] for i in data["inputs"]] if saved.keeps_input else []) \
            + ([storage[name]] if saved.keeps_output else [])
        for s in refs:
            release[s] = min(release.get(s, k), k)
    for name in net.inputs:  # the caller holds the input batch
        release[storage[name]] = 0
    for name in net.outputs:  # the loss reads the outputs; their gradients start there
        release.setdefault(storage[name], index[storage[name]])
        last_use[storage[name]] = n - 1

    fwd, bwd = [0] * (n + 1), [0] * (n + 1)

    def live(timeline: list[int], first: int, last: int, nbytes: int) -> None:
        timeline[first] += nbytes
        timeline[last + 1] -= nbytes

    for k in range(n):
        live(fwd, k, n - 1, cached[k])
        live(bwd, k, n - 1, cached[k])
    saved_end = sum(cached)
    for s in set(storage.values()):
        k = index[s]
        nbytes = _expanded(math.prod(nodes[s]["shape"]) * size)
        if s in release:
            live(fwd, k, n - 1, nbytes)
            live(bwd, release[s], n - 1, nbytes)
            saved_end += nbytes
        else:
            live(fwd, k, last_use[s], nbytes)
        if serves[s]:
            live(bwd, k, last_use[s], nbytes)  # its gradient
    # The backward frees the previous step's gradients first and makes each layer's own at
    # its step: at layer k's backward the gradients of the layers before it do not exist.
    workspace = [w - g for w, g in zip(workspace, grads_before)]
    return _running(fwd)[:n], _running(bwd)[:n], saved_end, forward_workspace, workspace


def _expanded(v):
    """Symbolic byte counts are kept expanded, so that sums along the timelines collect
    like terms instead of growing with the number of layers."""
    if is_symbolic(v):
        import sympy

        return sympy.expand(v)
    return v


def _running(deltas: list[int]) -> list[int]:
    out, total = [], 0
    for d in deltas:
        total += d
        out.append(total)
    return out


ALLOW_LARGE_HINT = ("if the machine really can, pass --allow-large (allow_large=True in the "
                    "Python API) to try anyway")


def require_memory(nbytes: int, what: str) -> None:
    """Refuse, before allocating, `nbytes` that the machine does not have available
    (MemAvailable, capped by ulimit -v): an error with both figures, instead of a
    MemoryError, swapping, or the kernel's OOM killer half an hour later."""
    from netspec.files import available_memory, format_bytes

    try:
        nbytes = int(nbytes)
    except TypeError:  # a symbolic size (input x: [3, H, W]): nothing is allocated for it
        return
    available = available_memory()
    if nbytes > available:
        raise NetspecError(Diagnostic(
            "error", f"{what} needs {format_bytes(nbytes)} ({nbytes:,} bytes), more than the "
            f"{format_bytes(available)} of memory available on this machine", None,
            ALLOW_LARGE_HINT))


def require_model_memory(net: Network, input_shape=None, dtype: str = "float32") -> None:
    """A compiled model's parameters and buffers must fit (netspec.compile)."""
    from netspec.analysis import analyze

    memory = analyze(net, input_shape, dtype=dtype).memory
    # Initialization draws each tensor in float64 and scales it before the cast: two
    # float64 temporaries of the largest tensor on top of the model itself.
    largest = max((p.size for _, data in net.graph.nodes(data=True)
                   for p in data.get("params", ())), default=0)
    require_memory(memory.params + memory.buffers + 2 * 8 * largest,
                   f"compiling `{net.name}` (its parameters)")


def require_training_memory(net: Network, batch: int, optimizer: str,
                            dtype: str = "float32") -> None:
    """A training step's estimated peak (this module's model) must fit (netspec train)."""
    from netspec.analysis import analyze

    if optimizer not in OPTIMIZER_SLOTS:
        optimizer = "adam"  # the most state per parameter: an upper bound
    memory = analyze(net, batch=batch, dtype=dtype, optimizer=optimizer).memory
    require_memory(memory.total, f"training `{net.name}` (batch {batch}, {optimizer}; "
                   f"params {memory.params:,} B, activations {memory.activations:,} B)")
