"""Diagnostics: one bad spec per kind of error, and its exact rendered message (golden files).

Each `tests/golden/diagnostics/NAME.net` is a broken spec; `NAME.txt` is what
`netspec check NAME.net` prints on stderr, run from that directory: the message,
`file:line:col`, the quoted source line, the caret, notes and hint. Regenerate after a
deliberate wording change with

    NETSPEC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_diagnostics.py

and read the diff before committing it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from netspec.cli import main
from netspec.diagnostics import (
    MAX_QUOTE,
    Diagnostic,
    NetspecError,
    Note,
    Source,
    Span,
    did_you_mean,
)
from netspec.lower import library_dir

GOLDEN = Path(__file__).parent / "golden" / "diagnostics"
CASES = sorted(p.stem for p in GOLDEN.glob("*.net"))
UPDATE = bool(os.environ.get("NETSPEC_UPDATE_GOLDEN"))

# Lark's own names for terminals and rules must never reach a user.
LARK_WORDS = re.compile(r"\b(RPAR|LPAR|RSQB|LSQB|RBRACE|LBRACE|COMMA|COLON|SEMICOLON|EQUAL|"
                        r"STAR|DOT|MINUS|PLUS|NAME|INT|FLOAT|STRING|COMP_OP|ADD_OP|MUL_OP|"
                        r"POW_OP|__ANON_\d+|\$END|Token|Tree)\b")


def check_output(name: str, capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.chdir(GOLDEN)
    code = main(["check", "-q", f"{name}.net"])
    out, err = capsys.readouterr()
    assert out == ""
    return code, err.replace(library_dir(), "<library>")


@pytest.mark.parametrize("name", CASES)
def test_golden_diagnostic(name, capsys, monkeypatch):
    code, err = check_output(name, capsys, monkeypatch)
    expected_file = GOLDEN / f"{name}.txt"
    if UPDATE:
        expected_file.write_text(err)
    expected = expected_file.read_text()
    assert err == expected
    assert code == (1 if "error:" in expected else 0)


@pytest.mark.parametrize("name", CASES)
def test_golden_diagnostic_is_located_with_a_caret(name):
    text = (GOLDEN / f"{name}.txt").read_text()
    if name == "no_network":  # a block library is checked, not rejected: nothing to say
        assert text == ""
        return
    first = text.splitlines()[0]
    m = re.match(r"^([\w./]+\.net):(\d+):(\d+): (error|warning): ", first)
    assert m, first
    path, line, col = m.group(1), int(m.group(2)), int(m.group(3))
    source = (GOLDEN / path).read_text().splitlines()[line - 1]
    quoted, caret = text.splitlines()[1:3]
    if len(source) > MAX_QUOTE and col <= MAX_QUOTE // 4:  # a long line is cut after the span
        source = source[:MAX_QUOTE] + "…"
    assert quoted == f"{line:>5} | {source}"
    assert caret.startswith("      | ")
    assert caret[8:].index("^") == col - 1


@pytest.mark.parametrize("name", [c for c in CASES if c.startswith("syntax_")])
def test_syntax_errors_speak_in_words_not_lark_names(name):
    text = (GOLDEN / f"{name}.txt").read_text()
    assert not LARK_WORDS.search(text), LARK_WORDS.search(text)


def test_every_golden_spec_has_its_expected_output():
    assert CASES, "no golden specs found"
    orphans = {p.stem for p in GOLDEN.glob("*.txt")} - set(CASES)
    assert not orphans
    assert all((GOLDEN / f"{c}.txt").exists() for c in CASES)


# ---- the pieces the golden files are made of

def test_caret_covers_the_span_on_its_line():
    source = Source("f.net", "network n {\n    output x -> maxpol(2)\n}\n")
    d = Diagnostic("error", "unknown op", Span(source, 2, 17, 2, 26), "did you mean `maxpool`?")
    assert d.render() == (
        "f.net:2:17: error: unknown op\n"
        "    2 |     output x -> maxpol(2)\n"
        "      |                 ^^^^^^^^^\n"
        "hint: did you mean `maxpool`?")


def test_caret_of_a_multiline_span_runs_to_the_end_of_its_first_line():
    source = Source("f.net", "a = [1,\n     2]\n")
    d = Diagnostic("error", "bad", Span(source, 1, 5, 2, 8))
    assert d.render().splitlines()[2] == "      |     ^^^"


def test_caret_keeps_tabs_so_it_lines_up():
    source = Source("f.net", "\toutput x -> bad\n")
    d = Diagnostic("error", "bad", Span(source, 1, 14, 1, 17))
    assert d.render().splitlines()[2] == "      | \t            ^^^"


def test_note_names_its_location_once():
    source = Source("f.net", "x\ny\n")
    d = Diagnostic("error", "bad", None, notes=[
        Note("first defined here", Span(source, 1, 1, 1, 2)),
        Note("in layer1.0 (basic, f.net:2)", Span(source, 2, 1, 2, 2))])
    assert d.render().splitlines()[1:] == ["  note: first defined here (f.net:1)",
                                           "  note: in layer1.0 (basic, f.net:2)"]


def test_error_text_includes_notes_added_after_it_was_raised():
    exc = NetspecError(Diagnostic("error", "bad"))
    exc.diagnostics[0].notes.append(Note("in layer1.0 (basic, f.net:2)"))
    assert str(exc) == "error: bad\n  note: in layer1.0 (basic, f.net:2)"


def test_did_you_mean_suggests_the_closest_name_only_when_close():
    assert did_you_mean("maxpol", ["maxpool", "avgpool", "conv"]) == "did you mean `maxpool`?"
    assert did_you_mean("zzz", ["maxpool", "conv"]) is None
