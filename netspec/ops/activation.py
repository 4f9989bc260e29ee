"""Elementwise activations and the channel-wise ops softmax and maxout."""
from __future__ import annotations

import math

from netspec.ops.base import Arg, Op, Saved, ShapeError


class _Activation(Op):
    family = "activation"
    flops_per_element = 1

    def extra_flops(self, attrs, inputs, out):
        return self.flops_per_element * math.prod(out)

    def saved(self, attrs, inputs, out):
        return Saved(keeps_output=True)  # the derivative is a function of the output


class ReLU(_Activation):
    name = "relu"
    doc = "max(0, x)"
    kernel = "relu"
    fusable_as = "relu"

    def torch_forward(self, attrs, inputs, xs, module):
        return f"F.relu({xs[0]})"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("Relu", xs)


class ReLU6(_Activation):
    name = "relu6"
    doc = "min(max(0, x), 6) (MobileNetV2)"
    kernel = "relu6"

    def saved(self, attrs, inputs, out):
        return Saved(index_bytes=math.prod(out))  # the boolean mask 0 < x < 6

    def torch_forward(self, attrs, inputs, xs, module):
        return f"F.relu6({xs[0]})"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("Clip", [xs[0], g.constant(0.0, "min"), g.constant(6.0, "max")])


class HardSwish(_Activation):
    name = "hardswish"
    aliases = ("hard_swish",)
    doc = "x * relu6(x + 3) / 6 (MobileNetV3)"
    kernel = "hardswish"
    flops_per_element = 4

    def saved(self, attrs, inputs, out):
        return Saved(keeps_input=True)  # the derivative is a function of the input

    def torch_forward(self, attrs, inputs, xs, module):
        return f"F.hardswish({xs[0]})"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("HardSwish", xs)


class LeakyReLU(_Activation):
    name = "leaky_relu"
    aliases = ("lrelu",)
    doc = "x if x > 0 else slope * x"
    args = (Arg("slope", "float", 0.01, doc="negative slope"),)
    kernel = "leaky_relu"

    def saved(self, attrs, inputs, out):
        return Saved(index_bytes=math.prod(out))  # the boolean mask x > 0

    def kernel_args(self, attrs):
        return {"slope": attrs["slope"]}

    def torch_forward(self, attrs, inputs, xs, module):
        return f"F.leaky_relu({xs[0]}, {attrs['slope']!r})"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("LeakyRelu", xs, alpha=attrs["slope"])


class ELU(_Activation):
    name = "elu"
    doc = "x if x > 0 else alpha * (exp(x) - 1)"
    args = (Arg("alpha", "float", 1.0),)
    kernel = "elu"

    def saved(self, attrs, inputs, out):
        return Saved(index_bytes=math.prod(out), keeps_output=True)  # mask x > 0 and out

    def kernel_args(self, attrs):
        return {"alpha": attrs["alpha"]}

    def torch_forward(self, attrs, inputs, xs, module):
        return f"F.elu({xs[0]}, {attrs['alpha']!r})"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("Elu", xs, alpha=attrs["alpha"])


class Sigmoid(_Activation):
    name = "sigmoid"
    doc = "1 / (1 + exp(-x))"
    kernel = "sigmoid"

    def torch_forward(self, attrs, inputs, xs, module):
        return f"torch.sigmoid({xs[0]})"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("Sigmoid", xs)


class Tanh(_Activation):
    name = "tanh"
    doc = "tanh(x)"
    kernel = "tanh"

    def torch_forward(self, attrs, inputs, xs, module):
        return f"torch.tanh({xs[0]})"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("Tanh", xs)


class GELU(_Activation):
    name = "gelu"
    doc = ("x Φ(x) = 0.5 x (1 + erf(x / sqrt(2))), as nn.GELU() (BERT's, ViT's, torch's "
           "TransformerEncoderLayer's); approximate=\"tanh\": 0.5 x (1 + tanh(sqrt(2/pi) "
           "(x + 0.044715 x³))), GPT-2's and nn.GELU(approximate=\"tanh\"), within 5e-4 of it.")
    args = (Arg("approximate", "choice", "none", doc="\"none\": the exact erf form; "
                "\"tanh\": the tanh approximation", choices=("none", "tanh")),)
    kernel = "gelu"
    flops_per_element = 8

    def saved(self, attrs, inputs, out):
        return Saved(values=math.prod(out), keeps_input=True)  # x and its erf or tanh term

    def workspace(self, attrs, inputs, out, need_dx=True):
        return 3 * math.prod(out)  # the derivative's factors before their product

    def kernel_args(self, attrs):
        return {"approximate": attrs["approximate"]}

    def torch_forward(self, attrs, inputs, xs, module):
        if attrs["approximate"] == "tanh":
            return f"F.gelu({xs[0]}, approximate='tanh')"
        return f"F.gelu({xs[0]})"

    def onnx(self, g, attrs, inputs, xs):
        # opset 18 has no Gelu (opset 20 does): the formula from Erf or Tanh
        x = xs[0]
        if attrs["approximate"] == "tanh":
            square = g.node("Mul", [x, x], suffix="square")
            cube = g.node("Mul", [square, x], suffix="cube")
            inner = g.node("Add", [x, g.node("Mul", [cube, g.constant(0.044715, "c3")],
                                             suffix="cubic")], suffix="inner")
            scaled = g.node("Mul", [inner, g.constant(math.sqrt(2 / math.pi), "c")],
                            suffix="scaled")
            curve = g.node("Tanh", [scaled], suffix="tanh")
        else:
            scaled = g.node("Mul", [x, g.constant(1 / math.sqrt(2), "c")], suffix="scaled")
            curve = g.node("Erf", [scaled], suffix="erf")
        one_plus = g.node("Add", [curve, g.constant(1.0, "one")], suffix="one_plus")
        product = g.node("Mul", [x, one_plus], suffix="product")
        return g.node("Mul", [product, g.constant(0.5, "half")])

    def describe(self, attrs):
        return "gelu" + (" (tanh)" if attrs["approximate"] == "tanh" else "")


class Softmax(_Activation):
    name = "softmax"
    doc = "Softmax over the channel axis (the class scores); over D at every step of [T, D]."
    kernel = "softmax"
    flops_per_element = 3

    def torch_forward(self, attrs, inputs, xs, module):
        return f"F.softmax({xs[0]}, dim={-1 if len(inputs[0]) == 2 else 1})"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("Softmax", xs, axis=-1 if len(inputs[0]) == 2 else 1)


class Maxout(_Activation):
    name = "maxout"
    doc = "Max over groups of `pieces` consecutive channels (Goodfellow et al. 2013)."
    args = (Arg("pieces", "posint", 2, doc="channels per group"),)
    kernel = "maxout"

    def shape(self, attrs, inputs):
        c = inputs[0][0]
        if c % attrs["pieces"]:
            raise ShapeError(f"maxout with pieces={attrs['pieces']} needs a channel count "
                             f"divisible by {attrs['pieces']}, got {c}")
        return (c // attrs["pieces"],) + tuple(inputs[0][1:])

    def saved(self, attrs, inputs, out):
        return Saved(index_bytes=math.prod(out) * (1 if attrs["pieces"] <= 256 else 2))

    def kernel_args(self, attrs):
        return {"pieces": attrs["pieces"]}

    def describe(self, attrs):
        return f"maxout {attrs['pieces']}"

    def torch_forward(self, attrs, inputs, xs, module):
        # max(dim) routes a tie's gradient to one input, as the NumPy kernel does (amax splits it)
        groups = f"({inputs[0][0] // attrs['pieces']}, {attrs['pieces']})"
        return f"{xs[0]}.unflatten(1, {groups}).max(dim=2).values"

    def onnx(self, g, attrs, inputs, xs):
        c, rest = inputs[0][0], list(inputs[0][1:])
        shape = g.constant([0, c // attrs["pieces"], attrs["pieces"], *rest], "shape")
        grouped = g.node("Reshape", [xs[0], shape], suffix="groups")
        return g.node("ReduceMax", [grouped, g.constant([2], "axes")], keepdims=0)


OPS = [ReLU(), ReLU6(), HardSwish(), LeakyReLU(), ELU(), Sigmoid(), Tanh(), GELU(), Softmax(),
       Maxout()]
