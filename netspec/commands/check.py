"""`netspec check FILE...`: parse and lower specs, print diagnostics."""
from __future__ import annotations

import sys

from netspec.diagnostics import NetspecError

HELP = "parse and lower specs; print errors and warnings (exit 1 on any error)"


def add_arguments(p) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help=".net files or bundled spec names")
    p.add_argument("--network", help="which network of the file (default: the last one)")
    p.add_argument("-W", "--werror", action="store_true", help="treat warnings as errors")
    p.add_argument("-q", "--quiet", action="store_true", help="print only diagnostics")


def run(args) -> int:
    import netspec

    failed = 0
    for path in args.files:
        try:
            net = netspec.load(path, args.network)
        except NetspecError as exc:
            for d in exc.diagnostics:
                print(d.render(), file=sys.stderr)
            failed += 1
            continue
        for w in net.warnings:
            print(w.render(), file=sys.stderr)
        if net.warnings and args.werror:
            failed += 1
        elif not args.quiet:
            print(f"{path}: ok: network `{net.name}`, {len(net)} layers, "
                  f"{len(net.warnings)} warning{'s' if len(net.warnings) != 1 else ''}")
    return 1 if failed else 0
