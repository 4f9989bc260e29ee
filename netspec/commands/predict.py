"""`netspec predict FILE --weights CKPT`: class predictions for inputs or a data split."""
from __future__ import annotations

import json

from netspec.commands._session import add_trained_arguments, load_trained, run_threads, split
from netspec.commands._types import non_negative_int, positive_int
from netspec.diagnostics import NetspecError, UsageError

HELP = "predict classes with trained weights (for an .npy of inputs, or a data split)"


def add_arguments(p) -> None:
    add_trained_arguments(p)
    p.add_argument("--inputs", metavar="NPY", help="raw inputs (N, C, H, W) or (N, H, W) as "
                   ".npy, normalized with the training split's statistics (default: the "
                   "--split of the data)")
    p.add_argument("--top", type=positive_int, default=1, metavar="K",
                   help="classes shown per example, most probable first (default: 1)")
    p.add_argument("--show", type=non_negative_int, default=20, metavar="N",
                   help="examples printed in the text format (default: 20)")


def _read_inputs(path: str, shape: tuple[int, ...]):
    """--inputs: one .npy array of real numbers, (N, *shape), (N, H, W) for one channel, or a
    single example; anything else is refused naming the file and what it is."""
    import numpy as np

    def refuse(message: str, hint: str | None = None) -> NetspecError:
        return UsageError(f"--inputs {path}", message, hint)

    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise refuse(f"cannot read: {exc.strerror}") from None
    if head.startswith(b"PK"):
        raise refuse("is an .npz archive; --inputs takes one .npy array",
                     "save the inputs with np.save(\"inputs.npy\", x)")
    if head != b"\x93NUMPY":
        raise refuse("is not an .npy file" if head else "is empty",
                     "save the inputs with np.save(\"inputs.npy\", x)")
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        text = str(exc)
        detail = ("its header is too large to be a plain array" if "Header" in text else
                  "it holds Python objects, which netspec never loads" if "pickle" in text else
                  f"a damaged .npy file ({type(exc).__name__})")
        raise refuse(f"cannot be read: {detail}") from None
    if x.dtype.kind not in "biuf":
        raise refuse(f"holds {x.dtype} values; the inputs must be numbers")
    if tuple(x.shape) == tuple(shape):
        x = x[None]  # one example
    elif x.ndim == len(shape) and len(shape) == 3 and shape[0] == 1:
        x = x[:, None]  # (N, H, W) grey images
    if tuple(x.shape[1:]) != tuple(shape):
        raise refuse(f"inputs of shape {list(x.shape)} do not fit the network's input "
                     f"{list(shape)}", f"an array of shape [N, {', '.join(map(str, shape))}]")
    if len(x) == 0:
        raise refuse("holds no examples")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise refuse("holds NaN or infinite values")
    return x


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
