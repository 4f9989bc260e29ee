"""Benchmark: the sequence models' targets (issue 13), each a real training run.

    python benchmarks/bench_sequences.py [--task lstm|gru|vit|lm|sort|all] [--quick]

- lstm, gru: the row-by-row digits classifiers (specs/lstm_digits.net, gru_digits.net) with
  their own train sections; target >= 97% test accuracy.
- vit: specs/vit_digits.net; target >= 97% test accuracy.
- lm: a small GPT (--gpt: specs/gpt_alibi.net, the default, or gpt_tiny.net) against the
  character LSTM (specs/char_lstm.net) on the same text (Python's reference text, the pydoc
  topics that ship with CPython, or --text FILE; characters as tokens, split by position),
  each with its spec's own train section (both: 4 epochs of batch 32, so the same steps;
  --lm-epochs N: N epochs each); target: the GPT's validation loss below the LSTM's. The
  training windows move every epoch (data offset "random", the default; --offset fixed: the
  same windows every epoch), the same for both. Prints both validation curves (after every
  epoch). `--lm-only NAME --json A.json` trains one model and saves its run; `--lm-reuse
  A.json [B.json]` takes the runs found there instead of training them again (same text,
  offset, steps, seed and GPT, else refused), so the two runs of a long comparison can go
  one at a time or side by side. --seed N trains both with seed N instead of the specs' 0.
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


def train_lm(name: str, text: str, epochs: int | None, out: str, offset: str = "random",
             seed: int | None = None) -> dict:
    """`netspec train NAME --data TEXT --param vocab=V` with the spec's own train section
    (epochs, the windows' offset: overrides); the validation loss after every epoch."""
    net = netspec.load(name)
    context = int(net.node(net.inputs[0])["attrs"]["shape"][0])
    probe = load_text(text, context)
    net = netspec.load(name, overrides={"vocab": probe.num_classes})
    cfg = apply_overrides(TrainConfig.from_spec(net.train),
                          {"data": {"type": "text", "path": text, "context": context,
                                    "offset": offset}})
    if epochs:
        cfg = apply_overrides(cfg, {"epochs": epochs})
    if seed is not None:
        cfg = apply_overrides(cfg, {"seed": seed})
    data = load_dataset(cfg)
    model = netspec.compile(net, seed=cfg.seed)
    start = time.perf_counter()
    history = train(model, cfg, data, out, progress=False)
    return {"task": f"lm:{name}", "val_loss": history.last.val_loss, "offset": offset,
            "seed": cfg.seed,
            "text_chars": len(Path(text).read_text(encoding="utf-8")), "epochs": cfg.epochs,
            "curve": [(r.iteration, round(r.val_loss, 4)) for r in history.records],
            "train_curve": [round(r.train_loss, 4) for r in history.records],
            "steps": history.last.iteration, "params": model.num_params,
            "seconds": round(time.perf_counter() - start, 1)}


LM_GPTS = ("gpt_alibi", "gpt_tiny")
LM_MODELS = ("gpt", "char_lstm")  # the keys of a comparison's two runs


def compare_lm(args, tmp: str, out: str) -> dict:
    """The GPT (--gpt) against char_lstm; --lm-only trains one of them and takes the other's
    run from --lm-reuse (an earlier run's --json), refused unless text, offset, steps and the
    GPT's spec match."""
    text = args.text or corpus(tmp)
    epochs = 1 if args.quick else args.lm_epochs
    gpt_name = args.lm_only if args.lm_only in LM_GPTS else args.gpt
    reused = reused_lm_runs(args.lm_reuse or [])
    if "gpt" in reused and args.lm_only != gpt_name and reused["gpt"]["task"] != f"lm:{gpt_name}":
        raise SystemExit(f"the reused GPT run is {reused['gpt']['task'][3:]}'s, not "
                         f"{gpt_name}'s: pass --gpt {reused['gpt']['task'][3:]}")
    runs = {}
    for key, name in (("gpt", gpt_name), ("char_lstm", "char_lstm")):
        if args.lm_only == name or (key not in reused and not args.lm_only):
            runs[key] = train_lm(name, text, epochs, f"{out}-{key}", args.offset, args.seed)
        elif key in reused:
            runs[key] = reused[key]
    if len(runs) == 1:  # --lm-only without a run to compare with: this one, for --json
        (key, run), = runs.items()
        print(f"{run['task']} ({run['params']:,} parameters, {run['seconds']} s): validation "
              "loss after step " + ", ".join(f"{step}: {loss:.3f}" for step, loss in run["curve"]),
              flush=True)
        return {"task": "lm", key: run}
    gpt, lstm = runs["gpt"], runs["char_lstm"]
    keys = ("steps", "text_chars", "offset", "seed")  # runs saved without a seed had seed 0
    same = {k: (gpt.get(k, 0), lstm.get(k, 0)) for k in keys if gpt.get(k, 0) != lstm.get(k, 0)}
    if same:
        raise SystemExit(f"the two runs differ in {same}: not comparable")
    r = {"task": "lm", "gpt": gpt, "char_lstm": lstm, "met": gpt["val_loss"] < lstm["val_loss"]}
    if args.plot:
        plot_lm([gpt, lstm], args.plot)
    for m in (gpt, lstm):
        print(f"{m['task']} ({m['params']:,} parameters, {m['seconds']} s"
              f"{', reused' if m is reused.get('gpt') or m is reused.get('char_lstm') else ''}"
              "): validation loss after step " + ", ".join(
                  f"{step}: {loss:.3f}" for step, loss in m["curve"]), flush=True)
    return r


def reused_lm_runs(paths: list[str]) -> dict:
    """The lm runs of earlier runs' results JSON (--json), by key (gpt, char_lstm); a later
    file's run replaces an earlier one's."""
    runs = {}
    for path in paths:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
        lm = [r for r in results if r.get("task") == "lm"]
        if not lm:
            raise SystemExit(f"{path}: no lm result to reuse")
        runs.update((k, lm[0][k]) for k in LM_MODELS if k in lm[0])
    return runs


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
    p.add_argument("--offset", choices=("random", "fixed"), default="random",
                   help="lm: the training windows at a new random offset every epoch "
                        "(default) or fixed")
    p.add_argument("--seed", type=int, help="lm: the runs' seed (initialization, shuffling, "
                   "the windows' offsets; default: the specs' own, 0)")
    p.add_argument("--plot", metavar="OUT.png", help="lm: draw both loss curves into OUT.png")
    p.add_argument("--gpt", choices=LM_GPTS, default="gpt_alibi",
                   help="lm: the GPT to compare with the LSTM (default gpt_alibi)")
    p.add_argument("--lm-only", choices=(*LM_GPTS, "char_lstm"),
                   help="lm: train this model only; the other's run comes from --lm-reuse "
                        "(without it: this run alone, to save with --json)")
    p.add_argument("--lm-reuse", metavar="RESULTS.json", nargs="+",
                   help="lm: earlier runs' --json; a model found there is not trained again "
                        "(unless --lm-only names it)")
    p.add_argument("--json", metavar="OUT.json", help="also write the results JSON to OUT.json")
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
                r = compare_lm(args, tmp, out)
            else:
                r = train_sort(out, 1 if args.quick else None)
                print(f"{r['task']}: {r['exact']:.2%} of {r['n']} unseen sequences sorted exactly "
                      f"(target >= 99%) after {r['steps']} steps, {r['seconds']} s", flush=True)
            results.append(r)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
