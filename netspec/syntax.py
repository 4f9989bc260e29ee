"""The AST: typed dataclasses for a parsed .net file, each carrying its source span."""
from __future__ import annotations

from dataclasses import dataclass, field

from netspec.diagnostics import Span

# The value of a literal the parser refused (reported already): lowering skips what uses it.
INVALID = object()

# ---- value expressions -------------------------------------------------------------


@dataclass(frozen=True)
class Const:
    value: object  # int, float, str, bool or None
    span: Span


@dataclass(frozen=True)
class Name:
    name: str
    span: Span


@dataclass(frozen=True)
class ListExpr:
    items: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class CallExpr:
    """`adam(lr=1e-3)` in a value position (train section entries)."""

    name: str
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr, Span], ...]
    span: Span


@dataclass(frozen=True)
class BinOp:
    op: str  # + - * / // % ** == != < <= > >= and or
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True)
class UnaryOp:
    op: str  # - not
    operand: Expr
    span: Span


@dataclass(frozen=True)
class Cond:
    """`then if test else otherwise`."""

    then: Expr
    test: Expr
    otherwise: Expr
    span: Span


Expr = Const | Name | ListExpr | CallExpr | BinOp | UnaryOp | Cond

# ---- tensor expressions ------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """One argument of a call: positional when `name` is None."""

    name: str | None
    value: Expr
    span: Span


@dataclass(frozen=True)
class Call:
    """A layer or block call in a pipeline: `conv(64, k=3)`, `relu`, `basic(c)`."""

    name: str
    args: tuple[Arg, ...]
    span: Span


@dataclass(frozen=True)
class Group:
    """`[stage -> stage ...]`: a sequence whose unlabelled stages are numbered 0, 1, ..."""

    stages: tuple[Stage, ...]
    span: Span


@dataclass(frozen=True)
class LabelTemplate:
    """A computed label, `denselayer{i + 1}`: text pieces and expressions, joined per copy."""

    pieces: tuple[str | Expr, ...]
    span: Span


@dataclass(frozen=True)
class Stage:
    label: str | LabelTemplate | None  # "conv1", "downsample.0", denselayer{i + 1}
    core: Call | Group
    repeat: Expr | None
    span: Span


@dataclass(frozen=True)
class Ref:
    name: str
    span: Span


@dataclass(frozen=True)
class TupleTensor:
    items: tuple[TensorExpr, ...]
    span: Span


@dataclass(frozen=True)
class AddTensor:
    items: tuple[TensorExpr, ...]
    span: Span


@dataclass(frozen=True)
class Pipeline:
    head: TensorExpr
    stages: tuple[Stage, ...]
    span: Span


TensorExpr = Ref | TupleTensor | AddTensor | Pipeline

# ---- statements and definitions ------------------------------------------------------


@dataclass(frozen=True)
class InputStmt:
    name: str
    shape: Expr | None
    span: Span
    where: tuple[Expr, ...] = ()  # conditions on the size names: H >= 32, H % 32 == 0
    dtype: str = "float"  # "int": token ids (`input x: [T] int`)


@dataclass(frozen=True)
class OutputStmt:
    tensor: TensorExpr
    span: Span


@dataclass(frozen=True)
class Assign:
    name: str
    tensor: TensorExpr
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Let:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class If:
    test: Expr
    then: tuple[Stmt, ...]
    otherwise: tuple[Stmt, ...]
    span: Span


@dataclass(frozen=True)
class TrainEntry:
    key: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class TrainSection:
    entries: tuple[TrainEntry, ...]
    span: Span


Stmt = InputStmt | OutputStmt | Assign | Let | If | TrainSection


@dataclass(frozen=True)
class Param:
    name: str
    default: Expr | None
    span: Span


@dataclass(frozen=True)
class Definition:
    """A `network` or a `block`: a name, parameters with defaults, a body."""

    kind: str  # "network" | "block"
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Import:
    path: str
    span: Span


@dataclass
class Module:
    path: str
    imports: list[Import] = field(default_factory=list)
    definitions: list[Definition] = field(default_factory=list)
