"""`netspec export FILE -o model.onnx`: write a spec's eval-mode network as an ONNX model."""
from __future__ import annotations

import os
import sys

from netspec.commands._session import add_import_argument, require_weights_file
from netspec.commands._types import non_negative_int
from netspec.commands.compile import parse_shape
from netspec.diagnostics import UsageError

HELP = "export a spec's network to ONNX (eval mode, dynamic batch axis)"


def add_arguments(p) -> None:
    p.add_argument("file", metavar="FILE", help=".net file or bundled spec name")
    p.add_argument("-o", "--output", metavar="PATH", required=True,
                   help="where to write the .onnx file")
    p.add_argument("--weights", metavar="CKPT",
                   help="a netspec checkpoint or .npz state dict (default: the spec's "
                   "initialization for --seed)")
    p.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                   help="seed of the spec's initialization when no --weights (default 0)")
    p.add_argument("--input", metavar="SHAPE", type=parse_shape,
                   help="per-sample input shape, e.g. 3x32x32 (default: the spec's)")
    p.add_argument("--network", help="which network of the file (default: the last one)")
    add_import_argument(p)


def run(args) -> int:
    import netspec
    from netspec import onnxgen

    onnxgen.require_onnx()  # before any work: say which extra to install
    check_paths(args)
    net = netspec.load(args.file, args.network, allow_imports=args.allow_imports)
    for w in net.warnings:
        print(w.render(), file=sys.stderr)
    model = onnxgen.export(net, args.output, weights=args.weights, input_shape=args.input,
                           seed=args.seed)
    size = os.path.getsize(args.output)
    print(f"wrote {os.path.relpath(args.output)}: network `{net.name}`, opset {onnxgen.OPSET}, "
          f"{len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers, "
          f"{size / 1e6:.1f} MB", file=sys.stderr)
    return 0


def check_paths(args) -> None:
    """A missing weights file or an output folder that does not exist is the flag's fault:
    say so before any work, as compile and eval do."""
    if args.weights is not None:
        require_weights_file(args.weights)
    folder = os.path.dirname(os.path.abspath(args.output))
    if os.path.isdir(args.output):
        raise UsageError(f"-o {args.output}", "is a directory", "give a file name, e.g. "
                         "model.onnx")
    if not os.path.isdir(folder):
        raise UsageError(f"-o {args.output}", "cannot write: No such file or directory")
