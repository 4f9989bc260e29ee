"""Compiled models: the Model base class every generated network derives from.

The generated subclass supplies the network (its `tensors` table, the straight-line `_forward`
and `_backward`, and `data_loss`); this class owns the state around them: parameters, buffers,
gradients, initialization, caches and state dicts. NumPy and the standard library only, because
`netspec compile --standalone` copies this file into the generated module.
"""
import math
import os
import zlib
from dataclasses import dataclass, field

import numpy as np

from netspec.runtime.parallel import (
    Shards,
    auto_plan,
    blas_limit,
    get_threads,
    join,
    split,
    split_like,
    threads_were_set,
)


@dataclass(frozen=True)
class Tensor:
    """A parameter or buffer of a compiled network, as its layer's op declared it."""

    name: str  # "<layer>.<local name>": "layer1.0.bn1.running_mean"
    shape: tuple
    kind: str = "param"  # "param" (trained) | "buffer" (running statistics)
    init: str = "zeros"  # he | xavier | normal | zeros | ones
    fan_in: int = 0
    fan_out: int = 0

    @property
    def layer(self) -> str:
        return self.name.rsplit(".", 1)[0]


# Standard deviation of each random init, from the tensor's fans.
INIT_STD = {
    "he": lambda fan_in, fan_out: math.sqrt(2.0 / max(fan_in, 1)),  # He et al. 2015
    "xavier": lambda fan_in, fan_out: math.sqrt(2.0 / max(fan_in + fan_out, 1)),  # Glorot 2010
    "normal": lambda fan_in, fan_out: 0.01,  # the CS231n "small random numbers"
    "unit": lambda fan_in, fan_out: 1.0,  # N(0, 1), nn.Embedding's
    "gpt2": lambda fan_in, fan_out: 0.02,  # GPT-2's initializer_range (Radford et al. 2019)
}
CONSTANT_INIT = {"zeros": 0.0, "ones": 1.0}


def initial_value(t: Tensor, seed: int) -> np.ndarray:
    """t's initial value in float64. Each tensor draws from its own stream, seeded by (seed,
    crc32 of its name), so a layer's init does not depend on the rest of the network."""
    if t.init in CONSTANT_INIT:
        return np.full(t.shape, CONSTANT_INIT[t.init])
    if t.init not in INIT_STD:
        raise ValueError(f"{t.name}: unknown init {t.init!r}")
    rng = np.random.default_rng([seed, zlib.crc32(t.name.encode("utf-8"))])
    value = rng.standard_normal(t.shape)
    value *= INIT_STD[t.init](t.fan_in, t.fan_out)
    return value


@dataclass
class LoadReport:
    """What load_state_dict did: the names loaded and those it could not match."""

    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)  # in the model, not in the state dict
    unexpected: list = field(default_factory=list)  # in the state dict, not in the model
    mismatched: list = field(default_factory=list)  # (name, given shape, model shape)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        lines += [f"  missing: {n}" for n in self.missing]
        lines += [f"  unexpected: {n}" for n in self.unexpected]
        lines += [f"  shape mismatch: {n}: given {list(a)}, model {list(b)}"
                  for n, a, b in self.mismatched]
        return "\n".join(lines)


class StateDictError(ValueError):
    """A strict load_state_dict found missing, unexpected or mismatched tensors."""

    def __init__(self, report: LoadReport):
        super().__init__("state dict does not match the model:\n" + str(report))
        self.report = report


# PyTorch counts batches in every BatchNorm; netspec has no use for the count.
IGNORED_KEYS = ("num_batches_tracked",)


class _Discard:
    """The cache of a forward pass that keeps nothing: every store is dropped at once."""

    def __setitem__(self, key, value) -> None:
        pass


class Model:
    """A compiled network: forward/backward over NumPy arrays, with its parameters and state.

    params / buffers: name -> array, in layer order ("conv1.weight", "bn1.running_mean");
    grads: name -> gradient of every param, set by backward; frozen: param names the trainer
    leaves alone; rng: the Generator dropout draws from.
    """

    name = ""  # the spec's network name
    spec = ""  # the spec file it was compiled from
    input_shape: tuple = ()  # one sample's shape, the batch axis excluded
    input_dtype = "float"  # "int": the input is token ids (`input x: [T] int`)
    output_shape: tuple = ()
    tensors: tuple = ()  # Tensor records, in layer order
    head = None  # the layer reinit(num_outputs=...) may resize, if any
    # How the model runs on the cores unless netspec.threads says otherwise (_plan): whether
    # its batches split over threads (an image network) and its largest layer's multiply-adds
    # per sample; None (a class compiled before these existed): leave the threads alone.
    splits_batch = False
    largest_layer_macs = None

    def __init__(self, dtype="float32", seed: int = 0):
        self.dtype = np.dtype(dtype)
        self.params: dict = {}
        self.buffers: dict = {}
        self.grads: dict = {}
        self.frozen: set = set()
        self._cache = None
        self._split = None  # the shard sizes of the cached forward's batch, if it was split
        self._blas = None  # the BLAS threads the cached forward ran on (None: as they were)
        self.init(seed)

    def __repr__(self) -> str:
        shape = "x".join(str(d) for d in self.input_shape)
        return (f"<{type(self).__name__} {self.name!r}: input {shape}, "
                f"{self.num_params:,} parameters, {self.dtype}>")

    @property
    def num_params(self) -> int:
        return sum(int(v.size) for v in self.params.values())

    # ---- what the network is: the analyzer's table and the diagram ---------------------

    def _network(self):
        net = getattr(self, "network", None)
        if net is None:
            if not self.spec or self.spec.startswith("<"):
                raise ValueError(f"{self.name}: this model does not know its spec; compile it "
                                 "with netspec.compile to use summary() and draw()")
            import netspec

            net = self.network = netspec.load(self.spec, self.name)
        return net

    def summary(self, batch: int = 1, optimizer: str = "sgd"):
        """The analysis (netspec.analyze) of this model's network at its input shape and
        dtype with its frozen parameters: print() it for the table; a notebook shows it."""
        from netspec.analysis import analyze

        return analyze(self._network(), self.input_shape, freeze=sorted(self.frozen),
                       batch=batch, dtype=self.dtype.name, optimizer=optimizer)

    def draw(self, **options):
        """The diagram of this model's network at its input shape (a graphviz.Digraph, shown
        inline in a notebook); options as netspec.draw's."""
        from netspec.analysis import analyze
        from netspec.render import draw

        net = self._network()
        analyze(net, self.input_shape)  # label the edges with this model's shapes
        return draw(net, **options)

    # ---- initialization ---------------------------------------------------------------

    def init(self, seed: int = 0) -> None:
        """(Re)initialize every tensor per its init (he, xavier, normal, zeros, ones) and reseed
        the dropout rng; the same seed gives the same model."""
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.grads = {}
        self._cache = None
        for t in self.tensors:
            self._place(t, seed)

    def reinit(self, layer: str, seed: int = 0, num_outputs: int | None = None) -> None:
        """Re-initialize one layer's tensors. With num_outputs, rebuild the classifier head
        (`head`, the last linear/conv before the output) for a new class count."""
        owned = [t for t in self.tensors if t.layer == layer]
        if not owned:
            layers = sorted({t.layer for t in self.tensors})
            raise KeyError(f"no layer {layer!r} with parameters; layers: {', '.join(layers)}")
        if num_outputs is not None:
            if layer != self.head:
                raise ValueError(f"only the head layer {self.head!r} can change its number of "
                                 f"outputs, not {layer!r}")
            if not (isinstance(num_outputs, int) and num_outputs >= 1):
                raise ValueError(f"num_outputs must be a positive integer, not {num_outputs!r}")
            old = owned[0].shape[0]
            resized = {t.name: Tensor(t.name, (num_outputs,) + tuple(t.shape[1:]), t.kind,
                                      t.init, t.fan_in, t.fan_out * num_outputs // old)
                       for t in owned}
            self.tensors = tuple(resized.get(t.name, t) for t in self.tensors)
            self.output_shape = (num_outputs,) + tuple(self.output_shape[1:])
            owned = list(resized.values())
        for t in owned:
            self._place(t, seed)
            self.grads.pop(t.name, None)
        self._cache = None

    def _place(self, t: Tensor, seed: int) -> None:
        store = self.params if t.kind == "param" else self.buffers
        store[t.name] = initial_value(t, seed).astype(self.dtype)

    # ---- running the network ----------------------------------------------------------

    def forward(self, x, train: bool = False, keep_cache: bool | None = None) -> np.ndarray:
        """Scores (N, ...) for a batch x (N, *input_shape).

        train: batch-norm batch statistics (updating the running ones) and dropout on.
        keep_cache: keep what backward needs (default: only when training); a forward that
        keeps nothing also drops the caches of the one before it.
        """
        x = self._input_array(x)
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            expected = ", ".join(str(d) for d in self.input_shape)
            raise ValueError(f"{self.name}: expected input (N, {expected}), got {tuple(x.shape)}")
        keep = train if keep_cache is None else keep_cache
        self._cache = None
        cache = {} if keep else _Discard()
        shards, blas = self._plan(len(x))
        xs = split(x, shards)  # Shards, one per thread, or x itself
        with blas_limit(blas):
            scores = self._forward(xs, bool(train), cache)
        self._cache = cache if keep else None
        self._split = xs.sizes if isinstance(xs, Shards) else None
        self._blas = blas
        return join(scores)

    def _plan(self, batch: int) -> tuple[int, int | None]:
        """(shards, BLAS threads or None to leave them) for a batch: what netspec.threads set
        for its block, else the model's own choice (netspec.runtime.parallel.auto_plan:
        NETSPEC_THREADS or every core; an image network split over them)."""
        if threads_were_set() or self.largest_layer_macs is None:
            return get_threads(), None
        return auto_plan(self.largest_layer_macs, batch, self.splits_batch)

    def _input_array(self, x) -> np.ndarray:
        """x in the model's dtype, or as int64 token ids for a token input."""
        if self.input_dtype != "int":
            return np.asarray(x, dtype=self.dtype)
        x = np.asarray(x)
        if x.dtype.kind not in "iu":
            raise ValueError(f"{self.name}: expects integer token ids, got {x.dtype} values")
        return x.astype(np.int64, copy=False)

    def backward(self, dout, input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate dL/dscores through the last forward; sets self.grads (every param) and
        returns dL/dx (None with input_grad=False, which skips the work only dL/dx needs, as
        training does). Each layer's cache is freed as soon as its backward has used it."""
        cache, self._cache = self._cache, None
        if cache is None:
            raise RuntimeError(f"{self.name}: backward needs a forward with train=True or "
                               "keep_cache=True first (each forward's caches serve one backward)")
        # The previous step's gradients go first: a training step never holds two sets.
        self.grads = grads = {}
        dout = np.asarray(dout, dtype=self.dtype)
        if self._split is not None:  # the forward ran on a split batch
            dout = split_like(dout, self._split)
        with blas_limit(self._blas):
            dx = join(self._backward(dout, cache, grads, bool(input_grad)))
        for name, value in self.params.items():  # layers that do not reach the output
            if name not in grads:
                grads[name] = np.zeros_like(value)
        self.grads = {name: grads[name] for name in self.params}
        return dx

    def loss(self, x, y, train: bool = True):
        """(data loss, grads) for a batch: forward, the spec's loss, backward. Weight penalties
        (l1/l2) are the trainer's, not included here."""
        scores = self.forward(x, train=train, keep_cache=True)
        value, dscores = self.data_loss(scores, np.asarray(y))
        self.backward(dscores, input_grad=False)
        return value, self.grads

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Predicted class per sample (argmax of the scores), evaluated in batches."""
        x = np.asarray(x)
        out = [self.forward(x[i:i + batch_size]).argmax(axis=1)
               for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.intp)

    def _forward(self, x, train, c):  # pragma: no cover - generated
        raise NotImplementedError

    def _backward(self, dout, c, g, input_grad):  # pragma: no cover - generated
        raise NotImplementedError

    def data_loss(self, scores, y):  # pragma: no cover - generated
        raise NotImplementedError

    # ---- state --------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Copies of every param and buffer by name, in layer order (PyTorch's names)."""
        out = {}
        for t in self.tensors:
            store = self.params if t.kind == "param" else self.buffers
            out[t.name] = store[t.name].copy()
        return out

    def load_state_dict(self, state, strict: bool = True) -> LoadReport:
        """Copy matching tensors in (cast to the model's dtype). strict: raise StateDictError
        unless names and shapes match exactly; otherwise load what matches and report."""
        report = LoadReport()
        known = {t.name: t for t in self.tensors}
        for name, value in state.items():
            if name.rsplit(".", 1)[-1] in IGNORED_KEYS:
                continue
            if name not in known:
                report.unexpected.append(name)
                continue
            value = np.asarray(value)
            if tuple(value.shape) != tuple(known[name].shape):
                report.mismatched.append((name, tuple(value.shape), tuple(known[name].shape)))
                continue
            report.loaded.append(name)
        report.missing = [n for n in known if n not in state]
        if strict and not report.ok:
            raise StateDictError(report)
        for name in report.loaded:
            store = self.params if known[name].kind == "param" else self.buffers
            store[name][...] = np.asarray(state[name])
        return report

    def save(self, path) -> None:
        """Write the state dict (PyTorch's names, no pickles) to an .npz file, atomically.
        netspec's one weight format: `load`, `netspec eval --weights` and `--init-from` read
        it, and so do training checkpoints (the same arrays under param/ and buffer/)."""
        from netspec.train.checkpoint import atomic_savez

        atomic_savez(os.fspath(path), self.state_dict())

    def load(self, path, strict: bool = True) -> LoadReport:
        """Read weights into the model: a file of `save`, a training checkpoint (last.npz,
        best.npz), any .npz of arrays by name, or a PyTorch state dict (.pt/.pth, with torch
        installed; torch.load(weights_only=True), never code). strict: every name and shape
        must match (StateDictError lists the differences); otherwise load what matches and
        report the rest. A damaged file or NaN/Inf weights raise ValueError naming the file."""
        from netspec.train.checkpoint import CheckpointError, read_weights

        try:
            state = read_weights(os.fspath(path)).model_state()
        except CheckpointError as e:
            raise ValueError(str(e)) from None
        return self.load_state_dict(state, strict=strict)
