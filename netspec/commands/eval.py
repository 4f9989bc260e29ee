"""`netspec eval FILE --weights CKPT`: loss and accuracy of trained weights on a split."""
from __future__ import annotations

import json

from netspec.commands._session import add_trained_arguments, load_trained, run_threads, split
from netspec.commands._types import integer
from netspec.diagnostics import UsageError

HELP = "evaluate trained weights: loss, accuracy and example count on a data split"

at_least_two = integer(2, "an integer >= 2")


def add_arguments(p) -> None:
    add_trained_arguments(p)
    p.add_argument("--top-k", type=at_least_two, metavar="K",
                   help="also report top-K accuracy: the true class among the K highest "
                        "scores (default: the spec's top_k, if set)")


def run(args) -> int:
    from netspec.train import evaluate

    net, cfg, data, model = load_trained(args)
    top_k = args.top_k or cfg.top_k
    if top_k is not None and top_k >= data.num_classes:
        flag = f"--top-k {args.top_k}" if args.top_k else "top_k"
        raise UsageError(flag, f"must be below the data's {data.num_classes} classes")
    x, y = split(data, args.split)
    with run_threads(net, cfg.eval_batch, args.threads):
        result = evaluate(model, x, y, cfg.loss, cfg.eval_batch, top_k=top_k)
    if args.format == "json":
        print(json.dumps({**result, "split": args.split, "weights": args.weights}))
    else:
        top = (f", top-{top_k} {result['top_k_accuracy']:.2%}" if top_k else "")
        print(f"{net.name} on the {args.split} split: accuracy {result['accuracy']:.2%}{top}, "
              f"loss {result['loss']:.4f}, n = {result['n']}")
    return 0
