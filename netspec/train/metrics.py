"""Training stage: per-epoch metric records and their JSONL / CSV files."""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np


def accuracy(scores: np.ndarray, y: np.ndarray) -> float:
    """Fraction of rows whose highest score is the true class."""
    return float(np.mean(np.argmax(scores, axis=1) == y)) if len(y) else 0.0


def top_k_hits(scores: np.ndarray, y: np.ndarray, k: int) -> float:
    """Examples whose true class is among the k highest scores, one per example; with
    per-token labels (N, T), each example counts the fraction of its tokens. A class ranks
    by how many classes score strictly higher (ties count in the example's favour, as
    scikit-learn's top_k_accuracy_score)."""
    true = np.take_along_axis(scores, y[..., None].astype(np.intp), axis=-1)
    hits = (scores > true).sum(axis=-1) < k
    return float(hits.sum()) if hits.ndim == 1 else float(hits.reshape(len(y), -1).mean(1).sum())


@dataclass
class EpochRecord:
    epoch: int                # 1-based epoch number
    iteration: int            # global iterations done at the end of the epoch
    lr: float                 # learning rate of the epoch's last iteration
    train_loss: float         # mean data loss over the epoch's mini-batches
    train_reg: float          # mean regularization penalty added to it
    train_acc: float          # accuracy on the (augmented) training mini-batches
    val_loss: float | None
    val_acc: float | None
    seconds: float            # wall time of the epoch (excluded from equality checks)
    samples_per_s: float
    top_k: int | None = None           # k of val_top_k_acc (the `top_k` setting), if set
    val_top_k_acc: float | None = None  # true class among the k highest scores (validation)

    def comparable(self) -> dict:
        """Everything but the timings: equal for bit-identical runs."""
        d = asdict(self)
        d.pop("seconds"), d.pop("samples_per_s")
        return d


def write_metrics(out_dir: str | Path, records: list[EpochRecord]) -> None:
    """Rewrite metrics.jsonl (one JSON object per epoch) and metrics.csv from the records."""
    out = Path(out_dir)
    lines = "".join(json.dumps(asdict(r)) + "\n" for r in records)
    write_text_atomic(out / "metrics.jsonl", lines)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[f.name for f in fields(EpochRecord)])
    writer.writeheader()
    writer.writerows(asdict(r) for r in records)
    write_text_atomic(out / "metrics.csv", buf.getvalue())


def write_results(out_dir: str | Path, results: dict) -> None:
    """results.json: the run's outcome (test figures, status, best epoch, final metrics)."""
    write_text_atomic(Path(out_dir) / "results.json",
                      json.dumps(results, indent=2, sort_keys=True) + "\n")


def read_metrics(path: str | Path) -> list[EpochRecord]:
    with open(path) as f:
        return [EpochRecord(**json.loads(line)) for line in f if line.strip()]


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
