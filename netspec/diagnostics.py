"""Diagnostics: source spans and compiler-style error messages shared by every stage."""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Source:
    """A spec file's path and text, kept so any stage can quote the offending line."""

    path: str
    text: str

    def line(self, number: int) -> str:
        lines = self.text.splitlines()
        return lines[number - 1] if 0 < number <= len(lines) else ""


@dataclass(frozen=True)
class Span:
    """A 1-based [line:col, end_line:end_col) region of one source file."""

    source: Source
    line: int
    col: int
    end_line: int
    end_col: int

    @property
    def path(self) -> str:
        return self.source.path

    def __str__(self) -> str:
        return f"{self.source.path}:{self.line}:{self.col}"

    def __repr__(self) -> str:
        return f"Span({self})"


@dataclass(frozen=True)
class Note:
    """Context attached to a diagnostic, e.g. the block instance an error occurred in."""

    message: str
    span: Span | None = None


@dataclass
class Diagnostic:
    severity: str  # "error" | "warning"
    message: str
    span: Span | None = None
    hint: str | None = None
    notes: list[Note] = field(default_factory=list)

    def render(self) -> str:
        """`file:line:col: error: message`, the source line, a caret under the span, a hint."""
        where = f"{self.span}: " if self.span else ""
        out = [f"{where}{self.severity}: {self.message}"]
        if self.span:
            out.extend(_quote(self.span))
        for note in _elide(self.notes):
            loc = f"{note.span.path}:{note.span.line}" if note.span else ""
            # A note may name its place itself: "in layer3.1 (basic, specs/resnet50.net:12)".
            suffix = f" ({loc})" if loc and loc not in note.message else ""
            out.append(f"  note: {note.message}{suffix}")
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)


def _elide(notes: list[Note], keep: int = 3) -> list[Note]:
    """The first and last `keep` notes: a block nested 32 deep need not print 32 lines."""
    if len(notes) <= 2 * keep + 1:
        return notes
    return notes[:keep] + [Note(f"... {len(notes) - 2 * keep} more")] + notes[-keep:]


def _quote(span: Span) -> list[str]:
    # Control characters (a NUL, an escape sequence) are shown as U+FFFD, one column each,
    # so a binary-ish file cannot garble the terminal or shift the caret.
    text = "".join(ch if ch == "\t" or (ch >= " " and ch != "\x7f") else "\ufffd"
                   for ch in span.source.line(span.line))
    gutter = f"{span.line:>5} | "
    # The caret covers the span on its first line; a multi-line span is underlined to line end.
    end = span.end_col if span.end_line == span.line else len(text) + 1
    width = max(1, end - span.col)
    pad = "".join("\t" if ch == "\t" else " " for ch in text[: span.col - 1])
    return [gutter + text, " " * (len(gutter) - 2) + "| " + pad + "^" * width]


class NetspecError(Exception):
    """One or more error diagnostics. The CLI renders them; nothing above it sees a traceback."""

    def __init__(self, diagnostics: Diagnostic | Iterable[Diagnostic]):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = list(diagnostics)
        super().__init__(self.diagnostics)

    def __str__(self) -> str:
        # Rendered on demand: lowering appends "in layer3.1 (basic, ...)" notes after raising.
        return "\n".join(d.render() for d in self.diagnostics)


def error(message: str, span: Span | None = None, hint: str | None = None,
          notes: list[Note] | None = None) -> NetspecError:
    return NetspecError(Diagnostic("error", message, span, hint, list(notes or [])))


def show_value(v: Any) -> str:
    """A value as a spec writes it: true, "text", [1, 2], none."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(show_value(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return "none" if v is None else repr(v)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None
