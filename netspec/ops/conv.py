"""Ops `conv` (2-D convolution with stride, padding or "same", dilation, groups and bias) and
`conv_transpose` (its transpose, PyTorch's ConvTranspose2d)."""
from __future__ import annotations

import math

from netspec.ops.base import (
    INIT_ARG,
    Arg,
    ArgError,
    Op,
    ParamSpec,
    Saved,
    ShapeError,
    Window,
    floordiv,
    fmt_pair,
    is_symbolic,
    kernel_label,
    mod,
    note_rows,
    require,
    select,
    spatial_input,
    torch_pair,
    window_out,
)

# The arguments conv and conv_transpose end with, in this order (positional calls rely on it).
GROUPED_TAIL = (
    Arg("d", "pair", 1, doc="dilation"),
    Arg("groups", "posint", 1, doc="channel groups; must divide in and out channels"),
    Arg("bias", "bool", True, doc="learn a per-channel bias"),
    INIT_ARG,
)


class Conv(Op):
    name = "conv"
    aliases = ("conv2d",)
    family = "conv"
    doc = "2-D convolution over a [C, H, W] input; weight [out, C/groups, kh, kw]."
    args = (
        Arg("out", "posint", doc="output channels"),
        Arg("k", "pair", doc="kernel size: 3 or [3, 1]"),
        Arg("s", "pair", 1, doc="stride"),
        Arg("p", "pad", 0, doc='zero padding per side, or "same" (stride 1, odd kernel)'),
        *GROUPED_TAIL,
    )
    kernel = "conv2d"
    spatial = True

    def normalize(self, attrs):
        if attrs["p"] == "same":
            eff = [d * (k - 1) for k, d in zip(attrs["k"], attrs["d"])]
            if attrs["s"] != (1, 1) or any(e % 2 for e in eff):
                raise ArgError('p="same" needs stride 1 and an odd (dilated) kernel',
                               "give the padding explicitly, e.g. p=1", arg="p")
            attrs["p"] = (eff[0] // 2, eff[1] // 2)
        if attrs["out"] % attrs["groups"]:
            raise ArgError(f"groups={attrs['groups']} does not divide out={attrs['out']}",
                           arg="groups")
        return attrs

    def _out_hw(self, attrs, h, w):
        return tuple(window_out(n, k, s, p, d) for n, k, s, p, d in
                     zip((h, w), attrs["k"], attrs["s"], attrs["p"], attrs["d"]))

    def shape(self, attrs, inputs):
        c, h, w = spatial_input(self, inputs)
        if c % attrs["groups"]:
            raise ShapeError(f"groups={attrs['groups']} does not divide the {c} input channels")
        oh, ow = self._out_hw(attrs, h, w)

        def too_small() -> ShapeError:
            span = [d * (k - 1) + 1 for k, d in zip(attrs["k"], attrs["d"])]
            dilated = f" (dilated to {span[0]}x{span[1]})" if attrs["d"] != (1, 1) else ""
            ph, pw = attrs["p"]
            return ShapeError(f"a {kernel_label(attrs['k'])} kernel{dilated} does not fit the "
                              f"{h}x{w} input padded to {h + 2 * ph}x{w + 2 * pw}",
                              "use a smaller kernel, more padding, or a larger input")

        require(too_small, oh >= 1, ow >= 1)
        return (attrs["out"], oh, ow)

    def shape_warnings(self, attrs, inputs):
        return _dropped_rows(attrs["k"], attrs["s"], attrs["p"], attrs["d"], inputs[0][1:])

    def params(self, attrs, inputs):
        c_in = inputs[0][0]
        kh, kw = attrs["k"]
        fan_in = c_in // attrs["groups"] * kh * kw
        fan_out = attrs["out"] // attrs["groups"] * kh * kw
        out = [ParamSpec("weight", (attrs["out"], c_in // attrs["groups"], kh, kw), "param",
                         "he" if attrs["init"] == "auto" else attrs["init"], fan_in, fan_out)]
        if attrs["bias"]:
            out.append(ParamSpec("bias", (attrs["out"],), "param", "zeros", fan_in, fan_out))
        return out

    def macs(self, attrs, inputs, out):
        kh, kw = attrs["k"]
        return out[0] * out[1] * out[2] * (inputs[0][0] // attrs["groups"]) * kh * kw

    def extra_flops(self, attrs, inputs, out):
        return out[0] * out[1] * out[2] if attrs["bias"] else 0

    def dot_products(self, attrs, inputs, out):
        return out[0] * out[1] * out[2]

    def bias_elements(self, attrs, inputs, out):
        return self.extra_flops(attrs, inputs, out)

    def window(self, attrs, inputs):
        k = tuple(d * (k - 1) + 1 for k, d in zip(attrs["k"], attrs["d"]))
        return Window(k, attrs["s"], attrs["p"])

    @staticmethod
    def _pointwise(attrs) -> bool:
        """1x1, stride 1, no padding, one group: the runtime's GEMM-per-sample path."""
        return attrs["k"] == (1, 1) and attrs["s"] == (1, 1) and attrs["p"] == (0, 0) \
            and attrs["groups"] == 1

    def saved(self, attrs, inputs, out):
        # The input (the backward builds the im2col columns again; a pointwise conv has none).
        return Saved(keeps_input=True)

    def workspace_samples(self, attrs, batch):
        # netspec.runtime.layers works through the batch CONV_CHUNK samples at a time.
        from netspec.runtime.layers import CONV_CHUNK

        return batch if self._pointwise(attrs) else min(batch, CONV_CHUNK)

    def _columns(self, attrs, inputs, out):
        """(im2col columns C_in*KH*KW*OH*OW, the zero-padded input) per sample."""
        c_in, h, w = inputs[0]
        kh, kw = attrs["k"]
        ph, pw = attrs["p"]
        padded = c_in * (h + 2 * ph) * (w + 2 * pw) if ph or pw else 0
        return c_in * kh * kw * out[1] * out[2], padded

    @staticmethod
    def _winograd(attrs, c_in, c_out, size):
        """Whether the runtime computes a conv (c_in -> c_out channels, output map `size`)
        by Winograd F(2x2, 3x3): netspec.runtime.winograd's rule, which the analyzer
        follows. A bool, or for a symbolic map a SymPy condition on it (the rule's map
        size); symbolic channels: False (im2col)."""
        from netspec.runtime import winograd as wg

        if is_symbolic(c_in) or is_symbolic(c_out) or not wg.winograd_applies(
                (c_out, c_in, *attrs["k"]), attrs["s"], attrs["d"], attrs["groups"],
                (wg.WINOGRAD_MIN_PIXELS, 1)):
            return False  # (the map checked apart, below)
        return wg.WINOGRAD_FORCE or size[0] * size[1] >= wg.WINOGRAD_MIN_PIXELS

    @staticmethod
    def _tiles(size):
        """16 * TH * TW: the elements per channel of one sample's transformed tiles (4x4
        per 2x2 outputs, an odd size rounded up)."""
        return 16 * floordiv(size[0] + 1, 2) * floordiv(size[1] + 1, 2)

    @staticmethod
    def _as_conv(attrs) -> bool:
        """dx of a stride-1 conv with P <= D*(K-1) is a convolution of the padded dout."""
        return attrs["s"] == (1, 1) and all(
            d * (k - 1) >= p for k, d, p in zip(attrs["k"], attrs["d"], attrs["p"]))

    def workspace_fixed(self, attrs, inputs, out, batch, need_dx=True):
        # Weight-sized: the flipped weight of dx as a convolution (stride 1), and the
        # weight-gradient product of each chunk after the first before it is added in.
        # Winograd: the weight gradient is accumulated as dU (16 x C_out x C_in, 16/9 of
        # the weight) and so is a later chunk's product; dx's transformed filters, 16/9.
        if self._pointwise(attrs):
            return 0
        kh, kw = attrs["k"]
        c_in, c_out = inputs[0][0], out[0]
        weight = c_out * c_in // attrs["groups"] * kh * kw
        later = batch > self.workspace_samples(attrs, batch)
        as_conv = need_dx and self._as_conv(attrs)
        transformed = 16 * c_out * c_in
        wino = self._winograd(attrs, c_in, c_out, out[1:])
        wino_dx = self._winograd(attrs, c_out, c_in, inputs[0][1:]) if as_conv else False
        if wino_dx == wino:  # one condition (P = 1, or both decided)
            return weight * as_conv + select(wino, transformed * (2 + later), weight * later)
        return weight * as_conv + select(wino_dx, transformed, 0) \
            + select(wino, transformed * (1 + later), weight * later)

    def forward_workspace(self, attrs, inputs, out):
        if self._pointwise(attrs):
            return 0
        c_in, c_out = inputs[0][0], out[0]
        # im2col: the columns and the GEMM's channels-first result before it is copied into
        # the output (the padded input, alive only while im2col copies it, is left out:
        # sums of sizes keep the symbolic estimate a polynomial).
        cols, _ = self._columns(attrs, inputs, out)
        return select(self._winograd(attrs, c_in, c_out, out[1:]),
                      _winograd_conv(c_in, c_out) * self._tiles(out[1:]),
                      cols + math.prod(out))

    def workspace(self, attrs, inputs, out, need_dx=True):
        c_in, h, w = inputs[0]
        c_out, oh, ow = out
        kh, kw = attrs["k"]
        if self._pointwise(attrs):
            # dw: the per-sample products [C_out, C_in], or channels-first copies of dout
            # and x when C_out > H*W; dx comes straight out of its GEMM.
            return select(c_out <= h * w, c_out * c_in, (c_out + c_in) * h * w)
        # dw by im2col: the columns built again and dout with channels first beside them.
        # By Winograd: V built again (the tiles beside it while it is made), then dout's
        # 2x2 tiles (1/4 C_out) and their transform dM (C_out) beside V.
        cols, _ = self._columns(attrs, inputs, out)
        wino_dw = max(2 * c_in, c_in + c_out + c_out // 4)  # per tile element
        dw = [(cols + c_out * oh * ow, c_in * kh * kw + c_out),
              (wino_dw * self._tiles(out[1:]), 4 * wino_dw)]  # (bytes, per output pixel)
        wino = self._winograd(attrs, c_in, c_out, out[1:])
        if not need_dx:
            return select(wino, dw[1][0], dw[0][0])
        if not self._as_conv(attrs):
            # dx by col2im: the column gradients beside dout, then the padded dx.
            ph, pw = attrs["p"]
            return select(wino, dw[1][0], dw[0][0]) + c_in * (h + 2 * ph) * (w + 2 * pw)
        # dx as a convolution of the padded dout: its im2col and the GEMM result before it
        # is copied, or its Winograd conv (C_out -> C_in).
        dx = [(c_out * kh * kw * h * w + c_in * h * w, c_out * kh * kw + c_in),
              (_winograd_conv(c_out, c_in) * self._tiles((h, w)),
               4 * _winograd_conv(c_out, c_in))]
        wino_dx = self._winograd(attrs, c_out, c_in, inputs[0][1:])

        def larger(a, b):
            # The larger stage by its channels (maps are about equal at "same" padding),
            # so the estimate stays a polynomial in symbolic sizes.
            return a[0] if a[1] >= b[1] else b[0]

        if wino_dx == wino:  # the same map (P = 1) or both decided: one condition
            return select(wino, larger(dw[1], dx[1]), larger(dw[0], dx[0]))
        return select(wino, select(wino_dx, larger(dw[1], dx[1]), larger(dw[1], dx[0])),
                      select(wino_dx, larger(dw[0], dx[1]), larger(dw[0], dx[0])))

    def kernel_args(self, attrs):
        return {"stride": attrs["s"], "padding": attrs["p"], "dilation": attrs["d"],
                "groups": attrs["groups"]}

    def torch_module(self, attrs, inputs):
        args = [str(inputs[0][0]), str(attrs["out"]), torch_pair(attrs["k"])]
        args += _torch_options(attrs, s="stride", p="padding", d="dilation")
        if attrs["groups"] != 1:
            args.append(f"groups={attrs['groups']}")
        if not attrs["bias"]:
            args.append("bias=False")
        return f"nn.Conv2d({', '.join(args)})"

    def torch_forward(self, attrs, inputs, xs, module):
        return f"{module}({xs[0]})"

    def onnx(self, g, attrs, inputs, xs):
        return _onnx_conv(g, "Conv", attrs, xs)

    def describe(self, attrs):
        return _describe("conv", attrs)


def _larger(a, b):
    """max(a, b) of sizes that may be SymPy expressions."""
    return select(a >= b, a, b)


def _winograd_conv(c_in: int, c_out: int) -> int:
    """Per tile element, the largest stage of a Winograd conv (netspec.runtime.winograd):
    the copied tiles and their transform V (2 C_in), V and the GEMM result M (C_in + C_out),
    M and the transformed output (5/4 C_out)."""
    return max(2 * c_in, c_in + c_out, c_out + c_out // 4)


def _torch_options(attrs, **names: str) -> list[str]:
    """`stride=2`-style keyword arguments for the pair-valued attrs that are not torch's
    default (stride 1, padding 0, dilation 1)."""
    defaults = {"s": (1, 1), "p": (0, 0), "d": (1, 1), "out_pad": (0, 0)}
    return [f"{torch_name}={torch_pair(attrs[key])}" for key, torch_name in names.items()
            if attrs[key] != defaults[key]]


def _dropped_rows(k, s, p, d, hw, ceil_mode=False):
    """Warn where (H + 2P - F) / S is not an integer and the rows/columns it leaves over at
    the end are input, not padding.

    Only when windows tile the input (F >= S): a window smaller than its stride skips rows
    everywhere by design, so the last one is no loss of its own."""
    if ceil_mode:
        return []
    lost = {}
    for axis, n, kk, ss, pp, dd in zip(("row", "column"), hw, k, s, p, d):
        span = dd * (kk - 1) + 1
        if span < ss:
            continue
        rest = mod(n + 2 * pp - span, ss)  # padded rows past the last window
        if is_symbolic(rest):  # a condition on the size, for the symbolic analysis
            note_rows(rest <= pp, f"the last {axis}s of the input are never read unless "
                      f"({n} + {2 * pp} - {span}) mod {ss} <= {pp}")
            continue
        if rest > pp:  # some of them are input rather than padding
            lost[axis] = (f"({n} + {2 * pp} - {span}) / {ss}", rest - pp)
    if not lost:
        return []
    if len(lost) == 2 and lost["row"] == lost["column"]:
        formula, n_lost = lost["row"]
        what = "row and column" if n_lost == 1 else f"{n_lost} rows and columns"
        return [(f"(H + 2P - F) / S = {formula} is not an integer: the last {what} of the "
                 f"{hw[0]}x{hw[1]} input are never read")]
    messages = []
    for axis, (formula, n_lost) in lost.items():
        what, verb = (axis, "is") if n_lost == 1 else (f"{n_lost} {axis}s", "are")
        messages.append(f"(H + 2P - F) / S = {formula} is not an integer: the last {what} of "
                        f"the {hw[0]}x{hw[1]} input {verb} never read")
    return messages


def _onnx_conv(g, op_type: str, attrs, xs, **extra) -> str:
    """An ONNX Conv or ConvTranspose node with the arguments both ops share."""
    ph, pw = attrs["p"]
    params = [g.param("weight")] + ([g.param("bias")] if attrs["bias"] else [])
    return g.node(op_type, [xs[0], *params], kernel_shape=list(attrs["k"]),
                  strides=list(attrs["s"]), pads=[ph, pw, ph, pw],
                  dilations=list(attrs["d"]), group=attrs["groups"], **extra)


class ConvTranspose(Op):
    name = "conv_transpose"
    aliases = ("conv_transpose2d", "convtranspose2d", "deconv")
    family = "conv"
    doc = ("Transposed 2-D convolution (PyTorch ConvTranspose2d, the gradient of conv): "
           "OH = (H - 1)*S - 2P + D*(K - 1) + out_pad + 1; weight [C, out/groups, kh, kw].")
    args = (
        Arg("out", "posint", doc="output channels"),
        Arg("k", "pair", doc="kernel size"),
        Arg("s", "pair", 1, doc="stride (the upsampling factor)"),
        Arg("p", "pad", 0, doc="rows and columns cropped from each side of the output"),
        Arg("out_pad", "pad", 0, doc="rows/columns added at the bottom/right (output_padding)"),
        *GROUPED_TAIL,
    )
    kernel = "conv_transpose2d"
    spatial = True

    def normalize(self, attrs):
        for name in ("p", "out_pad"):
            if attrs[name] == "same":
                raise ArgError(f'`{name}` of conv_transpose takes a number, not "same"',
                               arg=name)
        if any(o >= s and o >= d for o, s, d in zip(attrs["out_pad"], attrs["s"], attrs["d"])):
            raise ArgError("`out_pad` must be smaller than the stride or the dilation "
                           "(PyTorch's rule)", arg="out_pad")
        if attrs["out"] % attrs["groups"]:
            raise ArgError(f"groups={attrs['groups']} does not divide out={attrs['out']}",
                           arg="groups")
        return attrs

    def shape(self, attrs, inputs):
        c, h, w = spatial_input(self, inputs)
        if c % attrs["groups"]:
            raise ShapeError(f"groups={attrs['groups']} does not divide the {c} input channels")
        oh, ow = ((n - 1) * s - 2 * p + d * (k - 1) + o + 1 for n, k, s, p, o, d in
                  zip((h, w), attrs["k"], attrs["s"], attrs["p"], attrs["out_pad"], attrs["d"]))
        require(lambda: ShapeError(f"padding {fmt_pair(attrs['p'])} crops the whole output "
                                   f"of the {h}x{w} input", "use less padding"),
                oh >= 1, ow >= 1)
        return (attrs["out"], oh, ow)

    def params(self, attrs, inputs):
        c_in = inputs[0][0]
        kh, kw = attrs["k"]
        g = attrs["groups"]
        # Each output sees about C/groups * K*K / S*S inputs: He's fan-in.
        fan_in = max(1, c_in // g * kh * kw // (attrs["s"][0] * attrs["s"][1]))
        fan_out = attrs["out"] // g * kh * kw
        out = [ParamSpec("weight", (c_in, attrs["out"] // g, kh, kw), "param",
                         "he" if attrs["init"] == "auto" else attrs["init"], fan_in, fan_out)]
        if attrs["bias"]:
            out.append(ParamSpec("bias", (attrs["out"],), "param", "zeros", fan_in, fan_out))
        return out

    def macs(self, attrs, inputs, out):
        # Every input pixel times every weight of its group (fvcore's count): C*out/g*K*K*H*W.
        c, h, w = inputs[0]
        kh, kw = attrs["k"]
        return c * (attrs["out"] // attrs["groups"]) * kh * kw * h * w

    def extra_flops(self, attrs, inputs, out):
        return math.prod(out) if attrs["bias"] else 0

    def window(self, attrs, inputs):
        # Output unit y sums the inputs x with x*S + i*D = y + P: at most ceil(K_eff / S)
        # of them, centred at (y + P - (K_eff - 1)/2) / S input units. As a window on the
        # input grid: that many taps, a stride of 1/S, and the padding that puts unit 0's
        # centre there (an upper bound where S does not divide K_eff, as for adaptive pools).
        kernel, stride, padding = [], [], []
        for k, s, p, d in zip(attrs["k"], attrs["s"], attrs["p"], attrs["d"]):
            eff = d * (k - 1) + 1
            taps = -(-eff // s)
            kernel.append(taps)
            stride.append(1 / s)
            padding.append((taps - 1) / 2 - (p - (eff - 1) / 2) / s)
        return Window(tuple(kernel), tuple(stride), tuple(padding))

    def saved(self, attrs, inputs, out):
        return Saved(keeps_input=True)  # x, for the weight gradient

    def workspace(self, attrs, inputs, out, need_dx=True):
        # dout padded to the uncropped output, its im2col [out*K*K, H*W], x channels first.
        c, h, w = inputs[0]
        kh, kw = attrs["k"]
        full = [_larger((n - 1) * s + d * (k - 1) + 1, o + p) + p for n, s, d, k, o, p in
                zip((h, w), attrs["s"], attrs["d"], attrs["k"], out[1:], attrs["p"])]
        return attrs["out"] * (full[0] * full[1] + kh * kw * h * w) + c * h * w

    def kernel_args(self, attrs):
        return {"stride": attrs["s"], "padding": attrs["p"], "output_padding": attrs["out_pad"],
                "dilation": attrs["d"], "groups": attrs["groups"]}

    def torch_module(self, attrs, inputs):
        args = [str(inputs[0][0]), str(attrs["out"]), torch_pair(attrs["k"])]
        args += _torch_options(attrs, s="stride", p="padding", out_pad="output_padding")
        if attrs["groups"] != 1:
            args.append(f"groups={attrs['groups']}")
        if not attrs["bias"]:
            args.append("bias=False")
        args += _torch_options(attrs, d="dilation")
        return f"nn.ConvTranspose2d({', '.join(args)})"

    def torch_forward(self, attrs, inputs, xs, module):
        return f"{module}({xs[0]})"

    def onnx(self, g, attrs, inputs, xs):
        return _onnx_conv(g, "ConvTranspose", attrs, xs, output_padding=list(attrs["out_pad"]))

    def describe(self, attrs):
        return _describe("conv_transpose", attrs)


def _describe(name: str, attrs) -> str:
    """The diagram label: `conv 3x3/2, 64 d2 g4` (stride, dilation, groups when not 1)."""
    text = f"{name} {kernel_label(attrs['k'])}"
    if attrs["s"] != (1, 1):
        text += f"/{fmt_pair(attrs['s'])}"
    text += f", {attrs['out']}"
    if attrs["d"] != (1, 1):
        text += f" d{fmt_pair(attrs['d'])}"
    if attrs["groups"] != 1:
        text += f" g{attrs['groups']}"
    return text


OPS = [Conv(), ConvTranspose()]
