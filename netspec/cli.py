"""The command line: parse arguments, call the API, print. One module per command."""
from __future__ import annotations

import argparse
import difflib
import errno
import importlib
import os
import sys
from typing import NoReturn

from netspec.diagnostics import NetspecError, UnknownNetwork, UsageError, printable

# Each name is a module netspec.commands.<name> with HELP, add_arguments(p) and run(args).
COMMANDS = ["check", "summary", "draw", "compile", "train", "eval", "predict", "knn", "ops",
            "fmt", "lsp", "serve", "export", "sample"]


class Parser(argparse.ArgumentParser):
    """argparse with netspec's usage errors: the command's own usage line, the message naming
    the flag, a did-you-mean hint for an unknown flag, exit code 2; control characters in
    what it prints are escaped, since its errors echo the arguments given."""

    def _print_message(self, message: str, file=None) -> None:
        super()._print_message(printable(message) if message else message, file)

    def error(self, message: str, hint: str | None = None) -> NoReturn:
        self.print_usage(sys.stderr)
        tail = f"hint: {hint}\n" if hint else f"hint: `{self.prog} --help` lists every flag\n"
        self.exit(2, f"{self.prog}: error: {message}\n{tail}")

    def unknown(self, extras: list[str]) -> NoReturn:
        """Report flags this (sub)command does not have, suggesting the closest one."""
        flags = [a for a in extras if a.startswith("-") and len(a) > 1]
        hint = closest_flag(flags[0].split("=")[0], self.option_strings()) if flags else None
        noun = "flag" if flags and len(extras) == 1 else "arguments"
        self.error(f"unrecognized {noun}: {' '.join(extras)}",
                   f"did you mean `{hint}`?" if hint else None)

    def option_strings(self) -> list[str]:
        return [o for a in self._actions for o in a.option_strings if o.startswith("--")]


def closest_flag(flag: str, options: list[str]) -> str | None:
    """The option a mistyped or guessed flag most likely meant: `--learning-rate` -> `--lr`
    (initials), `--batch-size` -> `--batch` (prefix), `--epoch` -> `--epochs` (spelling)."""
    words = [w for w in flag.lstrip("-").replace("_", "-").split("-") if w]
    initials = "--" + "".join(w[0] for w in words)
    if len(words) > 1 and initials in options:
        return initials
    name = "--" + "-".join(words)
    for option in options:
        if len(option) > 4 and (name.startswith(option) or option.startswith(name)):
            return option
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return close[0] if close else None


def build_parser() -> Parser:
    parser = Parser(
        prog="netspec", description="Write a network once as a .net spec; analyze, draw, "
        "compile to NumPy and train it.",
        epilog="`netspec COMMAND --help` describes a command's flags. docs/ and README.md "
        "have the full documentation.")
    from netspec import __version__
    parser.add_argument("--version", action="version", version=f"netspec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    parser.commands = {}
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
        parser.commands[name] = p
    return parser


def main(argv: list[str] | None = None) -> int:
    if sys.stdout is None:  # started with standard output closed (`netspec ... >&-`)
        if sys.stderr is not None:
            print("netspec: standard output is closed; nothing could be reported",
                  file=sys.stderr)
        return 1
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.commands.get(args.command, parser).unknown(extras)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` relaunches it
    if args.command is None:
        # No command: say what there is to do; never start a long run unasked.
        parser.print_help()
        return 0
    try:
        code = int(args.run(args) or 0)
        if not sys.stdout.closed:  # (the language server closes it on `exit`)
            sys.stdout.flush()  # a full disk or closed pipe is reported here, not at exit
        return code
    except UnknownNetwork as exc:
        print(UsageError(f"--network {exc.network}", exc.diagnostics[0].message,
                         exc.diagnostics[0].hint).diagnostics[0].render(), file=sys.stderr)
        return UsageError.exit_code
    except NetspecError as exc:
        for d in exc.diagnostics:
            print(d.render(), file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _discard_stdout()
        return 0
    except OSError as exc:
        if exc.errno not in OUTPUT_ERRNOS:
            return _internal_error(exc)
        _discard_stdout()
        where = exc.filename or "standard output"
        print(f"netspec: cannot write {where}: {exc.strerror}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last resort: a message, not a traceback
        return _internal_error(exc)


# Errors of writing output (disk full, I/O error, closed descriptor), not of reading input.
OUTPUT_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EBADF, errno.EDQUOT, errno.EFBIG}


def _internal_error(exc: Exception) -> int:
    if os.environ.get("NETSPEC_DEBUG"):
        raise exc
    print(f"netspec: internal error: {type(exc).__name__}: {printable(str(exc))}\n"
          "(set NETSPEC_DEBUG=1 for the traceback and please report it)", file=sys.stderr)
    return 70


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so Python's flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
