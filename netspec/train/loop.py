"""Training stage: the mini-batch loop with validation, checkpoints, exact resume and plots.

``train(model, cfg, data, out_dir)`` works on any object with the compiled-model interface
(params, buffers, grads, frozen, rng, forward, backward(dscores, input_grad=False), init,
state_dict, load_state_dict; reinit only when cfg.reinit is used). One iteration:

    x, y   = augment(x_train[batch]), y_train[batch]      batch from a seeded permutation
    loss   = data_loss(forward(x)) + penalty(weights)    backward fills grads, penalty adds
    lr     = schedule(t);  clip the gradients' norm;  optimizer.step(unfrozen);  max-norm

Everything that decides the next iteration (params, buffers, optimizer state, the model's
dropout rng, the shuffle and augmentation rngs, the epoch's permutation and position, the
running sums) goes into ``last.npz``, so ``resume=True`` continues bit for bit.

The per-iteration work (gradients, update, validation, Ctrl-C, who writes files) comes from
``run.backend``: ``NUMPY`` here; netspec.train.torch_loop supplies the torch one (and its
DistributedDataParallel workers), so both backends share config, data, metrics, checkpoints,
resume and progress.
"""
from __future__ import annotations

import functools
import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np

from netspec.train.callbacks import Context, Step, check_callbacks, dispatch
from netspec.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    TransferReport,
    load_checkpoint,
    load_matching,
    remove_stale_temporaries,
    save_checkpoint,
)
from netspec.train.config import ConfigError, LossConfig, TrainConfig, did_you_mean
from netspec.train.metrics import EpochRecord, accuracy, top_k_hits, write_metrics
from netspec.train.progress import epoch_bar, show
from netspec.train.regularize import Regularization, regularized_names

LossFn = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]


class TrainError(Exception):
    """Training cannot go on; the message says why and what to change."""


class DivergedError(TrainError):
    """The loss or a gradient became NaN/Inf; nothing was saved for the bad iteration."""

    def __init__(self, message: str, iteration: int, epoch: int):
        super().__init__(message)
        self.iteration, self.epoch = iteration, epoch


@dataclass
class History:
    records: list[EpochRecord]
    status: str                      # "completed", "early_stopped" or "interrupted"
    out_dir: Path
    best_epoch: int | None = None
    best_metric: float | None = None
    transfer: TransferReport | None = None

    @property
    def last(self) -> EpochRecord | None:
        return self.records[-1] if self.records else None

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / "last.npz"

    @property
    def best_checkpoint(self) -> Path:
        return self.out_dir / "best.npz"


# ---------------------------------------------------------------- the fixed parts of a run

LOSSES: dict[str, Callable[[LossConfig], LossFn]] = {
    "softmax": lambda c: _losses().softmax_loss,
    "svm": lambda c: functools.partial(_losses().svm_loss, delta=c.delta, squared=c.squared),
}


def _losses():
    from netspec.runtime import losses

    return losses


def loss_function(loss: str | LossConfig | LossFn) -> LossFn:
    """A (scores, y) -> (loss, dscores) function from a name, a LossConfig or itself."""
    if callable(loss):
        return loss
    if isinstance(loss, str):
        loss = LossConfig(type=loss)
    return LOSSES[loss.type](loss)


def resolve_frozen(names: list[str], patterns: list[str]) -> set[str]:
    """Parameter names matching a layer name ("conv1" -> conv1.*) or a glob ("layer1.*")."""
    frozen: set[str] = set()
    for pattern in patterns:
        matched = {n for n in names if fnmatchcase(n, pattern) or fnmatchcase(n, pattern + ".*")}
        if not matched:
            layers = sorted({n.rsplit(".", 1)[0] for n in names})
            raise ConfigError("freeze", f"'{pattern}' matches no parameter",
                              did_you_mean(pattern, layers))
        frozen |= matched
    return frozen


@dataclass
class Run:
    """What stays fixed for the whole run."""

    model: Any
    cfg: TrainConfig
    data: Any
    out: Path
    loss_fn: LossFn
    optimizer: Any
    schedule: Any
    reg: Regularization
    reg_names: list[str]
    frozen: set[str]
    augment: Any
    iters_per_epoch: int
    log: Callable[[str], None]
    progress: bool | str
    backend: Any = None  # a Backend; make_run sets NUMPY
    callbacks: list = field(default_factory=list)
    context: Context | None = None  # what the callbacks see; run_training sets it


@dataclass
class LoopState:
    """What changes from one iteration to the next (and is checkpointed)."""

    shuffle_rng: np.random.Generator
    augment_rng: np.random.Generator
    epoch: int = 0               # the epoch in progress (0-based)
    iteration: int = 0           # iterations done in total
    batch_index: int = 0         # iterations done in this epoch
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sums: dict = field(default_factory=lambda: {"loss": 0.0, "reg": 0.0, "correct": 0, "seen": 0,
                                                "seconds": 0.0})
    best_metric: float | None = None
    best_loss: float | None = None   # breaks ties of best_metric (val accuracy saturates)
    best_epoch: int | None = None
    records: list[EpochRecord] = field(default_factory=list)
    lr: float = 0.0
    initial_loss: float | None = None  # the first batch's loss: the divergence reference
    stop_early: bool = False  # patience ran out (or a callback asked): set by finish_epoch


def make_run(model, cfg: TrainConfig, data, out: Path, progress) -> Run:
    n = len(data.y_train)
    if n == 0:
        raise TrainError("the training split is empty")
    check_metric_settings(cfg, data)
    reg = Regularization(cfg.l1, cfg.l2, cfg.max_norm, cfg.regularize)
    optimizer = cfg.optimizer.build()
    iters = math.ceil(n / cfg.batch)
    return Run(model=model, cfg=cfg, data=data, out=out, loss_fn=loss_function(cfg.loss),
               optimizer=optimizer,
               schedule=cfg.schedule.build(cfg.optimizer.lr, cfg.epochs, iters),
               reg=reg, reg_names=[], frozen=set(), augment=cfg.augment.build(),
               iters_per_epoch=iters, log=logger(progress), progress=progress, backend=NUMPY)


def check_metric_settings(cfg: TrainConfig, data) -> None:
    """top_k below the class count; monitor = "val_top_k" with a validation split to watch."""
    if cfg.top_k is not None and cfg.top_k >= data.num_classes:
        raise ConfigError("top_k", f"{cfg.top_k} is not below the data's {data.num_classes} "
                          "classes (every example would be a hit)",
                          f"use top_k < {data.num_classes}, or drop it")
    if cfg.monitor == "val_top_k" and not len(data.y_val):
        raise ConfigError("monitor", "'val_top_k' needs a validation split",
                          "set data.val > 0 (CLI: --val 0.1), or monitor val_acc")


def logger(progress) -> Callable[[str], None]:
    if not progress:
        return lambda message: None
    return lambda message: print(message, file=sys.stderr, flush=True)


def attach_model(run: Run) -> None:
    """Frozen set and regularized names, once the model's parameters have their final shapes."""
    model, cfg = run.model, run.cfg
    names = list(model.params)
    run.frozen = set(getattr(model, "frozen", ())) | resolve_frozen(names, cfg.freeze)
    model.frozen = set(run.frozen)
    run.reg_names = regularized_names(model.params, cfg.regularize, exclude=run.frozen)
    if hasattr(run.optimizer, "decays"):  # AdamW decays the same weights the penalties would
        selected = set(regularized_names(model.params, cfg.regularize))
        run.optimizer.decays = lambda name, p: name in selected


# ---------------------------------------------------------------- start or resume

def seed_streams(seed: int) -> tuple[np.random.SeedSequence, ...]:
    """Independent streams for shuffling, augmentation and dropout from one seed."""
    return tuple(np.random.SeedSequence(seed).spawn(3))


def fresh_start(run: Run) -> tuple[LoopState, TransferReport | None]:
    model, cfg = run.model, run.cfg
    shuffle, augment, dropout = seed_streams(cfg.seed)
    model.init(cfg.seed)
    model.rng.bit_generator.state = type(model.rng.bit_generator)(dropout).state
    report = load_matching(model, cfg.init_from) if cfg.init_from else None
    if report:
        run.log(report.summary())
    reinit_layers(run)
    return LoopState(np.random.default_rng(shuffle), np.random.default_rng(augment)), report


def reinit_layers(run: Run) -> None:
    """Re-initialize cfg.reinit; the head (``model.head``, else the last layer with parameters)
    gets the data's class count. Then check that the model's output width matches the classes."""
    model = run.model
    head = getattr(model, "head", None) or (
        next(reversed(model.params)).rsplit(".", 1)[0] if model.params else None)
    for layer in run.cfg.reinit:
        classes = run.data.num_classes if layer == head else None
        model.reinit(layer, run.cfg.seed, num_outputs=classes)
    check_output_width(run)


def check_output_width(run: Run) -> None:
    scores = run.model.forward(run.data.x_train[:2], train=False)
    labels = run.data.y_train[:2]
    if scores.shape[:-1] != labels.shape or scores.shape[-1] != run.data.num_classes:
        head = next(reversed(run.model.params)).rsplit(".", 1)[0]
        if labels.ndim == 2:  # a language model: the vocabulary is the data's
            raise TrainError(
                f"the model predicts {scores.shape[-1]} tokens but the text has "
                f"{run.data.num_classes} distinct characters; set the spec's vocabulary to "
                f"them (CLI: --param vocab={run.data.num_classes})")
        raise TrainError(
            f"the model outputs {scores.shape[-1]} scores per example but the data has "
            f"{run.data.num_classes} classes; re-initialize the head for them: "
            f"reinit = [{head}] (CLI: --reinit {head})")


def resume_from(run: Run, path: Path) -> LoopState:
    ckpt = load_checkpoint(path)
    changed = changed_settings(ckpt.config, run.cfg.to_dict(), TrainConfig().to_dict())
    if changed:
        run.log(f"note: resuming with changed settings {', '.join(changed)}; "
                "the run will differ from an uninterrupted one")
    model = run.model
    check_same_optimizer(run, ckpt, path)
    try:
        model.load_state_dict(ckpt.model_state(), strict=True)
    except Exception as e:  # noqa: BLE001 - StateDictError or a value that will not cast
        raise CheckpointError(path, f"does not fit this model: {e}") from None
    try:
        state = _restore_state(run, ckpt)
    except CheckpointError:
        raise
    except KeyError as e:
        raise CheckpointError(path, f"the training state lacks {e} (a tampered checkpoint, "
                                    "or one of another optimizer)") from None
    except (TypeError, ValueError, AttributeError, IndexError) as e:
        raise CheckpointError(path, f"the training state is malformed ({type(e).__name__}: "
                                    f"{e})") from None
    run.log(f"resumed from {path}: epoch {state.epoch + 1}, batch {state.batch_index}, "
            f"iteration {state.iteration}")
    return state


def _restore_state(run: Run, ckpt) -> LoopState:
    """The optimizer, random streams and counters of a checkpoint, each checked for type:
    a tampered record fails here (KeyError, TypeError, ValueError), not mid-epoch."""
    s = ckpt.state
    run.optimizer.load_state_dict(ckpt.optimizer)
    run.model.rng.bit_generator.state = s["model_rng"]
    counters = {k: s[k] for k in ("epoch", "iteration", "batch_index")}
    if not all(type(v) is int and v >= 0 for v in counters.values()):
        raise ValueError(f"epoch, iteration and batch_index must be counts, not {counters}")
    sums = s["sums"]
    if not isinstance(sums, dict) or not all(
            isinstance(sums.get(k), (int, float)) for k in ("loss", "reg", "correct", "seen")):
        raise ValueError("'sums' must hold the epoch's running loss, reg, correct and seen")
    order = ckpt.extra.get("loader.order", np.zeros(0, np.int64))
    n = len(run.data.y_train)
    if order.ndim != 1 or not np.issubdtype(order.dtype, np.integer) or (
            order.size and (order.min() < 0 or order.max() >= n)):
        raise ValueError(f"loader.order is not a permutation of the {n} training examples")
    return LoopState(rng_from_state(s["shuffle_rng"]), rng_from_state(s["augment_rng"]),
                     epoch=counters["epoch"], iteration=counters["iteration"],
                     batch_index=counters["batch_index"], order=order, sums=sums,
                     best_metric=s["best_metric"], best_loss=s.get("best_loss"),
                     best_epoch=s["best_epoch"],
                     records=[EpochRecord(**r) for r in s["records"]], lr=float(s.get("lr", 0.0)),
                     initial_loss=s.get("initial_loss"))


def check_same_optimizer(run: Run, ckpt: Checkpoint, path: Path) -> None:
    """Only the update rule a run was trained with has its optimizer state (velocity,
    moments, caches): another one is refused before anything is loaded."""
    saved = ckpt.config.get("optimizer") if isinstance(ckpt.config, dict) else None
    was = saved.get("type") if isinstance(saved, dict) else None
    now = run.cfg.optimizer.type
    if isinstance(was, str) and was != now:
        raise TrainError(f"cannot resume {path} with optimizer '{now}': the run was trained "
                         f"with '{was}'\nhint: resume with --optimizer {was}, or start a new "
                         f"run from these weights with --init-from {path}")


def changed_settings(old: dict, new: dict, defaults: dict | None = None,
                     prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, ignoring epochs (extending a run is fine), patience
    and min_delta (extending a stopped one). A key the old config lacks (a setting newer than
    the checkpoint) counts as its default."""
    defaults = defaults if isinstance(defaults, dict) else {}
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, defaults.get(key)), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_settings(a, b, defaults.get(key), f"{prefix}{key}.")
        elif a != b and f"{prefix}{key}" not in ("epochs", "init_from", "patience",
                                                          "min_delta"):
            out.append(f"{prefix}{key}")
    return out


def rng_from_state(state: dict) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng


# ---------------------------------------------------------------- checkpoints

def make_checkpoint(run: Run, state: LoopState, status: str) -> Checkpoint:
    data = run.data
    return Checkpoint(
        params=dict(run.model.params), buffers=dict(run.model.buffers),
        optimizer=run.optimizer.state_dict(),
        extra={"data.mean": data.mean, "data.std": data.std,
               "data.classes": np.asarray(getattr(data, "classes", []), np.int64),
               "data.class_names": np.asarray(getattr(data, "class_names", None) or [], str),
               "loader.order": state.order, **run.backend.checkpoint_extra(run)},
        config=run.cfg.to_dict(),
        state={"status": status, "epoch": state.epoch, "iteration": state.iteration,
               "batch_index": state.batch_index, "sums": state.sums, "lr": state.lr,
               "best_metric": state.best_metric, "best_loss": state.best_loss,
               "best_epoch": state.best_epoch, "initial_loss": state.initial_loss,
               "records": [asdict(r) for r in state.records],
               "model_rng": run.model.rng.bit_generator.state,
               "shuffle_rng": state.shuffle_rng.bit_generator.state,
               "augment_rng": state.augment_rng.bit_generator.state,
               "frozen": sorted(run.frozen), "num_classes": data.num_classes,
               "input_shape": list(data.input_shape), "data_name": getattr(data, "name", "")},
    )


# ---------------------------------------------------------------- one iteration

# Training has diverged when a batch's loss passes this many times the first batch's
# (at least 1): the loss of an untrained softmax classifier is about ln(classes), and a run
# that reaches 100 times it is not coming back (Adam at lr=1e10 reached 3e20).
DIVERGENCE_FACTOR = 100.0


def check_finite(run: Run, state: LoopState, loss: float) -> None:
    """Stop before the update (and so before any save) when the loss is NaN/Inf, a gradient
    is, or the loss passes DIVERGENCE_FACTOR times its initial value."""
    what = None
    if math.isfinite(loss) and state.initial_loss is None:
        state.initial_loss = loss
    if not math.isfinite(loss):
        what = f"the loss is {loss}"
    elif loss > DIVERGENCE_FACTOR * max(state.initial_loss, 1.0):
        what = (f"the loss is {loss:.4g}, more than {DIVERGENCE_FACTOR:g} times the first "
                f"batch's {state.initial_loss:.4g}")
    else:
        for name, g in run.model.grads.items():
            if not np.isfinite(g).all():
                what = f"the gradient of {name} has {'NaN' if np.isnan(g).any() else 'Inf'}"
                break
    if what:
        raise diverged(run, state, what)


def diverged(run: Run, state: LoopState, what: str) -> DivergedError:
    """The error for a NaN/Inf found at the current iteration; nothing is saved for it."""
    last = run.out / "last.npz"
    kept = f"{last} is untouched" if last.exists() else "no checkpoint was written yet"
    return DivergedError(
        f"training diverged: {what} at iteration {state.iteration + 1} (epoch "
        f"{state.epoch + 1}, batch {state.batch_index + 1}); stopped without saving, {kept}."
        f"\nhint: lower the learning rate (optimizer.lr is {run.cfg.optimizer.lr:g}) or add "
        "warmup", state.iteration + 1, state.epoch + 1)


def compute_gradients(run: Run, state: LoopState, idx: np.ndarray) -> tuple[float, float, int]:
    """Forward, backward and penalty on one mini-batch: (data loss, penalty, correct count)."""
    model = run.model
    x = run.augment(run.data.x_train[idx], state.augment_rng)
    y = run.data.y_train[idx]
    scores = model.forward(x, train=True)
    loss, dscores = run.loss_fn(scores, y)
    model.backward(dscores, input_grad=False)  # the batch's own gradient is not used
    reg = run.reg.add_penalty(model.params, model.grads, run.reg_names)
    check_finite(run, state, loss + reg)
    return loss, reg, correct_count(scores, y)


def correct_count(scores: np.ndarray, y: np.ndarray) -> float:
    """Correct predictions, one per example; with per-token labels (N, T), each example
    counts the fraction of its tokens predicted right."""
    hits = np.argmax(scores, axis=-1) == y
    return float(hits.sum()) if hits.ndim == 1 else float(hits.reshape(len(y), -1).mean(1).sum())


def clip_gradients(grads: dict, frozen: set, max_norm: float | None) -> float:
    """Scale the unfrozen gradients so their global L2 norm is at most max_norm (torch's
    clip_grad_norm_: scale = max_norm / (norm + 1e-6) when it is below 1); the norm before."""
    total = math.sqrt(sum(float(np.vdot(g, g)) for name, g in grads.items()
                          if name not in frozen))
    if max_norm is not None:
        scale = max_norm / (total + 1e-6)
        if scale < 1:
            for name, g in grads.items():
                if name not in frozen:
                    g *= scale
    return total


def apply_update(run: Run, state: LoopState) -> None:
    """lr from the schedule, optimizer step on the unfrozen parameters, max-norm projection."""
    state.lr = run.schedule.lr_at(state.epoch, state.iteration)
    run.optimizer.lr = state.lr
    if run.cfg.clip is not None:
        clip_gradients(run.model.grads, run.frozen, run.cfg.clip)
    run.optimizer.step(run.model.params, run.model.grads, run.frozen)
    run.reg.constrain(run.model.params, run.reg_names)


@dataclass
class Snapshot:
    """State an iteration touches before its update: enough to undo a raw KeyboardInterrupt."""

    buffers: dict
    rngs: tuple

    @classmethod
    def take(cls, run: Run, state: LoopState) -> Snapshot:
        return cls({k: v.copy() for k, v in run.model.buffers.items()},
                   tuple(g.bit_generator.state for g in (run.model.rng, state.shuffle_rng,
                                                         state.augment_rng)))

    def restore(self, run: Run, state: LoopState) -> None:
        for k, v in self.buffers.items():
            run.model.buffers[k][...] = v
        for g, s in zip((run.model.rng, state.shuffle_rng, state.augment_rng), self.rngs):
            g.bit_generator.state = s


# ---------------------------------------------------------------- Ctrl-C

@dataclass
class InterruptFlag:
    requested: bool = False  # Ctrl-C (or SIGTERM under torchrun)
    early: bool = False      # rank 0 stopped early; the torch backend shares it with the others


@contextmanager
def deferred_interrupt() -> Iterator[InterruptFlag]:
    """The first Ctrl-C only sets a flag read between iterations; a second one raises."""
    flag = InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def quiet_float_warnings() -> Iterator[None]:
    """No NumPy overflow/invalid RuntimeWarnings during the loop: check_finite reports a
    diverging run itself, in one clear message. The warnings filter is process-wide, so it
    also holds in the threads a split batch runs in (np.errstate would not)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# ---------------------------------------------------------------- epochs

def run_epoch(run: Run, state: LoopState, flag: InterruptFlag) -> bool:
    """Iterate over the rest of the epoch; False if interrupted (state saved by the caller)."""
    n, batch = len(run.data.y_train), run.cfg.batch
    if run.data.recut is not None:  # this epoch's cut (text: windows at its random offset)
        run.data.x_train, run.data.y_train = run.data.recut(run.cfg.seed, state.epoch)
        run.backend.data_changed(run)
    if state.batch_index == 0:
        state.order = state.shuffle_rng.permutation(n)
        state.sums = {"loss": 0.0, "reg": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
    bar = epoch_bar(n, min(state.batch_index * batch, n), f"epoch {state.epoch + 1}/"
                    f"{run.cfg.epochs}", run.progress)
    sums, start = state.sums, time.perf_counter()
    backend = run.backend
    while state.batch_index < run.iters_per_epoch:
        idx = state.order[state.batch_index * batch:(state.batch_index + 1) * batch]
        snapshot = backend.snapshot(run, state)
        try:
            loss, reg, correct = backend.gradients(run, state, idx)
        except KeyboardInterrupt:  # not through deferred_interrupt: undo, then save
            snapshot.restore(run, state)
            return False
        backend.update(run, state)  # a KeyboardInterrupt here (second Ctrl-C) aborts unsaved
        n = backend.count(idx)
        sums["loss"] += loss * n
        sums["reg"] += reg * n
        sums["correct"] += correct
        sums["seen"] += n
        state.batch_index += 1
        state.iteration += 1
        if bar is not None:
            show(bar, len(idx), sums["loss"] / sums["seen"], sums["correct"] / sums["seen"],
                 state.lr)
        if run.callbacks:
            dispatch(run.callbacks, "on_step_end", run.context,
                     Step(state.epoch + 1, state.batch_index, state.iteration, float(loss),
                          state.lr, len(idx)))
        if backend.stop(flag):
            sums["seconds"] += time.perf_counter() - start
            if bar is not None:
                bar.close()
            return False
    sums["seconds"] += time.perf_counter() - start
    if bar is not None:
        bar.close()
    return True


def finish_epoch(run: Run, state: LoopState) -> EpochRecord | None:
    """Validate, record, write metrics and checkpoints (last, and best when improved).
    A worker that does not write (DDP rank > 0) only moves on to the next epoch."""
    state.sums = sums = run.backend.total(state.sums)
    if not run.backend.writer:
        state.epoch, state.batch_index = state.epoch + 1, 0
        return None
    data = run.data
    val = (run.backend.evaluate(run, data.x_val, data.y_val) if len(data.y_val) else None)
    top_k = run.cfg.top_k
    record = EpochRecord(
        epoch=state.epoch + 1, iteration=state.iteration, lr=state.lr,
        train_loss=sums["loss"] / sums["seen"], train_reg=sums["reg"] / sums["seen"],
        train_acc=sums["correct"] / sums["seen"],
        val_loss=val["loss"] if val else None, val_acc=val["accuracy"] if val else None,
        seconds=sums["seconds"], samples_per_s=sums["seen"] / max(sums["seconds"], 1e-9),
        top_k=top_k, val_top_k_acc=val["top_k_accuracy"] if val and top_k else None)
    state.records.append(record)
    improved = update_best(run.cfg.monitor, state, record)
    state.epoch, state.batch_index = state.epoch + 1, 0
    state.stop_early = early_stop_due(run.cfg, state)
    status = ("completed" if state.epoch >= run.cfg.epochs else
              "early_stopped" if state.stop_early else "running")
    for name, value in run.model.params.items():  # never save weights that are not numbers
        if not np.isfinite(value).all():
            raise DivergedError(f"training diverged: {name} holds NaN or Inf after epoch "
                                f"{record.epoch}; stopped without saving",
                                state.iteration, record.epoch)
    ckpt = make_checkpoint(run, state, status)
    save_checkpoint(run.out / "last.npz", ckpt)
    if improved:
        save_checkpoint(run.out / "best.npz", ckpt)
    write_metrics(run.out, state.records)
    run.log(epoch_line(record, run.cfg.epochs, improved))
    if state.stop_early and status == "early_stopped":
        run.log(f"early stop: {no_better(run.cfg)} for {run.cfg.patience} epochs since "
                f"epoch {patience_start(run.cfg, state)} (patience {run.cfg.patience})")
    if run.callbacks:
        run.context.best_epoch = state.best_epoch
        dispatch(run.callbacks, "on_epoch_end", run.context, record)
        if run.context.stop_training and status == "running":
            state.stop_early = True
            run.log(f"stopped by a callback after epoch {record.epoch}")
    return record


def monitored(monitor: str, record: EpochRecord) -> tuple[float, float]:
    """(the value ``monitor`` watches, the loss that breaks accuracy ties) of an epoch: the
    validation metric, the training one without a validation split."""
    has_val = record.val_loss is not None
    loss = record.val_loss if has_val else record.train_loss
    if monitor == "val_loss":
        return loss, loss
    return (record.val_top_k_acc if monitor == "val_top_k" else
            record.val_acc if has_val else record.train_acc), loss


def update_best(monitor: str, state: LoopState, record: EpochRecord) -> bool:
    """Whether ``record`` is the run's new best by ``monitor``; if so it becomes the best.
    Accuracies: higher wins, equal ones go to the lower loss, since a small validation split
    saturates at 100% early and would freeze "best" there. Loss: lower wins."""
    metric, loss = monitored(monitor, record)
    if monitor == "val_loss":
        improved = state.best_metric is None or metric < state.best_metric
    else:
        improved = (state.best_metric is None or metric > state.best_metric
                    or (metric == state.best_metric and state.best_loss is not None
                        and loss < state.best_loss))
    if improved:
        state.best_metric, state.best_loss, state.best_epoch = metric, loss, record.epoch
    return improved


def patience_start(cfg: TrainConfig, state: LoopState) -> int | None:
    """The epoch patience counts from: the best one (best.npz's) when ``min_delta`` is 0;
    otherwise the last epoch that beat the one before it in this chain by more than
    ``min_delta`` (Keras' EarlyStopping: smaller gains do not reset the count, while best.npz
    still keeps the best epoch)."""
    if not cfg.min_delta:
        return state.best_epoch
    lower = cfg.monitor == "val_loss"
    reference, start = None, None
    for record in state.records:
        value = monitored(cfg.monitor, record)[0]
        if value is None:
            continue
        if reference is None or (value < reference - cfg.min_delta if lower
                                 else value > reference + cfg.min_delta):
            reference, start = value, record.epoch
    return start


def no_better(cfg: TrainConfig) -> str:
    return (f"no {cfg.monitor} better by more than {cfg.min_delta:g}" if cfg.min_delta
            else f"no better {cfg.monitor}")


def early_stop_due(cfg: TrainConfig, state: LoopState) -> bool:
    """Patience ran out: ``patience`` epochs done since the epoch patience counts from."""
    start = patience_start(cfg, state)
    return (cfg.patience is not None and start is not None
            and state.epoch - start >= cfg.patience and state.epoch < cfg.epochs)


def epoch_line(r: EpochRecord, epochs: int, improved: bool) -> str:
    val = f"  val loss {r.val_loss:.4f} acc {r.val_acc:.4f}" if r.val_loss is not None else ""
    if r.val_top_k_acc is not None:
        val += f" top-{r.top_k} {r.val_top_k_acc:.4f}"
    return (f"epoch {r.epoch}/{epochs}  loss {r.train_loss:.4f} acc {r.train_acc:.4f}{val}  "
            f"lr {r.lr:.2e}  {r.seconds:.1f}s{'  *best' if improved else ''}")


# ---------------------------------------------------------------- public API

def train(model, cfg: TrainConfig, data, out_dir: str | Path, resume: bool = False,
          progress: bool | str = True, callbacks=None) -> History:
    """Train ``model`` on ``data`` (a Dataset) as ``cfg`` says; files go to ``out_dir``.

    Writes last.npz / best.npz (checkpoints), metrics.jsonl / metrics.csv and curves.png
    (with matplotlib, the `plot` extra). ``resume=True`` continues from out_dir/last.npz
    exactly where it stopped. ``progress``: False (silent), True (a tqdm bar on a terminal
    or in a notebook, one line per epoch), "always" (the bar into any stream).
    ``callbacks``: objects with on_train_begin / on_step_end / on_epoch_end / on_train_end
    (netspec.train.callbacks). Raises DivergedError on NaN/Inf, ConfigError for a freeze
    pattern matching nothing. Ctrl-C saves last.npz and returns with ``status ==
    "interrupted"``; running out of ``patience`` returns with "early_stopped".
    """
    out = Path(out_dir)
    callbacks = check_callbacks(callbacks)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # left by a save that was killed
    run = make_run(model, cfg, data, out, progress)
    run.callbacks = callbacks
    if hasattr(model, "attach_backend"):  # a TorchModel brings the torch backend
        model.attach_backend(run, resume)
    return run_training(run, resume)


def run_training(run: Run, resume: bool) -> History:
    """Start or resume ``run`` and iterate to its last epoch (or Ctrl-C); see ``train``."""
    out, cfg, data, backend = run.out, run.cfg, run.data, run.backend
    report = None
    if resume:
        if not (out / "last.npz").exists():
            raise TrainError(f"cannot resume: {out / 'last.npz'} does not exist")
        reinit_layers(run)  # the checkpoint holds the re-initialized shapes
        attach_model(run)
        state = resume_from(run, out / "last.npz")
    else:
        state, report = fresh_start(run)
        attach_model(run)
    backend.started(run, state)
    status = "completed"
    callbacks = run.callbacks if backend.writer else []
    run.callbacks = callbacks
    run.context = Context(run.model, cfg, data, out, state.records, best_epoch=state.best_epoch)
    dispatch(callbacks, "on_train_begin", run.context)
    if early_stop_due(cfg, state):  # resuming a run that stopped early: it stays stopped
        run.log(f"early stop: {no_better(cfg)} since epoch {patience_start(cfg, state)} "
                f"(patience {cfg.patience}); nothing to resume")
        state.stop_early = True
    with backend.interrupts() as flag, quiet_float_warnings():
        while state.epoch < cfg.epochs and not state.stop_early:
            if not run_epoch(run, state, flag):
                status = "interrupted"
                state.sums = backend.total(state.sums)
                if backend.writer:
                    save_checkpoint(out / "last.npz", make_checkpoint(run, state, "interrupted"))
                run.log(f"\ninterrupted: saved {out / 'last.npz'} at epoch {state.epoch + 1}, "
                        f"batch {state.batch_index}; continue with --resume")
                break
            finish_epoch(run, state)
            flag.early = state.stop_early
            if backend.stop(flag):  # any worker interrupted, or rank 0 stopped early
                status = "early_stopped" if flag.early else "interrupted"
                break
    if state.stop_early and status == "completed":
        status = "early_stopped"
    if state.records and backend.writer:
        draw_curves(run, state)
    history = History(state.records, status, out, state.best_epoch, state.best_metric, report)
    dispatch(callbacks, "on_train_end", run.context, history)
    return history


def draw_curves(run: Run, state: LoopState) -> None:
    """curves.png titled with the network and data names, the best epoch marked; without
    matplotlib a one-line note instead."""
    from netspec.train.plot import MISSING, plot_history

    names = [n for n in (getattr(run.model, "name", ""), getattr(run.data, "name", "")) if n]
    if plot_history(state.records, run.out / "curves.png", title=" on ".join(names),
                    best_epoch=state.best_epoch) is None:
        run.log(f"note: no curves.png: {MISSING}")


def evaluate_split(run: Run, x: np.ndarray, y: np.ndarray) -> dict:
    """Validation of the NumPy backend: ``evaluate`` with the run's loss, batch size, top_k."""
    return evaluate(run.model, x, y, run.loss_fn, run.cfg.eval_batch, top_k=run.cfg.top_k)


@dataclass(frozen=True)
class Backend:
    """What one training backend does per iteration; the rest of the loop is shared.

    gradients(run, state, idx) -> (data loss, penalty, correct) on the global batch ``idx``;
    update(run, state) steps the optimizer; snapshot(run, state) -> an object whose
    restore(run, state) undoes a half-done iteration; evaluate(run, x, y) -> {loss, accuracy,
    n}; count(idx) -> the examples of ``idx`` this process trains on; writer: this process writes checkpoints, metrics and plots (DDP: rank 0 only);
    interrupts() -> a context yielding the Ctrl-C flag; stop(flag) -> stop now (DDP: any
    worker asked); total(sums) -> the epoch's sums over every worker; checkpoint_extra(run)
    -> extra arrays for the checkpoint; started(run, state) after start or resume;
    data_changed(run) after the loop replaced the training split (Dataset.recut).
    """

    name: str = "numpy"
    gradients: Callable = compute_gradients
    update: Callable = apply_update
    count: Callable = len
    snapshot: Callable = Snapshot.take
    evaluate: Callable = evaluate_split
    writer: bool = True
    interrupts: Callable = deferred_interrupt
    stop: Callable = lambda flag: flag.requested or flag.early
    total: Callable = lambda sums: sums
    checkpoint_extra: Callable = lambda run: {}
    started: Callable = lambda run, state: None
    data_changed: Callable = lambda run: None


NUMPY = Backend()


def evaluate(model, x: np.ndarray, y: np.ndarray, loss: str | LossConfig | LossFn = "softmax",
             batch: int = 256, top_k: int | None = None) -> dict:
    """Mean data loss (no penalty) and accuracy over (x, y) in eval mode: {loss, accuracy, n};
    with ``top_k``, also {top_k, top_k_accuracy} (the true class among the k highest)."""
    loss_fn = loss_function(loss)
    total_loss, correct, top_hits = 0.0, 0, 0.0
    for start in range(0, len(y), batch):
        xb, yb = x[start:start + batch], y[start:start + batch]
        scores = model.forward(xb, train=False)
        total_loss += loss_fn(scores, yb)[0] * len(yb)
        correct += correct_count(scores, yb)
        if top_k:
            top_hits += top_k_hits(scores, yb, top_k)
    n = len(y)
    out = {"loss": total_loss / n if n else float("nan"),
           "accuracy": correct / n if n else float("nan"), "n": n}
    if top_k:
        out.update(top_k=top_k, top_k_accuracy=top_hits / n if n else float("nan"))
    return out


def predict(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Class scores (N, C) in eval mode, batched."""
    return np.concatenate([model.forward(x[s:s + batch], train=False)
                           for s in range(0, len(x), batch)]) if len(x) else np.zeros((0, 0))


__all__ = ["DivergedError", "History", "TrainError", "accuracy", "evaluate", "predict", "train"]
