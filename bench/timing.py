"""Timing checks, measured in one run with interleaved repeats (medians, ratios):

1. em.benchmark vs torch.utils.benchmark.Timer on the same CPU workload: median ratio.
2. NVTX on/off overhead on ViT-Ti/16 batch 8 forward (CPU), with module ranges emitted
   (no tool attached, as in a normal run): target < 2%.
3. em.profile(time=True) vs em.profile() vs the bare forward.
4. CUDA only (--cuda; scripts/gpu_check.sh runs it): the same on the GPU, where time=True records
   CUDA events around each outermost op (time_ops=True: around each counted op too), and the
   device busy time the events find vs torch.cuda.Event around the whole forward.
5. CUDA only: a ViT-B/16 b32 bf16 training step (issue 12's GPU targets): Counter(count="auto")
   steps <= 1.02x the bare step's wall time, em.profile(time=True) of the step <= 1.2x, and the
   device busy time that profile's events find within 5% of events around the bare step.
6. CUDA only: a chain of 2,000 one-element adds: the added host time per op of profile(),
   time=True (events around each outermost op) and time_ops=True, with the marks recorded as
   pooled raw cudart events (the default) and through c10::Event (EFFMETRICS_EVENTS=c10).

    python bench/timing.py [--rounds N] [--cuda]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import traceback

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


def synced(fn):
    """fn, then a wait for the GPU: its host time covers its device work."""
    def run():
        fn()
        torch.cuda.synchronize()
    return run


def cuda_section(rounds: int) -> None:
    model = vit("vit-b/16").cuda().to(torch.bfloat16).eval()
    x = torch.randn(32, 3, 224, 224, device="cuda", dtype=torch.bfloat16)

    with torch.no_grad():
        med = interleaved({
            "bare": synced(lambda: model(x)),
            "profile": synced(lambda: em.profile(model, x)),
            "profile_time": synced(lambda: em.profile(model, x, time=True)),
            "profile_time_ops": synced(lambda: em.profile(model, x, time=True, time_ops=True)),
        }, rounds)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        events = []
        for _ in range(rounds):
            start.record()
            model(x)
            end.record()
            end.synchronize()
            events.append(start.elapsed_time(end) / 1e3)
        busy = statistics.median(em.profile(model, x, time=True).busy_s for _ in range(rounds))
    ev = statistics.median(events)
    ratio = {m: med[m] / med["bare"] for m in med}
    print(f"4. CUDA ViT-B/16 b32 bf16 forward: bare {med['bare'] * 1e3:.2f} ms; profile() "
          f"{ratio['profile']:.3f}x; time=True {ratio['profile_time']:.3f}x; "
          f"time_ops=True {ratio['profile_time_ops']:.3f}x bare")
    print(f"   device busy from effmetrics events {busy * 1e3:.3f} ms vs torch.cuda.Event around "
          f"the forward {ev * 1e3:.3f} ms: ratio {busy / ev:.3f}")


def cuda_training_section(rounds: int) -> None:
    """Blocks of steps per mode, the blocks' order rotated each round. A Counter observes its
    thread between its steps (the data-loading prefix), so each Counter block enters its own
    Counter and times only the steps after the counted ones (the first two: the first lends its
    counts to none); the bare block times the same steps."""
    torch.manual_seed(0)
    model = vit("vit-b/16").cuda().to(torch.bfloat16).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    x = torch.randn(32, 3, 224, 224, device="cuda", dtype=torch.bfloat16)
    y = torch.randint(0, 1000, (32,), device="cuda")

    def train_step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    block, counted = 6, 2
    walls = {"bare": [], "counter_auto": [], "profile_time": []}
    events, busy, summaries = [], [], []

    def bare_block():
        for i in range(block):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            start.record()
            train_step()
            end.record()
            torch.cuda.synchronize()
            if i >= counted:
                walls["bare"].append(time.perf_counter() - t0)
                events.append(start.elapsed_time(end) / 1e3)

    def counter_block():
        with em.Counter(model, count="auto", device="cuda") as c:
            for i in range(block):
                t0 = time.perf_counter()
                train_step()
                c.step(examples=32)
                torch.cuda.synchronize()
                if i >= counted:
                    walls["counter_auto"].append(time.perf_counter() - t0)
        # one signature: the first step and the one that lends its counts to the rest
        assert list(c.steps["counted"]) == [True] * counted + [False] * (block - counted), c.steps
        summaries.append(c.summary())

    def profile_block():
        for _ in range(block // 2):
            t0 = time.perf_counter()
            rep = em.profile(train_step, time=True, device="cuda")
            torch.cuda.synchronize()
            walls["profile_time"].append(time.perf_counter() - t0)
            busy.append(rep.busy_s)

    blocks = [bare_block, counter_block, profile_block]
    for b in blocks:  # warm-up
        b()
    for v in [*walls.values(), events, busy]:
        v.clear()
    for r in range(rounds):
        for b in blocks[r % 3:] + blocks[:r % 3]:
            b()
    med = {m: statistics.median(v) for m, v in walls.items()}
    ev, bz = statistics.median(events), statistics.median(busy)
    print(f"5. CUDA ViT-B/16 b32 bf16 training step (SGD): bare {med['bare'] * 1e3:.2f} ms; "
          f"Counter(count='auto') {med['counter_auto'] / med['bare']:.3f}x (target <= 1.02); "
          f"profile(time=True) {med['profile_time'] / med['bare']:.3f}x (target <= 1.2)")
    print(f"   device busy from profile(time=True)'s events {bz * 1e3:.3f} ms vs torch.cuda.Event "
          f"around the bare step {ev * 1e3:.3f} ms: ratio {bz / ev:.3f} (target within 5%)")
    s = summaries[-1]
    print(f"   Counter summary (last block): mfu {s['mfu']}, hfu {s['hfu']}, peak "
          f"{s['peak_flops']} ({s['peak_source']}, {s['dtype']}); energy "
          f"{s.get('energy_j')} J from {s.get('energy_source')}, "
          f"{s.get('joules_per_example')} J/example; idle_fraction {s['idle_fraction']}")


def cuda_op_chain_section(rounds: int, n: int = 2000) -> None:
    a = torch.ones(1, device="cuda")

    def chain():
        y = a
        for _ in range(n):
            y = y + 1
        return y

    def c10_events(fn):
        """fn with the profiler's marks recorded through c10::Event (read at Profiler creation)."""
        def run():
            os.environ["EFFMETRICS_EVENTS"] = "c10"
            try:
                fn()
            finally:
                del os.environ["EFFMETRICS_EVENTS"]
        return run

    def timed():
        em.profile(chain, time=True, device="cuda")

    def timed_ops():
        em.profile(chain, time=True, time_ops=True, device="cuda")

    med = interleaved({
        "bare": synced(chain),
        "profile": synced(lambda: em.profile(chain)),
        "profile_time": synced(timed),
        "profile_time_ops": synced(timed_ops),
        "profile_time_c10": synced(c10_events(timed)),
        "profile_time_ops_c10": synced(c10_events(timed_ops)),
    }, rounds)
    per_op = {m: (med[m] - med["bare"]) / n * 1e6 for m in med if m != "bare"}
    print(f"6. CUDA chain of {n} one-element adds: bare {med['bare'] / n * 1e6:.2f} us/op; added "
          f"per op: profile() {per_op['profile']:.2f} us, time=True {per_op['profile_time']:.2f} "
          f"us, time_ops=True {per_op['profile_time_ops']:.2f} us; marks recorded with "
          f"{em._C.device_event_calls('cuda')}; through c10::Event instead: time=True "
          f"{per_op['profile_time_c10']:.2f} us, time_ops=True "
          f"{per_op['profile_time_ops_c10']:.2f} us")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cuda", action="store_true", help="only the CUDA section")
    args = parser.parse_args()
    if args.cuda:
        if not torch.cuda.is_available():
            raise SystemExit("bench/timing.py --cuda: CUDA is not available on this machine")
        # Each section on its own: one that fails (a figure the GPU machine has never produced)
        # leaves the others' figures printed; the script then exits with the failure.
        failed = []
        for section in (cuda_section, cuda_training_section, cuda_op_chain_section):
            try:
                section(args.rounds)
            except Exception:  # printed, named below, and the exit status says so
                traceback.print_exc()
                failed.append(section.__name__)
        if failed:
            raise SystemExit(f"bench/timing.py --cuda: {', '.join(failed)} failed (above)")
        return

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
