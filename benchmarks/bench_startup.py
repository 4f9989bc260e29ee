"""Benchmark: start-up of `netspec train`, from launching the process to its first step.

    python benchmarks/bench_startup.py [--repeats R] [--python PY]

Each run launches a fresh interpreter that runs the CLI's `main(["train", ...])` on the
default spec and data (the digits CNN on digits) and stops when the loop enters its first
epoch (netspec.train.loop.run_epoch is wrapped to record the time and exit): import, spec,
data, compile, run directory, everything a user waits for before the first step. The
reference measured in the same run is a bare interpreter (`python -c pass`), so the figure
to read is the difference. The CPU time (user + system) of each child is reported too: on a
machine shared with other work it is what the start-up itself costs, while the wall time
also counts the waits for a core. The heavy libraries the child had imported by then are
listed (none of sklearn, scipy, matplotlib, sympy, torch should be).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import sys, time, json
import netspec.train.loop as loop

def first_step(run, state, flag):
    heavy = sorted(m for m in ("sklearn", "scipy", "matplotlib", "torch", "sympy")
                   if m in sys.modules)
    print(json.dumps({"at": time.time(), "heavy": heavy}), flush=True)
    raise SystemExit(0)

loop.run_epoch = first_step
from netspec.cli import main
main(["train", "--epochs", "1", "--no-progress", "-o", sys.argv[1]])
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def launch(python: str, args: list[str], cwd: str | None = None) -> tuple[float, str, float]:
    """(wall-clock start, stdout, CPU seconds of the child). cwd: where the child runs (not
    a source checkout, whose netspec/ would shadow the installed package of --python)."""
    cpu, start = children_cpu(), time.time()
    out = subprocess.run([python, *args], capture_output=True, text=True, check=True,
                         cwd=cwd).stdout
    return start, out, children_cpu() - cpu


def time_to_first_step(python: str, out_dir: str) -> tuple[float, float, list[str]]:
    # The loop wrapper is installed before the CLI imports anything else of netspec's
    # training code; netspec.train.loop's own imports are part of what is timed.
    start, out, cpu = launch(python, ["-c", CHILD, out_dir], cwd=os.path.dirname(out_dir))
    line = json.loads(out.strip().splitlines()[-1])
    return line["at"] - start, cpu, line["heavy"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    bare, bare_cpu, first, first_cpu, heavy = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            start, _, cpu = launch(args.python, ["-c", "pass"])
            bare.append(time.time() - start)
            bare_cpu.append(cpu)
            seconds, cpu, heavy = time_to_first_step(args.python, os.path.join(tmp, f"run{r}"))
            first.append(seconds)
            first_cpu.append(cpu)
    med = statistics.median
    b, f, bc, fc = med(bare), med(first), med(bare_cpu), med(first_cpu)
    print(f"medians of {args.repeats}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    print(f"bare interpreter            wall {b:6.3f} s   CPU {bc:6.3f} s")
    print(f"netspec train, first step   wall {f:6.3f} s   CPU {fc:6.3f} s   "
          f"(minus the interpreter: wall {f - b:.3f} s, CPU {fc - bc:.3f} s)")
    print(f"heavy modules imported by then: {', '.join(heavy) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
