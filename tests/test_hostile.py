"""Hostile input to the front end and the renderer (issue 19): what imports may reach,
control characters in every kind of user text, and inputs built to take exponential or
quadratic time or memory. Large inputs are generated here, never committed; the costly
ones run in a child process under an address-space limit and a timeout, so a regression
fails the test instead of exhausting the machine."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import netspec
from netspec.cli import main
from netspec.diagnostics import Diagnostic, NetspecError, Source, Span, printable

RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
PAYLOADS = ["\x1b[2J\x1b[31mred", "\x1b]0;pwned\x07", "\x9b31m", "bell\x07", "cr\rover",
            "\u202eevil"]
NET = "network n {\n  input x: [4]\n  output x -> relu\n}\n"


def error_of(text: str, filename: str = "<string>", **kw) -> str:
    with pytest.raises(NetspecError) as info:
        netspec.parse(text, filename, **kw)
    return str(info.value)


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


# ---- imports -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/proc/self/environ", "/etc/passwd", "../../etc/hostname",
                                  "notes.txt"])
def test_imports_name_net_files_only_and_never_quote_other_files(tmp_path, path):
    (tmp_path / "notes.txt").write_text("SECRET_TOKEN=hunter2\n")
    spec = tmp_path / "a.net"
    spec.write_text(f'import "{path}"\n' + NET)
    with pytest.raises(NetspecError) as info:
        netspec.load(str(spec))
    message = str(info.value)
    assert "does not name a .net file" in message
    assert "hunter2" not in message and os.environ.get("PATH", "@@") not in message


def test_imports_stay_inside_the_spec_tree_unless_allowed(tmp_path):
    write(tmp_path, {"shared/act.net": "block act {\n input x\n output x -> relu\n}\n",
                     "proj/a.net": 'import "../shared/act.net"\n'
                                   + NET.replace("-> relu", "-> act"),
                     "proj/sub/ok.net": "block ok {\n input x\n output x\n}\n",
                     "proj/b.net": 'import "sub/ok.net"\n' + NET})
    assert len(netspec.load(str(tmp_path / "proj/b.net"))) == 2  # inside the tree: fine
    message = error_of_load(tmp_path / "proj/a.net")
    assert "outside the directories a spec may import from" in message
    assert "--allow-imports" in message
    net = netspec.load(str(tmp_path / "proj/a.net"), allow_imports=[str(tmp_path / "shared")])
    assert [n for n in net.graph if n != "x"] == ["act.relu"]
    spec = str(tmp_path / "proj/a.net")
    assert main(["check", "-q", spec]) == 1
    assert main(["check", "-q", spec, "--allow-imports", str(tmp_path / "shared")]) == 0


def error_of_load(path: Path, **kw) -> str:
    with pytest.raises(NetspecError) as info:
        netspec.load(str(path), **kw)
    return str(info.value)


def test_a_symlink_out_of_the_tree_is_judged_by_its_target(tmp_path):
    write(tmp_path, {"outside/secret.net": "SECRET_TOKEN=hunter2\n",
                     "proj/a.net": 'import "link.net"\n' + NET})
    (tmp_path / "proj/link.net").symlink_to(tmp_path / "outside/secret.net")
    message = error_of_load(tmp_path / "proj/a.net")
    assert "outside the directories" in message and "hunter2" not in message
    (tmp_path / "proj/passwd.net").symlink_to("/etc/passwd")
    (tmp_path / "proj/a.net").write_text('import "passwd.net"\n' + NET)
    message = error_of_load(tmp_path / "proj/a.net")
    assert "outside the directories" in message and "root:" not in message


def test_special_files_are_refused_before_reading(tmp_path):
    os.mkfifo(tmp_path / "fifo.net")
    (tmp_path / "zero.net").symlink_to("/dev/zero")
    (tmp_path / "a.net").write_text('import "fifo.net"\n' + NET)
    assert "is a FIFO" in error_of_load(tmp_path / "a.net")  # a hang before the fix
    assert "is a FIFO" in error_of_load(tmp_path / "fifo.net")
    assert "is a device" in error_of_load(tmp_path / "zero.net")


def test_a_spec_file_too_large_is_refused_by_its_size(tmp_path):
    big = tmp_path / "big.net"
    with open(big, "wb") as f:  # sparse: 1.5 GB on paper, nothing on disk
        f.truncate(1_500_000_000)
    assert "too large (1,500,000,000 bytes" in error_of_load(big)


def test_a_file_not_named_net_is_not_quoted(tmp_path):
    other = tmp_path / "environ"
    other.write_text("HOME=/root\nSECRET_TOKEN=hunter2\n")
    message = error_of_load(other)
    assert "not a netspec spec" in message and "hunter2" not in message
    assert "SECRET" not in message and "HOME" not in message


def test_the_bundled_library_is_still_importable(tmp_path):
    (tmp_path / "r.net").write_text('import "blocks/resnet.net"\n'
                                    + NET.replace("-> relu", "-> basic(4)")
                                    .replace("[4]", "[4, 8, 8]"))
    assert len(netspec.load(str(tmp_path / "r.net"))) > 3
    assert len(netspec.load("resnet50")) > 100


# ---- terminal escapes ----------------------------------------------------------------

def spec_string(payload: str) -> str:
    """A netspec string literal holding `payload` (raw control characters are legal)."""
    return '"' + payload.replace("\\", "\\\\").replace('"', '\\"') + '"'


def attack_messages(payload: str, tmp_path: Path) -> list[str]:
    s = spec_string(payload)
    out = [
        error_of(f"import {spec_string(payload + '.net')}\n" + NET),  # import path
        error_of(f"import {s}\n" + NET),  # import path, not .net
        error_of(NET.replace("-> relu", f"-> conv(4, k={s})")),  # string value in a message
        error_of(NET.replace("[4]", f"[4, {s}]")),
        error_of(NET.replace("-> relu", f"-> relu(slope={s})")),
        error_of(NET.replace("input x: [4]", f"let v = {s}\n  input x: v")),
        error_of(f"network n {{ {payload} }}"),  # raw in the source: the quoted line
        error_of(NET, network=payload),  # an API argument echoed back
        error_of(NET, overrides={payload: 1}),  # a parameter name echoed back
    ]
    (tmp_path / "spec.net").write_text(NET.replace("-> relu", f"-> nosuch({s})"))
    out.append(error_of_load(tmp_path / "spec.net"))
    out.append(error_of_load(tmp_path / f"{payload}.net"))  # a path from the command line
    return out


@pytest.mark.parametrize("payload", PAYLOADS)
def test_control_characters_never_reach_the_terminal(tmp_path, payload):
    for message in attack_messages(payload, tmp_path):
        assert not RAW_CONTROL.search(message), repr(message)


def test_escapes_are_shown_readably():
    message = error_of(NET.replace("-> relu", '-> conv(4, k="\x1b]0;x\x07")'))
    assert "\\x1b]0;x\\x07" in message
    assert printable("a\tb\rc\x9b\u202e") == "a\\tb\\rc\\x9b\\u202e"


def test_the_cli_escapes_what_it_echoes(tmp_path, capsys):
    (tmp_path / "s.net").write_text(NET.replace("[4]", '[4, "\x1b]0;pwned\x07"]'))
    assert main(["check", str(tmp_path / "s.net")]) == 1
    assert main(["check", str(tmp_path / "\x1b[2Jmissing.net")]) == 1
    ok = tmp_path / "\x1b]0;pwned\x07ok.net"
    ok.write_text(NET)
    assert main(["check", str(ok)]) == 0  # the "ok" line echoes the path
    assert main(["draw", str(ok), "-o", str(tmp_path / "\x1b[2Jd.dot")]) == 0
    assert main(["train", "mlp", "--param", "\x1b[31m=1"]) == 1
    with pytest.raises(SystemExit):
        main(["summary", "mlp", "--bogus\x1b]0;pwned\x07"])
    captured = capsys.readouterr()
    assert not RAW_CONTROL.search(captured.err + captured.out)
    assert "\\x1b" in captured.err


# ---- time and memory -----------------------------------------------------------------

CHILD_LIMIT_BYTES = 3 << 30
CHILD_SECONDS = 120

# Each attack: a spec generator, and what it must give within its deadline: an error
# message (the limit it hit) or "ok" after parse + lower + analyze + plan + DOT.
ATTACKS = r'''
import json, resource, signal, sys, time
LIMIT = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
import netspec
from netspec.diagnostics import NetspecError

def doubling(compare):
    lines = ["network n {", "  let a0 = [1, 1]"]
    lines += [f"  let a{k} = [a{k-1}, a{k-1}]" for k in range(1, 26)]
    lines += ["  if a25 == a25 { }" if compare else "", "  input x: a25", "  output x", "}"]
    return "\n".join(lines)

def nested(levels):
    lines = ["block b0 { input x output x -> relu }"]
    lines += [f"block b{k} {{ input x output x -> b{k-1} -> b{k-1} }}"
              for k in range(1, levels + 1)]
    return "\n".join(lines + [f"network n {{ input x: [4] output x -> b{levels} }}"])

def fan_out(n):
    return ("network n {\n  input x: [4]\n  y = x -> relu\n  output ("
            + ", ".join(["y -> relu"] * n) + ") -> add\n}")

CASES = {
    "doubling": (doubling(False), 10),
    "doubling_compare": (doubling(True), 10),
    "long_identifier": ("network n {\n  input x: [4]\n  " + "a" * 40000 + " ) }", 10),
    "nested_2_17": (nested(17), 10),
    "nested_2_13": (nested(13), 60),
    "fan_out_2000": (fan_out(2000), 60),
    "deep_repeats": ("network n { input x: [4] output x -> [[relu * 10000] * 10000] * 10000 }",
                     10),
}

class Late(Exception):
    pass

def expire(*_):
    raise Late()

signal.signal(signal.SIGALRM, expire)
results = {}
for name, (text, seconds) in CASES.items():
    start = time.perf_counter()
    signal.alarm(seconds)
    try:
        net = netspec.parse(text, "attack.net")
        netspec.analyze(net)
        dot = netspec.draw(net).source
        outcome = f"ok {len(net)} layers, {len(dot)} bytes of DOT"
    except NetspecError as exc:
        outcome = str(exc)
    except Late:
        outcome = f"TIMEOUT after {seconds} s"
    except MemoryError:
        outcome = "MemoryError"
    signal.alarm(0)
    results[name] = [outcome, time.perf_counter() - start]
print(json.dumps(results))
'''


@pytest.fixture(scope="module")
def attacks() -> dict[str, tuple[str, float]]:
    proc = subprocess.run([sys.executable, "-c", ATTACKS, str(CHILD_LIMIT_BYTES)],
                          check=False, capture_output=True, text=True, timeout=CHILD_SECONDS,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {k: (v[0], v[1]) for k, v in json.loads(proc.stdout).items()}


def test_let_lists_that_double_are_refused_where_they_pass_the_limit(attacks):
    for case in ("doubling", "doubling_compare"):
        message, _ = attacks[case]
        assert message.startswith("attack.net:17:13: error: list value too large: 131,071 "
                                  "elements"), message
        assert len(message) < 1000


def test_a_long_identifier_gets_a_short_syntax_error(attacks):
    message, _ = attacks["long_identifier"]
    assert "unmatched `)`" in message and len(message) < 1000


def test_nested_blocks_are_refused_before_they_are_built(attacks):
    message, _ = attacks["nested_2_17"]
    assert "expands network `n` to more than the limit of 50,000 layers" in message
    assert message.startswith("attack.net:19:38: error")
    assert "one `b17` is more than 50,000 layers" in message
    assert "more than the limit of 50,000" in attacks["deep_repeats"][0]


def test_deep_nesting_and_wide_fan_out_draw_in_bounded_time_and_memory(attacks):
    assert attacks["nested_2_13"][0].startswith("ok 8193 layers")
    assert attacks["fan_out_2000"][0].startswith("ok 2003 layers")


def test_warnings_render_in_linear_time():
    # 32,000 diagnostics quoting lines of one 32,000-line source: the source is split once,
    # not once per diagnostic (which took a minute).
    text = "\n".join(f"  a{k} = x -> relu" for k in range(32_000))
    source = Source("big.net", text)
    rendered = [Diagnostic("warning", f"tensor `a{k}` is never used",
                           Span(source, k + 1, 3, k + 1, 4 + len(str(k)))).render()
                for k in range(32_000)]
    assert rendered[-1].splitlines()[1] == "32000 |   a31999 = x -> relu"


def test_the_cli_refuses_to_lay_out_a_huge_diagram(tmp_path, capsys):
    (tmp_path / "wide.net").write_text(
        "network n { input x: [4] output x -> relu * 1500 }")
    assert main(["draw", str(tmp_path / "wide.net"), "-o", str(tmp_path / "w.svg")]) == 1
    assert "would have 1,501 nodes" in capsys.readouterr().err
    assert main(["draw", str(tmp_path / "wide.net"), "-o", str(tmp_path / "w.dot")]) == 0


def test_values_in_messages_are_cut_short():
    message = error_of(textwrap.dedent("""\
        network n {
          let a = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
          let b = [a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a]
          input x: [4]
          output x -> relu * b
        }"""))
    assert "a repeat count must be" in message and "..." in message and len(message) < 800
