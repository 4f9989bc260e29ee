"""`netspec eval FILE --weights CKPT`: loss and accuracy of trained weights on a split."""
from __future__ import annotations

import json

from netspec.commands._session import (
    add_data_arguments,
    add_spec_arguments,
    check_data_fits,
    compile_model,
    config_from,
    load_net,
    training_errors,
    use_checkpoint_statistics,
)

HELP = "evaluate trained weights: loss, accuracy and example count on a data split"


def add_arguments(p) -> None:
    add_spec_arguments(p)
    add_data_arguments(p)
    p.add_argument("--weights", required=True, metavar="CKPT", help="a checkpoint (.npz)")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument("--format", choices=("text", "json"), default="text")


def run(args) -> int:
    from netspec.train import evaluate, load_dataset, load_weights

    net = load_net(args)
    with training_errors(net):
        cfg = config_from(net, args)
        data = load_dataset(cfg)
        check_data_fits(net, data)
        model = compile_model(net)
        use_checkpoint_statistics(data, load_weights(model, args.weights))
        x, y = {"test": (data.x_test, data.y_test), "val": (data.x_val, data.y_val),
                "train": (data.x_train, data.y_train)}[args.split]
        result = evaluate(model, x, y, cfg.loss, cfg.eval_batch)
    if args.format == "json":
        print(json.dumps({**result, "split": args.split, "weights": args.weights}))
    else:
        print(f"{net.name} on the {args.split} split: accuracy {result['accuracy']:.2%}, "
              f"loss {result['loss']:.4f}, n = {result['n']}")
    return 0
