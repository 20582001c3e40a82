"""Timing checks, measured in one run with interleaved repeats (medians, ratios):

1. em.benchmark vs torch.utils.benchmark.Timer on the same CPU workload: median ratio.
2. NVTX on/off overhead on ViT-Ti/16 batch 8 forward (CPU), with module ranges emitted
   (no tool attached, as in a normal run): target < 2%.
3. em.profile(time=True) vs em.profile() vs the bare forward.

    python bench/timing.py [--rounds N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.benchmark import Timer

import effmetrics as em
from effmetrics.models import vit


def interleaved(modes: dict, rounds: int) -> dict:
    times = {m: [] for m in modes}
    names = list(modes)
    for fn in modes.values():
        fn()
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            modes[name]()
            times[name].append(time.perf_counter() - t0)
    return {m: statistics.median(v) for m, v in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    a = torch.randn(384, 384)
    ours, theirs = [], []
    for _ in range(args.rounds // 3 or 1):
        ours.append(em.benchmark(torch.mm, a, a, min_run_time=0.2).median)
        # Timer runs single-threaded unless told: same threads as ours
        theirs.append(Timer("torch.mm(a, a)", globals={"torch": torch, "a": a},
                            num_threads=torch.get_num_threads())
                      .blocked_autorange(min_run_time=0.2).median)
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"1. mm 384x384: em.benchmark median {statistics.median(ours) * 1e3:.3f} ms, "
          f"torch.utils.benchmark {statistics.median(theirs) * 1e3:.3f} ms, ratio {ratio:.3f}")

    model = vit("vit-ti/16").eval()
    x = torch.randn(8, 3, 224, 224)
    with torch.no_grad():
        med = interleaved({
            "bare": lambda: model(x),
            "profile": lambda: em.profile(model, x),
            "profile_nvtx": lambda: em.profile(model, x, nvtx=True),
            "profile_time": lambda: em.profile(model, x, time=True),
        }, args.rounds)
    nvtx = med["profile_nvtx"] / med["profile"] - 1
    print(f"2. ViT-Ti/16 b8 forward: profile {med['profile'] * 1e3:.1f} ms, with NVTX module "
          f"ranges {med['profile_nvtx'] * 1e3:.1f} ms: NVTX overhead {nvtx:+.2%} (target < 2%)")
    print(f"3. bare {med['bare'] * 1e3:.1f} ms; profile() {med['profile'] / med['bare']:.3f}x; "
          f"profile(time=True) {med['profile_time'] / med['bare']:.3f}x bare, "
          f"{med['profile_time'] / med['profile'] - 1:+.2%} over profile()")


if __name__ == "__main__":
    main()
