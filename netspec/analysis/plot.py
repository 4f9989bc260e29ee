"""Analyze stage, the picture: MACs and training memory against the input size, for one or
several networks analyzed with symbolic sizes (`netspec summary A B --plot cost.png`).

Every point is the exact evaluation of the symbolic totals (netspec.analysis.symbolic), so
the curves are the concrete analyses at those sizes, not a fit."""
from __future__ import annotations

from pathlib import Path

from netspec.analysis.report import Analysis
from netspec.diagnostics import Diagnostic, NetspecError

FORMATS = (".png", ".svg")


def square_sizes(a: Analysis, sizes: list[int]) -> list[int]:
    """The sizes at which every symbol may take the value (square inputs: all symbols equal):
    at least each one's minimum, and the spec's `where` constraints hold."""
    from netspec.analysis.symbolic import evaluate

    z = a.sizes
    ok = []
    for n in sizes:
        env = {s: n for s in z.symbols}
        if all(n >= z.minimum[s] for s in z.symbols) and all(evaluate(c, env) for c in z.where):
            ok.append(n)
    return ok


def curves(a: Analysis, sizes: list[int]) -> tuple[list[int], list[int], list[int]]:
    """(sizes, MACs per sample, training-step bytes) at square sizes n x n."""
    from netspec.analysis.symbolic import compile_expr

    macs, memory = compile_expr(a.totals.macs), compile_expr(a.memory.total)
    xs = square_sizes(a, sizes)
    env = [{s: n for s in a.sizes.symbols} for n in xs]
    return xs, [int(macs(e)) for e in env], [int(memory(e)) for e in env]


def plot(analyses: list[Analysis], path: str | Path, sizes: list[int]) -> Path:
    """Write the figure (PNG or SVG, by the suffix): GMACs per sample and the training-step
    memory estimate in GiB against the side of a square input, one line per network."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise NetspecError(Diagnostic("error", f"cannot plot to `{path}`", None,
                                      "give a .png or .svg file: --plot cost.png"))
    try:
        import matplotlib
    except ImportError:  # the optional `plot` extra
        raise NetspecError(Diagnostic("error", "--plot needs matplotlib, which is not "
                                      "installed", None,
                                      "pip install 'netspec[plot]'")) from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for a in analyses:
        xs, macs, memory = curves(a, sizes)
        if not xs:
            raise NetspecError(Diagnostic(
                "error", f"{a.network}: no size in {sizes[0]}..{sizes[-1]} is allowed",
                None, "smallest sizes: " + ", ".join(f"{k}={v}"
                                                     for k, v in a.sizes.minimum.items())))
        left.plot(xs, [m / 1e9 for m in macs], marker=".", label=a.network)
        right.plot(xs, [b / 2 ** 30 for b in memory], marker=".", label=a.network)
    first = analyses[0]
    left.set(xlabel="input side n (an n x n image)", ylabel="GMACs per sample",
             title="forward multiply-adds")
    right.set(xlabel="input side n (an n x n image)", ylabel="GiB",
              title=f"training step, batch {first.batch}, {first.dtype}, "
                    f"{first.memory.optimizer}")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
