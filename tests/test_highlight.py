"""Highlighting agrees with the grammar: the Pygments lexer and the TextMate grammar are built
from the Lark grammar's terminals, and both are checked token by token against the parser's
own lexer on every bundled spec (the TextMate grammar by VS Code's engine, vscode-textmate
with Oniguruma, run by node)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netspec.highlight import CLASSES, textmate_json, token_classes
from netspec.parser import lex

pygments = pytest.importorskip("pygments", reason="the lexer needs Pygments")

ROOT = Path(__file__).parent.parent
VSCODE = ROOT / "editors" / "vscode"
SPECS = sorted((ROOT / "specs").glob("*.net")) + sorted((ROOT / "specs" / "blocks").glob("*.net")) \
    + sorted((Path(__file__).parent / "specs").glob("*.net"))
CLASS_OF = {name: cls for name, _, cls in token_classes()}


def lark_tokens(text: str) -> list[tuple[int, int, str]]:
    """(start, end, class) of every token the parser's lexer sees, comments included."""
    return [(t.start_pos, t.end_pos, CLASS_OF[t.type]) for t in lex(text) if t.type != "WS"]


def test_every_terminal_of_the_grammar_has_a_class():
    from netspec.parser import keywords

    assert {c for _, _, c in token_classes()} <= set(CLASSES) | {"whitespace"}
    # by the words themselves: Lark names a keyword colliding with a terminal (`int`) __ANON_n
    words = {regex: cls for _, regex, cls in token_classes()}
    assert {k for k, c in words.items()
            if c in ("keyword", "constant", "word_operator", "declaration", "import")} == \
        set(keywords())


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_pygments_lexer_agrees_with_the_parser(path):
    from netspec.highlight import NetspecLexer

    text = path.read_text()
    spans, at = {}, 0
    for _, token, value in NetspecLexer().get_tokens_unprocessed(text):
        assert "Error" not in str(token), (path, at, value)
        spans[at] = (at + len(value), token)
        at += len(value)
    for start, end, cls in lark_tokens(text):
        assert start in spans and spans[start][0] == end, (path, text[start:end])
        token = str(spans[start][1])
        expected = "Token." + CLASSES[cls][0]
        if cls == "name":  # names of ops, calls and definitions are finer kinds of Name
            assert token.startswith("Token.Name"), (text[start:end], token)
        else:
            assert token.replace("Literal.", "") == expected, (text[start:end], token)


def test_pygmentize_finds_the_lexer_by_its_entry_point():
    pygmentize = Path(sys.executable).parent / "pygmentize"
    result = subprocess.run([str(pygmentize), "-l", "netspec", "-f", "html",
                             str(ROOT / "specs" / "lenet5.net")], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert '<span class="kd">network</span>' in result.stdout
    assert '<span class="nb">conv</span>' in result.stdout
    assert 'class="err"' not in result.stdout


def test_the_committed_textmate_grammar_is_the_generated_one():
    committed = (VSCODE / "syntaxes" / "netspec.tmLanguage.json").read_text()
    assert committed == textmate_json(), \
        "run: python -m netspec.highlight textmate > editors/vscode/syntaxes/netspec.tmLanguage.json"


def test_vscode_extension_declares_the_grammar_and_the_server():
    package = json.loads((VSCODE / "package.json").read_text())
    (language,) = package["contributes"]["languages"]
    (grammar,) = package["contributes"]["grammars"]
    assert language["extensions"] == [".net"]
    assert (VSCODE / grammar["path"]).is_file() and grammar["scopeName"] == "source.netspec"
    assert (VSCODE / language["configuration"]).is_file()
    assert package["contributes"]["configuration"]["properties"]["netspec.command"][
        "default"] == ["netspec", "lsp"]


def textmate_tokens() -> list[dict]:
    node = shutil.which("node")
    if node is None or not (VSCODE / "node_modules" / "vscode-textmate").is_dir():
        pytest.skip("needs node and vscode-textmate (make setup installs them with apt and "
                    "npm into editors/vscode/node_modules)")
    result = subprocess.run([node, str(VSCODE / "tokenize.js"), *map(str, SPECS)],
                            capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def test_textmate_grammar_agrees_with_the_parser_in_vscode_textmate():
    for entry in textmate_tokens():
        text = Path(entry["file"]).read_text()
        starts = [0]
        for line in text.split("\n"):
            starts.append(starts[-1] + len(line) + 1)
        spans = {}
        for n, tokens in enumerate(entry["lines"]):
            for start, end, scopes in tokens:
                spans[starts[n] + start] = (starts[n] + end, scopes)
        for start, end, cls in lark_tokens(text):
            assert start in spans and spans[start][0] == end, (entry["file"], text[start:end])
            scope = spans[start][1][-1]
            if cls == "name":
                assert scope.split(".")[0] in ("variable", "entity"), (text[start:end], scope)
            else:
                assert scope == CLASSES[cls][1], (text[start:end], scope)
