"""What the train, eval and predict commands share: spec + config + data + model, and errors."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from netspec.commands._types import assignment, fraction, labels, positive_int
from netspec.diagnostics import Diagnostic, NetspecError, Note, UsageError

DEFAULT_SPEC = "digits_cnn"


def add_spec_arguments(p, default_spec: bool = True) -> None:
    p.add_argument("spec", nargs="?" if default_spec else None,
                   default=DEFAULT_SPEC if default_spec else None, metavar="FILE",
                   help=f".net file or bundled spec name (default: {DEFAULT_SPEC})")
    p.add_argument("--network", help="which network of the file (default: the last one)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   type=assignment,
                   help="override a network parameter, e.g. --param num_classes=5")
    add_import_argument(p)
    p.add_argument("--allow-large", action="store_true",
                   help="compile and train even when the memory estimate exceeds the memory "
                        "this machine has available")


def add_import_argument(p) -> None:
    """--allow-imports DIR, for every command that reads a spec (see lower.import_roots)."""
    p.add_argument("--allow-imports", action="append", default=[], metavar="DIR",
                   help="let imports reach DIR too (by default they resolve only inside the "
                        "spec's directory tree and the bundled library)")


def add_data_arguments(p) -> None:
    p.add_argument("--data", metavar="DATA", help="digits (default), or a path: CIFAR-10 "
                   "batches directory, MNIST IDX directory, an .npz with x_train/y_train, a "
                   "folder of images per class (ImageFolder layout) or a text file; or a "
                   "generated task: copy, sort (digit sequences)")
    p.add_argument("--val", type=fraction, metavar="F",
                   help="validation fraction of the training split, in [0, 1)")
    p.add_argument("--classes", type=labels, metavar="LIST",
                   help="keep only these labels, renumbered 0..k-1, e.g. 3,5,8")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="use at most this many training examples")
    p.add_argument("--normalize", metavar="STATS",
                   help="fixed per-channel statistics instead of the training split's: "
                        "imagenet, or [MEAN, STD] as JSON, e.g. '[[0.5,0.5,0.5],[0.2,0.2,0.2]]' "
                        "(on 0..1 pixel values for 8-bit images; spec: normalize)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", type=assignment,
                   help="any training setting by its dotted name, e.g. optimizer.beta1=0.8")


# Deeper values are certainly a mistake (or an attack); json would recurse on them.
MAX_VALUE_DEPTH = 16


def parse_value(flag: str, text: str) -> Any:
    """A flag's VALUE: JSON when it parses (0.01, true, [3, 5]), else the string itself."""
    depth = max_depth(text)
    if depth > MAX_VALUE_DEPTH:
        raise UsageError(flag, f"the value is nested {depth} deep; at most {MAX_VALUE_DEPTH} "
                         "levels of brackets are accepted")
    try:
        return json.loads(text)
    except ValueError:
        return text


def max_depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_assignments(items: list[str], flag: str) -> dict[str, Any]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(flag, f"`{item}` is not NAME=VALUE")
        out[key.strip()] = parse_value(f"{flag} {item}", value)
    return out


def load_net(args):
    """The spec's network, with --param values and the --input shape; an error they cause
    says they were given."""
    import netspec

    params = parse_assignments(args.param, "--param")
    try:
        net = netspec.load(args.spec, args.network, params,
                           allow_imports=getattr(args, "allow_imports", ()))
    except NetspecError as exc:
        if params:
            given = " ".join(f"--param {p}" for p in args.param)
            for d in exc.diagnostics:
                d.notes.append(Note(f"network parameters given on the command line: {given}"))
        raise
    if getattr(args, "input", None):
        set_input_shape(net, args.input, f"--input {'x'.join(map(str, args.input))}")
    return net


def set_input_shape(net, shape: tuple[int, ...], flag: str) -> None:
    """Declare the network's input as `shape` (as if the spec said so), after checking that
    every layer accepts it: the shape errors it causes are located and name the flag."""
    import netspec

    try:
        netspec.analyze(net, tuple(shape))
    except NetspecError as exc:
        for d in exc.diagnostics:
            d.notes.append(Note(f"with the input shape given on the command line: {flag}"))
        raise
    net.node(net.inputs[0])["attrs"]["shape"] = list(shape)


def add_input_argument(p) -> None:
    """--input CxHxW for the commands that compile a spec for data (train, eval, predict)."""
    from netspec.commands.compile import parse_shape

    p.add_argument("--input", metavar="SHAPE", type=parse_shape,
                   help="per-sample input shape overriding the spec's, e.g. 3x32x32 or 1x8x8 "
                        "(eval/predict default: the shape the checkpoint was trained at)")


@contextmanager
def training_errors(net=None):
    """Turn the training library's errors into located diagnostics for the CLI."""
    from netspec.train import CheckpointError, ConfigError, DataError, TrainError

    try:
        yield
    except ConfigError as exc:
        top = exc.key.split(".")[0]
        span = net.train_spans.get(top) if net is not None else None
        raise NetspecError(Diagnostic("error", f"train.{exc.key}: {exc.message}", span,
                                      exc.hint)) from None
    except (DataError, CheckpointError, TrainError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        path = getattr(exc, "path", None)
        if path and path not in message:
            message = f"{path}: {message}"
        raise NetspecError(Diagnostic("error", message, None,
                                      getattr(exc, "hint", None))) from None


def config_from(net, args, extra: dict[str, Any] | None = None):
    """The spec's train section, then CLI overrides (flags that were not given are None).

    A bad spec setting points at its line; a bad flag value is a UsageError naming the flag:
    the flags are applied one at a time, so the one that fails is known."""
    from netspec.train import ConfigError, TrainConfig, apply_overrides

    cfg = TrainConfig.from_spec(net.train)
    flags: list[tuple[str, str, Any]] = [  # (flag as the user wrote it, key, value)
        (f"--{key.replace('_', '-')} {value}", key, value)
        for key, value in (extra or {}).items() if value is not None]
    for key in ("data", "val", "limit", "classes", "normalize"):
        value = getattr(args, key, None)
        if value is not None:
            shown = ",".join(map(str, value)) if key == "classes" else value
            flags.append((f"--{key} {shown}", key, value))
    for item in getattr(args, "set", []):
        flags += [(f"--set {item}", key, value)
                  for key, value in parse_assignments([item], "--set").items()]
    for flag, key, value in flags:
        try:
            cfg = apply_overrides(cfg, {key: value})
        except ConfigError as exc:
            raise UsageError(flag, f"train.{exc.key}: {exc.message}", exc.hint) from None
    if cfg.data.type == "text" and cfg.data.context is None:  # windows as long as the input
        cfg.data.context = int(net.node(net.inputs[0])["attrs"]["shape"][0])
    check_normalize_channels(net, cfg, next((f for f, key, _ in flags if key == "normalize"),
                                            None))
    return cfg


def check_normalize_channels(net, cfg, flag: str | None) -> None:
    """normalize = [mean, std] gives 1 value per statistic or one per channel of an image
    network's input; checked before any data is read, naming the flag or the spec's line."""
    shape = net.node(net.inputs[0])["attrs"]["shape"]
    if cfg.normalize is None or len(shape) != 3 or not isinstance(shape[0], int):
        return
    channels = shape[0]
    sizes = sorted({len(values) for values in cfg.normalize} - {1})
    if not sizes or sizes == [channels]:
        return
    message = (f"train.normalize: {sizes[-1]} values per statistic, but the network's input "
               f"has {channels} channel{'s' if channels > 1 else ''}")
    hint = "give one number each for a grey network" if channels == 1 else \
        f"give 1 or {channels} numbers for the mean and for the std"
    if flag:
        raise UsageError(flag, message, hint)
    raise NetspecError(Diagnostic("error", message, net.train_spans.get("normalize"), hint))


def spec_input_shape(net) -> tuple[int, ...]:
    """One example's shape as the spec's input declares it (sizes image folders)."""
    return tuple(net.node(net.inputs[0])["attrs"]["shape"])


def check_data_fits(net, data) -> None:
    from netspec.train.data import fit_sequence_view

    shape = tuple(net.node(net.inputs[0])["attrs"]["shape"])
    fit_sequence_view(data, shape)  # digits [1, 8, 8] read row by row by an [8, 8] input
    if tuple(data.input_shape) != shape:
        flag = "--input " + "x".join(map(str, data.input_shape))
        raise NetspecError(Diagnostic(
            "error", f"the spec's input is {list(shape)} but the data's examples are "
            f"{list(data.input_shape)}", net.node(net.inputs[0])["span"],
            f"give the network the data's shape with {flag} (no edit of the spec needed), "
            "or use data of the spec's shape"))


def compile_model(net, seed: int = 0, allow_large: bool = False):
    import netspec

    return netspec.compile(net, seed=seed, allow_large=allow_large)


def use_checkpoint_statistics(data, ckpt) -> None:
    """Normalize every split with the statistics the weights were trained with (stored in
    the checkpoint), not those of this run's training split, which --limit may change."""
    import numpy as np

    from netspec.train.data import normalize

    mean, std = ckpt.extra.get("data.mean"), ckpt.extra.get("data.std")
    if mean is None or std is None:
        return
    for split in ("x_train", "x_val", "x_test"):
        x = getattr(data, split)
        if hasattr(x, "with_stats"):  # images read from disk normalize as they are read
            setattr(data, split, x.with_stats(mean, std))
            continue
        shape = (1, -1) + (1,) * (x.ndim - 2) if np.size(data.mean) > 1 else ()
        raw = x * np.reshape(data.std, shape) + np.reshape(data.mean, shape)
        setattr(data, split, normalize(raw, mean, std))
    data.mean, data.std = mean, std


def add_trained_arguments(p) -> None:
    """Arguments of the commands that run trained weights (eval, predict)."""
    add_spec_arguments(p)
    add_input_argument(p)
    add_data_arguments(p)
    p.add_argument("--weights", required=True, metavar="CKPT",
                   help="a checkpoint written by netspec train (.npz, e.g. "
                   "runs/digits_cnn/best.npz), or a state dict: .npz of named arrays, .pt/.pth")
    p.add_argument("--split", choices=("test", "val", "train"), default="test",
                   help="which split of the data (default: test)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text for people (default) or json for tools")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="threads (default: as netspec train chooses them)")


def run_threads(net, batch: int, requested: int | None):
    """The threads context train, eval and predict run a compiled network in: `requested`
    threads, or 1 for a network of small layers and every available core otherwise; image
    networks split their batches over them (netspec.train.threads)."""
    from netspec.train.threads import auto_threads, splits_batch, threads

    n = requested or auto_threads([d.get("macs", 0) for _, d in net.graph.nodes(data=True)],
                                  batch)
    return threads(n, split=splits_batch(net))


def require_weights_file(path: str) -> None:
    """--weights must name a file: a usage error naming the flag before any work."""
    if not Path(path).is_file():
        raise UsageError(f"--weights {path}", "no such checkpoint file",
                         "netspec train writes runs/<network>/best.npz and last.npz")


def read_trained(args):
    """(net, cfg, ckpt): the spec with --param values, its train settings with the flags,
    and the --weights file read, the input shape the weights were trained at applied to the
    network (eval and predict start here)."""
    from netspec.train.checkpoint import read_weights

    net = load_net(args)
    require_weights_file(args.weights)
    with training_errors(net):
        cfg = config_from(net, args)
        ckpt = read_weights(args.weights)
        note_preprocessing(net, ckpt)
        use_trained_input_shape(net, ckpt, args)
    return net, cfg, ckpt


def load_trained(args):
    """(net, cfg, data, model) with the checkpoint's weights, normalization statistics and
    classes: a checkpoint trained on a class subset (--classes 3,5,8) evaluates on that
    subset with its resized head, and reports the original labels."""
    from netspec.train import load_dataset

    net, cfg, ckpt = read_trained(args)
    with training_errors(net):
        cfg.data.classes = checkpoint_classes(ckpt, cfg.data.classes, args)
        data = load_dataset(cfg, spec_input_shape(net))
        check_data_fits(net, data)
        model = compile_model(net, allow_large=getattr(args, "allow_large", False))
        fit_head(model, ckpt)
        apply_weights(model, ckpt, args.weights)
        check_classes_fit(model, data, ckpt, args)
        use_checkpoint_statistics(data, ckpt)
    return net, cfg, data, model


def note_preprocessing(net, ckpt) -> None:
    """A plain state dict loaded into a spec whose torchvision original expects an input step
    the spec lacks (GoogLeNet's transform_input): say what replaces it."""
    import sys

    from netspec.train.pretrained import preprocessing_note

    note = preprocessing_note(net.name) if not ckpt.config else None
    if note:
        print(f"note: {note}", file=sys.stderr)


def use_trained_input_shape(net, ckpt, args) -> None:
    """Without --input, run the network at the input shape its checkpoint was trained at
    (`train --input 3x32x32` records it), so eval and predict need no flag to repeat it."""
    trained = ckpt.state.get("input_shape") if isinstance(ckpt.state, dict) else None
    if getattr(args, "input", None) or not isinstance(trained, list) or not trained:
        return
    if not all(type(d) is int and d >= 1 for d in trained):
        return
    declared = list(net.node(net.inputs[0])["attrs"]["shape"])
    if trained != declared and len(trained) == len(declared):
        set_input_shape(net, tuple(trained), f"the input shape {args.weights} was trained at "
                        f"({'x'.join(map(str, trained))})")


def checkpoint_classes(ckpt, classes: list[int] | None, args) -> list[int] | None:
    """The classes the weights were trained on (the checkpoint records them); --classes may
    repeat them but not choose others."""
    trained = ckpt.config.get("data", {}).get("classes") if isinstance(ckpt.config, dict) \
        else None
    if not trained:
        return classes
    given = getattr(args, "classes", None)
    if given is not None and list(given) != list(trained):
        shown = ",".join(map(str, trained))
        raise UsageError(f"--classes {','.join(map(str, given))}",
                         f"{args.weights} was trained on classes {shown}",
                         f"drop --classes (the checkpoint's classes are used), or give "
                         f"--classes {shown}")
    return list(trained)


def fit_head(model, ckpt) -> None:
    """Resize the classifier head to the checkpoint's class count (a fine-tuned head)."""
    head = getattr(model, "head", None)
    weight = ckpt.params.get(f"{head}.weight") if head else None
    current = model.params.get(f"{head}.weight") if head else None
    if weight is None or current is None or weight.ndim < 1 or weight.shape == current.shape:
        return
    if tuple(weight.shape[1:]) == tuple(current.shape[1:]) and weight.shape[0] >= 1:
        model.reinit(head, 0, num_outputs=int(weight.shape[0]))


def apply_weights(model, ckpt, path: str) -> None:
    from netspec.train.checkpoint import apply_checkpoint

    apply_checkpoint(model, ckpt, path)


def check_classes_fit(model, data, ckpt, args) -> None:
    """The network's scores must be one per class of the data, or every figure is wrong."""
    width = int(model.output_shape[0]) if len(model.output_shape) == 1 else None
    if width == data.num_classes:
        return
    trained = ckpt.state.get("num_classes") if isinstance(ckpt.state, dict) else None
    raise NetspecError(Diagnostic(
        "error", f"the network outputs {width} scores per example but the data has "
        f"{data.num_classes} classes{f' ({args.weights} was trained on {trained})' if trained else ''}",
        None, "evaluate on the data and classes the weights were trained on (--data, "
        "--classes), with the spec's own class count (drop --param num_classes)"))


def split(data, name: str):
    """(x, y) of the train, val or test split."""
    return getattr(data, f"x_{name}"), getattr(data, f"y_{name}")
