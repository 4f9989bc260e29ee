"""Training stage: ``netspec.fit(spec_or_model, x, y, ...)``, training on arrays in memory.

The short call for notebooks, as Keras's ``model.fit``: arrays in, the history out. It builds
the TrainConfig (the spec's ``train { }`` section, then the keyword arguments), wraps the
arrays as a Dataset (no test split; validation from ``validation_data`` or the last
``validation_split`` of the arrays, as Keras takes it) and runs the same loop as
``netspec train``. The arrays are used as given: nothing is normalized, so the trained
model's ``forward``/``predict`` take inputs prepared the same way.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from netspec.train.config import TrainConfig, apply_overrides
from netspec.train.data import Dataset
from netspec.train.loop import History, train

# Settings that make no sense for arrays given in the call (said, never ignored).
REFUSED = {
    "data": "fit trains on the x and y it is given; for a data set use netspec.train.train",
    "normalize": "fit uses x as given, so that model.predict(x_new) needs no statistics: "
                 "normalize x (and every later input) yourself, e.g. (x - mean) / std",
}


@dataclass
class FitHistory(History):
    """The run's History, with the trained model and Keras's ``history`` dict."""

    model: Any = None

    @property
    def history(self) -> dict[str, list[float]]:
        """Per-epoch values by Keras's names: loss, accuracy, val_loss, val_accuracy, lr."""
        out: dict[str, list[float]] = {
            "loss": [r.train_loss for r in self.records],
            "accuracy": [r.train_acc for r in self.records],
        }
        if any(r.val_loss is not None for r in self.records):
            out["val_loss"] = [r.val_loss for r in self.records]
            out["val_accuracy"] = [r.val_acc for r in self.records]
        out["lr"] = [r.lr for r in self.records]
        return out


def fit(model: Any, x, y, *, epochs: int | None = None, batch_size: int | None = None,
        optimizer: str | dict | None = None, lr: float | None = None,
        validation_data: tuple | None = None, validation_split: float = 0.0,
        seed: int | None = None, out_dir: str | os.PathLike | None = None,
        progress: bool = False, callbacks: list | None = None,
        **settings: Any) -> FitHistory:
    """Train ``model`` on the arrays ``x`` (N, *input) and integer labels ``y`` (N,) (or
    (N, T) per-token labels); return a FitHistory (``.history``, ``.model``, ``.records``).

    model: a compiled Model, a spec path or bundled name, or a Network (compiled here at
    ``x``'s per-sample shape, as ``train --input``). epochs, batch_size, optimizer (a name
    like "sgd" or a dict such as {"type": "sgd", "lr": 0.1, "momentum": 0.9}), lr, seed:
    as the spec's settings, which they override. validation_data=(x_val, y_val), or
    validation_split: the last fraction of x, y held out. out_dir: keep the run's files
    (checkpoints, metrics, curves) there; by default they go to a temporary directory that
    is removed. callbacks: as train's (netspec.train.callbacks; TensorBoard(log_dir) too).
    Any other training setting is a keyword: l2=1e-4, schedule="cosine", patience=3,
    freeze=["conv1"], **{"optimizer.beta1": 0.8}. The model ends with the last epoch's
    weights, as Keras's does (the best epoch's are in out_dir/best.npz when kept). A compiled
    model starts from its current weights, so calling fit again continues training.
    """
    for key in settings:
        if key in REFUSED:
            raise TypeError(f"fit() does not take {key}=: {REFUSED[key]}")
    given = hasattr(model, "forward") and hasattr(model, "params")
    model, cfg = model_and_config(model, np.asarray(x).shape[1:])
    cfg = configure(cfg, epochs, batch_size, optimizer, lr, seed, settings)
    data = arrays_dataset(model, x, y, validation_data, validation_split)
    with tempfile.TemporaryDirectory(prefix="netspec-fit-") as scratch:
        if given and cfg.init_from is None:
            # A compiled model goes on from its current weights, as Keras's fit does (the
            # loop initializes from the seed, then loads init_from).
            cfg.init_from = str(Path(scratch) / "current.npz")
            model.save(cfg.init_from)
        out = Path(out_dir) if out_dir is not None else Path(scratch) / "run"
        h = train(model, cfg, data, out, progress=progress, callbacks=callbacks)
    history = FitHistory(**{f.name: getattr(h, f.name) for f in fields(h)}, model=model)
    if out_dir is None:
        history.out_dir = None  # removed with the temporary directory
    return history


def model_and_config(source: Any, sample_shape: tuple) -> tuple[Any, TrainConfig]:
    """The model to train and the spec's training settings (defaults when it has none)."""
    if hasattr(source, "forward") and hasattr(source, "params"):  # a compiled model
        from netspec.diagnostics import NetspecError

        try:
            section = source._network().train if hasattr(source, "_network") else {}
        except (ValueError, OSError, NetspecError):  # no spec file to read settings from
            section = {}
        return source, TrainConfig.from_spec(section)
    import netspec
    from netspec.ir import Network

    net = source if isinstance(source, Network) else netspec.load(os.fspath(source))
    cfg = TrainConfig.from_spec(net.train)
    shape = tuple(int(d) for d in sample_shape)
    return netspec.compile(net, input_shape=shape, seed=cfg.seed), cfg


def configure(cfg: TrainConfig, epochs, batch_size, optimizer, lr, seed,
              settings: dict) -> TrainConfig:
    """The spec's settings, then the optimizer section, then every other keyword."""
    if optimizer is not None:
        d = cfg.to_dict()
        # a name is a bare section, as in a spec: "sgd" is plain SGD (momentum 0)
        d["optimizer"] = {"type": optimizer} if isinstance(optimizer, str) else optimizer
        cfg = TrainConfig.from_spec(d)
    return apply_overrides(cfg, {"epochs": epochs, "batch": batch_size, "lr": lr,
                                 "seed": seed, **settings})


def arrays_dataset(model, x, y, validation_data, validation_split: float) -> Dataset:
    """x, y (and the validation arrays) as a Dataset the loop trains on, checked."""
    x, y = _checked("x", "y", x, y)
    if validation_data is not None:
        if validation_split:
            raise ValueError("give validation_data or validation_split, not both")
        if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
            raise ValueError("validation_data must be a pair (x_val, y_val)")
        x_val, y_val = _checked("x_val", "y_val", *validation_data)
    elif validation_split:
        if not 0 < validation_split < 1:
            raise ValueError(f"validation_split must be in (0, 1), not {validation_split}")
        cut = len(x) - round(len(x) * validation_split)
        if not 0 < cut < len(x):
            raise ValueError(f"validation_split={validation_split} leaves no training or no "
                             f"validation example of {len(x)}")
        x, y, x_val, y_val = x[:cut], y[:cut], x[cut:], y[cut:]
    else:
        x_val, y_val = x[:0], y[:0]
    labels = int(max(y.max(initial=-1), y_val.max(initial=-1))) + 1
    width = int(model.output_shape[-1]) if len(getattr(model, "output_shape", ())) else labels
    classes = max(width, labels)
    return Dataset(x, y, x_val, y_val, x[:0], y[:0], num_classes=classes,
                   input_shape=tuple(x.shape[1:]), classes=list(range(classes)),
                   name="arrays")


def _checked(x_name: str, y_name: str, x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"{x_name} must be a batch of examples (N, ...), got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{x_name} holds {x.dtype} values, not numbers")
    if y.ndim not in (1, 2) or len(y) != len(x):
        raise ValueError(f"{y_name} must hold one label (or one per token) for each of the "
                         f"{len(x)} examples, got shape {y.shape}")
    if y.dtype.kind not in "iu" or (y.size and y.min() < 0):
        raise ValueError(f"{y_name} must be integer class labels from 0, got {y.dtype}"
                         + (f" with minimum {y.min()}" if y.dtype.kind in "iu" else ""))
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{x_name} holds NaN or infinite values")
    return x, y.astype(np.int64)
