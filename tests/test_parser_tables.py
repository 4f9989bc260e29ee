"""The parser's LALR tables: shipped as JSON data, never read from a shared cache (issue 19)."""
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import lark
import pytest

from netspec import parser as P

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").rglob("*.net")) + sorted((ROOT / "tests" / "specs").glob("*.net"))


def _shipped() -> dict:
    text = resources.files("netspec.grammars").joinpath(P.TABLES).read_text(encoding="utf-8")
    return json.loads(text)


def test_shipped_tables_are_built_from_the_current_grammar():
    # Fails when the grammar changed without `python -m netspec.parser --write-tables`.
    assert _shipped()["grammar_sha256"] == P._grammar_digest(P._grammar_text()), (
        "grammars/netspec.lark changed: run `python -m netspec.parser --write-tables` and commit "
        "grammars/netspec.tables.json (on a rebase conflict in that file, take either side and "
        "rerun the command)")


def test_the_parser_loads_the_shipped_tables():
    # LALR state numbering varies between builds (set order), so the tables are compared by
    # what they parse (below), and here only shown to be the ones in use.
    if _shipped()["lark_version"] != lark.__version__:
        pytest.skip(f"tables were written by Lark {_shipped()['lark_version']}, "
                    f"{lark.__version__} is installed (the parser builds from the grammar)")
    assert P._load_tables() is not None


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_tables_parse_every_spec_as_the_grammar_does(path):
    text = path.read_text()
    loaded = P._load_tables()
    if loaded is None:
        pytest.skip("the shipped tables do not match the installed Lark")
    assert loaded.parse(text) == P.build_lark_parser().parse(text)


def test_lark_parser_never_unpickles_nor_touches_the_temp_directory(tmp_path):
    # A fresh process with pickle disabled and TMPDIR pointing at a directory holding a
    # planted file under every name Lark's cache could use: the parser must build, parse,
    # and leave the directory as it was.
    planted = tmp_path / ".lark_cache_planted.tmp"
    planted.write_bytes(b"cos\nsystem\n(S'touch pwned'\ntR.")
    code = (
        "import pickle\n"
        "def refuse(*a, **k): raise AssertionError('pickle used')\n"
        "pickle.load = pickle.loads = pickle.Unpickler = refuse\n"
        "from netspec.parser import lark_parser, parse_module\n"
        "lark_parser()\n"
        "parse_module('network n { input x: [3] output x -> relu }')\n"
        "print('ok')\n"
    )
    env = {"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == [planted.name]


def test_mismatched_tables_fall_back_to_the_grammar(monkeypatch):
    monkeypatch.setattr(P, "_grammar_digest", lambda grammar: "not the shipped digest")
    assert P._load_tables() is None
    monkeypatch.undo()
    P.lark_parser.cache_clear()
    assert P.lark_parser().parse("network n { input x: [3] output x }")
