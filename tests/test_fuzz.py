"""Fuzzing the front end: whatever the text, parse + lower gives a NetspecError (or a network),
never another exception and never a hang. Seeded and bounded, so it runs in the suite.

Inputs: random bytes, random token soup, every library spec truncated, and every library
spec (its imports inlined, so blocks are mutated too) with tokens deleted, duplicated,
swapped or replaced. Then the pathological shapes people ask about: 10,000 nested
brackets, a 10,000-term sum, very long pipelines, huge repeat counts.
"""
from __future__ import annotations

import contextlib
import random
import re
import signal
import time
from pathlib import Path

import pytest

import netspec
from netspec.diagnostics import NetspecError
from netspec.ops import all_names

SPECS = Path(__file__).parent.parent / "specs"
SEED = 20240531
CASE_SECONDS = 5.0  # generous: a healthy case takes milliseconds; this catches hangs

TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|\d+\.\d+(?:[eE][+-]?\d+)?|\d+|[A-Za-z_]\w*'
                   r"|->|\*\*|//|==|!=|<=|>=|\S")
VOCABULARY = (
    ["network", "block", "import", "input", "output", "let", "if", "else", "train", "true",
     "false", "none", "and", "or", "not", "i", "x", "y", "c", "s", "proj", "basic",
     "bottleneck", "conv_bn", "inception", "num_classes"]
    + all_names()
    + ["->", "=", ":", ",", ";", ".", "(", ")", "[", "]", "{", "}", "+", "-", "*", "/", "//",
       "%", "**", "==", "!=", "<", ">", "<=", ">=", "#", '"same"', '"blocks/resnet.net"',
       "0", "1", "2", "3", "-1", "64", "0.5", "1e-3", "10000", "1000000000", "99999999999"]
)


class Hang(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail a case that runs longer than `seconds` (SIGALRM; the suite runs on Unix)."""
    def expire(signum, frame):
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(text: str, filename: str = "fuzz.net") -> str:
    """"ok" or "error" for a spec; anything else (another exception, a hang) fails."""
    try:
        with deadline(CASE_SECONDS):
            netspec.parse(text, filename)
        return "ok"
    except NetspecError as exc:
        for d in exc.diagnostics:  # every diagnostic renders, located or not
            assert d.render()
        return "error"


def inlined(path: Path) -> str:
    """A spec with its imports replaced by the imported text, so blocks get mutated too."""
    return re.sub(r'^import "([^"]+)"$', lambda m: (SPECS / m.group(1)).read_text(),
                  path.read_text(), flags=re.MULTILINE)


def tokens(text: str) -> list[tuple[str, str]]:
    """(token, whitespace after it) pairs; joining them gives the text back."""
    pieces = []
    for m in TOKEN.finditer(text):
        end = m.end()
        gap = re.match(r"\s*", text[end:]).group()
        pieces.append((m.group(), gap or " "))
    return pieces


def mutate(pieces: list[tuple[str, str]], rng: random.Random) -> str:
    pieces = list(pieces)
    for _ in range(rng.randint(1, 3)):
        k = rng.randrange(len(pieces))
        action = rng.choice(["delete", "duplicate", "swap", "replace"])
        if action == "delete" and len(pieces) > 1:
            del pieces[k]
        elif action == "duplicate":
            pieces.insert(k, pieces[k])
        elif action == "swap":
            j = rng.randrange(len(pieces))
            pieces[k], pieces[j] = pieces[j], pieces[k]
        else:
            pieces[k] = (rng.choice(VOCABULARY), pieces[k][1])
    # A comment token swallows the rest of its line: keep the newline that ended it.
    return "".join(t + ("\n" if t.startswith("#") and "\n" not in ws else ws)
                   for t, ws in pieces)


LIBRARY = sorted(SPECS.glob("*.net"))


def test_random_bytes():
    rng = random.Random(SEED)
    results = []
    for _ in range(300):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(120)))
        results.append(outcome(data.decode("latin-1")))
    assert results.count("error") >= 290  # nearly all noise is an error, none a crash


def test_random_token_soup():
    rng = random.Random(SEED + 1)
    for _ in range(300):
        soup = " ".join(rng.choice(VOCABULARY) for _ in range(rng.randrange(1, 40)))
        outcome(soup)


def test_random_pipelines_inside_a_valid_network():
    # Gets past the parser more often, so lowering sees odd but well-formed specs.
    rng = random.Random(SEED + 2)
    results = []
    for _ in range(300):
        body = " ".join(rng.choice(VOCABULARY) for _ in range(rng.randrange(1, 12)))
        results.append(outcome(f'import "blocks/resnet.net"\nnetwork n(c = 8) {{\n'
                               f"  input x: [3, 16, 16]\n  output x -> {body}\n}}\n"))
    assert "ok" in results and "error" in results


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_truncated_specs(path):
    rng = random.Random(f"{SEED}-truncate-{path.stem}")
    text = inlined(path)
    cuts = sorted(rng.sample(range(len(text)), 12)) + [len(text) - 1]
    assert outcome(text, str(path)) == "ok"
    for cut in cuts:
        outcome(text[:cut], str(path))


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_mutated_specs(path):
    rng = random.Random(f"{SEED}-mutate-{path.stem}")
    pieces = tokens(inlined(path))
    for _ in range(15):
        outcome(mutate(pieces, rng), str(path))


def test_token_round_trip_rebuilds_the_spec():
    text = inlined(SPECS / "resnet18.net")
    rebuilt = "".join(t + ws for t, ws in tokens(text))
    assert outcome(rebuilt) == "ok"


# ---- pathological inputs: clear errors, fast ------------------------------------------

N = 10_000
NET = "network n {{\n  input x: [3, 8, 8]\n  {body}\n}}\n"


def timed_error(text: str, seconds: float = CASE_SECONDS) -> tuple[str, float]:
    start = time.perf_counter()
    with pytest.raises(NetspecError) as info, deadline(seconds):
        netspec.parse(text, "deep.net")
    return str(info.value), time.perf_counter() - start


@pytest.mark.parametrize("body, message", [
    ("output x -> linear(" + "(" * N + "1" + ")" * N + ")", "brackets nested more than 64"),
    ("output " + "(" * N + "x" + ")" * N, "brackets nested more than 64"),
    ("output x -> " + "[" * N + "relu" + "]" * N, "brackets nested more than 64"),
    ("let a = " + " + ".join(["1"] * N) + "\n  output x", "nested more than 200 levels"),
    ("let a = " + "-" * N + "1\n  output x", "nested more than 200 levels"),
    ("let a = (" + "not " * N + "true)\n  output x", "nested more than 200 levels"),
    ("let a = " + " ** ".join(["1"] * N) + "\n  output x", "nested more than 200 levels"),
    # (a thousand is already five times the limit; these chains are 8 tokens a link)
    ("let a = (" + "1 if true else " * 1000 + "1)\n  output x", "nested more than 200 levels"),
    ("if false { y = x } " + "else if false { y = x } " * 1000 + "else { y = x }\n  output y",
     "nested more than 200 levels"),
    ("output x -> relu * 1000000000", "a repeat count must be an integer from 1 to 10000"),
    ("output x -> [[relu * 10000] * 10000] * 10000", "more than the limit of 50,000"),
    ("output x -> relu * (10 ** 9 * 10 ** 9)", "a repeat count must be an integer"),
    ("output x -> linear(" + "9" * N + ")", "integer literal has 10000 digits"),
    ("output x -> linear(2 ** 2 ** 2 ** 2 ** 2)", "exponent too large"),
    ("output x -> relu * (" + " * ".join(["9" * 100] * 50) + ")",
     "integer result has more than 100 digits"),
    ("let a0 = 99\n" + "".join(f"  let a{k + 1} = a{k} * a{k}\n" for k in range(40))
     + "  output x", "integer result has more than 100 digits"),
    ('let a0 = "ab"\n' + "".join(f"  let a{k + 1} = a{k} + a{k}\n" for k in range(40))
     + "  output x", "string longer than 10,000 characters"),
    ("output x -> linear(1e-300 ** -64)", "`**` overflows here"),
    ("output x -> linear((-8) ** 0.5)", "`**` gives a complex number here"),
])
def test_pathological_input_is_a_clear_error_fast(body, message):
    text, seconds = timed_error(NET.format(body=body))
    assert message in text
    assert "deep.net:" in text.splitlines()[0]  # located
    assert seconds < CASE_SECONDS


def test_ten_thousand_term_tensor_sum_lowers_to_one_add():
    net = netspec.parse(NET.format(body="output " + " + ".join(["x"] * N)))
    assert net.node("add")["inputs"] == ["x"] * N


def test_ten_thousand_stage_pipeline_lowers_in_linear_time():
    def seconds(n: int) -> float:
        # CPU time of this process, best of three: a busy machine delays the run (wall time)
        # but barely changes the work it does, which is what the ratio is about.
        text = NET.format(body="output x" + " -> relu" * n)
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            net = netspec.parse(text)
            best = min(best, time.process_time() - start)
        assert len(net) == n + 1 and f"relu_{n - 1}" in net.graph
        return best

    small, large = seconds(N // 10), seconds(N)
    assert large < 12 * small + 1.0  # 10x the stages, about 10x the time (was quadratic)


def test_self_recursive_block_stops_at_the_nesting_limit():
    text = ("block again {\n  input x\n  output x -> again\n}\n"
            + NET.format(body="output x -> again"))
    message, seconds = timed_error(text)
    assert "blocks nested more than 32 deep" in message and seconds < CASE_SECONDS


def test_mutually_recursive_blocks_stop_at_the_nesting_limit():
    text = ("block ping {\n  input x\n  output x -> pong\n}\n"
            "block pong {\n  input x\n  output x -> ping\n}\n"
            + NET.format(body="output x -> ping"))
    assert "blocks nested more than 32 deep" in timed_error(text)[0]


def test_blocks_inside_deep_brackets_inside_recursive_blocks_are_a_clear_error():
    # Each limit holds (32 blocks, 64 brackets), but together they exceed Python's stack.
    text = ("block b(n) {\n  input x\n  if n > 0 { y = x -> " + "[" * 60 + "b(n - 1)"
            + "]" * 60 + " } else { y = x }\n  output y\n}\n"
            + NET.format(body="output x -> b(31)"))
    message, _ = timed_error(text)
    assert "nests blocks, brackets and expressions too deeply" in message
    assert message.startswith("deep.net:")
