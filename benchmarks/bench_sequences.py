"""Benchmark: the sequence models' targets (issue 13), each a real training run.

    python benchmarks/bench_sequences.py [--task lstm|gru|vit|lm|sort|all] [--quick]

- lstm, gru: the row-by-row digits classifiers (specs/lstm_digits.net, gru_digits.net) with
  their own train sections; target >= 97% test accuracy.
- vit: specs/vit_digits.net; target >= 97% test accuracy.
- lm: the small GPT (specs/gpt_tiny.net) against the character LSTM (specs/char_lstm.net)
  on the same text (this repository's docs/*.md and README.md, characters as tokens, split
  by position) after the same number of steps, each with its spec's optimizer; target: the
  GPT's validation loss below the LSTM's.
- sort: the GPT learning to sort digit sequences: "d1..dn|s1..sn", trained with per-token
  cross-entropy, then the sorted part decoded greedily, one token at a time, for unseen
  sequences; target >= 99% of sequences exactly right.

Runs on the NumPy backend, one thread per run; prints one line per result and the JSON of
all results at the end. Measured figures: docs/training.md ("Sequence targets").
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import netspec
from netspec.train import TrainConfig, apply_overrides, evaluate, load_dataset, load_weights, train
from netspec.train.data import Dataset, fit_sequence_view
from netspec.train.text import load_text
from netspec.train.threads import blas_threads

TARGETS = {"lstm_digits": 0.97, "gru_digits": 0.97, "vit_digits": 0.97, "sort": 0.99}


def train_digits(name: str, out: str, epochs: int | None) -> dict:
    """A digits classifier trained as `netspec train NAME` does; test accuracy of best.npz."""
    net = netspec.load(name)
    cfg = TrainConfig.from_spec(net.train)
    if epochs:
        cfg = apply_overrides(cfg, {"epochs": epochs})
    data = load_dataset(cfg)
    fit_sequence_view(data, tuple(net.node(net.inputs[0])["attrs"]["shape"]))
    model = netspec.compile(net, seed=cfg.seed)
    start = time.perf_counter()
    history = train(model, cfg, data, out, progress=False)
    seconds = time.perf_counter() - start
    load_weights(model, history.best_checkpoint)
    test = evaluate(model, data.x_test, data.y_test, cfg.loss)
    return {"task": name, "test_accuracy": test["accuracy"], "epochs": cfg.epochs,
            "seconds": round(seconds, 1), "target": TARGETS[name],
            "met": test["accuracy"] >= TARGETS[name]}


def corpus(out_dir: str) -> str:
    """This repository's documentation as one text file (no download)."""
    parts = [p.read_text(encoding="utf-8") for p in [ROOT / "README.md",
                                                     *sorted((ROOT / "docs").glob("*.md"))]]
    path = os.path.join(out_dir, "corpus.txt")
    Path(path).write_text("\n".join(parts), encoding="utf-8")
    return path


def train_lm(name: str, overrides: dict, text: str, steps: int, out: str) -> dict:
    """Train a character LM from its spec for `steps` iterations; its validation loss."""
    probe = load_text(text, overrides["context"])
    net = netspec.load(name, overrides={**overrides, "vocab": probe.num_classes})
    cfg = TrainConfig.from_spec(net.train)
    cfg = apply_overrides(cfg, {"data": {"type": "text", "path": text,
                                         "context": overrides["context"]}})
    data = load_dataset(cfg)
    epochs = math.ceil(steps / math.ceil(len(data.y_train) / cfg.batch))
    cfg = apply_overrides(cfg, {"epochs": epochs})
    model = netspec.compile(net, seed=cfg.seed)
    start = time.perf_counter()
    history = train(model, cfg, data, out, progress=False)
    return {"task": f"lm:{name}", "val_loss": history.last.val_loss,
            "best_val_loss": min(r.val_loss for r in history.records),
            "steps": history.last.iteration, "params": model.num_params,
            "seconds": round(time.perf_counter() - start, 1)}


def sort_data(n: int, length: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Token sequences d1..dn | s1..sn (SEP = 10) as next-token pairs (x, y)."""
    digits = rng.integers(0, 10, (n, length))
    seq = np.concatenate([digits, np.full((n, 1), 10), np.sort(digits, axis=1)], axis=1)
    return seq[:, :-1], seq[:, 1:]


def train_sort(out: str, steps: int, length: int = 6) -> dict:
    """The GPT on sorting: exact-match of greedy decoding on 2000 unseen sequences."""
    rng = np.random.default_rng(0)
    x, y = sort_data(20_000, length, rng)
    xv, yv = sort_data(500, length, rng)
    data = Dataset(x, y, xv, yv, xv[:0], yv[:0], num_classes=11, input_shape=(2 * length,),
                   classes=list(range(11)), name="sort")
    net = netspec.load("gpt_tiny", overrides={"vocab": 11, "context": 2 * length, "d": 64,
                                              "heads": 4, "layers": 2, "drop": 0.0})
    cfg = TrainConfig.from_spec({"optimizer": {"type": "adamw", "lr": 0.002,
                                               "weight_decay": 0.01},
                                 "schedule": {"type": "cosine", "per": "iteration",
                                              "warmup": 100},
                                 "clip": 1.0, "batch": 64,
                                 "epochs": math.ceil(steps / math.ceil(len(x) / 64))})
    model = netspec.compile(net, seed=0)
    start = time.perf_counter()
    train(model, cfg, data, out, progress=False)
    seconds = time.perf_counter() - start
    test, _ = sort_data(2000, length, np.random.default_rng(1))
    prompt = test[:, : length + 1]  # d1..dn SEP
    truth = np.sort(test[:, :length], axis=1)
    seq = np.zeros((len(test), 2 * length), np.int64)
    seq[:, : length + 1] = prompt
    for k in range(length):  # greedy, one token at a time; later steps are never seen
        pos = length + k
        scores = model.forward(seq)[:, pos]
        if k + 1 < length:
            seq[:, pos + 1] = scores.argmax(axis=1)
        else:
            last = scores.argmax(axis=1)
    decoded = np.concatenate([seq[:, length + 1:], last[:, None]], axis=1)
    exact = float(np.mean(np.all(decoded == truth, axis=1)))
    return {"task": f"sort{length}", "exact": exact, "steps": cfg.epochs * math.ceil(len(x) / 64),
            "seconds": round(seconds, 1), "target": TARGETS["sort"],
            "met": exact >= TARGETS["sort"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="all", choices=("lstm", "gru", "vit", "lm", "sort", "all"))
    p.add_argument("--quick", action="store_true", help="a few epochs/steps: a smoke run")
    p.add_argument("--lm-steps", type=int, default=600)
    p.add_argument("--sort-steps", type=int, default=3000)
    args = p.parse_args(argv)
    tasks = ("lstm", "gru", "vit", "lm", "sort") if args.task == "all" else (args.task,)
    results = []
    with tempfile.TemporaryDirectory() as tmp, blas_threads(1):
        for task in tasks:
            out = os.path.join(tmp, task)
            if task in ("lstm", "gru", "vit"):
                r = train_digits(f"{task}_digits", out, 2 if args.quick else None)
                print(f"{r['task']}: test accuracy {r['test_accuracy']:.2%} (target "
                      f">= {r['target']:.0%}) in {r['seconds']} s", flush=True)
            elif task == "lm":
                steps = 20 if args.quick else args.lm_steps
                text = corpus(tmp)
                ctx = {"context": 64}
                gpt = train_lm("gpt_tiny", ctx, text, steps, out + "-gpt")
                lstm = train_lm("char_lstm", ctx, text, steps, out + "-lstm")
                r = {"task": "lm", "gpt": gpt, "char_lstm": lstm,
                     "met": gpt["val_loss"] < lstm["val_loss"]}
                print(f"after {gpt['steps']} steps: gpt_tiny val loss {gpt['val_loss']:.3f} "
                      f"({gpt['seconds']} s), char_lstm {lstm['val_loss']:.3f} "
                      f"({lstm['seconds']} s)", flush=True)
            else:
                r = train_sort(out, 50 if args.quick else args.sort_steps)
                print(f"{r['task']}: {r['exact']:.2%} of sequences sorted exactly "
                      f"(target >= 99%) after {r['steps']} steps, {r['seconds']} s", flush=True)
            results.append(r)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
