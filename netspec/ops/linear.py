"""Op `linear` (fully connected / affine): out = x W^T + b on the flattened input."""
from __future__ import annotations

import math

from netspec.ops.base import INIT_ARG, Arg, Op, ParamSpec, Saved


class Linear(Op):
    name = "linear"
    aliases = ("fc", "affine", "dense")
    family = "linear"
    doc = ("Fully connected layer; a [C, H, W] input is flattened first (as CS231n's affine); "
           "a [T, D] sequence is mapped at every step to [T, out] (as nn.Linear).")
    args = (
        Arg("out", "posint", doc="output features"),
        Arg("bias", "bool", True, doc="learn a bias"),
        INIT_ARG,
    )
    kernel = "linear"
    whole_grid = True

    def shape(self, attrs, inputs):
        if _per_step(inputs):
            return (inputs[0][0], attrs["out"])
        return (attrs["out"],)

    def params(self, attrs, inputs):
        d_in = inputs[0][1] if _per_step(inputs) else math.prod(inputs[0])
        out = [ParamSpec("weight", (attrs["out"], d_in), "param",
                         "he" if attrs["init"] == "auto" else attrs["init"], d_in, attrs["out"])]
        if attrs["bias"]:
            out.append(ParamSpec("bias", (attrs["out"],), "param", "zeros", d_in, attrs["out"]))
        return out

    def macs(self, attrs, inputs, out):
        return math.prod(inputs[0]) * attrs["out"]

    def extra_flops(self, attrs, inputs, out):
        return math.prod(out) if attrs["bias"] else 0

    def dot_products(self, attrs, inputs, out):
        return attrs["out"]

    def bias_elements(self, attrs, inputs, out):
        return self.extra_flops(attrs, inputs, out)

    def saved(self, attrs, inputs, out):
        return Saved(keeps_input=True)  # x reshaped to [N, D_in], for dw

    def sees_whole_grid(self, attrs, inputs):
        return not _per_step(inputs)  # a per-step map leaves each step's field alone

    def torch_module(self, attrs, inputs):
        bias = "" if attrs["bias"] else ", bias=False"
        d_in = inputs[0][1] if _per_step(inputs) else math.prod(inputs[0])
        return f"nn.Linear({d_in}, {attrs['out']}{bias})"

    def torch_forward(self, attrs, inputs, xs, module):
        flat = len(inputs[0]) > 1 and not _per_step(inputs)
        return f"{module}({xs[0]}.flatten(1))" if flat else f"{module}({xs[0]})"

    def onnx(self, g, attrs, inputs, xs):
        if _per_step(inputs):  # [N, T, D] @ Wᵀ at every step: MatMul (Gemm is 2-D only)
            return g.matmul(xs[0], g.param("weight"), g.param("bias") if attrs["bias"] else None)
        x = g.node("Flatten", xs, suffix="flatten", axis=1) if len(inputs[0]) > 1 else xs[0]
        params = [g.param("weight")] + ([g.param("bias")] if attrs["bias"] else [])
        return g.node("Gemm", [x, *params], transB=1)

    def describe(self, attrs):
        return f"linear {attrs['out']}"


def _per_step(inputs) -> bool:
    """A [T, D] sequence: the layer maps each step, it does not flatten."""
    return len(inputs[0]) == 2


OPS = [Linear()]
