"""`netspec compile FILE -o model.py`: write a spec as a trainable NumPy (or torch) module."""
from __future__ import annotations

import os
import sys

from netspec.commands._session import add_import_argument
from netspec.diagnostics import UsageError, printable

HELP = "compile a spec to a Python module that runs and trains it with NumPy (or PyTorch)"


def add_arguments(p) -> None:
    p.add_argument("file", metavar="FILE", help=".net file or bundled spec name")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="where to write the module (default: standard output)")
    p.add_argument("--target", choices=("numpy", "torch"), default="numpy",
                   help="numpy: a netspec Model (default); torch: a torch.nn.Module that "
                   "needs only PyTorch")
    p.add_argument("--standalone", action="store_true",
                   help="copy the runtime kernels in, so the module needs only NumPy")
    p.add_argument("--input", metavar="SHAPE", type=parse_shape,
                   help="per-sample input shape, e.g. 3x32x32 (default: the spec's)")
    p.add_argument("--network", help="which network of the file (default: the last one)")
    add_import_argument(p)


def parse_shape(text: str) -> tuple[int, ...]:
    """"3x32x32" (or "3,32,32") -> (3, 32, 32)."""
    import argparse

    parts = text.replace(",", "x").split("x")
    if not 1 <= len(parts) <= 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a shape: give 1 to 3 positive sizes such as 3x32x32")
    return tuple(int(p) for p in parts)


def run(args) -> int:
    import netspec

    net = netspec.load(args.file, args.network, allow_imports=args.allow_imports)
    for w in net.warnings:
        print(w.render(), file=sys.stderr)
    if args.target == "torch":
        from netspec import torchgen

        if args.standalone:
            raise UsageError("--standalone", "is for --target numpy: the torch module "
                             "needs only PyTorch already")
        source = torchgen.generate(net, args.input)
    else:
        from netspec.codegen import generate

        source = generate(net, args.input, standalone=args.standalone)
    if not args.output or args.output == "-":
        sys.stdout.write(source)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(source)
    except OSError as exc:
        raise UsageError(f"-o {args.output}", f"cannot write: {exc.strerror}") from None
    what = " (standalone)" if args.standalone else " (torch)" if args.target == "torch" else ""
    print(f"wrote {printable(os.path.relpath(args.output))}: network `{net.name}`{what}", file=sys.stderr)
    return 0
