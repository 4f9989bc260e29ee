"""Language server (`netspec lsp`): the recovering front end behind the Language Server
Protocol, over stdio, with pygls.

Every open document is checked on each change (netspec.frontend.check_text: parse, lower,
shapes, train settings) and the server publishes all its diagnostics, hints and notes as
related information. On that result it answers hover (a layer's output shape, parameters,
MACs and receptive field; an op's or block's signature), go to definition (blocks, tensors,
imports), completion (op, block, tensor and argument names), document symbols (networks,
blocks, labelled layers, tensors), formatting (netspec.fmt), and quick fixes for the
"did you mean" hints.

Positions: LSP lines and characters are 0-based, netspec spans 1-based with an exclusive
end; columns count characters (exact for the ASCII that specs are written in).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from lsprotocol import types as T
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from netspec import syntax as S
from netspec.diagnostics import Diagnostic, Span
from netspec.frontend import CheckResult, check_text

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class _Document:
    version: int | None
    text: str
    result: CheckResult


class NetspecServer(LanguageServer):
    """The pygls server with the last check of every open document."""

    def __init__(self) -> None:
        from netspec import __version__

        super().__init__("netspec", __version__,
                         text_document_sync_kind=T.TextDocumentSyncKind.Full)
        self.documents: dict[str, _Document] = {}

    def analyze(self, uri: str, version: int | None = None) -> _Document:
        text = self.workspace.get_text_document(uri).source
        doc = self.documents.get(uri)
        if doc is None or doc.text != text:
            doc = _Document(version, text, check_text(text, _path(uri)))
            self.documents[uri] = doc
        return doc

    def publish(self, uri: str, version: int | None = None) -> None:
        doc = self.analyze(uri, version)
        diagnostics = [_lsp_diagnostic(d, uri, doc.result.path) for d in doc.result.diagnostics]
        self.text_document_publish_diagnostics(
            T.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics, version=version))


def _path(uri: str) -> str:
    """The file system path of a document (imports resolve beside it), shown relative."""
    path = to_fs_path(uri) or uri
    rel = os.path.relpath(path) if os.path.isabs(path) else path
    return rel if not rel.startswith("..") else path


def _uri(path: str) -> str:
    return from_fs_path(os.path.abspath(path)) or path


def _range(span: Span | None) -> T.Range:
    if span is None:
        return T.Range(T.Position(0, 0), T.Position(0, 0))
    return T.Range(T.Position(span.line - 1, span.col - 1),
                   T.Position(span.end_line - 1, span.end_col - 1))


def _lsp_diagnostic(d: Diagnostic, uri: str, path: str) -> T.Diagnostic:
    """A netspec diagnostic as LSP's: the hint and the notes become related information; an
    error located in another file (an import) is shown at the top of this one."""
    here = d.span is not None and d.span.path == path
    message = d.message if here or d.span is None else f"{d.span}: {d.message}"
    related = [T.DiagnosticRelatedInformation(_location(n.span, uri, path), n.message)
               for n in d.notes if n.span is not None]
    if d.hint:
        related.append(T.DiagnosticRelatedInformation(
            _location(d.span if here else None, uri, path), f"hint: {d.hint}"))
    severity = T.DiagnosticSeverity.Error if d.severity == "error" else \
        T.DiagnosticSeverity.Warning
    return T.Diagnostic(range=_range(d.span if here else None), message=message,
                        severity=severity, source="netspec",
                        related_information=related or None)


def _location(span: Span | None, uri: str, path: str) -> T.Location:
    if span is None or span.path == path:
        return T.Location(uri, _range(span))
    return T.Location(_uri(span.path), _range(span))


def _contains(span: Span | None, line: int, col: int) -> bool:
    """Is the 1-based (line, col) inside span (its end included, for a cursor after a word)?"""
    return span is not None and (span.line, span.col) <= (line, col) <= (span.end_line,
                                                                          span.end_col)


def _size(span: Span) -> tuple[int, int]:
    return (span.end_line - span.line, span.end_col - span.col)


def _word_at(text: str, position: T.Position) -> str | None:
    lines = text.splitlines()
    if position.line >= len(lines):
        return None
    line = lines[position.line]
    for m in _WORD.finditer(line):
        if m.start() <= position.character <= m.end():
            return m.group()
    return None


# ---- hover -----------------------------------------------------------------------------

def hover_text(result: CheckResult, text: str, position: T.Position) -> str | None:
    """Markdown for the layer (or block instance, or op) under the cursor."""
    line, col = position.line + 1, position.character + 1
    net = result.network
    if net is not None:
        layers = [(name, data) for name, data in net.graph.nodes(data=True)
                  if data["span"].path == result.path and _contains(data["span"], line, col)]
        if layers:
            name, data = min(layers, key=lambda nd: _size(nd[1]["span"]))
            return _layer_markdown(name, data)
        instances = _instances_at(net, result.path, line, col)
        if instances:
            return _block_markdown(net, instances)
    word = _word_at(text, position)
    if word is None:
        return None
    from netspec.ops import lookup

    op = lookup(word)
    if op is not None:
        return f"```\n{op.signature()}\n```\n{op.doc}".strip()
    block = _blocks(result).get(word)
    if block is not None:
        params = ", ".join(p.name + (" = …" if p.default is not None else "")
                           for p in block.params)
        return f"```\nblock {block.name}({params})\n```\ndefined at {block.name_span}"
    return None


def _layer_markdown(name: str, data: dict[str, Any]) -> str:
    from netspec.diagnostics import show_value

    args = ", ".join(f"{k}={show_value(list(v) if isinstance(v, tuple) else v)}"
                     for k, v in data["attrs"].items() if v is not None)
    lines = [f"**{name}**: `{data['op']}({args})`"]
    facts = []
    if data.get("shape") is not None:
        facts.append("output " + "[" + ", ".join(str(d) for d in data["shape"]) + "]")
    if "params" in data:
        count = sum(_numel(p.shape) for p in data["params"] if p.kind == "param")
        facts.append(f"{count:,} parameters")
    if "macs" in data:
        facts.append(f"{data['macs']:,} MACs")
    rf = data.get("receptive_field")
    if rf is not None:
        facts.append(f"receptive field {_pair(rf.size)}, jump {_pair(rf.jump)}")
    if facts:
        lines.append(" · ".join(facts))
    if data["path"]:
        lines.append("in " + " › ".join(f"{f.instance} ({f.block})" for f in data["path"]))
    return "\n\n".join(lines)


def _instances_at(net, path: str, line: int, col: int) -> dict[str, list[str]]:
    """Block instances whose call is under the cursor: {instance: [its layers]}."""
    found: dict[str, list[str]] = {}
    for name, data in net.graph.nodes(data=True):
        for frame in data["path"]:
            if frame.span.path == path and _contains(frame.span, line, col):
                found.setdefault(frame.instance, []).append(name)
                break
    return found


def _block_markdown(net, instances: dict[str, list[str]]) -> str:
    layers = [n for names in instances.values() for n in names]
    nodes = [net.node(n) for n in layers]
    block = nodes[0]["path"][-1].block if nodes[0]["path"] else "?"
    last = net.node(instances[list(instances)[-1]][-1])
    lines = [f"**{', '.join(instances)}**: block `{block}` × {len(instances)}"
             if len(instances) > 1 else f"**{next(iter(instances))}**: block `{block}`"]
    facts = []
    if last.get("shape") is not None:
        facts.append("output " + "[" + ", ".join(str(d) for d in last["shape"]) + "]")
    if all("params" in d for d in nodes):
        count = sum(_numel(p.shape) for d in nodes for p in d["params"] if p.kind == "param")
        facts.append(f"{count:,} parameters")
    if all("macs" in d for d in nodes):
        facts.append(f"{sum(d['macs'] for d in nodes):,} MACs")
    rf = last.get("receptive_field")
    if rf is not None:
        facts.append(f"receptive field {_pair(rf.size)}, jump {_pair(rf.jump)}")
    lines.append(" · ".join(facts) + f" · {len(layers)} layers")
    return "\n\n".join(lines)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _pair(pair) -> str:
    a, b = (int(x) if float(x).is_integer() else x for x in pair)
    return f"{a}" if a == b else f"{a}x{b}"


# ---- definitions and symbols ----------------------------------------------------------------

def _blocks(result: CheckResult) -> dict[str, S.Definition]:
    """Every block the document sees, its imports' included."""
    if result.module is None:
        return {}
    from netspec.lower import load_library

    return load_library(result.module, errors=[]).blocks


def definition(result: CheckResult, text: str, position: T.Position, uri: str
               ) -> T.Location | None:
    """Where the block, tensor or import under the cursor is defined."""
    module = result.module
    if module is None:
        return None
    line, col = position.line + 1, position.character + 1
    for imp in module.imports:
        if _contains(imp.span, line, col):
            found = _resolve_import(result.path, imp.path)
            return T.Location(_uri(found), _range(None)) if found else None
    word = _word_at(text, position)
    if word is None:
        return None
    block = _blocks(result).get(word)
    if block is not None:
        return _location(block.name_span, uri, result.path)
    for d in module.definitions:
        if _contains(d.span, line, col):
            span = _tensor_definition(d.body, word)
            if span is not None:
                return T.Location(uri, _range(span))
    return None


def _resolve_import(path: str, name: str) -> str | None:
    from netspec.lower import library_dir

    base = os.path.dirname(path)
    for candidate in (os.path.join(base, name), os.path.join(library_dir(), name)):
        if os.path.isfile(candidate):
            return candidate
    return None


def _tensor_definition(body: tuple[S.Stmt, ...], name: str) -> Span | None:
    for stmt in body:
        if isinstance(stmt, S.Assign) and stmt.name == name:
            return stmt.name_span
        if isinstance(stmt, (S.InputStmt, S.Let)) and stmt.name == name:
            return stmt.span
        if isinstance(stmt, S.If):
            found = _tensor_definition(stmt.then + stmt.otherwise, name)
            if found is not None:
                return found
    return None


def document_symbols(result: CheckResult) -> list[T.DocumentSymbol]:
    """Networks and blocks, each with its tensors and labelled layers."""
    if result.module is None:
        return []
    out = []
    for d in result.module.definitions:
        kind = T.SymbolKind.Class if d.kind == "network" else T.SymbolKind.Function
        children = [T.DocumentSymbol(name=name, kind=k, range=_range(span),
                                     selection_range=_range(span), detail=detail)
                    for name, k, span, detail in _members(d.body)]
        out.append(T.DocumentSymbol(name=d.name, kind=kind, range=_range(d.span),
                                    selection_range=_range(d.name_span), detail=d.kind,
                                    children=children or None))
    return out


def _members(node: Any) -> list[tuple[str, T.SymbolKind, Span, str]]:
    """(name, kind, span, detail) of the tensors and labelled stages under a node."""
    out: list[tuple[str, T.SymbolKind, Span, str]] = []
    if isinstance(node, tuple):
        for item in node:
            out += _members(item)
    elif isinstance(node, S.InputStmt):
        out.append((node.name, T.SymbolKind.Variable, node.span, "input"))
    elif isinstance(node, S.Assign):
        out.append((node.name, T.SymbolKind.Variable, node.name_span, "tensor"))
        out += _members(node.tensor)
    elif isinstance(node, S.OutputStmt):
        out += _members(node.tensor)
    elif isinstance(node, S.If):
        out += _members(node.then + node.otherwise)
    elif isinstance(node, S.Pipeline):
        out += _members(node.stages)
    elif isinstance(node, S.Stage):
        if node.label:
            call = node.core.name if isinstance(node.core, S.Call) else "[...]"
            out.append((node.label, T.SymbolKind.Field, node.span, call))
        if isinstance(node.core, S.Group):
            out += _members(node.core.stages)
    return out


# ---- completion ---------------------------------------------------------------------------

def completions(result: CheckResult, text: str, position: T.Position) -> list[T.CompletionItem]:
    """Argument names inside a call's parentheses; op, block and tensor names elsewhere."""
    from netspec.ops import REGISTRY, lookup

    lines = text.splitlines()
    before = lines[position.line][:position.character] if position.line < len(lines) else ""
    callee = _open_call(before)
    blocks = _blocks(result)
    if callee is not None:
        op, block = lookup(callee), blocks.get(callee)
        if op is not None:
            return [T.CompletionItem(label=f"{a.name}=", kind=T.CompletionItemKind.Field,
                                     detail=a.doc or None, insert_text=f"{a.name}=")
                    for a in op.args]
        if block is not None:
            return [T.CompletionItem(label=f"{p.name}=", kind=T.CompletionItemKind.Field,
                                     insert_text=f"{p.name}=") for p in block.params]
    items = [T.CompletionItem(label=name, kind=T.CompletionItemKind.Function,
                              detail=op.signature(), documentation=op.doc or None)
             for name, op in sorted(REGISTRY.items()) if name != "input"]
    items += [T.CompletionItem(label=name, kind=T.CompletionItemKind.Class,
                               detail=f"block {name}") for name in sorted(blocks)]
    if not re.search(r"->\s*(\w+\s*:\s*)?\w*$", before):  # where a tensor may be named
        items += [T.CompletionItem(label=name, kind=T.CompletionItemKind.Variable,
                                   detail="tensor") for name in _tensor_names(result, position)]
    return items


def _open_call(before: str) -> str | None:
    """The name of the call whose `(` is still open at the end of `before`."""
    depth = 0
    for k in range(len(before) - 1, -1, -1):
        ch = before[k]
        if ch in ")]":
            depth += 1
        elif ch in "([":
            if depth == 0:
                if ch == "[":
                    return None
                m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", before[:k])
                return m.group(1) if m else None
            depth -= 1
    return None


def _tensor_names(result: CheckResult, position: T.Position) -> list[str]:
    if result.module is None:
        return []
    line = position.line + 1
    for d in result.module.definitions:
        if d.span.line <= line <= d.span.end_line:
            return sorted({name for name, kind, _, _ in _members(d.body)
                           if kind == T.SymbolKind.Variable})
    return []


# ---- quick fixes ----------------------------------------------------------------------------

_DID_YOU_MEAN = re.compile(r"did you mean `([A-Za-z_][A-Za-z0-9_]*)`\?")


def quick_fixes(result: CheckResult, text: str, uri: str, where: T.Range
                ) -> list[T.CodeAction]:
    """A "did you mean `X`?" hint as an edit: the name the diagnostic starts with becomes X."""
    lines = text.split("\n")
    actions = []
    for d in result.diagnostics:
        m = _DID_YOU_MEAN.search(d.hint or "")
        if m is None or d.span is None or d.span.path != result.path:
            continue
        start = T.Position(d.span.line - 1, d.span.col - 1)
        if not (where.start.line <= start.line <= where.end.line):
            continue
        line = lines[start.line] if start.line < len(lines) else ""
        word = _WORD.match(line, start.character)
        if word is None:
            continue
        edit = T.TextEdit(T.Range(start, T.Position(start.line, word.end())), m.group(1))
        actions.append(T.CodeAction(
            title=f"Replace `{word.group()}` with `{m.group(1)}`",
            kind=T.CodeActionKind.QuickFix,
            diagnostics=[_lsp_diagnostic(d, uri, result.path)],
            edit=T.WorkspaceEdit(changes={uri: [edit]}), is_preferred=True))
    return actions


# ---- the server ---------------------------------------------------------------------------

def build_server() -> NetspecServer:
    server = NetspecServer()

    @server.feature(T.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: NetspecServer, params: T.DidOpenTextDocumentParams) -> None:
        ls.publish(params.text_document.uri, params.text_document.version)

    @server.feature(T.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: NetspecServer, params: T.DidChangeTextDocumentParams) -> None:
        ls.publish(params.text_document.uri, params.text_document.version)

    @server.feature(T.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: NetspecServer, params: T.DidSaveTextDocumentParams) -> None:
        ls.documents.pop(params.text_document.uri, None)  # imported files may have changed
        ls.publish(params.text_document.uri)

    @server.feature(T.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: NetspecServer, params: T.DidCloseTextDocumentParams) -> None:
        ls.documents.pop(params.text_document.uri, None)
        ls.text_document_publish_diagnostics(
            T.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))

    @server.feature(T.TEXT_DOCUMENT_HOVER)
    def hover(ls: NetspecServer, params: T.HoverParams) -> T.Hover | None:
        doc = ls.analyze(params.text_document.uri)
        text = hover_text(doc.result, doc.text, params.position)
        if text is None:
            return None
        return T.Hover(contents=T.MarkupContent(kind=T.MarkupKind.Markdown, value=text))

    @server.feature(T.TEXT_DOCUMENT_DEFINITION)
    def goto_definition(ls: NetspecServer, params: T.DefinitionParams) -> T.Location | None:
        doc = ls.analyze(params.text_document.uri)
        return definition(doc.result, doc.text, params.position, params.text_document.uri)

    @server.feature(T.TEXT_DOCUMENT_COMPLETION,
                    T.CompletionOptions(trigger_characters=["(", ",", ">", ":"]))
    def complete(ls: NetspecServer, params: T.CompletionParams) -> T.CompletionList:
        doc = ls.analyze(params.text_document.uri)
        return T.CompletionList(is_incomplete=False,
                                items=completions(doc.result, doc.text, params.position))

    @server.feature(T.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def symbols(ls: NetspecServer, params: T.DocumentSymbolParams) -> list[T.DocumentSymbol]:
        return document_symbols(ls.analyze(params.text_document.uri).result)

    @server.feature(T.TEXT_DOCUMENT_CODE_ACTION,
                    T.CodeActionOptions(code_action_kinds=[T.CodeActionKind.QuickFix]))
    def code_actions(ls: NetspecServer, params: T.CodeActionParams) -> list[T.CodeAction]:
        doc = ls.analyze(params.text_document.uri)
        return quick_fixes(doc.result, doc.text, params.text_document.uri, params.range)

    @server.feature(T.TEXT_DOCUMENT_FORMATTING)
    def formatting(ls: NetspecServer, params: T.DocumentFormattingParams
                   ) -> list[T.TextEdit] | None:
        from netspec.diagnostics import NetspecError
        from netspec.fmt import format_text

        text = ls.workspace.get_text_document(params.text_document.uri).source
        try:
            formatted = format_text(text, _path(params.text_document.uri))
        except NetspecError:
            return None  # a spec that does not parse is left alone; its errors are shown
        if formatted == text:
            return []
        lines = text.split("\n")
        end = T.Position(len(lines) - 1, len(lines[-1]))
        return [T.TextEdit(T.Range(T.Position(0, 0), end), formatted)]

    return server


def serve_stdio() -> None:
    """Run the server on stdin/stdout until the client says exit."""
    build_server().start_io()
