"""`netspec knn`: the k-nearest-neighbour baseline, k chosen by cross-validation."""
from __future__ import annotations

import json
import sys

from netspec.commands._session import training_errors
from netspec.commands._types import integer, k_values, non_negative_int
from netspec.diagnostics import UsageError

HELP = "k-nearest-neighbour baseline on raw pixels (k by cross-validation)"


def add_arguments(p) -> None:
    p.add_argument("--data", default="digits", metavar="DATA",
                   help="digits (default) or a data path, as for netspec train")
    p.add_argument("--k", default=[1, 3, 5, 7, 10], type=k_values, metavar="LIST",
                   help="candidate k values, comma-separated (default: 1,3,5,7,10); "
                        "cross-validation picks one")
    p.add_argument("--folds", type=integer(2, "an integer >= 2"), default=5, metavar="N",
                   help="cross-validation folds (default: 5)")
    p.add_argument("--distance", choices=("l2", "l1"), default="l2",
                   help="l2 (default) or l1 distance between raw pixels")
    p.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                   help="seed of the cross-validation folds (default: 0)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text for people (default) or json for tools")


def run(args) -> int:
    from netspec.train import ConfigError, TrainConfig, apply_overrides, load_dataset, run_knn

    with training_errors():
        try:
            cfg = apply_overrides(TrainConfig(), {"data": args.data})
        except ConfigError as exc:
            raise UsageError(f"--data {args.data}", exc.message, exc.hint) from None
        data = load_dataset(cfg)
        check_knn_fits(data, args.k, args.folds)
        report = run_knn(data, args.k, args.folds, args.distance, args.seed)
    if args.format == "json":
        print(json.dumps(report.to_dict()))
        return 0
    for k, acc in report.to_dict()["cv"].items():
        print(f"  k = {k:<3} cross-validated accuracy {acc:.2%}", file=sys.stderr)
    print(f"kNN ({args.distance}, k = {report.best_k}): test accuracy "
          f"{report.test_accuracy:.2%} on {report.n_test} examples "
          f"({report.n_train} train, {report.seconds:.2f} s)")
    return 0


def check_knn_fits(data, ks: list[int], folds: int) -> None:
    """Each fold must keep k training examples: say which flag to change if it cannot."""
    n = len(data.y_train) + len(data.y_val)
    if folds > n:
        raise UsageError(f"--folds {folds}", f"the data has only {n} training examples")
    fold_train = n - -(-n // folds)  # examples left for training when one fold is held out
    too_large = [k for k in ks if k > fold_train]
    if too_large:
        raise UsageError(f"--k {','.join(map(str, ks))}",
                         f"k = {too_large[0]} exceeds the {fold_train} training examples "
                         f"of a cross-validation fold")
