"""Benchmark: the front end's and the renderer's cost on the largest documented spec and on
generated specs scaled 4x, and how long each resource limit takes to say so (issue 19).

    python benchmarks/bench_hostile.py [--n 2000] [--memory-gb 4]

Part 1: parse, lower, analyze, draw (plan + DOT text, no Graphviz) and warnings rendered,
in seconds, for the bundled spec with the most layers, then for four shapes of generated
spec at n and 4n layers: a chain, blocks nested by doubling, one tensor with n consumers
merged by one add, and n unused tensors (n warnings). The last column is the 4n/n ratio of
the total: about 4 is linear, 16 quadratic. Part 2: each limit's error and its time.
Everything runs under an address-space limit (RLIMIT_AS), so a regression fails with a
MemoryError instead of exhausting the machine.
"""

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import netspec
from netspec.diagnostics import NetspecError
from netspec.lower import lower
from netspec.parser import parse_module
from netspec.specfiles import library_specs, read_spec


def chain(n: int) -> str:
    return f"network n {{ input x: [4] output x -> relu * {n} }}"


def nested(n: int) -> str:
    levels = max(1, n.bit_length() - 1)
    lines = ["block b0 { input x output x -> relu }"]
    lines += [f"block b{k} {{ input x output x -> b{k-1} -> b{k-1} }}"
              for k in range(1, levels + 1)]
    return "\n".join(lines + [f"network n {{ input x: [4] output x -> b{levels} }}"])


def fan_out(n: int) -> str:
    return ("network n {\n  input x: [4]\n  y = x -> relu\n  output ("
            + ", ".join(["y -> relu"] * n) + ") -> add\n}")


def unused(n: int) -> str:
    body = "\n".join(f"  a{k} = x -> relu" for k in range(n))
    return f"network n {{\n  input x: [4]\n{body}\n  output x -> relu\n}}"


def doubling(compare: bool) -> str:
    lines = ["network n {", "  let a0 = [1, 1]"]
    lines += [f"  let a{k} = [a{k-1}, a{k-1}]" for k in range(1, 26)]
    lines += ["  if a25 == a25 { }" if compare else "", "  input x: a25", "  output x", "}"]
    return "\n".join(lines)


LIMITS = {
    "let lists doubling 25 times": doubling(False),
    "== on two such lists": doubling(True),
    "40,000-character identifier": "network n {\n  input x: [4]\n  " + "a" * 40_000 + " ) }",
    "blocks nested to 2^17 layers": nested(1 << 17),
    "repeats of 10^12 layers": "network n { input x: [4] output x -> "
                                "[[relu * 10000] * 10000] * 10000 }",
    "stride 2^63": "network n { input x: [3, 8, 8] output x -> conv(8, k=3, s="
                   + str(2 ** 63) + ") }",
    "brackets 10,000 deep": "network n { input x: [4] let v = " + "[" * 10_000 + " }",
}


def stages(text: str, filename: str = "bench.net") -> tuple[list[float], int]:
    """Seconds of parse, lower, analyze, draw, warnings; and the layer count."""
    times = []
    start = time.perf_counter()
    module = parse_module(text, filename)
    times.append(time.perf_counter() - start)
    for step in (lambda: lower(module), None, None, None):
        start = time.perf_counter()
        if step is not None:
            net = step()
        elif len(times) == 2:
            netspec.analyze(net)
        elif len(times) == 3:
            netspec.draw(net).source  # noqa: B018 - the DOT text is the product
        else:
            "\n".join(w.render() for w in net.warnings)
        times.append(time.perf_counter() - start)
    return times, len(net)


def row(title: str, times: list[float], layers: int, ratio: str = "") -> None:
    cells = " ".join(f"{t:>8.3f}" for t in times)
    print(f"{title:<34} {layers:>7} {cells} {sum(times):>8.3f} {ratio:>6}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="the smaller generated size")
    parser.add_argument("--memory-gb", type=float, default=4.0)
    args = parser.parse_args()
    limit = int(args.memory_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    print(f"{'spec':<34} {'layers':>7} {'parse':>8} {'lower':>8} {'analyze':>8} {'draw':>8} "
          f"{'warn':>8} {'total':>8} {'4n/n':>6}")
    sizes = {}
    for name, path in library_specs().items():
        text = read_spec(path)[1]
        if "network" in text:
            try:
                sizes[name] = len(netspec.load(name))
            except NetspecError:
                pass
    largest = max(sizes, key=sizes.get)
    shown, text = read_spec(largest)
    times, layers = stages(text, shown)
    row(f"{largest} (largest documented)", times, layers)
    for title, make in [("chain", chain), ("nested blocks", nested), ("fan-out", fan_out),
                        ("unused tensors (warnings)", unused)]:
        small, n_small = stages(make(args.n))
        large, n_large = stages(make(4 * args.n))
        row(f"{title}, n", small, n_small)
        row(f"{title}, 4n", large, n_large, f"{sum(large) / sum(small):.1f}")

    print(f"\n{'limit':<34} {'seconds':>8}  error")
    for title, text in LIMITS.items():
        start = time.perf_counter()
        try:
            net = netspec.parse(text, "attack.net")
            outcome = f"no error ({len(net)} layers)"
        except NetspecError as exc:
            outcome = str(exc).splitlines()[0][:100]
        print(f"{title:<34} {time.perf_counter() - start:>8.3f}  {outcome}", flush=True)


if __name__ == "__main__":
    main()
