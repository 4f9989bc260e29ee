"""Syntax highlighting derived from the grammar: a Pygments lexer (`pygmentize -l netspec`,
registered as an entry point), the TextMate grammar of the VS Code extension
(editors/vscode/) and the token rules of the web view's CodeMirror editor (editors/web/),
all built from the Lark grammar's own terminals so they cannot drift.

Every terminal of grammars/netspec.lark falls in one class (comment, string, number,
keyword, name, operator, punctuation); a keyword added to the grammar is highlighted as a
keyword without a change here, and a new kind of terminal fails `token_classes` (and so the
tests) until it is given a class.

Run `python -m netspec.highlight textmate` (or `codemirror`) to regenerate the TextMate
grammar (or the CodeMirror token rules).
"""
from __future__ import annotations

import json
import re
import sys
from typing import ClassVar

# Keywords with a class of their own; every other keyword of the grammar is a plain one.
_CONSTANTS = {"true", "false", "none"}
_WORD_OPERATORS = {"and", "or", "not"}
_DECLARATIONS = {"network", "block"}
_IMPORTS = {"import"}
_PUNCTUATION = set("{}()[],;:.")
_REGEX_CLASSES = {"COMMENT": "comment", "STRING": "string", "FLOAT": "float", "INT": "integer",
                  "NAME": "name", "WS": "whitespace"}
# Terminals whose text other terminals already highlight: a computed label's `name{` is a
# NAME and a `{`.
_COVERED = {"LABEL_OPEN"}

# class -> (Pygments token name, TextMate scope)
CLASSES = {
    "comment": ("Comment.Single", "comment.line.number-sign.netspec"),
    "string": ("String.Double", "string.quoted.double.netspec"),
    "float": ("Number.Float", "constant.numeric.float.netspec"),
    "integer": ("Number.Integer", "constant.numeric.integer.netspec"),
    "constant": ("Keyword.Constant", "constant.language.netspec"),
    "word_operator": ("Operator.Word", "keyword.operator.logical.netspec"),
    "declaration": ("Keyword.Declaration", "storage.type.netspec"),
    "import": ("Keyword.Namespace", "keyword.control.import.netspec"),
    "keyword": ("Keyword", "keyword.control.netspec"),
    "arrow": ("Operator", "keyword.operator.arrow.netspec"),
    "operator": ("Operator", "keyword.operator.netspec"),
    "punctuation": ("Punctuation", "punctuation.netspec"),
    "name": ("Name", "variable.other.netspec"),
}


def token_classes() -> list[tuple[str, str, str]]:
    """(terminal name, Python regex, class) of every terminal of the grammar."""
    import lark

    from netspec.parser import lark_parser

    out = []
    for term in lark_parser().terminals:
        pattern = term.pattern
        if term.name in _COVERED:
            continue
        if isinstance(pattern, lark.lexer.PatternStr):
            out.append((term.name, re.escape(pattern.value), _string_class(pattern.value)))
        elif term.name in _REGEX_CLASSES:
            out.append((term.name, pattern.to_regexp(), _REGEX_CLASSES[term.name]))
        elif term.name.endswith("_OP"):
            out.append((term.name, pattern.to_regexp(), "operator"))
        else:
            raise ValueError(f"terminal {term.name} has no highlighting class: add it to "
                             "netspec/highlight.py")
    return out


def _string_class(value: str) -> str:
    if value.isidentifier():
        for words, cls in ((_CONSTANTS, "constant"), (_WORD_OPERATORS, "word_operator"),
                           (_DECLARATIONS, "declaration"), (_IMPORTS, "import")):
            if value in words:
                return cls
        return "keyword"
    if value == "->":
        return "arrow"
    return "punctuation" if value in _PUNCTUATION else "operator"


def _by_class() -> dict[str, list[str]]:
    """Class -> the regexes of its terminals (string terminals longest first)."""
    out: dict[str, list[str]] = {}
    for _, regex, cls in sorted(token_classes(), key=lambda t: -len(t[1])):
        out.setdefault(cls, []).append(regex)
    return out


def _words(regexes: list[str]) -> str:
    return r"\b(?:" + "|".join(regexes) + r")\b"


# ---- TextMate ---------------------------------------------------------------------------

def textmate_grammar() -> dict:
    """The TextMate grammar (editors/vscode/syntaxes/netspec.tmLanguage.json)."""
    c = _by_class()
    name = c["name"][0]
    patterns = [
        {"name": CLASSES["comment"][1], "match": c["comment"][0]},
        {"name": CLASSES["string"][1], "match": c["string"][0]},
        {"name": CLASSES["float"][1], "match": r"\b" + c["float"][0]},
        {"name": CLASSES["integer"][1], "match": r"\b" + c["integer"][0] + r"\b"},
        {"match": r"\b(" + "|".join(c["declaration"]) + r")\b\s*(" + name + ")?",
         "captures": {"1": {"name": CLASSES["declaration"][1]},
                      "2": {"name": "entity.name.type.netspec"}}},
    ]
    for cls in ("import", "constant", "word_operator", "keyword"):
        patterns.append({"name": CLASSES[cls][1], "match": _words(c[cls])})
    patterns += [
        {"name": "entity.name.function.netspec", "match": name + r"(?=\s*\()"},
        {"name": CLASSES["name"][1], "match": name},
        {"name": CLASSES["arrow"][1], "match": "|".join(c["arrow"])},
        {"name": CLASSES["operator"][1], "match": "|".join(c["operator"])},
        {"name": CLASSES["punctuation"][1], "match": "|".join(c["punctuation"])},
    ]
    return {"$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/"
                       "tmlanguage.json",
            "name": "netspec", "scopeName": "source.netspec", "fileTypes": ["net"],
            "comment": "Generated from grammars/netspec.lark by "
                       "`python -m netspec.highlight textmate`; do not edit.",
            "patterns": patterns}


def textmate_json() -> str:
    return json.dumps(textmate_grammar(), indent=2) + "\n"


# ---- CodeMirror (the web view's editor) ----------------------------------------------------

def codemirror_tokens() -> list[tuple[str, str]]:
    """(class, JavaScript regex) of every terminal, for the web view's editor
    (editors/web/src/tokens.json, bundled into netspec/web/editor.js). The editor takes the
    longest match at a token's start, the earlier rule on a tie (a keyword before a name),
    as the grammar's lexer does; whitespace is skipped before."""
    c = _by_class()
    order = ("comment", "string", "float", "integer", "declaration", "import", "constant",
             "word_operator", "keyword", "name", "arrow", "operator", "punctuation")
    return [(cls, regex) for cls in order for regex in c[cls]]


def codemirror_json() -> str:
    rows = ",\n".join("  " + json.dumps(list(t)) for t in codemirror_tokens())
    comment = ("Generated from grammars/netspec.lark by `python -m netspec.highlight "
               "codemirror`; do not edit.")
    return f'{{"comment": {json.dumps(comment)},\n "tokens": [\n{rows}\n]}}\n'


# ---- Pygments ---------------------------------------------------------------------------

def _pygments_lexer():
    from pygments import token as tok
    from pygments.lexer import RegexLexer, bygroups

    from netspec.ops import REGISTRY

    def token(cls: str):
        t = tok
        for part in CLASSES[cls][0].split("."):
            t = getattr(t, part)
        return t

    c = _by_class()
    name = c["name"][0]
    ops = sorted((n for n in REGISTRY if n != "input"), key=len, reverse=True)
    rules = [
        (r"\s+", tok.Whitespace),
        (c["comment"][0], token("comment")),
        (c["string"][0], token("string")),
        (r"\b" + c["float"][0], token("float")),
        (r"\b" + c["integer"][0] + r"\b", token("integer")),
        (r"\b(" + "|".join(c["declaration"]) + r")\b(\s*)(" + name + ")?",
         bygroups(token("declaration"), tok.Whitespace, tok.Name.Class)),
    ]
    rules += [(_words(c[cls]), token(cls))
              for cls in ("import", "constant", "word_operator", "keyword")]
    rules += [
        (_words([re.escape(op) for op in ops]), tok.Name.Builtin),
        (name + r"(?=\s*\()", tok.Name.Function),
        (name, token("name")),
        ("|".join(c["arrow"]), token("arrow")),
        ("|".join(c["operator"]), token("operator")),
        ("|".join(c["punctuation"]), token("punctuation")),
    ]

    class NetspecLexer(RegexLexer):
        """Pygments lexer for netspec .net specs (generated from the Lark grammar)."""

        name = "netspec"
        aliases: ClassVar = ["netspec", "net"]
        filenames: ClassVar = ["*.net"]
        tokens: ClassVar = {"root": rules}

    return NetspecLexer


def __getattr__(name: str):
    # Built on first use: Pygments is only needed by those who highlight.
    if name == "NetspecLexer":
        lexer = _pygments_lexer()
        globals()["NetspecLexer"] = lexer
        return lexer
    raise AttributeError(name)


def main(argv: list[str]) -> int:
    writers = {"textmate": textmate_json, "codemirror": codemirror_json}
    if len(argv) != 1 or argv[0] not in writers:
        print("usage: python -m netspec.highlight textmate > "
              "editors/vscode/syntaxes/netspec.tmLanguage.json\n"
              "       python -m netspec.highlight codemirror > editors/web/src/tokens.json",
              file=sys.stderr)
        return 2
    sys.stdout.write(writers[argv[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
