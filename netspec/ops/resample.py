"""Ops `upsample` (nearest or bilinear, PyTorch nn.Upsample) and `pad` (zero or constant
padding, per side, PyTorch ZeroPad2d / ConstantPad2d) over [C, H, W] inputs."""
from __future__ import annotations

import fractions
import math

from netspec.ops.base import (
    Arg,
    ArgError,
    Op,
    Saved,
    ShapeError,
    Window,
    floordiv,
    require,
    spatial_input,
)


class Upsample(Op):
    name = "upsample"
    aliases = ("interpolate", "resize")
    family = "resample"
    spatial = True
    doc = ("Resize by `scale` (output floor(H*scale)) or to `size`, as PyTorch nn.Upsample: "
           'mode "nearest" copies input pixel floor(y/scale); "bilinear" interpolates the '
           "two nearest rows and columns (align_corners=false by default, PyTorch's default).")
    args = (
        Arg("scale", "scale", None, doc="scale factor: a number or [h, w]"),
        Arg("size", "pair", None, doc="output size [h, w] (instead of scale)"),
        Arg("mode", "choice", "nearest", choices=("nearest", "bilinear")),
        Arg("align_corners", "bool", False,
            doc="bilinear: map corner pixels onto corner pixels"),
    )
    kernel = "upsample"

    def normalize(self, attrs):
        if (attrs["scale"] is None) == (attrs["size"] is None):
            raise ArgError("upsample needs exactly one of `scale` and `size`",
                           "e.g. upsample(2) or upsample(size=[28, 28])", arg="scale")
        if attrs["align_corners"] and attrs["mode"] != "bilinear":
            raise ArgError("`align_corners` applies to bilinear mode only", arg="align_corners")
        return attrs

    def _out_hw(self, attrs, h, w):
        if attrs["size"] is not None:
            return attrs["size"]
        return tuple(_scaled(n, f) for n, f in zip((h, w), attrs["scale"]))

    def shape(self, attrs, inputs):
        c, h, w = spatial_input(self, inputs)
        oh, ow = self._out_hw(attrs, h, w)
        require(lambda: ShapeError(f"scale {list(attrs['scale'])} leaves nothing of the "
                                   f"{h}x{w} input"), oh >= 1, ow >= 1)
        return (c, oh, ow)

    def window(self, attrs, inputs):
        # Output unit y reads one input pixel (nearest) or two neighbours (bilinear), about
        # y/scale; adjacent outputs are 1/scale input pixels apart.
        taps = 2 if attrs["mode"] == "bilinear" else 1
        _, h, w = inputs[0]
        out = self._out_hw(attrs, h, w)
        jump = tuple(n / o for n, o in zip((h, w), out)) if attrs["size"] is not None else \
            tuple(1 / f for f in attrs["scale"])
        return Window((taps, taps), jump, (0, 0))

    def extra_flops(self, attrs, inputs, out):
        # bilinear: two multiplies and an add per axis per output; nearest copies
        return 6 * math.prod(out) if attrs["mode"] == "bilinear" else 0

    def saved(self, attrs, inputs, out):
        _, h, w = inputs[0]
        return Saved(values=out[1] * h + out[2] * w)  # the two interpolation matrices

    def workspace(self, attrs, inputs, out, need_dx=True):
        c, h, _ = inputs[0]
        return c * h * out[2]  # A_h^T @ dout before it meets A_w

    def kernel_args(self, attrs):
        return {"scale": attrs["scale"], "size": attrs["size"], "mode": attrs["mode"],
                "align_corners": attrs["align_corners"]}

    def torch_forward(self, attrs, inputs, xs, module):
        # F.interpolate computes what the kernel does: nearest's floor(y / scale) in float32,
        # bilinear's half-pixel sources (or corners), from scale_factor or size.
        args = [xs[0]]
        if attrs["size"] is not None:
            args.append(f"size={tuple(attrs['size'])!r}")
        else:
            args.append(f"scale_factor={tuple(attrs['scale'])!r}")
        args.append(f"mode={attrs['mode']!r}")
        if attrs["mode"] == "bilinear":
            args.append(f"align_corners={attrs['align_corners']!r}")
        return f"F.interpolate({', '.join(args)})"

    def onnx(self, g, attrs, inputs, xs):
        if attrs["mode"] == "nearest":  # PyTorch's legacy nearest: floor(y / scale)
            options = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                       "nearest_mode": "floor"}
        else:
            options = {"mode": "linear", "coordinate_transformation_mode":
                       "align_corners" if attrs["align_corners"] else "pytorch_half_pixel"}
        scales = attrs["scale"]
        if attrs["size"] is not None:
            exact = [fractions.Fraction(o, n) for o, n in zip(attrs["size"], inputs[0][1:])]
            if all(float(f) == f for f in exact):  # a binary fraction: the scale is exact
                scales = tuple(float(f) for f in exact)
        if scales is None:  # sizes of all four axes: the input's N, C, then ours
            shape = g.node("Shape", [xs[0]], suffix="shape")
            n_c = g.node("Slice", [shape, g.constant([0], "start"), g.constant([2], "end")],
                         suffix="n_c")
            sizes = g.node("Concat", [n_c, g.constant(list(attrs["size"]), "hw")], axis=0,
                           suffix="sizes")
            return g.node("Resize", [xs[0], "", "", sizes], **options)
        return g.node("Resize", [xs[0], "", g.constant([1.0, 1.0, *scales], "scales")],
                      **options)

    def describe(self, attrs):
        how = (f"x{_num(attrs['scale'])}" if attrs["scale"] is not None
               else f"to {attrs['size'][0]}x{attrs['size'][1]}")
        return f"upsample {how} {attrs['mode']}"


def _scaled(n, f: float):
    """floor(n * f), PyTorch's output size, for an int or SymPy size n: exact, as the scale's
    float value (1.5 = 3/2) times n."""
    num, den = f.as_integer_ratio()
    return floordiv(n * num, den)


def _num(pair) -> str:
    a, b = (f"{v:g}" for v in pair)
    return a if a == b else f"{a}x{b}"


class Pad(Op):
    name = "pad"
    aliases = ("zeropad", "zero_pad")
    family = "reshape"
    spatial = True
    doc = ("Pad the borders: p = n (every side), [h, w] (top and bottom, left and right) or "
           "[top, bottom, left, right]; negative values crop. PyTorch's ZeroPad2d((left, "
           "right, top, bottom)) is pad([top, bottom, left, right]); value != 0 is "
           "ConstantPad2d.")
    args = (
        Arg("p", "sides", doc="n, [h, w] or [top, bottom, left, right]"),
        Arg("value", "float", 0.0, doc="the constant written into the border"),
    )
    kernel = "pad"

    def shape(self, attrs, inputs):
        c, h, w = spatial_input(self, inputs)
        top, bottom, left, right = attrs["p"]
        oh, ow = h + top + bottom, w + left + right
        require(lambda: ShapeError(f"padding {list(attrs['p'])} crops all of the {h}x{w} input"),
                oh >= 1, ow >= 1)
        return (c, oh, ow)

    def window(self, attrs, inputs):
        top, _, left, _ = attrs["p"]
        return Window((1, 1), (1, 1), (top, left))

    def kernel_args(self, attrs):
        return {"pads": attrs["p"], "value": attrs["value"]}

    def torch_forward(self, attrs, inputs, xs, module):
        top, bottom, left, right = attrs["p"]
        value = f", value={attrs['value']!r}" if attrs["value"] else ""
        return f"F.pad({xs[0]}, ({left}, {right}, {top}, {bottom}){value})"

    def onnx(self, g, attrs, inputs, xs):
        top, bottom, left, right = attrs["p"]  # ONNX: begins of every axis, then ends
        pads = g.constant([0, 0, top, left, 0, 0, bottom, right], "pads")
        value = g.constant(attrs["value"], "value")
        return g.node("Pad", [xs[0], pads, value], mode="constant")

    def describe(self, attrs):
        top, bottom, left, right = attrs["p"]
        if top == bottom == left == right:
            return f"pad {top}"
        return f"pad {top},{bottom},{left},{right}"


OPS = [Upsample(), Pad()]
