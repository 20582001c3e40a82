"""Instrumentation overhead of effmetrics vs torch's FlopCounterMode, forward on CPU.

Interleaved repeats (bare, effmetrics, FlopCounterMode each once per round, order rotated) so
that machine noise hits every mode alike; reports medians and ratios from this one run.
Targets (issue 2): effmetrics <= 1.10x bare on ViT-Ti/16 batch 1 single-thread, and at least
5x less added time than FlopCounterMode.

    python bench/overhead.py [--rounds N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import effmetrics as em
from effmetrics.models import vit


def bare(model, x):
    model(x)


def with_effmetrics(model, x):
    em.profile(model, x)


def with_flop_counter(model, x):
    with FlopCounterMode(display=False):
        model(x)


MODES = {"bare": bare, "effmetrics": with_effmetrics, "FlopCounterMode": with_flop_counter}


def measure(name, model, x, rounds):
    times = {m: [] for m in MODES}
    order = list(MODES)
    with torch.inference_mode(False), torch.no_grad():
        for fn in MODES.values():  # warm-up
            fn(model, x)
        for r in range(rounds):
            for mode in order[r % 3:] + order[: r % 3]:
                t0 = time.perf_counter()
                MODES[mode](model, x)
                times[mode].append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    added_em = med["effmetrics"] - med["bare"]
    added_fc = med["FlopCounterMode"] - med["bare"]
    print(f"\n{name}  ({rounds} interleaved rounds, medians)")
    for m in MODES:
        print(f"  {m:<16} {med[m] * 1e3:9.2f} ms   {med[m] / med['bare']:6.3f}x bare")
    print(f"  added time: effmetrics {added_em * 1e3:.2f} ms, FlopCounterMode "
          f"{added_fc * 1e3:.2f} ms")
    if added_em <= 0 or added_fc <= 0:
        print("  (an added time at or below zero: the difference is within this run's noise)")
        return med["effmetrics"] / med["bare"], None
    print(f"  -> effmetrics adds {added_fc / added_em:.1f}x less time than FlopCounterMode")
    return med["effmetrics"] / med["bare"], added_fc / added_em


def measure_compiled(model, x, rounds):
    """The compiled row: torch.compile(model) bare, em.profile of it (counted through its
    graphs, op by op), and eager counting, interleaved as above."""
    compiled = torch.compile(model)
    modes = {"eager bare": lambda: model(x), "compiled bare": lambda: compiled(x),
             "effmetrics eager": lambda: em.profile(model, x),
             "effmetrics compiled": lambda: em.profile(compiled, x)}
    times = {m: [] for m in modes}
    order = list(modes)
    with torch.no_grad():
        for fn in modes.values():  # warm-up: compiles the model and the counting trace
            fn()
        for r in range(rounds):
            for mode in order[r % 4:] + order[: r % 4]:
                t0 = time.perf_counter()
                modes[mode]()
                times[mode].append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    print(f"\nViT-Ti/16, batch 1, 1 thread, torch.compile ({rounds} interleaved rounds, medians)")
    for m in modes:
        print(f"  {m:<20} {med[m] * 1e3:9.2f} ms")
    added_compiled = med["effmetrics compiled"] - med["eager bare"]
    added_eager = med["effmetrics eager"] - med["eager bare"]
    return (med["effmetrics compiled"] / med["compiled bare"],
            med["effmetrics compiled"] / med["effmetrics eager"], added_compiled / added_eager)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=0, help="default: 41 (Ti), 7 (B)")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    b = vit("vit-b/16").eval()
    r_b, a_b = measure(f"ViT-B/16, batch 8, {threads} threads", b, torch.randn(8, 3, 224, 224),
                       args.rounds or 7)
    del b
    torch.set_num_threads(1)
    ti = vit("vit-ti/16").eval()
    r_ti, a_ti = measure("ViT-Ti/16, batch 1, 1 thread", ti, torch.randn(1, 3, 224, 224),
                         args.rounds or 41)
    compiled_rows = measure_compiled(ti, torch.randn(1, 3, 224, 224), args.rounds or 41)
    torch.set_num_threads(threads)
    def more(ratio):
        return "within noise" if ratio is None else f"{ratio:.1f}x more time"

    print("\nsummary:")
    print(f"  ViT-Ti/16 b1: effmetrics/bare = {r_ti:.3f} (target <= 1.10), "
          f"FlopCounterMode adds {more(a_ti)} (target >= 5x)")
    print(f"  ViT-B/16  b8: effmetrics/bare = {r_b:.3f}, FlopCounterMode adds {more(a_b)}")
    print("  ViT-Ti/16 b1 compiled: em.profile(compiled) = {:.3f}x the compiled forward, "
          "{:.3f}x em.profile(eager); its added time {:.3f}x eager counting's".format(
              *compiled_rows))


if __name__ == "__main__":
    main()
