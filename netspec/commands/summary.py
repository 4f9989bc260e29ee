"""`netspec summary FILE`: shapes, parameters, MACs, receptive fields and memory per layer."""
from __future__ import annotations

import argparse
import re
import sys

from netspec.commands._session import add_import_argument
from netspec.diagnostics import Diagnostic, NetspecError, UsageError

HELP = ("per-layer table of output shapes, parameters, MACs, receptive fields and activation "
        "memory, with totals and a training-memory estimate")


def add_arguments(p) -> None:
    from netspec.analysis.cost import CONVENTIONS
    from netspec.analysis.memory import DTYPE_BYTES, OPTIMIZER_SLOTS
    from netspec.analysis.summary import FORMATS

    p.add_argument("file", metavar="FILE", nargs="+",
                   help=".net file or bundled spec name (resnet50); several with --plot")
    p.add_argument("--network", help="which network of the file (default: the last one)")
    add_import_argument(p)
    p.add_argument("--input", metavar="SHAPE", type=input_shape,
                   help="per-sample input shape overriding the spec's: 3x224x224, 784, or "
                        "with size names 3xHxW (shapes, MACs and memory become formulas)")
    p.add_argument("--at", metavar="SIZES", type=sizes_arg,
                   help="evaluate a symbolic analysis at sizes: H=224,W=224")
    p.add_argument("--batch", type=_positive, default=1, metavar="N",
                   help="batch size of the activation and training-memory figures (1)")
    p.add_argument("--depth", type=_depth, metavar="D",
                   help="collapse block instances nested deeper than D into one row each "
                        "(0: the network's own layers and top-level blocks)")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table (default), markdown, json or csv")
    p.add_argument("--freeze", nargs="+", action="extend", default=[], metavar="GLOB",
                   help="layers or parameters not trained: conv1, layer1.*, fc.weight")
    p.add_argument("--flops", choices=list(CONVENTIONS), default=None,
                   help="FLOP convention: 2mac (default: 1 MAC = 2 FLOPs, as PyTorch's "
                        "FlopCounterMode), mac (1 MAC = 1 FLOP), exact (multiplies and adds "
                        "apart, every op, as torchscan), all (2mac plus every other op)")
    p.add_argument("--count", choices=["torchvision", "all"], default=None,
                   help="the former name of --flops: torchvision = 2mac, all")
    p.add_argument("--plot", metavar="OUT", type=plot_path,
                   help="draw MACs and training memory against the input size (n x n) for "
                        "every FILE into OUT (.png or .svg) instead of printing a table")
    p.add_argument("--sizes", metavar="A:B:STEP", type=size_range, default=None,
                   help="the input sides --plot evaluates (default 32:512:16)")
    p.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="float32",
                   help="element type of the memory figures (default: float32)")
    p.add_argument("--optimizer", choices=list(OPTIMIZER_SLOTS), default="sgd",
                   help="optimizer whose state the training-memory estimate counts (sgd)")


def run(args) -> int:
    import netspec
    from netspec.analysis.summary import render

    if args.plot is not None:
        return _plot(args)
    if len(args.file) > 1:
        raise NetspecError(Diagnostic("error", "summary takes one FILE (several with --plot)"))
    net = netspec.load(args.file[0], args.network, allow_imports=args.allow_imports)
    try:
        analysis = netspec.analyze(net, args.input, freeze=args.freeze, batch=args.batch,
                                   dtype=args.dtype, optimizer=args.optimizer, flops=args.flops,
                                   count=args.count)
    except NetspecError as exc:
        first = exc.diagnostics[0]
        if args.freeze and first.message.startswith("freeze pattern"):  # the flag's value
            raise UsageError("--freeze " + " ".join(args.freeze), first.message,
                             first.hint) from None
        raise
    if args.at is not None:
        if not analysis.symbolic:
            raise UsageError("--at",
                             "needs size names in the input shape",
                             "give them in the spec (input x: [3, H, W]) or with --input 3xHxW")
        analysis = analysis.at(**args.at)
    for w in net.warnings + analysis.warnings:
        print(w.render(), file=sys.stderr)
    sys.stdout.write(render(analysis, args.format, args.depth))
    return 0


def _plot(args) -> int:
    """Each FILE analyzed over square inputs (--input with names, or C x S x S), plotted."""
    import netspec
    from netspec.analysis.plot import plot

    analyses = []
    for file in args.file:
        net = netspec.load(file, args.network, allow_imports=args.allow_imports)
        shape = args.input
        if shape is None:
            declared = net.node(net.inputs[0])["attrs"]["shape"]
            shape = (declared[0], "S", "S") if len(declared) == 3 else tuple(declared)
        analyses.append(netspec.analyze(net, shape, freeze=args.freeze, batch=args.batch,
                                        dtype=args.dtype, optimizer=args.optimizer,
                                        flops=args.flops, count=args.count))
    if not all(a.symbolic for a in analyses):

        raise NetspecError(Diagnostic("error", "--plot needs an image input whose size can "
                                      "vary", None, "give --input 3xHxW"))
    out = plot(analyses, args.plot, list(range(*(args.sizes or (32, 513, 16)))))
    print(f"wrote {out}")
    return 0


def plot_path(text: str) -> str:
    """--plot OUT: a .png or .svg file in a directory that exists (checked before analysis)."""
    from pathlib import Path

    path = Path(text)
    if path.suffix.lower() not in (".png", ".svg"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a .png or .svg file")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"no such directory: {str(path.parent)!r}")
    return text


def size_range(text: str) -> tuple[int, int, int]:
    """`32:512:16` -> range(32, 513, 16)'s arguments."""
    parts = text.split(":")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        a, b, step = map(int, parts)
        if 1 <= a <= b and step >= 1 and (b - a) // step <= 10_000:
            return a, b + 1, step
    raise argparse.ArgumentTypeError(f"{text!r} is not a size range: give FROM:TO:STEP, "
                                     "e.g. 32:512:16")


def input_shape(text: str) -> tuple:
    """`3x224x224`, `3,224,224`, `784` or `3xHxW` -> a per-sample shape (names are size
    symbols)."""
    parts = text.replace(",", "x").replace("X", "x").split("x")
    shape: tuple = tuple(int(p) if p.isdigit() else p for p in parts)
    if not 1 <= len(shape) <= 3 or not all(
            d >= 1 if isinstance(d, int) else bool(_SIZE_NAME.match(d)) for d in shape):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a shape: give 1 to 3 positive sizes like 3x224x224, or size "
            "names like 3xHxW (the batch axis is implicit)")
    return shape


_SIZE_NAME = re.compile(r"[A-Za-wyzA-WYZ_][A-Za-z0-9_]*\Z")  # not starting with x: 3xHxW


def sizes_arg(text: str) -> dict[str, int]:
    """`H=224,W=224` -> {"H": 224, "W": 224}."""
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if not _SIZE_NAME.match(name) or not value.strip().isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a list of sizes: give name=value pairs like H=224,W=224")
        out[name] = int(value)
    return out


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _depth(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a depth (0, 1, 2, ...)")
    return value
