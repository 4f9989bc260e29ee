"""Ops `maxpool`, `avgpool`, `global_avgpool` and `adaptive_avgpool` over [C, H, W] inputs."""
from __future__ import annotations

import math
from typing import ClassVar

from netspec.ops.base import (
    Arg,
    Op,
    Saved,
    ShapeError,
    Window,
    ceildiv,
    eq,
    floordiv,
    fmt_pair,
    kernel_label,
    mod,
    require,
    select,
    spatial_input,
    torch_pair,
    window_out,
)
from netspec.ops.conv import _dropped_rows


class _Pool(Op):
    family = "pool"
    spatial = True
    args = (
        Arg("k", "pair", doc="window size"),
        Arg("s", "pair", None, doc="stride (default: the window size)"),
        Arg("p", "pad", 0, doc="padding per side"),
        Arg("ceil", "bool", False, doc="round the output size up (PyTorch ceil_mode)"),
    )

    def normalize(self, attrs):
        if attrs["s"] is None:
            attrs["s"] = attrs["k"]
        if attrs["p"] == "same":
            attrs["p"] = (attrs["k"][0] // 2, attrs["k"][1] // 2)
        return attrs

    def dilation(self, attrs) -> tuple[int, int]:
        return attrs.get("d", (1, 1))

    def shape(self, attrs, inputs):
        c, h, w = spatial_input(self, inputs)
        if any(2 * p > k for p, k in zip(attrs["p"], attrs["k"])):
            raise ShapeError("padding must be at most half the window size",
                             f"with k={kernel_label(attrs['k'])} use p <= {attrs['k'][0] // 2}")
        # With ceil=true the last window may overhang the input (PyTorch's rule, window_out).
        oh, ow = (window_out(n, k, s, p, d, attrs["ceil"]) for n, k, s, p, d in
                  zip((h, w), attrs["k"], attrs["s"], attrs["p"], self.dilation(attrs)))
        require(lambda: ShapeError(f"a {kernel_label(attrs['k'])} window does not fit the "
                                   f"{h}x{w} input"), oh >= 1, ow >= 1)
        return (c, oh, ow)

    def shape_warnings(self, attrs, inputs):
        return _dropped_rows(attrs["k"], attrs["s"], attrs["p"], self.dilation(attrs),
                             inputs[0][1:], attrs["ceil"])

    def window(self, attrs, inputs):
        k = tuple(d * (k - 1) + 1 for k, d in zip(attrs["k"], self.dilation(attrs)))
        return Window(k, attrs["s"], attrs["p"])

    def extra_flops(self, attrs, inputs, out):
        return math.prod(out) * attrs["k"][0] * attrs["k"][1]

    def workspace(self, attrs, inputs, out, need_dx=True):
        # A padded dx that dx is a view of, and one dout-sized temporary per kernel tap.
        c, h, w = inputs[0]
        ph, pw = attrs["p"]
        return c * ((h + 2 * ph) * (w + 2 * pw) - h * w) + math.prod(out)

    def kernel_args(self, attrs):
        return {"kernel": attrs["k"], "stride": attrs["s"], "padding": attrs["p"],
                "ceil_mode": attrs["ceil"]}

    torch_function: ClassVar[str]  # F.max_pool2d, F.avg_pool2d
    onnx_op: ClassVar[str]  # MaxPool, AveragePool

    def torch_options(self, attrs) -> list[str]:
        """Keyword arguments of torch_function beyond the shared ones (dilation, ...)."""
        return []

    def onnx_attributes(self, attrs) -> dict:
        """Attributes of the ONNX node beyond the shared ones."""
        return {}

    def torch_forward(self, attrs, inputs, xs, module):
        args = [xs[0], torch_pair(attrs["k"]), f"stride={torch_pair(attrs['s'])}"]
        if attrs["p"] != (0, 0):
            args.append(f"padding={torch_pair(attrs['p'])}")
        if attrs["ceil"]:
            args.append("ceil_mode=True")
        return f"{self.torch_function}({', '.join(args + self.torch_options(attrs))})"

    def onnx(self, g, attrs, inputs, xs):
        ph, pw = attrs["p"]
        return g.node(self.onnx_op, xs, kernel_shape=list(attrs["k"]), strides=list(attrs["s"]),
                      pads=[ph, pw, ph, pw], ceil_mode=int(attrs["ceil"]),
                      **self.onnx_attributes(attrs))

    def describe(self, attrs):
        text = f"{self.name} {kernel_label(attrs['k'])}"
        return text + (f"/{fmt_pair(attrs['s'])}" if attrs["s"] != (1, 1) else "")


class MaxPool(_Pool):
    name = "maxpool"
    aliases = ("max_pool", "maxpool2d")
    doc = "Max pooling; padding counts as -inf."
    kernel = "maxpool2d"
    torch_function = "F.max_pool2d"
    onnx_op = "MaxPool"
    args = _Pool.args + (Arg("d", "pair", 1, doc="dilation (spacing of the window's taps)"),)
    absorbs = (("relu", "before"),)  # pool(relu(x)) = relu(pool(x)): the ReLU on fewer values

    def kernel_args(self, attrs):
        return dict(super().kernel_args(attrs), dilation=attrs["d"])

    def torch_options(self, attrs):
        return [f"dilation={torch_pair(attrs['d'])}"] if attrs["d"] != (1, 1) else []

    def onnx_attributes(self, attrs):
        return {"dilations": list(attrs["d"])} if attrs["d"] != (1, 1) else {}

    def describe(self, attrs):
        text = super().describe(attrs)
        return text + (f" d{fmt_pair(attrs['d'])}" if attrs["d"] != (1, 1) else "")

    def _strided_phases(self, attrs) -> bool:
        """The runtime splits the padded input into stride phases (a strided pool whose
        taps read every phase: netspec.runtime.layers.phases_cover, the kernels' own rule)."""
        from netspec.runtime.layers import phases_cover

        return attrs["s"] != (1, 1) and phases_cover(attrs["k"], attrs["s"],
                                                     self.dilation(attrs))

    @staticmethod
    def _phase_elements(attrs, inputs) -> int:
        """Elements of the stride phases of the padded input, its size rounded up to the
        stride (the padded input itself at stride 1)."""
        (sh, sw), (ph, pw) = attrs["s"], attrs["p"]
        c, h, w = inputs[0]
        return c * sh * ceildiv(h + 2 * ph, sh) * sw * ceildiv(w + 2 * pw, sw)

    def forward_workspace(self, attrs, inputs, out):
        # The runtime's stride phases of the padded input, or the padded input (stride 1):
        # a copy of the input, for a moment.
        if not self._strided_phases(attrs) and attrs["p"] == (0, 0):
            return 0
        return self._phase_elements(attrs, inputs)

    def workspace(self, attrs, inputs, out, need_dx=True):
        from netspec.runtime.layers import disjoint_windows

        if not self._strided_phases(attrs) or disjoint_windows(attrs["k"], attrs["s"],
                                                                self.dilation(attrs)):
            return super().workspace(attrs, inputs, out, need_dx)
        # The runtime's stride-phase backward (overlapping strided windows, ResNet's stem):
        # the phases of the padded dx; one dout-sized temporary per tap; dout and argmax
        # laid out in rows of the phase width.
        return self._phase_elements(attrs, inputs) + 3 * math.prod(out)

    def saved(self, attrs, inputs, out):
        # The winning tap of every output: uint8 up to 256 taps.
        taps = attrs["k"][0] * attrs["k"][1]
        return Saved(index_bytes=math.prod(out) * (1 if taps <= 256 else 2))


class AvgPool(_Pool):
    name = "avgpool"
    aliases = ("avg_pool", "avgpool2d")
    doc = ("Average pooling; zero padding is counted in the average unless count_pad=false "
           "(PyTorch's count_include_pad).")
    kernel = "avgpool2d"
    torch_function = "F.avg_pool2d"
    onnx_op = "AveragePool"
    args = _Pool.args + (Arg("count_pad", "bool", True,
                             doc="count zero padding in the divisor (count_include_pad)"),)

    def kernel_args(self, attrs):
        return dict(super().kernel_args(attrs), count_include_pad=attrs["count_pad"])

    def torch_options(self, attrs):
        return [] if attrs["count_pad"] else ["count_include_pad=False"]

    def onnx_attributes(self, attrs):
        return {"count_include_pad": int(attrs["count_pad"])}


class GlobalAvgPool(Op):
    name = "global_avgpool"
    aliases = ("gap", "global_avg_pool")
    family = "pool"
    spatial = True
    whole_grid = True
    doc = "Average over all of H and W: [C, H, W] -> [C, 1, 1]."
    kernel = "global_avgpool"

    def shape(self, attrs, inputs):
        c, _, _ = spatial_input(self, inputs)
        return (c, 1, 1)

    def extra_flops(self, attrs, inputs, out):
        return math.prod(inputs[0])

    def describe(self, attrs):
        return "global avgpool"

    def torch_forward(self, attrs, inputs, xs, module):
        return f"F.adaptive_avg_pool2d({xs[0]}, 1)"

    def onnx(self, g, attrs, inputs, xs):
        return g.node("GlobalAveragePool", xs)


class AdaptiveAvgPool(Op):
    name = "adaptive_avgpool"
    aliases = ("adaptive_avg_pool", "adaptive_avgpool2d")
    family = "pool"
    spatial = True
    args = (Arg("out", "pair", doc="output size [h, w]"),)
    doc = ("Average pooling to a fixed output size (PyTorch AdaptiveAvgPool2d): output row i "
           "averages input rows floor(i*H/out) .. ceil((i+1)*H/out) - 1. Receptive field: "
           "where out divides the axis, an ordinary window k = s = H/out; otherwise the "
           "windows are unevenly spaced, so no stride is the jump between units, and each "
           "unit is credited with the whole input axis (k = H, s = 0): an upper bound later "
           "layers cannot widen.")
    kernel = "adaptive_avgpool"

    def shape(self, attrs, inputs):
        c, _, _ = spatial_input(self, inputs)
        return (c, *attrs["out"])

    def window(self, attrs, inputs):
        # k = ceil(H/out) + 1, s = floor(H/out) would bound each window, but the pass carries
        # the stride on as the jump of every later layer, and the windows' starts
        # floor(i*H/out) are not s apart (s = 0 when upsampling).
        axes = [(select(eq(mod(n, o), 0), floordiv(n, o), n),
                 select(eq(mod(n, o), 0), floordiv(n, o), 0))
                for n, o in zip(inputs[0][1:], attrs["out"])]
        return Window((axes[0][0], axes[1][0]), (axes[0][1], axes[1][1]), (0, 0))

    def extra_flops(self, attrs, inputs, out):
        # One add per input element per window it falls in, and one divide per output.
        c, h, w = inputs[0]
        oh, ow = attrs["out"]
        return c * _covered(h, oh) * _covered(w, ow) + math.prod(out)

    def workspace(self, attrs, inputs, out, need_dx=True):
        # The backward's A_h^T @ dout, (C, H, OW), before it is multiplied by A_w.
        c, h, _ = inputs[0]
        return c * h * attrs["out"][1]

    def kernel_args(self, attrs):
        return {"output_size": attrs["out"]}

    def describe(self, attrs):
        return f"adaptive avgpool {kernel_label(attrs['out'])}"

    def torch_forward(self, attrs, inputs, xs, module):
        return f"F.adaptive_avg_pool2d({xs[0]}, {torch_pair(attrs['out'])})"

    def onnx(self, g, attrs, inputs, xs):
        hw, out = inputs[0][1:], attrs["out"]
        if all(n % o == 0 for n, o in zip(hw, out)):  # even windows: an ordinary average pool
            k = [n // o for n, o in zip(hw, out)]
            return g.node("AveragePool", xs, kernel_shape=k, strides=k)
        # ONNX has no adaptive pool: out = A_h @ x @ A_w^T, the kernel's averaging matrices
        from netspec.runtime.layers import _adaptive_weights

        rows = g.constant(_adaptive_weights(hw[0], out[0], "float32"), "A_h")
        cols = g.constant(_adaptive_weights(hw[1], out[1], "float32").T, "A_w_T")
        return g.node("MatMul", [g.node("MatMul", [rows, xs[0]], suffix="rows"), cols])


def _covered(size: int, out: int) -> int:
    """Sum of the window lengths along one axis: ceil((i+1)*size/out) - floor(i*size/out)."""
    return sum(ceildiv((i + 1) * size, out) - floordiv(i * size, out) for i in range(out))


OPS = [MaxPool(), AvgPool(), GlobalAvgPool(), AdaptiveAvgPool()]
