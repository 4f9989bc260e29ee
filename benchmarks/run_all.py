"""Run every benchmarks/bench_*.py in turn, each in its own process (`make bench`).

    python benchmarks/run_all.py [-k SUBSTRING]

Each benchmark starts from a fresh interpreter, so one's thread pools and caches do not
colour the next. The exit status is non-zero when any benchmark fails.
"""

import argparse
import glob
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only benchmarks whose file name contains this")
    args = parser.parse_args()
    scripts = [s for s in sorted(glob.glob(os.path.join(HERE, "bench_*.py")))
               if args.k in os.path.basename(s)]
    failed = []
    for script in scripts:
        name = os.path.basename(script)
        print(f"==== {name}", flush=True)
        start = time.perf_counter()
        status = subprocess.run([sys.executable, script], check=False).returncode
        print(f"==== {name}: {'ok' if status == 0 else f'FAILED ({status})'} in "
              f"{time.perf_counter() - start:.0f} s\n", flush=True)
        if status:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
