"""Training stage: configuration, data, optimizers, schedules, the loop, checkpoints, baselines.

The CLI needs only what is re-exported here; docs/training.md describes every setting.
"""
from netspec.train.callbacks import Callback, Context, Step, TensorBoard
from netspec.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    TransferReport,
    load_checkpoint,
    load_matching,
    load_weights,
    read_weights,
    save_checkpoint,
)
from netspec.train.config import ConfigError, TrainConfig, apply_overrides
from netspec.train.data import DataError, Dataset, load_dataset
from netspec.train.knn import KNearestNeighbor, KnnReport, cross_validate_k, run_knn
from netspec.train.loop import (
    DivergedError,
    History,
    TrainError,
    evaluate,
    loss_function,
    predict,
    train,
)
from netspec.train.optim import OPTIMIZERS, make_optimizer

__all__ = [
    "OPTIMIZERS",
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "Context",
    "DataError",
    "Dataset",
    "DivergedError",
    "History",
    "KNearestNeighbor",
    "KnnReport",
    "Step",
    "TensorBoard",
    "TrainConfig",
    "TrainError",
    "TransferReport",
    "apply_overrides",
    "cross_validate_k",
    "evaluate",
    "load_checkpoint",
    "load_dataset",
    "load_matching",
    "load_weights",
    "loss_function",
    "make_optimizer",
    "predict",
    "read_weights",
    "run_knn",
    "save_checkpoint",
    "train",
]
