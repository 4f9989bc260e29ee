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

    def workspace_fixed(self, attrs, inputs, out, batch, need_dx=True):
        # Weight-sized: the flipped weight of dx as a convolution (stride 1), and the
        # weight-gradient product of each chunk after the first before it is added in.
        if self._pointwise(attrs):
            return 0
        kh, kw = attrs["k"]
        weight = out[0] * inputs[0][0] // attrs["groups"] * kh * kw
        as_conv = attrs["s"] == (1, 1) and all(
            d * (k - 1) >= p for k, d, p in zip(attrs["k"], attrs["d"], attrs["p"]))
        return weight * ((need_dx and as_conv) + (batch > self.workspace_samples(attrs, batch)))

    def forward_workspace(self, attrs, inputs, out):
        if self._pointwise(attrs):
            return 0
        # The columns and the GEMM's channels-first result before it is copied into the
        # output (the padded input, alive only while im2col copies it, is left out: sums
        # of sizes keep the symbolic estimate a polynomial).
        cols, _ = self._columns(attrs, inputs, out)
        return cols + math.prod(out)

    def workspace(self, attrs, inputs, out, need_dx=True):
        c_in, h, w = inputs[0]
        c_out, oh, ow = out
        kh, kw = attrs["k"]
        if self._pointwise(attrs):
            # dw: the per-sample products [C_out, C_in], or channels-first copies of dout
            # and x when C_out > H*W; dx comes straight out of its GEMM.
            return select(c_out <= h * w, c_out * c_in, (c_out + c_in) * h * w)
        # dw: the columns built again and dout with channels first beside them.
        cols, _ = self._columns(attrs, inputs, out)
        dout_cn = c_out * oh * ow
        if not need_dx:
            return cols + dout_cn
        full_pad = [d * (k - 1) - p for k, d, p in zip(attrs["k"], attrs["d"], attrs["p"])]
        if attrs["s"] == (1, 1) and min(full_pad) >= 0:
            # Then dx as a convolution of the padded dout: its im2col and the GEMM result
            # before it is copied. The larger stage by its channels (equal maps at "same"
            # padding), so the estimate stays a polynomial in symbolic sizes.
            larger_dw = c_in * kh * kw + c_out >= c_out * kh * kw + c_in
            return cols + dout_cn if larger_dw else c_out * kh * kw * h * w + c_in * h * w
        # dx by col2im: the column gradients beside dout, then the padded dx.
        ph, pw = attrs["p"]
        return cols + dout_cn + c_in * (h + 2 * ph) * (w + 2 * pw)

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
