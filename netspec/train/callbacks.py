"""Training stage: callbacks the loop calls after each step, each epoch and at the end.

A callback is any object with some of these methods (``Callback`` has them all, doing
nothing); each receives the run's ``Context``:

    on_train_begin(ctx)              after start or resume, before the first step
    on_step_end(ctx, step)           after each optimizer update (a ``Step``)
    on_epoch_end(ctx, record)        after validation and the epoch's checkpoints
    on_train_end(ctx, history)       after the last epoch, an early stop or Ctrl-C

Setting ``ctx.stop_training = True`` ends the run after the current epoch, as early
stopping does (status "early_stopped"). Callbacks run in the process that writes the run's
files (rank 0 with several torch workers). ``TensorBoard`` writes event files with
tensorboardX (the optional ``tensorboard`` extra).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netspec.train.metrics import EpochRecord

HOOKS = ("on_train_begin", "on_step_end", "on_epoch_end", "on_train_end")


class Callback:
    """Base class: override the hooks you need."""

    def on_train_begin(self, ctx: Context) -> None: ...

    def on_step_end(self, ctx: Context, step: Step) -> None: ...

    def on_epoch_end(self, ctx: Context, record: EpochRecord) -> None: ...

    def on_train_end(self, ctx: Context, history: Any) -> None: ...


@dataclass(frozen=True)
class Step:
    """One optimizer update: 1-based epoch, batch (within the epoch) and iteration (global);
    the batch's data loss (no penalty), the learning rate used, the examples it had."""

    epoch: int
    batch: int
    iteration: int
    loss: float
    lr: float
    examples: int


@dataclass
class Context:
    """What a callback may read (the model, settings, run directory, records so far) and
    the one thing it may set: ``stop_training``."""

    model: Any
    cfg: Any
    data: Any
    out_dir: Path
    records: list[EpochRecord]
    stop_training: bool = False
    best_epoch: int | None = None


def check_callbacks(callbacks) -> list:
    """The list, refusing an object with none of the hooks (a typo'd method name would
    otherwise be silently never called)."""
    out = list(callbacks or ())
    for cb in out:
        if not any(callable(getattr(cb, hook, None)) for hook in HOOKS):
            raise TypeError(f"{cb!r} is not a callback: it has none of {', '.join(HOOKS)}")
    return out


def dispatch(callbacks: list, hook: str, *args) -> None:
    for cb in callbacks:
        method = getattr(cb, hook, None)
        if method is not None:
            method(*args)


# ---------------------------------------------------------------- TensorBoard

TENSORBOARD_MISSING = "tensorboardX is not installed (pip install 'netspec[tensorboard]')"


def tensorboard_available() -> bool:
    from importlib.util import find_spec

    return find_spec("tensorboardX") is not None


class TensorBoard(Callback):
    """Event files for TensorBoard in ``log_dir`` (``tensorboard --logdir DIR`` shows them).

    Per step (x = global iteration): ``step/loss``, ``step/lr``. Per epoch (x = epoch):
    ``loss/train``, ``loss/validation``, ``accuracy/train``, ``accuracy/validation``,
    ``accuracy/validation_top_k``, ``lr``, ``examples_per_second``.
    ``every``: log the per-step scalars every N steps.
    """

    def __init__(self, log_dir: str | Path, every: int = 1):
        if not tensorboard_available():
            raise ImportError(f"TensorBoard: {TENSORBOARD_MISSING}")
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        self.log_dir, self.every, self.writer = Path(log_dir), every, None

    def on_train_begin(self, ctx: Context) -> None:
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir))

    def on_step_end(self, ctx: Context, step: Step) -> None:
        if step.iteration % self.every == 0:
            self.writer.add_scalar("step/loss", step.loss, step.iteration)
            self.writer.add_scalar("step/lr", step.lr, step.iteration)

    def on_epoch_end(self, ctx: Context, record: EpochRecord) -> None:
        w, e = self.writer, record.epoch
        w.add_scalar("loss/train", record.train_loss, e)
        w.add_scalar("accuracy/train", record.train_acc, e)
        if record.val_loss is not None:
            w.add_scalar("loss/validation", record.val_loss, e)
            w.add_scalar("accuracy/validation", record.val_acc, e)
        if record.val_top_k_acc is not None:
            w.add_scalar("accuracy/validation_top_k", record.val_top_k_acc, e)
        w.add_scalar("lr", record.lr, e)
        w.add_scalar("examples_per_second", record.samples_per_s, e)
        w.flush()

    def on_train_end(self, ctx: Context, history: Any) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
