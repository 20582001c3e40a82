"""`effmetrics demo` (the README's `make demo`): the paper's cases measured on this machine.

Sweeps the ViT depth/width grid and the seed cases (patch size, parameter sharing, MoE,
EfficientNet vs ResNet vs ViT) on the CPU at sizes that finish in minutes, prints where
parameters, FLOPs and measured latency disagree, and writes out/report.html and PNG/SVG plots.
"""
from __future__ import annotations

import os
import time

import torch

import effmetrics as em
from effmetrics import plots
from effmetrics.html import write_report
from effmetrics.match import perceiver_io_case
from effmetrics.models import vit
from effmetrics.sweep import SWEEPS, effective_columns, run_named


def _predicted_vs_measured(df) -> None:
    """The per-op roofline on this CPU (em.predict_latency, counted on meta) next to the
    measured latency of every model the sweeps timed, and how well each cost ranks it."""
    import json

    import pandas as pd

    from effmetrics.models import build, example_input

    rows = []
    for rec in df[df["latency_median"].notna()].itertuples(index=False):
        zoo, overrides = json.loads(rec.config)
        overrides = {k: v for k, v in overrides.items() if k != "prune"}
        with torch.device("meta"):
            model = build(zoo, **overrides).eval()
        x = example_input(zoo, batch=rec.batch_size, device="meta", **overrides)
        rows.append({"model": f"{rec.sweep}: {rec.model}", "measured_s": rec.latency_median,
                     "predicted_s": em.predict_latency(model, x, hw="cpu"),
                     "flops": rec.flops, "bytes": rec.bytes_read + rec.bytes_written,
                     "params": rec.params})
    table = pd.DataFrame(rows)
    ranks = table.drop(columns="model").rank()
    rho = ranks.corr()["measured_s"].drop("measured_s")  # Spearman: Pearson on ranks
    print(f"\n== predicted (per-op roofline, this CPU) vs measured latency: {len(table)} "
          "models ==")
    print(table[["model", "measured_s", "predicted_s"]].to_string(
        index=False, formatters={c: "{:.4g}".format for c in ("measured_s", "predicted_s")}))
    print("Spearman rank correlation with measured latency: "
          + ", ".join(f"{k} {v:+.3f}" for k, v in rho.items()))


def run_demo(out: str = "out") -> int:
    os.makedirs(out, exist_ok=True)
    store = os.path.join(out, "demo.sqlite")
    t0 = time.perf_counter()
    metrics = ["params", "flops", "latency_median"]
    for name in SWEEPS:
        df = run_named(name, store)
        cmp = em.compare(df[["model", *metrics]], metrics)
        print(f"\n== {name}: {len(df)} models on {df['hardware'].iloc[0]} ==")
        print(df[["model", "params", "flops", *effective_columns(df), "latency_median"]]
              .to_string(index=False))
        print("rank flips (pairs that two metrics order oppositely):")
        print(cmp.flips.to_string(index=False) if len(cmp.flips) else "  none")
        plots.save(plots.metric_scatter(df, "flops", "latency_median", cmp.flips,
                                        title=f"{name}: FLOPs vs measured latency"),
                   os.path.join(out, f"{name}-flops-latency"))
        grid = plots.depth_width_rows(df)  # sweeps that vary depth and width
        if grid is not None:
            plots.save(plots.depth_width(grid), os.path.join(out, name))
    _predicted_vs_measured(em.load(store))
    # roofline of one ViT on this CPU, per module
    model = vit("vit-s/16", depth=4, image=128).eval()
    with torch.no_grad():
        rep = em.profile(model, torch.randn(4, 3, 128, 128), time=True)
    table = em.roofline(rep, "cpu")
    plots.save(plots.roofline_chart(table[table["depth"] == 2], em.calibrate_cpu()),
               os.path.join(out, "roofline"))
    plots.save(plots.module_breakdown(rep, depth=2), os.path.join(out, "modules"))
    matched = perceiver_io_case()
    print(f"\n== Perceiver IO situation: {len(matched)} of {matched.attrs['tried']} byte-level "
          "BERTs (2048 tokens) within 15% of BERT-Base's FLOPs (512 tokens) ==")
    print(matched[["depth", "dim", "params", "params_lost", "flops", "relative_diff"]]
          .to_string(index=False))
    report = write_report(em.load(store), os.path.join(out, "report.html"), matched=matched)
    print(f"\nwrote {report} and plots in {out}/ ({time.perf_counter() - t0:.0f} s)")
    return 0
