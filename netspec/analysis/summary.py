"""The summary of an analysis as text: an aligned table, Markdown, CSV or JSON."""
from __future__ import annotations

import csv
import io
import json

from netspec.analysis.receptive_field import ReceptiveField
from netspec.analysis.report import Analysis, Row, rows
from netspec.analysis.shapes import show

FORMATS = ("table", "markdown", "json", "csv")
COLUMNS = ("Layer", "Op", "Output", "Params", "MACs", "RF", "Jump", "Start", "Activations")
RIGHT = {"Params", "MACs", "RF", "Jump", "Start", "Activations"}
CSV_FIELDS = ("name", "kind", "depth", "op", "output_shape", "params", "trainable_params",
              "frozen_params", "buffers", "macs", "flops", "rf_size", "rf_jump", "rf_start",
              "activation_bytes")


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


def _title(a: Analysis) -> str:
    inputs = ", ".join(f"{name} {show(s)}" for name, s in a.input_shapes.items())
    return f"{a.network}: input {inputs}, batch {a.batch}, {a.dtype}"


def _cells(r: Row, batch: int) -> list[str]:
    size, jump, start = _field(r.receptive_field)
    return ["  " * r.depth + r.name, r.op, show(r.output_shape), f"{r.count.params:,}",
            _si(r.macs), size, jump, start, _bytes(r.activation_bytes * batch)]


def _field(rf: ReceptiveField | None) -> tuple[str, str, str]:
    if rf is None:
        return "-", "-", "-"
    return _pair(rf.size), _pair(rf.jump), _pair(rf.start)


def _pair(v: tuple) -> str:
    a, b = (f"{x:g}" for x in v)
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
        f"MACs: {t.macs:,} ({_si(t.macs)}); FLOPs: {t.flops:,} ({_si(t.flops)})",
        f"Convention: {a.convention}",
    ]
    for name in a.outputs:
        out = a.layer(name)
        rf = out.receptive_field
        field = "" if rf is None else (f", receptive field {_pair(rf.size)} "
                                       f"(jump {_pair(rf.jump)}, start {_pair(rf.start)})")
        lines.append(f"Output: `{name}` {show(out.output_shape)}{field}")
    lines += [
        (f"Forward activations: {_bytes(t.activation_bytes)} per sample "
         "(the input and every layer output)"),
        (f"Training step estimate (batch {m.batch}, {m.dtype}, {m.optimizer}): "
         f"{_bytes(m.total)} = params {_bytes(m.params)} + gradients {_bytes(m.gradients)} "
         f"+ optimizer {_bytes(m.optimizer_state)} + buffers {_bytes(m.buffers)} "
         f"+ activations {_bytes(m.activations)} (peak in the {m.peak_at})"),
    ]
    return lines + [f"warning: {w.message}" for w in a.warnings]


def _csv(a: Analysis, depth: int | None) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in rows(a, depth):
        if not r.leaf:
            continue
        d = r.to_dict()
        rf = d["receptive_field"] or {}
        d.update(output_shape="x".join(map(str, r.output_shape)),
                 rf_size=_pair(r.receptive_field.size) if rf else "",
                 rf_jump=_pair(r.receptive_field.jump) if rf else "",
                 rf_start=_pair(r.receptive_field.start) if rf else "")
        writer.writerow([d[f] for f in CSV_FIELDS])
    return buf.getvalue()


def _si(n: int) -> str:
    """1234567 -> 1.23M (decimal prefixes, as MAC counts are quoted)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _bytes(n: int) -> str:
    """Binary prefixes: 1.50 MiB."""
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
