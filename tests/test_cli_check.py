"""`netspec check`: exit 0 on good specs and 1 on errors, diagnostics on stderr, never a
traceback, whatever the file holds."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from netspec.cli import main

ROOT = Path(__file__).parent.parent
SPECS = ROOT / "specs"
GOLDEN = Path(__file__).parent / "golden" / "diagnostics"
NETSPEC = Path(sys.executable).parent / "netspec"

GOOD = "network n {\n    input x: [3, 8, 8]\n    output x -> conv(4, k=3) -> relu\n}\n"
WARN = "network n {\n    input x: [3, 8, 8]\n    y = x -> relu\n    output x -> tanh\n}\n"
BAD = "network n {\n    input x: [3, 8, 8]\n    output x -> maxpol(2)\n}\n"


def check(*args: str) -> tuple[int, str, str]:
    """Run `netspec check ARGS` in this process: (exit code, stdout, stderr)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["check", *args])
    return code, out.getvalue(), err.getvalue()


def spec(tmp_path: Path, text: str | bytes, name: str = "t.net") -> str:
    path = tmp_path / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return str(path)


# ---- in a subprocess: the real console script, exit codes and streams -----------------

def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "NETSPEC_DEBUG": ""}
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=60,
                          check=False)


def test_console_script_checks_the_whole_library():
    result = run(str(NETSPEC), "check", *sorted(str(p) for p in SPECS.glob("*.net")))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.count(": ok: network `") == len(list(SPECS.glob("*.net")))


def test_console_script_exits_1_with_a_diagnostic_and_no_traceback():
    result = run(str(NETSPEC), "check", "unknown_op.net", cwd=GOLDEN)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (GOLDEN / "unknown_op.txt").read_text()


def test_python_dash_m_netspec_works_too():
    result = run(sys.executable, "-m", "netspec", "check", "resnet18")
    assert result.returncode == 0 and "ok: network `resnet18`, 69 layers" in result.stdout


def test_console_script_survives_binary_and_missing_files(tmp_path):
    contents = [b"\xff\xfe\x00\x01binary", b"network n {\x00}", b"\x1b[2J network", b""]
    paths = [spec(tmp_path, c, f"{k}.net") for k, c in enumerate(contents)]
    result = run(str(NETSPEC), "check", *paths, "no/such/file.net", str(tmp_path))
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    # one error per file, and two for "\x1b[2J network": a bad character, then a
    # `network` without a name (the parser recovers after the first)
    assert len(errors) == len(paths) + 3, result.stderr
    assert "error: no/such/file.net: no such spec file" in errors
    assert "\x1b" not in result.stderr  # control characters are not echoed to the terminal


# ---- in process -------------------------------------------------------------------------

def test_good_spec_prints_a_one_line_summary(tmp_path):
    path = spec(tmp_path, GOOD)
    assert check(path) == (0, f"{path}: ok: network `n`, 3 layers, 0 warnings\n", "")


def test_bundled_spec_by_name():
    code, out, _ = check("resnet50")
    assert code == 0 and "ok: network `resnet50`, 175 layers, 0 warnings" in out


def test_misspelled_bundled_name_gets_a_suggestion():
    code, out, err = check("resnet5")
    assert (code, out) == (1, "")
    assert err == "error: resnet5: no such spec file\nhint: did you mean `resnet50`?\n"


def test_error_exits_1_and_renders_on_stderr(tmp_path):
    path = spec(tmp_path, BAD)
    code, out, err = check(path)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{path}:3:17: error: unknown op or block `maxpol`",
        "    3 |     output x -> maxpol(2)",
        "      |                 ^^^^^^^^^",
        "hint: did you mean `maxpool`?"]


def test_warnings_print_but_do_not_fail(tmp_path):
    code, out, err = check(spec(tmp_path, WARN))
    assert code == 0 and "1 warning\n" in out
    assert "warning: tensor `y` is never used" in err


def test_werror_makes_warnings_fail(tmp_path):
    code, _, err = check("-W", spec(tmp_path, WARN))
    assert code == 1 and "warning: tensor `y` is never used" in err


def test_quiet_prints_only_diagnostics(tmp_path):
    assert check("-q", spec(tmp_path, GOOD)) == (0, "", "")


def test_every_file_is_checked_even_after_a_failure(tmp_path):
    bad, good = spec(tmp_path, BAD, "bad.net"), spec(tmp_path, GOOD, "good.net")
    code, out, err = check(bad, good)
    assert code == 1
    assert f"{good}: ok" in out and f"{bad}:3:17: error" in err


def test_network_option_picks_a_network(tmp_path):
    path = spec(tmp_path, GOOD + GOOD.replace("network n", "network m"))
    assert "network `m`" in check(path)[1]
    assert "network `n`" in check("--network", "n", path)[1]
    code, _, err = check("--network", "k", path)
    assert code == 1 and "no network `k`" in err


def test_directory(tmp_path):
    assert check(str(tmp_path)) == (
        1, "", f"error: {tmp_path}: is a directory, not a spec file\n")


def test_non_utf8_file(tmp_path):
    path = spec(tmp_path, "network n { # caf\xe9\n}".encode("latin-1"))
    code, _out, err = check(path)
    assert (code, err) == (1, f"error: {path}: not a text file (UTF-8)\n")


def test_empty_file_defines_no_network(tmp_path):
    path = spec(tmp_path, "")
    assert check(path)[0] == 1
    assert "defines no network" in check(path)[2]


def test_byte_order_mark_and_crlf_line_endings_are_accepted(tmp_path):
    path = spec(tmp_path, b"\xef\xbb\xbf" + BAD.replace("\n", "\r\n").encode())
    code, _out, err = check(path)
    assert code == 1
    assert err.splitlines()[:3] == [
        f"{path}:3:17: error: unknown op or block `maxpol`",
        "    3 |     output x -> maxpol(2)",
        "      |                 ^^^^^^^^^"]


def test_nul_byte_is_reported_and_shown_safely(tmp_path):
    code, _out, err = check(spec(tmp_path, b"network n {\x00}"))
    assert code == 1
    assert "unexpected character '\\x00'" in err and "\x00" not in err


@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.net")))
def test_no_golden_bad_spec_causes_an_internal_error(name, monkeypatch):
    monkeypatch.chdir(GOLDEN)
    code, _out, err = check(f"{name}.net")
    assert code in (0, 1) and "internal error" not in err and "Traceback" not in err
