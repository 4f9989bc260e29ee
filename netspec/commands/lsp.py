"""`netspec lsp`: the language server (Language Server Protocol over stdio) for editors."""
from __future__ import annotations

from netspec.diagnostics import Diagnostic, NetspecError

HELP = "run the language server on stdin/stdout (diagnostics, hover, completion, ...)"


def add_arguments(p) -> None:
    p.add_argument("--stdio", action="store_true",
                   help="talk over stdin/stdout (the default and only transport; editors "
                        "often pass it)")


def run(args) -> int:
    try:
        from netspec.lsp import serve_stdio
    except ModuleNotFoundError as exc:
        if exc.name not in ("pygls", "lsprotocol"):
            raise
        raise NetspecError(Diagnostic(
            "error", "netspec lsp needs pygls", None,
            "install it with: pip install 'netspec[lsp]'")) from None
    serve_stdio()
    return 0
