"""The command line: parse arguments, call the API, print. One module per command."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from netspec.diagnostics import NetspecError, printable

# Each name is a module netspec.commands.<name> with HELP, add_arguments(p) and run(args).
COMMANDS = ["check", "summary", "draw", "compile", "train", "eval", "predict", "knn", "ops",
            "fmt", "lsp", "serve", "export", "sample"]


class _Parser(argparse.ArgumentParser):
    """argparse, with control characters in what it prints escaped: its errors echo the
    arguments given ("unrecognized arguments: ..."), which may hold terminal escapes."""

    def _print_message(self, message: str, file=None) -> None:
        super()._print_message(printable(message) if message else message, file)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="netspec", description="Write a network once as a .net spec; analyze, draw, "
        "compile to NumPy and train it.")
    from netspec import __version__
    parser.add_argument("--version", action="version", version=f"netspec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"netspec.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"netspec.commands.{name}":
                continue  # command not built yet
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` relaunches it
    if args.command is None:
        # `netspec` with no command runs the main job: train the default spec on digits.
        if not _has("train"):
            parser.print_help()
            return 2
        args = parser.parse_args(["train"])
    try:
        return int(args.run(args) or 0)
    except NetspecError as exc:
        for d in exc.diagnostics:
            print(d.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if os.environ.get("NETSPEC_DEBUG"):
            raise
        print(f"netspec: internal error: {type(exc).__name__}: {printable(str(exc))}\n"
              "(set NETSPEC_DEBUG=1 for the traceback and please report it)", file=sys.stderr)
        return 70


def _has(command: str) -> bool:
    try:
        importlib.import_module(f"netspec.commands.{command}")
        return True
    except ModuleNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main())
