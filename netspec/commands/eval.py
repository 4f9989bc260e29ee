"""`netspec eval FILE --weights CKPT`: loss and accuracy of trained weights on a split."""
from __future__ import annotations

import json

from netspec.commands._session import add_trained_arguments, load_trained, run_threads, split

HELP = "evaluate trained weights: loss, accuracy and example count on a data split"


def add_arguments(p) -> None:
    add_trained_arguments(p)


def run(args) -> int:
    from netspec.train import evaluate

    net, cfg, data, model = load_trained(args)
    x, y = split(data, args.split)
    with run_threads(net, cfg.eval_batch, args.threads):
        result = evaluate(model, x, y, cfg.loss, cfg.eval_batch)
    if args.format == "json":
        print(json.dumps({**result, "split": args.split, "weights": args.weights}))
    else:
        print(f"{net.name} on the {args.split} split: accuracy {result['accuracy']:.2%}, "
              f"loss {result['loss']:.4f}, n = {result['n']}")
    return 0
