"""Finding and reading spec files: a path, or a name from the bundled library in specs/."""
from __future__ import annotations

import os

from netspec.diagnostics import Diagnostic, NetspecError, did_you_mean
from netspec.files import read_spec_text
from netspec.lower import library_dir


def library_specs() -> dict[str, str]:
    """Bundled network specs by name: {"resnet50": ".../specs/resnet50.net", ...}."""
    root = library_dir()
    return {f[:-4]: os.path.join(root, f) for f in sorted(os.listdir(root)) if f.endswith(".net")}


def resolve(path: str) -> str:
    if os.path.exists(path) and not os.path.isdir(path):
        return path  # read_spec_text refuses what is not a regular file
    specs = library_specs()
    name = os.path.basename(path)[:-4] if path.endswith(".net") else path
    if not os.path.exists(path) and os.sep not in path and name in specs:
        return specs[name]
    hint = did_you_mean(name, specs) or f"bundled specs: {', '.join(specs)}"
    if os.path.isdir(path):
        raise NetspecError(Diagnostic("error", f"{path}: is a directory, not a spec file"))
    raise NetspecError(Diagnostic("error", f"{path}: no such spec file", None, hint))


def read_spec(path: str) -> tuple[str, str]:
    """(display path, text) of a spec; a clear error for missing, unreadable, special
    (FIFO, device) or oversized files, refused before reading."""
    found = resolve(path)
    text = read_spec_text(found)
    rel = os.path.relpath(found)
    return (rel if not rel.startswith("..") else found), text

