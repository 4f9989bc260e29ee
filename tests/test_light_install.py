"""A light install: `import netspec` and `netspec train` up to its first step import none of
the heavy libraries (scikit-learn, SciPy, matplotlib, torch), and the runtime dependencies
leave them out; they are extras or test references."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the TOML reader pip vendors
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("sklearn", "scipy", "matplotlib", "torch", "tensorboardX", "sympy")

# netspec train on the default spec and data, stopped when the loop enters its first epoch
# (what benchmarks/bench_startup.py times); prints the heavy modules imported by then.
FIRST_STEP = r"""
import json, sys
import netspec.train.loop as loop

def first_step(run, state, flag):
    print(json.dumps(sorted(m for m in HEAVY if m in sys.modules)))
    raise SystemExit(0)

loop.run_epoch = first_step
from netspec.cli import main
main(["train", "--epochs", "1", "--no-progress", "-o", sys.argv[1]])
"""


def heavy_after(code: str, *args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n" + code, *args],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_netspec_imports_no_heavy_library():
    assert heavy_after("import json, sys, netspec, netspec.cli, netspec.train\n"
                       "print(json.dumps([m for m in HEAVY if m in sys.modules]))") == []


def test_train_reaches_its_first_step_without_a_heavy_library(tmp_path):
    assert heavy_after(FIRST_STEP, str(tmp_path / "run")) == []


def requirement_names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_heavy_libraries_are_extras_not_runtime_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = requirement_names(project["dependencies"])
    assert not runtime & {"scikit-learn", "scipy", "matplotlib", "torch", "tensorboardx",
                          "sympy"}
    assert {"threadpoolctl", "tqdm"} <= runtime  # imported directly
    extras = project["optional-dependencies"]
    assert requirement_names(extras["plot"]) == {"matplotlib"}
    assert requirement_names(extras["tensorboard"]) == {"tensorboardx"}
    assert requirement_names(extras["symbolic"]) == {"sympy"}
    assert {"sympy", "matplotlib", "scikit-learn", "tensorboardx", "tensorboard"} <= \
        requirement_names(extras["test"])


def test_make_demo_installs_the_runtime_only_and_make_test_the_rest():
    """`make -n` prints what each target would run in a fresh checkout (no venv yet)."""
    def dry_run(target: str) -> str:
        done = subprocess.run(["make", "-n", target, "VENV=/nonexistent/venv"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    demo, test = dry_run("demo"), dry_run("test")
    assert "pip install -q -e . -c constraints.txt" in demo and "[test]" not in demo
    assert "netspec train" in demo
    assert "pip install -q -e . -c constraints.txt" in test
    assert "pip install -q -e '.[test]' -c constraints.txt" in test and "pytest" in test


def test_a_symbolic_size_without_sympy_says_which_extra_to_install(tmp_path):
    spec = tmp_path / "sym.net"
    spec.write_text("network sym {\n    input x: [3, H, W]\n    output x -> conv(8, k=3)\n}\n")
    # sympy made unimportable in a child process: what an install without the extra sees
    code = ("import sys; sys.modules['sympy'] = None\n"
            "from netspec.cli import main\n"
            f"raise SystemExit(main(['summary', {str(spec)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert "sym.net:2:18: error: the input size `H` is symbolic, which needs SymPy" in \
        done.stderr and "netspec[symbolic]" in done.stderr
