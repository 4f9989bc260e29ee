"""Analysis pass: which layers the compiled NumPy model runs inside another layer's kernel.

A ReLU costs two passes over memory forward and two backward; NumPy cannot fuse them into
the pass before, but a kernel can apply the ReLU itself where that saves work:

- "after": a batch norm whose output only a ReLU reads applies max(out, 0) in place on its
  fresh output (one allocation and one cold pass fewer), and masks dout in its backward;
- "before": a max pool that only reads a ReLU's output computes pool(relu(x)) as
  relu(pool(x)) (max commutes with the ReLU; the gradients agree as well), so the ReLU runs
  on the pooled output, a quarter of the values for 2x2/2, and its input is never copied.

Ops declare this (Op.fusable_as, Op.absorbs); this pass picks the pairs and codegen and the
memory estimate both follow it. The fused layer keeps its name and cache; the ReLU layer has
no statement of its own. Preferred: "before" (the smaller tensor) over "after".
"""
from __future__ import annotations

from netspec.ir import Network
from netspec.ops import REGISTRY


def fused_layers(net: Network) -> dict[str, tuple[str, str]]:
    """Absorbed layer -> (the layer whose kernel applies it, "before" or "after"), over the
    live layers; a layer absorbs at most one other. Network inputs and outputs are never
    absorbed."""
    g = net.graph
    order = net.live()
    alive = set(order)
    readers: dict[str, list[str]] = {name: [] for name in order}
    for name in order:
        for i in g.nodes[name]["inputs"]:
            if i in alive:
                readers[i].append(name)
    ends = set(net.inputs) | set(net.outputs)
    fused: dict[str, tuple[str, str]] = {}
    hosts: set[str] = set()
    for name in order:
        data = g.nodes[name]
        key = REGISTRY[data["op"]].fusable_as
        if key is None or name in ends or len(data["inputs"]) != 1:
            continue
        (source,) = data["inputs"]
        users = readers[name]
        if len(users) == 1 and users[0] not in hosts and g.nodes[users[0]]["inputs"] == [name] \
                and dict(REGISTRY[g.nodes[users[0]]["op"]].absorbs).get(key) == "before":
            fused[name] = (users[0], "before")
            hosts.add(users[0])
        elif source not in ends and source not in hosts and source not in fused \
                and readers[source] == [name] \
                and dict(REGISTRY[g.nodes[source]["op"]].absorbs).get(key) == "after":
            fused[name] = (source, "after")
            hosts.add(source)
    return fused
