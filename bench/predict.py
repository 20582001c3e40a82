"""How well does a count rank measured latency? Spearman rank correlation, over zoo models, of
the measured CPU latency (em.benchmark) with:

- the per-op roofline on this CPU (em.predict_latency with em.calibrate_cpu(): per op,
  max(matmul FLOPs / matmul peak + vector FLOPs / vector peak, bytes / bandwidth), summed),
- the same roofline on the model's totals (max over the whole model: one roofline per model),
- FLOPs alone, bytes (read + written) alone, parameters alone.

Counts come from meta (no compute); latency from eager CPU inference at the given batch.

    python bench/predict.py [--batch 8] [--threads 1] [--min-run-time 1.0]
"""
from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

import effmetrics as em
from effmetrics.models import build, example_input
from effmetrics.predict import count_on_meta
from effmetrics.roofline import roofline_times

MODELS = ("vit-ti/16", "vit-s/16", "vit-b/32", "resnet-50", "efficientnet-b0", "bert-6l",
          "perceiver-io")


def row(name: str, batch: int, hw, timing: dict) -> dict:
    model = build(name).eval()
    x = example_input(name, batch=batch)
    rep = count_on_meta(model, x)
    totals = pd.DataFrame([{f: getattr(rep, f) for f in
                            ("flops_matmul", "flops_vector", "bytes_read", "bytes_written")}])
    t = em.benchmark(model, x, **timing)
    return {"model": name, "params": rep.params.total, "flops": rep.flops,
            "bytes": rep.bytes_read + rep.bytes_written,
            "whole_model_roofline_s": float(roofline_times(totals, hw)[2].iloc[0]),
            "per_op_roofline_s": em.predict_latency(rep, hw=hw),
            "measured_s": t.median, "iqr_s": t.iqr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-run-time", type=float, default=1.0)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    hw = em.calibrate_cpu()  # cached per thread count: calibrated at the threads measured here
    print(f"{hw.name}: matmul {hw.matmul_flops / 1e9:.1f} GFLOP/s, vector "
          f"{hw.vector_flops / 1e9:.2f} GFLOP/s, {hw.bandwidth / 1e9:.1f} GB/s; batch {args.batch}")
    timing = {"min_run_time": args.min_run_time, "max_run_time": 4 * args.min_run_time,
              "warmup": 1}
    df = pd.DataFrame([row(n, args.batch, hw, timing) for n in args.models.split(",")])
    df["predicted/measured"] = df["per_op_roofline_s"] / df["measured_s"]
    with pd.option_context("display.width", 200, "display.float_format", "{:.4g}".format):
        print(df.to_string(index=False))
    predictors = ["per_op_roofline_s", "whole_model_roofline_s", "flops", "bytes", "params"]
    # Spearman = Pearson on ranks (average ranks for ties); no scipy needed
    rho = df[predictors].rank().corrwith(df["measured_s"].rank())
    print(f"\nSpearman rank correlation with measured latency ({len(df)} models):")
    for name, value in rho.items():
        print(f"  {name:<24} {value:+.3f}")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
