"""Code generation stage: the analyzed IR -> the Python source of a trainable NumPy model.

The generated module holds one class deriving from netspec.model.Model with a straight-line
`_forward` (one kernel call per layer, in topological order, each output named after its layer)
and `_backward` (the same calls' backward kernels in reverse order, summing the gradient of a
tensor that fans out). `netspec.compile` executes exactly this source; `netspec compile` writes
it to a file. Spec text reaches the source only as sanitized identifiers, repr() literals and
repr()-quoted comments, never raw.
"""
from __future__ import annotations
import __future__

import ast
import builtins
import importlib
import inspect
import keyword
import linecache
import os
import re
import sys
import types
import zlib
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import networkx as nx
import numpy as np

from netspec.analysis.fusion import fused_layers
from netspec.diagnostics import Diagnostic, NetspecError
from netspec.ir import Network, verify
from netspec.ops import REGISTRY, Op, ParamSpec

WIDTH = 100  # the project's line length
INDENT = "        "  # a statement inside a method

# What --standalone copies into the generated file, in this order (each module's imports of
# netspec itself are dropped: the copied definitions stand in for them).
INLINED_MODULES = ("netspec.runtime.parallel", "netspec.runtime.im2col",
                   "netspec.runtime.winograd", "netspec.runtime.sequence", "netspec.runtime.layers",
                   "netspec.runtime.losses", "netspec.model")
RUNTIME = "netspec.runtime"

# Locals of the generated methods; layer variables never take these names.
METHOD_LOCALS = frozenset({"self", "train", "c", "g", "p", "buf", "rng", "dout", "part", "_"})


# ---- the plan: what each layer's two statements call ------------------------------------

@dataclass
class Layer:
    """One layer's forward and backward statement, resolved against its runtime kernels."""

    name: str  # the layer id, e.g. "layer1.0.conv1"
    var: str  # the Python identifier of its output, e.g. "layer1_0_conv1"
    kernel: str
    inputs: list[str]  # layer ids, in the op's input order
    as_list: bool  # the kernel takes its inputs as one list (concat, add)
    slots: list[str]  # forward arguments after the input: p[...], buf[...] or None
    grads: list[str | None] | None  # param per gradient the backward returns after dx
    kwargs: list[str]  # "stride=(1, 1)", "train=train", "rng=rng"
    # The layer id whose tensor the statement makes: itself, or the ReLU after it that its
    # kernel applies (netspec/analysis/fusion.py); a comment line saying so.
    output: str = ""
    note: str | None = None

    def __post_init__(self):
        self.output = self.output or self.name


@dataclass
class Plan:
    name: str
    path: str
    class_name: str
    input: str  # the input layer's id
    output: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    vars: dict[str, str]  # layer id -> identifier
    layers: list[Layer]  # the live layers after the input, in topological order
    tensors: list[tuple[str, ParamSpec]]  # (full name, spec) of every layer, in layer order
    head: str | None
    loss: tuple[str, list[str]]  # runtime loss function, its literal keyword arguments
    kernels: list[str] = field(default_factory=list)  # runtime names the class calls
    input_dtype: str = "float"  # "int": token ids
    splits_batch: bool = False  # an image network: its batches split over threads
    largest_layer_macs: int = 0  # per sample, for the one-thread rule of small networks


def plan(net: Network) -> Plan:
    """Resolve every layer of an analyzed network to its kernels, arguments and tensors."""
    from netspec.train.threads import splits_batch
    if len(net.inputs) != 1 or len(net.outputs) != 1:
        raise NetspecError(Diagnostic(
            "error", f"network `{net.name}` has {len(net.inputs)} inputs and "
            f"{len(net.outputs)} outputs; compile needs exactly one of each"))
    g = net.graph
    (inp,), (out,) = net.inputs, net.outputs
    live = nx.ancestors(g, out) | {out}
    order = net.live()  # a layer reaching no output has no statement and no tensors
    vars_ = _layer_identifiers(order)
    fused = fused_layers(net)  # absorbed layer -> (the layer whose kernel applies it, where)
    layers, tensors = [], []
    for name in order:
        data = g.nodes[name]
        op = REGISTRY[data["op"]]
        specs = op.params(data["attrs"], [g.nodes[i]["shape"] for i in data["inputs"]])
        tensors += [(f"{name}.{s.name}", s) for s in specs]
        if name != inp and name not in fused:
            layers.append(_layer(name, op, data, specs, vars_[name]))
    by_name = {layer.name: layer for layer in layers}
    for absorbed, (host, where) in fused.items():
        _fuse(by_name[host], absorbed, where, g.nodes[absorbed], vars_[absorbed])
    kernels = {f"{layer.kernel}_{d}" for layer in layers for d in ("forward", "backward")}
    loss = _loss(net)
    # The spec's file name only: the same spec compiles to the same bytes wherever it lies.
    return Plan(net.name, os.path.basename(net.path), _class_name(net.name), inp, out, tuple(g.nodes[inp]["shape"]),
                tuple(g.nodes[out]["shape"]), vars_, layers, tensors, _head(net, live),
                loss, sorted(kernels | {loss[0]}), g.nodes[inp]["attrs"].get("dtype", "float"),
                splits_batch(net), max((int(g.nodes[n].get("macs", 0)) for n in order), default=0))


def _layer(name: str, op: Op, data: dict, specs: list[ParamSpec], var: str) -> Layer:
    """Match the op's ParamSpecs and kernel_args to the runtime kernel's signature.

    The kernel's positional parameters after the input are the op's trainable tensors, then
    its buffers; a trainable tensor the layer lacks (bias=false) is passed as None.
    """
    forward = _runtime_function(f"{op.kernel}_forward")
    if forward is None or _runtime_function(f"{op.kernel}_backward") is None:
        raise NetspecError(Diagnostic("error", f"{name}: the runtime has no `{op.kernel}` "
                                      "forward/backward kernels", data["span"]))
    kwargs = op.kernel_args(data["attrs"])
    flags = [f for f, used in (("train", op.uses_train), ("rng", op.uses_rng)) if used]
    params = list(inspect.signature(forward).parameters.values())[1:]
    accepted = {p.name for p in params}
    unknown = [k for k in list(kwargs) + flags if k not in accepted]
    if unknown:
        raise NetspecError(Diagnostic("error", f"{name}: kernel {forward.__name__} takes no "
                                      f"argument {', '.join(unknown)}", data["span"]))
    n_slots = 0
    trainable = [s for s in specs if s.kind == "param"]
    buffers = [s for s in specs if s.kind == "buffer"]
    for p in params:
        if p.kind is p.VAR_POSITIONAL:  # `*weights`: as many as the op declares (lstm layers)
            n_slots += len(trainable) + len(buffers)
            break
        if p.name in kwargs or p.name in flags or p.default is not p.empty:
            break
        n_slots += 1
    n_trainable = n_slots - len(buffers)
    if n_trainable < len(trainable) or (n_slots and not n_trainable):
        raise NetspecError(Diagnostic(
            "error", f"{name}: {op.name} declares {len(trainable)} parameters and "
            f"{len(buffers)} buffers but kernel {forward.__name__} takes {n_slots}", data["span"]))
    keys = [f"{name}.{s.name}" for s in trainable] + [None] * (n_trainable - len(trainable))
    if op.kernel_params:  # absent tensors in the middle of the kernel's arguments
        present = {s.name for s in trainable}
        keys = [f"{name}.{n}" if n in present else None for n in op.kernel_params]
    slots = [f"p[{k!r}]" if k else "None" for k in keys]
    slots += [f"buf[{name + '.' + s.name!r}]" for s in buffers]
    args = [f"{k}={_literal(v)}" for k, v in kwargs.items()] + [f"{f}={f}" for f in flags]
    return Layer(name, var, op.kernel, list(data["inputs"]), op.max_inputs != 1, slots,
                 keys if n_slots else None, args)


def _fuse(layer: Layer, absorbed: str, where: str, data: dict, var: str) -> None:
    """Let `layer`'s kernel apply the absorbed layer's op too (its `fusable_as` keyword):
    "after" its output, whose tensor the statement then makes, or "before" its input, which
    it then reads from the absorbed layer's input."""
    keyword = REGISTRY[data["op"]].fusable_as
    forward = _runtime_function(f"{layer.kernel}_forward")
    if keyword not in inspect.signature(forward).parameters:  # a bug in netspec's ops
        raise RuntimeError(f"{forward.__name__} takes no {keyword}= to fuse {absorbed}")
    layer.kwargs.append(f"{keyword}=True")
    if where == "after":
        layer.output, layer.var = absorbed, var
        layer.note = f"{layer.name} applies {absorbed}, in place on its output"
    else:
        layer.inputs = list(data["inputs"])
        layer.note = f"{layer.name} applies {absorbed} (before it) to its output: they commute"


def _loss(net: Network) -> tuple[str, list[str]]:
    """The train section's loss as a runtime function `<type>_loss` and literal kwargs."""
    config = net.train.get("loss", "softmax")
    config = {"type": config} if isinstance(config, str) else dict(config)
    kind = config.pop("type", "softmax")
    span = net.train_spans.get("loss")
    fn = _runtime_function(f"{kind}_loss") if isinstance(kind, str) else None
    if fn is None:
        known = sorted(n[:-5] for n in importlib.import_module(RUNTIME).__all__
                       if n.endswith("_loss"))
        raise NetspecError(Diagnostic("error", f"unknown loss {kind!r}", span,
                                      "the runtime's losses: " + ", ".join(known)))
    accepted = list(inspect.signature(fn).parameters)[2:]
    unknown = [k for k in config if k not in accepted]
    if unknown:
        raise NetspecError(Diagnostic("error", f"loss {kind} has no setting "
                                      f"{', '.join(map(str, unknown))}", span))
    return fn.__name__, [f"{k}={_literal(config[k])}" for k in accepted if k in config]


def _head(net: Network, live: set[str]) -> str | None:
    """The layer whose output count reinit(num_outputs=...) may change: the last layer with an
    `out` argument, reached from the output through single-input, parameter-free layers."""
    g = net.graph
    name = net.outputs[0]
    while True:
        data = g.nodes[name]
        op = REGISTRY[data["op"]]
        shapes = [g.nodes[i]["shape"] for i in data["inputs"]]
        if op.params(data["attrs"], shapes):
            ok = "out" in data["attrs"] and data["attrs"].get("groups", 1) == 1
            return name if ok else None
        if op.max_inputs != 1 or len(data["inputs"]) != 1 or name in net.inputs:
            return None
        name = data["inputs"][0]
        if sum(1 for s in g.successors(name) if s in live) != 1:
            return None


# ---- identifiers and literals -------------------------------------------------------------

def _runtime_function(name: str):
    module = importlib.import_module(RUNTIME)
    fn = getattr(module, name, None) if name.isidentifier() else None
    return fn if inspect.isfunction(fn) else None


# Every name the generated code binds for a layer starts with one of these prefixes, and no
# other name in the generated module does (_reserved() checks it): a layer's output is
# `t_<label>`, its gradient `d_<label>`. Whatever the labels, they cannot shadow a kernel, a
# builtin (`float`), an import (`np`) or a method local, nor be mangled as a private name
# (`__a` inside a class becomes `_Net__a`; `t___a` is left alone).
TENSOR_PREFIX = "t_"
GRAD_PREFIX = "d_"


@lru_cache(maxsize=1)
def _reserved() -> frozenset[str]:
    """Names the generated module binds or reads besides the layers' own: keywords,
    builtins, the methods' locals, and every module-level name of the generated file
    (kernels, imports, Model). None of them may start with a layer prefix."""
    # From the imported modules, not their parsed source: parsing ~100 KB of runtime took
    # a third of `netspec train`'s start-up. tests/test_codegen.py checks both ways agree.
    module_names = {n for m in INLINED_MODULES for n in _module_names(m)}
    module_names |= set(importlib.import_module(RUNTIME).__all__) | {"Network"}
    reserved = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | METHOD_LOCALS \
        | frozenset(module_names) | frozenset(dir(builtins))
    clash = sorted(n for n in reserved if n.startswith((TENSOR_PREFIX, GRAD_PREFIX)))
    if clash:  # a runtime change broke the naming scheme: a bug in netspec, not in the spec
        raise RuntimeError(f"generated-code names {clash} use a layer-variable prefix")
    return reserved


def _module_names(module: str) -> frozenset[str]:
    """The names a module binds at its top level, read from the imported module: its own
    definitions and its non-netspec imports (what _module_definitions and _module_imports
    find in its source), without dunders or ``from __future__`` features."""
    mod = importlib.import_module(module)
    names = set()
    for name, value in vars(mod).items():
        if name.startswith("__") and name.endswith("__") or isinstance(value, __future__._Feature):
            continue
        owner = value.__name__ if isinstance(value, types.ModuleType) else \
            getattr(value, "__module__", None)
        from_netspec = isinstance(owner, str) and owner.split(".")[0] == "netspec"
        if from_netspec and (isinstance(value, types.ModuleType) or owner != module):
            continue  # imported from another netspec module: that module's name
        names.add(name)
    return frozenset(names)


def sanitize(name: str, reserved: frozenset[str] = frozenset()) -> str:
    """The Python identifier of a layer's output: `t_` + the layer id with every character
    but ASCII letters, digits and _ replaced by _ ("layer1.0.conv1" -> "t_layer1_0_conv1").
    `reserved`: the names another target's module uses (torchgen's), which must leave the
    prefixes free as well."""
    clash = [n for n in reserved | _reserved() if n.startswith((TENSOR_PREFIX, GRAD_PREFIX))]
    if clash:  # a bug in netspec, not in the spec
        raise RuntimeError(f"generated-code names {sorted(clash)} use a layer-variable prefix")
    return TENSOR_PREFIX + re.sub(r"[^0-9A-Za-z_]", "_", name)


def _layer_identifiers(names: list[str], reserved: frozenset[str] = frozenset()
                       ) -> dict[str, str]:
    """Unique identifiers for the layers; a clash (`a.b` and `a_b`) gets _2, _3, ... in
    layer order, skipping any identifier already taken."""
    taken: set[str] = set()
    out = {}
    for name in names:
        base = sanitize(name, reserved)
        ident, n = base, 2
        while ident in taken:
            ident, n = f"{base}_{n}", n + 1
        taken.add(ident)
        out[name] = ident
    return out


def _class_name(name: str) -> str:
    words = re.split(r"[^0-9A-Za-z]+", name)
    ident = "".join(w[:1].upper() + w[1:] for w in words) or "Net"
    if ident[0].isdigit():
        ident = "Net" + ident
    return ident + "Net" if ident in _reserved() else ident


def _literal(v: Any) -> str:
    """Python source for a plain value (number, bool, None, string, tuple/list of them)."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or isinstance(v, (bool, int, str)):
        return repr(v)
    if isinstance(v, float):
        return repr(v) if np.isfinite(v) else f"float({str(v)!r})"
    if isinstance(v, (tuple, list)):
        items = [_literal(x) for x in v]
        if isinstance(v, list):
            return "[" + ", ".join(items) + "]"
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as a literal")


def _comment(text: str) -> str:
    """Text safe inside a # comment: repr() escapes every line break."""
    return repr(text)[1:-1] if text.isprintable() else repr(text)


# ---- emitting source -----------------------------------------------------------------------

@dataclass
class Statement:
    lines: list[str]
    defines: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    guard: str | None = None  # run only `if guard:` (lines already indented for the block)


def _wrap(targets: list[str], func: str, args: list[str], indent: str = INDENT) -> list[str]:
    """`targets = func(args)` on one line if it fits, else with the arguments (and if need be
    the targets) packed onto continuation lines."""
    lhs = ", ".join(targets)
    line = f"{indent}{lhs} = {func}({', '.join(args)})"
    if len(line) <= WIDTH:
        return [line]
    cont = indent + "    "
    if len(f"{indent}{lhs} = {func}(") <= WIDTH:
        head = [f"{indent}{lhs} = {func}("]
    else:
        head = _pack(f"{indent}(", targets, indent + " ", f") = {func}(")
    return head + _pack(cont, args, cont, ")")


def _pack(first: str, items: list[str], cont: str, end: str) -> list[str]:
    lines, line = [], first
    for i, item in enumerate(items):
        piece = item + (end if i == len(items) - 1 else ",")
        if line not in (first, cont) and len(line) + 1 + len(piece) > WIDTH:
            lines.append(line)
            line = cont
        line += ("" if line in (first, cont) else " ") + piece
    return lines + [line]


def _with_dels(statements: list[Statement], keep: set[str]) -> list[str]:
    """The statements' lines, with `del` after the last use of every local not in `keep`, so an
    activation or gradient is freed as soon as nothing needs it."""
    refs: dict[str, list[int]] = {}
    for i, s in enumerate(statements):
        for name in s.uses + s.defines:
            refs.setdefault(name, []).append(i)
    lines = []
    for i, s in enumerate(statements):
        if s.guard and (i == 0 or statements[i - 1].guard != s.guard):
            lines.append(f"{INDENT}if {s.guard}:")
        lines += s.lines
        dead = []
        for name in dict.fromkeys(s.uses + s.defines):
            later = [j for j in refs[name] if j > i]
            if name not in keep and (not later or name not in statements[later[0]].uses):
                dead.append(name)
        if dead:
            lines.append(f"{INDENT}{'    ' if s.guard else ''}del {', '.join(dead)}")
    return lines


def _forward(p: Plan) -> list[str]:
    body = []
    for layer in p.layers:
        ins = [p.vars[i] for i in layer.inputs]
        arg = "[" + ", ".join(ins) + "]" if layer.as_list else ins[0]
        lines = _wrap([layer.var, f"c[{layer.name!r}]"], f"{layer.kernel}_forward",
                      [arg] + layer.slots + layer.kwargs)
        if layer.note:  # a fused layer (netspec/analysis/fusion.py)
            lines.insert(0, f"{INDENT}# {_comment(layer.note)} (fused)")
        body.append(Statement(lines, (layer.var,), tuple(ins)))
    used = [local for local, present in (
        ("p", any(s.startswith("p[") for layer in p.layers for s in layer.slots)),
        ("buf", any(s.startswith("buf[") for layer in p.layers for s in layer.slots)),
        ("rng", any(a == "rng=rng" for layer in p.layers for a in layer.kwargs))) if present]
    out = [f"    def _forward(self, {p.vars[p.input]}, train, c):",
           '        """The layers in topological order; c[layer] keeps what its backward needs."""']
    if used:
        stores = {"p": "self.params", "buf": "self.buffers", "rng": "self.rng"}
        out.append(f"{INDENT}{', '.join(used)} = {', '.join(stores[n] for n in used)}")
    out += _with_dels(body, {p.vars[p.output]})
    return out + [f"{INDENT}return {p.vars[p.output]}"]


def _serves_params(p: Plan) -> dict[str, bool]:
    """Layer id -> whether its output's gradient leads to a parameter gradient: the layer or
    one upstream of it has parameters. The others only carry the network input's gradient."""
    serves = {p.input: False}
    for layer in p.layers:
        has_params = bool(layer.grads) and any(layer.grads)
        serves[layer.output] = has_params or any(serves[i] for i in layer.inputs)
    return serves


def _backward(p: Plan) -> list[str]:
    """The backward statements; those that only build the input's gradient run `if input_grad`
    (a parameter layer reading such a tensor gets need_dx=input_grad when its kernel has it)."""
    grad = {p.output: "dout"}
    serves = _serves_params(p)
    guarded = INDENT + "    "
    body = []
    for layer in reversed(p.layers):
        targets, after = [], []
        for k, name in enumerate(layer.inputs):
            if name not in grad:
                grad[name] = GRAD_PREFIX + p.vars[name].removeprefix(TENSOR_PREFIX)
                targets.append(grad[name])
            else:  # a tensor that fans out: sum the gradients of its consumers
                part = "part" if len(layer.inputs) == 1 else f"part_{k}"
                targets.append(part)
                guard = None if serves[name] else "input_grad"
                after.append(Statement(
                    [f"{guarded if guard else INDENT}{grad[name]} = {grad[name]} + {part}"],
                    (grad[name],), (grad[name], part), guard))
        defines = tuple(targets)
        args = [grad[layer.output], f"c.pop({layer.name!r})"]
        if layer.grads is not None:
            targets += [f"g[{k!r}]" if k else "_" for k in layer.grads]
            backward = _runtime_function(f"{layer.kernel}_backward")
            if not all(serves[i] for i in layer.inputs) \
                    and "need_dx" in inspect.signature(backward).parameters:
                args.append("need_dx=input_grad")
        guard = None if serves[layer.output] else "input_grad"
        lines = _wrap(targets, f"{layer.kernel}_backward", args, guarded if guard else INDENT)
        body.append(Statement(lines, defines, (grad[layer.output],), guard))
        body += after
    result = grad.get(p.input, "None")
    out = ["    def _backward(self, dout, c, g, input_grad):",
           '        """The layers in reverse order; g[param] = dL/dparam; caches freed as used;',
           '        dL/dinput only if input_grad (else None)."""']
    out += _with_dels(body, {result})
    returned = result if result == "None" else f"{result} if input_grad else None"
    return out + [f"{INDENT}return {returned}"]


def _class(p: Plan) -> list[str]:
    out = [f"class {p.class_name}(Model):",
           '    """A network compiled from a netspec spec (see the header)."""',
           "",
           f"    name = {p.name!r}",
           f"    spec = {p.path!r}",
           f"    input_shape = {_literal(p.input_shape)}",
           *([f"    input_dtype = {p.input_dtype!r}"] if p.input_dtype != "float" else []),
           f"    output_shape = {_literal(p.output_shape)}",
           f"    head = {_literal(p.head)}",
           "    # threads unless netspec.threads sets them (netspec.runtime.parallel.auto_plan)",
           f"    splits_batch = {p.splits_batch!r}",
           f"    largest_layer_macs = {p.largest_layer_macs!r}",
           "    # name, shape, kind, init, fan_in, fan_out"]
    if p.tensors:
        out.append("    tensors = (")
        for name, s in p.tensors:
            args = [_literal(name), _literal(tuple(s.shape)), _literal(s.kind), _literal(s.init),
                    _literal(s.fan_in), _literal(s.fan_out)]
            out.append(f"        Tensor({', '.join(args)}),")
        out.append("    )")
    else:
        out.append("    tensors = ()")
    out += [""] + _forward(p) + [""] + _backward(p) + [""]
    fn, kwargs = p.loss
    out += ["    def data_loss(self, scores, y):",
            '        """The spec\'s loss of the scores -> (loss, dloss/dscores)."""',
            f"{INDENT}return {fn}({', '.join(['scores', 'y'] + kwargs)})"]
    return out


def _header(p: Plan, standalone: bool) -> list[str]:
    shape = ", ".join(str(d) for d in p.input_shape)
    scores = ", ".join(str(d) for d in p.output_shape)
    needs = "NumPy only (the runtime is copied in)" if standalone else "netspec and NumPy"
    return [f"# Generated by `netspec compile` from {_comment(p.path)}, network "
            + _comment(p.name) + ".",
            f"# Input: (N, {shape}) -> scores (N, {scores}). Needs {needs}.",
            "# Do not edit: change the spec and compile again.",
            '"""A NumPy network compiled by netspec: `Network(dtype, seed)` builds it."""']


def generate(net: Network, input_shape: tuple[int, ...] | None = None,
             standalone: bool = False) -> str:
    """The Python source of `net` as a model class (byte-identical for the same IR)."""
    from netspec.analysis import analyze

    verify(net)
    analyze(net, input_shape=tuple(input_shape) if input_shape else None)
    p = plan(net)
    out = _header(p, standalone) + [""]
    if standalone:
        imports, definitions = _inline(set(p.kernels) | {"Model", "Tensor", "set_threads"})
        note = "# ---- the netspec runtime this network calls (netspec.runtime, netspec.model)"
        out += imports + ["", note, ""]
        for d in definitions:
            out += ["", d.rstrip("\n"), ""]
        out.append("")
        out.append("# ---- the network")
    else:
        out.append("from netspec.model import Model, Tensor")
        # One name a line with a trailing comma: isort's form at any line length.
        out += [f"from {RUNTIME} import ("] + [f"    {n}," for n in p.kernels] + [")"]
    out += ["", ""] + _class(p) + ["", "", f"Network = {p.class_name}", ""]
    return "\n".join(out)


# ---- --standalone: copying the runtime ---------------------------------------------------

@cache
def _module_source(module: str) -> str:
    with open(importlib.import_module(module).__file__, encoding="utf-8") as f:
        return f.read()


@cache
def _module_definitions(module: str) -> tuple[dict[str, tuple[str, frozenset[str]]], ...]:
    """Top-level definitions of a module: name -> (source, names it references)."""
    source = _module_source(module)
    lines = source.splitlines(keepends=True)
    defs: dict[str, tuple[str, frozenset[str]]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the module docstring
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
        else:
            raise TypeError(f"{module}: cannot copy a top-level {type(node).__name__}")
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        text = "".join(lines[start - 1:node.end_lineno])
        refs = frozenset(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
        for name in names:
            defs[name] = (text, refs)
    return (defs,)


@cache
def _module_imports(module: str) -> dict[str, tuple[str, str | None, str]]:
    """Bound name -> (module, imported name or None for `import m`, alias) of the non-netspec
    top-level imports of a module."""
    out = {}
    for node in ast.parse(_module_source(module)).body:
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = (a.name, None, a.asname)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] not in ("netspec", "__future__"):
            for a in node.names:
                out[a.asname or a.name] = (node.module, a.name, a.asname)
    return out


def _inline(needed: set[str]) -> tuple[list[str], list[str]]:
    """(import lines, definition sources in module order) of everything `needed` reaches."""
    owner: dict[str, str] = {}
    for module in INLINED_MODULES:
        for name in _module_definitions(module)[0]:
            if name in owner:
                raise RuntimeError(f"{name} is defined in both {owner[name]} and {module}")
            owner[name] = module
    chosen, todo, bound = set(), list(needed), set()
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        if name not in owner:
            bound.add(name)
            continue
        chosen.add(name)
        todo += _module_definitions(owner[name])[0][name][1]
    texts, imports = [], {}
    for module in INLINED_MODULES:
        seen = set()
        for name, (text, _) in _module_definitions(module)[0].items():
            if name in chosen and text not in seen:
                seen.add(text)
                texts.append(text)
        for name, spec in _module_imports(module).items():
            if name in bound:
                imports[name] = spec
    return _import_lines(imports), texts


def _import_lines(imports: dict[str, tuple[str, str | None, str]]) -> list[str]:
    """isort's layout: standard library, then third party; `import m` before `from m import`."""
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    froms: dict[str, list[str]] = {}
    keyed = set()
    for m, n, a in imports.values():
        if n is None:
            keyed.add((m, f"import {m}" + (f" as {a}" if a else ""), False))
        else:
            froms.setdefault(m, []).append(f"{n} as {a}" if a else n)
    keyed |= {(m, f"from {m} import {', '.join(sorted(ns))}", True) for m, ns in froms.items()}
    lines = sorted((m.split(".")[0] not in stdlib, is_from, m, line) for m, line, is_from in keyed)
    out, group = [], None
    for third_party, _, _, line in lines:
        if group is not None and third_party != group:
            out.append("")
        group = third_party
        out.append(line)
    return out


# ---- in process -----------------------------------------------------------------------------

def load_source(source: str, filename: str) -> types.ModuleType:
    """Execute generated source as a fresh module; tracebacks show its lines."""
    module = types.ModuleType(f"netspec_compiled_{zlib.crc32(filename.encode()):08x}")
    module.__file__ = filename
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(builtins.compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - our own output
    return module


def compile(source: str | os.PathLike | Network, input_shape: tuple[int, ...] | None = None,
            dtype: str = "float32", seed: int = 0, allow_large: bool = False):
    """Compile a spec (a path, a bundled name like "resnet18", or a Network) to a Model.

    The model runs the same source `netspec compile` writes; `model.source` holds it.
    Parameters that would not fit in the machine's available memory are refused before
    they are allocated (a NetspecError with both figures) unless `allow_large`.
    """
    import netspec
    from netspec.analysis.memory import require_model_memory

    net = source if isinstance(source, Network) else netspec.load(os.fspath(source))
    if not allow_large:
        require_model_memory(net, input_shape, dtype)
    text = generate(net, input_shape)
    module = load_source(text, f"<netspec compiled {net.name}>")
    model = module.Network(dtype=dtype, seed=seed)
    model.source = text
    model.network = net  # for model.summary() and model.draw()
    return model
