"""One self-contained HTML report of a results store: per sweep a table, the rank flips and the
plots inline (base64 PNG); no network, no script."""
from __future__ import annotations

import base64
import html
import io
import re

import pandas as pd

from effmetrics import plots
from effmetrics.compare import compare
from effmetrics.sweep import effective_columns

METRICS = ["params", "flops", "latency_median", "peak_memory_bytes"]
STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;
padding:3px 8px;text-align:right}th{background:#eef}td:first-child{text-align:left}
img{max-width:48%;margin:4px}h2{border-bottom:2px solid #1f5fa8}"""


def _img(fig, wide: bool = False) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plots.plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    style = ' style="max-width:98%"' if wide else ""
    return f'<img alt="plot"{style} src="data:image/png;base64,{data}">'


def _table(df: pd.DataFrame) -> str:
    fmt = {"params": "{:,.0f}", "flops": "{:.3g}", "latency_median": "{:.3g}",
           "throughput": "{:.3g}", "peak_memory_bytes": "{:,.0f}", "activation_bytes": "{:,.0f}",
           "ratio_x": "{:.3g}", "ratio_y": "{:.3g}"}
    def formatter(spec):
        return lambda v: spec.format(v) if pd.notna(v) else ""

    return df.to_html(index=False, border=0, na_rep="",
                      formatters={k: formatter(f) for k, f in fmt.items() if k in df.columns})


def render(df: pd.DataFrame, title: str = "effmetrics report",
           matched: pd.DataFrame | None = None) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             "<p>Parameters, FLOPs, measured latency and memory of each model; a <b>flip</b> is a "
             "pair of models that two metrics rank in opposite order.</p>"]
    groups = df.groupby(df["sweep"].fillna("(untagged)"), sort=False)
    for sweep, g in groups:
        parts.append(f"<h2 id='{html.escape(re.sub(r'[^a-z0-9-]', '-', str(sweep)))}'>"
                     f"{html.escape(str(sweep))}</h2>")
        cols = [c for c in ["model", "batch_size", "params", "flops", *effective_columns(g),
                            "latency_median", "throughput", "peak_memory_bytes",
                            "activation_bytes"]
                if c in g.columns and g[c].notna().any()]
        parts.append(_table(g[cols]))
        metrics = [m for m in METRICS if m in g.columns and g[m].notna().all()]
        if len(g) >= 2 and len(metrics) >= 2:
            cmp = compare(g[["model", *metrics]], metrics)
            parts.append("<h3>rank flips</h3>")
            parts.append(_table(cmp.flips) if len(cmp.flips) else
                         "<p>All metrics order these models the same way.</p>")
            imgs = [_img(plots.metric_scatter(g, a, b, cmp.flips))
                    for a, b in [("flops", "latency_median"), ("params", "flops")]
                    if a in metrics and b in metrics]
            imgs.append(_img(plots.rank_vs_metrics(g, metrics)))
            grid = plots.depth_width_rows(g)
            if grid is not None:
                imgs.append(_img(plots.depth_width(grid, metrics[:3]), True))
            parts.append("".join(imgs))
    if matched is not None:
        parts.append(_matched_section(matched))
    parts.append("</body></html>")
    return "\n".join(parts)


def _matched_section(matched: pd.DataFrame) -> str:
    """match.perceiver_io_case's result: what configurations matched on FLOPs give up."""
    ref = matched.attrs.get("reference") or {}
    cols = [c for c in ["depth", "dim", "params", "params_lost", "flops", "activation_bytes",
                        "predicted_s_H100", "predicted_s_cpu", "relative_diff"]
            if c in matched.columns]
    head = (f"BERT-Base at 512 tokens: {ref['params']:,} parameters, {ref['flops'] / 1e9:.1f} "
            f"GFLOPs. " if ref else "")
    return ("<h2 id='perceiver-io'>Matched on FLOPs: the Perceiver IO situation</h2>"
            f"<p>{head}Byte-level BERTs read 2048 tokens; of {matched.attrs.get('tried', '?')} "
            f"depth x width configurations counted on meta, {len(matched)} lie within "
            f"{100 * matched.attrs.get('tolerance', 0):.0f}% of its FLOPs, and they give up "
            "most of its parameters (<code>params_lost</code>): a baseline matched on one cost "
            "is handicapped on another.</p>" + _table(matched[cols]))


def write_report(df: pd.DataFrame, path: str, title: str = "effmetrics report",
                 matched: pd.DataFrame | None = None) -> str:
    """The report of a results store (em.load); matched: a match() result to show as the
    Perceiver IO section (match.perceiver_io_case)."""
    with open(path, "w") as f:
        f.write(render(df, title, matched))
    return path
