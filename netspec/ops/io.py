"""Op `input`: a network input of a fixed per-sample shape."""
from __future__ import annotations

from netspec.ops.base import Arg, ArgError, Op

MAX_DIM = 1 << 20  # larger axes are typos, and their byte counts overflow memory


class Input(Op):
    name = "input"
    family = "input"
    doc = ("A network input; its shape excludes the batch axis: [C, H, W], [T, D] (a sequence) "
           "or [D]; `input x: [T] int` declares token ids.")
    args = (Arg("shape", "int", doc="per-sample shape, e.g. [3, 224, 224]"),
            Arg("dtype", "choice", "float", doc="float values or int token ids",
                choices=("float", "int")))
    min_inputs = 0
    max_inputs = 0

    def normalize(self, attrs):
        return attrs

    def shape(self, attrs, inputs):
        return tuple(attrs["shape"])

    def describe(self, attrs):
        tokens = " tokens" if attrs.get("dtype") == "int" else ""
        return "input " + "x".join(str(d) for d in attrs["shape"]) + tokens


def check_input_shape(value) -> tuple:
    """A per-sample shape: 1 to 3 sizes, each an integer or a size symbol (a SymPy Symbol:
    `input x: [3, H, W]`)."""
    if (isinstance(value, (list, tuple)) and 1 <= len(value) <= 3
            and all(_size_ok(d) for d in value)):
        return tuple(value)
    raise ArgError(f"an input shape must be a list of 1 to 3 integers from 1 to {MAX_DIM} "
                   "or size names, e.g. [3, 224, 224] or [3, H, W] (the batch axis is "
                   "implicit)")


def _size_ok(d) -> bool:
    if isinstance(d, int) and not isinstance(d, bool):
        return 1 <= d <= MAX_DIM
    return bool(getattr(d, "is_Symbol", False))  # a size symbol


OPS = [Input()]
