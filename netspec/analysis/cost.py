"""Analysis pass: multiply-accumulates (MACs) and FLOPs of every layer."""
from __future__ import annotations

from netspec.ir import Network
from netspec.ops import REGISTRY

# How a count is made; `summary` prints the chosen convention under its totals.
CONVENTIONS = {
    "torchvision": "1 MAC = 1 multiply-add = 2 FLOPs; MACs count conv and linear weights, "
                   "bias excluded, as torchvision's `_ops`",
    "all": "1 MAC = 1 multiply-add = 2 FLOPs; MACs count conv and linear weights, bias "
           "excluded, as torchvision's `_ops`; FLOPs add every other op's arithmetic: bias "
           "adds, normalization (4 per element), activations (1 per element, softmax 3), "
           "pooling (1 per window element) and residual adds",
}


def count_cost(net: Network, count: str = "torchvision") -> None:
    """Set node["macs"] and node["flops"]: FLOPs = 2 * MACs, plus each op's extra_flops
    when count == "all" (torchvision and fvcore count conv and linear layers only)."""
    if count not in CONVENTIONS:
        raise ValueError(f"count must be one of {sorted(CONVENTIONS)}, not {count!r}")
    nodes = dict(net.graph.nodes(data=True))  # plain dict lookups: NodeView is slow
    for name in net.order():
        data = nodes[name]
        op = REGISTRY[data["op"]]
        ins = [nodes[i]["shape"] for i in data["inputs"]]
        macs = op.macs(data["attrs"], ins, data["shape"])
        data["macs"] = macs
        data["flops"] = 2 * macs + (op.extra_flops(data["attrs"], ins, data["shape"])
                                    if count == "all" else 0)
