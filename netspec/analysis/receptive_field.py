"""Analysis pass: the receptive field of every tensor with respect to the network input.

Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks",
Distill 2019, computed forward from the input (r = 1, j = 1, start = 0) per spatial axis:

    r_out = r_in + (k - 1) * j_in                 size: input pixels one unit sees
    j_out = j_in * s                              jump: input pixels between adjacent units
    start_out = start_in + ((k - 1) / 2 - p) * j_in   centre of the first unit's field

with dilation folded into k (k -> d(k - 1) + 1). The effective padding of the paper's table
is P = (r - 1) / 2 - start. Elementwise ops, norms and reshapes leave the field unchanged;
linear layers and global pooling see their input's whole grid, and so do the steps of
attention, recurrences and pooling over time on a sequence of image patches (ViT). A network
whose input is a sequence gets a TimeField instead: which input steps an output step sees. Where paths merge (add,
concat) the field is the largest over the paths, and the paths are aligned when they share
jump and start; otherwise each output mixes features centred on different input pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

from netspec.analysis.shapes import layer_notes
from netspec.diagnostics import Diagnostic
from netspec.ir import Network
from netspec.ops import REGISTRY, Window

Pair = tuple[int, int]


@dataclass(frozen=True)
class ReceptiveField:
    """One tensor's field per spatial axis (h, w), in input pixels."""

    size: Pair
    jump: Pair
    start: tuple[float, float]

    @property
    def padding(self) -> tuple[float, float]:
        """Araujo et al.'s effective padding P = (r - 1) / 2 - start."""
        return tuple((r - 1) / 2 - c for r, c in zip(self.size, self.start))  # type: ignore

    def step(self, window: Window) -> ReceptiveField:
        (r0, r1), (j0, j1), (c0, c1) = self.size, self.jump, self.start
        (k0, k1), (s0, s1), (p0, p1) = window.kernel, window.stride, window.padding
        return ReceptiveField((r0 + (k0 - 1) * j0, r1 + (k1 - 1) * j1), (j0 * s0, j1 * s1),
                              (c0 + ((k0 - 1) / 2 - p0) * j0, c1 + ((k1 - 1) / 2 - p1) * j1))


INPUT_FIELD = ReceptiveField((1, 1), (1, 1), (0.0, 0.0))


@dataclass(frozen=True)
class TimeField:
    """The receptive field of a tensor of a sequence network, along time: which steps of the
    input sequence one output step depends on. A number would mislead here (a causal step t
    sees t + 1 steps, a different count at every position), so it is said in words."""

    reach: str  # "step": its own step, "past": steps <= t, "all": the whole sequence

    def describe(self) -> str:
        return {"step": "1 step", "past": "steps <= t", "all": "all steps"}[self.reach]

    def __str__(self) -> str:
        return self.describe()


def _time_field(op, data: dict, fields: list) -> TimeField:
    from netspec.ops.sequence import wider

    reach = "step"
    for f in fields:
        reach = wider(reach, f.reach)
    return TimeField(op.time_reach(data["attrs"], reach))


def receptive_fields(net: Network) -> list[Diagnostic]:
    """Set node["receptive_field"] (None where no spatial input reaches the tensor; a
    TimeField in a network whose input is a sequence or tokens);
    return warnings for merges of misaligned paths."""
    nodes = dict(net.graph.nodes(data=True))  # plain dict lookups: NodeView is slow
    grid: dict[str, Pair] = {}  # the spatial positions each tensor's units sit on
    warnings: list[Diagnostic] = []
    for name in net.order():
        data = nodes[name]
        op = REGISTRY[data["op"]]
        shape = data["shape"]
        if not data["inputs"]:
            sequence = len(shape) == 2 or data["attrs"].get("dtype") == "int"
            field = INPUT_FIELD if len(shape) == 3 else TimeField("step") if sequence else None
            data["receptive_field"], grid[name] = field, tuple(shape[1:]) or (1, 1)
            continue
        sources = [i for i in data["inputs"] if nodes[i]["receptive_field"] is not None]
        if not sources:
            data["receptive_field"], grid[name] = None, (1, 1)
            continue
        fields = [nodes[i]["receptive_field"] for i in sources]
        if isinstance(fields[0], TimeField):
            data["receptive_field"], grid[name] = _time_field(op, data, fields), (1, 1)
            continue
        field, in_grid = fields[0], grid[sources[0]]
        if len(fields) > 1:
            field = _widest(fields)
            # A path that has seen its whole grid (attention over patches) has no position
            # left to misalign: the smallest grid of the paths decides.
            merged = tuple(_smallest([grid[i][a] for i in sources]) for a in (0, 1))
            warning = _misalignment(name, data, sources, fields, merged, op.name)
            in_grid = merged
            if warning:
                data["warnings"].append(warning)
                warnings.append(warning)
        ins = [nodes[i]["shape"] for i in data["inputs"]]
        whole = op.sees_whole_grid(data["attrs"], ins)
        window = Window(in_grid, (1, 1), (0, 0)) if whole else op.window(data["attrs"], ins)
        data["receptive_field"] = field.step(window) if window else field
        # A flattened map keeps its grid: a linear layer after it still sees all of it. A
        # sequence of patches keeps the grid of the patches (one step per patch).
        if whole:
            grid[name] = (1, 1)
        elif len(shape) == 3:
            grid[name] = tuple(shape[1:])
        elif window is not None:
            grid[name] = tuple(g // s for g, s in zip(in_grid, window.stride))
        else:
            grid[name] = in_grid
    return warnings


def _widest(fields: list[ReceptiveField]) -> ReceptiveField:
    """The largest field over the paths, per axis (the first path on ties)."""
    best = [_largest(fields, a) for a in (0, 1)]
    return ReceptiveField(tuple(best[a].size[a] for a in (0, 1)),
                          tuple(best[a].jump[a] for a in (0, 1)),
                          tuple(best[a].start[a] for a in (0, 1)))


def _largest(fields: list[ReceptiveField], axis: int) -> ReceptiveField:
    """The first field of the largest size along `axis`; sizes that depend on the input
    size (after a layer seeing its whole grid) are compared where SymPy can decide."""
    best = fields[0]
    for f in fields[1:]:
        if f.size[axis] is not best.size[axis] and bool(f.size[axis] > best.size[axis]):
            best = f
    return best


def _misalignment(name: str, data: dict, sources: list[str], fields: list[ReceptiveField],
                  grid: Pair, op: str) -> Diagnostic | None:
    """A warning when paths disagree in jump or start along an axis with more than one
    position: there, unit (i, j) of one path is centred elsewhere than unit (i, j) of the
    other. After global pooling (a 1x1 grid) nothing is left to align."""
    axes = [a for a in (0, 1) if not _single(grid[a]) and
            len({(f.jump[a], f.start[a]) for f in fields}) > 1]
    if not axes:
        return None
    paths = "; ".join(f"`{s}`: jump {_pair(f.jump)}, start {_pair(f.start)}"
                      for s, f in zip(sources, fields))
    return Diagnostic(
        "warning", f"{name}: the paths into this {op} are spatially misaligned ({paths}): "
        "its units mix features centred on different input pixels", data["span"],
        "give every path the same strides and centred padding (p = (k - 1) / 2)",
        layer_notes(data))


def _smallest(values: list):
    """min() of grid sizes; SymPy's Min where a size is symbolic (min cannot compare)."""
    try:
        return min(values)
    except TypeError:
        import sympy

        return sympy.Min(*values)


def _single(n) -> bool:
    """A grid axis of one position; a symbolic axis counts as more than one."""
    return n == 1


def _pair(v: tuple) -> str:
    a, b = (_num(x) for x in v)
    return a if a == b else f"{a}x{b}"


def _num(x: float) -> str:
    return f"{x:g}"
