"""Parse stage: .net text -> Lark tree -> AST (netspec.syntax) with source spans.

(The module is `parser`, not `parse`, so that it never shadows the `netspec.parse()` API.)
"""
from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import re
import sys
from importlib import resources
from typing import Any

import lark
from lark import Token, Transformer, v_args
from lark.grammar import Rule
from lark.lexer import TerminalDef

from netspec import syntax as S
from netspec.diagnostics import Diagnostic, NetspecError, Note, Source, Span

MAX_SOURCE_BYTES = 2_000_000
MAX_NESTING = 64  # brackets; deeper specs are machine-made or broken
# Levels of the parse tree. A chain of 200 `+` (or `else if`) is 200 levels; the bound keeps
# the recursive Transformer below and the evaluator in lower.py far from Python's stack limit.
MAX_DEPTH = 200
MAX_INT_DIGITS = 100

_CLOSERS = {"(": ")", "[": "]", "{": "}"}
_CLOSER_TERMINALS = {")": "RPAR", "]": "RSQB", "}": "RBRACE"}
# Strings and comments hide brackets; newlines are matched to count lines.
_BRACKET_SCAN = re.compile(r'"(?:[^"\\\n]|\\.)*"?|#[^\n]*|[()\[\]{}\n]')

# What a user should read instead of Lark's terminal names; keywords and punctuation are
# shown as themselves (`output`, `->`).
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
# Terminal sets that read better as one phrase in an "expected ..." hint.
_STATEMENT_START = {"INPUT", "OUTPUT", "LET", "IF", "TRAIN", "NAME"}
_VALUE_START = {"INT", "FLOAT", "STRING", "NAME", "LSQB", "LPAR", "MINUS", "NOT", "TRUE",
                "FALSE", "NONE"}
_OPERATORS = {"ADD_OP", "MUL_OP", "POW_OP", "COMP_OP", "AND", "OR"}
_TOP_LEVEL = {"NETWORK", "BLOCK", "IMPORT"}
# `a if c else b` and optional `;`/`.` are rarely what a broken line was missing: named only
# when nothing else fits.
_QUIET = {"IF", "ELSE", "SEMICOLON", "DOT"}
# Closers first: a missing `)` is the likeliest cause of most syntax errors.
_ORDER = [f"`{p}`" for p in (")", "]", "}", ",", "->", "=", ":", "(", "[", "{", "*")]
# Characters people type from habit, and what netspec spells instead.
_CHAR_HINTS = {
    "'": 'strings use double quotes: "same"',
    "→": "write the arrow as `->`",
    "×": "write a repeat as `* 2`",
}


GRAMMAR = "netspec.lark"
# The LALR tables, built from the grammar ahead of time and shipped in the package as plain
# JSON data (never a pickle, never a shared temp file): `python -m netspec.parser
# --write-tables` rebuilds them, and a test fails when they fall behind the grammar.
TABLES = "netspec.tables.json"


def _grammar_text() -> str:
    return resources.files("netspec.grammars").joinpath(GRAMMAR).read_text(encoding="utf-8")


def _grammar_digest(grammar: str) -> str:
    return hashlib.sha256(grammar.encode("utf-8")).hexdigest()


def build_lark_parser() -> lark.Lark:
    """Build the LALR parser from the grammar (~0.13 s); no cache is read or written."""
    return lark.Lark(_grammar_text(), parser="lalr", lexer="contextual",
                     propagate_positions=True, maybe_placeholders=True)


def tables_json(parser: lark.Lark) -> str:
    """The parser's tables as JSON text, stamped with the grammar's digest and Lark's version."""
    data, memo = parser.memo_serialize([TerminalDef, Rule])
    return json.dumps({"grammar_sha256": _grammar_digest(_grammar_text()),
                       "lark_version": lark.__version__, "data": data, "memo": memo},
                      sort_keys=True, separators=(",", ":")) + "\n"


def _int_keys(pairs: list[tuple[str, Any]]) -> dict[Any, Any]:
    # JSON object keys are strings; Lark's tables key states and memo entries by integer.
    return {int(k) if k.isdigit() else k: v for k, v in pairs}


def _load_tables() -> lark.Lark | None:
    """The shipped tables, or None when they were built from another grammar or Lark."""
    try:
        text = resources.files("netspec.grammars").joinpath(TABLES).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return None
    tables = json.loads(text, object_pairs_hook=_int_keys)
    if (tables.get("grammar_sha256") != _grammar_digest(_grammar_text())
            or tables.get("lark_version") != lark.__version__):
        return None
    return lark.Lark._load_from_dict(tables["data"], tables["memo"])


@functools.lru_cache(maxsize=1)
def lark_parser() -> lark.Lark:
    """The LALR parser, built once per process: from the shipped tables (~0.04 s) when they
    match the grammar and the installed Lark, else from the grammar itself.

    Lark's own `cache=True` option is never passed: it unpickles a file under a predictable
    name in the shared temp directory, which any local user can plant (issue 19).
    """
    return _load_tables() or build_lark_parser()


@functools.lru_cache(maxsize=1)
def keywords() -> frozenset[str]:
    """The grammar's reserved words (`input`, `if`, `true`, ...)."""
    return frozenset(t.pattern.value for t in lark_parser().terminals
                     if isinstance(t.pattern, lark.lexer.PatternStr)
                     and t.pattern.value.isidentifier())


@contextlib.contextmanager
def paused_gc():
    """Run a front-end pass with the cyclic garbage collector paused. Parsing and lowering
    allocate millions of small acyclic objects, and every full collection walks all of them:
    with collection on, a 16,000-line spec parsed in 12.2 s, with it paused in 6.7 s (the
    cost grew faster than the input). Cycles made meanwhile are collected afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_module(text: str, filename: str = "<string>") -> S.Module:
    """Parse one .net file into a Module AST. Raises NetspecError with a located diagnostic."""
    with paused_gc():
        return _parse_module(text, filename)


def _parse_module(text: str, filename: str) -> S.Module:
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    # Only text given directly or a file named .net is quoted in diagnostics: a user who
    # points netspec at another file (/etc/passwd) sees where parsing failed, not its lines.
    source = Source(filename, text, quote=filename.startswith("<") or filename.endswith(".net"))
    _check_size(text)
    _check_nesting(source)
    try:
        tree = lark_parser().parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        raise NetspecError(_syntax_diagnostic(exc, source) if source.quote
                           else _opaque_syntax_error(exc, source)) from None
    _check_depth(tree, source)
    try:
        return ToAst(source).transform(tree)
    except lark.exceptions.VisitError as exc:
        if isinstance(exc.orig_exc, NetspecError):
            raise exc.orig_exc from None
        raise


def parse_module_recovering(text: str, filename: str = "<string>"
                            ) -> tuple[S.Module | None, list[Diagnostic]]:
    """Parse one .net file, recovering after syntax errors at statement boundaries.

    Returns (the AST of every statement that parsed, every syntax error). The Module is
    None only when the file cannot be parsed at all (a resource limit). The first error
    is the one parse_module raises."""
    with paused_gc():
        return _parse_module_recovering(text, filename)


def _parse_module_recovering(text: str, filename: str
                             ) -> tuple[S.Module | None, list[Diagnostic]]:
    text = text.removeprefix("\ufeff")
    if not (filename.startswith("<") or filename.endswith(".net")):
        # Not a spec by name: its text is never quoted, so no recovery that would quote it.
        try:
            return parse_module(text, filename), []
        except NetspecError as exc:
            return None, exc.diagnostics
    source = Source(filename, text)
    try:
        _check_size(text)
        _check_nesting(source)
    except NetspecError as exc:
        return None, exc.diagnostics
    recovery = _Recovery(source)
    try:
        tree = lark_parser().parse(text, on_error=recovery.on_error)
    except lark.exceptions.UnexpectedInput as exc:
        if not recovery.diagnostics:  # on_error gave up on its very first error
            recovery.diagnostics.append(_syntax_diagnostic(exc, source))
        return None, recovery.diagnostics
    try:
        _check_depth(tree, source)
    except NetspecError as exc:
        return None, recovery.diagnostics + exc.diagnostics
    builder = ToAst(source, errors=[])
    try:
        module = builder.transform(tree)
    except lark.exceptions.VisitError as exc:
        if isinstance(exc.orig_exc, NetspecError):
            return None, recovery.diagnostics + exc.orig_exc.diagnostics
        raise
    return module, sorted(recovery.diagnostics + builder.errors, key=_position)


def _position(d: Diagnostic) -> tuple[int, int]:
    return (d.span.line, d.span.col) if d.span else (0, 0)


def _check_size(text: str) -> None:
    if len(text) > MAX_SOURCE_BYTES:
        raise NetspecError(Diagnostic("error", f"spec is too large ({len(text)} bytes; "
                                      f"the limit is {MAX_SOURCE_BYTES})", None))


# ---- error recovery ------------------------------------------------------------------
# Panic mode on Lark's interactive LALR parser (`on_error`): after a syntax error the parser
# pops its stack back to a state where a statement (or, at top level, a definition) can
# start, and the lexer skips ahead to the next token that starts one. Whatever the broken
# statement held is dropped, so later stages never see half a statement.

_BODY_STARTS = {"input", "output", "let", "if", "train", "}"}
_TOP_STARTS = {"network", "block", "import"}
MAX_SYNTAX_ERRORS = 100


def lex(text: str, keep_comments: bool = True) -> list[Token]:
    """Every token of `text` by the grammar's own terminals (comments and whitespace too when
    keep_comments); a character no terminal matches becomes an ERROR token."""
    tokens: list[Token] = []
    masked = text
    while True:
        try:
            tokens = list(lark_parser().lex(masked, dont_ignore=keep_comments))
            break
        except lark.exceptions.UnexpectedCharacters as exc:
            # Mask the bad character (positions stay put) and lex again.
            pos = exc.pos_in_stream
            masked = masked[:pos] + " " + masked[pos + 1:]
    if masked is not text:
        errors = [Token("ERROR", text[i], start_pos=i) for i, (a, b)
                  in enumerate(zip(text, masked)) if a != b]
        tokens = sorted(tokens + errors, key=lambda t: t.start_pos)
    return tokens


def _offset(value) -> int:
    """Where a parser stack value (a token or a tree) starts in the text; -1 if unknown."""
    if isinstance(value, Token):
        return value.start_pos if value.start_pos is not None else -1
    meta = getattr(value, "meta", None)
    return meta.start_pos if meta is not None and not meta.empty else -1


class _Recovery:
    """The `on_error` callback: records each independent syntax error and resynchronizes."""

    def __init__(self, source: Source):
        self.source = source
        self.diagnostics: list[Diagnostic] = []
        self.resumed: list | None = None  # the parser's stack right after the last recovery
        self.skipped: list[tuple[int, int]] = []  # offsets [start, end) dropped
        self.seeks: set[int] = set()  # definitions the lexer went back to (once each)

    # The file is lexed a second time only once a syntax error needs the sync points: a file
    # without errors (the common case, and most of a large spec's time) pays nothing.
    @functools.cached_property
    def tokens(self) -> list[Token]:
        return [t for t in lex(self.source.text, keep_comments=False) if t.type != "ERROR"]

    @functools.cached_property
    def starts(self) -> list[int]:
        return self._sync_points()

    def _sync_points(self) -> list[int]:
        """Offsets of tokens that start a statement or definition: keywords, `}`, and a
        name first on its line followed by `=` where the line before did not end in `(`,
        `[` or `,` (there it is more likely a keyword argument than an assignment)."""
        points: list[int] = []
        toks = self.tokens
        for k, tok in enumerate(toks):
            text = str(tok)
            assignment = (tok.type == "NAME" and k + 1 < len(toks) and str(toks[k + 1]) == "="
                          and (k == 0 or (toks[k - 1].end_line != tok.line
                                          and str(toks[k - 1]) not in ("(", "[", ","))))
            if text in _BODY_STARTS or text in _TOP_STARTS or assignment:
                points.append(tok.start_pos)
        return points

    def on_error(self, exc: lark.exceptions.UnexpectedInput) -> bool:
        parser = exc.interactive_parser
        state = parser.parser_state
        at_end = isinstance(exc, lark.exceptions.UnexpectedToken) and exc.token.type == "$END"
        recovering = self.resumed is not None and state.state_stack == self.resumed
        if not recovering:
            if len(self.diagnostics) >= MAX_SYNTAX_ERRORS:
                return False
            self.diagnostics.append(_syntax_diagnostic(exc, self.source))
        if at_end:
            return self._close(parser, exc.token)
        offset = exc.pos_in_stream if isinstance(exc, lark.exceptions.UnexpectedCharacters) \
            else exc.token.start_pos
        if not self._pop_to_statement(parser, self._statement_start(offset)):
            return False
        token = getattr(exc, "token", None)
        if "NETWORK" not in parser.accepts():
            opener = self._definition_before(offset)
            if opener is not None:  # a `}` is missing: end the open bodies, go back to it
                if not recovering:
                    self.diagnostics[-1] = self._missing_brace(opener)
                if not self._close(parser, opener):
                    return False
                self._seek(parser, opener)
                self.resumed = list(state.state_stack)
                return True
        if token is not None and token.type in parser.accepts() \
                and (str(token) in _BODY_STARTS or str(token) in _TOP_STARTS):
            parser.feed_token(token)  # the token that broke the statement starts the next
        else:
            self._skip_to_next_start(parser, offset)
        self.resumed = list(state.state_stack)
        return True

    def _definition_before(self, offset: int) -> Token | None:
        """`network`, `block` or `import` between the last `{` and `offset`: the parser,
        inside a body, read it as a name, so the body lacks its `}`."""
        for tok in reversed(self.tokens):
            if tok.start_pos > offset:
                continue
            if str(tok) == "{":
                return None
            if str(tok) in _TOP_STARTS and tok.start_pos not in self.seeks:
                self.seeks.add(tok.start_pos)
                return tok
        return None

    def _missing_brace(self, opener: Token) -> Diagnostic:
        braces = [b for b in _open_brackets(self.source, opener.start_pos) if b[0] == "{"]
        notes = [Note("this `{` is still open", Span(self.source, line, col, line, col + 1))
                 for _, line, col in braces[-1:]]
        return Diagnostic("error", f"`{opener}` inside a body: a `}}` is missing before it",
                          _tok_span(self.source, opener),
                          "close the body above with `}`", notes)

    def _seek(self, parser, tok: Token) -> None:
        """Move the lexer back to `tok` (a token it already passed)."""
        counter = parser.lexer_thread.state.line_ctr
        counter.char_pos, counter.line, counter.column = tok.start_pos, tok.line, tok.column
        counter.line_start_pos = tok.start_pos - tok.column + 1

    def _statement_start(self, offset: int) -> int:
        """Where the statement broken at `offset` starts: the last start before it."""
        return next((p for p in reversed(self.starts) if p < offset), 0)

    def _pop_to_statement(self, parser, start: int | None = None) -> bool:
        """Drop the partial statement (every value from offset `start` on): pop until a
        statement or definition may start."""
        state = parser.parser_state
        while len(state.state_stack) > 1:
            accepts = parser.accepts()
            if ("RBRACE" in accepts or "NETWORK" in accepts) and (
                    start is None or _offset(state.value_stack[-1]) < start):
                return True
            state.state_stack.pop()
            state.value_stack.pop()
        return "NETWORK" in parser.accepts()

    def _skip_to_next_start(self, parser, offset: int) -> None:
        lexer = parser.lexer_thread.state
        here = lexer.line_ctr.char_pos
        target = next((p for p in self.starts if p > offset and p >= here), len(self.source.text))
        if target > here:
            self.skipped.append((here, target))
            lexer.line_ctr.feed(self.source.text[here:target])

    def _close(self, parser, where: Token) -> bool:
        """Close every open body with `}` (placed at `where`) so the definitions read so far
        are kept."""
        if not self._pop_to_statement(parser):
            return False
        closer = Token.new_borrow_pos("RBRACE", "}", where)
        for _ in range(MAX_NESTING + 2):
            if "NETWORK" in parser.accepts() or "$END" in parser.accepts():
                return True
            if "RBRACE" not in parser.accepts():
                return False
            parser.feed_token(closer)
            self._pop_to_statement(parser)
        return False


def _opaque_syntax_error(exc: lark.exceptions.UnexpectedInput, source: Source) -> Diagnostic:
    """A syntax error in a file that is not a .net spec: where, but no word of its text."""
    line, col = max(exc.line, 1), max(exc.column, 1)
    return Diagnostic("error", "syntax error: this file is not a netspec spec (its text is "
                      "not shown because its name does not end in .net)",
                      Span(source, line, col, line, col + 1),
                      "netspec reads .net specs; rename the file if it is one")


def _brackets(text: str, end: int | None = None):
    """(char, line, col) of every bracket in text[:end] outside strings and comments."""
    line, line_start = 1, 0
    for m in _BRACKET_SCAN.finditer(text, 0, len(text) if end is None else end):
        ch = m.group()
        if ch == "\n":
            line, line_start = line + 1, m.end()
        elif ch in "()[]{}":
            yield ch, line, m.start() - line_start + 1


def _check_nesting(source: Source) -> None:
    depth = 0
    for ch, line, col in _brackets(source.text):
        if ch in _CLOSERS:
            depth += 1
            if depth > MAX_NESTING:
                raise NetspecError(Diagnostic(
                    "error", f"brackets nested more than {MAX_NESTING} deep",
                    Span(source, line, col, line, col + 1),
                    "split the expression with `let` or named tensors"))
        else:
            depth = max(0, depth - 1)


def _open_brackets(source: Source, end: int) -> list[tuple[str, int, int]]:
    """The brackets still open at offset `end`, outermost first."""
    stack: list[tuple[str, int, int]] = []
    for ch, line, col in _brackets(source.text, end):
        if ch in _CLOSERS:
            stack.append((ch, line, col))
        elif stack and _CLOSERS[stack[-1][0]] == ch:
            stack.pop()
    return stack


def _check_depth(tree: lark.Tree, source: Source) -> None:
    """Refuse parse trees deeper than MAX_DEPTH before anything recurses over them."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            meta = node.meta
            line, col = (meta.line, meta.column) if not meta.empty else (1, 1)
            end = (meta.end_line, meta.end_column) if not meta.empty else (1, 2)
            raise NetspecError(Diagnostic(
                "error", f"expression nested more than {MAX_DEPTH} levels deep",
                Span(source, line, col, *end),
                f"a chain of {MAX_DEPTH} `+` or `else if` counts as {MAX_DEPTH} levels; "
                "split it with `let` or named tensors"))
        # Leftmost child on top, so the span reported is where the nesting starts.
        stack.extend((c, depth + 1) for c in reversed(node.children) if isinstance(c, lark.Tree))


def _describe_expected(expected: set[str]) -> str:
    """Terminal names -> words: {"RPAR", "COMMA", "ADD_OP", ...} -> "`)`, `,` or an operator"."""
    expected, groups = set(expected), []
    if "LABEL_OPEN" in expected:  # a computed label's `name{`: where it fits, so does a name
        expected = (expected - {"LABEL_OPEN"}) | {"NAME"}
    if expected in ({"NAME", "LSQB"}, {"NAME", "INT", "LSQB"}):  # after `->` (INT: a label)
        return "a layer or block, or a `[` sequence"
    if expected == {"NAME", "LPAR"}:  # where a tensor expression starts
        return "a tensor name or `(`"
    if {"INPUT", "OUTPUT", "LET"} <= expected:
        expected -= _STATEMENT_START
        groups.append("a statement")
    if _TOP_LEVEL <= expected:
        expected -= _TOP_LEVEL
        groups.append("`network`, `block` or `import`")
    if {"INT", "FLOAT", "STRING"} <= expected:
        expected -= _VALUE_START
        groups.append("a value")
    if expected & _OPERATORS:
        expected -= _OPERATORS | {"IF", "ELSE"}
        groups.append("an operator")
    if expected - _QUIET or groups:
        expected -= _QUIET
    by_name = {t.name: t for t in lark_parser().terminals}
    words = []
    for name in expected:
        term = by_name.get(name)
        if name in _TERMINAL_WORDS:
            words.append(_TERMINAL_WORDS[name])
        elif term is not None and isinstance(term.pattern, lark.lexer.PatternStr):
            words.append(f"`{term.pattern.value}`")
        else:  # a terminal added to the grammar without words here
            words.append(name.lower().strip("_"))
    rank = {word: k for k, word in enumerate(_ORDER)}
    phrases = sorted(words, key=lambda w: (rank.get(w, len(rank)), w)) + groups
    if not phrases:
        return "something else"
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " or " + phrases[-1]


def _acceptable(exc: lark.exceptions.UnexpectedInput) -> set[str]:
    """The terminals the parser could really take next. Lark's `expected` is the LALR
    state's lookahead set, which also lists tokens a default reduction would reject."""
    fallback = set(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ())
    parser = getattr(exc, "interactive_parser", None)
    if parser is None:
        return fallback
    try:
        return set(parser.accepts()) - {"$END"} or fallback
    except Exception:  # noqa: BLE001 - only a hint depends on it
        return fallback


def _unclosed_note(source: Source, offset: int, line: int,
                   expected: set[str] | None) -> list[Note]:
    """Point at the innermost open bracket when its closer is what the parser wanted and
    it was opened on an earlier line (at end of file: always). A network's own `{` is
    open at every statement, so a brace is named only at end of file."""
    stack = _open_brackets(source, offset)
    if not stack:
        return []
    ch, open_line, open_col = stack[-1]
    if expected is not None and (ch == "{" or open_line == line
                                 or _CLOSER_TERMINALS[_CLOSERS[ch]] not in expected):
        return []
    return [Note(f"this `{ch}` is still open", Span(source, open_line, open_col,
                                                    open_line, open_col + 1))]


def _syntax_diagnostic(exc: lark.exceptions.UnexpectedInput, source: Source) -> Diagnostic:
    line, col = max(exc.line, 1), max(exc.column, 1)
    expected = _acceptable(exc)
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        pos = exc.pos_in_stream
        char = source.text[pos] if pos < len(source.text) else "?"
        if char == '"':
            end = len(source.line(line)) + 1
            return Diagnostic("error", "unterminated string", Span(source, line, col, line, end),
                              'close it with `"` on the same line')
        span = Span(source, line, col, line, col + 1)
        hint = _CHAR_HINTS.get(char) or f"expected {_describe_expected(expected)}"
        return Diagnostic("error", f"unexpected character {char!r}", span, hint,
                          _unclosed_note(source, pos, line, expected))
    token = getattr(exc, "token", None)
    if isinstance(exc, lark.exceptions.UnexpectedEOF) or (token is not None and token.type == "$END"):
        last = source.text.rstrip().splitlines() or [""]
        n = len(last)
        span = Span(source, n, len(last[-1]) + 1, n, len(last[-1]) + 2)
        notes = _unclosed_note(source, len(source.text), -1, None)
        return Diagnostic("error", "unexpected end of file", span,
                          f"expected {_describe_expected(expected)}", notes)
    text = str(token)
    span = Span(source, line, col, line, col + max(1, len(text)))
    offset = token.start_pos if token.start_pos is not None else 0
    if text in _CLOSER_TERMINALS:
        stack = _open_brackets(source, offset)
        if not stack or _CLOSERS[stack[-1][0]] != text:
            opener = {v: k for k, v in _CLOSERS.items()}[text]
            return Diagnostic("error", f"unmatched `{text}`", span,
                              f"there is no `{opener}` for it to close; "
                              f"expected {_describe_expected(expected)}",
                              [n for n in _unclosed_note(source, offset, line, None)
                               if "`{`" not in n.message])
    message = f"unexpected {_token_words(token)}"
    hint = f"expected {_describe_expected(expected)}"
    before = _word_before(source.text, offset)
    if text == "=" and before in keywords():
        hint += f"; `{before}` is a keyword and cannot be used as a name"
    elif token.type == "NAME" and text in keywords():
        hint += f"; `{text}` is a keyword"
    elif text == "else" and expected == {"LBRACE"}:
        hint = ("an `if` statement needs a `{` body; to choose a value, bracket it: "
                "(a if c else b)")
    return Diagnostic("error", message, span, hint,
                      _unclosed_note(source, offset, line, expected))


_WORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def _word_before(text: str, offset: int) -> str:
    """The identifier ending at `offset` (spaces and tabs skipped). A backward scan, not a
    regex search: `[A-Za-z_]\\w*\\s*$` retries at every start and is quadratic in the
    length of a long identifier (40,000 characters took 32 s)."""
    end = offset
    while end > 0 and text[end - 1] in " \t":
        end -= 1
    start = end
    while start > 0 and text[start - 1] in _WORD_CHARS:
        start -= 1
    return text[start:end]


def _token_words(token: Token) -> str:
    if token.type == "NAME":
        return f"name `{token}`"
    if token.type in ("INT", "FLOAT"):
        return f"number `{token}`"
    if token.type == "STRING":
        return f"string {token}"
    if str(token) in keywords():
        return f"keyword `{token}`"
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

    def __init__(self, source: Source, errors: list[Diagnostic] | None = None):
        super().__init__(visit_tokens=False)  # no token callbacks: skip a lookup per token
        self.source = source
        self.errors = errors  # a list: collect errors and go on (recovering parse)

    def _fail(self, diagnostic: Diagnostic) -> None:
        if self.errors is None:
            raise NetspecError(diagnostic)
        self.errors.append(diagnostic)

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

    def _name(self, tok: Token, what: str) -> str:
        """A name the spec defines; keywords are refused (the contextual lexer would
        otherwise accept `input input` and then fail to parse a later use of it)."""
        if str(tok) in keywords():
            self._fail(Diagnostic("error", f"`{tok}` is a keyword and cannot name a {what}",
                                  _tok_span(self.source, tok),
                                  f"choose another name, e.g. `{tok}_`"))
        return str(tok)

    def _definition(self, kind, meta, name, params, *body):
        self._name(name, kind)
        return S.Definition(kind, str(name), tuple(params or ()), tuple(body), self._s(meta),
                            _tok_span(self.source, name))

    def network(self, meta, name, params, *body):
        return self._definition("network", meta, name, params, *body)

    def block(self, meta, name, params, *body):
        return self._definition("block", meta, name, params, *body)

    def param_list(self, meta, *params):
        return tuple(p for p in params if p is not None)

    def param(self, meta, name, default):
        return S.Param(self._name(name, "parameter"), default, self._s(meta))

    # ---- statements
    def input_stmt(self, meta, name, shape, dtype, where):
        return S.InputStmt(self._name(name, "tensor"), shape, self._s(meta), where or (),
                           dtype or "float")

    def dtype(self, meta, token):
        return str(token)

    def where_clause(self, meta, *conditions):
        return tuple(conditions)

    def output_stmt(self, meta, tensor):
        return S.OutputStmt(tensor, self._s(meta))

    def assign(self, meta, name, tensor):
        return S.Assign(self._name(name, "tensor"), tensor, self._s(meta),
                        _tok_span(self.source, name))

    def let_stmt(self, meta, name, value):
        return S.Let(self._name(name, "value"), value, self._s(meta))

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
        if not any(isinstance(p, S.LabelTemplate) for p in parts):
            return ".".join(str(p) for p in parts)
        pieces: list = []
        for k, part in enumerate(parts):
            pieces += ["."] if k else []
            pieces += part.pieces if isinstance(part, S.LabelTemplate) else [str(part)]
        return S.LabelTemplate(tuple(pieces), self._s(meta))

    def label_template(self, meta, *parts):
        # LABEL_OPEN tokens carry their `{`: keep the text before it.
        return S.LabelTemplate(tuple(str(p).removesuffix("{") if isinstance(p, Token) else p
                                     for p in parts if p is not None), self._s(meta))

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
        if len(tok) > MAX_INT_DIGITS:
            self._fail(Diagnostic("error", f"integer literal has {len(tok)} digits; "
                                  f"the limit is {MAX_INT_DIGITS}", self._s(meta)))
            return S.Const(S.INVALID, self._s(meta))
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


def main(argv: list[str] | None = None) -> int:
    """`python -m netspec.parser --write-tables`: rebuild grammars/netspec.tables.json."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["--write-tables"]:
        print("usage: python -m netspec.parser --write-tables", file=sys.stderr)
        return 2
    path = resources.files("netspec.grammars").joinpath(TABLES)
    with open(str(path), "w", encoding="utf-8") as f:
        f.write(tables_json(build_lark_parser()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
