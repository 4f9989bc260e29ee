"""Torch source stage: the analyzed IR -> the Python source of a torch.nn.Module.

The generated module holds one class with an `__init__` that builds a torch module for every
layer with tensors (named after the layer, nested in nn.ModuleDicts along the dots of its name,
so the state dict has the NumPy model's keys, and torchvision's for its architectures), and a
straight-line `forward` with one statement per live layer in topological order, each output
named after its layer as the NumPy generator names it. Each op says what it becomes
(`Op.torch_module`, `Op.torch_forward` in netspec/ops/); an op that does not is an error naming
the layer, the op and the target. Generating needs no torch; the file imports only torch.
"""
from __future__ import annotations

import io
import itertools
import keyword
import os
import tokenize
from dataclasses import dataclass

import networkx as nx

from netspec.diagnostics import Diagnostic, NetspecError
from netspec.ir import Network, verify
from netspec.ops import REGISTRY, NoLowering, ParamSpec

WIDTH = 100
INDENT = "        "
TARGET = "torch"

# Names a layer's variable in forward never takes: the file's imports and functions, the
# ops' helper functions included (Op.torch_helper_defs).
FILE_NAMES = frozenset({"self", "torch", "nn", "F", "loss", "Network"} | {
    source.removeprefix("def ").split("(", 1)[0]
    for op in REGISTRY.values() for source in op.torch_helper_defs})

# Attributes of torch.nn.Module / nn.ModuleDict and of the generated class: a submodule cannot
# take these names (torch's add_module refuses them). tests/test_torchgen.py checks this list
# against the installed torch.
MODULE_ATTRIBUTES = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init",
    "children", "clear", "compile", "cpu", "cuda", "double", "dump_patches", "eval",
    "extra_repr", "float", "forward", "get_buffer", "get_extra_state", "get_parameter",
    "get_submodule", "half", "ipu", "items", "keys", "load_state_dict", "modules", "mtia",
    "named_buffers", "named_children", "named_modules", "named_parameters", "parameters", "pop",
    "register_backward_hook", "register_buffer", "register_forward_hook",
    "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter",
    "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_",
    "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train",
    "type", "update", "values", "xpu", "zero_grad", "training",
    # the generated class's own
    "reset_parameters", "data_loss", "input_shape", "output_shape", "name", "spec",
})

# The train section's loss -> the torch source of `loss(scores, y)`, from the same keyword
# arguments the NumPy runtime's loss takes (validated by codegen._loss first).
LOSSES = {
    # softmax cross-entropy, mean over the batch: the NumPy softmax_loss
    "softmax_loss": lambda kw: "F.cross_entropy(scores.flatten(0, -2), y.flatten())",
    # CS231n's hinge sums over the classes where multi_margin_loss averages: times C
    "svm_loss": lambda kw: (
        f"scores.shape[1] * F.multi_margin_loss(scores, y, p={2 if kw.get('squared') else 1}, "
        f"margin={float(kw.get('delta', 1.0))!r})"),
}


@dataclass
class TorchLayer:
    name: str
    var: str
    module: str | None  # the expression of its torch module in forward (`self.conv1`)
    expression: str  # its output in forward
    inputs: list[str]


@dataclass
class TorchPlan:
    name: str
    path: str
    class_name: str
    input_var: str
    output_var: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    init: list[str]  # the __init__ statements that build the modules
    layers: list[TorchLayer]  # the live layers after the input, in topological order
    tensors: list[tuple[str, ParamSpec]]
    loss: str
    helpers: list[str]  # module-level functions the forward calls (Op.torch_helpers), once each


def _error(message: str, data: dict | None = None, hint: str | None = None) -> NetspecError:
    return NetspecError(Diagnostic("error", message, data["span"] if data else None, hint))


def _module_path(name: str, data: dict) -> list[str]:
    """The layer name's segments, each a name torch accepts for a submodule."""
    parts = name.split(".")
    for part in parts:
        if not part:
            raise _error(f"layer `{name}`: torch cannot name a submodule with an empty "
                         "segment", data)
        if part in MODULE_ATTRIBUTES or (part.isidentifier() and part.startswith("_")):
            raise _error(f"layer `{name}`: `{part}` is an attribute of torch.nn.Module, so it "
                         f"cannot name a submodule (target {TARGET})", data,
                         "rename the layer in the spec (a label such as `" + part + "1:`)")
    return parts


def concrete(net: Network, target: str) -> None:
    """Every tensor's shape is a number: a symbolic input size (`input x: [3, H, W]`) may
    reach activations, not parameters."""
    g = net.graph
    for name in net.order():
        data = g.nodes[name]
        shapes = [g.nodes[i]["shape"] for i in data["inputs"]]
        for s in REGISTRY[data["op"]].params(data["attrs"], shapes):
            if not all(isinstance(d, int) for d in s.shape):
                raise _error(f"layer `{name}`: the shape of its {s.name} "
                             f"[{', '.join(map(str, s.shape))}] depends on the input size "
                             f"(target {target})", data,
                             "give a concrete input size: --input 3x224x224 (input_shape=...)")


def _shape(shape: tuple) -> str:
    """A shape as source: sizes as numbers, symbolic ones (H, W) as their names' strings."""
    items = [str(d) if isinstance(d, int) else _str(str(d)) for d in shape]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _str(text: str) -> str:
    """A string literal: repr() (which escapes anything), in double quotes where it can be."""
    r = repr(text)
    return f'"{r[1:-1]}"' if r[0] == "'" and "'" not in text and '"' not in text else r


def _is_attribute(part: str) -> bool:
    return part.isidentifier() and part.isascii() and not keyword.iskeyword(part) \
        and not keyword.issoftkeyword(part)


class _Modules:
    """The __init__ statements building the module tree, and each layer's access path."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.containers: set[tuple[str, ...]] = set()
        self.leaves: set[tuple[str, ...]] = set()

    @staticmethod
    def access(parts: list[str] | tuple[str, ...]) -> str:
        head, rest = parts[0], parts[1:]
        expr = f"self.{head}" if _is_attribute(head) else f"getattr(self, {_str(head)})"
        return expr + "".join(f"[{_str(p)}]" for p in rest)

    def _assign(self, parts: tuple[str, ...], value: str) -> None:
        if len(parts) == 1 and not _is_attribute(parts[0]):
            self.lines += _format(f"self.add_module({_str(parts[0])}, {value})", INDENT)
        else:
            self.lines += _statement(self.access(parts), value)

    def add(self, name: str, data: dict, source: str) -> str:
        parts = tuple(_module_path(name, data))
        for k in range(1, len(parts)):
            prefix = parts[:k]
            if prefix in self.leaves:
                raise _error(f"layer `{name}` would nest inside layer `{'.'.join(prefix)}`, "
                             f"which owns tensors itself (target {TARGET})", data)
            if prefix not in self.containers:
                self.containers.add(prefix)
                self._assign(prefix, "nn.ModuleDict()")
        if parts in self.containers:
            raise _error(f"layer `{name}` owns tensors and also names a group of layers "
                         f"(target {TARGET})", data)
        self.leaves.add(parts)
        self._assign(parts, source)
        return self.access(parts)


def plan(net: Network) -> TorchPlan:
    """Ask every layer's op for its torch module and forward expression."""
    from netspec.codegen import _class_name, _layer_identifiers, _loss

    if len(net.inputs) != 1 or len(net.outputs) != 1:
        raise _error(f"network `{net.name}` has {len(net.inputs)} inputs and "
                     f"{len(net.outputs)} outputs; compile needs exactly one of each")
    concrete(net, TARGET)
    g = net.graph
    (inp,), (out,) = net.inputs, net.outputs
    live = nx.ancestors(g, out) | {out}
    order = net.order()
    vars_ = _layer_identifiers(order, FILE_NAMES)
    modules = _Modules()
    layers, tensors, helpers = [], [], []
    for name in order:
        data = g.nodes[name]
        op = REGISTRY[data["op"]]
        shapes = [g.nodes[i]["shape"] for i in data["inputs"]]
        specs = op.params(data["attrs"], shapes)
        tensors += [(f"{name}.{s.name}", s) for s in specs]
        if name == inp:
            continue
        try:
            source = op.torch_module(data["attrs"], shapes)
            module = modules.add(name, data, source) if source else None
            if specs and not source:
                raise NoLowering(op.name, TARGET)
            if name in live:
                expr = op.torch_forward(data["attrs"], shapes, [vars_[i] for i in data["inputs"]],
                                        module)
                layers.append(TorchLayer(name, vars_[name], module, expr, list(data["inputs"])))
                helpers += [h for h in op.torch_helpers(data["attrs"]) if h not in helpers]
        except NoLowering as exc:
            raise _error(f"layer `{name}`: {exc} (define {type(op).__name__}.torch_module/"
                         f"torch_forward in netspec/ops/)", data) from None
    fn, kwargs = _loss(net)
    return TorchPlan(net.name, net.path, _class_name(net.name), vars_[inp], vars_[out],
                     tuple(g.nodes[inp]["shape"]), tuple(g.nodes[out]["shape"]), modules.lines,
                     layers, tensors, _torch_loss(net, fn, kwargs), helpers)


def _torch_loss(net: Network, fn: str, kwargs: list[str]) -> str:
    if fn not in LOSSES:
        raise _error(f"loss `{fn[:-5]}` has no lowering to {TARGET}",
                     {"span": net.train_spans.get("loss")})
    import ast

    values = {k: ast.literal_eval(v) for k, v in (a.split("=", 1) for a in kwargs)}
    return LOSSES[fn](values)


# ---- emitting source ----------------------------------------------------------------------

def _brackets(expr: str) -> tuple[list[tuple[int, int]], dict[int, list[int]]]:
    """The depth-0 bracket pairs (open, close offsets) of an expression, and the offsets of
    the commas directly inside each (strings skipped: tokenize reads the literals)."""
    starts = [0]
    for line in expr.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    stack: list[int] = []
    pairs, commas = [], {}
    for tok in tokenize.generate_tokens(io.StringIO(expr).readline):
        if tok.type != tokenize.OP:
            continue
        at = starts[tok.start[0] - 1] + tok.start[1]
        if tok.string in "([{":
            stack.append(at)
            commas[at] = []
        elif tok.string in ")]}":
            opened = stack.pop()
            if not stack:
                pairs.append((opened, at))
        elif tok.string == "," and stack:
            commas[stack[-1]].append(at)
    return pairs, commas


def _format(expr: str, indent: str, prefix: str = "", suffix: str = "") -> list[str]:
    """`prefix + expr + suffix` within WIDTH, black's way: split the last bracket of the
    expression, its items on one continuation line if they fit, else one a line (and split
    again where an item is still too long)."""
    line = f"{indent}{prefix}{expr}{suffix}"
    pairs, commas = _brackets(expr)
    if len(line) <= WIDTH or not pairs:
        return [line]
    # the widest pair: a trailing subscript (`attn(x, x, x)[0]`) is no place to split
    opened, closed = max(reversed(pairs), key=lambda pair: pair[1] - pair[0])
    cuts = [opened] + commas[opened] + [closed]
    items = [expr[a + 1:b].strip() for a, b in itertools.pairwise(cuts)]
    items = [i for i in items if i]
    inner = indent + "    "
    head = [f"{indent}{prefix}{expr[:opened + 1]}"]
    tail = [f"{indent}{expr[closed:]}{suffix}"]
    joined = ", ".join(items)
    if len(inner + joined) <= WIDTH:
        return head + [inner + joined] + tail
    body = []
    for item in items:
        body += _format(item, inner, suffix=",")
    return head + body + tail


def _statement(target: str, expr: str, indent: str = INDENT) -> list[str]:
    """`target = expr`, split past WIDTH."""
    return _format(expr, indent, prefix=f"{target} = ")


def _init_table(p: TorchPlan) -> list[str]:
    from netspec.model import CONSTANT_INIT, INIT_STD

    normal = [(n, INIT_STD[s.init](s.fan_in, s.fan_out)) for n, s in p.tensors
              if s.init in INIT_STD]
    constant = [(n, CONSTANT_INIT[s.init]) for n, s in p.tensors if s.init in CONSTANT_INIT]
    out = ["# The spec's initialization: N(0, std^2) for the tensors with a random init (he,",
           "# xavier, normal), a constant for the others. reset_parameters() draws from torch's",
           "# generator (seed it with torch.manual_seed); netspec.compile(spec, target=\"torch\",",
           "# seed=s) loads the NumPy model's initial weights for seed s instead."]
    for table, rows in (("NORMAL_INIT", normal), ("CONSTANT_INIT", constant)):
        if rows:
            out.append(f"{table} = (")
            out += [f"    ({_str(name)}, {value!r})," for name, value in rows]
            out.append(")")
        else:
            out.append(f"{table} = ()")
    return out


def _class(p: TorchPlan) -> list[str]:
    out = [f"class {p.class_name}(nn.Module):",
           '    """A network compiled from a netspec spec (see the header)."""',
           "",
           f"    name = {_str(p.name)}",
           f"    spec = {_str(p.path)}",
           f"    input_shape = {_shape(p.input_shape)}",
           f"    output_shape = {_shape(p.output_shape)}",
           "    data_loss = staticmethod(loss)",
           "",
           "    def __init__(self, init: bool = True) -> None:",
           (f'{INDENT}"""The layers; init=False skips reset_parameters() for a caller that '
            'loads weights."""'),
           f"{INDENT}super().__init__()"]
    out += p.init
    out += [f"{INDENT}if init:",
            f"{INDENT}    self.reset_parameters()",
            "",
            "    @torch.no_grad()",
            "    def reset_parameters(self) -> None:",
            (f'{INDENT}"""(Re)initialize every tensor as the spec says (NORMAL_INIT, '
             'CONSTANT_INIT)."""'),
            f"{INDENT}tensors = self.state_dict(keep_vars=True)",
            f"{INDENT}for name, std in NORMAL_INIT:",
            f"{INDENT}    tensors[name].normal_(0.0, std)",
            f"{INDENT}for name, value in CONSTANT_INIT:",
            f"{INDENT}    tensors[name].fill_(value)",
            "",
            f"    def forward(self, {p.input_var}: torch.Tensor) -> torch.Tensor:",
            (f'{INDENT}"""Scores (N, {", ".join(map(str, p.output_shape))}) for a batch '
             f'(N, {", ".join(map(str, p.input_shape))}); the layers in topological order."""')]
    for layer in p.layers:
        out += _statement(layer.var, layer.expression)
    out.append(f"{INDENT}return {p.output_var}")
    return out


def generate(net: Network, input_shape: tuple[int, ...] | None = None) -> str:
    """The Python source of `net` as a torch.nn.Module class (byte-identical for the same IR)."""
    from netspec.analysis import analyze
    from netspec.codegen import _comment

    verify(net)
    analyze(net, input_shape=tuple(input_shape) if input_shape else None)
    p = plan(net)
    shape = ", ".join(str(d) for d in p.input_shape)
    scores = ", ".join(str(d) for d in p.output_shape)
    out = ["# Generated by `netspec compile --target torch`",
           f"# from {_comment(p.path)}, network {_comment(p.name)}.",
           f"# Input: (N, {shape}) -> scores (N, {scores}). Needs PyTorch only.",
           "# Do not edit: change the spec and compile again.",
           '"""A PyTorch network compiled by netspec: `Network()` builds it."""',
           "",
           "import torch",
           "from torch import nn",
           "from torch.nn import functional as F",
           ""]
    out += _init_table(p)
    for helper in p.helpers:
        out += ["", "", helper]
    out += ["", "",
            "def loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:",
            ('    """The spec\'s loss of the scores (N, C) for the labels y (N,), mean over '
             'the batch."""'),
            f"    return {p.loss}",
            "", ""]
    out += _class(p)
    out += ["", "", f"Network = {p.class_name}", ""]
    return "\n".join(out)


# ---- in process -----------------------------------------------------------------------------

def initial_state(net: Network, seed: int, dtype: str) -> dict:
    """The NumPy model's initial tensors for `seed` (netspec.model.initial_value, cast to the
    dtype as the NumPy model casts them), by state-dict name."""
    import numpy as np

    from netspec.model import Tensor, initial_value

    g = net.graph
    state = {}
    for name in net.order():
        data = g.nodes[name]
        shapes = [g.nodes[i]["shape"] for i in data["inputs"]]
        for s in REGISTRY[data["op"]].params(data["attrs"], shapes):
            t = Tensor(f"{name}.{s.name}", s.shape, s.kind, s.init, s.fan_in, s.fan_out)
            state[t.name] = initial_value(t, seed).astype(np.dtype(dtype))
    return state


def compile(source: str | os.PathLike | Network, input_shape: tuple[int, ...] | None = None,
            dtype: str = "float32", seed: int = 0):
    """Compile a spec to an instance of its generated torch.nn.Module, holding the NumPy
    model's initial weights for `seed` (so both start equal); `model.source` is the file."""
    import netspec
    from netspec.codegen import load_source

    torch = require_torch()
    net = source if isinstance(source, Network) else netspec.load(os.fspath(source))
    text = generate(net, input_shape)
    module = load_source(text, f"<netspec torch {net.name}>")
    # Built on the meta device, so torch's own init and reset_parameters() cost nothing, then
    # given the NumPy model's tensors themselves (assign=True keeps their dtype).
    with torch.device("meta"):
        model = module.Network(init=False)
    state = {k: torch.from_numpy(v) for k, v in initial_state(net, seed, dtype).items()}
    model.load_state_dict(state, assign=True)
    model.source = text
    return model


def require_torch():
    """torch, or a NetspecError saying which extra installs it."""
    try:
        import torch
    except ImportError:
        raise NetspecError(Diagnostic(
            "error", "the torch target needs PyTorch, which is not installed",
            hint="pip install 'netspec[torch]'")) from None
    return torch
