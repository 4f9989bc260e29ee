"""Benchmark: parse + lower + every analysis pass, for ResNet-152 and for ResNet-shaped specs
10x and 100x its size (the time per layer should stay flat: linear scaling).

    .venv/bin/python benchmarks/bench_analyze.py [--repeat N]

Target (issue 3): ResNet-152 in under 0.3 s.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

import netspec
from netspec.lower import lower
from netspec.parser import parse_module

TARGET_SECONDS = 0.3

# ResNet-152's stages (He et al. 2015, Table 1: 3, 8, 36, 3 bottlenecks), `scale` times over.
SYNTHETIC = """import "blocks/resnet.net"
network resnet_x{scale}(num_classes = 1000) {{
    input x: [3, 224, 224]
    output x -> conv1: conv(64, k=7, s=2, p=3, bias=false) -> bn1: bn -> relu
             -> maxpool: maxpool(3, s=2, p=1)
             -> layer1: bottleneck(64, proj = i == 0) * {n1}
             -> layer2: bottleneck(128, s = 2 if i == 0 else 1) * {n2}
             -> layer3: bottleneck(256, s = 2 if i == 0 else 1) * {n3}
             -> layer4: bottleneck(512, s = 2 if i == 0 else 1) * {n4}
             -> avgpool: global_avgpool -> fc: linear(num_classes)
}}
"""


def synthetic(scale: int) -> str:
    return SYNTHETIC.format(scale=scale, n1=3 * scale, n2=8 * scale, n3=36 * scale,
                            n4=3 * scale)


def timed(text: str, name: str) -> tuple[float, float, float, int]:
    """Seconds to parse, to lower, to analyze; and the number of layers."""
    t0 = time.perf_counter()
    module = parse_module(text, name)
    t1 = time.perf_counter()
    net = lower(module)
    t2 = time.perf_counter()
    netspec.analyze(net)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, len(net)


def best_of(text: str, name: str, repeat: int,
            collect: bool = True) -> tuple[float, float, float, int]:
    """The fastest of `repeat` runs; collect=False pauses CPython's cyclic garbage collector,
    whose full collections walk the whole heap and so cost more per layer on larger nets."""
    runs = []
    for _ in range(repeat):
        gc.collect()
        if not collect:
            gc.disable()
        try:
            runs.append(timed(text, name))
        finally:
            gc.enable()
    return min(runs, key=lambda r: r[0] + r[1] + r[2])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5, help="runs per size; the best is shown")
    args = p.parse_args(argv)

    from netspec.specfiles import read_spec

    path, text = read_spec("resnet152")
    cold = sum(timed(text, path)[:3])  # the first call also builds the LALR parser
    warm = [sum(timed(text, path)[:3]) for _ in range(max(args.repeat, 5))]
    print(f"ResNet-152, parse + lower + analyze: first call {cold:.3f} s (parser built), "
          f"then median {statistics.median(warm):.3f} s, best {min(warm):.3f} s "
          f"(target < {TARGET_SECONDS} s)")
    print()
    print(f"{'spec':<16}{'layers':>8}{'parse s':>10}{'lower s':>10}{'analyze s':>11}"
          f"{'total s':>10}{'us/layer':>10}{'us/layer, gc paused':>21}")
    per_layer, paused = [], []
    for scale in (1, 10, 100):
        text, name = synthetic(scale), f"resnet_x{scale}.net"
        repeat = args.repeat if scale < 100 else max(1, args.repeat // 2)
        parse_s, lower_s, analyze_s, layers = best_of(text, name, repeat)
        total = parse_s + lower_s + analyze_s
        no_gc = sum(best_of(text, name, repeat, collect=False)[:3])
        per_layer.append(total / layers)
        paused.append(no_gc / layers)
        print(f"{'resnet152 x' + str(scale):<16}{layers:>8}{parse_s:>10.3f}{lower_s:>10.3f}"
              f"{analyze_s:>11.3f}{total:>10.3f}{1e6 * total / layers:>10.1f}"
              f"{1e6 * no_gc / layers:>21.1f}")
    print()
    print(f"time per layer, 100x vs 1x: {per_layer[-1] / per_layer[0]:.2f}, with the garbage "
          f"collector paused {paused[-1] / paused[0]:.2f} (1.00 = linear)")
    return 0 if min(warm) < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
