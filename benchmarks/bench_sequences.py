"""Benchmark: the sequence models' targets (issue 13), each a real training run.

    python benchmarks/bench_sequences.py [--task lstm|gru|vit|lm|sort|all] [--quick]

- lstm, gru: the row-by-row digits classifiers (specs/lstm_digits.net, gru_digits.net) with
  their own train sections; target >= 97% test accuracy.
- vit: specs/vit_digits.net; target >= 97% test accuracy.
- lm: the small GPT (specs/gpt_tiny.net) against the character LSTM (specs/char_lstm.net)
  on the same text (Python's reference text, the pydoc topics that ship with CPython, or
  --text FILE; characters as tokens, split by position), each with its spec's own train
  section (both: 4 epochs of batch 32, so the same steps); target: the GPT's validation loss
  below the LSTM's. Prints both validation curves (after every epoch).
- sort: the GPT learning to sort 6-digit sequences, `netspec train gpt_tiny --data sort`
  (netspec.train.tasks: "d1..d6=s1..s6", per-token cross-entropy), then the sorted part
  decoded greedily from the prompt alone for the 4,000 unseen test sequences; target >= 99%
  of sequences exactly right.

Runs on the NumPy backend, one thread per run; prints one line per result and the JSON of
all results at the end. Measured figures: docs/training.md ("Sequence targets").
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import netspec
from netspec.train import TrainConfig, apply_overrides, evaluate, load_dataset, load_weights, train
from netspec.train.data import fit_sequence_view
from netspec.train.tasks import exact_sequences
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
    """Python's own reference text (the pydoc topics, 465,126 characters under Python 3.11:
    English prose with code; shipped with every CPython, PSF licence, no download), as one
    text file, topics in sorted order."""
    from pydoc_data.topics import topics

    path = os.path.join(out_dir, "corpus.txt")
    Path(path).write_text("\n\n".join(topics[k] for k in sorted(topics)), encoding="utf-8")
    return path


def train_lm(name: str, text: str, epochs: int | None, out: str) -> dict:
    """`netspec train NAME --data TEXT --param vocab=V` with the spec's own train section
    (epochs: an override); the validation loss after every epoch."""
    net = netspec.load(name)
    context = int(net.node(net.inputs[0])["attrs"]["shape"][0])
    probe = load_text(text, context)
    net = netspec.load(name, overrides={"vocab": probe.num_classes})
    cfg = apply_overrides(TrainConfig.from_spec(net.train),
                          {"data": {"type": "text", "path": text, "context": context}})
    if epochs:
        cfg = apply_overrides(cfg, {"epochs": epochs})
    data = load_dataset(cfg)
    model = netspec.compile(net, seed=cfg.seed)
    start = time.perf_counter()
    history = train(model, cfg, data, out, progress=False)
    return {"task": f"lm:{name}", "val_loss": history.last.val_loss,
            "curve": [(r.iteration, round(r.val_loss, 4)) for r in history.records],
            "train_curve": [round(r.train_loss, 4) for r in history.records],
            "steps": history.last.iteration, "params": model.num_params,
            "seconds": round(time.perf_counter() - start, 1)}


def plot_lm(runs: list[dict], path: str) -> None:
    """Validation (and training) loss against steps, one line per model, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for run in runs:
        steps, val = zip(*run["curve"])
        line, = ax.plot(steps, val, "o-", label=f"{run['task'][3:]} validation")
        ax.plot(steps, run["train_curve"], "--", color=line.get_color(),
                label=f"{run['task'][3:]} training (epoch mean)")
    ax.set_xlabel("step (batch of 32 x 64 characters)")
    ax.set_ylabel("cross-entropy per character")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def train_sort(out: str, epochs: int | None, length: int = 6) -> dict:
    """`netspec train gpt_tiny --data sort` (d 64, 2 blocks, no dropout, the spec's own
    optimizer and schedule): exact sequences of greedy decoding on the unseen test split."""
    net = netspec.load("gpt_tiny", overrides={"vocab": 11, "context": 2 * length, "d": 64,
                                              "layers": 2, "drop": 0.0})
    cfg = apply_overrides(TrainConfig.from_spec(net.train), {"data": "sort"})
    if epochs:
        cfg = apply_overrides(cfg, {"epochs": epochs})
    data = load_dataset(cfg, (2 * length,))
    model = netspec.compile(net, seed=cfg.seed)
    start = time.perf_counter()
    history = train(model, cfg, data, out, progress=False)
    seconds = time.perf_counter() - start
    load_weights(model, history.best_checkpoint)
    score = exact_sequences(model, data)
    return {"task": f"sort{length}", "exact": score["exact"], "n": score["n"],
            "steps": history.last.iteration, "seconds": round(seconds, 1),
            "target": TARGETS["sort"], "met": score["exact"] >= TARGETS["sort"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="all", choices=("lstm", "gru", "vit", "lm", "sort", "all"))
    p.add_argument("--quick", action="store_true", help="a few epochs/steps: a smoke run")
    p.add_argument("--lm-epochs", type=int, help="lm: epochs of both (default: the specs' own)")
    p.add_argument("--text", help="lm: a text file instead of Python's pydoc topics")
    p.add_argument("--plot", metavar="OUT.png", help="lm: draw both loss curves into OUT.png")
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
                text = args.text or corpus(tmp)
                epochs = 1 if args.quick else args.lm_epochs
                gpt = train_lm("gpt_tiny", text, epochs, out + "-gpt")
                lstm = train_lm("char_lstm", text, epochs, out + "-lstm")
                r = {"task": "lm", "gpt": gpt, "char_lstm": lstm,
                     "met": gpt["val_loss"] < lstm["val_loss"] and gpt["steps"] == lstm["steps"]}
                if args.plot:
                    plot_lm([gpt, lstm], args.plot)
                for m in (gpt, lstm):
                    print(f"{m['task']} ({m['params']:,} parameters, {m['seconds']} s): "
                          "validation loss after step " + ", ".join(
                              f"{step}: {loss:.3f}" for step, loss in m["curve"]), flush=True)
            else:
                r = train_sort(out, 1 if args.quick else None)
                print(f"{r['task']}: {r['exact']:.2%} of {r['n']} unseen sequences sorted exactly "
                      f"(target >= 99%) after {r['steps']} steps, {r['seconds']} s", flush=True)
            results.append(r)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
