"""`netspec predict FILE --weights CKPT`: class predictions for inputs or a data split."""
from __future__ import annotations

import json

from netspec.commands._session import add_trained_arguments, load_trained, run_threads, split
from netspec.diagnostics import Diagnostic, NetspecError

HELP = "predict classes with trained weights (for an .npy of inputs, or a data split)"


def add_arguments(p) -> None:
    add_trained_arguments(p)
    p.add_argument("--inputs", metavar="NPY", help="raw inputs (N, C, H, W) or (N, H, W) as "
                   ".npy, normalized with the training split's statistics (default: the "
                   "--split of the data)")
    p.add_argument("--top", type=int, default=1, help="classes shown per example")
    p.add_argument("--show", type=int, default=20, help="examples printed (text format)")


def _read_inputs(path: str, shape: tuple[int, ...]):
    import numpy as np

    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise NetspecError(Diagnostic("error", f"{path}: cannot read inputs ({exc})")) from None
    if tuple(x.shape) == tuple(shape):
        x = x[None]  # one example
    elif x.ndim == len(shape) and len(shape) == 3 and shape[0] == 1:
        x = x[:, None]  # (N, H, W) grey images
    if tuple(x.shape[1:]) != tuple(shape):
        raise NetspecError(Diagnostic("error", f"{path}: inputs of shape {list(x.shape)} do "
                                      f"not fit the network's input {list(shape)}"))
    return x.astype(np.float32)


def run(args) -> int:
    import numpy as np

    from netspec.train import predict

    net, cfg, data, model = load_trained(args)
    if args.inputs:
        x, y = data.normalize(_read_inputs(args.inputs, data.input_shape)), None
    else:
        x, y = split(data, args.split)
    with run_threads(net, cfg.eval_batch, args.threads):
        scores = predict(model, x)
    z = scores - scores.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    top = np.argsort(-prob, axis=1)[:, :max(1, args.top)]
    labels = data.classes or list(range(scores.shape[1]))
    rows = [{"index": i, "predicted": [int(labels[c]) for c in top[i]],
             "probability": [round(float(prob[i, c]), 4) for c in top[i]],
             **({"label": int(labels[y[i]])} if y is not None else {})}
            for i in range(len(x))]
    if args.format == "json":
        print(json.dumps(rows))
        return 0
    for row in rows[:args.show]:
        guess = ", ".join(f"{c} ({p:.1%})" for c, p in zip(row["predicted"], row["probability"]))
        truth = f"   label {row['label']}" if "label" in row else ""
        print(f"{row['index']:>5}: {guess}{truth}")
    if y is not None:
        print(f"accuracy {np.mean(top[:, 0] == y):.2%} on {len(y)} examples")
    return 0
