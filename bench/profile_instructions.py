"""Where the instructions of one em.profile go, counted by valgrind's callgrind (torch's
Timer.collect_callgrind): exact and repeatable where this machine's wall clock is not.

A ViT-Ti/16-shaped model (12 blocks, 113 modules, 562 ops) with its dims shrunk to 12, so that
the kernels do not drown the rest. Each mode runs once per cycle in one valgrind process, the
least of the cycles kept: the bare forward, the floor observer (_C.EmptyObserver), effmetrics'
C++ observer alone, the module scopes alone (subclasses, and the global hooks a compiled model
gets), the observer with the scopes, and em.profile end to end with each.

    python bench/profile_instructions.py [--cycles N]      (needs valgrind; ~3 minutes)
"""
from __future__ import annotations

import argparse
import sys

from overhead import callgrind_ready  # bench/ is on sys.path when this script runs
from torch.utils.benchmark import Timer

SETUP = """
import gc, itertools, torch, effmetrics as em
from effmetrics import _C
from effmetrics.params import scan
from effmetrics.scopes import ModuleScopes
from effmetrics.models import vit
gc.disable()
torch.set_num_threads(1)
torch.set_grad_enabled(False)
model = vit("vit-ti/16", dim=12, heads=3, mlp=12, image=32, classes=10).eval()
x = torch.randn(1, 3, 32, 32)
model_scan = scan(model)
take = ModuleScopes.acquire.__func__

def hooks_only(cls, names, modules=None):
    return take(cls, names, None)

def scoped(modules, observe):
    scopes = ModuleScopes.acquire(model_scan.module_names, modules)
    try:
        if observe:
            p = _C.Profiler(); p.start(); model(x); p.stop()
        else:
            model(x)
    finally:
        ModuleScopes.release(scopes)

def floor():
    with _C.EmptyObserver():
        model(x)

def observer():
    p = _C.Profiler(); p.start(); model(x); p.stop()

def profile_hooks():
    ModuleScopes.acquire = classmethod(hooks_only)
    try:
        em.profile(model, x)
    finally:
        ModuleScopes.acquire = classmethod(take)

MODES = [lambda: model(x), floor, observer,
         lambda: scoped(model_scan.modules, False), lambda: scoped(None, False),
         lambda: scoped(model_scan.modules, True), lambda: scoped(None, True),
         lambda: em.profile(model, x), profile_hooks]
for f in MODES:
    f(); f()
modes = itertools.cycle(MODES[-1:] + MODES[:-1])  # Timer's one warm-up call takes the last

def run():
    next(modes)()
"""
NAMES = ["bare forward", "floor observer", "C++ observer alone", "scopes: subclasses",
         "scopes: global hooks", "observer + subclasses", "observer + global hooks",
         "em.profile", "em.profile, hooks"]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=2)
    args = parser.parse_args()
    if not callgrind_ready():
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    k = len(NAMES)
    stats = Timer("run()", setup=SETUP).collect_callgrind(number=1, repeats=k * args.cycles)
    counts = [s.counts(denoise=True) for s in stats]
    least = {n: min(counts[k * c + i] for c in range(args.cycles)) for i, n in enumerate(NAMES)}
    bare = least[NAMES[0]]
    print(f"instructions of one call, millions (least of {args.cycles} cycles)")
    for n in NAMES:
        spread = [round(counts[k * c + NAMES.index(n)] / 1e6, 3) for c in range(args.cycles)]
        added = "" if n == NAMES[0] else f"  +{(least[n] - bare) / 1e6:6.2f}"
        print(f"  {n:<26} {least[n] / 1e6:8.2f}{added}   cycles: {spread}")


if __name__ == "__main__":
    main()
