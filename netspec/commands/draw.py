"""`netspec draw FILE -o out.svg`: the architecture diagram, rendered by Graphviz's dot."""
from __future__ import annotations

import os
import subprocess
import sys

from netspec.commands._session import add_import_argument
from netspec.diagnostics import UsageError, printable

HELP = "draw the architecture diagram (SVG, PNG, PDF or DOT) with Graphviz"
FORMATS = ("svg", "png", "pdf", "dot")


def add_arguments(p) -> None:
    p.add_argument("file", metavar="FILE", help="a .net file or a bundled spec name")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file; its suffix picks the format (default: NETWORK.svg; "
                   "- for standard output)")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from OUT)")
    p.add_argument("--network", help="which network of the file (default: the last one)")
    add_import_argument(p)
    p.add_argument("--depth", type=_depth, default="auto", metavar="N",
                   help="block nesting drawn open; deeper blocks are one node each "
                   "(0 closes all, `all` opens all; default auto: the deepest level that "
                   "keeps the diagram 60 nodes tall)")
    p.add_argument("--rankdir", choices=("TB", "LR"), default="TB",
                   help="top to bottom (default) or left to right")
    p.add_argument("--no-shapes", dest="shapes", action="store_false",
                   help="do not label edges with tensor shapes")
    p.add_argument("--annotate", type=_annotations, default=(), metavar="LIST",
                   help="extra node lines, comma-separated: params,macs,rf")
    p.add_argument("--no-collapse", dest="collapse", action="store_false",
                   help="draw every block instance, not one per run of identical ones")


def _depth(text: str):
    import argparse

    if text in ("all", "auto"):
        return None if text == "all" else "auto"
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a non-negative integer, `all` or `auto`, "
                                     f"not {text!r}")


def _annotations(text: str) -> tuple[str, ...]:
    import argparse

    from netspec.render import ANNOTATIONS

    items = tuple(a.strip() for a in text.split(",") if a.strip())
    bad = [a for a in items if a not in ANNOTATIONS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown annotation {bad[0]!r} "
                                         f"(choose from {','.join(ANNOTATIONS)})")
    return items


def run(args) -> int:
    import netspec
    from netspec import render

    net = netspec.load(args.file, args.network, allow_imports=args.allow_imports)
    netspec.analyze(net)
    out = args.output or f"{net.name}.{args.format or 'svg'}"
    fmt = _format(out, args.format)
    depth = render.auto_depth(net, args.collapse) if args.depth == "auto" else args.depth
    graph = render.draw(net, depth=depth, rankdir=args.rankdir, shapes=args.shapes,
                        annotate=args.annotate, collapse_repeats=args.collapse,
                        max_nodes=None if fmt == "dot" else render.MAX_LAYOUT_NODES)
    what = f"depth {'all' if depth is None else depth}" + (", chosen automatically"
                                                           if args.depth == "auto" else "")
    if fmt == "dot":
        _write(out, graph.source.encode("utf-8"))
        _report(out, what)
        return 0
    try:
        data = graph.pipe(format=fmt, quiet=True)
    except Exception as exc:  # graphviz.ExecutableNotFound or dot's own failure
        import graphviz

        dot_path = _dot_path(out, net.name)
        _write(dot_path, graph.source.encode("utf-8"))
        if isinstance(exc, graphviz.ExecutableNotFound):
            print(f"netspec: Graphviz's `dot` was not found on PATH; wrote {printable(dot_path)} instead. "
                  f"Install Graphviz (`apt-get install graphviz`) and run again, or render it "
                  f"with `dot -T{fmt} {dot_path} -o {out}`", file=sys.stderr)
            return 1
        if isinstance(exc, subprocess.CalledProcessError):
            detail = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
            reason = printable(detail[-1]) if detail else f"exit {exc.returncode}"
            print(f"netspec: dot failed ({reason}); wrote {printable(dot_path)}", file=sys.stderr)
            return 1
        raise
    _write(out, data)
    _report(out, what)
    return 0


def _format(out: str, given: str | None) -> str:
    """--format, or the output's suffix; both, when they disagree, are an error."""
    if given is None:
        return _suffix_format(out)
    suffix = os.path.splitext(out)[1].lower().lstrip(".")
    known = "dot" if suffix == "gv" else suffix
    if out != "-" and known in FORMATS and known != given:
        raise UsageError(f"--format {given}", f"conflicts with the output `{out}` "
                         f"(a .{suffix} file)", f"name the output .{given}, or drop --format")
    return given


def _suffix_format(out: str) -> str:
    suffix = os.path.splitext(out)[1].lower().lstrip(".")
    if out == "-":
        return "svg"
    if suffix == "gv":
        return "dot"
    if suffix not in FORMATS:
        raise UsageError(f"-o {out}", "cannot tell the format from the suffix",
                         "name it .svg, .png, .pdf or .dot, or pass --format")
    return suffix


def _dot_path(out: str, name: str) -> str:
    if out == "-":
        return f"{name}.dot"
    return os.path.splitext(out)[0] + ".dot"


def _write(path: str, data: bytes) -> None:
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise UsageError(f"-o {path}", f"cannot write: {exc.strerror}") from None


def _report(out: str, what: str) -> None:
    if out != "-":
        print(f"wrote {printable(out)} ({what})")
