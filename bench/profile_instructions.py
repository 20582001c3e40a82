"""Where the instructions of one em.profile go, counted by valgrind's callgrind (torch's
Timer.collect_callgrind): exact and repeatable where this machine's wall clock is not.

A ViT-Ti/16-shaped model (12 blocks, 113 modules, 562 ops) with its dims shrunk to 12, so that
the kernels do not drown the rest. Each mode runs once per cycle in one valgrind process, the
least of the cycles kept: the bare forward, the floor observer (_C.EmptyObserver), effmetrics'
C++ observer alone, the module scopes alone (subclasses, and the global hooks a compiled model
gets), the observer with the scopes, and em.profile end to end with each.

    python bench/profile_instructions.py [--cycles N]      (needs valgrind; ~3 minutes)
    python bench/profile_instructions.py --train           a training step under em.Counter

--train: a training step of the same model (forward, cross-entropy backward, SGD), bare, under
the floor observer, under em.Counter(count="every") and count="auto". Each mode runs blocks of 2
and of 6 steps (a `with` block each, c.step() after every step), and per step is the difference
of the two over 4: the block's entry and exit (the scan, the report) and auto's first two,
counted steps drop out, so auto's figure is an uncounted step's.
"""
from __future__ import annotations

import argparse
import os
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


TRAIN_SETUP = f"""
import gc, itertools, sys, torch, effmetrics as em
from effmetrics import _C
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})  # bench/, for overhead.py
from overhead import training_step
gc.disable()
torch.set_num_threads(1)
model, step = training_step(dim=12, heads=3, mlp=12, image=32, classes=10)

def bare(k):
    for _ in range(k):
        step()

def floor(k):
    with _C.EmptyObserver():
        bare(k)

def counted(count, k):
    with em.Counter(model, count=count) as c:
        for _ in range(k):
            step()
            c.step(examples=1)

MODES = [(bare, 2), (bare, 6), (floor, 2), (floor, 6), (lambda k: counted("every", k), 2),
         (lambda k: counted("every", k), 6), (lambda k: counted("auto", k), 2),
         (lambda k: counted("auto", k), 6)]
for f, k in MODES:
    f(k)
modes = itertools.cycle(MODES[-1:] + MODES[:-1])  # Timer's one warm-up call takes the last

def run():
    f, k = next(modes)
    f(k)
"""


def train(cycles: int) -> None:
    names = ("bare", "floor observer", "Counter every", "Counter auto (uncounted)")
    k = 2 * len(names)
    stats = Timer("run()", setup=TRAIN_SETUP).collect_callgrind(number=1, repeats=k * cycles)
    counts = [s.counts(denoise=True) for s in stats]
    per_step = {m: min(counts[k * c + 2 * i + 1] - counts[k * c + 2 * i] for c in range(cycles))
                / 4 for i, m in enumerate(names)}
    bare = per_step["bare"]
    print(f"training step, instructions per step, millions (blocks of 6 minus blocks of 2 "
          f"steps, over 4; least of {cycles} cycles)")
    for m, v in per_step.items():
        extra = "" if m == "bare" else f"  +{(v - bare) / 1e6:6.2f}  ({v / bare:.3f}x)"
        print(f"  {m:<26} {v / 1e6:8.2f}{extra}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--train", action="store_true", help="the training-step rows instead")
    args = parser.parse_args()
    if not callgrind_ready():
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    if args.train:
        train(args.cycles)
        return
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
