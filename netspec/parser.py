"""Parse stage: .net text -> Lark tree -> AST (netspec.syntax) with source spans.

(The module is `parser`, not `parse`, so that it never shadows the `netspec.parse()` API.)
"""
from __future__ import annotations

import functools
from importlib import resources

import lark
from lark import Token, Transformer, v_args

from netspec import syntax as S
from netspec.diagnostics import Diagnostic, NetspecError, Source, Span

MAX_SOURCE_BYTES = 2_000_000
MAX_NESTING = 64  # brackets; deeper specs are machine-made or broken

# What a user should read instead of Lark's terminal names.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "STRING": 'a string ("...")',
    "COMP_OP": "a comparison (==, !=, <, ...)",
    "ADD_OP": "`+` or `-`",
    "MUL_OP": "`*`, `/`, `//` or `%`",
    "POW_OP": "`**`",
    "$END": "end of file",
}


@functools.lru_cache(maxsize=1)
def lark_parser() -> lark.Lark:
    """The LALR parser, built once per process."""
    grammar = resources.files("netspec.grammars").joinpath("netspec.lark").read_text()
    return lark.Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True,
                     maybe_placeholders=True)


def parse_module(text: str, filename: str = "<string>") -> S.Module:
    """Parse one .net file into a Module AST. Raises NetspecError with a located diagnostic."""
    source = Source(filename, text)
    if len(text) > MAX_SOURCE_BYTES:
        raise NetspecError(Diagnostic("error", f"spec is too large ({len(text)} bytes; "
                                      f"the limit is {MAX_SOURCE_BYTES})", None))
    _check_nesting(source)
    try:
        tree = lark_parser().parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        raise NetspecError(_syntax_diagnostic(exc, source)) from None
    try:
        return ToAst(source).transform(tree)
    except RecursionError:
        raise NetspecError(Diagnostic("error", "expression is nested too deeply",
                                      Span(source, 1, 1, 1, 2))) from None


def _check_nesting(source: Source) -> None:
    depth, line, col, in_string, in_comment = 0, 1, 0, False, False
    for ch in source.text:
        col += 1
        if ch == "\n":
            line, col, in_comment, in_string = line + 1, 0, False, False
        elif in_comment:
            continue
        elif ch == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif ch == "#":
            in_comment = True
        elif ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise NetspecError(Diagnostic(
                    "error", f"brackets nested more than {MAX_NESTING} deep",
                    Span(source, line, col, line, col + 1),
                    "split the expression with `let` or named tensors"))
        elif ch in ")]}":
            depth = max(0, depth - 1)


def _describe_expected(expected: set[str]) -> str:
    words = []
    by_name = {t.name: t for t in lark_parser().terminals}
    for name in sorted(expected):
        if name in _TERMINAL_WORDS:
            words.append(_TERMINAL_WORDS[name])
        elif name in by_name and isinstance(by_name[name].pattern, lark.lexer.PatternStr):
            words.append(f"`{by_name[name].pattern.value}`")
        else:
            words.append(name.lower())
    words = sorted(set(words))
    if len(words) > 6:
        words = words[:6] + ["..."]
    return ", ".join(words)


def _syntax_diagnostic(exc: lark.exceptions.UnexpectedInput, source: Source) -> Diagnostic:
    line, col = max(exc.line, 1), max(exc.column, 1)
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        char = source.text[exc.pos_in_stream] if exc.pos_in_stream < len(source.text) else "?"
        span = Span(source, line, col, line, col + 1)
        return Diagnostic("error", f"unexpected character {char!r}", span,
                          f"expected {_describe_expected(set(exc.allowed or ()))}"
                          if exc.allowed else None)
    token = getattr(exc, "token", None)
    if isinstance(exc, lark.exceptions.UnexpectedEOF) or (token is not None and token.type == "$END"):
        last = source.text.rstrip().splitlines() or [""]
        n = len(last)
        span = Span(source, n, len(last[-1]) + 1, n, len(last[-1]) + 2)
        return Diagnostic("error", "unexpected end of file", span,
                          f"expected {_describe_expected(set(exc.expected))}"
                          " (an unclosed bracket or brace?)")
    text = str(token)
    span = Span(source, line, col, line, col + max(1, len(text)))
    message = f"unexpected {_token_words(token)}"
    hint = f"expected {_describe_expected(set(exc.expected))}"
    if token.type == "NAME" and text in {"input", "output", "let", "if", "train", "block",
                                           "network", "import"}:
        hint += f"; `{text}` is a keyword"
    return Diagnostic("error", message, span, hint)


def _token_words(token: Token) -> str:
    if token.type in ("NAME",):
        return f"name `{token}`"
    if token.type in ("INT", "FLOAT"):
        return f"number `{token}`"
    if token.type == "STRING":
        return f"string {token}"
    return f"`{token}`"


def _span(source: Source, meta) -> Span:
    return Span(source, meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(source: Source, tok: Token) -> Span:
    return Span(source, tok.line, tok.column, tok.end_line, tok.end_column)


def _unquote(tok: str) -> str:
    body = tok[1:-1]
    out, i = [], 0
    escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            out.append(escapes.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


@v_args(meta=True, inline=True)
class ToAst(Transformer):
    """Lark tree -> netspec.syntax nodes. Method names are the grammar's rule names."""

    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def _s(self, meta) -> Span:
        return _span(self.source, meta)

    # ---- file level
    def start(self, meta, *items):
        module = S.Module(self.source.path)
        for item in items:
            (module.imports if isinstance(item, S.Import) else module.definitions).append(item)
        return module

    def import_stmt(self, meta, path):
        return S.Import(_unquote(path), self._s(meta))

    def _definition(self, kind, meta, name, params, *body):
        return S.Definition(kind, str(name), tuple(params or ()), tuple(body), self._s(meta),
                            _tok_span(self.source, name))

    def network(self, meta, name, params, *body):
        return self._definition("network", meta, name, params, *body)

    def block(self, meta, name, params, *body):
        return self._definition("block", meta, name, params, *body)

    def param_list(self, meta, *params):
        return tuple(p for p in params if p is not None)

    def param(self, meta, name, default):
        return S.Param(str(name), default, self._s(meta))

    # ---- statements
    def input_stmt(self, meta, name, shape):
        return S.InputStmt(str(name), shape, self._s(meta))

    def output_stmt(self, meta, tensor):
        return S.OutputStmt(tensor, self._s(meta))

    def assign(self, meta, name, tensor):
        return S.Assign(str(name), tensor, self._s(meta), _tok_span(self.source, name))

    def let_stmt(self, meta, name, value):
        return S.Let(str(name), value, self._s(meta))

    def if_stmt(self, meta, test, then, otherwise):
        return S.If(test, then, otherwise or (), self._s(meta))

    def else_clause(self, meta, body):
        return (body,) if isinstance(body, S.If) else body

    def body(self, meta, *stmts):
        return tuple(stmts)

    def train_section(self, meta, *entries):
        return S.TrainSection(tuple(e for e in entries if e is not None), self._s(meta))

    def train_entry(self, meta, key, value):
        return S.TrainEntry(str(key), value, self._s(meta))

    # ---- tensor expressions
    def pipeline(self, meta, head, *stages):
        return S.Pipeline(head, tuple(stages), self._s(meta))

    def add(self, meta, *items):
        return S.AddTensor(tuple(items), self._s(meta))

    def ref(self, meta, name):
        return S.Ref(str(name), self._s(meta))

    def tuple(self, meta, *items):
        return S.TupleTensor(tuple(i for i in items if i is not None), self._s(meta))

    def stage(self, meta, label, core, repeat):
        return S.Stage(label, core, repeat, self._s(meta))

    def call(self, meta, name, args):
        return S.Call(str(name), tuple(args or ()), self._s(meta))

    def group(self, meta, *stages):
        return S.Group(tuple(stages), self._s(meta))

    def label(self, meta, *parts):
        return ".".join(str(p) for p in parts)

    def arg_list(self, meta, *args):
        return tuple(a for a in args if a is not None)

    def pos_arg(self, meta, value):
        return S.Arg(None, value, self._s(meta))

    def kw_arg(self, meta, name, value):
        return S.Arg(str(name), value, self._s(meta))

    # ---- value expressions
    def cond(self, meta, then, test, otherwise):
        return S.Cond(then, test, otherwise, self._s(meta))

    def or_(self, meta, left, right):
        return S.BinOp("or", left, right, self._s(meta))

    def and_(self, meta, left, right):
        return S.BinOp("and", left, right, self._s(meta))

    def not_(self, meta, operand):
        return S.UnaryOp("not", operand, self._s(meta))

    def compare(self, meta, left, op, right):
        return S.BinOp(str(op), left, right, self._s(meta))

    def binop(self, meta, left, op, right):
        return S.BinOp(str(op), left, right, self._s(meta))

    def pow(self, meta, left, op, right):
        return S.BinOp("**", left, right, self._s(meta))

    def neg(self, meta, operand):
        return S.UnaryOp("-", operand, self._s(meta))

    def int_(self, meta, tok):
        return S.Const(int(tok), self._s(meta))

    def float_(self, meta, tok):
        return S.Const(float(tok), self._s(meta))

    def string(self, meta, tok):
        return S.Const(_unquote(str(tok)), self._s(meta))

    def true(self, meta):
        return S.Const(True, self._s(meta))

    def false(self, meta):
        return S.Const(False, self._s(meta))

    def none(self, meta):
        return S.Const(None, self._s(meta))

    def name(self, meta, tok):
        return S.Name(str(tok), self._s(meta))

    def call_expr(self, meta, name, args):
        positional = tuple(a.value for a in args if a.name is None)
        keywords = tuple((a.name, a.value, a.span) for a in args if a.name is not None)
        return S.CallExpr(str(name), positional, keywords, self._s(meta))

    def list_(self, meta, *items):
        return S.ListExpr(tuple(i for i in items if i is not None), self._s(meta))
