"""The op registry: one Op instance per op, found by name or alias."""
from __future__ import annotations

from netspec.ops import activation, conv, io, linear, norm, pool, resample, sequence, structure
from netspec.ops.base import (
    REQUIRED,
    Arg,
    ArgError,
    NoLowering,
    Op,
    ParamSpec,
    Saved,
    Shape,
    ShapeError,
    Window,
)

_MODULES = (io, conv, linear, pool, resample, activation, norm, structure, sequence)

REGISTRY: dict[str, Op] = {op.name: op for m in _MODULES for op in m.OPS}
ALIASES: dict[str, str] = {a: op.name for op in REGISTRY.values() for a in op.aliases}


def lookup(name: str) -> Op | None:
    """The op called `name` (or one of its aliases), or None."""
    return REGISTRY.get(ALIASES.get(name, name))


def all_names() -> list[str]:
    return sorted(set(REGISTRY) | set(ALIASES))


__all__ = [
    "ALIASES",
    "REGISTRY",
    "REQUIRED",
    "Arg",
    "ArgError",
    "NoLowering",
    "Op",
    "ParamSpec",
    "Saved",
    "Shape",
    "ShapeError",
    "Window",
    "all_names",
    "lookup",
]
