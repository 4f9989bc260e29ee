"""Training stage: the torch backend of the training loop (one process, or one DDP worker).

``TorchModel`` gives a torch ``nn.Module`` (the spec compiled with target="torch") the
compiled-model interface loop.py trains (params, buffers, init, reinit, state dicts, forward),
with a compiled NumPy model of the same spec as its reference for names, shapes and
initialization. ``loop.train(TorchModel(...), cfg, data, out)`` then runs the shared loop
(config, data order, schedules, metrics, checkpoints, resume, Ctrl-C, progress) with the
per-iteration work done here in torch:

    x, y  = the rank's share of the global batch, on the device; crop/flip drawn from the
            run's augmentation stream on the global batch (as NumPy does), applied on device
    loss  = loss(module(x)) * weight + penalty        autocast for --precision bf16/fp16
    step  = torch optimizer (netspec's formulas, netspec's state layout), max-norm

Under ``torch.distributed`` (torchrun, or ``netspec train --nproc N``) the module is wrapped in
DistributedDataParallel; each global batch ``idx`` of the shared shuffle is split as
``idx[rank::world]`` (DistributedSampler's split of a shuffled epoch, but the permutation is
the run's own, so every world size and the NumPy backend see the same global batches), and the
local mean loss is weighted by ``len(local) * world / len(idx)`` so DDP's gradient average is
the global batch's mean gradient. Only rank 0 validates and writes files.
"""
from __future__ import annotations

import math
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from netspec.train.loop import (
    DIVERGENCE_FACTOR,
    Backend,
    InterruptFlag,
    LoopState,
    Run,
    TrainError,
    diverged,
)

TORCH_HINT = "install the torch extra: pip install 'netspec[torch]'"
PRECISIONS = ("fp32", "bf16", "fp16")


def import_torch():
    """torch, or a TrainError saying which extra to install."""
    try:
        import torch
    except ImportError:
        raise TrainError(f"the torch backend needs PyTorch, which is not installed; "
                         f"{TORCH_HINT}") from None
    return torch


# ---------------------------------------------------------------- processes

@dataclass(frozen=True)
class Workers:
    """This process's place among the training processes (torchrun's environment)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def writer(self) -> bool:
        return self.rank == 0


def current_workers() -> Workers:
    """Rank and world size of the initialized process group, else one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        import os

        return Workers(dist.get_rank(), dist.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", "0")))
    return Workers()


# ---------------------------------------------------------------- the model

def resolve_device(device: str):
    """A torch.device for "cpu", "cuda" or "cuda:N"; a clear error when CUDA is missing."""
    torch = import_torch()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"--device {device}: CUDA is not available on this machine (torch "
                         f"{torch.__version__}); use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise TrainError(f"--device {device}: expected cpu, cuda or cuda:N") from None


class TorchModel:
    """A torch module with the interface of netspec's compiled models, for the shared loop.

    ``reference`` is the compiled NumPy model of the same spec: it supplies the tensor list
    (names, shapes, kinds, initializers), so init(seed) gives the NumPy model's initial
    weights, and reinit/load_state_dict keep NumPy's rules and messages. The module's
    state_dict must carry the same names and shapes (batch norm's num_batches_tracked aside).
    """

    def __init__(self, module, reference, device: str = "cpu", precision: str = "fp32",
                 channels_last: bool | None = None):
        torch = import_torch()
        if precision not in PRECISIONS:
            raise TrainError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
        self.device = resolve_device(device)
        self.precision = precision
        if precision == "fp16" and self.device.type != "cuda":
            raise TrainError("--precision fp16 needs a CUDA device (--device cuda); on the CPU "
                             "use --precision bf16")
        self.reference = reference
        self.dtype = getattr(torch, np.dtype(reference.dtype).name)
        # What the inputs become on the device: the model's float dtype, or int64 ids for
        # a token input (`input x: [T] int`), as nn.Embedding takes.
        self.input_dtype = torch.int64 if reference.input_dtype == "int" else self.dtype
        self.module = module.to(device=self.device, dtype=self.dtype)
        is_image = len(reference.input_shape) == 3
        self.channels_last = (self.device.type == "cuda" and is_image
                              if channels_last is None else channels_last)
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.check_names()
        self.name, self.head = reference.name, reference.head
        self.input_shape = reference.input_shape
        self.rng = reference.rng  # netspec's dropout stream, kept so NumPy can resume the run
        self._frozen: set[str] = set()
        self.copy_from_reference([t.name for t in reference.tensors])

    @classmethod
    def from_spec(cls, net, seed: int = 0, device: str = "cpu", precision: str = "fp32",
                  dtype: str = "float32", channels_last: bool | None = None,
                  allow_large: bool = False) -> TorchModel:
        """Compile ``net`` (a Network, path or bundled name) to torch and to NumPy (the
        reference; ``allow_large`` as for netspec.compile)."""
        import netspec

        import_torch()
        reference = netspec.compile(net, seed=seed, dtype=dtype, allow_large=allow_large)
        module = netspec.compile(net, target="torch", seed=seed)
        return cls(module, reference, device, precision, channels_last)

    # ---- tensors by name

    def tensor_map(self) -> dict[str, Any]:
        """name -> the module's parameter or buffer (num_batches_tracked left out)."""
        out = dict(self.module.named_parameters())
        out.update((n, b) for n, b in self.module.named_buffers()
                   if not n.endswith("num_batches_tracked"))
        return out

    def named_params(self) -> dict[str, Any]:
        return dict(self.module.named_parameters())

    def check_names(self) -> None:
        ours = {n: tuple(t.shape) for n, t in self.tensor_map().items()}
        theirs = {t.name: tuple(t.shape) for t in self.reference.tensors}
        if ours != theirs:
            diff = sorted(set(ours) ^ set(theirs)) + sorted(
                n for n in set(ours) & set(theirs) if ours[n] != theirs[n])
            raise TrainError(f"the torch module of {self.reference.name} does not match the "
                             f"spec's tensors: {', '.join(diff[:6])}")

    def copy_from_reference(self, names) -> None:
        """Copy the reference's values of ``names`` into the module (shapes may change)."""
        torch = import_torch()
        values = self.reference.state_dict()
        with torch.no_grad():
            for name in names:
                self.put(name, torch.as_tensor(values[name]))

    def put(self, name: str, value) -> None:
        """Set tensor ``name`` to ``value``; a new shape replaces the parameter (reinit)."""
        torch = import_torch()
        target = self.tensor_map()[name]
        if tuple(target.shape) == tuple(value.shape):
            target.copy_(value)
            return
        layer, local = name.rsplit(".", 1)
        owner = self.module.get_submodule(layer)
        new = value.to(device=self.device, dtype=self.dtype).clone()
        if isinstance(target, torch.nn.Parameter):
            setattr(owner, local, torch.nn.Parameter(new, requires_grad=target.requires_grad))
        else:
            owner.register_buffer(local, new)
        for attr in ("out_features", "out_channels", "num_features"):
            if hasattr(owner, attr) and local == "weight":
                setattr(owner, attr, int(new.shape[0]))

    @staticmethod
    def to_numpy(t) -> np.ndarray:
        return t.detach().to("cpu").contiguous().numpy()

    @property
    def params(self) -> dict[str, np.ndarray]:
        named = self.named_params()
        return {t.name: self.to_numpy(named[t.name]) for t in self.reference.tensors
                if t.kind == "param"}

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        named = self.tensor_map()
        return {t.name: self.to_numpy(named[t.name]) for t in self.reference.tensors
                if t.kind == "buffer"}

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return {n: self.to_numpy(p.grad) for n, p in self.named_params().items()
                if p.grad is not None}

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    @property
    def frozen(self) -> set[str]:
        return set(self._frozen)

    @frozen.setter
    def frozen(self, names) -> None:
        self._frozen = set(names)
        for n, p in self.named_params().items():
            p.requires_grad_(n not in self._frozen)

    # ---- the compiled-model interface

    def init(self, seed: int = 0) -> None:
        self.reference.init(seed)
        self.rng = self.reference.rng
        self.copy_from_reference([t.name for t in self.reference.tensors])

    def reinit(self, layer: str, seed: int = 0, num_outputs: int | None = None) -> None:
        self.reference.reinit(layer, seed, num_outputs=num_outputs)
        self.copy_from_reference([t.name for t in self.reference.tensors if t.layer == layer])

    def state_dict(self) -> dict[str, np.ndarray]:
        return {**self.params, **self.buffers}

    def load_state_dict(self, state, strict: bool = True):
        """NumPy's rules (and errors) for names and shapes, then the values into the module."""
        torch = import_torch()
        report = self.reference.load_state_dict(state, strict=strict)
        with torch.no_grad():
            for name in report.loaded:
                self.put(name, torch.as_tensor(np.asarray(state[name])))
        return report

    def forward(self, x, train: bool = False) -> np.ndarray:
        """Scores as a NumPy array (eval mode unless ``train``), for validation and eval."""
        torch = import_torch()
        self.module.train(train)
        with torch.no_grad(), self.autocast():
            scores = self.module(self.to_device(np.asarray(x)))
        return self.to_numpy(scores.float() if scores.dtype in (torch.float16, torch.bfloat16)
                             else scores)

    def to_device(self, x: np.ndarray):
        torch = import_torch()
        t = torch.as_tensor(x).to(device=self.device, dtype=self.input_dtype, non_blocking=True)
        if self.channels_last and t.ndim == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def autocast(self):
        """Mixed precision for --precision bf16/fp16 (autocast); fp32 runs as is."""
        torch = import_torch()
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def attach_backend(self, run: Run, resume: bool) -> None:
        """Called by loop.train: the torch optimizer and per-iteration steps for ``run``."""
        TorchSteps(self, run, resume).attach()


# ---------------------------------------------------------------- losses and penalties

def correct_count(scores, y) -> float:
    """Correct predictions, one per example; per-token labels (N, T) count each example's
    fraction of tokens right (as netspec.train.loop.correct_count)."""
    hits = scores.argmax(-1) == y
    if hits.ndim == 1:
        return int(hits.sum())
    return float(hits.reshape(len(y), -1).float().mean(1).sum())


def loss_of(cfg_loss):
    """scores, y -> mean data loss, as netspec.runtime.losses computes it (torch ops)."""
    torch = import_torch()
    F = torch.nn.functional
    if cfg_loss.type == "softmax":
        # per-token scores (N, T, C) of a language model: the mean over all N T tokens,
        # as netspec.runtime.losses.softmax_loss
        return lambda s, y: F.cross_entropy(s.reshape(-1, s.shape[-1]), y.reshape(-1))
    delta, squared = cfg_loss.delta, cfg_loss.squared

    def svm(s, y):  # Weston-Watkins hinge, summed over classes, mean over the batch
        correct = s.gather(1, y[:, None])
        margins = (s - correct + delta).clamp(min=0).scatter(1, y[:, None], 0.0)
        return (margins * margins if squared else margins).sum() / s.shape[0]

    return svm


def penalty_of(run: Run, named: dict[str, Any]):
    """The L1/L2/elastic penalty over the regularized weights, as a torch scalar, or None."""
    reg = run.reg
    if not reg.penalizes or not run.reg_names:
        return None
    weights = [named[n] for n in run.reg_names if n in named]

    def penalty():
        total = 0.0
        for w in weights:
            if reg.l1:
                total = total + reg.l1 * w.abs().sum()
            if reg.l2:
                total = total + 0.5 * reg.l2 * (w * w).sum()
        return total

    return penalty


# ---------------------------------------------------------------- the per-iteration steps

class TorchSteps:
    """The torch Backend of one run: built after the loop knows the frozen set."""

    def __init__(self, model: TorchModel, run: Run, resume: bool):
        from netspec.train.torch_optim import TorchOptimizer

        self.torch = import_torch()
        self.model, self.run, self.resume = model, run, resume
        self.workers = current_workers()
        self.loss = loss_of(run.cfg.loss)
        self.net = model.module  # the DDP wrapper once started
        self.scaler = None
        self.penalty = None
        self.stream = None
        self.run.optimizer = TorchOptimizer(run.cfg.optimizer, model.named_params)
        if not self.workers.writer:
            run.progress = False
            run.log = lambda message: None

    def attach(self) -> None:
        w = self.workers
        self.run.backend = Backend(
            name="torch", gradients=self.gradients, update=self.update, count=self.count,
            snapshot=self.snapshot, writer=w.writer,
            interrupts=self.interrupts if w.distributed else Backend.interrupts,
            stop=self.stop if w.distributed else Backend.stop,
            total=self.total if w.distributed else Backend.total,
            checkpoint_extra=self.checkpoint_extra, started=self.started,
            data_changed=self.place_data)

    # ---- start

    def started(self, run: Run, state: LoopState) -> None:
        """After start or resume: data on the device, DDP, scaler, the penalty's tensors."""
        torch, model = self.torch, self.model
        self.run.optimizer.build()
        named = model.named_params()
        self.penalty = penalty_of(run, named)
        self.max_norm = [named[n] for n in run.reg_names
                         if run.reg.max_norm is not None and named[n].ndim >= 2]
        if model.precision == "fp16":
            self.scaler = torch.amp.GradScaler(model.device.type)
        self.seed_dropout(run, state)
        self.place_data(run)
        if self.workers.distributed:
            if not self.workers.writer:  # the epoch's sums start from rank 0's saved ones
                state.sums = {**state.sums, "loss": 0.0, "reg": 0.0, "correct": 0, "seen": 0}
            ids = [model.device.index] if model.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(model.module, device_ids=ids)

    def seed_dropout(self, run: Run, state: LoopState) -> None:
        """torch's RNG (dropout) from the run's seed and rank, or the checkpoint's state."""
        torch = self.torch
        saved = None
        if self.resume and self.workers.world == 1:
            from netspec.train.checkpoint import load_checkpoint

            saved = load_checkpoint(run.out / "last.npz").extra.get("torch.rng")
        if saved is not None:
            torch.set_rng_state(torch.as_tensor(saved, dtype=torch.uint8))
        else:
            seq = np.random.SeedSequence([run.cfg.seed, self.workers.rank, state.iteration])
            torch.manual_seed(int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1)))

    def place_data(self, run: Run) -> None:
        """In-memory splits go to the device once; a streamed one reads through workers."""
        data = run.data
        if isinstance(data.x_train, np.ndarray):
            self.x_train = self.torch.as_tensor(data.x_train).to(self.model.device,
                                                                self.model.input_dtype)
            self.y_train = self.torch.as_tensor(data.y_train).to(self.model.device)
        else:
            self.x_train = None

    # ---- one iteration

    def local_share(self, idx: np.ndarray) -> np.ndarray:
        """This worker's part of the global batch: positions rank, rank + world, ..."""
        return idx[self.workers.rank::self.workers.world]

    def batch(self, run: Run, state: LoopState, idx: np.ndarray):
        """(x, y) of this worker's share on the device, augmented like NumPy augments."""
        torch, w = self.torch, self.workers
        local = self.local_share(idx)
        if self.x_train is not None:
            pos = torch.as_tensor(local).to(self.model.device)
            x, y = self.x_train[pos], self.y_train[pos]
        else:
            x, y = self.streamed(run, state, local)
        draws = run.augment.draw(len(idx), x.ndim, state.augment_rng)
        if draws is not None:
            from netspec.train.torch_augment import apply_draws

            x = apply_draws(x, draws.take(slice(w.rank, None, w.world)), run.augment)
        if self.model.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def streamed(self, run: Run, state: LoopState, local: np.ndarray):
        """The next batch of the DataLoader over the epoch (re)started at this position."""
        from netspec.train.streaming import epoch_loader

        key = (state.epoch, id(state.order))
        if self.stream is None or self.stream[0] != key or self.stream[2] != state.batch_index:
            loader = epoch_loader(run.data, state.order, run.cfg.batch, state.batch_index,
                                  self.workers, self.model.device.type == "cuda")
            self.stream = [key, iter(loader), state.batch_index]
        try:
            idx, x, y = next(self.stream[1])
        except RuntimeError as e:  # a loader process's DataError arrives wrapped
            if "DataError" not in str(e):
                raise
            raise TrainError(str(e).strip().splitlines()[-1].split("DataError: ", 1)[-1]
                             ) from None
        self.stream[2] += 1
        if not np.array_equal(idx.numpy(), local):  # pragma: no cover - a loader bug
            raise TrainError("the streamed batch does not match the epoch's order")
        dev = self.model.device
        return (x.to(dev, self.model.input_dtype, non_blocking=True),
                y.to(dev, non_blocking=True))

    def gradients(self, run: Run, state: LoopState, idx: np.ndarray) -> tuple[float, float, int]:
        torch, model = self.torch, self.model
        x, y = self.batch(run, state, idx)
        local = len(y)
        for p in model.module.parameters():
            p.grad = None
        model.module.train(True)
        with model.autocast():
            scores = self.net(x)
        scores = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
        loss = self.loss(scores, y)
        weight = local * self.workers.world / len(idx)
        total = loss * weight
        reg = self.penalty() if self.penalty else None
        if reg is not None:
            total = total + reg
        (self.scaler.scale(total) if self.scaler else total).backward()
        loss_value = float(loss.detach())
        reg_value = float(reg.detach()) if reg is not None else 0.0
        self.check_finite(run, state, loss_value + reg_value)
        return loss_value, reg_value, correct_count(scores.detach(), y)

    def count(self, idx: np.ndarray) -> int:
        """Examples of the global batch this worker trains on (the loop's running sums)."""
        return len(self.local_share(idx))

    def check_finite(self, run: Run, state: LoopState, loss: float) -> None:
        """NaN/Inf loss or gradients, or a loss past DIVERGENCE_FACTOR times the first
        batch's (this worker's), stop the run before the update, as on NumPy."""
        if math.isfinite(loss) and state.initial_loss is None:
            state.initial_loss = loss
        if not math.isfinite(loss):
            raise diverged(run, state, f"the loss is {loss}")
        if loss > DIVERGENCE_FACTOR * max(state.initial_loss, 1.0):
            raise diverged(run, state, f"the loss is {loss:.4g}, more than "
                           f"{DIVERGENCE_FACTOR:g} times the first batch's "
                           f"{state.initial_loss:.4g}")
        if self.scaler is not None:  # fp16: GradScaler skips steps with Inf/NaN gradients
            return
        torch = self.torch
        named = [(n, p.grad) for n, p in self.model.named_params().items() if p.grad is not None]
        if not named:
            return
        peaks = torch.stack([g.detach().abs().max().float() for _, g in named])
        if bool(torch.isfinite(peaks).all()):
            return
        for (name, g), peak in zip(named, peaks.tolist()):
            if not math.isfinite(peak):
                bad = "NaN" if bool(torch.isnan(g).any()) else "Inf"
                raise diverged(run, state, f"the gradient of {name} has {bad}")

    def update(self, run: Run, state: LoopState) -> None:
        state.lr = run.schedule.lr_at(state.epoch, state.iteration)
        run.optimizer.set_lr(state.lr)
        if run.cfg.clip is not None:  # the NumPy backend's clip_gradients, by torch
            if self.scaler is not None:  # fp16: clip the true gradients, not the scaled ones
                self.scaler.unscale_(run.optimizer.build())
            params = [p for p in self.model.named_params().values() if p.grad is not None]
            self.torch.nn.utils.clip_grad_norm_(params, run.cfg.clip)
        run.optimizer.step(self.scaler)
        if self.max_norm:
            project_max_norm(self.max_norm, run.reg.max_norm)

    def snapshot(self, run: Run, state: LoopState):
        return TorchSnapshot.take(self, run, state)

    def checkpoint_extra(self, run: Run) -> dict:
        if self.workers.world > 1:
            return {}
        return {"torch.rng": self.torch.get_rng_state().numpy().copy()}

    # ---- several workers

    @contextmanager
    def interrupts(self) -> Iterator[InterruptFlag]:
        """Ctrl-C / SIGTERM (the launcher forwards them) only set a flag, read every step."""
        flag = InterruptFlag()
        if threading.current_thread() is not threading.main_thread():
            yield flag
            return

        def handler(signum, frame):
            flag.requested = True

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield flag
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def stop(self, flag: InterruptFlag) -> bool:
        """Stop when any worker was asked to (or rank 0 stopped early): every worker stops
        after the same iteration."""
        torch = self.torch
        t = torch.tensor([float(flag.requested), float(flag.early)], device=self.comm_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        flag.requested, flag.early = (bool(v) for v in t.tolist())
        return flag.requested or flag.early

    def total(self, sums: dict) -> dict:
        """The epoch's loss, penalty, correct and seen summed over the workers (rank 0's
        seconds: the workers run side by side)."""
        torch = self.torch
        keys = ("loss", "reg", "correct", "seen")
        t = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64,
                         device=self.comm_device())
        torch.distributed.all_reduce(t)
        out = dict(sums)
        for k, v in zip(keys, t.tolist()):
            out[k] = round(v) if k in ("correct", "seen") else v
        return out

    def comm_device(self):
        return self.model.device if self.model.device.type == "cuda" else "cpu"


def project_max_norm(weights, c: float) -> None:
    """||w_row||_2 <= c for each output row, as regularize.apply_max_norm does."""
    import torch

    with torch.no_grad():
        for w in weights:
            rows = w.reshape(w.shape[0], -1)
            norms = rows.pow(2).sum(1).sqrt()
            tiny = torch.finfo(w.dtype).tiny
            scale = torch.clamp(c / norms.clamp(min=tiny), max=1.0)
            w.mul_(scale.reshape((-1,) + (1,) * (w.ndim - 1)))


@dataclass
class TorchSnapshot:
    """Buffers and random streams before an iteration, to undo it on a raw Ctrl-C."""

    buffers: dict
    rngs: tuple
    torch_rng: Any

    @classmethod
    def take(cls, steps: TorchSteps, run: Run, state: LoopState) -> TorchSnapshot:
        named = steps.model.tensor_map()
        buffers = {t.name: named[t.name].detach().clone()
                   for t in steps.model.reference.tensors if t.kind == "buffer"}
        return cls(buffers, tuple(g.bit_generator.state for g in (run.model.rng,
                                                                  state.shuffle_rng,
                                                                  state.augment_rng)),
                   steps.torch.get_rng_state())

    def restore(self, run: Run, state: LoopState) -> None:
        import torch

        named = run.model.tensor_map()
        with torch.no_grad():
            for name, value in self.buffers.items():
                named[name].copy_(value)
        for g, s in zip((run.model.rng, state.shuffle_rng, state.augment_rng), self.rngs):
            g.bit_generator.state = s
        torch.set_rng_state(self.torch_rng)
