"""Where em.profile's fixed costs go, on the caches a forward leaves cold.

em.profile runs the same steps before and after every pass (the model scan, taking and giving
back the module scopes, making, starting and stopping the C++ Profiler, the Report), and in a
loop of profiles each starts right after a forward has streamed its weights and activations
through the caches. Timed warm, back to back, these steps look several times cheaper than they
are there. This script times each step inside em.profile (each function wrapped by name in
effmetrics.profiler) with a bare forward before and after every profile, and prints the medians.
The wrappers add well under a microsecond each.

    python bench/fixed_costs.py [--rounds N]      (ViT-Ti/16, batch 1, 1 thread; ~10 s)

To compare two builds, run it once with each on PYTHONPATH, alternating.
"""
from __future__ import annotations

import argparse
import functools
import gc
import statistics
import time

import torch

import effmetrics as em
from effmetrics import profiler as P
from effmetrics.models import vit

# The steps of em.profile, by their names in effmetrics.profiler (a name it lacks is skipped).
STEPS = ["_check_inputs", "exported_graph", "unwrap", "_check_model", "parse_device", "scan",
         "device_of", "_timeline", "_effective_inputs", "_report"]
PROFILER_METHODS = ["watch", "start", "stop"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=61)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    model = vit("vit-ti/16").eval()
    x = torch.randn(1, 3, 224, 224)
    times: dict[str, list[float]] = {}

    def timed(name, f):
        @functools.wraps(f)
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                times.setdefault(name, []).append(time.perf_counter() - t0)
        return wrapper

    for name in STEPS:
        if hasattr(P, name):
            setattr(P, name, timed(name, getattr(P, name)))
    scopes = P.ModuleScopes
    P.ModuleScopes = type("TimedScopes", (), {
        "acquire": staticmethod(timed("scopes: acquire", scopes.acquire)),
        "release": staticmethod(timed("scopes: release", scopes.release))})
    real = P._C.Profiler

    class TimedProfiler:  # _C.Profiler's construction and methods, timed
        def __init__(self, **kwargs):
            t0 = time.perf_counter()
            self._p = real(**kwargs)
            times.setdefault("Profiler()", []).append(time.perf_counter() - t0)

        def __getattr__(self, name):
            attr = getattr(self._p, name)
            return timed(f"Profiler.{name}", attr) if name in PROFILER_METHODS else attr

    P._C = type("TimedC", (), {"Profiler": TimedProfiler, "scope_depth": P._C.scope_depth,
                               "truncate_scopes": P._C.truncate_scopes})
    for _ in range(3):
        em.profile(model, x)
    times.clear()
    total, forward = [], []
    gc.collect()
    gc.disable()
    for _ in range(args.rounds):
        model(x)
        t0 = time.perf_counter()
        em.profile(model, x)
        total.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model(x)
        forward.append(time.perf_counter() - t0)
    gc.enable()
    steps = {name: statistics.median(v) for name, v in times.items()}
    print(f"ViT-Ti/16 b1, 1 thread, {args.rounds} profiles, each between two forwards "
          "(medians, us)")
    for name, t in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"  {name:22s} {t * 1e6:8.1f}")
    print(f"  {'all of the above':22s} {sum(steps.values()) * 1e6:8.1f}")
    print(f"forward {statistics.median(forward) * 1e3:.2f} ms; em.profile end to end "
          f"{statistics.median(total) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
