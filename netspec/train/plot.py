"""Training stage: PNG of the loss and accuracy curves (matplotlib Agg canvas, no pyplot state)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from netspec.train.metrics import EpochRecord


def plot_history(records: Sequence[EpochRecord], path: str | Path, title: str = "") -> Path:
    """Two panels, loss and accuracy per epoch, training and validation; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [r.epoch for r in records]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [r.train_loss for r in records], "o-", label="train")
    acc_ax.plot(epochs, [r.train_acc for r in records], "o-", label="train")
    val = [(r.epoch, r.val_loss, r.val_acc) for r in records if r.val_loss is not None]
    if val:
        loss_ax.plot([e for e, _, _ in val], [v for _, v, _ in val], "s-", label="validation")
        acc_ax.plot([e for e, _, _ in val], [a for _, _, a in val], "s-", label="validation")
    for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
