"""Benchmark: ResNet-152's architecture diagram, building the DOT and running Graphviz's dot.

    python benchmarks/bench_render.py [--repeats R] [--spec NAME]

Rows: the default (auto) depth, every block open with runs folded, and every block open
and unfolded (one node per layer, one cluster per block). Each column is the median of the
repeats in seconds: `draw` builds the graphviz.Digraph from an analyzed network (planning
included), `dot svg` / `dot png` run the real dot on its source.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import netspec
from netspec.render import draw, plan


def median_s(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run_dot(source: str, fmt: str) -> bytes:
    return subprocess.run(["dot", f"-T{fmt}"], input=source.encode(), capture_output=True,
                          check=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--spec", default="resnet152")
    args = parser.parse_args()

    t_load, net = median_s(lambda: netspec.load(args.spec), args.repeats)
    t_analyze, _ = median_s(lambda: netspec.analyze(net), args.repeats)
    print(f"{args.spec}: {len(net)} layers; load {t_load:.3f} s, analyze {t_analyze:.3f} s")
    print(f"{'diagram':<28} {'nodes':>5} {'clusters':>8} {'draw':>7} {'dot svg':>8} "
          f"{'dot png':>8} {'total':>7}")
    for title, kwargs in [("default (auto depth)", {}),
                          ("all open, runs folded", {"depth": None}),
                          ("all open, unfolded", {"depth": None, "collapse_repeats": False})]:
        layout = plan(net, kwargs.get("depth", "auto"), kwargs.get("collapse_repeats", True))
        t_draw, graph = median_s(lambda kw=kwargs: draw(net, **kw), args.repeats)
        t_svg, _ = median_s(lambda g=graph: run_dot(g.source, "svg"), args.repeats)
        t_png, _ = median_s(lambda g=graph: run_dot(g.source, "png"), args.repeats)
        print(f"{title:<28} {len(layout.nodes):>5} {len(layout.clusters):>8} "
              f"{t_draw:>6.3f}s {t_svg:>7.3f}s {t_png:>7.3f}s {t_draw + t_svg:>6.3f}s")


if __name__ == "__main__":
    main()
