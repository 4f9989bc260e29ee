"""`netspec fmt FILE...`: rewrite specs in the canonical style; `--check` for CI."""
from __future__ import annotations

import difflib
import os
import sys

from netspec.diagnostics import Diagnostic, NetspecError, printable

HELP = "format specs in the canonical style (in place); --check: print a diff, exit 1"


def add_arguments(p) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help=".net files to format")
    p.add_argument("--check", action="store_true",
                   help="change nothing; print a diff of each file that is not formatted "
                        "and exit 1 if there is one")


def run(args) -> int:
    from netspec.fmt import format_text

    status = 0
    for path in args.files:
        try:
            text = _read(path)
            formatted = format_text(text, path)
        except NetspecError as exc:
            for d in exc.diagnostics:
                print(d.render(), file=sys.stderr)
            status = 1
            continue
        if formatted == text:
            continue
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(
                text.splitlines(keepends=True), formatted.splitlines(keepends=True),
                f"{path} (as it is)", f"{path} (formatted)"))
            status = 1
        else:
            _write(path, formatted)
            print(f"formatted {printable(path)}", file=sys.stderr)
    return status


def _read(path: str) -> str:
    """The spec's text, through the bounded reader every command uses (a regular file,
    not too large, UTF-8); line endings are kept as they are."""
    from netspec.files import read_spec_text

    return read_spec_text(path)


def _write(path: str, text: str) -> None:
    """Replace the file at once (a temporary file renamed over it): an interrupted run
    leaves the old spec or the new one, never half of one."""
    tmp = f"{path}.fmt.tmp"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise NetspecError(Diagnostic("error", f"{path}: cannot write: {exc.strerror}")) \
            from None
