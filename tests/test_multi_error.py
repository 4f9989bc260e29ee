"""Every error of a file in one run: the parser, lowering, shape analysis and the train
settings recover after an error and report each independent one, without follow-on errors.

Golden files: `tests/golden/multi/NAME.net` and `NAME.txt`, what `netspec check -q NAME.net`
prints on stderr from that directory. Regenerate after a deliberate change with
NETSPEC_UPDATE_GOLDEN=1 and read the diff. Each golden spec's comment says which errors it
must show; `EXPECTED` below pins them independently of the rendering.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import netspec
from netspec.cli import main
from netspec.diagnostics import NetspecError
from netspec.frontend import check_file, check_text

GOLDEN = Path(__file__).parent / "golden" / "multi"
ROOT = Path(__file__).parent.parent
CASES = sorted(p.stem for p in GOLDEN.glob("*.net"))
UPDATE = bool(os.environ.get("NETSPEC_UPDATE_GOLDEN"))

# (line, column) of every error each golden spec must report, and nothing else.
EXPECTED = {
    "three_statements": [(5, 36), (6, 23), (10, 22)],
    "syntax_and_lowering": [(5, 26), (6, 29), (7, 14)],
    "missing_brace": [(9, 1), (11, 17)],
    "block_error_once": [(4, 38)],
    "train_settings": [(6, 9), (7, 9), (9, 9)],
    "library": [(4, 33), (9, 56)],
}


def run_check(*args: str, capsys) -> tuple[int, str, str]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", CASES)
def test_golden_multi_error_output(name, capsys, monkeypatch):
    monkeypatch.chdir(GOLDEN)
    code, out, err = run_check("-q", f"{name}.net", capsys=capsys)
    expected_file = GOLDEN / f"{name}.txt"
    if UPDATE:
        expected_file.write_text(err)
    assert err == expected_file.read_text()
    assert code == 1 and out == ""


@pytest.mark.parametrize("name", CASES)
def test_each_independent_error_is_reported_once(name, monkeypatch):
    monkeypatch.chdir(GOLDEN)
    result = check_file(f"{name}.net")
    where = [(d.span.line, d.span.col) for d in result.errors]
    assert where == EXPECTED[name]


def test_no_follow_on_errors_for_names_of_broken_statements(monkeypatch):
    monkeypatch.chdir(GOLDEN)
    for name in ("three_statements", "syntax_and_lowering"):
        messages = " ".join(d.message for d in check_file(f"{name}.net").errors)
        assert "undefined" not in messages and "never used" not in messages


def test_the_single_error_api_still_raises_the_first_error(monkeypatch):
    monkeypatch.chdir(GOLDEN)
    for name in ("three_statements", "syntax_and_lowering", "missing_brace"):
        first = check_file(f"{name}.net").errors[0]
        with pytest.raises(NetspecError) as info:
            net = netspec.load(f"{name}.net")
            netspec.analyze(net)
        assert len(info.value.diagnostics) == 1
        got = info.value.diagnostics[0]
        if name != "missing_brace":  # check words a missing `}` better than the parser
            assert (got.message, got.span) == (first.message, first.span)


def test_json_format_has_every_diagnostic_with_its_place(capsys, monkeypatch):
    monkeypatch.chdir(GOLDEN)
    code, out, err = run_check("--format", "json", "three_statements.net", "library.net",
                               capsys=capsys)
    assert code == 1 and err == ""
    files = json.loads(out)["files"]
    assert [f["file"] for f in files] == ["three_statements.net", "library.net"]
    assert [f["kind"] for f in files] == ["network", "library"]
    first = files[0]["diagnostics"][0]
    assert set(first) == {"file", "line", "column", "end", "severity", "message", "hint",
                          "notes"}
    assert (first["line"], first["column"], first["end"]) == (5, 36, {"line": 5, "column": 45})
    assert first["message"] == "unknown op or block `maxpol`"
    assert first["hint"] == "did you mean `maxpool`?"
    shape = files[0]["diagnostics"][2]
    assert [n["line"] for n in shape["notes"]] == [7, 4]
    assert files[1]["blocks"] == ["stem", "head", "fine"]


def test_json_format_of_a_good_spec(capsys):
    code, out, _ = run_check("--format", "json", "lenet5", capsys=capsys)
    (entry,) = json.loads(out)["files"]
    assert code == 0 and entry["ok"] and entry["name"] == "lenet5"
    assert entry["diagnostics"] == []


def test_the_bundled_block_libraries_check_as_libraries(capsys):
    paths = sorted(str(p) for p in (ROOT / "specs" / "blocks").glob("*.net"))
    code, out, err = run_check(*paths, capsys=capsys)
    assert code == 0, err
    assert out.count(": ok: library of ") == len(paths)


def test_check_runs_the_shape_analysis_and_train_settings():
    text = ("network n {\n    input x: [3, 4, 4]\n    output x -> conv(8, k=5)\n"
            "    train { optimizer = sgdd }\n}\n")
    result = check_text(text, "t.net")
    assert [d.span.line for d in result.errors] == [3, 4]
    assert "conv" in result.errors[0].message and "optimizer" in result.errors[1].message


def test_a_file_with_nothing_in_it_is_an_error():
    assert check_text("# nothing\n", "t.net").errors[0].message == "t.net defines no network"


def test_recovery_stops_at_a_bounded_number_of_errors():
    from netspec.parser import MAX_SYNTAX_ERRORS

    body = "\n".join(f"    y{k} = x -> -> relu" for k in range(150))
    result = check_text("network n {\n    input x: [3, 8, 8]\n" + body + "\n}\n", "t.net")
    assert len(result.errors) == MAX_SYNTAX_ERRORS


# ---- the recovering front end against the single-error one, on the fuzz corpus ----------

def single_error_outcome(text: str, path: str):
    """What the other commands say: None if load, analyze and the train settings accept
    the spec, else the first error's (message, span)."""
    from netspec.train import ConfigError, TrainConfig

    try:
        net = netspec.parse(text, path)
        netspec.analyze(net)
        TrainConfig.from_spec(net.train)
    except NetspecError as exc:
        d = exc.diagnostics[0]
        return (d.message, d.span)
    except ConfigError as exc:
        return ("train", exc.key)
    return None


def test_check_agrees_with_the_other_commands_on_the_fuzz_corpus():
    """On mutated and truncated library specs (tests/test_fuzz.py's generators, seeded):
    check never crashes, says ok exactly when the other commands accept the spec, and
    otherwise reports the error they stop at among its own."""
    import random
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_fuzz import SEED, inlined, mutate, tokens

    rng = random.Random(SEED + 151)
    corpus = []
    for path in sorted((ROOT / "specs").glob("*.net"))[:12]:
        text = inlined(path)
        pieces = tokens(text)
        corpus += [(mutate(pieces, rng), str(path)) for _ in range(6)]
        corpus += [(text[:rng.randrange(len(text))], str(path)) for _ in range(2)]
    found = agreed = 0
    for text, path in corpus:
        result = check_text(text, path)
        first = single_error_outcome(text, path)
        if result.library is not None:  # blocks only: the other commands want a network
            assert first is not None
            assert not result.ok or first[0].endswith("defines no network")
            continue
        assert result.ok == (first is None), (text, first, result.errors)
        if first is None or first[0] == "train":
            continue
        found += 1
        agreed += first in {(d.message, d.span) for d in result.errors}
    print(f"fuzz corpus: {len(corpus)} specs, {found} with errors, {agreed} agreed")
    assert found >= 50
    # The parser's own words for a missing `}` (an unexpected name) are replaced by check's
    # ("`network` inside a body"); every other first error is among check's.
    assert agreed >= found - 3, (agreed, found)
