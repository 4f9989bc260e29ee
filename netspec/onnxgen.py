"""ONNX stage: the analyzed IR -> an ONNX model of the eval-mode network (onnx package).

Each live layer's op adds its nodes (`Op.onnx` in netspec/ops/) to a Graph that names the
layer's main node and output tensor after the layer, helper nodes `<layer>/<what>`, and the
parameters `<layer>.<name>` exactly as the state dict does. Batch norm uses its running
statistics and dropout is left out: the graph is the eval-mode network. The batch axis is
dynamic (`N`); the weights come from a state dict (a checkpoint) or from the spec's
initialization as the NumPy model draws it. Needs `onnx`, never torch.
"""
from __future__ import annotations

import os
from typing import Any

import networkx as nx
import numpy as np

from netspec.diagnostics import Diagnostic, NetspecError
from netspec.ir import Network, verify
from netspec.ops import REGISTRY, NoLowering

OPSET = 18  # Resize with axes (upsample to a size); onnxruntime 1.14 and later run it
IR_VERSION = 8  # the IR of opset 17
TARGET = "onnx"
BATCH = "N"


def require_onnx():
    """The onnx package, or a NetspecError saying which extra installs it."""
    try:
        import onnx
    except ImportError:
        raise NetspecError(Diagnostic("error", "ONNX export needs the onnx package, which is "
                                      "not installed", hint="pip install 'netspec[onnx]'")
                           ) from None
    return onnx


class Graph:
    """The nodes of the graph being built; ops add theirs through node, param and constant."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.params: list[str] = []  # state-dict names the graph reads, in first-use order
        self.layer = ""
        self._names: set[str] = set()

    def _unique(self, name: str) -> str:
        if name in self._names:
            raise NetspecError(Diagnostic("error", f"layer `{self.layer}`: the ONNX name "
                                          f"`{name}` is taken twice (target {TARGET})"))
        self._names.add(name)
        return name

    def node(self, op_type: str, inputs: list[str], suffix: str | None = None, **attrs) -> str:
        """Add a node; its name and output are the layer's name, or `<layer>/<suffix>` for a
        helper node. Returns the output tensor's name."""
        from onnx import helper

        name = self._unique(self.layer if suffix is None else f"{self.layer}/{suffix}")
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name

    def multi(self, op_type: str, inputs: list[str], suffix: str, outputs: list[str | None],
              **attrs) -> list[str]:
        """Add a node with several outputs (LSTM's Y and Y_h, Split's parts): output k is named
        `<layer>/<suffix>:<outputs[k]>`, or left out ("") where outputs[k] is None. Returns
        the output names."""
        from onnx import helper

        name = self._unique(f"{self.layer}/{suffix}")
        names = ["" if o is None else self._unique(f"{name}:{o}") for o in outputs]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=name, **attrs))
        return names

    def matmul(self, x: str, weight: str, bias: str | None, suffix: str | None = None) -> str:
        """x @ weightᵀ (+ bias) over the last axis of x, for a torch-layout (out, in) weight on
        a [N, T, in] tensor (Gemm takes matrices only)."""
        base = weight.rsplit(".", 1)[-1] if suffix is None else suffix
        w_t = self.node("Transpose", [weight], suffix=f"{base}_t", perm=[1, 0])
        if bias is None:
            return self.node("MatMul", [x, w_t], suffix=suffix)
        product = self.node("MatMul", [x, w_t], suffix=f"{base}_matmul")
        return self.node("Add", [product, bias], suffix=suffix)

    def param(self, local: str) -> str:
        """The initializer of this layer's tensor `local` ("weight", "running_mean")."""
        name = f"{self.layer}.{local}"
        if name not in self.params:
            self.params.append(name)
        return name

    def constant(self, value: Any, suffix: str) -> str:
        """A Constant node: integer lists become int64 tensors, anything else float32."""
        from onnx import helper, numpy_helper

        array = np.asarray(value)
        if array.dtype.kind not in "iuf":
            raise NetspecError(Diagnostic(
                "error", f"layer `{self.layer}`: its ONNX form needs concrete sizes, not "
                f"{value}", hint="give a concrete input size: --input 3x224x224"))
        array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32)
        name = self._unique(f"{self.layer}/{suffix}")
        self.nodes.append(helper.make_node("Constant", [], [name], name=name,
                                           value=numpy_helper.from_array(array, name)))
        return name


def _error(message: str, data: dict | None = None, hint: str | None = None) -> NetspecError:
    return NetspecError(Diagnostic("error", message, data["span"] if data else None, hint))


def _check_state(net: Network, state: dict, tensors: dict[str, tuple]) -> None:
    """The weights fit the network exactly (names and shapes), as a strict load would."""
    problems = [f"missing {n}" for n in tensors if n not in state]
    problems += [f"unexpected {n}" for n in state if n not in tensors
                 and not n.endswith("num_batches_tracked")]
    problems += [f"{n}: weights {list(np.shape(v))} vs network {list(tensors[n])}"
                 for n, v in state.items() if n in tensors and tuple(np.shape(v)) != tensors[n]]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; ... {len(problems) - 6} more"
                                           if len(problems) > 6 else "")
        raise _error(f"the weights do not fit network `{net.name}`: {shown}")


def build(net: Network, state: dict | None = None, input_shape: tuple[int, ...] | None = None,
          seed: int = 0):
    """The ONNX ModelProto of `net` in eval mode, checked by onnx.checker. `state`: tensors by
    state-dict name (default: the spec's initialization for `seed`, as the NumPy model)."""
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper

    from netspec.analysis import analyze
    from netspec.torchgen import concrete, initial_state

    verify(net)
    analyze(net, input_shape=tuple(input_shape) if input_shape else None)
    if len(net.inputs) != 1 or len(net.outputs) != 1:
        raise _error(f"network `{net.name}` has {len(net.inputs)} inputs and "
                     f"{len(net.outputs)} outputs; export needs exactly one of each")
    concrete(net, TARGET)
    g_ir = net.graph
    (inp,), (out,) = net.inputs, net.outputs
    tensors = {}
    for name in net.order():
        data = g_ir.nodes[name]
        shapes = [g_ir.nodes[i]["shape"] for i in data["inputs"]]
        for s in REGISTRY[data["op"]].params(data["attrs"], shapes):
            tensors[f"{name}.{s.name}"] = tuple(s.shape)
    if state is None:
        state = initial_state(net, seed, "float32")
    _check_state(net, state, tensors)

    graph = Graph()
    graph._names.add(inp)
    outputs = {inp: inp}  # layer -> the name of the tensor holding its output
    live = nx.ancestors(g_ir, out) | {out}
    for name in net.order():
        if name == inp or name not in live:
            continue
        data = g_ir.nodes[name]
        op = REGISTRY[data["op"]]
        graph.layer = name
        try:
            outputs[name] = op.onnx(graph, data["attrs"],
                                    [g_ir.nodes[i]["shape"] for i in data["inputs"]],
                                    [outputs[i] for i in data["inputs"]])
        except NoLowering as exc:
            raise _error(f"layer `{name}`: {exc} (define {type(op).__name__}.onnx in "
                         "netspec/ops/)", data) from None
    result = outputs[out]
    if result == inp or result != out and result in net.inputs:
        graph.layer = out
        result = graph.node("Identity", [result], suffix="output")
    for p in graph.params:
        graph._unique(p)
    elem = TensorProto.FLOAT
    # token ids (`input x: [T] int`) are int64, as onnxruntime's Gather takes them
    in_elem = TensorProto.INT64 if g_ir.nodes[inp]["attrs"].get("dtype") == "int" else elem
    # a symbolic input size (H, W) stays a named axis, like the batch
    in_shape = [BATCH, *(d if isinstance(d, int) else str(d) for d in g_ir.nodes[inp]["shape"])]
    out_shape = [BATCH, *(d if isinstance(d, int) else str(d) for d in g_ir.nodes[out]["shape"])]
    initializers = [numpy_helper.from_array(np.asarray(state[p], dtype=np.float32), p)
                    for p in graph.params]
    onnx_graph = helper.make_graph(
        graph.nodes, net.name, [helper.make_tensor_value_info(inp, in_elem, in_shape)],
        [helper.make_tensor_value_info(result, elem, out_shape)], initializers)
    model = helper.make_model(onnx_graph, producer_name="netspec",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    model.doc_string = f"netspec export of network {net.name!r} from {net.path!r} (eval mode)"
    onnx.checker.check_model(model)
    return model


def read_weights(path: str) -> dict[str, np.ndarray]:
    """The model tensors of a netspec checkpoint or of an .npz state dict (Model.save)."""
    from netspec.train.checkpoint import CheckpointError, load_checkpoint, read_arrays

    try:
        arrays = read_arrays(path)
        if "format_version" in arrays:
            return load_checkpoint(path).model_state()
    except CheckpointError as exc:
        raise NetspecError(Diagnostic("error", f"--weights {path}: {exc.message}")) from None
    return arrays


def export(source: str | os.PathLike | Network, path: str | os.PathLike | None = None,
           weights: str | dict | None = None, input_shape: tuple[int, ...] | None = None,
           seed: int = 0):
    """Export a spec (a path, a bundled name, or a Network) as an ONNX model; write it to
    `path` if given (atomically). weights: a checkpoint/.npz path or a state dict (default:
    the spec's initialization for `seed`). Returns the onnx.ModelProto."""
    import netspec

    require_onnx()
    net = source if isinstance(source, Network) else netspec.load(os.fspath(source))
    state = read_weights(os.fspath(weights)) if isinstance(weights, (str, os.PathLike)) \
        else weights
    model = build(net, state, input_shape, seed)
    if path is not None:
        _write(model, os.fspath(path))
    return model


def _write(model, path: str) -> None:
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".netspec-", suffix=".onnx", dir=folder)
    except OSError as exc:
        raise NetspecError(Diagnostic("error", f"{path}: {exc.strerror}")) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
