"""`netspec predict FILE --weights CKPT`: class predictions for inputs or a data split."""
from __future__ import annotations

import json

from netspec.commands._session import add_trained_arguments, load_trained, run_threads, split
from netspec.commands._types import non_negative_int, positive_int
from netspec.diagnostics import NetspecError, UsageError

HELP = "predict classes with trained weights (for image files, an .npy of inputs, or a " \
       "data split)"


def add_arguments(p) -> None:
    add_trained_arguments(p)
    p.add_argument("--inputs", metavar="PATH", help="an image file, a folder of images (every "
                   "image under it), or raw inputs (N, C, H, W) or (N, H, W) as .npy; "
                   "normalized with the checkpoint's statistics (default: the --split of the "
                   "data)")
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


def image_files(path: str) -> list[str] | None:
    """--inputs as images: the file itself, or every image under a folder (sorted); None
    when the path is neither (an .npy)."""
    from pathlib import Path

    from netspec.train.imagefolder import EXTENSIONS

    p = Path(path)
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*")
                       if f.is_file() and f.suffix.lower() in EXTENSIONS)
        if not files:
            raise UsageError(f"--inputs {path}", "the folder holds no images",
                             f"image files: {', '.join(EXTENSIONS)}")
        return files
    return [str(p)] if p.suffix.lower() in EXTENSIONS else None


def run(args) -> int:
    import numpy as np

    files = image_files(args.inputs) if args.inputs else None
    if files is not None:
        net, cfg, model, stats, names = load_for_images(args)
        scores = image_scores(args, net, cfg, model, stats, files)
        rows = ranked(scores, names, args.top, [{"file": f} for f in files])
        return show(rows, args, key="file")
    from netspec.train import predict

    net, cfg, data, model = load_trained(args)
    if args.inputs:
        x, y = data.normalize(_read_inputs(args.inputs, data.input_shape)), None
    else:
        x, y = split(data, args.split)
    with run_threads(net, cfg.eval_batch, args.threads):
        scores = predict(model, x)
    names = data.class_names or [int(c) for c in data.classes] or None
    rows = ranked(scores, names, args.top, [
        {"index": i, **({"label": label_of(names, y[i])} if y is not None else {})}
        for i in range(len(x))])
    show(rows, args, key="index")
    if y is not None and args.format == "text":
        print(f"accuracy {np.mean(scores.argmax(axis=1) == y):.2%} on {len(y)} examples")
    return 0


def label_of(names, index: int):
    return names[index] if names else int(index)


def ranked(scores, names, k: int, rows: list[dict]) -> list[dict]:
    """Each row with its k most probable classes (softmax of the scores), named."""
    import numpy as np

    if names is not None and len(names) != scores.shape[1]:
        names = None  # a record that does not fit this head: class indices instead
    z = scores - scores.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    top = np.argsort(-prob, axis=1, kind="stable")[:, :max(1, k)]
    for row, best, p in zip(rows, top, prob):
        row["predicted"] = [label_of(names, c) for c in best]
        row["probability"] = [round(float(p[c]), 4) for c in best]
    return rows


def show(rows: list[dict], args, key: str) -> int:
    from netspec.diagnostics import printable

    if args.format == "json":
        print(json.dumps(rows))
        return 0
    width = 5 if key == "index" else 0
    for row in rows[:args.show]:
        guess = ", ".join(f"{printable(str(c))} ({p:.1%})"
                          for c, p in zip(row["predicted"], row["probability"]))
        truth = f"   label {printable(str(row['label']))}" if "label" in row else ""
        print(f"{printable(str(row[key])):>{width}}: {guess}{truth}")
    if len(rows) > args.show:
        print(f"... {len(rows) - args.show} more (--show N, or --format json for all)")
    return 0


def load_for_images(args):
    """(net, cfg, model, (mean, std), class names) for image files: the checkpoint's
    weights, input shape, statistics and class names, without reading any data set (the
    statistics of a plain state dict come from normalize / --normalize)."""
    import numpy as np

    from netspec.commands._session import (
        apply_weights,
        compile_model,
        fit_head,
        read_trained,
        training_errors,
    )
    from netspec.train.data import fixed_stats

    net, cfg, ckpt = read_trained(args)
    with training_errors(net):
        shape = tuple(net.node(net.inputs[0])["attrs"]["shape"])
        if len(shape) != 3 or shape[0] not in (1, 3):
            raise UsageError(f"--inputs {args.inputs}", f"image files feed networks whose "
                             f"input is [1 or 3, H, W], not {list(shape)}")
        model = compile_model(net, allow_large=getattr(args, "allow_large", False))
        fit_head(model, ckpt)
        apply_weights(model, ckpt, args.weights)
        mean, std = ckpt.extra.get("data.mean"), ckpt.extra.get("data.std")
        if args.normalize is not None or mean is None or std is None:
            if cfg.normalize is None:
                raise UsageError(f"--weights {args.weights}", "holds no input statistics (a "
                                 "plain state dict): give the ones it was trained with",
                                 "--normalize imagenet, or --normalize '[MEAN, STD]'")
            mean, std = fixed_stats(cfg.normalize, np.uint8, shape[0])
    return net, cfg, model, (mean, std), checkpoint_names(ckpt)


def checkpoint_names(ckpt) -> list | None:
    """Class names (an image folder's) or original labels recorded in a checkpoint."""
    names = ckpt.extra.get("data.class_names")
    if names is not None and names.size and names.dtype.kind == "U":
        return [str(n) for n in names.ravel()]
    labels = ckpt.extra.get("data.classes")
    if labels is not None and labels.size and labels.dtype.kind in "iu":
        return [int(c) for c in labels.ravel()]
    return None


def image_scores(args, net, cfg, model, stats, files: list[str]):
    """The scores of the images, decoded (Pillow, the spec's channels and size) and
    normalized as in training, in batches; an unreadable image names itself and the flag."""
    import numpy as np

    from netspec.commands._session import run_threads
    from netspec.train import predict
    from netspec.train.data import DataError
    from netspec.train.imagefolder import ImageArray

    shape = tuple(int(d) for d in net.node(net.inputs[0])["attrs"]["shape"])
    images = ImageArray(tuple(files), shape, np.asarray(stats[0], np.float32),
                        np.asarray(stats[1], np.float32))
    out = []
    with run_threads(net, cfg.eval_batch, args.threads):
        for start in range(0, len(files), cfg.eval_batch):
            try:
                batch = images[start:start + cfg.eval_batch]
            except DataError as e:
                raise UsageError(f"--inputs {args.inputs}", f"{e.path}: {e.message}") from None
            out.append(predict(model, batch))
    return np.concatenate(out)
