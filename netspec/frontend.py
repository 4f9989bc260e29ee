"""The whole front end with error recovery: parse, lower, shapes, train settings -> every
diagnostic of a spec at once (`netspec check`, the language server, the web view).

The stages are the usual ones (parser -> lower -> analysis); each recovers after an error
and reports the next independent one, so "no errors" here means every other command
accepts the spec. The single-error API (`netspec.load`, `netspec.parse`) is unchanged.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from netspec import syntax as S
from netspec.diagnostics import Diagnostic, NetspecError, Span
from netspec.ir import Network


@dataclass
class CheckResult:
    """Every diagnostic of one spec, in source order, and what could be built from it."""

    path: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    module: S.Module | None = None  # the AST of every statement that parsed
    network: Network | None = None  # lowered (and shape-annotated when error-free)
    library: list[str] | None = None  # the blocks checked, when the file has no network

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


def check_text(text: str, filename: str = "<string>", network: str | None = None,
               overrides: dict[str, Any] | None = None,
               allow_imports: Iterable[str] = ()) -> CheckResult:
    """Check spec text through the whole front end; never raises for a broken spec."""
    from netspec.lower import lower_recovering
    from netspec.parser import parse_module_recovering

    result = CheckResult(filename)
    module, syntax = parse_module_recovering(text, filename)
    result.module = module
    found = list(syntax)
    if module is not None:
        net, lowering = lower_recovering(module, network, overrides, syntax, allow_imports)
        found += lowering
        if net is None and network is None and not any(
                d.kind == "network" for d in module.definitions):
            result.library = check_library(module, found, allow_imports)
        elif net is not None:
            result.network = net
            found += _check_network(net, clean=not _has_errors(found))
    result.diagnostics = _ordered(found)
    return result


def check_file(path: str, network: str | None = None,
               overrides: dict[str, Any] | None = None,
               allow_imports: Iterable[str] = ()) -> CheckResult:
    """Check a .net file (or a bundled spec name); an unreadable file is one diagnostic."""
    from netspec.specfiles import read_spec

    try:
        shown, text = read_spec(path)
    except NetspecError as exc:
        return CheckResult(path, list(exc.diagnostics))
    return check_text(text, shown, network, overrides, allow_imports)


def _has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diagnostics)


def _check_network(net: Network, clean: bool) -> list[Diagnostic]:
    """Shapes (every independent mismatch), then, if all is well, the full analysis and the
    train settings, each key on its own so that every bad setting is reported."""
    from netspec.analysis.shapes import infer_shapes

    errors: list[Diagnostic] = []
    warnings = list(net.warnings) + infer_shapes(net, errors=errors)
    errors = _distinct_spans(errors)
    errors += _check_train(net)
    if clean and not errors:
        import netspec

        try:
            report = netspec.analyze(net)
        except NetspecError as exc:
            errors += exc.diagnostics
        else:
            warnings = list(net.warnings) + [w for w in report.warnings if w not in warnings]
    return errors + _unique(warnings)


def _check_train(net: Network) -> list[Diagnostic]:
    from netspec.train import ConfigError, TrainConfig

    errors = []
    for key, value in net.train.items():
        try:
            TrainConfig.from_spec({key: value})
        except ConfigError as exc:
            errors.append(Diagnostic("error", f"train.{exc.key}: {exc.message}",
                                     net.train_spans.get(key), exc.hint))
    return errors


def check_library(module: S.Module, found: list[Diagnostic],
                  allow_imports: Iterable[str] = ()) -> list[str]:
    """A file of blocks only: each block is lowered on its own as far as its parameters
    allow. Blocks whose parameters all have defaults are instantiated (names, arguments and
    values checked); the others are checked without values (ops, blocks, argument names,
    tensors). Shapes need a caller's input and are checked by the files that import it."""
    from netspec.lower import check_block_alone, load_library

    lib = load_library(module, errors=[], allow_imports=allow_imports)
    checked = []
    for d in module.definitions:
        if d.kind == "block" and lib.blocks.get(d.name) is d:
            found += check_block_alone(lib, d)
            checked.append(d.name)
    return checked


def _distinct_spans(errors: list[Diagnostic]) -> list[Diagnostic]:
    """One shape error per place in the source: a block used 20 times reports once."""
    seen: set[Span | None] = set()
    out = []
    for d in errors:
        if d.span not in seen:
            seen.add(d.span)
            out.append(d)
    return out


def _unique(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    seen, out = set(), []
    for d in diagnostics:
        key = (d.severity, d.message, d.span)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _ordered(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """Errors first, each group in source order (diagnostics of other files after)."""
    def key(d: Diagnostic):
        where = (0, "", 0, 0) if d.span is None else (1, d.span.path, d.span.line, d.span.col)
        return (d.severity != "error", where)

    return sorted(_unique(diagnostics), key=key)


def to_json(diagnostic: Diagnostic) -> dict[str, Any]:
    """One diagnostic as `netspec check --format json` writes it (1-based lines and
    columns; `end` is exclusive)."""
    span = diagnostic.span
    return {
        "file": span.path if span else None,
        "line": span.line if span else None,
        "column": span.col if span else None,
        "end": {"line": span.end_line, "column": span.end_col} if span else None,
        "severity": diagnostic.severity,
        "message": diagnostic.message,
        "hint": diagnostic.hint,
        "notes": [{"message": n.message,
                   "file": n.span.path if n.span else None,
                   "line": n.span.line if n.span else None,
                   "column": n.span.col if n.span else None} for n in diagnostic.notes],
    }
