"""`netspec ops`: the built-in ops, their arguments and defaults."""
from __future__ import annotations

HELP = "list the built-in ops with their arguments and defaults"


def add_arguments(p) -> None:
    p.add_argument("name", nargs="?", help="show one op")


def run(args) -> int:
    from netspec.diagnostics import Diagnostic, NetspecError, did_you_mean
    from netspec.ops import REGISTRY, all_names, lookup

    ops = list(REGISTRY.values())
    if args.name:
        op = lookup(args.name)
        if op is None:
            raise NetspecError(Diagnostic("error", f"no op `{args.name}`", None,
                                          did_you_mean(args.name, all_names())))
        ops = [op]
    for op in ops:
        if op.name == "input":
            continue
        alias = f"  (also: {', '.join(op.aliases)})" if op.aliases else ""
        print(f"{op.signature()}{alias}\n    [{op.family}] {op.doc}")
        if args.name:
            for a in op.args:
                print(f"    {a.name:<8} {a.type:<7} {a.doc}")
    return 0

