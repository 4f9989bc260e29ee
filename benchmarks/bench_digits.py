"""Benchmark: the issue's accuracy targets on scikit-learn's digits, with wall times.

    python benchmarks/bench_digits.py [--quick] [--backend torch] [--seeds N] [--specs LIST]

Trains the bundled specs with their own `train { }` sections (the same path as
`netspec train SPEC`) and runs the kNN baseline, then prints test accuracy against the
targets: CNN >= 98%, softmax linear classifier >= 94%, kNN >= 97%. `--backend torch` trains
the same specs with the torch backend (netspec train --backend torch); `--seeds N` repeats
each spec with seeds 0..N-1 (the 359-example test split moves 0.28% per error).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import netspec
from netspec.train import (
    TrainConfig,
    apply_overrides,
    evaluate,
    load_dataset,
    load_weights,
    run_knn,
    train,
)
from netspec.train.allocator import keep_freed_memory
from netspec.train.threads import blas_threads

TARGETS = {"digits_cnn": 0.98, "softmax": 0.94, "svm": None, "mlp": None, "knn": 0.97}


def train_spec(name: str, out: str, epochs: int | None, backend: str = "numpy",
               seed: int = 0) -> tuple[float, float]:
    net = netspec.load(name)
    cfg = apply_overrides(TrainConfig.from_spec(net.train), {"epochs": epochs, "seed": seed})
    data = load_dataset(cfg)
    if backend == "torch":
        import torch

        from netspec.train.torch_loop import TorchModel

        torch.set_num_threads(1)  # as netspec train chooses for these small layers
        model = TorchModel.from_spec(net, seed=cfg.seed)
    else:
        model = netspec.compile(net, seed=cfg.seed)
    start = time.perf_counter()
    history = train(model, cfg, data, os.path.join(out, name), progress=False)
    seconds = time.perf_counter() - start
    load_weights(model, history.best_checkpoint)
    return evaluate(model, data.x_test, data.y_test, cfg.loss)["accuracy"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs each (smoke run)")
    parser.add_argument("--backend", choices=("numpy", "torch"), default="numpy")
    parser.add_argument("--seeds", type=int, default=1, help="train each spec with seeds 0..N-1")
    parser.add_argument("--specs", default="digits_cnn,softmax,svm,mlp,knn",
                        help="comma-separated: which of the specs (and knn) to run")
    args = parser.parse_args()
    keep_freed_memory()
    rows = []
    with tempfile.TemporaryDirectory() as out, blas_threads(1):
        chosen = args.specs.split(",")
        for name in [n for n in ("digits_cnn", "softmax", "svm", "mlp") if n in chosen]:
            for seed in range(args.seeds):
                acc, seconds = train_spec(name, out, 3 if args.quick else None, args.backend,
                                          seed)
                rows.append((name if args.seeds == 1 else f"{name} s{seed}", acc, seconds))
        if "knn" in chosen:
            start = time.perf_counter()
            report = run_knn(load_dataset(TrainConfig()))
            rows.append((f"knn (k={report.best_k}, l2)", report.test_accuracy,
                         time.perf_counter() - start))
    print(f"{'model':<18} {'test acc':>9} {'target':>8} {'seconds':>8}")
    for name, acc, seconds in rows:
        target = TARGETS.get(name.split(" ")[0])
        mark = "" if target is None else (" ok" if acc >= target else " BELOW")
        shown = f"{target:.0%}" if target else "-"
        print(f"{name:<18} {acc:>9.2%} {shown:>8} {seconds:>8.1f}{mark}")
    if args.seeds > 1:
        for spec in sorted({name.split(" ")[0] for name, _, _ in rows} - {"knn"}):
            accs = [acc for name, acc, _ in rows if name.split(" ")[0] == spec]
            print(f"{spec}: mean {sum(accs) / len(accs):.2%} over {len(accs)} seeds, "
                  f"min {min(accs):.2%}, max {max(accs):.2%}")


if __name__ == "__main__":
    main()
