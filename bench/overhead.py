"""Instrumentation overhead of effmetrics vs torch's FlopCounterMode, forward on CPU, and of
em.Counter on a training loop.

Interleaved repeats (bare, effmetrics, FlopCounterMode each once per round, order rotated) so
that machine noise hits every mode alike; reports medians and ratios from this one run.
Targets (issue 2): effmetrics <= 1.10x bare on ViT-Ti/16 batch 1 single-thread, and at least
5x less added time than FlopCounterMode. Issue 12: a chain of tiny ops within 0.2 us per op of
the floor (an empty RecordFunction callback asking for inputs and outputs, built with the
project: _C.EmptyObserver); a ViT-Ti/16 batch 1 training step under Counter(count="auto")
<= 1.005x bare, count="every" <= 1.03x; em.profile forward <= 1.05x.

    python bench/overhead.py [--rounds N] [--only chain,instructions,train,profile,vit,modules]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import effmetrics as em
from effmetrics import _C
from effmetrics.models import vit


def bare(model, x):
    model(x)


def with_floor(model, x):
    with _C.EmptyObserver():  # the floor: a per-op callback that does nothing (see the chain)
        model(x)


def with_effmetrics(model, x):
    em.profile(model, x)


def with_flop_counter(model, x):
    with FlopCounterMode(display=False):
        model(x)


MODES = {"bare": bare, "floor": with_floor, "effmetrics": with_effmetrics,
         "FlopCounterMode": with_flop_counter}


def measure(name, model, x, rounds):
    times = {m: [] for m in MODES}
    order = list(MODES)
    with torch.inference_mode(False), torch.no_grad():
        for fn in MODES.values():  # warm-up
            fn(model, x)
        for r in range(rounds):
            k = r % len(order)
            for mode in order[k:] + order[:k]:
                t0 = time.perf_counter()
                MODES[mode](model, x)
                times[mode].append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    least = {m: min(v) for m, v in times.items()}  # the fastest call: the least disturbed
    added_em = med["effmetrics"] - med["bare"]
    added_fc = med["FlopCounterMode"] - med["bare"]
    print(f"\n{name}  ({rounds} interleaved rounds, medians; the fastest call's ratio beside)")
    for m in MODES:
        print(f"  {m:<16} {med[m] * 1e3:9.2f} ms   {med[m] / med['bare']:6.3f}x bare   "
              f"fastest {least[m] / least['bare']:6.3f}x")
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


def interleaved(modes: dict, rounds: int) -> dict:
    """Median seconds of each mode's call, the modes run once per round in rotated order."""
    times = {m: [] for m in modes}
    order = list(modes)
    for fn in modes.values():  # warm-up
        fn()
    for r in range(rounds):
        k = r % len(order)
        for mode in order[k:] + order[:k]:
            t0 = time.perf_counter()
            modes[mode]()
            times[mode].append(time.perf_counter() - t0)
    return {m: statistics.median(v) for m, v in times.items()}


def measure_op_chain(rounds: int, n: int = 2000, expr: str = "y + 1") -> tuple[float, float]:
    """Per-op added time of a chain of 1-element adds (expr: one of CHAINS): the floor (an
    empty callback with inputs and outputs) and em.profile, both over bare.

    Per op is the marginal cost: each mode runs a chain of n and one of 2n ops, and the
    difference of the two (n ops) is what n more ops cost, so em.profile's fixed cost per call
    (scan, report: measure_fixed_cost) drops out. The amortized figure (one chain of n, fixed
    cost included) is printed beside it."""
    x = torch.ones(1)
    operand = {"y + 1": 1, "y + x": x}[expr]

    def chain(k):
        def run():
            y = x
            for _ in range(k):
                y = y + operand
        return run

    def floor(k):
        def run():
            with _C.EmptyObserver():
                chain(k)()
        return run

    def counted(k):
        return lambda: em.profile(chain(k))

    modes = {}
    for name, make in (("bare", chain), ("floor", floor), ("effmetrics", counted)):
        modes[name], modes[name + " 2n"] = make(n), make(2 * n)
    med = interleaved(modes, rounds)
    marginal = {m: med[m + " 2n"] - med[m] for m in ("bare", "floor", "effmetrics")}
    per_op = {m: (marginal[m] - marginal["bare"]) / n * 1e6 for m in ("floor", "effmetrics")}
    amortized = {m: (med[m] - med["bare"]) / n * 1e6 for m in ("floor", "effmetrics")}
    print(f"\nchain of `y = {expr}` on 1 element, 1 thread ({rounds} interleaved rounds, "
          f"medians; per op: chain of {2 * n} minus chain of {n})")
    for m in ("bare", "floor", "effmetrics"):
        extra = "" if m == "bare" else (f"   +{per_op[m]:.2f} us/op  (+{amortized[m]:.2f} "
                                        f"amortized over one chain of {n})")
        print(f"  {m:<12} {marginal[m] / n * 1e6:8.3f} us/op{extra}")
    return per_op["floor"], per_op["effmetrics"]


def callgrind_ready() -> bool:
    """Whether valgrind is here; if so, puts this interpreter first on PATH: the valgrind child
    of torch's Timer.collect_callgrind runs `python` from PATH, and must find torch."""
    import os
    import shutil
    import sys

    if shutil.which("valgrind") is None:
        return False
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    return True


# The chains the instruction count runs: `y + 1` is five records (aten::add and, nested in it,
# the scalar's to, _to_copy, empty_strided and copy_), which effmetrics mutes after the first
# add (Session::mute) while the floor observes all five; `y + x` (two tensors) is one record
# with nothing nested, the case muting cannot help.
CHAINS = ("y + 1", "y + x")


def measure_instructions(n: int = 3000, cycles: int = 3) -> dict:
    """The op chains' per-op cost in instructions (valgrind's callgrind, through torch's
    Timer.collect_callgrind): exact and repeatable where wall-clock medians on a shared machine
    move by more than the difference measured. One valgrind process per chain; each repeat runs
    the next of bare, floor and effmetrics at n and 2n ops, per op = the difference of the two
    over n. Events that land in one run and not another (the allocator consolidating its free
    lists) add a million instructions or so: each mode runs `cycles` times and its least
    marginal count is kept, and n is large enough that what is left is a few dozen per op.
    Returns {chain: (floor over bare, effmetrics over the floor)}."""
    if not callgrind_ready():
        print("\ninstructions: valgrind is not installed (apt-get install valgrind); skipped")
        return {}
    return {expr: _chain_instructions(expr, n, cycles) for expr in CHAINS}


def _chain_instructions(expr: str, n: int, cycles: int) -> tuple[float, float]:
    from torch.utils.benchmark import Timer

    # The collector off: a collection landing in one run and not in another moves a run by
    # millions of instructions. The chain makes no cycles, so nothing accumulates.
    setup = f"""
import gc, itertools, torch, effmetrics as em
gc.disable()
from effmetrics import _C
torch.set_num_threads(1)
x = torch.ones(1)
def chain(k):
    y = x
    for _ in range(k):
        y = {expr}
def floor(k):
    with _C.EmptyObserver():
        chain(k)
def counted(k):
    em.profile(lambda: chain(k))
order = [(f, k) for f in (chain, floor, counted) for k in ({n}, {2 * n})]
modes = itertools.cycle(order[-1:] + order[:-1])  # Timer's one warm-up call takes the last
def run():
    f, k = next(modes)
    f(k)
counted(10)
"""
    stats = Timer("run()", setup=setup).collect_callgrind(number=1, repeats=6 * cycles)
    counts = [s.counts(denoise=True) for s in stats]
    marginal = {m: min(counts[6 * c + 2 * i + 1] - counts[6 * c + 2 * i] for c in range(cycles))
                / n for i, m in enumerate(("bare", "floor", "effmetrics"))}

    def own(stat):  # instructions in effmetrics' extension itself (and its pthread_self calls)
        # Not __tls_get_addr: torch's own per-op thread-local lookups (in the bare op too) are
        # most of those, and a stripped build cannot tell whose a call is.
        fc = stat.stats(inclusive=False).filter(
            lambda fn: "effmetrics/_C." in fn or "pthread_self" in fn)
        return sum(c for c, _ in fc)

    own_per_op = statistics.median(own(stats[6 * c + 5]) - own(stats[6 * c + 4])
                                   for c in range(cycles)) / n
    print(f"\nchain of `y = {expr}` on 1 element, instructions per op (callgrind; chain of "
          f"{2 * n} minus chain of {n})")
    for m, v in marginal.items():
        extra = "" if m == "bare" else f"   +{v - marginal['bare']:.0f}"
        print(f"  {m:<12} {v:8.0f}{extra}")
    floor = marginal["floor"] - marginal["bare"]
    over = marginal["effmetrics"] - marginal["floor"]
    print(f"  -> effmetrics - floor: {over:+.0f} instructions per op "
          f"({over / marginal['bare']:+.1%} of the bare op's; the floor adds {floor:.0f}); whole "
          "runs move by ~1,000 per op from run to run (the interpreter and allocator's state)")
    print(f"  -> effmetrics' own code (its extension's instructions, not the torch code it "
          f"calls): {own_per_op:.0f} instructions per op, exact")
    return floor, over


def training_step(**shape):
    """A ViT-Ti/16 (shape: vit()'s overrides) training step at batch 1: forward, cross-entropy
    backward, SGD (lr 0). Returns (model, step)."""
    model = vit("vit-ti/16", **shape)
    image = shape.get("image", 224)
    x, y = torch.randn(1, 3, image, image), torch.tensor([3])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        loss_fn(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return model, step


def measure_training(rounds: int, steps: int = 10) -> dict:
    """A ViT-Ti/16 batch 1 training step (forward, backward, SGD), 1 thread: bare, under
    Counter(count="auto") and Counter(count="every"). Each round runs `steps` steps in each mode
    (one Counter `with` block per round); each step is timed from the outside, c.step()
    included. auto's steady state: its uncounted steps (every step but each block's first two:
    the first lends its counts to none)."""
    model, step = training_step()

    def run(count):
        times = []
        with em.Counter(model, count=count) if count else _nothing() as c:
            for _ in range(steps):
                t0 = time.perf_counter()
                step()
                if c is not None:
                    c.step(examples=1)
                times.append(time.perf_counter() - t0)
        return times

    samples = {"bare": [], "auto (uncounted steps)": [], "auto (all steps)": [], "every": []}
    order = [None, "auto", "every"]
    run(None), run("auto"), run("every")  # warm-up
    for r in range(rounds):
        k = r % 3
        for count in order[k:] + order[:k]:
            t = run(count)
            if count is None:
                samples["bare"] += t
            elif count == "auto":
                samples["auto (uncounted steps)"] += t[2:]
                samples["auto (all steps)"] += t
            else:
                samples["every"] += t
    med = {m: statistics.median(v) for m, v in samples.items()}
    print(f"\nViT-Ti/16 batch 1 training step, 1 thread ({rounds} interleaved rounds of "
          f"{steps} steps, medians per step)")
    for m, v in med.items():
        print(f"  {m:<24} {v * 1e3:8.2f} ms   {v / med['bare']:6.3f}x bare")
    return {m: v / med["bare"] for m, v in med.items()}


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def measure_fixed_cost(rounds: int) -> float:
    """em.profile's fixed cost (model scan, hooks, report) on a one-op model."""
    lin, x = torch.nn.Linear(4, 4), torch.randn(1, 4)
    with torch.no_grad():
        med = interleaved({"bare": lambda: lin(x), "profile": lambda: em.profile(lin, x)},
                          rounds)
    fixed = (med["profile"] - med["bare"]) * 1e6
    print(f"\nem.profile of nn.Linear(4, 4), batch 1 ({rounds} rounds): {fixed:.0f} us fixed "
          "cost per profile (scan, hooks, report)")
    # The scan of a ViT-Ti/16 (113 modules, 152 parameters): walked afresh, and the walk kept
    # per model (params.scan: checked object by object, the tensors' facts read again).
    from effmetrics import params

    ti = vit("vit-ti/16")
    scans = interleaved({"walked": lambda: _fresh_scan(ti), "kept walk": lambda: params.scan(ti)},
                        rounds)
    print(f"  ViT-Ti/16's scan: {scans['walked'] * 1e6:.0f} us walked afresh, "
          f"{scans['kept walk'] * 1e6:.0f} us with the walk kept")
    return fixed


def _fresh_scan(model):
    """params.scan without its kept walk: the walk, the tensors' facts, the counts."""
    from effmetrics import params

    walk, modules = params._walk(model)
    occ, facts = params._tensors(walk, modules)
    return params._scanned(walk, occ, *facts)


def measure_module_calls(rounds: int, n: int = 200) -> dict:
    """The cost of module scopes per module call: a Sequential of n do-nothing modules, bare,
    scoped by subclasses (an eager model's way) and by the global module hooks (a compiled
    model's way, and the only way before 2026-11-30). No profiler runs: the scopes alone."""
    from effmetrics.params import scan
    from effmetrics.scopes import ModuleScopes

    class Nothing(torch.nn.Module):
        def forward(self, x):
            return x

    model, x = torch.nn.Sequential(*[Nothing() for _ in range(n)]), torch.zeros(1)
    model_scan = scan(model)

    def scoped(modules, call=True):
        def run():
            taken = ModuleScopes.acquire(model_scan.module_names, modules)
            try:
                if call:
                    model(x)
            finally:
                ModuleScopes.release(taken)
        return run

    med = interleaved({"bare": lambda: model(x), "subclasses": scoped(model_scan.modules),
                       "global hooks": scoped(None),
                       "take+give (subclasses)": scoped(model_scan.modules, call=False),
                       "take+give (hooks)": scoped(None, call=False)}, rounds)
    calls = n + 1
    print(f"\nmodule scopes, a Sequential of {n} do-nothing modules, each called once "
          f"({rounds} interleaved rounds, medians, per module)")
    print(f"  bare                    {med['bare'] / calls * 1e6:6.2f} us a call")
    for way, take in (("subclasses", "take+give (subclasses)"), ("global hooks",
                                                                  "take+give (hooks)")):
        added = (med[way] - med["bare"]) / calls * 1e6
        taking = med[take] / calls * 1e6
        print(f"  {way:<23} +{added:5.2f} us a call, all told: +{added - taking:.2f} us the "
              f"call itself, {taking:.2f} us taking and giving back the scope")
    return med


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=0, help="default: 41 (Ti), 7 (B)")
    parser.add_argument("--only", default="",
                        help="comma-separated: chain, instructions (valgrind), train, profile, "
                        "vit (the ViT-Ti/16 row alone), modules (module scopes per call)")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    threads = torch.get_num_threads()
    if only:
        torch.set_num_threads(1)
        if "instructions" in only:
            measure_instructions()
        if "chain" in only:
            for expr in CHAINS:
                floor, em_op = measure_op_chain(args.rounds or 41, expr=expr)
                print(f"  -> effmetrics - floor: {em_op - floor:+.2f} us/op (target <= 0.2)")
        if "profile" in only:
            measure_fixed_cost(args.rounds or 201)
        if "modules" in only:
            measure_module_calls(args.rounds or 101)
        if "vit" in only:
            ti = vit("vit-ti/16").eval()
            measure("ViT-Ti/16, batch 1, 1 thread", ti, torch.randn(1, 3, 224, 224),
                    args.rounds or 41)
        if "train" in only:
            ratios = measure_training(args.rounds or 9)
            print(f"  -> auto {ratios['auto (uncounted steps)']:.3f}x (target <= 1.005), "
                  f"every {ratios['every']:.3f}x (target <= 1.03)")
        torch.set_num_threads(threads)
        return
    b = vit("vit-b/16").eval()
    r_b, a_b = measure(f"ViT-B/16, batch 8, {threads} threads", b, torch.randn(8, 3, 224, 224),
                       args.rounds or 7)
    del b
    torch.set_num_threads(1)
    ti = vit("vit-ti/16").eval()
    r_ti, a_ti = measure("ViT-Ti/16, batch 1, 1 thread", ti, torch.randn(1, 3, 224, 224),
                         args.rounds or 41)
    compiled_rows = measure_compiled(ti, torch.randn(1, 3, 224, 224), args.rounds or 41)
    chains = {expr: measure_op_chain(args.rounds or 41, expr=expr) for expr in CHAINS}
    fixed = measure_fixed_cost(args.rounds or 201)
    train = measure_training(args.rounds or 9)
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
    for expr, (floor, em_op) in chains.items():
        print(f"  tiny-op chain y = {expr}: floor +{floor:.2f} us/op, effmetrics +{em_op:.2f} "
              f"us/op: {em_op - floor:+.2f} us/op over the floor (target <= 0.2)")
    print(f"  em.profile fixed cost (one-op model): {fixed:.0f} us")
    print(f"  ViT-Ti/16 b1 training step: Counter auto {train['auto (uncounted steps)']:.3f}x "
          f"bare in its uncounted steps ({train['auto (all steps)']:.3f}x over 10-step runs, "
          f"target <= 1.005), every {train['every']:.3f}x (target <= 1.03)")


if __name__ == "__main__":
    main()
