"""Docs: every code block of README.md and docs/*.md runs, so the docs cannot drift.

The convention (docs/design.md, "Docs are tested"), by the fence's language:

- ``net``     a spec: parsed, lowered, verified and analyzed; its ``train { }`` section is
              validated as `netspec train` would (TrainConfig.from_spec).
- ``python``  executed. The blocks of one file run in order in one namespace, as a reader
              would type them, in a scratch directory that holds ``specs/``.
- ``sh``      every command line starting with ``netspec`` runs in that directory and must
              exit 0 (a trailing ``# exit N`` comment expects N). ``netspec train`` runs
              with ``--epochs 1 --limit 200 --no-progress`` appended, to stay fast. Lines of
              other programs (``make``, ``python``, ...) must name one of OTHER_PROGRAMS and
              are not run. ``> FILE`` redirects; ``| less`` and ``| head`` are dropped.
- ``json``    parsed.
- ``text``    output as printed, messages, grammar sketches: not run.

A block of a runnable language that cannot run (an excerpt with ``...``) is preceded by
``<!-- docs: no-run: REASON -->``; there are at most MAX_NO_RUN of them, each with a reason.
A fence without a language is an error: say what the block is.
"""
from __future__ import annotations

import contextlib
import glob
import io
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"net", "python", "sh", "json", "text"}
OTHER_PROGRAMS = {"make", "python", ".", "source", "pip", "apt-get", "git", "dot", "cd"}
NO_RUN = re.compile(r"<!--\s*docs:\s*no-run:\s*(.*?)\s*-->")
MAX_NO_RUN = 6
TRAIN_QUICK = ["--epochs", "1", "--limit", "200", "--no-progress"]
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>```+|~~~+)(?P<info>[^\n`]*)\n(?P<body>.*?)"
                   r"^(?P=indent)(?P=fence)[ \t]*$", re.DOTALL | re.MULTILINE)


@dataclass
class Block:
    path: Path
    line: int          # 1-based line of the first line of the body
    language: str
    body: str
    no_run: str | None  # the reason given, when marked
    file: str | None = None  # ```net file=NAME: written to the scratch directory as NAME

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        start_line = text.count("\n", 0, m.start()) + 1
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = NO_RUN.search(before)
        info = m.group("info").split()
        file = next((w[5:] for w in info[1:] if w.startswith("file=")), None)
        out.append(Block(path, start_line + 1, info[0] if info else "", m.group("body"),
                         marker.group(1) if marker else None, file))
    return out


ALL = [b for doc in DOCS for b in blocks_of(doc)]


def runnable(language: str) -> list[Block]:
    return [b for b in ALL if b.language == language and b.no_run is None]


def ids(blocks: list[Block]) -> list[str]:
    return [b.where for b in blocks]


def enter_scratch(directory: Path, doc: Path, monkeypatch) -> None:
    """Work in `directory`, away from the checkout: specs/ linked in, and the doc's
    ```net file=NAME blocks written there, so its commands can name them."""
    (directory / "specs").symlink_to(ROOT / "specs")
    for block in blocks_of(doc):
        if block.file:
            (directory / block.file).write_text(block.body, encoding="utf-8")
    monkeypatch.chdir(directory)


# ---------------------------------------------------------------- the convention itself

def test_docs_have_blocks_of_every_runnable_language():
    languages = {b.language for b in ALL if b.no_run is None}
    assert {"net", "python", "sh"} <= languages


@pytest.mark.parametrize("block", ALL, ids=ids(ALL))
def test_every_block_names_a_known_language(block):
    assert block.language in LANGUAGES, (
        f"{block.where}: fence language {block.language!r}: use one of "
        f"{sorted(LANGUAGES)} (text for output samples)")


def test_no_run_markers_are_rare_and_give_a_reason():
    marked = [b for b in ALL if b.no_run is not None]
    assert len(marked) <= MAX_NO_RUN, [b.where for b in marked]
    for b in marked:
        assert b.language in {"net", "python", "sh", "json"}, f"{b.where}: text never runs"
        assert len(b.no_run.split()) >= 3, f"{b.where}: say why the block cannot run"


def test_the_fence_parser_finds_a_known_block():
    readme = blocks_of(ROOT / "README.md")
    assert any(b.language == "net" and "network resnet50" in b.body for b in readme)


# ---------------------------------------------------------------- net

@pytest.mark.parametrize("block", runnable("net"), ids=ids(runnable("net")))
def test_net_block_lowers_and_analyzes(block, monkeypatch):
    import netspec
    from netspec import verify
    from netspec.train import TrainConfig

    monkeypatch.chdir(block.path.parent)  # imports resolve as they would beside the doc
    net = netspec.parse(block.body, block.where)
    verify(net)
    netspec.analyze(net)
    TrainConfig.from_spec(net.train)


# ---------------------------------------------------------------- python

def python_files() -> list[Path]:
    return sorted({b.path for b in runnable("python")})


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run_in_order(path, tmp_path, monkeypatch):
    enter_scratch(tmp_path, path, monkeypatch)
    namespace: dict = {"__name__": "__docs__"}
    for block in runnable("python"):
        if block.path != path:
            continue
        code = compile(block.body, block.where, "exec")
        with contextlib.redirect_stdout(io.StringIO()):
            exec(code, namespace)  # noqa: S102 - the docs' own examples, nothing else


# ---------------------------------------------------------------- sh

@dataclass
class Command:
    argv: list[str]
    stdout: str | None   # "> FILE"
    exit_code: int
    where: str


def commands_of(block: Block) -> list[Command]:
    out = []
    lines = block.body.replace("\\\n", " ").splitlines()
    for offset, line in enumerate(lines):
        expect = re.search(r"#\s*exit\s+(\d+)\s*$", line)
        words = shlex.split(line, comments=True)
        where = f"{block.path.relative_to(ROOT)}:{block.line + offset}"
        if not words:
            continue
        if words[0] != "netspec":
            assert words[0] in OTHER_PROGRAMS, (
                f"{where}: `{words[0]}` is neither netspec nor one of {sorted(OTHER_PROGRAMS)}")
            continue
        if "|" in words:
            pager = words[words.index("|") + 1:]
            assert pager and pager[0] in ("less", "head", "more"), f"{where}: pipe into {pager}"
            words = words[:words.index("|")]
        stdout = None
        if ">" in words:
            stdout = words[words.index(">") + 1]
            words = words[:words.index(">")]
        argv = []
        for word in words[1:]:
            argv += sorted(glob.glob(word)) if any(c in word for c in "*?[") else [word]
        if argv and argv[0] == "train":
            argv += TRAIN_QUICK
        out.append(Command(argv, stdout, int(expect.group(1)) if expect else 0, where))
    return out


SH = [b for b in runnable("sh") if commands_of(b)]


def test_sh_blocks_hold_netspec_commands():
    assert sum(len(commands_of(b)) for b in SH) >= 10


def run_command(command: Command) -> None:
    from netspec.cli import main

    # A binary-capable stdout: `draw -o -` writes bytes to sys.stdout.buffer.
    out, err = io.TextIOWrapper(io.BytesIO(), "utf-8", write_through=True), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(command.argv))
        except SystemExit as exc:  # argparse: usage errors, --help
            code = exc.code if isinstance(exc.code, int) else 1
    assert code == command.exit_code, (f"{command.where}: netspec {shlex.join(command.argv)} "
                                       f"exited {code}\n{err.getvalue()[-3000:]}")
    if command.stdout:
        Path(command.stdout).write_bytes(out.buffer.getvalue())


@pytest.mark.parametrize("block", SH, ids=ids(SH))
def test_sh_block_runs_in_order(block, tmp_path, monkeypatch):
    enter_scratch(tmp_path, block.path, monkeypatch)
    for command in commands_of(block):
        run_command(command)


# ---------------------------------------------------------------- json

@pytest.mark.parametrize("block", runnable("json"), ids=ids(runnable("json")))
def test_json_block_parses(block):
    json.loads(block.body)


def test_blocks_are_read_from_every_doc():
    assert {b.path for b in ALL} >= {ROOT / "README.md", ROOT / "docs" / "language.md"}
