"""The habits of a real package: what a built wheel holds (py.typed, the license, the version
from its one source), every third-party import declared, and the tools the tests judge by
pinned for CI."""
from __future__ import annotations

import ast
import email
import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import netspec

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the TOML reader pip vendors
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_the_built_wheel_ships_py_typed_the_license_and_the_one_version(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for name in ("netspec", "grammars", "specs"):
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("netspec-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(meta_name))
    assert "netspec/py.typed" in names
    # the web view works from the wheel alone: its page and the bundled CodeMirror editor
    assert {f"netspec/web/{f}" for f in ("index.html", "app.js", "app.css", "editor.js")} \
        <= set(names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert meta["License-Expression"] == "MIT"
    assert meta["Version"] == netspec.__version__
    assert "threadpoolctl>=3.1" in meta.get_all("Requires-Dist")


def test_version_is_defined_in_one_place():
    assert "version" not in PYPROJECT["project"]
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "netspec.__version__"}
    assert importlib.metadata.version("netspec") == netspec.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", netspec.__version__)


def test_every_third_party_import_is_declared():
    """A module netspec imports must come from a declared dependency or extra, not through
    another package's dependencies (threadpoolctl came with scikit-learn)."""
    declared = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    for reqs in PYPROJECT["project"]["optional-dependencies"].values():
        declared |= {_requirement_name(r) for r in reqs}
    dists = importlib.metadata.packages_distributions()
    stdlib = sys.stdlib_module_names
    imported: dict[str, str] = {}
    for path in (ROOT / "netspec").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top not in stdlib and top != "netspec" and top != "__future__":
                    imported.setdefault(top, str(path.relative_to(ROOT)))
    assert "threadpoolctl" in imported
    undeclared = {}
    for top, where in imported.items():
        # A module not installed here (an extra) is looked up by its own name.
        names = {d.lower().replace("_", "-") for d in dists.get(top, [])} or {top.lower()}
        if not names & declared:
            undeclared[top] = (where, sorted(names))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_ci_pins_the_tools_the_tests_judge_by():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[name.lower()] = version
    assert {"ruff", "pytest"} <= pins.keys()
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, f"{name} differs from its pin"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"pip install .*-e '\.\[test\]' -c constraints\.txt", makefile)
