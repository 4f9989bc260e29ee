"""Benchmark: parse + lower ResNet-152, and ResNet-sized synthetic specs 10x and 100x larger.

    python benchmarks/bench_parse.py [--repeats R] [--quick]

Building the LALR parser happens once per process (lru_cache); it is timed on its own and
excluded from the other rows, which report the median of R warm runs. Three ways to grow a
spec, since each stresses a different part:

  lines    one distinct `-> layerN: bottleneck(...)` line per block: the text, the parse
           tree and the IR all grow 10x / 100x
  blocks   as many distinct `block` definitions as block instances, each used once: the
           block library grows too
  repeats  ResNet-152 with every stage's repeat count times 10 / 100: the text stays put,
           only lowering grows

Linear scaling shows as a constant microseconds-per-layer column and a 'vs 1x' ratio
near the scale factor.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from netspec.lower import library_dir, lower
from netspec.parser import lark_parser, parse_module

RESNET152_STAGES = [(64, 3), (128, 8), (256, 36), (512, 3)]  # (channels, blocks)
STEM = """    input x: [3, 224, 224]
    output x -> conv1: conv(64, k=7, s=2, p=3, bias=false) -> bn1: bn -> relu
             -> maxpool: maxpool(3, s=2, p=1)
"""
HEAD = """             -> avgpool: global_avgpool
             -> fc: linear(num_classes)
}
"""


# specs/blocks/resnet.net's bottleneck, written as tightly as a machine would: the 100x
# `blocks` spec holds 5,000 copies and must stay under the 2 MB source limit.
BOTTLENECK = """(c,s=1,proj=false){input x
y=x->conv1:conv(c,k=1,bias=false)->bn1:bn->relu->conv2:conv(c,k=3,s=s,p=1,bias=false)->bn2:bn
->relu->conv3:conv(c*4,k=1,bias=false)->bn3:bn
if s!=1 or proj{r=x->downsample:[conv(c*4,k=1,s=s,bias=false)->bn]}else{r=x}
output y+r->relu}
"""


def stage_plan(scale: int) -> list[tuple[int, int, int]]:
    """(stage, channels, stride) of every block of a ResNet-152 with `scale` times as many
    blocks per stage."""
    plan = []
    for stage, (c, n) in enumerate(RESNET152_STAGES, start=1):
        for k in range(n * scale):
            plan.append((stage, c, 2 if k == 0 and stage > 1 else 1))
    return plan


def lines_spec(scale: int) -> str:
    """Every block instance on a line of its own."""
    rows = [f"             -> layer{stage}_{k}: bottleneck({c}, s={s}"
            + (", proj=true" if k == 0 and stage == 1 else "") + ")"
            for k, (stage, c, s) in enumerate(stage_plan(scale))]
    return ('import "blocks/resnet.net"\n\nnetwork lines(num_classes = 1000) {\n'
            + STEM + "\n".join(rows) + "\n" + HEAD)


def blocks_spec(scale: int) -> str:
    """A distinct block definition for every instance (a copy of bottleneck, renamed)."""
    plan = stage_plan(scale)
    defs = [f"block bottleneck_{k}{BOTTLENECK}" for k in range(len(plan))]
    rows = [f"             -> layer{stage}_{k}: bottleneck_{k}({c}, s={s}"
            + (", proj=true" if k == 0 and stage == 1 else "") + ")"
            for k, (stage, c, s) in enumerate(plan)]
    return ("\n".join(defs) + "\nnetwork blocks(num_classes = 1000) {\n" + STEM
            + "\n".join(rows) + "\n" + HEAD)


def repeats_spec(scale: int) -> str:
    """ResNet-152 as written in specs/, with each stage's repeat count times `scale`."""
    rows = []
    for stage, (c, n) in enumerate(RESNET152_STAGES, start=1):
        first = "proj = i == 0" if stage == 1 else "s = 2 if i == 0 else 1"
        rows.append(f"             -> layer{stage}: bottleneck({c}, {first}) * {n * scale}")
    return ('import "blocks/resnet.net"\n\nnetwork repeats(num_classes = 1000) {\n'
            + STEM + "\n".join(rows) + "\n" + HEAD)


def cold_start() -> tuple[float, float]:
    """(import seconds, parser build seconds), measured in a fresh interpreter."""
    code = ("import time; t0 = time.perf_counter(); from netspec.parser import lark_parser; "
            "t1 = time.perf_counter(); lark_parser(); t2 = time.perf_counter(); "
            "print(t1 - t0, t2 - t1)")
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, check=True).stdout
    imported, build = (float(v) for v in out.split())
    return imported, build


def time_once(text: str, filename: str) -> tuple[float, float, float, int]:
    """(parse wall s, lower wall s, parse + lower CPU s, layers) of one run."""
    cpu, start = time.process_time(), time.perf_counter()
    module = parse_module(text, filename)
    parsed = time.perf_counter()
    net = lower(module)
    lowered = time.perf_counter()
    return parsed - start, lowered - parsed, time.process_time() - cpu, len(net)


def measure(text: str, filename: str, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        gc.collect()  # start every run from the same heap, so runs are comparable
        runs.append(time_once(text, filename))
    return {"bytes": len(text), "lines": text.count("\n"), "layers": runs[0][3],
            "parse": statistics.median(r[0] for r in runs),
            "lower": statistics.median(r[1] for r in runs),
            "total": statistics.median(r[0] + r[1] for r in runs),
            "cpu": statistics.median(r[2] for r in runs)}


def row(name: str, m: dict, base: dict | None) -> str:
    # Scaling is judged on CPU time: on a shared machine wall time also counts other
    # processes' turns.
    ratio = f"{m['cpu'] / base['cpu']:7.1f}x" if base else "       "
    return (f"{name:<16}{m['bytes']:>10,}{m['lines']:>7,}{m['layers']:>8,}"
            f"{m['parse'] * 1e3:>10.1f}{m['lower'] * 1e3:>10.1f}{m['total'] * 1e3:>10.1f}"
            f"{m['cpu'] * 1e3:>10.1f}{m['cpu'] / m['layers'] * 1e6:>9.1f}{ratio}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="warm runs per row (median)")
    ap.add_argument("--quick", action="store_true", help="1x and 10x only, 3 repeats")
    args = ap.parse_args()
    repeats = 3 if args.quick else args.repeats
    scales = (1, 10) if args.quick else (1, 10, 100)

    imported, build = cold_start()
    lark_parser()
    resnet152 = os.path.join(library_dir(), "resnet152.net")
    with open(resnet152) as f:
        text = f.read()
    start = time.perf_counter()
    time_once(text, resnet152)
    first = time.perf_counter() - start

    print(f"fresh process: import netspec.parser {imported * 1e3:.0f} ms, "
          f"build the LALR parser {build * 1e3:.0f} ms (once per process; excluded below)")
    print(f"first parse + lower of ResNet-152 in this process: {first * 1e3:.0f} ms\n")
    header = (f"{'spec':<16}{'bytes':>10}{'lines':>7}{'layers':>8}{'parse ms':>10}"
              f"{'lower ms':>10}{'total ms':>10}{'CPU ms':>10}{'us/layer':>9}{'vs 1x':>7}")
    print(header)
    print("-" * len(header))
    m = measure(text, resnet152, max(repeats, 15))
    print(row("resnet152.net", m, None))
    verdict = "well under" if m["total"] < 0.1 else ("under" if m["total"] < 0.3 else "OVER")
    print()
    for kind, make in (("lines", lines_spec), ("blocks", blocks_spec), ("repeats", repeats_spec)):
        base = None
        for scale in scales:
            spec = make(scale)
            # A 100x spec takes seconds to a minute per run: fewer runs.
            result = measure(spec, os.path.join(library_dir(), f"{kind}.net"),
                             repeats if scale < 100 else max(1, repeats // 4))
            print(row(f"{kind} x{scale}", result, base))
            base = base or result
        print()
    print(f"ResNet-152 parse + lower: {m['total'] * 1e3:.1f} ms median wall "
          f"({m['cpu'] * 1e3:.1f} ms CPU), {verdict} the 0.3 s target. Times are medians of "
          "warm runs; 'vs 1x' and us/layer use CPU time.")


if __name__ == "__main__":
    main()
