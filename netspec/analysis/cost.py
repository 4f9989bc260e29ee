"""Analysis pass: multiply-accumulates (MACs), forward FLOPs and the static backward FLOPs
(input gradient and weight gradient apart) of every layer, in a stated FLOP convention."""
from __future__ import annotations

from netspec.ir import Network
from netspec.ops import REGISTRY

_MACS = ("MACs count conv and linear weights, bias excluded, as torchvision's `_ops`; the "
         "backward of a conv or linear layer costs its forward MACs once for the input "
         "gradient (skipped where the input needs none) and once for the weight gradient")
# How FLOPs are counted (`--flops`); every output states the one in use.
CONVENTIONS = {
    "2mac": f"2mac: 1 MAC = 1 multiply-add = 2 FLOPs (PyTorch's FlopCounterMode, DeepSpeed); "
            f"{_MACS}",
    "mac": f"mac: 1 multiply-add = 1 FLOP (torchvision's and fvcore's \"GFLOPS\"); {_MACS}",
    "exact": "exact: multiplies and adds counted apart (a dot product of K terms = K "
             "multiplies + K - 1 adds), bias adds, normalization (4 per element), "
             "activations (1 per element, softmax 3), pooling (1 per window element) and "
             "residual adds included, as torchscan counts; backward: 2 per multiply-add of "
             "the gradient GEMMs, 1 add per output for a bias gradient, and each other op "
             "as many as its forward",
    "all": "all: 1 MAC = 2 FLOPs, plus every other op's arithmetic: bias adds, "
           "normalization (4 per element), activations (1 per element, softmax 3), pooling "
           "(1 per window element) and residual adds (the former --count all)",
}
ALIASES = {"torchvision": "2mac"}  # the former --count torchvision


def convention(name: str) -> str | None:
    """The canonical name of a FLOP convention, or None if unknown."""
    name = ALIASES.get(name, name)
    return name if name in CONVENTIONS else None


def count_cost(net: Network, flops: str = "2mac") -> None:
    """Set node["macs"], node["flops"] (forward) and node["backward_flops"] = (input
    gradient, weight gradient) in the convention `flops`.

    A tensor needs a gradient when a parameter lies upstream of it (never the network
    input); a layer whose inputs need none computes no input gradient, and one whose
    output needs none has no backward at all, as a training step's kernels (and
    PyTorch's autograd) skip them."""
    name_of = convention(flops)
    if name_of is None:
        raise ValueError(f"flops must be one of {sorted(CONVENTIONS)}, not {flops!r}")
    nodes = dict(net.graph.nodes(data=True))  # plain dict lookups: NodeView is slow
    needs_grad: dict[str, bool] = {}
    for name in net.order():
        data = nodes[name]
        op = REGISTRY[data["op"]]
        attrs, out = data["attrs"], data["shape"]
        ins = [nodes[i]["shape"] for i in data["inputs"]]
        macs = op.macs(attrs, ins, out)
        extra = op.extra_flops(attrs, ins, out) if name_of in ("exact", "all") else 0
        data["macs"] = macs
        if name_of == "exact":
            data["flops"] = 2 * macs - op.dot_products(attrs, ins, out) + extra
        else:
            data["flops"] = (1 if name_of == "mac" else 2) * macs + extra
        has_params = any(p.kind == "param" for p in data.get("params") or
                         op.params(attrs, ins))
        input_grad = any(needs_grad[i] for i in data["inputs"])
        needs_grad[name] = bool(data["inputs"]) and (has_params or input_grad)
        data["backward_flops"] = _backward(op, attrs, ins, out, name_of, needs_grad[name],
                                           input_grad, extra)


def _backward(op, attrs, ins, out, name_of: str, has_backward: bool, input_grad: bool,
              extra) -> tuple:
    """(input-gradient FLOPs, weight-gradient FLOPs) of one layer's backward."""
    if not has_backward:
        return (0, 0)
    dx, dw = op.backward_macs(attrs, ins, out)
    scale = 1 if name_of == "mac" else 2
    dx = scale * dx + (extra if name_of == "exact" else 0)
    dw = scale * dw + (op.bias_elements(attrs, ins, out) if name_of == "exact" else 0)
    return (dx if input_grad else 0, dw)
