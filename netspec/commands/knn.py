"""`netspec knn`: the k-nearest-neighbour baseline, k chosen by cross-validation."""
from __future__ import annotations

import json
import sys

from netspec.commands._session import training_errors

HELP = "k-nearest-neighbour baseline on raw pixels (k by cross-validation)"


def add_arguments(p) -> None:
    p.add_argument("--data", default="digits", help="digits (default) or a data path")
    p.add_argument("--k", default="1,3,5,7,10", help="candidate k values")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--distance", choices=("l2", "l1"), default="l2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("text", "json"), default="text")


def run(args) -> int:
    from netspec.train import TrainConfig, apply_overrides, load_dataset, run_knn

    with training_errors():
        cfg = apply_overrides(TrainConfig(), {"data": args.data})
        ks = [int(k) for k in args.k.split(",") if k.strip()]
        data = load_dataset(cfg)
        report = run_knn(data, ks, args.folds, args.distance, args.seed)
    if args.format == "json":
        print(json.dumps(report.to_dict()))
        return 0
    for k, acc in report.to_dict()["cv"].items():
        print(f"  k = {k:<3} cross-validated accuracy {acc:.2%}", file=sys.stderr)
    print(f"kNN ({args.distance}, k = {report.best_k}): test accuracy "
          f"{report.test_accuracy:.2%} on {report.n_test} examples "
          f"({report.n_train} train, {report.seconds:.2f} s)")
    return 0
