"""The summary of an analysis as text: an aligned table, Markdown, CSV or JSON."""
from __future__ import annotations

import csv
import io
import json

from netspec.analysis.receptive_field import ReceptiveField, TimeField
from netspec.analysis.report import Analysis, Row, jsonable, rows
from netspec.analysis.shapes import show as _show_concrete

FORMATS = ("table", "markdown", "json", "csv")
COLUMNS = ("Layer", "Op", "Output", "Params", "MACs", "RF", "Jump", "Start", "Activations")
RIGHT = {"Params", "MACs", "RF", "Jump", "Start", "Activations"}
CSV_FIELDS = ("name", "kind", "depth", "op", "inputs", "output_shape", "params",
              "trainable_params", "frozen_params", "buffers", "macs", "flops",
              "backward_flops_input", "backward_flops_weight", "flops_convention", "rf_size",
              "rf_jump", "rf_start", "activation_bytes")


def render(analysis: Analysis, fmt: str = "table", depth: int | None = None) -> str:
    if fmt == "json":
        return json.dumps(analysis.to_dict(depth), indent=2) + "\n"
    if fmt == "csv":
        return _csv(analysis, depth)
    cells = [_cells(r, analysis.batch) for r in rows(analysis, depth)]
    table = _markdown(cells) if fmt == "markdown" else _aligned(cells)
    bullet = "- " if fmt == "markdown" else ""
    title = _title(analysis)
    head = f"## {title}\n\n" if fmt == "markdown" else f"{title}\n\n"
    return head + table + "\n\n" + "\n".join(bullet + line for line in _footer(analysis)) + "\n"


def show(shape) -> str:
    return _show_concrete(tuple(_text(d) for d in shape))


def _symbolic(x) -> bool:
    return bool(getattr(x, "free_symbols", None))


def _text(x) -> str:
    """A quantity as text: an int as is, an expression in SymPy's syntax, readably."""
    if _symbolic(x):
        from netspec.analysis.symbolic import readable

        return str(readable(x))
    return str(x)


def _title(a: Analysis) -> str:
    inputs = ", ".join(f"{name} {show(s)}" for name, s in a.input_shapes.items())
    return f"{a.network}: input {inputs}, batch {a.batch}, {a.dtype}"


def _cells(r: Row, batch: int) -> list[str]:
    size, jump, start = _field(r.receptive_field)
    return ["  " * r.depth + r.name, r.op, show(r.output_shape), f"{r.count.params:,}",
            _si(r.macs), size, jump, start, _bytes(r.activation_bytes * batch)]


def _field(rf: ReceptiveField | TimeField | None) -> tuple[str, str, str]:
    if rf is None:
        return "-", "-", "-"
    if isinstance(rf, TimeField):
        return rf.describe(), "-", "-"
    return _pair(rf.size), _pair(rf.jump), _pair(rf.start)


def _pair(v: tuple) -> str:
    a, b = (_text(x) if _symbolic(x) else f"{float(x):g}" for x in v)
    if a != b and (_symbolic(v[0]) or _symbolic(v[1])):
        return f"[{a}; {b}]"
    return a if a == b else f"{a}x{b}"


def _aligned(cells: list[list[str]]) -> str:
    widths = [max(len(c[k]) for c in cells + [list(COLUMNS)]) for k in range(len(COLUMNS))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if h in RIGHT else v.ljust(w)
                         for v, w, h in zip(values, widths, COLUMNS)).rstrip()

    rule = "-" * len(line(["-" * w for w in widths]))
    return "\n".join([line(list(COLUMNS)), rule] + [line(c) for c in cells] + [rule])


def _markdown(cells: list[list[str]]) -> str:
    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    align = ["---:" if h in RIGHT else "---" for h in COLUMNS]
    # Markdown collapses leading spaces: indent nested rows with non-breaking ones.
    body = [[c[0].replace("  ", "\u00a0\u00a0")] + c[1:] for c in cells]
    return "\n".join([line(list(COLUMNS)), line(align)] + [line(c) for c in body])


def _footer(a: Analysis) -> list[str]:
    t, m = a.totals, a.memory
    lines = [
        (f"Params: {t.params:,} ({_bytes(t.param_bytes)}): {t.count.trainable:,} trainable, "
         f"{t.count.frozen:,} frozen; buffers {t.count.buffers:,} ({_bytes(t.buffer_bytes)})"),
        _cost_line(t.macs, t.flops),
        (f"Backward FLOPs: {_flops(sum(t.backward_flops))} (input gradients "
         f"{_flops(t.backward_flops[0])}, weight gradients {_flops(t.backward_flops[1])}); "
         f"training FLOPs {_flops(t.training_flops)} per sample, "
         f"{_flops(a.batch * t.training_flops)} per step of batch {a.batch}"),
        f"Convention: --flops {a.convention}",
    ]
    for name in a.outputs:
        out = a.layer(name)
        rf = out.receptive_field
        field = "" if rf is None else f", receptive field {rf.describe()} of the input" \
            if isinstance(rf, TimeField) else (f", receptive field {_pair(rf.size)} "
                                               f"(jump {_pair(rf.jump)}, start {_pair(rf.start)})")
        lines.append(f"Output: `{name}` {show(out.output_shape)}{field}")
    lines += [
        (f"Forward activations: {_bytes(t.activation_bytes)} per sample "
         "(the input and every layer output)"),
        (f"Training step estimate (batch {m.batch}, {m.dtype}, {m.optimizer}): "
         f"{_memory_total(m)} = params {_bytes(m.params)} + gradients {_bytes(m.gradients)} "
         f"+ optimizer {_bytes(m.optimizer_state)} + buffers {_bytes(m.buffers)} "
         f"+ activations {_activations(m)}"),
    ]
    if a.sizes is not None:
        lines += _size_lines(a)
    if a.dead:
        names = ", ".join(a.dead[:5]) + (", ..." if len(a.dead) > 5 else "")
        lines.append(f"Not counted: {len(a.dead)} layer{'s' if len(a.dead) > 1 else ''} "
                     f"reaching no output, which compile drops ({names})")
    return lines + [f"warning: {w.message}" for w in a.warnings]


def _cost_line(macs, flops) -> str:
    if _symbolic(macs):
        return f"MACs: {_text(macs)}; FLOPs: {_text(flops)}"
    return f"MACs: {macs:,} ({_si(macs)}); FLOPs: {flops:,} ({_si(flops)})"


def _flops(n) -> str:
    return _text(n) if _symbolic(n) else f"{n:,} ({_si(n)})"


def _memory_total(m) -> str:
    if len(m.peak_candidates) > 1:
        return "the sum below"
    return _bytes(m.total)


def _activations(m) -> str:
    if len(m.peak_candidates) > 1:
        return (f"batch x the largest of {len(m.peak_candidates)} expressions, one per step "
                "that can hold the peak (the peak moves with the size: --format json lists "
                "them, --at evaluates)")
    return f"{_bytes(m.activations)} (peak in the {m.peak_at})"


def _size_lines(a: Analysis) -> list[str]:
    from netspec.analysis.symbolic import show_condition

    z = a.sizes
    lines = ["Sizes: " + ", ".join(f"{k} >= {v}" for k, v in z.minimum.items())
             + " (the smallest at which every layer fits"
             + (", with the spec's " + ", ".join(map(show_condition, z.where))
                if z.where else "") + ")",
             "No input row or column left unread: "
             + ", ".join(z.no_dropped_rows.values())]
    return lines


def _csv(a: Analysis, depth: int | None) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in rows(a, depth):
        if not r.leaf:
            continue
        d = jsonable(r.to_dict())
        size, jump, start = ("", "", "") if r.receptive_field is None else \
            _field(r.receptive_field)
        d.update(output_shape="x".join(map(_text, r.output_shape)),
                 inputs=" ".join(r.inputs), flops_convention=a.count_convention,
                 rf_size=size, rf_jump=jump if jump != "-" else "",
                 rf_start=start if start != "-" else "")
        writer.writerow([d[f] for f in CSV_FIELDS])
    return buf.getvalue()


def _si(n: int) -> str:
    """1234567 -> 1.23M (decimal prefixes, as MAC counts are quoted)."""
    if _symbolic(n):
        return _text(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _bytes(n: int) -> str:
    """Binary prefixes: 1.50 MiB; an expression in bytes."""
    if _symbolic(n):
        return _text(n) + " B"
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
