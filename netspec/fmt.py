"""Formatter: .net text -> the same spec in the canonical style (`netspec fmt`).

Built on the front end: the parser checks the file and gives the statement starts (the
Lark tree's positions), and the grammar's own lexer gives every token, comments included.
The layout is decided token by token:

- four spaces per `{ }` level; one statement per line; `;` separators dropped;
- one space around `->`, `=`, `+` and the other operators, after `,` and `:`; none inside
  brackets, before `(` of a call, or after a unary `-`; a keyword argument that is one
  value is written `k=3`, an expression `s = 2 if i == 0 else 1`; a parameter default of
  a network or block always `num_classes = 1000`;
- line breaks inside a statement are kept where the author put them next to an arrow, a
  bracket or a comma (nowhere else), and a line longer than 100 columns is broken before
  its pipeline arrows; a continuation line starting with `->` is aligned under the first
  arrow of its level, other continuation lines are indented one level per open bracket;
- every comment is kept where it was (on its own line, or two spaces after the code);
  runs of blank lines become one, none at the start or end of a body.

The result is checked to parse to the same AST as the input (spans aside), so formatting
can never change a spec's meaning.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lark import Token

from netspec.diagnostics import Diagnostic, NetspecError, Span
from netspec.parser import lark_parser, lex, parse_module

WIDTH = 100
INDENT = "    "
# Rules whose first token starts a line of its own.
_STATEMENTS = {"import_stmt", "network", "block", "input_stmt", "output_stmt", "assign",
               "let_stmt", "if_stmt", "train_section", "train_entry"}
_OPENERS, _CLOSERS = {"(", "["}, {")", "]"}
_WORD_OPERATORS = {"and", "or", "not", "if", "else"}
# After these a `-` is unary (a sign), not a subtraction.
_BEFORE_UNARY = {"(", "[", ",", "=", ":", "->", "+", "-", "*", "/", "//", "%", "**", "==",
                 "!=", "<", ">", "<=", ">=", "and", "or", "not", "if", "else", "{"}


@dataclass
class _Piece:
    """One token of a statement with the space before it and where the author broke."""

    text: str
    space: str  # "" or " " or "  " (before a trailing comment)
    depth: int  # open ( and [ before this token, within the statement
    broke: bool  # the source had a line break right before this token
    comment: bool = False
    kind: str = ""  # the lexer's terminal name (NAME, OUTPUT, ...)


def format_text(text: str, filename: str = "<string>") -> str:
    """The canonical form of a spec. Raises NetspecError if the spec does not parse."""
    text = text.removeprefix("\ufeff")
    before = parse_module(text, filename)
    out = _Formatter(text).run()
    try:
        after = parse_module(out, filename)
    except NetspecError:
        after = None
    if after is None or _shape(after) != _shape(before):
        # A formatter bug, never the user's: refuse rather than change the spec.
        raise NetspecError(Diagnostic("error", f"{filename}: the formatter would change this "
                                      "spec's meaning; left as it is (please report it)"))
    return out


def _shape(node):
    """An AST without its spans, for comparing meaning."""
    if isinstance(node, Span):
        return None
    if dataclasses.is_dataclass(node):
        return (type(node).__name__,) + tuple(
            _shape(getattr(node, f.name)) for f in dataclasses.fields(node)
            if f.name not in ("span", "name_span", "path"))
    if isinstance(node, (list, tuple)):
        return tuple(_shape(x) for x in node)
    return node


class _Formatter:
    def __init__(self, text: str):
        self.text = text
        tree = lark_parser().parse(text)
        self.starts = {t.meta.start_pos for t in tree.iter_subtrees()
                       if t.data in _STATEMENTS and not t.meta.empty}
        labels = {t.start_pos for t in tree.scan_values(
            lambda v: isinstance(v, Token) and v.type == "LABEL_OPEN")}
        self.tokens = [piece for t in lex(text) if t.type != "WS"
                       for piece in _split_label_open(t, labels)]
        self.lines: list[str] = []
        self.level = 0
        self.glue = False  # the next statement continues the last line (after `else`)
        self.label_depth = 0  # open braces of a computed label
        self.label_closed_at: Token | None = None  # the `}` that closed one

    # ---- driver: split the token stream into statements, comments and braces
    def run(self) -> str:
        statement: list[_Piece] = []
        prev: Token | None = None
        for k, tok in enumerate(self.tokens):
            text = str(tok)
            gap = self.text[prev.end_pos:tok.start_pos] if prev is not None else ""
            newlines = gap.count("\n")
            if text == ";":
                prev = tok
                continue
            if tok.type == "COMMENT" and prev is not None and newlines == 0:
                if statement:
                    statement.append(_Piece(text, "  ", 0, False, comment=True))
                else:  # after `{` or `}`
                    self.lines[-1] += "  " + text
                prev = tok
                continue
            label_part = self.label_part(tok, prev)
            if label_part is not None:  # a computed label, `denselayer{i + 1}`: glued
                statement.append(label_part)
                prev = tok
                continue
            starts_line = tok.start_pos in self.starts or text == "}" or (
                tok.type == "COMMENT" and (not statement or self.before_statement(k)))
            if text == "else" and prev is not None and str(prev) == "}":
                self.lines[-1] += " else"
                self.glue = True  # `} else {` and `} else if c {` stay on one line
                prev = tok
                continue
            if self.glue:
                starts_line = False
            if starts_line and statement:
                self.flush(statement)
                statement = []
            if starts_line:
                self.blank_line(newlines, text)
            if tok.type == "COMMENT" and not statement:
                self.lines.append(self.indent() + text)
            elif text == "}":
                self.level -= 1
                self.lines.append(self.indent() + "}")
            elif text == "{":
                statement.append(_Piece("{", " ", 0, False))
                self.flush(statement)
                statement = []
                self.level += 1
                self.glue = False
            else:
                statement.append(self.piece(statement, tok, newlines > 0, k))
            prev = tok
        if statement:
            self.flush(statement)
        return "\n".join(self.lines).rstrip() + "\n"

    def before_statement(self, k: int) -> bool:
        """Does the code after the comment token k start a statement (or close a body)? Then
        the comment belongs to it, on a line of its own, not to the statement before."""
        for tok in self.tokens[k + 1:]:
            if tok.type != "COMMENT" and str(tok) != ";":
                return tok.start_pos in self.starts or str(tok) == "}"
        return True

    def label_part(self, tok: Token, prev: Token | None) -> _Piece | None:
        """A token of a computed label's text or braces (`name{`, its `}`, a `{` or a name
        right after that `}`), written without spaces; None for every other token. The
        first token inside a brace is glued to it too."""
        text, after_close = str(tok), self.label_closed_at is prev and prev is not None
        glued = self.label_depth > 0 or after_close
        if tok.type == "LABEL_OPEN" or (after_close and text == "{"):
            self.label_depth += 1
        elif text == "}" and self.label_depth:
            self.label_depth -= 1
            self.label_closed_at = tok
        elif not (after_close and tok.type in ("NAME", "INT")):
            if prev is not None and (prev.type == "LABEL_OPEN" or (
                    str(prev) == "{" and self.label_depth)):
                return _Piece(text, "", 0, False)
            return None
        tight = glued or prev is None or prev.type == "LABEL_OPEN" or str(prev) in ("(", "[", ".")
        return _Piece(text, "" if tight else " ", 0, False)

    def indent(self) -> str:
        return INDENT * self.level

    def blank_line(self, newlines: int, text: str) -> None:
        """Keep one blank line where the source had one or more, except after `{` and
        before `}`."""
        if newlines >= 2 and self.lines and not self.lines[-1].endswith("{") and text != "}":
            self.lines.append("")

    # ---- spacing within a statement
    def piece(self, statement: list[_Piece], tok: Token, broke: bool, k: int) -> _Piece:
        text = str(tok)
        code = [p for p in statement if not p.comment]
        depth = code[-1].depth if code else 0
        if code and code[-1].text in _OPENERS:
            depth += 1
        if text in _CLOSERS:
            depth -= 1
        if tok.type == "COMMENT":  # a comment on its own line inside a statement
            return _Piece(text, " ", depth, True, comment=True)
        prev = code[-1].text if code else None
        before_prev = code[-2].text if len(code) > 1 else None
        space = " "
        if prev is None or prev in _OPENERS or prev == "." or text in _CLOSERS \
                or text in (",", ":", "."):
            space = ""
        elif text == "(" and code and code[-1].kind == "NAME":
            space = ""  # a call: conv(64); a keyword keeps its space: output (a, b)
        elif prev == "-" and (before_prev is None or before_prev in _BEFORE_UNARY):
            space = ""  # a sign: -1
        elif (text == "=" or prev == "=") and depth > 0 and self.simple_value(k, text) \
                and not (code[0].text in ("network", "block") and depth == 1):
            space = ""  # k=3 in a call; a definition's defaults keep spaces: (c, s = 1)
        return _Piece(text, space, depth, broke, kind=tok.type)

    def simple_value(self, k: int, text: str) -> bool:
        """Is the value after the `=` at or before token k one atom (a name, number, string,
        list, call or signed number)?"""
        start = k + 1 if text == "=" else k
        depth, count = 0, 0
        for tok in self.tokens[start:]:
            t = str(tok)
            if tok.type == "COMMENT":
                continue
            if depth == 0 and t in (",", ")", "]"):
                break
            if t in _OPENERS:
                depth += 1
            elif t in _CLOSERS:
                depth -= 1
            elif depth == 0 and not (count == 0 and t == "-") and (
                    t in _WORD_OPERATORS or (not t[0].isalnum() and t[0] not in "\"_.")):
                return False  # an operator: the value is an expression
            count += 1
        return True

    # ---- layout of one statement
    def flush(self, pieces: list[_Piece]) -> None:
        indent = self.indent()
        line = indent
        if self.glue:
            line = self.lines.pop() + " "
            pieces[0].space = ""
        out: list[tuple[str, str]] = []  # (code, trailing comment) of each line
        first_arrow: dict[int, int] = {}  # bracket depth -> column of its first arrow
        opened: dict[int, int] = {}  # bracket depth -> column after its opening bracket
        k = 0
        while k < len(pieces):
            p = pieces[k]
            after_comment = k > 0 and pieces[k - 1].comment
            breakable = p.broke and (p.text == "->" or p.text in _CLOSERS or p.comment
                                     or (k > 0 and (pieces[k - 1].text in _OPENERS
                                                    or pieces[k - 1].text in (",", "->"))))
            too_long = (p.text == "->" and p.depth == 0 and line.strip() and
                        len(line) + 1 + self.segment_width(pieces, k) > WIDTH)
            if k > 0 and (breakable or after_comment or too_long):
                out.append(_split_comment(line, pieces[k - 1]))
                # A comment line takes the indentation of the code line after it.
                follow = next((q for q in pieces[k:] if not q.comment), p)
                line = self.continuation(follow, first_arrow, opened, indent)
            elif k > 0 and p.comment:
                line += "\n"  # marks where the code ends; replaced by the alignment
            elif k > 0:
                line += p.space
            if p.text == "->" and p.depth not in first_arrow:
                first_arrow[p.depth] = len(line)
            line += p.text
            if p.text in _OPENERS:  # stages after it align here, if it is not last
                opened.pop(p.depth + 1, None)
                if k + 1 < len(pieces) and not pieces[k + 1].broke:
                    opened[p.depth + 1] = len(line)
            k += 1
        out.append(_split_comment(line, pieces[-1]))
        self.lines.extend(_align_comments(out))

    def continuation(self, p: _Piece, first_arrow: dict[int, int], opened: dict[int, int],
                     indent: str) -> str:
        """The indentation of a continuation line starting with piece p: an arrow under
        the first arrow of its level (at depth 0) or under the first stage after its
        bracket; other lines one level per open bracket."""
        if p.text == "->" and p.depth == 0 and 0 in first_arrow:
            return " " * first_arrow[0]
        if p.text == "->" and p.depth in opened:
            return " " * opened[p.depth]
        return indent + INDENT * (p.depth if p.text in _CLOSERS else max(p.depth, 1))

    @staticmethod
    def segment_width(pieces: list[_Piece], k: int) -> int:
        """Width of the stage starting at the arrow pieces[k], up to the next arrow."""
        width = len(pieces[k].text)
        for p in pieces[k + 1:]:
            if (p.text == "->" and p.depth == 0) or p.comment or p.broke:
                break
            width += len(p.space) + len(p.text)
        return width


def _split_label_open(tok: Token, labels: set[int]) -> list[Token]:
    """The lexer alone, without the parser's context, reads `network n{` as a computed
    label's `n{`: split such a token back into the name and the brace."""
    if tok.type != "LABEL_OPEN" or tok.start_pos in labels:
        return [tok]
    name = Token.new_borrow_pos("NAME", str(tok)[:-1], tok)
    brace = Token("LBRACE", "{", start_pos=tok.end_pos - 1, end_pos=tok.end_pos)
    return [name, brace]


def _split_comment(line: str, last: _Piece) -> tuple[str, str]:
    """(code, trailing comment) of a finished line."""
    if last.comment and "\n" in line:
        code, _, comment = line.rpartition("\n")
        return code.rstrip(), comment
    return line.rstrip(), ""


def _align_comments(lines: list[tuple[str, str]]) -> list[str]:
    """The trailing comments of one statement start in one column, two spaces after its
    longest commented line (as the specs align them)."""
    widths = [len(code) for code, comment in lines if comment]
    column = max(widths, default=0) + 2
    return [code + (" " * (column - len(code)) + comment if comment else "")
            for code, comment in lines]
