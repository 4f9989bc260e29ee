"""netspec: write a neural network once as a .net spec; analyze, draw, compile and train it.

The pipeline, one stage per module (data flows one way):

    grammars/netspec.lark -> parse -> lower -> analyze -> render | codegen -> train
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from netspec.diagnostics import Diagnostic, NetspecError
from netspec.ir import Network, verify

__version__ = "0.1.0"


def parse(text: str, filename: str = "<string>", network: str | None = None,
          overrides: dict[str, Any] | None = None, allow_imports: Iterable[str] = ()) -> Network:
    """Parse spec text and lower it to the IR (imports resolve relative to `filename`).

    Imports may reach `filename`'s directory tree (the working directory for text without
    a file), the bundled library, and the directories listed in `allow_imports`."""
    from netspec.lower import lower
    from netspec.parser import parse_module

    return lower(parse_module(text, filename), network, overrides, allow_imports)


def load(path: str, network: str | None = None, overrides: dict[str, Any] | None = None,
         allow_imports: Iterable[str] = ()) -> Network:
    """Read a .net file (or a name from the bundled library, e.g. "resnet50") into the IR."""
    from netspec.specfiles import read_spec

    path, text = read_spec(path)
    return parse(text, path, network, overrides, allow_imports)


def __getattr__(name: str):
    # Later stages load on first use so `netspec check` stays fast and light.
    if name == "analyze":
        from netspec.analysis import analyze
        return analyze
    if name == "draw":
        from netspec.render import draw
        return draw
    if name == "compile":
        from netspec.codegen import compile
        return compile
    if name == "threads":
        from netspec.train.threads import threads
        return threads
    raise AttributeError(name)


__all__ = [
    "Diagnostic",
    "NetspecError",
    "Network",
    "analyze",
    "compile",
    "draw",
    "load",
    "parse",
    "threads",
    "verify",
]
