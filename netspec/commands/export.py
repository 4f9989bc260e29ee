"""`netspec export FILE -o model.onnx`: write a spec's eval-mode network as an ONNX model."""
from __future__ import annotations

import os
import sys

from netspec.commands._types import non_negative_int
from netspec.commands.compile import parse_shape

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


def run(args) -> int:
    import netspec
    from netspec import onnxgen

    onnxgen.require_onnx()  # before any work: say which extra to install
    net = netspec.load(args.file, args.network)
    for w in net.warnings:
        print(w.render(), file=sys.stderr)
    model = onnxgen.export(net, args.output, weights=args.weights, input_shape=args.input,
                           seed=args.seed)
    size = os.path.getsize(args.output)
    print(f"wrote {os.path.relpath(args.output)}: network `{net.name}`, opset {onnxgen.OPSET}, "
          f"{len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers, "
          f"{size / 1e6:.1f} MB", file=sys.stderr)
    return 0
