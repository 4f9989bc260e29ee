"""`netspec check FILE...`: the whole front end (parse, lower, shapes, train settings) with
every error of a file in one run; text for people, `--format json` for editors and CI."""
from __future__ import annotations

import json
import sys

from netspec.commands._session import add_import_argument
from netspec.diagnostics import printable

HELP = ("check specs through the whole front end (parse, lower, shapes, train settings); "
        "print every error and warning (exit 1 on any error)")


def add_arguments(p) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help=".net files or bundled spec names")
    p.add_argument("--network", help="which network of the file (default: the last one)")
    add_import_argument(p)
    p.add_argument("-W", "--werror", action="store_true", help="treat warnings as errors")
    p.add_argument("-q", "--quiet", action="store_true", help="print only diagnostics")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="json: one object on stdout with every file's diagnostics")


def run(args) -> int:
    from netspec.frontend import check_file

    results = [check_file(path, args.network, allow_imports=args.allow_imports) for path in args.files]
    failed = [r for r in results if r.errors or (args.werror and r.warnings)]
    if args.format == "json":
        print(json.dumps({"version": 1, "files": [_file_json(r) for r in results]}, indent=2))
        return 1 if failed else 0
    for result in results:
        for d in result.diagnostics:
            print(d.render(), file=sys.stderr)
        if result not in failed and not args.quiet:
            print(f"{printable(result.path)}: ok: {_summary(result)}")
    return 1 if failed else 0


def _summary(result) -> str:
    n = len(result.warnings)
    warnings = f"{n} warning{'s' if n != 1 else ''}"
    if result.network is not None:
        return f"network `{result.network.name}`, {len(result.network)} layers, {warnings}"
    blocks = result.library or []
    return f"library of {len(blocks)} block{'s' if len(blocks) != 1 else ''} " \
           f"({', '.join(blocks)}), {warnings}"


def _file_json(result) -> dict:
    from netspec.frontend import to_json

    kind = "network" if result.network is not None else \
        "library" if result.library is not None else None
    return {
        "file": result.path,
        "ok": result.ok,
        "kind": kind,
        "name": result.network.name if result.network is not None else None,
        "layers": len(result.network) if result.network is not None else None,
        "blocks": result.library,
        "errors": len(result.errors),
        "warnings": len(result.warnings),
        "diagnostics": [to_json(d) for d in result.diagnostics],
    }
