"""What the train, eval and predict commands share: spec + config + data + model, and errors."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from netspec.diagnostics import Diagnostic, NetspecError

DEFAULT_SPEC = "digits_cnn"


def add_spec_arguments(p, default_spec: bool = True) -> None:
    p.add_argument("spec", nargs="?" if default_spec else None,
                   default=DEFAULT_SPEC if default_spec else None, metavar="FILE",
                   help=f".net file or bundled spec name (default: {DEFAULT_SPEC})")
    p.add_argument("--network", help="which network of the file (default: the last one)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
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
    p.add_argument("--data", help="digits (default), or a path: CIFAR-10 batches directory, "
                   "MNIST IDX directory, an .npz with x_train/y_train, or a folder of images "
                   "per class (ImageFolder layout)")
    p.add_argument("--val", type=float, help="validation fraction of the training split")
    p.add_argument("--classes", help="keep only these labels, e.g. 0,1,2")
    p.add_argument("--limit", type=int, help="use at most this many training examples")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any training setting by its dotted name, e.g. optimizer.beta1=0.8")


def parse_assignments(items: list[str], what: str) -> dict[str, Any]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise NetspecError(Diagnostic("error", f"{what} `{item}` is not NAME=VALUE"))
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def load_net(args):
    import netspec

    return netspec.load(args.spec, args.network, parse_assignments(args.param, "--param"),
                        allow_imports=getattr(args, "allow_imports", ()))


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
    """The spec's train section, then CLI overrides (flags that were not given are None)."""
    from netspec.train import TrainConfig, apply_overrides

    cfg = TrainConfig.from_spec(net.train)
    cli = dict(extra or {})
    for key in ("data", "val", "limit"):
        cli[key] = getattr(args, key, None)
    if getattr(args, "classes", None):
        cli["classes"] = [int(c) for c in str(args.classes).split(",") if c.strip()]
    cli.update(parse_assignments(getattr(args, "set", []), "--set"))
    cfg = apply_overrides(cfg, cli)
    if cfg.data.type == "text" and cfg.data.context is None:  # windows as long as the input
        cfg.data.context = int(net.node(net.inputs[0])["attrs"]["shape"][0])
    return cfg


def spec_input_shape(net) -> tuple[int, ...]:
    """One example's shape as the spec's input declares it (sizes image folders)."""
    return tuple(net.node(net.inputs[0])["attrs"]["shape"])


def check_data_fits(net, data) -> None:
    from netspec.train.data import fit_sequence_view

    shape = tuple(net.node(net.inputs[0])["attrs"]["shape"])
    fit_sequence_view(data, shape)  # digits [1, 8, 8] read row by row by an [8, 8] input
    if tuple(data.input_shape) != shape:
        raise NetspecError(Diagnostic(
            "error", f"the spec's input is {list(shape)} but the data's examples are "
            f"{list(data.input_shape)}", net.node(net.inputs[0])["span"],
            f"change the spec's input to {list(data.input_shape)}, or train it on matching data"))


def compile_model(net, seed: int = 0, allow_large: bool = False):
    import netspec

    return netspec.compile(net, seed=seed, allow_large=allow_large)


def out_dir(args, net) -> Path:
    return Path(args.out) if getattr(args, "out", None) else Path("runs") / net.name


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
    add_data_arguments(p)
    p.add_argument("--weights", required=True, metavar="CKPT",
                   help="a checkpoint, or a state dict: .npz of named arrays, .pt/.pth")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--threads", type=int, metavar="N",
                   help="threads (default: as netspec train chooses them)")


def run_threads(net, batch: int, requested: int | None):
    """The threads context train, eval and predict run a compiled network in: `requested`
    threads, or 1 for a network of small layers and every available core otherwise; image
    networks split their batches over them (netspec.train.threads)."""
    from netspec.train.threads import auto_threads, splits_batch, threads

    n = requested or auto_threads([d.get("macs", 0) for _, d in net.graph.nodes(data=True)],
                                  batch)
    return threads(n, split=splits_batch(net))


def load_trained(args):
    """(net, cfg, data, model) with the checkpoint's weights and normalization statistics."""
    from netspec.train import load_dataset, load_weights

    net = load_net(args)
    with training_errors(net):
        cfg = config_from(net, args)
        data = load_dataset(cfg, spec_input_shape(net))
        check_data_fits(net, data)
        model = compile_model(net, allow_large=getattr(args, "allow_large", False))
        use_checkpoint_statistics(data, load_weights(model, args.weights))
    return net, cfg, data, model


def split(data, name: str):
    """(x, y) of the train, val or test split."""
    return getattr(data, f"x_{name}"), getattr(data, f"y_{name}")
