"""`netspec fmt`: one canonical style that keeps every comment, is idempotent and never
changes meaning. Meaning is checked on the IR (every layer's op, arguments, inputs and block
path, the inputs, outputs and train settings), independently of the formatter's own AST check,
on every spec in specs/ and tests/, the docs' examples and the fuzz corpus's valid specs."""
from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

import netspec
from netspec.cli import main
from netspec.diagnostics import NetspecError
from netspec.fmt import format_text
from netspec.parser import lex

ROOT = Path(__file__).parent.parent
SPECS = sorted((ROOT / "specs").glob("*.net")) + sorted((ROOT / "specs" / "blocks").glob("*.net"))
TEST_SPECS = sorted((Path(__file__).parent / "specs").glob("*.net"))
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
NETSPEC = Path(sys.executable).parent / "netspec"


def doc_examples() -> list[tuple[str, str]]:
    """(name, text) of every ```net block of the docs."""
    out = []
    for doc in DOCS:
        for k, m in enumerate(re.finditer(r"```net[^\n]*\n(.*?)```", doc.read_text(), re.DOTALL)):
            out.append((f"{doc.name}#{k}", m.group(1)))
    return out


def ir(text: str, path: str):
    """What a spec means, without source positions: every layer, the graph's ends and the
    train settings; for a file of blocks, the blocks' parse (there is no IR without a
    network)."""
    try:
        net = netspec.parse(text, path)
    except NetspecError as exc:
        return ("error", [d.message for d in exc.diagnostics])
    layers = [(name, d["op"], repr(d["attrs"]), tuple(d["inputs"]),
               tuple((f.block, f.instance, f.args) for f in d["path"]))
              for name, d in net.graph.nodes(data=True)]
    return (net.name, layers, net.inputs, net.outputs, repr(net.train), repr(net.params))


def comments(text: str) -> list[str]:
    return [str(t) for t in lex(text) if t.type == "COMMENT"]


def assert_formats_safely(text: str, path: str) -> str:
    out = format_text(text, path)
    assert format_text(out, path) == out, "not idempotent"
    assert ir(out, path) == ir(text, path)
    assert comments(out) == comments(text)
    return out


@pytest.mark.parametrize("path", SPECS + TEST_SPECS, ids=lambda p: p.name)
def test_formatting_keeps_the_ir_and_every_comment(path):
    assert_formats_safely(path.read_text(), str(path))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_bundled_specs_are_formatted(path):
    text = path.read_text()
    assert format_text(text, str(path)) == text, f"run: netspec fmt {path.relative_to(ROOT)}"


def test_every_parsable_spec_under_tests_formats_safely():
    """The golden directories hold broken specs too: every one that parses is formatted."""
    paths = sorted((ROOT / "tests").rglob("*.net"))
    formatted = 0
    for path in paths:
        try:
            assert_formats_safely(path.read_text(), str(path))
            formatted += 1
        except NetspecError:  # a syntax error: fmt refuses it
            continue
    assert formatted >= 40, formatted


def test_docs_examples_format_safely():
    examples = doc_examples()
    assert len(examples) >= 10
    formatted = 0
    for name, text in examples:
        try:
            assert_formats_safely(text, str(ROOT / "docs" / name.split("#")[0]))
            formatted += 1
        except NetspecError:  # an example of a broken spec: fmt refuses it, says why
            pass
    assert formatted >= len(examples) - 3


def test_fuzz_corpus_valid_specs_format_safely():
    """The fuzz test's generators (tests/test_fuzz.py), seeded: mutated library specs and
    random pipelines; every one that parses is formatted and compared."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_fuzz import SEED, VOCABULARY, inlined, mutate, tokens

    rng = random.Random(SEED + 15)
    corpus = []
    for path in SPECS:
        if path.parent.name != "blocks":
            pieces = tokens(inlined(path))
            corpus += [mutate(pieces, rng) for _ in range(10)]
    for _ in range(200):
        body = " ".join(rng.choice(VOCABULARY) for _ in range(rng.randrange(1, 12)))
        corpus.append(f'import "blocks/resnet.net"\nnetwork n(c = 8) {{\n'
                      f"  input x: [3, 16, 16]\n  output x -> {body}\n}}\n")
    valid = 0
    for text in corpus:
        try:
            netspec.parse(text, str(ROOT / "specs" / "fuzz.net"))
        except NetspecError:
            continue
        valid += 1
        assert_formats_safely(text, str(ROOT / "specs" / "fuzz.net"))
    assert valid >= 10  # 13 with this seed


def test_canonical_spacing_indentation_and_comments():
    messy = ('network n(a = 1){input x:[1,8,8];let b=-a # sign\n'
             'if a==1{y=x->conv(2,k = 3,s=a*1)->relu}else{y=x}\n\n\n'
             '   # own line\noutput y->flatten->linear(10)}')
    assert format_text(messy) == (
        "network n(a = 1) {\n"
        "    input x: [1, 8, 8]\n"
        "    let b = -a  # sign\n"
        "    if a == 1 {\n"
        "        y = x -> conv(2, k=3, s = a * 1) -> relu\n"
        "    } else {\n"
        "        y = x\n"
        "    }\n"
        "\n"
        "    # own line\n"
        "    output y -> flatten -> linear(10)\n"
        "}\n")


GOLDEN = sorted(p for p in (ROOT / "tests" / "golden" / "fmt").glob("*.net")
                if not p.name.endswith(".formatted.net"))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden(path):
    """tests/golden/fmt/NAME.net formats to NAME.formatted.net, written by hand: a comment
    line takes the indentation of the statement after it (not a continuation's); `output (a,
    b)` keeps its space (a keyword, not a call)."""
    expected = path.with_name(path.stem + ".formatted.net").read_text()
    assert assert_formats_safely(path.read_text(), str(path)) == expected
    assert format_text(expected, str(path)) == expected


def test_long_pipelines_break_at_arrows_under_the_first_arrow():
    stages = " -> ".join(f"conv{k}: conv(64, k=3, p=1)" for k in range(8))
    out = format_text(f"network n {{ input x: [3, 8, 8] output x -> {stages} }}")
    lines = out.splitlines()[2:-1]
    assert all(len(line) <= 100 for line in lines)
    assert len(lines) > 2
    first = lines[0].index("->")
    assert all(line.index("->") == first for line in lines[1:])


def test_a_broken_spec_is_refused_with_its_diagnostic():
    with pytest.raises(NetspecError) as info:
        format_text("network n { output x -> }", "t.net")
    assert "unexpected" in str(info.value)


# ---- the command -------------------------------------------------------------------------

def test_fmt_rewrites_files_and_check_prints_a_diff(tmp_path, capsys):
    messy, tidy = tmp_path / "messy.net", tmp_path / "tidy.net"
    messy.write_text("network n{input x:[4] output x->linear(2)}")
    tidy.write_text(format_text(messy.read_text()))
    assert main(["fmt", "--check", str(tidy)]) == 0
    assert main(["fmt", "--check", str(messy), str(tidy)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"--- {messy} (as it is)\n+++ {messy} (formatted)\n")
    assert "+    output x -> linear(2)" in out
    assert messy.read_text() == "network n{input x:[4] output x->linear(2)}"  # untouched
    assert main(["fmt", str(messy)]) == 0
    assert messy.read_text() == tidy.read_text()
    assert main(["fmt", "--check", str(messy)]) == 0


def test_fmt_leaves_a_broken_file_alone(tmp_path):
    broken = tmp_path / "broken.net"
    broken.write_text("network n { output x -> }\n")
    result = subprocess.run([str(NETSPEC), "fmt", str(broken), str(tmp_path / "none.net")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "broken.net:1:25: error: unexpected `}`" in result.stderr
    assert "none.net: No such file or directory" in result.stderr
    assert broken.read_text() == "network n { output x -> }\n"
    assert not list(tmp_path.glob("*.tmp"))
