"""The op definition: everything the analyzer, renderer and code generator know about an op."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from netspec.diagnostics import show_value

Shape = tuple[int, ...]  # one sample's shape: (C, H, W), (T, D) or (D,); the batch axis is implicit


class _Required:
    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()


class ArgError(Exception):
    """A bad argument value; lowering attaches the span of the argument."""

    def __init__(self, message: str, hint: str | None = None, arg: str | None = None):
        super().__init__(message)
        self.message, self.hint, self.arg = message, hint, arg


class NoLowering(Exception):
    """An op has no lowering to a target (torch source, ONNX); the stage names the layer."""

    def __init__(self, op: str, target: str):
        super().__init__(f"op `{op}` has no lowering to {target}")
        self.op, self.target = op, target


class ShapeError(Exception):
    """An op cannot accept its input shapes; the analyzer attaches the layer's span."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# Integer arguments (channels, features, kernel sizes, strides, padding) stay below this:
# larger ones are typos or attacks, and a stride of 2**63 overflows NumPy's int64 index
# arithmetic at run time. 16,777,216 features is past any real layer's width.
MAX_INT_ARG = 1 << 24


def _too_large(name: str, v: Any) -> ArgError:
    return ArgError(f"`{name}` is too large ({show_value(v)}; integer arguments are at most "
                    f"{MAX_INT_ARG:,})", arg=name)


def _pair(name: str, v: Any, minimum: int) -> tuple[int, int]:
    pair = (v, v) if _is_int(v) else v
    if (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(_is_int(x) for x in pair)
            and all(x >= minimum for x in pair)):
        if any(x > MAX_INT_ARG for x in pair):
            raise _too_large(name, v)
        return (pair[0], pair[1])
    raise ArgError(f"`{name}` must be an integer >= {minimum} or a pair [h, w] of them, "
                   f"not {show_value(v)}", arg=name)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _scale_pair(name: str, v: Any) -> tuple[float, float]:
    pair = (v, v) if _is_number(v) else v
    if isinstance(pair, (list, tuple)) and len(pair) == 2 \
            and all(_is_number(x) and x > 0 for x in pair):
        return (float(pair[0]), float(pair[1]))
    raise ArgError(f"`{name}` must be a positive number or a pair [h, w] of them, "
                   f"not {show_value(v)}", arg=name)


def _sides(name: str, v: Any) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from n, [h, w] or [top, bottom, left, right]."""
    if _is_int(v):
        return (v, v, v, v)
    if isinstance(v, (list, tuple)) and all(_is_int(x) for x in v):
        if len(v) == 2:
            return (v[0], v[0], v[1], v[1])
        if len(v) == 4:
            return tuple(v)  # type: ignore[return-value]
    raise ArgError(f"`{name}` must be an integer, [h, w] or [top, bottom, left, right], "
                   f"not {show_value(v)}", arg=name)


@dataclass(frozen=True)
class Arg:
    """One argument of an op: its name, type, default and meaning.

    Types: int, posint (>= 1), float (finite), nonneg (finite, >= 0), prob (0 <= p < 1),
    bool, pair (int or [h, w], >= 1), pad (int or [h, w] >= 0, or "same"), scale (a
    positive number or [h, w] of them), sides (int, [h, w] or [top, bottom, left, right], any
    sign), choice (one of `choices`).
    """

    name: str
    type: str
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def check(self, v: Any) -> Any:
        """Validate a user value and return it normalized (pairs as tuples)."""
        if v is None and self.default is None:
            return None
        t = self.type
        if t in ("int", "posint") and _is_int(v) and abs(v) > MAX_INT_ARG:
            raise _too_large(self.name, v)
        if t == "int" and _is_int(v):
            return v
        if t == "posint" and _is_int(v) and v >= 1:
            return v
        if t == "float" and (_is_int(v) or isinstance(v, float)) and math.isfinite(v):
            return float(v)
        if t == "nonneg" and (_is_int(v) or isinstance(v, float)) and math.isfinite(v) \
                and v >= 0:
            return float(v)
        if t == "prob" and (_is_int(v) or isinstance(v, float)) and 0 <= v < 1:
            return float(v)
        if t == "bool" and isinstance(v, bool):
            return v
        if t == "pair":
            return _pair(self.name, v, 1)
        if t == "pad":
            return "same" if v == "same" else _pair(self.name, v, 0)
        if t == "choice" and v in self.choices:
            return v
        if t == "scale":
            return _scale_pair(self.name, v)
        if t == "sides":
            return _sides(self.name, v)
        expected = {
            "int": "an integer", "posint": "a positive integer", "float": "a finite number",
            "nonneg": "a number >= 0",
            "prob": "a probability in [0, 1)", "bool": "true or false",
            "choice": " or ".join(f'"{c}"' for c in self.choices),
        }[t]
        raise ArgError(f"`{self.name}` must be {expected}, not {show_value(v)}", arg=self.name)


# The weight initialization argument of every op with a weight matrix (conv, conv_transpose,
# linear): one definition, so the choices cannot drift apart.
INIT_ARG = Arg("init", "choice", "auto", doc="weight init; auto = he",
               choices=("auto", "he", "xavier", "normal", "gpt2"))
# The table init of the embeddings (embedding, pos_embedding): `auto` is each op's own.
EMBED_INIT_ARG = Arg("init", "choice", "auto",
                     doc="table init; auto = unit for embedding (torch's), normal for "
                         "pos_embedding", choices=("auto", "unit", "normal", "gpt2"))


@dataclass(frozen=True)
class ParamSpec:
    """A tensor an op owns: a trainable parameter or a buffer (running statistics)."""

    name: str  # local name: "weight", "bias", "running_mean"
    shape: Shape
    kind: str = "param"  # "param" | "buffer"
    init: str = "zeros"  # he | xavier | normal | zeros | ones
    fan_in: int = 0
    fan_out: int = 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Window:
    """One spatial step of the receptive-field recursion (Araujo et al. 2019): an op with
    kernel k, stride s and left padding p on each spatial axis; dilation is folded into k."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


IDENTITY_WINDOW = Window((1, 1), (1, 1), (0, 0))


@dataclass(frozen=True)
class Saved:
    """What one sample's training forward keeps for the backward in netspec.runtime's cache:
    `values` new elements of the activation dtype, `index_bytes` of masks and argmax indices,
    and whether the cache holds a reference to the op's input or output array."""

    values: int = 0
    index_bytes: int = 0
    keeps_input: bool = False
    keeps_output: bool = False


NOTHING_SAVED = Saved()


class Op:
    """Base of every op. Subclasses set the class attributes and override what applies.

    The registry (netspec.ops) holds one instance per op; every stage iterates over it and
    none dispatches on op names.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    family: ClassVar[str]  # input conv linear pool resample norm activation regularization
    # merge reshape
    args: ClassVar[tuple[Arg, ...]] = ()
    doc: ClassVar[str] = ""
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1
    kernel: ClassVar[str | None] = None  # runtime prefix: `{kernel}_forward` / `{kernel}_backward`
    uses_train: ClassVar[bool] = False  # the kernel takes train=...
    uses_rng: ClassVar[bool] = False  # the kernel takes rng=...
    spatial: ClassVar[bool] = False  # needs (C, H, W) input
    output_is_view: ClassVar[bool] = False  # the output shares its input's memory (reshapes)
    # Fusion (netspec/analysis/fusion.py; compile only): the keyword another op's kernel
    # takes to apply this op itself (relu: relu=True), and the keywords of ops this op's
    # kernel applies, "after" its own output (batch norm: relu(bn(x))) or "before" its
    # input (max pool: pool(relu(x)), computed as relu(pool(x))).
    fusable_as: ClassVar[str | None] = None
    absorbs: ClassVar[tuple[tuple[str, str], ...]] = ()  # (keyword, "before" | "after")
    # Each output unit sees every position of its input's grid, flattened or not (linear,
    # global pooling): the receptive-field step is a window as large as that grid.
    whole_grid: ClassVar[bool] = False
    token_input: ClassVar[bool] = False  # reads integer token ids (embedding); no other op does
    # The kernel's tensor arguments by parameter name, in its order, where one a layer may
    # lack is not the last (attention's in_proj_bias): an absent one is passed as None.
    # Empty: the op's trainable tensors in params() order, absent ones trailing.
    kernel_params: ClassVar[tuple[str, ...]] = ()

    def normalize(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Cross-argument checks and derived defaults, after each Arg.check."""
        return attrs

    def shape(self, attrs: dict[str, Any], inputs: list[Shape]) -> Shape:
        return inputs[0]

    def shape_warnings(self, attrs: dict[str, Any], inputs: list[Shape]) -> list[str]:
        return []

    def params(self, attrs: dict[str, Any], inputs: list[Shape]) -> list[ParamSpec]:
        return []

    def macs(self, attrs: dict[str, Any], inputs: list[Shape], out: Shape) -> int:
        """Multiply-accumulates as torchvision and fvcore count them: conv and linear
        weights only, bias excluded; everything else 0."""
        return 0

    def extra_flops(self, attrs: dict[str, Any], inputs: list[Shape], out: Shape) -> int:
        """FLOPs that torchvision does not count (bias, norm, activation, pooling, adds)."""
        return 0

    def dot_products(self, attrs: dict[str, Any], inputs: list[Shape], out: Shape) -> Any:
        """How many dot products the MACs form (one per output of a conv or linear layer):
        the `exact` convention counts K - 1 adds for K multiplies in each."""
        return 0

    def backward_macs(self, attrs: dict[str, Any], inputs: list[Shape],
                      out: Shape) -> tuple[Any, Any]:
        """(input-gradient, weight-gradient) multiply-accumulates of the backward. A layer
        whose forward is one GEMM (conv, linear) has two backward GEMMs of its size."""
        m = self.macs(attrs, inputs, out)
        return (m, m)

    def bias_elements(self, attrs: dict[str, Any], inputs: list[Shape], out: Shape) -> Any:
        """Adds of the bias gradient (one per output element with a bias), `exact` only."""
        return 0

    def window(self, attrs: dict[str, Any], inputs: list[Shape]) -> Window | None:
        """The receptive-field step; None for ops that leave the field unchanged."""
        return None

    def time_reach(self, attrs: dict[str, Any], reach: str) -> str:
        """The steps of a sequence input an output step depends on, given what the input
        step does: "step" (its own), "past" (every step up to its own), "all" (the whole
        sequence). Per-step ops (linear, norms, activations) keep it."""
        return reach

    def sees_whole_grid(self, attrs: dict[str, Any], inputs: list[Shape]) -> bool:
        """Each output unit sees its input's whole grid: whole_grid ops, and ops mixing the
        steps of a sequence (attention, recurrences, pooling over time; for a causal one an
        upper bound: a prefix of the patches is no rectangle)."""
        return self.whole_grid or self.time_reach(attrs, "step") != "step"

    def saved(self, attrs: dict[str, Any], inputs: list[Shape], out: Shape) -> Saved:
        """Memory one sample's training forward keeps for the backward (the kernel's cache)."""
        return NOTHING_SAVED

    def workspace(self, attrs: dict[str, Any], inputs: list[Shape], out: Shape,
                  need_dx: bool = True) -> int:
        """Elements per sample the backward allocates for a moment besides dout, dx and the
        parameter gradients (im2col buffers, per-sample weight-gradient products).
        need_dx=False: a layer reading the network input, whose dx a training step skips."""
        return 0

    def forward_workspace(self, attrs: dict[str, Any], inputs: list[Shape], out: Shape) -> int:
        """Elements per sample the training forward allocates for a moment besides its output
        and cache (conv's im2col columns, which it does not keep)."""
        return 0

    def workspace_fixed(self, attrs: dict[str, Any], inputs: list[Shape], out: Shape,
                        batch: int, need_dx: bool = True) -> int:
        """Elements the backward allocates once for the batch, besides the parameter
        gradients (conv's flipped weight for dx and its weight-gradient product of a later
        chunk before it is added in)."""
        return 0

    def workspace_samples(self, attrs: dict[str, Any], batch: int) -> int:
        """Samples whose workspace (both kinds above) the kernel holds at once: the whole
        batch, unless it works through the batch in chunks (conv)."""
        return batch

    def kernel_args(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments the runtime forward kernel takes (literals in generated code)."""
        return {}

    # ---- lowerings to the other targets (netspec.torchgen, netspec.onnxgen) ----------------
    # Each op says what it becomes; an op that does not raises NoLowering, which the stage
    # reports as an error naming the layer, the op and the target.

    def torch_module(self, attrs: dict[str, Any], inputs: list[Shape]) -> str | None:
        """Source of the torch.nn module the generated __init__ builds for this layer
        (`nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)`), owning the tensors params()
        declares under the same local names; None for a layer forward computes by a function."""
        return None

    def torch_forward(self, attrs: dict[str, Any], inputs: list[Shape], xs: list[str],
                      module: str | None) -> str:
        """The expression of the layer's output in the generated forward: `xs` are the
        variables of its inputs, `module` the expression of its torch_module (`self.conv1`)."""
        raise NoLowering(self.name, "torch")

    # Every module-level function (the source of a whole `def`) the op's torch_forward may
    # call; torchgen keeps their names from layer variables and emits those torch_helpers picks.
    torch_helper_defs: tuple[str, ...] = ()

    def torch_helpers(self, attrs: dict[str, Any]) -> tuple[str, ...]:
        """The torch_helper_defs this layer's torch_forward calls (the generated file holds
        each once, after its imports)."""
        return ()

    def onnx(self, g: Any, attrs: dict[str, Any], inputs: list[Shape], xs: list[str]) -> str:
        """Add the layer's eval-mode ONNX nodes to `g` (a netspec.onnxgen.Graph: g.node,
        g.param, g.constant) and return the name of its output tensor; `xs` are the tensor
        names of its inputs."""
        raise NoLowering(self.name, "onnx")

    def describe(self, attrs: dict[str, Any]) -> str:
        """A short label for diagrams and tables: `conv 3x3/2, 64`."""
        return self.name

    def signature(self) -> str:
        """`conv(out, k, s=1, ...)`, as the spec calls it (built once per op: every call
        in a spec passes it along for its argument errors)."""
        cached = self.__dict__.get("_signature")
        if cached is None:
            parts = [a.name if a.required else f"{a.name}={show_value(a.default)}"
                     for a in self.args]
            cached = self.__dict__["_signature"] = f"{self.name}(" + ", ".join(parts) + ")"
        return cached


def spatial_input(op: Op, inputs: list[Shape]) -> tuple[int, int, int]:
    shape = inputs[0]
    if len(shape) != 3:
        raise ShapeError(f"{op.name} needs a [C, H, W] input, got {list(shape)}",
                         "feed it an image-shaped tensor (flatten comes after it)")
    return shape  # type: ignore[return-value]


def window_out(size: Dim, k: int, s: int, p: int, d: int, ceil_mode: bool = False) -> Dim:
    """Output length along one axis: floor((H + 2P - D(F - 1) - 1) / S) + 1 (the notes'
    (H + 2P - F) / S + 1 with a dilated F); ceil_mode rounds up, as PyTorch pools do.
    `size` may be a SymPy expression: the result is then the exact floor expression."""
    span = size + 2 * p - d * (k - 1) - 1
    if not ceil_mode:
        return floordiv(span, s) + 1
    # PyTorch drops the last window when it would start past the input: when
    # (out - 1) * s >= size + p, i.e. when ((-span) mod s) >= q with q = D(F-1) + 1 - p, a
    # constant. With 1 <= q <= s - 1 that indicator is 1 - floor((q - 1 + s - m) / s),
    # m = (-span) mod s, which keeps the count branch-free for symbolic sizes.
    q = d * (k - 1) + 1 - p
    out = ceildiv(span, s)
    if q >= s:
        return out + 1
    if q <= 0:
        return out
    return out + floordiv(q - 1 + s - mod(-span, s), s)


# ---- sizes that are ints or SymPy expressions -----------------------------------------
# A shape's dimensions are ints, or SymPy expressions in the input's size symbols when the
# analyzer runs symbolically (`input x: [3, H, W]`). Shape and cost rules use these helpers
# instead of `//`, `%` and `if` on sizes so that one rule serves both. SymPy is imported only
# when a symbolic value reaches them.

Dim = Any  # int, or a sympy.Expr with integer symbols


def is_symbolic(v: Any) -> bool:
    """True for a SymPy expression that still has free symbols."""
    return not isinstance(v, (int, float)) and bool(getattr(v, "free_symbols", None))


def floordiv(a: Dim, b: Dim) -> Dim:
    """floor(a / b) of integers; for a SymPy `a` nested floors merge exactly:
    floor((floor(t) + c) / b) = floor((t + c) / b) for integer c and positive integer b."""
    if type(a) is int and type(b) is int:
        return a // b
    import sympy

    a, b = sympy.sympify(a), sympy.sympify(b)
    if b.is_Integer and b > 0:
        terms = sympy.Add.make_args(a)
        floors = [t for t in terms if isinstance(t, sympy.floor)]
        rest = sympy.Add(*[t for t in terms if not isinstance(t, sympy.floor)])
        if len(floors) == 1 and rest.is_integer:
            return sympy.floor((floors[0].args[0] + rest) / b)
    return sympy.floor(a / b)


def ceildiv(a: Dim, b: Dim) -> Dim:
    """ceil(a / b) of integers: floor((a + b - 1) / b)."""
    if type(a) is int and type(b) is int:
        return -(-a // b)
    return floordiv(a + b - 1, b)


def mod(a: Dim, b: Dim) -> Dim:
    """a mod b (Python's sign convention) of integers or expressions."""
    if type(a) is int and type(b) is int:
        return a % b
    return a - b * floordiv(a, b)


def eq(a: Dim, b: Dim) -> Any:
    """a == b for ints; for expressions SymPy's Eq (`==` compares expressions' structure)."""
    if type(a) is int and type(b) is int:
        return a == b
    import sympy

    if sympy.expand(a - b) == 0:
        return True
    return sympy.Eq(a, b)


def select(condition: Any, if_true: Any, if_false: Any) -> Any:
    """`if_true if condition else if_false`, or a SymPy Piecewise when the condition
    depends on a size symbol."""
    if isinstance(condition, bool):
        return if_true if condition else if_false
    import sympy

    if condition in (sympy.true, sympy.false):
        return if_true if condition == sympy.true else if_false
    return sympy.Piecewise((if_true, condition), (if_false, True))


class SizeConditions:
    """Where a symbolic analysis collects the conditions on the size symbols that the
    rules could not decide: `fit` (a window fits its input, merged shapes agree: the spec
    is invalid otherwise) and `rows` (no input row or column is left unread)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any, str]] = []  # (kind, sympy condition, message)
        self.layer = ""

    def add(self, kind: str, condition: Any, message: str) -> None:
        self.items.append((kind, condition, f"{self.layer}: {message}" if self.layer
                           else message))


_conditions: list[SizeConditions] = []  # the collector of the running symbolic analysis


def collecting() -> SizeConditions | None:
    return _conditions[-1] if _conditions else None


def require(error: Any, *conditions: Any) -> None:
    """Raise `error()` unless every condition holds. A condition on size symbols that SymPy
    cannot decide is recorded as a requirement of the symbolic analysis instead."""
    if all(c is True for c in conditions):
        return
    undecided = []
    for c in conditions:
        if c is False or (not isinstance(c, bool) and _decided(c) is False):
            raise error()
        if not isinstance(c, bool) and _decided(c) is None:
            undecided.append(c)
    sink = collecting()
    if undecided and sink is None:
        raise error()
    for c in undecided:
        sink.add("fit", c, str(error()))


def same_shapes(shapes: list[tuple], error: Any) -> None:
    """Raise `error()` unless the shapes are equal; axes that are equal only for some sizes
    become conditions of the symbolic analysis (see `require`)."""
    first = tuple(shapes[0])
    if all(tuple(s) == first for s in shapes):
        return
    if any(len(s) != len(first) for s in shapes):
        raise error()
    require(error, *[eq(a, b) for s in shapes[1:] for a, b in zip(first, s)])


def note_rows(condition: Any, message: str) -> None:
    """Record that no input rows are dropped only where `condition` holds (symbolic)."""
    sink = collecting()
    if sink is not None and _decided(condition) is None:
        sink.add("rows", condition, message)


def _decided(c: Any) -> bool | None:
    import sympy

    if c == sympy.true:
        return True
    if c == sympy.false:
        return False
    return None


def torch_pair(v: tuple[int, int]) -> str:
    """A (h, w) argument as torch source: `3` when both sides agree, else `(3, 1)`."""
    return repr(v[0]) if v[0] == v[1] else repr(tuple(v))


def fmt_pair(v: tuple[int, int]) -> str:
    return f"{v[0]}" if v[0] == v[1] else f"{v[0]}x{v[1]}"


def kernel_label(k: tuple[int, int]) -> str:
    return f"{k[0]}x{k[1]}"
