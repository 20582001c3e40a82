"""What em.profile adds to the real ViT-Ti/16 batch-1 forward (1 thread), in instructions and in
cache misses, from valgrind's cache simulation (callgrind --cache-sim=yes): exact where this
machine's wall clock is not, and where profile_instructions.py's shrunk model cannot show the
cache misses (its kernels are too small to evict anything).

Three modes, one valgrind process each (two at a time), each forward run three times untimed,
then N times with collection on (torch's valgrind toggle): the bare forward, under the floor
observer (_C.EmptyObserver), and em.profile. Prints per forward: the bare counts and what each
mode adds to them. Needs valgrind; 15-25 minutes on 2 cores.

--cold: the lines each mode touches when every op and module call runs on cold caches, as they
do between the real model's kernels (which stream its weights and activations through every
level): the shrunk model of profile_instructions.py under a simulated 4 KB first-level cache, so
that its misses count the distinct lines touched. Adds two modes: the C++ observer alone and the
module scopes alone (subclasses). ~5 minutes.

    python bench/cache_misses.py [--forwards N] [--cold]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from overhead import callgrind_ready  # bench/ is on sys.path when this script runs

EVENTS = ["Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw"]
NAMES = {"Ir": "instructions", "I1mr": "L1 instruction misses", "D1mr": "L1 data read misses",
         "D1mw": "L1 data write misses", "DLmr": "last-level read misses",
         "DLmw": "last-level write misses"}

CHILD = """
import gc, sys, torch, effmetrics as em
from effmetrics import _C
from effmetrics.models import vit
from effmetrics.params import scan
from effmetrics.scopes import ModuleScopes
torch.set_num_threads(1)
torch.set_grad_enabled(False)
mode, n, cold = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "cold"
if cold:  # profile_instructions.py's model: the real one's ops and modules, tiny kernels
    model = vit("vit-ti/16", dim=12, heads=3, mlp=12, image=32, classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
else:
    model = vit("vit-ti/16").eval()
    x = torch.randn(1, 3, 224, 224)
model_scan = scan(model)

def floor():
    with _C.EmptyObserver():
        model(x)

def observer():
    p = _C.Profiler()
    p.start()
    model(x)
    p.stop()

def scopes():
    taken = ModuleScopes.acquire(model_scan.module_names, model_scan.modules)
    try:
        model(x)
    finally:
        ModuleScopes.release(taken)

f = {"bare": lambda: model(x), "floor": floor, "observer": observer, "scopes": scopes,
     "profile": lambda: em.profile(model, x)}[mode]
for _ in range(3):
    f()
gc.collect()
gc.disable()
torch._C._valgrind_toggle()
for _ in range(n):
    f()
torch._C._valgrind_toggle()
"""
# --cold: first-level caches of 4 KB (64 lines, 4-way), a last level that holds everything.
COLD_CACHES = ["--I1=4096,4,64", "--D1=4096,4,64", "--LL=33554432,16,64"]


def run(mode: str, n: int, out_dir: str, cold: bool = False) -> tuple[list[int], list[str]]:
    out = os.path.join(out_dir, f"{mode}.out")
    subprocess.run(["valgrind", "--tool=callgrind", "--cache-sim=yes", "--collect-atstart=no",
                    *(COLD_CACHES if cold else []), f"--callgrind-out-file={out}",
                    sys.executable, "-c", CHILD, mode, str(n), "cold" if cold else "real"],
                   check=True, capture_output=True)
    return read_summary(out), cache_desc(out)


def cache_desc(path: str) -> list[str]:
    """The caches valgrind simulated (the host's, as its CPUID reports them; valgrind rounds a
    last-level cache it cannot model to one it can)."""
    with open(path) as f:
        return [line[len("desc: "):].strip() for line in f
                if line.startswith("desc: ") and " cache:" in line]


def read_summary(path: str) -> list[int]:
    """The totals of a callgrind output file in EVENTS' order. Callgrind names its events in an
    `events:` line and leaves trailing zero counts out of the `summary:` line (no last-level
    miss at all: the summary stops at the L1 misses), so counts are matched by name."""
    events = None
    with open(path) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("summary:"):
                if events is None:
                    raise RuntimeError(f"{path}: a summary line before its events line")
                values = dict(zip(events, (int(v) for v in line.split()[1:])))
                return [values.get(e, 0) for e in EVENTS]
    raise RuntimeError(f"no summary line in {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--forwards", type=int, default=4)
    parser.add_argument("--cold", action="store_true",
                        help="lines touched on cold caches (shrunk model, 4 KB L1)")
    args = parser.parse_args()
    if not callgrind_ready():
        raise SystemExit("bench/cache_misses.py needs valgrind: apt-get install valgrind")
    modes = ["bare", "floor", "observer", "scopes", "profile"] if args.cold else [
        "bare", "floor", "profile"]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(2) as pool:
        runs = {m: pool.submit(run, m, args.forwards, tmp, args.cold) for m in modes}
        results = {m: r.result() for m, r in runs.items()}
    counts = {m: [v / args.forwards for v in r[0]] for m, r in results.items()}
    if args.cold:
        print(f"ViT-Ti/16-shaped forward (dims 12), per forward ({args.forwards} per mode); "
              "misses of a 4 KB first-level cache, ~the lines touched")
    else:
        print(f"ViT-Ti/16 b1 forward, per forward ({args.forwards} forwards per mode)")
    print("simulated: " + "; ".join(results["bare"][1]))
    heads = {"floor": "floor adds", "observer": "observer adds", "scopes": "scopes add",
             "profile": "em.profile adds"}
    print(f"{'':26s} {'bare':>14s}" + "".join(f" {heads[m]:>16s}" for m in modes[1:]))
    for k, e in enumerate(EVENTS):
        if e in NAMES and (not args.cold or e in ("Ir", "I1mr", "D1mr", "D1mw")):
            b = counts["bare"][k]
            print(f"{NAMES[e]:26s} {b:14,.0f}" +
                  "".join(f" {counts[m][k] - b:+16,.0f}" for m in modes[1:]))


if __name__ == "__main__":
    main()
