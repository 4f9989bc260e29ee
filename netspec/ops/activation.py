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


class ELU(_Activation):
    name = "elu"
    doc = "x if x > 0 else alpha * (exp(x) - 1)"
    args = (Arg("alpha", "float", 1.0),)
    kernel = "elu"

    def saved(self, attrs, inputs, out):
        return Saved(index_bytes=math.prod(out), keeps_output=True)  # mask x > 0 and out

    def kernel_args(self, attrs):
        return {"alpha": attrs["alpha"]}


class Sigmoid(_Activation):
    name = "sigmoid"
    doc = "1 / (1 + exp(-x))"
    kernel = "sigmoid"


class Tanh(_Activation):
    name = "tanh"
    doc = "tanh(x)"
    kernel = "tanh"


class Softmax(_Activation):
    name = "softmax"
    doc = "Softmax over the channel axis (the class scores)."
    kernel = "softmax"
    flops_per_element = 3


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


OPS = [ReLU(), LeakyReLU(), ELU(), Sigmoid(), Tanh(), Softmax(), Maxout()]
