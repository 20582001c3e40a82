"""Plots (matplotlib, PNG and SVG): metric vs metric with flips marked, the depth/width sweep
side by side, a roofline chart, per-module breakdown bars. Each returns a Figure."""
from __future__ import annotations

import sys

import matplotlib

if "ipykernel" not in sys.modules:  # Jupyter keeps its inline backend: figures show in cells
    matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from effmetrics.report import intensity as flop_per_byte  # noqa: E402

LABELS = {"params": "parameters", "flops": "FLOPs", "macs": "MACs", "latency_median":
          "latency (s)", "throughput": "throughput (items/s)", "peak_memory_bytes":
          "peak memory (B)", "activation_bytes": "activation memory (B)",
          "bytes_read": "bytes read"}


def save(fig, path_base: str) -> list:
    """Write path_base.png and path_base.svg; returns the two paths."""
    paths = [f"{path_base}.png", f"{path_base}.svg"]
    for p in paths:
        fig.savefig(p, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths


def metric_scatter(df, x: str, y: str, flips=None, title: str = ""):
    """Models as points on two metrics (log axes); pairs that the metrics order differently
    (rows of Comparison.flips for x and y) joined by red lines."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    t = df.set_index("model") if "model" in df.columns else df
    ax.scatter(t[x], t[y], color="#1f5fa8", zorder=3)
    for name, row in t.iterrows():
        ax.annotate(str(name), (row[x], row[y]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    if flips is not None and len(flips):
        f = flips[((flips.metric_x == x) & (flips.metric_y == y)) |
                  ((flips.metric_x == y) & (flips.metric_y == x))]
        for r in f.itertuples():
            ax.plot([t.at[r.model_a, x], t.at[r.model_b, x]],
                    [t.at[r.model_a, y], t.at[r.model_b, y]], color="#c0392b", alpha=0.5, lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel(LABELS.get(y, y))
    ax.set_title(title or f"{LABELS.get(y, y)} vs {LABELS.get(x, x)} (red: rank flips)",
                 fontsize=9)
    ax.grid(alpha=0.3, which="both")
    return fig


def rank_vs_metrics(df, metrics, quality: str | None = None):
    """Each model's rank (1 = cheapest) under each metric, one line per model: crossing lines
    are disagreements. With a quality column, quality against each metric instead."""
    t = df.set_index("model") if "model" in df.columns else df
    if quality:
        fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.4))
        for ax, m in zip(axes if len(metrics) > 1 else [axes], metrics):
            ax.scatter(t[m], t[quality], color="#1f5fa8")
            ax.set_xscale("log")
            ax.set_xlabel(LABELS.get(m, m))
            ax.set_ylabel(quality)
            ax.grid(alpha=0.3)
        return fig
    ranks = t[metrics].rank(method="min")
    fig, ax = plt.subplots(figsize=(1.6 * len(metrics) + 2, 0.35 * len(t) + 2))
    for name, row in ranks.iterrows():
        ax.plot(range(len(metrics)), row.values, marker="o")
        ax.annotate(str(name), (len(metrics) - 1, row.values[-1]), fontsize=7,
                    xytext=(4, 0), textcoords="offset points", va="center")
    ax.set_xticks(range(len(metrics)), [LABELS.get(m, m) for m in metrics])
    ax.set_ylabel("rank (1 = cheapest)")
    ax.invert_yaxis()
    ax.set_title("rank under each metric (crossing lines: the metrics disagree)", fontsize=9)
    return fig


def depth_width_rows(df):
    """df with `depth` and `width` columns (width: the config's `dim`) from each row's config,
    when the configs vary in both depth and dim; None otherwise (no depth/width figure)."""
    import pandas as pd

    from effmetrics.sweep import config_columns

    out = config_columns(df)
    if not {"depth", "dim"} <= set(out.columns):
        return None
    depth, dim = (pd.to_numeric(out[c], errors="coerce") for c in ("depth", "dim"))
    if depth.isna().any() or dim.isna().any() or depth.nunique() < 2 or dim.nunique() < 2:
        return None
    return out.assign(depth=depth, width=dim)


def depth_width(df, metrics=("params", "flops", "latency_median")):
    """The paper's depth/width figure: each metric against depth, one line per width.
    Rows need `depth` and `width` columns (depth_width_rows makes them from the rows' configs)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6))
    for ax, m in zip(axes, metrics):
        for width, g in df.groupby("width"):
            g = g.sort_values("depth")
            ax.plot(g["depth"], g[m], marker="o", label=f"width {width}")
        ax.set_xlabel("depth (blocks)")
        ax.set_ylabel(LABELS.get(m, m))
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("depth vs width: parameters, FLOPs and measured latency disagree", fontsize=10)
    return fig


def roofline_chart(table, hw):
    """Achieved FLOP/s against arithmetic intensity, under the hardware's roofs (log-log).
    table: em.roofline output with measured_s."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    t = table[table["measured_s"].notna() & (table["measured_s"] > 0)]
    intensity = flop_per_byte(t)
    intensity = intensity.where(intensity > 0)  # log axes: rows that moved nothing are left out
    achieved = t["flops"] / t["measured_s"]
    ax.scatter(intensity, achieved, color="#1f5fa8", zorder=3)
    for name, xi, yi in zip(t.index, intensity, achieved):
        ax.annotate(str(name), (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    lo = max(min(intensity.min(), 0.1) / 2, 1e-3) if len(t) else 0.05
    hi = max(intensity.max() * 2, 1000) if len(t) else 1000
    xs = [lo * (hi / lo) ** (i / 100) for i in range(101)]
    for peak, style, label in ((hw.matmul_flops, "-", "matmul peak"),
                               (hw.vector_flops, "--", "vector peak")):
        ax.plot(xs, [min(peak, x * hw.bandwidth) for x in xs], style, color="#555", lw=1,
                label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte, no-cache bound)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(f"roofline: {hw.name}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


def module_breakdown(report, depth: int = 1, metric: str = "flops"):
    """Horizontal bars of a Report's modules at one depth."""
    df = report.by_module()
    df = df[df["depth"] == depth]
    fig, ax = plt.subplots(figsize=(5.5, 0.3 * len(df) + 1.2))
    ax.barh(list(df.index)[::-1], list(df[metric])[::-1], color="#1f5fa8")
    ax.set_xlabel(LABELS.get(metric, metric))
    ax.set_title(f"{LABELS.get(metric, metric)} by module (depth {depth})", fontsize=9)
    return fig
