"""HTML for Jupyter: reports, timings, counter summaries and comparisons as self-contained
HTML strings (inline CSS, no script, no network). Duck-typed on the public attributes, so this
module imports nothing of effmetrics but its unit formatting:

    from effmetrics.display import report_html
    IPython.display.HTML(report_html(rep, max_depth=2))
"""
from __future__ import annotations

import html
import math

from effmetrics.units import binary, si

STYLE = """<style>
.em{font:12px/1.35 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;margin:.3em 0}
.em table{border-collapse:collapse;margin:.3em 0;font:inherit}
.em th,.em td{padding:2px 5px;text-align:right;border-bottom:1px solid #e3e3e3;
white-space:nowrap;vertical-align:middle}
.em th{background:#eef2f8;font-weight:600;border-bottom:1px solid #b8c4d6}
.em td.em-l,.em th.em-l{text-align:left}
.em tr.em-root td{font-weight:600;background:#fafbfd}
.em .em-title{font-weight:600;margin:.2em 0}
.em .em-head{margin:.2em 0;color:#333}
.em .em-head b{color:#111}
.em .em-sep{color:#aaa;padding:0 .35em}
.em .em-note{color:#777;font-style:italic;margin:.2em 0}
.em .em-warn{color:#8a4b00;margin:.3em 0}
.em .em-bar{display:inline-block;width:56px;height:8px;background:#edf0f4;
vertical-align:middle;margin-right:5px;border-radius:2px;overflow:hidden}
.em .em-fill{display:block;height:100%;background:#3b76c4}
.em .em-fill.em-bytes{background:#2f9e72}
.em .em-fill.em-time{background:#d9822b}
.em .em-pct{display:inline-block;min-width:3.3em;text-align:right;color:#555}
.em td.em-num{font-variant-numeric:tabular-nums}
</style>"""


def _wrap(body: str) -> str:
    return f'{STYLE}<div class="em">{body}</div>'


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def seconds(value: float | None) -> str:
    """0.00123 -> '1.230 ms' (s, ms, µs, ns); '' when missing."""
    if _missing(value):
        return ""
    a = abs(value)
    if a == 0:
        return "0 s"
    if a >= 1:
        return f"{value:.3f} s"
    if a >= 1e-3:
        return f"{value * 1e3:.3f} ms"
    if a >= 1e-6:
        return f"{value * 1e6:.3f} µs"
    return f"{value * 1e9:.1f} ns"


def _share(part: float, whole: float, kind: str) -> str:
    """An inline bar of part / whole plus the percent number."""
    if _missing(part) or _missing(whole) or whole <= 0:
        return '<td class="em-l"></td>'
    pct = 100.0 * part / whole
    width = min(max(pct, 0.0), 100.0)
    return (f'<td class="em-l"><span class="em-bar"><span class="em-fill em-{kind}" '
            f'style="width:{width:.2f}%"></span></span><span class="em-pct">{pct:.1f}%</span>'
            "</td>")


def _head(items: list[tuple[str, str]]) -> str:
    sep = '<span class="em-sep">·</span>'
    return ('<div class="em-head">'
            + sep.join(f"{_esc(k)} <b>{_esc(v)}</b>" for k, v in items) + "</div>")


def _rows(n: int) -> str:
    return "row" if n == 1 else "rows"


def report_html(report, max_depth: int = 3, max_rows: int = 200) -> str:
    """A Report as HTML: totals, then the module tree (down to `max_depth`, at most
    `max_rows` rows) with FLOPs, bytes and time shares of the whole model as bars."""
    r = report
    timed = bool(getattr(r, "timed", False))
    head = [("FLOPs", si(r.flops)), ("MACs", si(r.macs)),
            ("matmul", si(r.flops_matmul)), ("vector", si(r.flops_vector))]
    if r.flops_backward:
        head += [("forward", si(r.flops_forward)), ("backward", si(r.flops_backward))]
    head += [("read", binary(r.bytes_read)), ("written", binary(r.bytes_written)),
             ("intensity", f"{r.intensity:.2f} FLOP/B")]
    lines = [_head(head)]
    p = r.params
    if p is not None:
        items = [("params", f"{p.total:,}"), ("trainable", f"{p.trainable:,}"),
                 ("shared", f"{p.shared:,}")]
        if p.applied is not None:
            items += [("applied", f"{p.applied:,}"), ("touched", f"{p.touched:,}")]
        lines.append(_head(items))
    if timed:
        lines.append(_head([("wall", seconds(r.wall_s)),
                            ("in ops", seconds(getattr(r, "time_s", None)))]))

    df = r.by_module()
    if "" in df.index:
        root = df.loc[""]
        total_flops, total_time = root["flops"], root["time_s"]
        total_bytes = root["bytes_read"] + root["bytes_written"]
    else:
        total_flops, total_bytes = r.flops, r.bytes_read + r.bytes_written
        total_time = getattr(r, "time_s", float("nan"))
    shown = df[df["depth"] <= max_depth]
    deeper = len(df) - len(shown)
    cut = max(len(shown) - max_rows, 0)
    shown = shown.iloc[:max_rows]

    cols = ["module", "calls", "params", "FLOPs", "share", "bytes", "share"]
    if timed:
        cols += ["time", "share"]
    rows = ["<tr>" + "".join(f'<th class="{"em-l" if c in ("module", "share") else ""}">{c}</th>'
                             for c in cols) + "</tr>"]
    for name, row in shown.iterrows():
        depth = int(row["depth"])
        short = "(model)" if name == "" else name.rsplit(".", 1)[-1]
        moved = row["bytes_read"] + row["bytes_written"]
        calls = int(row["calls"]) if not _missing(row["calls"]) and row["calls"] else ""
        params = "" if _missing(row["params"]) else si(row["params"])
        cells = [
            f'<td class="em-l" style="padding-left:{0.5 + 1.2 * depth:.1f}em" '
            f'title="{_esc(name or "(model)")}">{_esc(short)}</td>',
            f'<td class="em-num">{calls}</td>',
            f'<td class="em-num">{_esc(params)}</td>',
            f'<td class="em-num">{_esc(si(row["flops"]))}</td>',
            _share(row["flops"], total_flops, "flops"),
            f'<td class="em-num">{_esc(binary(moved))}</td>',
            _share(moved, total_bytes, "bytes"),
        ]
        if timed:
            cells += [f'<td class="em-num">{_esc(seconds(row["time_s"]))}</td>',
                      _share(row["time_s"], total_time, "time")]
        cls = ' class="em-root"' if name == "" else ""
        rows.append(f'<tr{cls} data-module="{_esc(name)}">' + "".join(cells) + "</tr>")
    lines.append("<table>" + "".join(rows) + "</table>")
    notes = []
    if deeper:
        notes.append(f"{deeper} {_rows(deeper)} deeper than depth {max_depth} hidden")
    if cut:
        notes.append(f"{cut} more {_rows(cut)} hidden (max_rows={max_rows})")
    if notes:
        lines.append(f'<div class="em-note">{_esc("; ".join(notes))}</div>')
    if r.unsupported_ops:
        ops = ", ".join(f"<code>{_esc(k)}</code> ×{int(v)}"
                        for k, v in sorted(r.unsupported_ops.items()))
        lines.append(f'<div class="em-warn">Unsupported ops (no FLOP rule; bytes counted): '
                     f"{ops}</div>")
    return _wrap("".join(lines))


def _two_columns(title: str, items: list[tuple[str, str]]) -> str:
    rows = "".join(f'<tr><td class="em-l">{_esc(k)}</td><td class="em-num">{_esc(v)}</td></tr>'
                   for k, v in items)
    return _wrap(f'<div class="em-title">{_esc(title)}</div><table>{rows}</table>')


def timing_html(timing) -> str:
    """A Timing (seconds) as a one-row table in milliseconds, with throughput when known."""
    t = timing
    items = [(name, f"{getattr(t, name) * 1e3:.3f}")
             for name in ("median", "mean", "std", "min", "max", "p10", "p90", "p99", "iqr")]
    items += [("runs", f"{t.n:,}"), ("clock", str(t.clock))]
    if t.batch_size:
        items.append(("batch", f"{t.batch_size:,}"))
    if t.seq_len:
        items.append(("seq len", f"{t.seq_len:,}"))
    if t.throughput:
        items.append(("throughput", si(t.throughput) + " items/s"))
    if t.tokens_per_s:
        items.append(("tokens/s", si(t.tokens_per_s) + " tokens/s"))
    head = "".join(f"<th>{_esc(k)}</th>" for k, _ in items)
    values = "".join(f'<td class="em-num">{_esc(v)}</td>' for _, v in items)
    return _wrap(f'<div class="em-title">Timing (ms)</div><table><tr>{head}</tr><tr>{values}</tr>'
                 "</table>")


_SUMMARY = {  # key -> (label, formatter)
    "steps": ("steps", lambda v: f"{int(v):,}"),
    "wall_s": ("wall time", seconds),
    "idle_fraction": ("idle fraction", lambda v: f"{100 * v:.1f}%"),
    "clock": ("clock", str),
    "step_time_median": ("median step time", seconds),
    "examples_per_s": ("examples/s", lambda v: si(v) + " examples/s"),
    "tokens_per_s": ("tokens/s", lambda v: si(v) + " tokens/s"),
    "flops_per_step": ("FLOPs per step", lambda v: si(v, "FLOP")),
    "achieved_flops_per_s": ("achieved FLOP/s", lambda v: si(v, "FLOP/s")),
    "counted_steps": ("counted steps", lambda v: f"{int(v):,}"),
    "step_time_basis": ("step time over", str),
    "mfu": ("MFU (matmul)", lambda v: f"{100 * v:.1f}%"),
    "hfu": ("all FLOPs / peak", lambda v: f"{100 * v:.1f}%"),
    "peak_flops": ("peak", lambda v: si(v, "FLOP/s")),
    "peak_source": ("peak from", str),
    "dtype": ("dtype", str),
    "energy_j": ("energy", lambda v: f"{v:.4g} J"),
    "avg_power_w": ("average power", lambda v: f"{v:.4g} W"),
    "joules_per_example": ("energy per example", lambda v: f"{v:.4g} J"),
    "energy_source": ("energy from", str),
}


def _generic(key: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if key.endswith("_s") and not key.endswith("per_s"):
        return seconds(value)
    if key.endswith("bytes"):
        return binary(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


def summary_html(summary: dict, title: str = "Counter summary") -> str:
    """A dict of figures (Counter.summary()) as a two-column table; None shows as '—'."""
    items = []
    for key, value in summary.items():
        label, fmt = _SUMMARY.get(key, (key, lambda v, k=key: _generic(k, v)))
        items.append((label, "—" if _missing(value) else fmt(value)))
    return _two_columns(title, items)


def _tau_cell(value: float) -> str:
    if _missing(value):
        return '<td class="em-num" style="background:#eee">n/a</td>'
    v = max(-1.0, min(1.0, float(value)))
    rgb = "59,118,196" if v >= 0 else "204,68,51"
    return (f'<td class="em-num" style="background:rgba({rgb},{0.75 * abs(v):.2f});'
            f'color:{"#fff" if abs(v) > 0.6 else "#222"}">{value:+.2f}</td>')


def comparison_html(cmp, max_summary_lines: int = 12) -> str:
    """A Comparison: Kendall tau between metrics (cells shaded by value), the flips, and the
    summary in words."""
    corr = cmp.rank_correlation
    head = '<th class="em-l"></th>' + "".join(f"<th>{_esc(c)}</th>" for c in corr.columns)
    body = "".join(f'<tr><th class="em-l">{_esc(i)}</th>'
                   + "".join(_tau_cell(corr.at[i, c]) for c in corr.columns) + "</tr>"
                   for i in corr.index)
    parts = ['<div class="em-title">Rank correlation (Kendall τ)</div>',
             f"<table><tr>{head}</tr>{body}</table>"]
    flips = cmp.flips
    parts.append(f'<div class="em-title">Rank flips ({len(flips)})</div>')
    if len(flips):
        cols = ["model_a", "model_b", "metric_x", "metric_y", "ratio_x", "ratio_y"]
        rows = ["<tr>" + "".join(f'<th class="em-l">{c}</th>' if i < 4 else f"<th>{c}</th>"
                                 for i, c in enumerate(cols)) + "</tr>"]
        for rec in flips.itertuples(index=False):
            rec = rec._asdict()
            cells = "".join(f'<td class="em-l">{_esc(rec[c])}</td>' for c in cols[:4])
            cells += "".join(f'<td class="em-num">{rec[c]:.3g}×</td>' for c in cols[4:])
            rows.append(f"<tr>{cells}</tr>")
        parts.append("<table>" + "".join(rows) + "</table>")
    else:
        parts.append('<div class="em-note">no flips: every pair of metrics orders the models '
                     "alike</div>")
    lines = cmp.summary().splitlines()
    if lines:
        items = "".join(f"<li>{_esc(line)}</li>" for line in lines[:max_summary_lines])
        parts.append(f'<div class="em-title">Summary</div><ul style="margin:.2em 0">{items}</ul>')
        if len(lines) > max_summary_lines:
            parts.append(f'<div class="em-note">{len(lines) - max_summary_lines} more lines: '
                         "print(cmp.summary())</div>")
    return _wrap("".join(parts))
