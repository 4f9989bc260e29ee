"""Normalization ops: batch, layer, instance and group norm, each with a learnt gamma/beta."""
from __future__ import annotations

import math

from netspec.ops.base import Arg, Op, ParamSpec, Saved, ShapeError


def _affine(c: int) -> list[ParamSpec]:
    # PyTorch names gamma `weight` and beta `bias`; netspec keeps its names for state dicts.
    return [ParamSpec("weight", (c,), "param", "ones"), ParamSpec("bias", (c,), "param", "zeros")]


def _torch_options(attrs, defaults: dict) -> str:
    """`, eps=0.001`-style keyword arguments for the attrs that differ from torch's defaults."""
    return "".join(f", {name}={attrs[name]!r}" for name, default in defaults.items()
                   if attrs[name] != default)


def _onnx_group_norm(g, attrs, inputs, xs, groups: int) -> str:
    """Group norm from primitive ops, which onnx's shape inference follows (its
    GroupNormalization function op leaves the output untyped): InstanceNormalization over
    (N, groups, -1), then the per-channel affine."""
    c, rest = inputs[0][0], list(inputs[0][1:])
    grouped = g.node("Reshape", [xs[0], g.constant([0, groups, -1], "grouped_shape")],
                     suffix="grouped")
    normalized = g.node("InstanceNormalization", [grouped, g.constant([1.0] * groups, "ones"),
                                                  g.constant([0.0] * groups, "zeros")],
                        suffix="normalized", epsilon=attrs["eps"])
    shaped = g.node("Reshape", [normalized, g.constant([0, c, *rest], "shape")],
                    suffix="shaped")
    per_channel = g.constant([c] + [1] * len(rest), "channel_shape")
    gamma = g.node("Reshape", [g.param("weight"), per_channel], suffix="gamma")
    beta = g.node("Reshape", [g.param("bias"), per_channel], suffix="beta")
    return g.node("Add", [g.node("Mul", [shaped, gamma], suffix="scaled"), beta])


class _Norm(Op):
    family = "norm"

    def extra_flops(self, attrs, inputs, out):
        return 4 * math.prod(out)  # subtract mean, divide by std, scale, shift

    def saved(self, attrs, inputs, out):
        return Saved(values=math.prod(out))  # the normalized (or centred) input

    def workspace(self, attrs, inputs, out, need_dx=True):
        return math.prod(out)  # dout * x_hat before its reduction (dx is always computed)

    def kernel_args(self, attrs):
        return {"eps": attrs["eps"]}

    def params(self, attrs, inputs):
        return _affine(inputs[0][0])

    def torch_forward(self, attrs, inputs, xs, module):
        return f"{module}({xs[0]})"


class BatchNorm(_Norm):
    name = "batchnorm"
    aliases = ("bn", "batch_norm")
    doc = ("Batch norm per channel (over N, H, W); train: batch statistics and running "
           "averages, eval: the running averages.")
    args = (Arg("eps", "float", 1e-5), Arg("momentum", "float", 0.1,
                                           doc="running = (1 - m) running + m batch"))
    kernel = "batchnorm"
    uses_train = True
    absorbs = (("relu", "after"),)  # max(bn(x), 0) in place on bn's fresh output

    def params(self, attrs, inputs):
        c = inputs[0][0]
        return _affine(c) + [ParamSpec("running_mean", (c,), "buffer", "zeros"),
                             ParamSpec("running_var", (c,), "buffer", "ones")]

    def kernel_args(self, attrs):
        return {"momentum": attrs["momentum"], "eps": attrs["eps"]}

    def workspace(self, attrs, inputs, out, need_dx=True):
        return 0  # the reductions are einsum / matmul row dots: no product temporary

    def describe(self, attrs):
        return "batchnorm"

    def torch_module(self, attrs, inputs):
        dims = "2d" if len(inputs[0]) == 3 else "1d"
        options = _torch_options(attrs, {"eps": 1e-5, "momentum": 0.1})
        return f"nn.BatchNorm{dims}({inputs[0][0]}{options})"

    def onnx(self, g, attrs, inputs, xs):
        tensors = [g.param(n) for n in ("weight", "bias", "running_mean", "running_var")]
        return g.node("BatchNormalization", [xs[0], *tensors], epsilon=attrs["eps"])


class LayerNorm(_Norm):
    name = "layernorm"
    aliases = ("ln", "layer_norm")
    doc = ("Per-sample statistics over all of C, H, W; gamma/beta per channel "
           "(= GroupNorm(1, C) on images, LayerNorm(D) on vectors); on a [T, D] sequence "
           "statistics over D at every step, gamma/beta (D,) (= LayerNorm(D)).")
    args = (Arg("eps", "float", 1e-5),)
    kernel = "layernorm"

    def params(self, attrs, inputs):
        return _affine(inputs[0][-1] if len(inputs[0]) == 2 else inputs[0][0])

    def torch_module(self, attrs, inputs):
        options = _torch_options(attrs, {"eps": 1e-5})
        if len(inputs[0]) == 2:  # a sequence: LayerNorm(D) at every step
            return f"nn.LayerNorm({inputs[0][1]}{options})"
        if len(inputs[0]) == 1:
            return f"nn.LayerNorm({inputs[0][0]}{options})"
        return f"nn.GroupNorm(1, {inputs[0][0]}{options})"  # statistics over all of C, H, W

    def onnx(self, g, attrs, inputs, xs):
        if len(inputs[0]) <= 2:  # a vector, or a sequence: statistics over the last axis
            return g.node("LayerNormalization", [xs[0], g.param("weight"), g.param("bias")],
                          axis=-1, epsilon=attrs["eps"])
        return _onnx_group_norm(g, attrs, inputs, xs, 1)  # statistics over all of C, H, W


class InstanceNorm(_Norm):
    name = "instancenorm"
    aliases = ("in", "instance_norm")
    doc = "Per-sample, per-channel statistics over H, W."
    args = (Arg("eps", "float", 1e-5), Arg("affine", "bool", True))
    kernel = "instancenorm"
    spatial = True

    def shape(self, attrs, inputs):
        if len(inputs[0]) != 3:
            raise ShapeError(f"instancenorm needs a [C, H, W] input, got {list(inputs[0])}")
        return inputs[0]

    def params(self, attrs, inputs):
        return _affine(inputs[0][0]) if attrs["affine"] else []

    def kernel_args(self, attrs):
        return {"eps": attrs["eps"]}

    def torch_module(self, attrs, inputs):
        affine = ", affine=True" if attrs["affine"] else ""
        return f"nn.InstanceNorm2d({inputs[0][0]}{_torch_options(attrs, {'eps': 1e-5})}{affine})"

    def onnx(self, g, attrs, inputs, xs):
        c = inputs[0][0]
        if attrs["affine"]:
            scale, bias = g.param("weight"), g.param("bias")
        else:
            scale, bias = g.constant([1.0] * c, "scale"), g.constant([0.0] * c, "bias")
        return g.node("InstanceNormalization", [xs[0], scale, bias], epsilon=attrs["eps"])


class GroupNorm(_Norm):
    name = "groupnorm"
    aliases = ("gn", "group_norm")
    doc = "Per-sample statistics over groups of channels (and H, W); gamma/beta per channel."
    args = (Arg("groups", "posint", 32), Arg("eps", "float", 1e-5))
    kernel = "groupnorm"

    def shape(self, attrs, inputs):
        c = inputs[0][0]
        if c % attrs["groups"]:
            raise ShapeError(f"groupnorm groups={attrs['groups']} does not divide {c} channels",
                             "choose a group count that divides the channels")
        return inputs[0]

    def kernel_args(self, attrs):
        return {"groups": attrs["groups"], "eps": attrs["eps"]}

    def torch_module(self, attrs, inputs):
        options = _torch_options(attrs, {"eps": 1e-5})
        return f"nn.GroupNorm({attrs['groups']}, {inputs[0][0]}{options})"

    def onnx(self, g, attrs, inputs, xs):
        return _onnx_group_norm(g, attrs, inputs, xs, attrs["groups"])


OPS = [BatchNorm(), LayerNorm(), InstanceNorm(), GroupNorm()]
