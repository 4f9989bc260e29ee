"""Normalization ops: batch, layer, instance and group norm, each with a learnt gamma/beta."""
from __future__ import annotations

import math

from netspec.ops.base import Arg, Op, ParamSpec, Saved, ShapeError


def _affine(c: int) -> list[ParamSpec]:
    # PyTorch names gamma `weight` and beta `bias`; netspec keeps its names for state dicts.
    return [ParamSpec("weight", (c,), "param", "ones"), ParamSpec("bias", (c,), "param", "zeros")]


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


class BatchNorm(_Norm):
    name = "batchnorm"
    aliases = ("bn", "batch_norm")
    doc = ("Batch norm per channel (over N, H, W); train: batch statistics and running "
           "averages, eval: the running averages.")
    args = (Arg("eps", "float", 1e-5), Arg("momentum", "float", 0.1,
                                           doc="running = (1 - m) running + m batch"))
    kernel = "batchnorm"
    uses_train = True

    def params(self, attrs, inputs):
        c = inputs[0][0]
        return _affine(c) + [ParamSpec("running_mean", (c,), "buffer", "zeros"),
                             ParamSpec("running_var", (c,), "buffer", "ones")]

    def kernel_args(self, attrs):
        return {"momentum": attrs["momentum"], "eps": attrs["eps"]}

    def describe(self, attrs):
        return "batchnorm"


class LayerNorm(_Norm):
    name = "layernorm"
    aliases = ("ln", "layer_norm")
    doc = ("Per-sample statistics over all of C, H, W; gamma/beta per channel "
           "(= GroupNorm(1, C) on images, LayerNorm(D) on vectors).")
    args = (Arg("eps", "float", 1e-5),)
    kernel = "layernorm"


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


OPS = [BatchNorm(), LayerNorm(), InstanceNorm(), GroupNorm()]
