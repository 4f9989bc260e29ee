"""Lower stage: AST -> IR. Resolves imports, evaluates values, expands blocks and repeats."""
from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import networkx as nx

from netspec import syntax as S
from netspec.diagnostics import (
    Diagnostic,
    NetspecError,
    Note,
    Span,
    UnknownNetwork,
    did_you_mean,
    error,
    show_value,
)
from netspec.files import read_spec_text
from netspec.ir import Frame, Network
from netspec.ops import REGISTRY, ArgError, Op, all_names, lookup
from netspec.ops.io import check_input_shape
from netspec.parser import MAX_INT_DIGITS, parse_module, paused_gc

MAX_REPEAT = 10_000
# 50,000 layers is a hundred ResNet-152s; past it, analysis and drawing take many seconds
# and Graphviz cannot lay the diagram out at all.
MAX_LAYERS = 50_000
MAX_BLOCK_DEPTH = 32
MAX_IMPORT_DEPTH = 32
MAX_STRING = 10_000
# Elements of one list value counted through its nesting, as if written out: `let b = [a, a]`
# shares `a`, so 25 such lines make a list of 2**25 elements in a few bytes of memory, which
# `==` compares and an error message prints element by element.
MAX_LIST_ITEMS = 100_000
_INT_LIMIT = 10 ** MAX_INT_DIGITS
REPEAT_INDEX = "i"  # bound to 0, 1, ... inside the arguments of a repeated stage
# What a computed label's expressions may give, and what the whole label must be.
_LABEL_TEXT = re.compile(r"[A-Za-z0-9_]+")
_LABEL = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
# PyTorch's argument names, which users type from habit, and netspec's short ones.
_TORCH_ARG_NAMES = {"kernel_size": "k", "kernel": "k", "stride": "s", "padding": "p",
                    "dilation": "d", "out_channels": "out", "out_features": "out",
                    "negative_slope": "slope", "num_groups": "groups",
                    "output_padding": "out_pad", "ceil_mode": "ceil",
                    "count_include_pad": "count_pad", "scale_factor": "scale"}


# ---- modules and imports -----------------------------------------------------------

@dataclass
class Library:
    """Every block and network visible to the file being lowered."""

    blocks: dict[str, S.Definition] = field(default_factory=dict)
    networks: list[S.Definition] = field(default_factory=list)


def library_dir() -> str:
    """The bundled spec library (specs/), found in a checkout or an installed package."""
    return str(resources.files("netspec.specs"))


def load_library(module: S.Module, _stack: tuple[str, ...] = (),
                 _seen: dict[str, S.Module] | None = None,
                 errors: list[Diagnostic] | None = None,
                 allow_imports: Iterable[str] = ()) -> Library:
    """Every block and network the module sees. With an `errors` list, a bad import or
    definition is recorded there and the rest is still collected.

    Imports may reach only the top-level spec's directory tree, the bundled library and
    the directories in `allow_imports` (see import_roots)."""
    seen = {} if _seen is None else _seen
    lib = Library()
    roots = import_roots(module.path, allow_imports)
    _collect(module, lib, _stack + (_real(module.path),), seen, roots, errors)
    return lib


def _recording(errors: list[Diagnostic] | None, what: Callable[[], None]) -> None:
    """Run `what`; a NetspecError goes to `errors` if given, else propagates."""
    try:
        what()
    except NetspecError as exc:
        if errors is None:
            raise
        errors.extend(d for d in exc.diagnostics if d not in errors)


def import_roots(path: str, allow_imports: Iterable[str] = ()) -> tuple[str, ...]:
    """The directories imports may resolve into: the spec's own directory tree (the working
    directory for text without a file), the bundled library, and any the caller allows.
    Real paths, so a symlink out of the tree is judged by where it points."""
    own = os.path.dirname(path) if not path.startswith("<") else os.getcwd()
    dirs = [own or os.curdir, library_dir(), *(os.fspath(d) for d in allow_imports)]
    return tuple(os.path.realpath(d) for d in dirs)


def _under_roots(real: str, roots: tuple[str, ...]) -> bool:
    return any(os.path.commonpath([real, root]) == root for root in roots)


def _real(path: str) -> str:
    return os.path.realpath(path) if not path.startswith("<") else path


def _collect(module: S.Module, lib: Library, stack: tuple[str, ...],
             seen: dict[str, S.Module], roots: tuple[str, ...],
             errors: list[Diagnostic] | None = None) -> None:
    base = os.path.dirname(module.path) if not module.path.startswith("<") else os.getcwd()
    for imp in module.imports:
        _recording(errors, lambda imp=imp: _import(imp, base, lib, stack, seen, roots))
    _collect_defs(module, lib, errors)


def _import(imp: S.Import, base: str, lib: Library, stack: tuple[str, ...],
            seen: dict[str, S.Module], roots: tuple[str, ...]) -> None:
    found = _find_import(imp, base, roots)
    real = _real(found)
    if real in stack:
        chain = " -> ".join(os.path.basename(p) for p in stack[stack.index(real):])
        raise error(f"import cycle: {chain} -> {os.path.basename(real)}", imp.span,
                    "move the shared blocks into a file both can import")
    if len(stack) > MAX_IMPORT_DEPTH:
        raise error("imports nested too deeply", imp.span)
    if real not in seen:
        try:
            text = read_spec_text(found, "import")
        except NetspecError as exc:
            raise error(f'cannot read import "{imp.path}": {exc.diagnostics[0].message}',
                        imp.span) from None
        seen[real] = parse_module(text, _display(found))
        _collect(seen[real], lib, stack + (real,), seen, roots)
    else:
        _collect_defs(seen[real], lib)


def _find_import(imp: S.Import, base: str, roots: tuple[str, ...]) -> str:
    """The file an import names, if it is a .net file inside the allowed directories.
    Only spec files are ever opened, so an error never quotes another file's text."""
    if not imp.path.endswith(".net"):
        raise error(f'import "{imp.path}" does not name a .net file', imp.span,
                    "imports read netspec specs only")
    candidates = [os.path.join(base, imp.path), os.path.join(library_dir(), imp.path)]
    existing = [c for c in candidates if os.path.lexists(c)]
    if not existing:
        raise error(f'cannot find import "{imp.path}"', imp.span,
                    f"looked in {base or '.'} and in the bundled library {library_dir()}")
    allowed = [c for c in existing if _under_roots(os.path.realpath(c), roots)]
    if not allowed:
        raise error(f'import "{imp.path}" is outside the directories a spec may import from',
                    imp.span, "imports resolve inside the spec's own directory tree and the "
                    "bundled library; allow another directory with --allow-imports DIR "
                    "(allow_imports=[...] in the Python API)")
    return allowed[0]


def _display(path: str) -> str:
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


def _collect_defs(module: S.Module, lib: Library,
                  errors: list[Diagnostic] | None = None) -> None:
    for d in module.definitions:
        _recording(errors, lambda d=d: _check_params(d))
        _recording(errors, lambda d=d: _collect_def(d, lib))


def _collect_def(d: S.Definition, lib: Library) -> None:
    if d.kind == "network":
        if d not in lib.networks:
            lib.networks.append(d)
        return
    prev = lib.blocks.get(d.name)
    if prev is not None and prev is not d:
        if prev.span == d.span:
            return
        raise error(f"block `{d.name}` is defined twice", d.name_span,
                    notes=[Note("first defined here", prev.name_span)])
    if lookup(d.name):
        raise error(f"block `{d.name}` has the name of a built-in op", d.name_span,
                    "rename the block")
    lib.blocks[d.name] = d


def _check_params(d: S.Definition) -> None:
    seen: dict[str, S.Param] = {}
    for p in d.params:
        if p.name in seen:
            raise error(f"parameter `{p.name}` of `{d.name}` is declared twice", p.span,
                        notes=[Note("first declared here", seen[p.name].span)])
        seen[p.name] = p


# ---- scopes and naming -------------------------------------------------------------

@dataclass
class Scope:
    """A network body or one block instance: its values, tensors and layer names."""

    kind: str  # "network" | "block"
    prefix: str
    values: dict[str, Any]
    frames: tuple[Frame, ...] = ()
    tensors: dict[str, list[str]] = field(default_factory=dict)
    tensor_spans: dict[str, Span] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    next_suffix: dict[str, int] = field(default_factory=dict)  # FreeNamer.auto's counters
    block_input: str | None = None
    has_input: bool = False
    output: list[str] | None = None
    # Recovering lowering: a statement that failed leaves its names poisoned (a later use is
    # silent, not a second error); `tainted` scopes hold statements the parser dropped.
    failed: bool = False
    tainted: bool = False


class Poisoned(Exception):
    """A statement used a name whose definition failed: its error is already reported."""


POISON = object()  # the value of a name whose `let` or parameter failed


class FreeNamer:
    """Names outside a sequence: an explicit label, or the op name made unique (relu_1)."""

    def __init__(self, scope: Scope):
        self.scope = scope

    def auto(self, base: str) -> str:
        # Names are never released, so the search resumes where the last one for `base`
        # stopped: a 10,000-stage pipeline of `relu` costs linear time, not quadratic.
        k = self.scope.next_suffix.get(base, 0)
        name = base if k == 0 else f"{base}_{k}"
        while name in self.scope.names:
            k += 1
            name = f"{base}_{k}"
        self.scope.next_suffix[base] = k + 1
        self.scope.names.add(name)
        return name

    def label(self, label: str, span: Span) -> str:
        if label in self.scope.names:
            raise error(f"duplicate layer name `{label}`", span,
                        "every labelled layer in a network or block needs its own name")
        self.scope.names.add(label)
        return label


class SeqNamer:
    """Names inside `label: [ ... ]`: unlabelled stages are numbered label.0, label.1, ..."""

    def __init__(self, prefix: str):
        self.prefix, self.count = prefix, 0

    def auto(self, base: str) -> str:
        self.count += 1
        return f"{self.prefix}.{self.count - 1}"

    def label(self, label: str, span: Span) -> str:
        return f"{self.prefix}.{label}"


# ---- the size of an expansion, before expanding it ------------------------------------

class LayerFloor:
    """The fewest layers a definition can expand to, read from the AST alone: an `if`
    counts its smaller branch, a repeat its count when that is a literal (else once), a
    recursive call nothing. A network whose floor passes MAX_LAYERS is refused before a
    layer is built: 18 lines of blocks that each call the previous twice are 2**17
    layers, and building them first would take minutes and gigabytes."""

    CAP = MAX_LAYERS + 1  # counts saturate here, so 2**1000 never becomes a number

    def __init__(self, lib: Library):
        self.lib = lib
        self.memo: dict[str, int] = {}
        self.active: set[str] = set()

    def check(self, d: S.Definition) -> None:
        total = 0
        try:
            for st in d.body:
                count = self.statement(st)
                if total + count > MAX_LAYERS:
                    span, hint = self.culprit(st, total)
                    raise error(f"this expands network `{d.name}` to more than the limit of "
                                f"{MAX_LAYERS:,} layers", span, hint)
                total += count
        except RecursionError:  # deeper than any network lowering would accept; it says so
            return

    def culprit(self, st: S.Stmt, total: int) -> tuple[Span, str]:
        """The innermost stage of `st` that passes the limit, and what to check there."""
        tensor = getattr(st, "tensor", None)
        if isinstance(tensor, S.Pipeline):
            found = self.stage_culprit(tensor.stages, total + self.tensor(tensor.head))
            if found is not None:
                return found
        return st.span, "check the nesting and the repeat counts"

    def stage_culprit(self, stages: tuple[S.Stage, ...], total: int
                      ) -> tuple[Span, str] | None:
        for stage in stages:
            count = self.stage(stage)
            if total + count > MAX_LAYERS:
                if stage.repeat is not None:
                    return stage.repeat.span, "check the repeat counts"
                if isinstance(stage.core, S.Group):
                    return self.stage_culprit(stage.core.stages, total) or (
                        stage.span, "check the nesting and the repeat counts")
                size = f"more than {MAX_LAYERS:,}" if count > MAX_LAYERS else f"at least {count:,}"
                return stage.span, (f"one `{stage.core.name}` is {size} layers; blocks "
                                    "that call blocks several times multiply")
            total += count
        return None

    def definition(self, d: S.Definition) -> int:
        if d.name in self.memo:
            return self.memo[d.name]
        if d.name in self.active:
            return 0  # a recursive block ends through an `if`: count nothing for it
        self.active.add(d.name)
        try:
            count = self.body(d.body)
        finally:
            self.active.discard(d.name)
        self.memo[d.name] = count
        return count

    def body(self, stmts: tuple[S.Stmt, ...]) -> int:
        return min(self.CAP, sum(self.statement(st) for st in stmts))

    def statement(self, st: S.Stmt) -> int:
        if isinstance(st, (S.Assign, S.OutputStmt)):
            return self.tensor(st.tensor)
        if isinstance(st, S.If):
            return min(self.body(st.then), self.body(st.otherwise))
        return 0

    def tensor(self, t: S.TensorExpr) -> int:
        if isinstance(t, S.TupleTensor):
            return min(self.CAP, sum(self.tensor(i) for i in t.items))
        if isinstance(t, S.AddTensor):
            return min(self.CAP, 1 + sum(self.tensor(i) for i in t.items))
        if isinstance(t, S.Pipeline):
            return min(self.CAP, self.tensor(t.head) + sum(self.stage(s) for s in t.stages))
        return 0

    def stage(self, st: S.Stage) -> int:
        count = 1
        if isinstance(st.repeat, S.Const) and _is_int(st.repeat.value) \
                and 1 <= st.repeat.value <= MAX_REPEAT:
            count = st.repeat.value
        core = st.core
        if isinstance(core, S.Group):
            inner = sum(self.stage(s) for s in core.stages)
        else:
            block = self.lib.blocks.get(core.name)
            inner = self.definition(block) if block is not None else 1
        return min(self.CAP, count * inner)


# ---- the lowering itself -----------------------------------------------------------

class Lowerer:
    def __init__(self, lib: Library, recover: bool = False,
                 tainted: frozenset[str] = frozenset(), broken: frozenset[str] = frozenset(),
                 incomplete: bool = False):
        self.lib = lib
        self.graph = nx.DiGraph()
        self.warnings: list[Diagnostic] = []
        self._warned: set[tuple] = set()
        self.depth = 0
        # recover: record an error per statement and go on (netspec check, the LSP);
        # otherwise the first error propagates (every other command).
        self.recover = recover
        self.tainted = tainted  # definitions with syntax errors (statements dropped)
        self.broken = broken  # blocks whose header is wrong: their calls are not expanded
        self.incomplete = incomplete  # an import failed: unknown names may be its blocks
        self.errors: list[Diagnostic] = []
        self._reported: set[tuple] = set()
        # Written-out size of each list value built here, by id; the list is kept with its
        # size so the id cannot be reused while the entry lives.
        self._list_sizes: dict[int, tuple[int, list]] = {}

    def record(self, exc: NetspecError, scope: Scope) -> None:
        """Keep an error once: a broken block reports once, not once per instance."""
        for d in exc.diagnostics:
            key = (d.message, d.span)
            if key in self._reported:
                continue
            self._reported.add(key)
            d.notes.extend(Note(f.describe(), f.span) for f in reversed(scope.frames))
            self.errors.append(d)


    def warn(self, message: str, span: Span | None, hint: str | None = None) -> None:
        key = (message, span)
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(Diagnostic("warning", message, span, hint))

    # ---- network
    def network(self, d: S.Definition, overrides: dict[str, Any]) -> Network:
        values = self.bind_params(d, [], overrides, d.name_span)
        scope = Scope("network", "", dict(values))
        net = Network(d.name, self.graph, [], [], path=d.span.path, params=dict(values))
        self.net = net
        scope.tainted = d.name in self.tainted
        LayerFloor(self.lib).check(d)
        self.run_body(scope, d.body)
        if scope.failed or scope.tainted:
            net.warnings = self.warnings
            return net  # its inputs, outputs and uses are incomplete: no checks on them
        if not net.inputs:
            raise error(f"network `{d.name}` has no input", d.name_span,
                        "declare one: input x: [3, 224, 224]")
        if not net.outputs:
            raise error(f"network `{d.name}` has no output", d.name_span,
                        "end the body with: output <tensor>")
        self.check_unused(scope)
        self.check_dead(net)
        net.warnings = self.warnings
        return net

    def bind_params(self, d: S.Definition, args: list[S.Arg], given: dict[str, Any],
                    call_span: Span, caller: dict[str, Any] | None = None) -> dict[str, Any]:
        """Bind call arguments (evaluated in `caller`) to a definition's parameters."""
        names = [p.name for p in d.params]
        matched = match_arguments(
            args, names, d.name, "parameter", lambda key: did_you_mean(key, names),
            f"signature: {_signature(d)}")
        bound = {key: self.value(arg.value, caller or {}) for key, arg in matched.items()}
        for key, v in given.items():
            if key not in names:
                raise error(f"`{d.name}` has no parameter `{key}`", d.name_span,
                            did_you_mean(key, names) or f"signature: {_signature(d)}")
            bound[key] = v
        values: dict[str, Any] = {}
        for p in d.params:
            if p.name in bound:
                values[p.name] = bound[p.name]
            elif p.default is not None:
                values[p.name] = self.value(p.default, values)
            else:
                raise error(f"missing argument `{p.name}` of `{d.name}`", call_span,
                            f"signature: {_signature(d)}")
        return values

    def run_body(self, scope: Scope, body: tuple[S.Stmt, ...]) -> None:
        for stmt in body:
            if not self.recover:
                getattr(self, "stmt_" + type(stmt).__name__)(scope, stmt)
                continue
            try:
                getattr(self, "stmt_" + type(stmt).__name__)(scope, stmt)
            except NetspecError as exc:
                self.record(exc, scope)
                self.poison(scope, stmt)
            except Poisoned:
                self.poison(scope, stmt)

    def poison(self, scope: Scope, stmt: S.Stmt) -> None:
        """After `stmt` failed: the names it would define are known but unusable."""
        scope.failed = True
        for name, is_tensor in _defined_names(stmt):
            if is_tensor and name not in scope.tensors:
                scope.tensors[name] = None
            elif not is_tensor and name not in scope.values:
                scope.values[name] = POISON

    def stmt_InputStmt(self, scope: Scope, st: S.InputStmt) -> None:
        self.define_tensor_name(scope, st.name, st.span)
        if scope.kind == "block":
            if st.shape is not None:
                raise error("a block input takes its shape from the caller", st.shape.span,
                            f"write `input {st.name}` without a shape")
            if scope.has_input:
                raise error("a block has exactly one input", st.span,
                            "pass several tensors through a network instead")
            scope.has_input = True
            scope.tensors[st.name] = [scope.block_input]
            scope.used.add(st.name)  # an unused block input is reported as disconnected
            return
        if st.shape is None:
            raise error(f"network input `{st.name}` needs a shape", st.span,
                        f"input {st.name}: [3, 224, 224]")
        value = self.input_shape(st.shape, scope.values)
        try:
            shape = check_input_shape(value)
        except ArgError as exc:
            raise error(exc.message, st.shape.span) from None
        if st.name in self.graph:
            raise error(f"`{st.name}` is already a layer name", st.span)
        attrs: dict[str, Any] = {"shape": shape, "dtype": st.dtype}
        if st.where:
            attrs["where"] = tuple(self.size_condition(c, scope.values, shape)
                                   for c in st.where)
        self.graph.add_node(st.name, op="input", attrs=attrs, inputs=[],
                            span=st.span, path=())
        self.net.inputs.append(st.name)
        scope.names.add(st.name)
        scope.tensors[st.name] = [st.name]

    def stmt_Assign(self, scope: Scope, st: S.Assign) -> None:
        result = self.tensor(scope, st.tensor)
        self.define_tensor_name(scope, st.name, st.name_span)
        scope.tensors[st.name] = result
        scope.tensor_spans[st.name] = st.name_span

    def define_tensor_name(self, scope: Scope, name: str, span: Span) -> None:
        if name in scope.tensors and scope.tensors[name] is None:
            return  # its first definition failed; this one stands
        if name in scope.tensors:
            raise error(f"tensor `{name}` is already defined", span,
                        "give this tensor a new name", self._first(scope, name))
        if name in scope.values:
            raise error(f"`{name}` is already a value (a parameter or `let`)", span)

    def _first(self, scope: Scope, name: str) -> list[Note]:
        first = scope.tensor_spans.get(name)
        return [Note("first defined here", first)] if first else []

    def stmt_Let(self, scope: Scope, st: S.Let) -> None:
        if st.name in scope.values or st.name in scope.tensors:
            raise error(f"`{st.name}` is already defined", st.span)
        scope.values[st.name] = self.value(st.value, scope.values)

    def stmt_If(self, scope: Scope, st: S.If) -> None:
        test = self.value(st.test, scope.values)
        if not isinstance(test, bool):
            raise error(f"an `if` condition must be true or false, not {show_value(test)}",
                        st.test.span, "compare explicitly, e.g. `if s != 1`")
        self.run_body(scope, st.then if test else st.otherwise)

    def stmt_OutputStmt(self, scope: Scope, st: S.OutputStmt) -> None:
        result = self.tensor(scope, st.tensor)
        if len(result) != 1:
            raise error("an output must be one tensor, not a tuple", st.tensor.span,
                        "merge the tuple first: (a, b) -> concat")
        if scope.kind == "block":
            if scope.output is not None:
                raise error("a block has exactly one output", st.span)
            scope.output = result
        else:
            if result[0] in self.net.outputs:
                raise error("this tensor is already an output", st.span)
            self.net.outputs.append(result[0])

    def stmt_TrainSection(self, scope: Scope, st: S.TrainSection) -> None:
        if scope.kind != "network":
            raise error("a `train` section belongs in a network, not a block", st.span)
        for entry in st.entries:
            try:
                self.train_entry(scope, entry)
            except (NetspecError, Poisoned) as exc:
                if not self.recover:
                    raise
                if isinstance(exc, NetspecError):
                    self.record(exc, scope)

    def train_entry(self, scope: Scope, entry: S.TrainEntry) -> None:
        if entry.key in self.net.train:
            raise error(f"train setting `{entry.key}` given twice", entry.span)
        self.net.train[entry.key] = self.train_value(entry.value, scope.values)
        self.net.train_spans[entry.key] = entry.span

    # ---- tensors
    def tensor(self, scope: Scope, t: S.TensorExpr) -> list[str]:
        if isinstance(t, S.Ref):
            if scope.tensors.get(t.name, ()) is None or (
                    scope.tainted and t.name not in scope.tensors):
                raise Poisoned(t.name)
            if t.name not in scope.tensors:
                if t.name in scope.values:
                    raise error(f"`{t.name}` is a value, not a tensor", t.span)
                raise error(f"undefined tensor `{t.name}`", t.span,
                            did_you_mean(t.name, scope.tensors)
                            or "define it first: name = input -> layer")
            scope.used.add(t.name)
            return list(scope.tensors[t.name])
        if isinstance(t, S.TupleTensor):
            out: list[str] = []
            for item in t.items:
                part = self.tensor(scope, item)
                if len(part) != 1:
                    raise error("tuples cannot be nested", item.span)
                out.extend(part)
            return out
        if isinstance(t, S.AddTensor):
            parts = [self.tensor(scope, item) for item in t.items]
            for item, part in zip(t.items, parts):
                if len(part) != 1:
                    raise error("cannot add a tuple", item.span, "(a, b) -> concat merges it")
            call = S.Call("add", (), t.span)
            name = FreeNamer(scope).auto("add")
            return [self.layer(scope, {}, [p[0] for p in parts], call, name, REGISTRY["add"])]
        current = self.tensor(scope, t.head)
        namer = FreeNamer(scope)
        for stage in t.stages:
            current = self.stage(scope, scope.values, current, stage, namer)
        return current

    def stage(self, scope: Scope, values: dict[str, Any], current: list[str], stage: S.Stage,
              namer: FreeNamer | SeqNamer) -> list[str]:
        count = 1
        if stage.repeat is not None:
            count = self.value(stage.repeat, values)
            if not _is_int(count) or not 1 <= count <= MAX_REPEAT:
                raise error(f"a repeat count must be an integer from 1 to {MAX_REPEAT}, "
                            f"not {show_value(count)}", stage.repeat.span)
        computed = isinstance(stage.label, S.LabelTemplate)
        label = namer.label(stage.label, stage.span) if stage.label and not computed else None
        for k in range(count):
            local_values = values if stage.repeat is None else {**values, REPEAT_INDEX: k}
            if computed:  # each copy names itself: no `.k` suffix
                name = namer.label(self.computed_label(stage.label, local_values), stage.span)
            else:
                name = None if label is None else (f"{label}.{k}" if stage.repeat else label)
            before = self.graph.number_of_nodes()
            current = self.core(scope, local_values, current, stage.core, name, namer)
            if k == 0 and count > 1:
                # Stop `[[relu * 1000] * 1000] * 1000` after its first copy, not after
                # building MAX_LAYERS layers.
                estimate = before + (self.graph.number_of_nodes() - before) * count
                if estimate > MAX_LAYERS:
                    raise error(f"this repeat would make the network about {estimate:,} "
                                f"layers, more than the limit of {MAX_LAYERS:,}",
                                stage.repeat.span, "check the repeat counts")
        return current

    def computed_label(self, template: S.LabelTemplate, values: dict[str, Any]) -> str:
        """`denselayer{i + 1}` -> "denselayer1": each expression must give a non-negative
        integer or a string of letters, digits and _, so the label stays a layer name."""
        text = []
        for piece in template.pieces:
            if isinstance(piece, str):
                text.append(piece)
                continue
            v = self.value(piece, values)
            if _is_int(v) and v >= 0:
                text.append(str(v))
            elif isinstance(v, str) and _LABEL_TEXT.fullmatch(v):
                text.append(v)
            else:
                raise error(f"a computed label needs a non-negative integer or a name here, "
                            f"not {show_value(v)}", piece.span,
                            "labels are letters, digits, _ and dots: denselayer{i + 1}")
        label = "".join(text)
        if not _LABEL.fullmatch(label):
            raise error(f"computed label `{label}` is not a layer name", template.span,
                        "labels are dot-separated parts of letters, digits and _")
        return label

    def core(self, scope: Scope, values: dict[str, Any], current: list[str],
             core: S.Call | S.Group, name: str | None, namer: FreeNamer | SeqNamer) -> list[str]:
        if isinstance(core, S.Group):
            inner = SeqNamer(name) if name is not None else namer
            for stage in core.stages:
                current = self.stage(scope, values, current, stage, inner)
            return current
        op = lookup(core.name)
        block = self.lib.blocks.get(core.name)
        if op is None and block is None:
            if self.incomplete:
                raise Poisoned(core.name)
            raise _unknown_call(core, self.lib)
        if op is not None and op.name == "input":
            raise error("`input` is a statement, not a layer", core.span,
                        "declare inputs with: input x: [3, 224, 224]")
        local = name if name is not None else namer.auto(op.name if op else core.name)
        if block is not None:
            return [self.instantiate(scope, values, current, core, local, block)]
        return [self.layer(scope, values, current, core, local, op)]

    def layer(self, scope: Scope, values: dict[str, Any], inputs: list[str], call: S.Call,
              local: str, op: Op) -> str:
        if op.max_inputs is not None and len(inputs) > op.max_inputs:
            raise error(f"`{op.name}` takes one input, got a tuple of {len(inputs)}", call.span,
                        "merge the branches first: (a, b) -> concat, or a + b")
        if len(inputs) < op.min_inputs:
            raise error(f"`{op.name}` merges several tensors, got {len(inputs)}", call.span,
                        f"feed it a tuple: (a, b) -> {op.name}")
        attrs = self.op_args(op, call, values)
        node = scope.prefix + local
        if node in self.graph:
            raise error(f"duplicate layer name `{node}`", call.span,
                        "label one of the layers differently")
        if self.graph.number_of_nodes() >= MAX_LAYERS:
            raise error(f"network has more than {MAX_LAYERS} layers", call.span,
                        "check the repeat counts")
        self.graph.add_node(node, op=op.name, attrs=attrs, inputs=list(inputs), span=call.span,
                            path=scope.frames)
        for k, src in enumerate(inputs):
            if not self.graph.has_edge(src, node):
                self.graph.add_edge(src, node, index=k)
        return node

    def op_args(self, op: Op, call: S.Call, values: dict[str, Any]) -> dict[str, Any]:
        names = [a.name for a in op.args]
        matched = match_arguments(call.args, names, op.name, "argument", _arg_hint(names),
                                  f"signature: {op.signature()}")
        attrs: dict[str, Any] = {}
        spans = {key: arg.span for key, arg in matched.items()}
        for key, arg in matched.items():
            value = self.value(arg.value, values)
            try:
                attrs[key] = op.args[names.index(key)].check(value)
            except ArgError as exc:
                raise error(exc.message, arg.value.span, exc.hint) from None
        for spec in op.args:
            if spec.name not in attrs:
                if spec.required:
                    raise error(f"`{op.name}` needs argument `{spec.name}` ({spec.doc})",
                                call.span, f"signature: {op.signature()}")
                attrs[spec.name] = spec.check(spec.default) if spec.default is not None \
                    else None
        try:
            return op.normalize(attrs)
        except ArgError as exc:
            raise error(exc.message, spans.get(exc.arg or "", call.span), exc.hint) from None

    def instantiate(self, scope: Scope, values: dict[str, Any], current: list[str],
                    call: S.Call, local: str, block: S.Definition) -> str:
        if len(current) != 1:
            raise error(f"block `{block.name}` takes one input, got a tuple of {len(current)}",
                        call.span, "merge the branches first: (a, b) -> concat")
        if block.name in self.broken:
            raise Poisoned(block.name)
        if self.depth >= MAX_BLOCK_DEPTH:
            raise error(f"blocks nested more than {MAX_BLOCK_DEPTH} deep", call.span,
                        f"does `{block.name}` call itself?")
        bound = self.bind_params(block, list(call.args), {}, call.span, values)
        instance = scope.prefix + local
        frame = Frame(block.name, instance, tuple(bound.items()), call.span)
        sub = Scope("block", instance + ".", dict(bound), scope.frames + (frame,),
                    block_input=current[0])
        self.depth += 1
        sub.tainted = block.name in self.tainted
        try:
            self.run_body(sub, block.body)
            if sub.failed or sub.tainted:
                raise Poisoned(block.name)
            if not sub.has_input:
                raise error(f"block `{block.name}` declares no input", block.name_span,
                            "start its body with: input x")
            if sub.output is None:
                raise error(f"block `{block.name}` has no output", block.name_span,
                            "end its body with: output <tensor>")
            # No connectivity check is needed here: a block's only tensor source is its
            # input, so its output always depends on it (unused branches warn instead).
            self.check_unused(sub)
        except NetspecError as exc:
            for d in exc.diagnostics:
                d.notes.append(Note(frame.describe(), call.span))
            raise
        finally:
            self.depth -= 1
        return sub.output[0]

    def check_unused(self, scope: Scope) -> None:
        for name, span in scope.tensor_spans.items():
            if name not in scope.used and scope.tensors[name][0] not in (scope.output or []) \
                    and scope.tensors[name][0] not in self.net.outputs:
                self.warn(f"tensor `{name}` is never used", span,
                          "feed it into the output, or remove it")

    def check_dead(self, net: Network) -> None:
        alive = set(net.outputs)
        for out in net.outputs:
            alive |= nx.ancestors(self.graph, out)
        for name in net.inputs:
            if name not in alive:
                self.warn(f"input `{name}` does not reach any output",
                          self.graph.nodes[name]["span"])

    # ---- input sizes
    def input_shape(self, e: S.Expr, env: dict[str, Any]) -> Any:
        """An input's shape: a name not bound to a value is a size symbol (`[3, H, W]`)."""
        if not isinstance(e, S.ListExpr):
            return self.value(e, env)
        return [_size_symbol(item.name, item.span)
                if isinstance(item, S.Name) and item.name not in env
                else self.value(item, env) for item in e.items]

    def size_condition(self, e: S.Expr, env: dict[str, Any], shape: tuple) -> Any:
        """A `where` condition as a SymPy relation of the input's size symbols."""
        import sympy

        from netspec.ops.base import floordiv

        symbols = {str(d): d for d in shape if not isinstance(d, int)}

        def conv(x: S.Expr) -> Any:
            if isinstance(x, S.Name) and x.name in symbols:
                return symbols[x.name]
            if isinstance(x, S.BinOp) and x.op in _SIZE_OPS:
                a, b = conv(x.left), conv(x.right)
                if x.op in ("//", "%") and not (isinstance(b, int) and b > 0):
                    raise error(f"`{x.op}` in a size condition needs a positive integer on "
                                "its right", x.right.span)
                return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                        "//": lambda: floordiv(a, b), "%": lambda: sympy.Mod(a, b),
                        "==": lambda: sympy.Eq(a, b), "!=": lambda: sympy.Ne(a, b),
                        "<": lambda: sympy.Lt(a, b), "<=": lambda: sympy.Le(a, b),
                        ">": lambda: sympy.Gt(a, b), ">=": lambda: sympy.Ge(a, b)}[x.op]()
            v = self.value(x, env)
            if not _is_int(v):
                raise error(f"a size condition computes with integers, not {show_value(v)}",
                            x.span)
            return v

        hint = "e.g. where H >= 32, H % 32 == 0"
        if not isinstance(e, S.BinOp) or e.op not in _COMPARISONS:
            raise error("a `where` condition compares sizes", e.span, hint)
        cond = conv(e)
        if cond in (sympy.true, sympy.false) or not getattr(cond, "free_symbols", None):
            raise error("a `where` condition must involve a size name of this input "
                        f"({', '.join(symbols) or 'it has none'})", e.span, hint)
        return cond

    # ---- values
    def value(self, e: S.Expr, env: dict[str, Any]) -> Any:
        if isinstance(e, S.Const):
            if e.value is S.INVALID:
                raise Poisoned("literal")
            return e.value
        if isinstance(e, S.Name):
            if env.get(e.name) is POISON:
                raise Poisoned(e.name)
            if e.name not in env:
                raise error(f"undefined name `{e.name}`", e.span,
                            did_you_mean(e.name, env) or
                            ("`i` is defined only in a repeated stage's arguments"
                             if e.name == REPEAT_INDEX else None))
            return env[e.name]
        if isinstance(e, S.ListExpr):
            return self.list_value(e, env)
        if isinstance(e, S.Cond):
            test = self.value(e.test, env)
            if not isinstance(test, bool):
                raise error(f"a condition must be true or false, not {show_value(test)}", e.test.span)
            return self.value(e.then if test else e.otherwise, env)
        if isinstance(e, S.UnaryOp):
            v = self.value(e.operand, env)
            if e.op == "not":
                if not isinstance(v, bool):
                    raise error(f"`not` needs true or false, not {show_value(v)}", e.span)
                return not v
            if not _is_num(v):
                raise error(f"cannot negate {show_value(v)}", e.span)
            return -v
        if isinstance(e, S.BinOp):
            return self.binop(e, env)
        raise error("a function call is only allowed in a `train` section", e.span,
                    "write the value itself")

    def list_value(self, e: S.ListExpr, env: dict[str, Any]) -> list:
        """A list, refused (at the bracket) once its written-out size passes MAX_LIST_ITEMS,
        before anything compares or prints it."""
        items = [self.value(item, env) for item in e.items]
        size = 1 + sum(self.written_size(v) for v in items)
        if size > MAX_LIST_ITEMS:
            raise error(f"list value too large: {size:,} elements when written out "
                        f"(the limit is {MAX_LIST_ITEMS:,})", e.span,
                        "a list that contains another list twice doubles in size")
        self._list_sizes[id(items)] = (size, items)
        return items

    def written_size(self, v: Any) -> int:
        """Elements of `v` written out: 1 for a scalar; a list built here is looked up, and
        one given from outside (a --param override) is counted up to the limit."""
        if not isinstance(v, (list, tuple)):
            return 1
        known = self._list_sizes.get(id(v))
        if known is not None and known[1] is v:
            return known[0]
        count, stack = 0, [v]
        while stack and count <= MAX_LIST_ITEMS:
            item = stack.pop()
            count += 1
            if isinstance(item, (list, tuple)):
                stack.extend(item)
        return count

    def binop(self, e: S.BinOp, env: dict[str, Any]) -> Any:
        a = self.value(e.left, env)
        if e.op in ("and", "or"):
            if not isinstance(a, bool):
                raise error(f"`{e.op}` needs true or false, not {show_value(a)}", e.left.span)
            if (e.op == "and" and not a) or (e.op == "or" and a):
                return a
            b = self.value(e.right, env)
            if not isinstance(b, bool):
                raise error(f"`{e.op}` needs true or false, not {show_value(b)}", e.right.span)
            return b
        b = self.value(e.right, env)
        if e.op in ("==", "!="):
            return (a == b) == (e.op == "==")
        if e.op == "+" and isinstance(a, str) and isinstance(b, str):
            if len(a) + len(b) > MAX_STRING:  # `let b = a + a`, forty times over, is 1 TB
                raise error(f"string longer than {MAX_STRING:,} characters", e.span)
            return a + b
        if not (_is_num(a) and _is_num(b)):
            raise error(f"cannot apply `{e.op}` to {show_value(a)} and {show_value(b)}", e.span)
        if e.op in ("/", "//", "%") and b == 0:
            raise error("division by zero", e.right.span)
        if e.op == "**" and (abs(b) > 64 or (abs(a) > 1 and abs(b) * math.log2(abs(a)) > 64)):
            raise error("exponent too large", e.span)
        try:
            result = {
                "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
                "//": lambda: a // b, "%": lambda: a % b, "**": lambda: a ** b,
                "<": lambda: a < b, "<=": lambda: a <= b, ">": lambda: a > b,
                ">=": lambda: a >= b,
            }[e.op]()
        except (OverflowError, ZeroDivisionError, ValueError):  # 1e-300 ** -64, big / 3
            raise error(f"`{e.op}` overflows here", e.span) from None
        if isinstance(result, complex):
            raise error(f"`{e.op}` gives a complex number here", e.span)
        # Bounded like literals, so that `a * a` in a chain of lets cannot grow without end
        # (nor fail to print: Python refuses to format ints of more than 4,300 digits).
        if _is_int(result) and abs(result) >= _INT_LIMIT:
            raise error(f"integer result has more than {MAX_INT_DIGITS} digits", e.span)
        return result

    def train_value(self, e: S.Expr, env: dict[str, Any]) -> Any:
        """Values of a train section: a bare name or a call is a {"type": ...} setting."""
        if isinstance(e, S.Name) and e.name not in env:
            return {"type": e.name}
        if isinstance(e, S.CallExpr):
            if e.args:
                raise error(f"give the settings of `{e.name}` by name", e.args[0].span,
                            f"e.g. {e.name}(lr=0.01)")
            out: dict[str, Any] = {"type": e.name}
            for key, value, span in e.kwargs:
                if key in out:
                    raise error(f"setting `{key}` given twice", span)
                out[key] = self.train_value(value, env)
            return out
        if isinstance(e, S.ListExpr):
            return [self.train_value(item, env) for item in e.items]
        return self.value(e, env)


def _unknown_call(call: S.Call, lib: Library) -> NetspecError:
    return error(f"unknown op or block `{call.name}`", call.span,
                 did_you_mean(call.name, all_names() + list(lib.blocks))
                 or "see `netspec ops` for the built-in ops, or define a block")


def _arg_hint(names: list[str]) -> Callable[[str], str | None]:
    """Did-you-mean for an op's argument, knowing PyTorch's long names (kernel_size -> k)."""
    def hint(key: str) -> str | None:
        torch_name = _TORCH_ARG_NAMES.get(key)
        return f"did you mean `{torch_name}`?" if torch_name in names \
            else did_you_mean(key, names)
    return hint


def _too_many(name: str, n: int) -> str:
    if n == 0:
        return f"`{name}` takes no arguments"
    return f"`{name}` takes {n} argument{'s' if n != 1 else ''}, got more"


def match_arguments(args: Iterable[S.Arg], names: list[str], callee: str, noun: str,
                    hint: Callable[[str], str | None], signature: str) -> dict[str, S.Arg]:
    """Pair a call's positional and keyword arguments with parameter names, in call order;
    too many positionals, unknown names and duplicates are errors at the argument."""
    matched: dict[str, S.Arg] = {}
    for k, arg in enumerate(args):
        if arg.name is None:
            if k >= len(names):
                raise error(_too_many(callee, len(names)), arg.span, signature)
            key = names[k]
        else:
            key = arg.name
            if key not in names:
                raise error(f"`{callee}` has no {noun} `{key}`", arg.span,
                            hint(key) or signature)
        if key in matched:
            raise error(f"argument `{key}` given twice", arg.span, None,
                        [Note("first given here", matched[key].span)])
        matched[key] = arg
    return matched


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
_SIZE_OPS = ("+", "-", "*", "//", "%") + _COMPARISONS


def _size_symbol(name: str, span=None) -> Any:
    try:
        from netspec.analysis.symbolic import size_symbol
    except ModuleNotFoundError as exc:  # SymPy is the optional `symbolic` extra (~80 MB)
        if exc.name != "sympy":
            raise
        raise NetspecError(Diagnostic(
            "error", f"the input size `{name}` is symbolic, which needs SymPy (not installed)",
            span, "pip install 'netspec[symbolic]', or give the size as a number")) from None
    return size_symbol(name)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)




def _defined_names(stmt: S.Stmt) -> list[tuple[str, bool]]:
    """(name, is_tensor) of every name a statement defines, in both branches of an `if`."""
    if isinstance(stmt, (S.Assign, S.InputStmt)):
        return [(stmt.name, True)]
    if isinstance(stmt, S.Let):
        return [(stmt.name, False)]
    if isinstance(stmt, S.If):
        return [n for inner in stmt.then + stmt.otherwise for n in _defined_names(inner)]
    return []


def _signature(d: S.Definition) -> str:
    return f"{d.name}(" + ", ".join(p.name + ("=…" if p.default else "") for p in d.params) + ")"




# ---- entry points ------------------------------------------------------------------

def lower(module: S.Module, network: str | None = None,
          overrides: dict[str, Any] | None = None, allow_imports: Iterable[str] = ()) -> Network:
    """Lower a parsed module's network (the named one, else the last defined) to the IR.
    Imports may reach the module's directory tree, the bundled library and `allow_imports`."""
    lib = load_library(module, allow_imports=allow_imports)
    own = [d for d in module.definitions if d.kind == "network"]
    if network is not None:
        chosen = next((d for d in lib.networks if d.name == network), None)
        if chosen is None:
            raise UnknownNetwork(network, module.path,
                                 did_you_mean(network, [d.name for d in lib.networks]))
    elif own:
        chosen = own[-1]
    else:
        raise NetspecError(Diagnostic(
            "error", f"{module.path} defines no network", None,
            "a block library is checked by the files that import it; add `network name { ... }`"))
    try:
        with paused_gc():
            return Lowerer(lib).network(chosen, overrides or {})
    except RecursionError:
        # Each limit holds (blocks 32 deep, brackets 64, expressions 200 levels), but
        # together they can still exhaust Python's stack: say so instead of crashing.
        raise error(f"expanding `{chosen.name}` nests blocks, brackets and expressions too "
                    "deeply", chosen.name_span,
                    "a block inside many brackets inside a recursive block multiplies the "
                    "depths; flatten the brackets or the recursion") from None


def lower_recovering(module: S.Module, network: str | None = None,
                     overrides: dict[str, Any] | None = None,
                     syntax_errors: Iterable[Diagnostic] = (),
                     allow_imports: Iterable[str] = ()
                     ) -> tuple[Network | None, list[Diagnostic]]:
    """Lower like `lower`, but record every independent error instead of stopping at the
    first: each failed statement is reported once and poisons only the names it defines.
    Definitions holding `syntax_errors` (statements the parser dropped) skip the checks
    that dropped statements would make wrong (undefined names, missing input or output).

    Returns (the network, or None if there is none or it could not be built; the errors
    and warnings). A file without networks gets None and no error: see check_library."""
    errors: list[Diagnostic] = []
    lib = load_library(module, errors=errors, allow_imports=allow_imports)
    tainted = frozenset(d.name for d in module.definitions
                        if any(_inside(e.span, d.span) for e in syntax_errors))
    broken = frozenset(d.name for d in module.definitions
                       if any(_inside(e.span, d.span) for e in errors))
    incomplete = any(e.span is not None and e.span.path == module.path
                     and any(_inside(e.span, i.span) for i in module.imports) for e in errors) \
        or any(e.span is None or e.span.path != module.path for e in errors)
    own = [d for d in module.definitions if d.kind == "network"]
    if network is not None:
        chosen = next((d for d in lib.networks if d.name == network), None)
        if chosen is None:
            errors.append(Diagnostic("error", f"no network `{network}` in {module.path}", None,
                                     did_you_mean(network, [d.name for d in lib.networks])))
            return None, errors
    elif own:
        chosen = own[-1]
    elif not module.definitions and not list(syntax_errors):
        errors.append(Diagnostic("error", f"{module.path} defines no network", None,
                                 "add `network name { ... }`"))
        return None, errors
    else:
        return None, errors
    lowerer = Lowerer(lib, recover=True, tainted=tainted, broken=broken,
                      incomplete=incomplete)
    try:
        net = lowerer.network(chosen, overrides or {})
    except NetspecError as exc:  # the network's own parameters, its input or output
        return None, errors + lowerer.errors + exc.diagnostics
    except RecursionError:
        return None, errors + lowerer.errors + [Diagnostic(
            "error", f"expanding `{chosen.name}` nests blocks, brackets and expressions too "
            "deeply", chosen.name_span)]
    return net, errors + lowerer.errors


def _inside(span: Span | None, outer: Span) -> bool:
    return span is not None and span.path == outer.path and \
        (outer.line, outer.col) <= (span.line, span.col) <= (outer.end_line, outer.end_col)


def check_block_alone(lib: Library, block: S.Definition) -> list[Diagnostic]:
    """Lower one block of a library on its own (no caller): parameters without a default
    are unknown, so only what does not depend on them is checked (op and block names,
    argument names, tensors, and every value the defaults determine). Shapes need the
    caller's input and are not checked here. Returns the errors and warnings."""
    lowerer = Lowerer(lib, recover=True)
    lowerer.net = Network(block.name, lowerer.graph, [], [], path=block.span.path)
    lowerer.graph.add_node("<input>", op="input", attrs={"shape": None}, inputs=[],
                           span=block.name_span, path=())
    scope = Scope("network", "", {})
    unknown = {p.name: POISON for p in block.params if p.default is None}
    call = S.Call(block.name, (), block.name_span)
    try:
        bound = lowerer.bind_params(block, [], unknown, block.name_span)
        args = tuple(S.Arg(name, S.Name(name, block.name_span), block.name_span)
                     for name in bound)
        lowerer.instantiate(scope, bound, ["<input>"], S.Call(block.name, args, call.span),
                            block.name, block)
    except NetspecError as exc:
        lowerer.record(exc, scope)
    except Poisoned:
        pass
    for d in lowerer.errors:  # "in stem (stem, ...)" says nothing about a block alone
        d.notes = [n for n in d.notes if not n.message.startswith(f"in {block.name} (")]
    found = _call_errors(lib, block.body)
    keys = {(d.message, d.span) for d in found}
    return found + [d for d in lowerer.errors if (d.message, d.span) not in keys] \
        + lowerer.warnings


def _call_errors(lib: Library, body: tuple[S.Stmt, ...]) -> list[Diagnostic]:
    """What is wrong with the calls of a body whatever the values: unknown ops and blocks,
    unknown argument names, too many positional arguments."""
    errors: list[Diagnostic] = []
    for call in _calls(body):
        op, block = lookup(call.name), lib.blocks.get(call.name)
        try:
            if op is None and block is None:
                raise _unknown_call(call, lib)
            if op is not None:
                names = [a.name for a in op.args]
                match_arguments(call.args, names, op.name, "argument", _arg_hint(names),
                                f"signature: {op.signature()}")
            else:
                names = [p.name for p in block.params]
                match_arguments(call.args, names, block.name, "parameter",
                                lambda key, names=names: did_you_mean(key, names),
                                f"signature: {_signature(block)}")
        except NetspecError as exc:
            errors.extend(exc.diagnostics)
    return errors


def _calls(node: Any) -> Iterable[S.Call]:
    """Every layer or block call in statements or tensor expressions, in source order."""
    if isinstance(node, tuple):
        for item in node:
            yield from _calls(item)
    elif isinstance(node, S.Call):
        yield node
    elif isinstance(node, (S.Assign, S.OutputStmt)):
        yield from _calls(node.tensor)
    elif isinstance(node, S.If):
        yield from _calls(node.then + node.otherwise)
    elif isinstance(node, S.Pipeline):
        yield from _calls((node.head,) + node.stages)
    elif isinstance(node, (S.AddTensor, S.TupleTensor)):
        yield from _calls(node.items)
    elif isinstance(node, S.Stage):
        yield from _calls(node.core)
    elif isinstance(node, S.Group):
        yield from _calls(node.stages)
