"""Training stage: PNG of the training curves (matplotlib Agg canvas, no pyplot state).

matplotlib is the optional `plot` extra, imported only here and only when a run ends: without
it a run writes no curves.png and ``plot_history`` returns None (the loop says so in a line).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from netspec.train.metrics import EpochRecord

MISSING = "matplotlib is not installed (pip install 'netspec[plot]')"


def plot_available() -> bool:
    """True when matplotlib can be imported (checked without importing it)."""
    from importlib.util import find_spec

    return find_spec("matplotlib") is not None


def plot_history(records: Sequence[EpochRecord], path: str | Path, title: str = "",
                 best_epoch: int | None = None) -> Path | None:
    """Three panels per epoch: the loss (log scale when every value is positive), the
    accuracy (and top-k accuracy when recorded), the learning rate; training and validation
    curves, the best epoch marked by a dashed line. Returns the path, or None without
    matplotlib."""
    if not plot_available():
        return None
    curves_figure(records, title, best_epoch).savefig(path)
    return Path(path)


def curves_figure(records: Sequence[EpochRecord], title: str = "",
                  best_epoch: int | None = None):
    """The matplotlib Figure ``plot_history`` saves (an Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    loss_panel(loss_ax, records)
    accuracy_panel(acc_ax, records)
    epochs = [r.epoch for r in records]
    lr_ax.plot(epochs, [r.lr for r in records], "o-", color="tab:green", label="lr")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy"), (lr_ax, "learning rate")):
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.4", linestyle="--", linewidth=1,
                       label=f"best (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def loss_panel(ax, records: Sequence[EpochRecord]) -> None:
    epochs = [r.epoch for r in records]
    train = [r.train_loss for r in records]
    ax.plot(epochs, train, "o-", label="train")
    val = [(r.epoch, r.val_loss) for r in records if r.val_loss is not None]
    if val:
        ax.plot([e for e, _ in val], [v for _, v in val], "s-", label="validation")
    # Log scale: a loss falls by orders of magnitude, and the late epochs are where runs
    # differ. An SVM loss can reach 0 exactly, which a log axis cannot show.
    if all(v > 0 for v in train + [v for _, v in val]):
        ax.set_yscale("log")


def accuracy_panel(ax, records: Sequence[EpochRecord]) -> None:
    ax.plot([r.epoch for r in records], [r.train_acc for r in records], "o-", label="train")
    val = [r for r in records if r.val_acc is not None]
    if val:
        ax.plot([r.epoch for r in val], [r.val_acc for r in val], "s-", label="validation")
    top = [r for r in records if r.val_top_k_acc is not None]
    if top:
        ax.plot([r.epoch for r in top], [r.val_top_k_acc for r in top], "^-",
                label=f"validation top-{top[-1].top_k}")
