"""netspec: write a neural network once as a .net spec; analyze, draw, compile and train it.

The pipeline, one stage per module (data flows one way):

    grammars/netspec.lark -> parse -> lower -> analyze -> render | codegen -> train
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from netspec.diagnostics import Diagnostic, NetspecError
from netspec.ir import Network, verify

__version__ = "0.1.0"


def parse(text: str, filename: str = "<string>", network: str | None = None,
          overrides: dict[str, Any] | None = None, allow_imports: Iterable[str] = ()) -> Network:
    """Parse spec text and lower it to the IR (imports resolve relative to `filename`).

    Imports may reach `filename`'s directory tree (the working directory for text without
    a file), the bundled library, and the directories listed in `allow_imports`."""
    from netspec.lower import lower
    from netspec.parser import parse_module

    net = lower(parse_module(text, filename), network, overrides, allow_imports)
    if net.train:  # validated here, so check and compile report a bad setting at its line
        from netspec.train.config import check_train_section
        check_train_section(net)
    return net


def load(path: str, network: str | None = None, overrides: dict[str, Any] | None = None,
         allow_imports: Iterable[str] = ()) -> Network:
    """Read a .net file (or a name from the bundled library, e.g. "resnet50") into the IR."""
    from netspec.specfiles import read_spec

    path, text = read_spec(path)
    return parse(text, path, network, overrides, allow_imports)


def compile(source: Any, input_shape: tuple[int, ...] | None = None, dtype: str = "float32",
            seed: int = 0, target: str = "numpy", allow_large: bool = False):
    """Compile a spec (a path, a bundled name like "resnet18", or a Network) for a target:
    "numpy" (default): a trainable netspec Model; "torch": an instance of the generated
    torch.nn.Module with the NumPy model's initial weights for the same seed. Parameters
    that would not fit in the machine's available memory are refused before allocating
    (NumPy target) unless `allow_large`."""
    if target == "numpy":
        from netspec.codegen import compile as compile_numpy
        return compile_numpy(source, input_shape, dtype, seed, allow_large=allow_large)
    if target == "torch":
        from netspec.torchgen import compile as compile_torch
        return compile_torch(source, input_shape, dtype, seed)
    raise ValueError(f"unknown target {target!r}: use 'numpy' or 'torch'")


def export(source: Any, path: Any = None, weights: Any = None,
           input_shape: tuple[int, ...] | None = None, seed: int = 0):
    """Export a spec's eval-mode network to ONNX (netspec.onnxgen.export): returns the
    onnx.ModelProto and writes it to `path` if given. weights: a checkpoint/.npz path or a
    state dict (default: the spec's initialization for `seed`)."""
    from netspec.onnxgen import export as export_onnx
    return export_onnx(source, path, weights, input_shape, seed)


def __getattr__(name: str):
    # Later stages load on first use so `netspec check` stays fast and light.
    if name == "analyze":
        from netspec.analysis import analyze
        return analyze
    if name == "draw":
        from netspec.render import draw
        return draw
    if name == "threads":
        from netspec.train.threads import threads
        return threads
    if name == "fit":
        from netspec.train.fit import fit
        return fit
    raise AttributeError(name)


__all__ = [
    "Diagnostic",
    "NetspecError",
    "Network",
    "analyze",
    "compile",
    "draw",
    "export",
    "fit",
    "load",
    "parse",
    "threads",
    "verify",
]
