"""Analysis pass: every layer's parameters and buffers, trainable or frozen."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from netspec.diagnostics import Diagnostic, NetspecError, did_you_mean
from netspec.ir import Network
from netspec.ops import REGISTRY, ParamSpec


@dataclass(frozen=True)
class ParamCount:
    """Element counts of one layer or a whole network. `params` is torchvision's count
    (trainable + frozen parameters); buffers (batch-norm running statistics) are apart."""

    trainable: int = 0
    frozen: int = 0
    buffers: int = 0

    @property
    def params(self) -> int:
        return self.trainable + self.frozen

    def __add__(self, other: ParamCount) -> ParamCount:
        return ParamCount(self.trainable + other.trainable, self.frozen + other.frozen,
                          self.buffers + other.buffers)


def count_params(net: Network, freeze: Iterable[str] = ()) -> frozenset[str]:
    """Set node["params"] (the op's ParamSpecs) on every layer; return the full names
    (`layer1.0.conv1.weight`) of the parameters the freeze patterns select."""
    nodes = dict(net.graph.nodes(data=True))  # plain dict lookups: NodeView is slow
    for name in net.order():
        data = nodes[name]
        ins = [nodes[i]["shape"] for i in data["inputs"]]
        data["params"] = REGISTRY[data["op"]].params(data["attrs"], ins)
    return frozen_names(net, freeze)


def param_names(net: Network, kind: str = "param") -> list[str]:
    """Full names of the network's parameters (or buffers), in layer order."""
    nodes = dict(net.graph.nodes(data=True))
    return [f"{name}.{p.name}" for name in net.live()
            for p in nodes[name]["params"] if p.kind == kind]


def frozen_names(net: Network, patterns: Iterable[str]) -> frozenset[str]:
    """Parameters matched by a glob on their full name or on any dotted prefix of it.

    `layer1` or `layer1.*` freezes every parameter of the layer1 stage, `conv1` the top-level
    conv1's weight and bias, `fc.weight` that one tensor. Buffers are never trained, so never
    listed. A pattern that matches nothing is an error (a typo would train everything)."""
    names = param_names(net)
    frozen: set[str] = set()
    for pattern in patterns:
        hits = {n for n in names if any(fnmatchcase(prefix, pattern) for prefix in _prefixes(n))}
        if not hits:
            raise NetspecError(Diagnostic(
                "error", f"freeze pattern `{pattern}` matches no parameter", None,
                did_you_mean(pattern, {p for n in names for p in _prefixes(n)})
                or "give a layer name, a block instance (`layer1`) or a glob (`layer1.*`)"))
        frozen |= hits
    return frozenset(frozen)


def _prefixes(full_name: str) -> list[str]:
    parts = full_name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts) + 1)]


def layer_count(specs: list[ParamSpec], layer: str, frozen: frozenset[str]) -> ParamCount:
    trainable = frozen_ = buffers = 0
    for p in specs:
        if p.kind == "buffer":
            buffers += p.size
        elif f"{layer}.{p.name}" in frozen:
            frozen_ += p.size
        else:
            trainable += p.size
    return ParamCount(trainable, frozen_, buffers)

