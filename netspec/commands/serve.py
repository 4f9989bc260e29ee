"""`netspec serve [SPEC...]`: the local web view: edit specs in the browser and see their
diagnostics, summary table and diagram update as you type (127.0.0.1 only)."""
from __future__ import annotations

from netspec.diagnostics import Diagnostic, NetspecError

HELP = "a local web view: edit a spec and see diagnostics, summary and diagram live"
DEFAULT_SPEC = "digits_cnn"


def add_arguments(p) -> None:
    p.add_argument("specs", nargs="*", metavar="SPEC",
                   help=f".net files (saved from the page) or bundled spec names (read-only); "
                        f"default: {DEFAULT_SPEC}")
    p.add_argument("--port", type=_port, default=0,
                   help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")


def run(args) -> int:
    try:
        from netspec.serve import serve, spec_files
    except ModuleNotFoundError as exc:
        if exc.name not in ("starlette", "uvicorn"):
            raise
        raise NetspecError(Diagnostic("error", "netspec serve needs starlette and uvicorn",
                                      None, "install them with: pip install 'netspec[serve]'"))\
            from None
    files = spec_files(args.specs or [DEFAULT_SPEC])
    try:
        serve(files, args.port, open_browser=not args.no_browser,
              announce=lambda line: print(line, flush=True))
    except OSError as exc:
        raise NetspecError(Diagnostic("error", f"--port {args.port}: {exc.strerror}", None,
                                      "choose another port, or leave --port out for a free "
                                      "one")) from None
    return 0


def _port(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return value
