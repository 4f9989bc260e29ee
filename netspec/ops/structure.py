"""Ops that route tensors: concat, add, flatten, identity, dropout."""
from __future__ import annotations

import math

from netspec.ops.base import Arg, Op, Saved, ShapeError, same_shapes


def _show(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


class Concat(Op):
    name = "concat"
    aliases = ("cat",)
    family = "merge"
    doc = "Concatenate along channels: (a, b, c) -> concat."
    min_inputs = 2
    max_inputs = None
    kernel = "concat"

    def shape(self, attrs, inputs):
        same_shapes([tuple(s[1:]) for s in inputs], lambda: ShapeError(
            "cannot concatenate tensors of shapes " + ", ".join(_show(s) for s in inputs)
            + " along channels: all other axes must agree",
            "give every branch the same stride and padding"))
        return (sum(s[0] for s in inputs),) + tuple(inputs[0][1:])

    def describe(self, attrs):
        return "concat"

    def torch_forward(self, attrs, inputs, xs, module):
        return f"torch.cat([{', '.join(xs)}], 1)"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("Concat", xs, axis=1)


class Add(Op):
    name = "add"
    aliases = ("sum",)
    family = "merge"
    doc = "Elementwise sum (residual connections): y + x or (y, x) -> add."
    min_inputs = 2
    max_inputs = None
    kernel = "add"
    absorbs = (("relu", "after"),)  # ResNet's relu(y + x), in place on the fresh sum

    def shape(self, attrs, inputs):
        same_shapes(inputs, lambda: _add_error(inputs))
        return inputs[0]

    def extra_flops(self, attrs, inputs, out):
        return (len(inputs) - 1) * math.prod(out)

    def describe(self, attrs):
        return "add"

    def torch_forward(self, attrs, inputs, xs, module):
        return " + ".join(xs)

    def onnx(self, g, attrs, inputs, xs):
        return g.node("Sum", xs)


def _add_error(inputs) -> ShapeError:
    hint = None
    a, b = inputs[0], next((s for s in inputs if s != inputs[0]), inputs[0])
    if len(a) == 3 and len(b) == 3 and all(type(d) is int for d in a + b):
        ratio = max(a[1], b[1]) // max(1, min(a[1], b[1]))
        stride = f", s={ratio}" if ratio > 1 else ""
        hint = ("the shortcut needs a projection: "
                f"x -> conv({max(a[0], b[0])}, k=1{stride}) -> bn")
    return ShapeError("cannot add tensors of shape " + " and ".join(_show(s) for s in inputs),
                      hint)


class Flatten(Op):
    name = "flatten"
    family = "reshape"
    doc = "[C, H, W] -> [C*H*W]"
    kernel = "flatten"
    output_is_view = True

    def shape(self, attrs, inputs):
        return (math.prod(inputs[0]),)

    def torch_forward(self, attrs, inputs, xs, module):
        return f"{xs[0]}.flatten(1)"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("Flatten", xs, axis=1)


class Identity(Op):
    name = "identity"
    family = "reshape"
    doc = "Passes its input through."
    kernel = "identity"
    output_is_view = True

    def torch_forward(self, attrs, inputs, xs, module):
        return xs[0]

    def onnx(self, g, attrs, inputs, xs):
        return g.node("Identity", xs)


class Dropout(Op):
    name = "dropout"
    family = "regularization"
    doc = ("Inverted dropout: at train time zero each unit with probability p and scale the "
           "rest by 1/(1-p); identity at test time. p is the DROP probability (PyTorch's).")
    args = (Arg("p", "prob", 0.5, doc="probability of dropping a unit"),)
    kernel = "dropout"
    uses_train = True
    uses_rng = True

    def saved(self, attrs, inputs, out):
        return Saved(values=math.prod(out))  # the scaled keep mask

    def kernel_args(self, attrs):
        return {"p": attrs["p"]}

    def describe(self, attrs):
        return f"dropout {attrs['p']:g}"

    def torch_forward(self, attrs, inputs, xs, module):
        return f"F.dropout({xs[0]}, {attrs['p']!r}, self.training)"

    def onnx(self, g, attrs, inputs, xs):
        return xs[0]  # the exported graph is the eval-mode one, where dropout is the identity


OPS = [Concat(), Add(), Flatten(), Identity(), Dropout()]
