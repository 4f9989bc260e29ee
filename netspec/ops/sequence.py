"""Sequence ops on per-sample [T, D] tensors (time, features) and [T] token ids: embeddings,
positions, recurrences (rnn, lstm, gru), multi-head self-attention, patches, pooling over time.

Parameter names and layouts are PyTorch's, so state dicts move both ways: an lstm has
`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0` (`_reverse` for the backward
direction) with torch's gate order; attention has nn.MultiheadAttention's `in_proj_weight`,
`in_proj_bias`, `out_proj.weight`, `out_proj.bias`.
"""
from __future__ import annotations

import math

from netspec.ops.base import (
    EMBED_INIT_ARG,
    INIT_ARG,
    Arg,
    Op,
    ParamSpec,
    Saved,
    ShapeError,
    Window,
    spatial_input,
)

REACH = ("step", "past", "all")  # what an output step depends on, narrowest first


def wider(a: str, b: str) -> str:
    return max(a, b, key=REACH.index)


def sequence_input(op: Op, inputs) -> tuple[int, int]:
    """The (T, D) of a sequence input, or a ShapeError saying what the op needs."""
    shape = inputs[0]
    if len(shape) != 2:
        hint = ("tokens go through an embedding first: x -> embedding(vocab, dim)"
                if len(shape) == 1 else
                "cut an image into a sequence first: x -> patches(p) -> linear(dim)")
        raise ShapeError(f"{op.name} needs a [T, D] sequence input, got {list(shape)}", hint)
    return shape  # type: ignore[return-value]


class Embedding(Op):
    name = "embedding"
    aliases = ("embed",)
    family = "embedding"
    doc = ("Token ids [T] -> vectors [T, dim]: row x[t] of a learnt (vocab, dim) table "
           "(nn.Embedding; init N(0, 1) as torch's, or init=\"gpt2\": N(0, 0.02²)).")
    args = (Arg("vocab", "posint", doc="number of distinct tokens"),
            Arg("dim", "posint", doc="vector size"),
            EMBED_INIT_ARG)
    kernel = "embedding"
    token_input = True

    def shape(self, attrs, inputs):
        if len(inputs[0]) != 1:
            raise ShapeError(f"embedding needs token ids [T], got {list(inputs[0])}",
                             "declare the input as tokens: input x: [T] int")
        return (inputs[0][0], attrs["dim"])

    def params(self, attrs, inputs):
        init = "unit" if attrs["init"] == "auto" else attrs["init"]
        return [ParamSpec("weight", (attrs["vocab"], attrs["dim"]), "param", init,
                          attrs["vocab"], attrs["dim"])]

    def saved(self, attrs, inputs, out):
        return Saved(keeps_input=True)  # the ids, for the scatter-add of dweight

    def torch_module(self, attrs, inputs):
        return f"nn.Embedding({attrs['vocab']}, {attrs['dim']})"

    def torch_forward(self, attrs, inputs, xs, module):
        return f"{module}({xs[0]})"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("Gather", [g.param("weight"), xs[0]], axis=0)  # ids are int64

    def describe(self, attrs):
        return f"embedding {attrs['vocab']}x{attrs['dim']}"


class PosEmbedding(Op):
    name = "pos_embedding"
    aliases = ("positional",)
    family = "embedding"
    doc = ("Adds a learnt position vector to each step: x[t] + weight[t], weight (T, D) "
           "(GPT-2's wpe, ViT's pos_embedding); init 0.01 N(0, 1), or init=\"gpt2\": "
           "N(0, 0.02²).")
    args = (EMBED_INIT_ARG,)
    kernel = "pos_embedding"

    def shape(self, attrs, inputs):
        sequence_input(self, inputs)
        return inputs[0]

    def params(self, attrs, inputs):
        t, d = inputs[0]
        init = "normal" if attrs["init"] == "auto" else attrs["init"]
        return [ParamSpec("weight", (t, d), "param", init, t, d)]

    def torch_module(self, attrs, inputs):
        t, d = inputs[0]
        return f"nn.Embedding({t}, {d})"  # only its weight (T, D) is used: GPT-2's wpe

    def torch_forward(self, attrs, inputs, xs, module):
        return f"{xs[0]} + {module}.weight"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("Add", [xs[0], g.param("weight")])  # (T, D) broadcast over the batch

    def extra_flops(self, attrs, inputs, out):
        return math.prod(out)

    def describe(self, attrs):
        return "+ positions"


class Sinusoidal(Op):
    name = "sinusoidal"
    aliases = ("pos_sinusoidal",)
    family = "embedding"
    doc = ("Adds the fixed sinusoidal position table of Vaswani et al. 2017 (D even): "
           "sin(t / 10000^(2i/D)) at 2i, cos at 2i + 1.")
    kernel = "sinusoidal"

    def shape(self, attrs, inputs):
        _, d = sequence_input(self, inputs)
        if d % 2:
            raise ShapeError(f"sinusoidal positions need an even feature size, got {d}")
        return inputs[0]

    def torch_forward(self, attrs, inputs, xs, module):
        t, d = inputs[0]
        x = xs[0]
        angle = (f"torch.arange({t}, dtype={x}.dtype, device={x}.device)[:, None] "
                 f"* 10000.0 ** (-torch.arange(0, {d}, 2, dtype={x}.dtype, "
                 f"device={x}.device) / {d})")
        return (f"{x} + torch.stack([torch.sin({angle}), torch.cos({angle})], -1)"
                f".reshape({t}, {d})")

    def onnx(self, g, attrs, inputs, xs):
        from netspec.runtime.sequence import sinusoid_table  # NumPy only: the same table

        return g.node("Add", [xs[0], g.constant(sinusoid_table(*inputs[0]), "table")])

    def extra_flops(self, attrs, inputs, out):
        return math.prod(out)

    def describe(self, attrs):
        return "+ sinusoids"


class ClassToken(Op):
    name = "class_token"
    aliases = ("cls_token",)
    family = "embedding"
    doc = "Prepends a learnt token (ViT's [class]): [T, D] -> [T + 1, D]."
    kernel = "class_token"

    def shape(self, attrs, inputs):
        t, d = sequence_input(self, inputs)
        return (t + 1, d)

    def params(self, attrs, inputs):
        d = inputs[0][1]
        return [ParamSpec("token", (d,), "param", "normal", d, d)]

    def torch_module(self, attrs, inputs):
        return f"nn.ParameterDict({{'token': nn.Parameter(torch.zeros({inputs[0][1]}))}})"

    def torch_forward(self, attrs, inputs, xs, module):
        x = xs[0]
        return f"torch.cat([{module}.token.expand({x}.shape[0], 1, -1), {x}], 1)"

    def onnx(self, g, attrs, inputs, xs):
        # One row of the (1, D) token per sample: Gather with an [N, 1] index tensor of zeros
        # built from x's first column (x < x is false everywhere, NaN included), so shape
        # inference follows the dynamic batch axis (an Expand to Shape(x) would lose it).
        x = xs[0]
        column = g.node("Slice", [x, g.constant([0, 0], "starts"), g.constant([1, 1], "ends"),
                                  g.constant([1, 2], "axes")], suffix="column")
        never = g.node("Less", [column, column], suffix="never")
        zeros = g.node("Cast", [never], suffix="zeros", to=7)  # TensorProto.INT64
        row = g.node("Unsqueeze", [g.param("token"), g.constant([0], "row_axis")], suffix="row")
        tokens = g.node("Gather", [row, g.node("Squeeze", [zeros, g.constant([2], "axis")],
                                               suffix="index")], suffix="tokens", axis=0)
        return g.node("Concat", [tokens, x], axis=1)

    def describe(self, attrs):
        return "class token"


class Patches(Op):
    name = "patches"
    family = "reshape"
    spatial = True
    doc = ("Cuts [C, H, W] into non-overlapping p x p patches: [HW/p², C·p²], each patch "
           "flattened in (C, p, p) order, patches row by row. patches(p) -> linear(D) is ViT's "
           "conv(D, k=p, s=p) patch embedding.")
    args = (Arg("p", "posint", doc="patch size"),)
    kernel = "patches"

    def shape(self, attrs, inputs):
        c, h, w = spatial_input(self, inputs)
        p = attrs["p"]
        if h % p or w % p:
            raise ShapeError(f"{p}x{p} patches do not tile a {h}x{w} image",
                             f"choose a patch size dividing {h} and {w}")
        return ((h // p) * (w // p), c * p * p)

    def window(self, attrs, inputs):
        p = attrs["p"]
        return Window((p, p), (p, p), (0, 0))

    def kernel_args(self, attrs):
        return {"size": attrs["p"]}

    def torch_forward(self, attrs, inputs, xs, module):
        _, h, w = inputs[0]
        p = attrs["p"]
        return (f"{xs[0]}.unflatten(2, ({h // p}, {p})).unflatten(4, ({w // p}, {p}))"
                ".permute(0, 2, 4, 1, 3, 5).flatten(3).flatten(1, 2)")

    def onnx(self, g, attrs, inputs, xs):
        c, h, w = inputs[0]
        p = attrs["p"]
        grid = g.node("Reshape", [xs[0], g.constant([0, c, h // p, p, w // p, p], "grid_shape")],
                      suffix="grid")
        moved = g.node("Transpose", [grid], suffix="moved", perm=[0, 2, 4, 1, 3, 5])
        return g.node("Reshape", [moved, g.constant([0, (h // p) * (w // p), c * p * p],
                                                    "shape")])

    def describe(self, attrs):
        return f"patches {attrs['p']}x{attrs['p']}"


class _TimePool(Op):
    family = "pool"

    def shape(self, attrs, inputs):
        return (sequence_input(self, inputs)[1],)


class Mean(_TimePool):
    name = "mean"
    aliases = ("seq_mean", "mean_pool")
    doc = "Average over time: [T, D] -> [D]."
    kernel = "seq_mean"

    def time_reach(self, attrs, reach):
        return "all"

    def torch_forward(self, attrs, inputs, xs, module):
        return f"{xs[0]}.mean(1)"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("ReduceMean", [xs[0], g.constant([1], "axes")], keepdims=0)

    def extra_flops(self, attrs, inputs, out):
        return math.prod(inputs[0])

    def describe(self, attrs):
        return "mean over time"


class First(_TimePool):
    name = "first"
    doc = "The first step (ViT reads its class token there): [T, D] -> [D]."
    kernel = "seq_select"

    def kernel_args(self, attrs):
        return {"index": 0}

    def time_reach(self, attrs, reach):
        return "step" if reach in ("step", "past") else "all"  # step 0's past is step 0

    def torch_forward(self, attrs, inputs, xs, module):
        return f"{xs[0]}[:, 0]"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("Gather", [xs[0], g.constant(0, "index")], axis=1)

    def describe(self, attrs):
        return "first step"


class Last(_TimePool):
    name = "last"
    doc = "The last step: [T, D] -> [D]."
    kernel = "seq_select"

    def kernel_args(self, attrs):
        return {"index": -1}

    def time_reach(self, attrs, reach):
        return "step" if reach == "step" else "all"  # the last step's past is everything

    def torch_forward(self, attrs, inputs, xs, module):
        return f"{xs[0]}[:, -1]"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("Gather", [xs[0], g.constant(-1, "index")], axis=1)

    def describe(self, attrs):
        return "last step"


# ---- recurrences ------------------------------------------------------------------------------

class _Recurrent(Op):
    family = "recurrent"
    gates: int = 1  # weight rows per hidden unit: rnn 1, gru 3, lstm 4
    onnx_op = "RNN"
    # torch's gate blocks in ONNX's order (LSTM: torch i f g o, ONNX i o f c; GRU: torch
    # r z n, ONNX z r h)
    onnx_gates: tuple[int, ...] = (0,)
    onnx_attrs: tuple[tuple[str, int], ...] = ()  # attributes of the ONNX node
    args = (
        Arg("hidden", "posint", doc="hidden size H"),
        Arg("layers", "posint", 1, doc="stacked layers"),
        Arg("bidirectional", "bool", False, doc="a second direction reading the sequence "
                                               "backwards; outputs concatenated"),
        Arg("last", "bool", False, doc="return the final hidden state [H·dirs] instead of the "
                                       "whole sequence [T, H·dirs]"),
    )

    def dirs(self, attrs) -> int:
        return 2 if attrs["bidirectional"] else 1

    def time_reach(self, attrs, reach):
        # a forward recurrence carries every earlier step; a backward one every later step
        if attrs["bidirectional"] or attrs["last"]:
            return "all"
        return wider(reach, "past")

    def shape(self, attrs, inputs):
        t, _ = sequence_input(self, inputs)
        width = attrs["hidden"] * self.dirs(attrs)
        return (width,) if attrs["last"] else (t, width)

    def params(self, attrs, inputs):
        i_dim, h = inputs[0][1], attrs["hidden"]
        g = self.gates * h
        out = []
        for layer in range(attrs["layers"]):
            fan_in = i_dim if layer == 0 else h * self.dirs(attrs)
            for d in range(self.dirs(attrs)):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                out += [ParamSpec("weight_ih" + suffix, (g, fan_in), "param", "xavier", fan_in, g),
                        ParamSpec("weight_hh" + suffix, (g, h), "param", "xavier", h, g),
                        ParamSpec("bias_ih" + suffix, (g,), "param", "zeros", fan_in, g),
                        ParamSpec("bias_hh" + suffix, (g,), "param", "zeros", h, g)]
        return out

    def macs(self, attrs, inputs, out):
        t, i_dim = inputs[0]
        h, dirs = attrs["hidden"], self.dirs(attrs)
        total = 0
        for layer in range(attrs["layers"]):
            fan_in = i_dim if layer == 0 else h * dirs
            total += dirs * t * self.gates * h * (fan_in + h)
        return total

    def backward_macs(self, attrs, inputs, out):
        """(the first layer's input gradient, everything the weight gradients need): the
        weight products of every step, the hidden state's gradient through W_hh at T - 1
        steps (h before the first step is a constant) and the inner layers' input gradients,
        which the weights of the layers below need even when the op's input needs none
        (as torch's autograd computes them; checked with FlopCounterMode)."""
        t, i_dim = inputs[0]
        h, dirs, g = attrs["hidden"], self.dirs(attrs), self.gates * attrs["hidden"]
        dw = self.macs(attrs, inputs, out) + attrs["layers"] * dirs * (t - 1) * g * h
        dw += (attrs["layers"] - 1) * dirs * t * g * h * dirs
        return (dirs * t * g * i_dim, dw)

    def extra_flops(self, attrs, inputs, out):
        # gate nonlinearities and the elementwise state update, ~ 3 per gate element
        t = inputs[0][0]
        return 3 * attrs["layers"] * self.dirs(attrs) * t * self.gates * attrs["hidden"]

    def saved(self, attrs, inputs, out):
        t = inputs[0][0]
        h, dirs, layers = attrs["hidden"], self.dirs(attrs), attrs["layers"]
        per_cell = t * h  # each cell's outputs hs (lstm and gru add their gates below)
        # Two directions: each layer's [forward, backward] outputs are concatenated (the
        # next layer's input, or this op's output).
        joined = (layers - (0 if attrs["last"] else 1)) * t * 2 * h if dirs == 2 else 0
        return Saved(values=layers * dirs * per_cell + joined, keeps_input=True)

    def workspace(self, attrs, inputs, out, need_dx=True):
        t = inputs[0][0]
        # the input products x W_ih^T (forward) and the per-step gate gradients (backward)
        return 2 * t * self.gates * attrs["hidden"] * self.dirs(attrs)

    def kernel_args(self, attrs):
        return {"layers": attrs["layers"], "bidirectional": attrs["bidirectional"],
                "last": attrs["last"]}

    def torch_module(self, attrs, inputs):
        extra = f", num_layers={attrs['layers']}" if attrs["layers"] > 1 else ""
        extra += ", bidirectional=True" if attrs["bidirectional"] else ""
        return (f"nn.{self.name.upper()}({inputs[0][1]}, {attrs['hidden']}{extra}, "
                "batch_first=True)")

    def torch_forward(self, attrs, inputs, xs, module):
        out = f"{module}({xs[0]})[0]"
        if not attrs["last"]:
            return out
        h = attrs["hidden"]
        if not attrs["bidirectional"]:
            return f"{out}[:, -1]"
        # the forward direction's last step and the backward direction's first
        return f"torch.cat([{out}[:, -1, :{h}], {out}[:, 0, {h}:]], -1)"

    def onnx(self, g, attrs, inputs, xs):
        """ONNX's RNN/LSTM/GRU op per layer, time-major (onnxruntime runs layout 0 only), both
        directions in one node. The state dict's torch-layout tensors are reordered to ONNX's
        gate order in the graph (a Gather of rows), so the initializers keep torch's names
        and values. `last`: the final hidden state Y_h (the forward direction's last step, the
        backward direction's first), as the torch lowering takes it."""
        t = inputs[0][0]
        h, dirs, layers = attrs["hidden"], self.dirs(attrs), attrs["layers"]
        order = g.constant([b * h + k for b in self.onnx_gates for k in range(h)], "gate_rows") \
            if len(self.onnx_gates) > 1 else None
        axis0 = g.constant([0], "axis0")
        seq = g.node("Transpose", xs, suffix="time_major", perm=[1, 0, 2])  # [T, N, I]
        for layer in range(layers):
            stacked = {}
            for what in ("W", "R", "B"):
                parts = []
                for d in range(dirs):
                    suffix = f"_l{layer}" + ("_reverse" if d else "")
                    names = {"W": ["weight_ih"], "R": ["weight_hh"],
                             "B": ["bias_ih", "bias_hh"]}[what]
                    tensors = [g.param(n + suffix) for n in names]
                    if order is not None:
                        tensors = [g.node("Gather", [p, order], suffix=f"{n}{suffix}_onnx_gates",
                                          axis=0) for p, n in zip(tensors, names)]
                    if len(tensors) > 1:  # ONNX's B is [Wb, Rb]
                        tensors = [g.node("Concat", tensors, suffix=f"bias{suffix}", axis=0)]
                    parts.append(g.node("Unsqueeze", [tensors[0], axis0],
                                        suffix=f"{what}{suffix}_dir"))
                stacked[what] = parts[0] if dirs == 1 else \
                    g.node("Concat", parts, suffix=f"{what}_l{layer}", axis=0)
            final = layer == layers - 1
            outputs = [None if final and attrs["last"] else "Y",
                       "Y_h" if final and attrs["last"] else None]
            y, y_h = g.multi(self.onnx_op, [seq, stacked["W"], stacked["R"], stacked["B"]],
                             f"l{layer}", outputs, hidden_size=h,
                             direction="bidirectional" if dirs == 2 else "forward",
                             **dict(self.onnx_attrs))
            if final and attrs["last"]:  # Y_h [dirs, N, H] -> [N, dirs·H]
                moved = g.node("Transpose", [y_h], suffix="last_moved", perm=[1, 0, 2])
                return g.node("Reshape", [moved, g.constant([0, dirs * h], "shape")])
            if final:  # Y [T, dirs, N, H] -> [N, T, dirs·H]
                moved = g.node("Transpose", [y], suffix="moved", perm=[2, 0, 1, 3])
                return g.node("Reshape", [moved, g.constant([0, t, dirs * h], "shape")])
            # the next layer's input: [T, N, dirs·H]
            moved = g.node("Transpose", [y], suffix=f"l{layer}_moved", perm=[0, 2, 1, 3])
            seq = g.node("Reshape", [moved, g.constant([0, 0, dirs * h], f"l{layer}_shape")],
                         suffix=f"l{layer}_out")
        raise AssertionError("unreachable: layers >= 1")

    def describe(self, attrs):
        text = f"{self.name} {attrs['hidden']}"
        if attrs["layers"] > 1:
            text += f" x{attrs['layers']} layers"
        if attrs["bidirectional"]:
            text += ", bidirectional"
        return text + (", last step" if attrs["last"] else "")


class RNN(_Recurrent):
    name = "rnn"
    doc = "Elman RNN, h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) (nn.RNN)."
    kernel = "rnn"
    gates = 1


class LSTM(_Recurrent):
    name = "lstm"
    doc = "LSTM (nn.LSTM), gates i, f, g, o; weights (4H, ·)."
    kernel = "lstm"
    gates = 4
    onnx_op = "LSTM"
    onnx_gates = (0, 3, 1, 2)

    def saved(self, attrs, inputs, out):
        base = super().saved(attrs, inputs, out)
        t, h = inputs[0][0], attrs["hidden"]
        extra = attrs["layers"] * self.dirs(attrs) * t * 5 * h  # gates 4H + cell state H
        return Saved(values=base.values + extra, keeps_input=True)


class GRU(_Recurrent):
    name = "gru"
    doc = "GRU (nn.GRU), gates r, z, n; weights (3H, ·)."
    kernel = "gru"
    gates = 3
    onnx_op = "GRU"
    onnx_gates = (1, 0, 2)
    # torch applies r to (W_hn h + b_hn), ONNX's default to h before its product
    onnx_attrs = (("linear_before_reset", 1),)

    def saved(self, attrs, inputs, out):
        base = super().saved(attrs, inputs, out)
        t, h = inputs[0][0], attrs["hidden"]
        extra = attrs["layers"] * self.dirs(attrs) * t * 4 * h  # gates 3H + W_hn h + b_hn
        return Saved(values=base.values + extra, keeps_input=True)

    def workspace(self, attrs, inputs, out, need_dx=True):
        # the backward keeps two gate gradients (input and hidden products) and h_{t-1}
        t = inputs[0][0]
        return super().workspace(attrs, inputs, out, need_dx) \
            + 4 * t * attrs["hidden"] * self.dirs(attrs)


# ---- attention --------------------------------------------------------------------------------

# The torch form of netspec.runtime.sequence.alibi_bias, emitted once into a generated file
# whose attention uses ALiBi; built on the input's device (no host-to-GPU copy per call).
ALIBI_TORCH = '''def alibi_bias(heads: int, t: int, base: float, causal: bool, like: torch.Tensor
               ) -> torch.Tensor:
    """ALiBi (Press et al. 2022): (heads, t, t), what head h = 1..H adds to its scores at
    (i, j): -2^(-base h / H) |i - j|; causal: -inf above the diagonal as well."""
    on = {"device": like.device,
          "dtype": torch.float64 if like.dtype == torch.float64 else torch.float32}
    h = torch.arange(1, heads + 1, **on)
    i = torch.arange(t, **on)
    bias = -(2.0 ** (-base * h / heads))[:, None, None] * (i[:, None] - i[None, :]).abs()
    if causal:
        future = torch.ones(t, t, dtype=torch.bool, device=like.device).triu(1)
        bias = bias.masked_fill(future, float("-inf"))
    return bias.to(like.dtype)'''


class Attention(Op):
    name = "attention"
    aliases = ("self_attention", "mha")
    family = "attention"
    doc = ("Multi-head self-attention (nn.MultiheadAttention, query = key = value): "
           "softmax(Q Kᵀ / sqrt(D / heads)) V per head, then out_proj. causal: step t sees "
           "steps <= t. Costs grow with T²: Q Kᵀ and the weighted sum of V are T·T·D MACs each.")
    args = (
        Arg("heads", "posint", 1, doc="attention heads (D divisible by heads)"),
        Arg("causal", "bool", False, doc="mask the future: step t attends to steps <= t"),
        Arg("dropout", "prob", 0.0, doc="dropout on the attention weights at train time"),
        Arg("bias", "bool", True, doc="learn in_proj_bias and out_proj.bias"),
        Arg("alibi", "nonneg", 0.0, doc="ALiBi (Press et al. 2022): 0 = off; b > 0: head h "
            "of H adds -2^(-b h / H) |i - j| to its scores, so far steps weigh less (the "
            "paper's b is 8; smaller b, steeper slopes); a network using it needs no "
            "position embedding"),
        Arg("init", "choice", "auto", doc="in_proj_weight and out_proj.weight init; auto = "
            "xavier", choices=INIT_ARG.choices),
    )
    kernel = "attention"
    kernel_params = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
    torch_helper_defs = (ALIBI_TORCH,)
    uses_train = True
    uses_rng = True

    def shape(self, attrs, inputs):
        _, d = sequence_input(self, inputs)
        if d % attrs["heads"]:
            raise ShapeError(f"attention with {attrs['heads']} heads needs a feature size "
                             f"divisible by {attrs['heads']}, got {d}")
        return inputs[0]

    def params(self, attrs, inputs):
        d = inputs[0][1]
        init = "xavier" if attrs["init"] == "auto" else attrs["init"]
        out = [ParamSpec("in_proj_weight", (3 * d, d), "param", init, d, 3 * d)]
        if attrs["bias"]:
            out.append(ParamSpec("in_proj_bias", (3 * d,), "param", "zeros", d, 3 * d))
        out.append(ParamSpec("out_proj.weight", (d, d), "param", init, d, d))
        if attrs["bias"]:
            out.append(ParamSpec("out_proj.bias", (d,), "param", "zeros", d, d))
        return out

    def macs(self, attrs, inputs, out):
        t, d = inputs[0]
        # projections 3TD² + TD², then Q Kᵀ and weights @ V, T²D each (the full square is
        # computed even when causal: the masked half is set to -inf, not skipped)
        return 4 * t * d * d + 2 * t * t * d

    def backward_macs(self, attrs, inputs, out):
        # Only the input projection's input gradient (3TD²) serves x alone; out_proj's and
        # the four T²D products of Q Kᵀ and weights @ V serve the weights of in_proj too.
        t, d = inputs[0]
        both = 2 * self.macs(attrs, inputs, out)
        return (3 * t * d * d, both - 3 * t * d * d)

    def extra_flops(self, attrs, inputs, out):
        t, d = inputs[0]
        # scale, max-subtract and normalize per score (+ the ALiBi add), and the two biases
        per_score = 4 if attrs["alibi"] else 3
        return per_score * attrs["heads"] * t * t + (4 * d * t if attrs["bias"] else 0)

    def saved(self, attrs, inputs, out):
        t, d = inputs[0]
        heads = attrs["heads"]
        weights = heads * t * t * (2 if attrs["dropout"] > 0 else 1)  # softmax (+ keep mask)
        return Saved(values=3 * t * d + weights + t * d, keeps_input=True)  # q,k,v; ctx

    def workspace(self, attrs, inputs, out, need_dx=True):
        t, d = inputs[0]
        # dp, ds and dp * p (heads T²); dctx, dq, dk, dv, and dqkv stacked then transposed
        return 3 * attrs["heads"] * t * t + 10 * t * d

    def time_reach(self, attrs, reach):
        return wider(reach, "past") if attrs["causal"] else "all"

    def kernel_args(self, attrs):
        alibi = {"alibi": attrs["alibi"]} if attrs["alibi"] else {}
        return {"heads": attrs["heads"], "causal": attrs["causal"], "dropout": attrs["dropout"],
                **alibi}

    def torch_module(self, attrs, inputs):
        d = inputs[0][1]
        extra = f", dropout={attrs['dropout']!r}" if attrs["dropout"] else ""
        extra += ", bias=False" if not attrs["bias"] else ""
        return f"nn.MultiheadAttention({d}, {attrs['heads']}{extra}, batch_first=True)"

    def torch_forward(self, attrs, inputs, xs, module):
        x, t = xs[0], inputs[0][0]
        if attrs["alibi"]:  # a float mask per head: (N heads, T, T), batch-major as torch's
            mask = (f", attn_mask=alibi_bias({attrs['heads']}, {t}, {attrs['alibi']!r}, "
                    f"{attrs['causal']}, {x}).repeat({x}.shape[0], 1, 1)")
        elif attrs["causal"]:
            mask = (f", attn_mask=torch.ones({t}, {t}, dtype=torch.bool, device={x}.device)"
                    ".triu(1)")
        else:
            mask = ""
        return f"{module}({x}, {x}, {x}, need_weights=False{mask})[0]"

    def torch_helpers(self, attrs):
        return self.torch_helper_defs if attrs["alibi"] else ()

    def onnx(self, g, attrs, inputs, xs):
        """MatMul/Softmax per head, as nn.MultiheadAttention computes it in eval mode (no
        dropout): the causal mask adds -inf above the diagonal before the softmax."""
        t, d = inputs[0]
        heads = attrs["heads"]
        dh = d // heads
        bias = attrs["bias"]
        qkv = g.matmul(xs[0], g.param("in_proj_weight"),
                       g.param("in_proj_bias") if bias else None, suffix="qkv")
        split = g.node("Reshape", [qkv, g.constant([0, t, 3, heads, dh], "heads_shape")],
                       suffix="qkv_split")
        qkv_heads = g.node("Transpose", [split], suffix="qkv_heads", perm=[2, 0, 3, 1, 4])
        q, k, v = (g.node("Gather", [qkv_heads, g.constant(i, f"{name}_index")], suffix=name,
                          axis=0) for i, name in enumerate("qkv"))  # [N, heads, T, dh] each
        k_t = g.node("Transpose", [k], suffix="k_t", perm=[0, 1, 3, 2])
        scores = g.node("Mul", [g.node("MatMul", [q, k_t], suffix="qk"),
                                g.constant(1 / math.sqrt(dh), "scale")], suffix="scores")
        if attrs["alibi"]:  # the distance penalty per head (and the causal mask), broadcast
            import numpy as np

            from netspec.runtime.sequence import alibi_bias
            penalty = alibi_bias(heads, t, attrs["alibi"], attrs["causal"], np.dtype("float32"))
            scores = g.node("Add", [scores, g.constant(penalty, "alibi_bias")], suffix="masked")
        elif attrs["causal"]:
            future = [[-math.inf if j > i else 0.0 for j in range(t)] for i in range(t)]
            scores = g.node("Add", [scores, g.constant(future, "causal_mask")],
                            suffix="masked")
        weights = g.node("Softmax", [scores], suffix="weights", axis=-1)
        ctx = g.node("MatMul", [weights, v], suffix="context")
        moved = g.node("Transpose", [ctx], suffix="context_moved", perm=[0, 2, 1, 3])
        joined = g.node("Reshape", [moved, g.constant([0, t, d], "context_shape")],
                        suffix="context_joined")
        return g.matmul(joined, g.param("out_proj.weight"),
                        g.param("out_proj.bias") if bias else None)

    def describe(self, attrs):
        text = f"attention {attrs['heads']} head" + ("s" if attrs["heads"] > 1 else "")
        return text + (", causal" if attrs["causal"] else "") + (
            ", ALiBi" if attrs["alibi"] else "")


OPS = [Embedding(), PosEmbedding(), Sinusoidal(), ClassToken(), Patches(), Mean(), First(),
       Last(), RNN(), LSTM(), GRU(), Attention()]
