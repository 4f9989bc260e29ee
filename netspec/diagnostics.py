"""Diagnostics: source spans and compiler-style error messages shared by every stage."""
from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Source:
    """A spec file's path and text, kept so any stage can quote the offending line."""

    path: str
    text: str
    # False for a file that is not named .net: its lines are never quoted in a diagnostic,
    # so pointing netspec at /etc/passwd or /proc/self/environ discloses nothing.
    quote: bool = True

    @functools.cached_property
    def lines(self) -> list[str]:
        # Split once: a spec with 32,000 warnings renders each quoting one line.
        return self.text.splitlines()

    def line(self, number: int) -> str:
        return self.lines[number - 1] if 0 < number <= len(self.lines) else ""


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
        """`file:line:col: error: message`, the source line, a caret under the span, a hint.

        Every piece of text passes through `printable`: messages quote names, strings and
        paths from specs and the command line, and none may reach a terminal raw."""
        where = f"{printable(str(self.span))}: " if self.span else ""
        out = [f"{where}{self.severity}: {printable(self.message)}"]
        if self.span and self.span.source.quote:
            out.extend(_quote(self.span))
        for note in _elide(self.notes):
            loc = f"{note.span.path}:{note.span.line}" if note.span else ""
            # A note may name its place itself: "in layer3.1 (basic, specs/resnet50.net:12)".
            suffix = f" ({loc})" if loc and loc not in note.message else ""
            out.append(f"  note: {printable(note.message + suffix)}")
        if self.hint:
            out.append(f"hint: {printable(self.hint)}")
        return "\n".join(out)


# C0 and C1 control characters (ESC, CSI, OSC, BEL, CR, backspace, ...), DEL, and the
# Unicode bidirectional controls that reorder what a terminal shows ("Trojan source").
_UNPRINTABLE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f"
                          "\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match) -> str:
    ch = m.group()
    if ch in "\t\r":
        return {"\t": "\\t", "\r": "\\r"}[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control character written as an escape (ESC -> \\x1b), so a
    message quoting user text cannot colour, clear or retitle the terminal. Newlines stay:
    messages span lines on purpose; a string value's own newline is escaped by show_value."""
    return _UNPRINTABLE.sub(_escape, text)


def _elide(notes: list[Note], keep: int = 3) -> list[Note]:
    """The first and last `keep` notes: a block nested 32 deep need not print 32 lines."""
    if len(notes) <= 2 * keep + 1:
        return notes
    return notes[:keep] + [Note(f"... {len(notes) - 2 * keep} more")] + notes[-keep:]


MAX_QUOTE = 160  # characters of a source line shown; a longer line is cut around the span


def _quote(span: Span) -> list[str]:
    # Control characters (a NUL, an escape sequence) are shown as U+FFFD, one column each,
    # so a binary-ish file cannot garble the terminal or shift the caret.
    line = span.source.line(span.line)
    # The caret covers the span on its first line; a multi-line span is underlined to line end.
    col = span.col
    end = span.end_col if span.end_line == span.line else len(line) + 1
    if len(line) > MAX_QUOTE:  # a 40,000-character line is shown as the part around the span
        start = max(0, min(col - 1 - MAX_QUOTE // 4, len(line) - MAX_QUOTE))
        stop = start + MAX_QUOTE
        head, tail = ("…" if start else ""), ("…" if stop < len(line) else "")
        line = head + line[start:stop] + tail
        col, end = col - start + len(head), min(end, stop + 1) - start + len(head)
    text = _UNPRINTABLE.sub(lambda m: "\t" if m.group() == "\t" else "\ufffd", line)
    gutter = f"{span.line:>5} | "
    width = max(1, end - col)
    pad = "".join("\t" if ch == "\t" else " " for ch in text[: col - 1])
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


class UsageError(NetspecError):
    """A bad command-line flag or flag value: the message names the flag; exit code 2."""

    exit_code = 2

    def __init__(self, flag: str, message: str, hint: str | None = None):
        self.flag = flag
        super().__init__(Diagnostic("error", f"{flag}: {message}", None, hint))


class UnknownNetwork(NetspecError):
    """A network name (the API's `network=`, the CLI's --network) that the file does not
    define; the CLI reports it as a usage error of --network (exit code 2)."""

    def __init__(self, network: str, path: str, hint: str | None = None):
        self.network = network
        super().__init__(Diagnostic("error", f"no network `{network}` in {path}", None, hint))


def error(message: str, span: Span | None = None, hint: str | None = None,
          notes: list[Note] | None = None) -> NetspecError:
    return NetspecError(Diagnostic("error", message, span, hint, list(notes or [])))


def show_value(v: Any, limit: int = 200) -> str:
    """A value as a spec writes it: true, "text", [1, 2], none; cut to about `limit`
    characters with `...`, so a message never grows with the value it quotes."""
    out: list[str] = []
    budget = [limit]

    def emit(text: str) -> bool:
        out.append(text[: max(budget[0], 0)])
        budget[0] -= len(text)
        return budget[0] > 0

    def walk(x: Any) -> bool:
        if isinstance(x, (list, tuple)):
            if not emit("["):
                return False
            for k, item in enumerate(x):
                if (k and not emit(", ")) or not walk(item):
                    return False
            return emit("]")
        return emit(_scalar(x))

    if not walk(v):
        out.append("...")
    return "".join(out)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, float):
        return f"{v:g}"
    return "none" if v is None else repr(v)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None
