"""Pipeline bubbles: measured (em.Counter on each rank's stages) vs theoretical
(em.pipeline_bubble) for a pipeline on 2 ranks on CPU over gloo, m microbatches: GPipe and 1F1B
(one stage per rank), interleaved 1F1B and the zero-bubble schedules torch has (2 stages per
rank, each half a rank's layers: the same work per rank).

Each stage is `--layers` units: a linear layer and either a hold (an op that takes --hold-ms
without using the CPU, backward twice that: stages of known cost that two ranks sharing a core
still run side by side) or a tanh on a --dim x --dim layer (--work matmul: real compute, which
on a machine with fewer free cores than ranks serialises the stages). Every step ends at a
barrier, so every stage's step spans the whole pipeline. Prints one row per schedule and m:
the theory with unit costs (F, I, W one unit each: a whole backward twice a forward), the theory
with a hold's costs (the backward all input gradient: I = 2 F, W = 0; "-" where it is the
same), each rank's median bubble_fraction and peer_wait share over the measured steps, and the
median step time.

    python bench/pipeline.py [--work hold|matmul] [--steps 4] [--hold-ms 8] [--dim 1024]
"""
from __future__ import annotations

import argparse
import datetime
import os
import socket
import statistics
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import effmetrics as em

# The stages (a linear layer and a hold or a tanh, and the hold op) are the tests' own.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "python"))
from distributed_worker import rank_stages, stage_module  # noqa: E402

WORLD = 2
ZERO_BUBBLE = ("ScheduleInterleavedZeroBubble", "ScheduleZBVZeroBubble", "ScheduleDualPipeV")


def stage(args, layers: int) -> nn.Module:
    return stage_module(layers, args.dim, args.work, args.hold_ms)


def run(rank: int, args, port: int) -> None:
    import torch.distributed.pipelining as pp

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    configs = [("ScheduleGPipe", m, 1) for m in (1, 2, 4, 8)]
    configs += [("Schedule1F1B", m, 1) for m in (2, 4, 8)]
    configs += [("ScheduleGPipe", 4, 2)]  # stage 0 twice stage 1
    configs += [("ScheduleInterleaved1F1B", m, 1) for m in (2, 4, 8)]
    configs += [(name, m, 1) for name in ZERO_BUBBLE if hasattr(pp, name) for m in (4, 8)]
    rows = []
    for name, m, ratio in configs:
        per_rank = 1 if name in ("ScheduleGPipe", "Schedule1F1B") else 2
        layers = args.layers * (ratio if rank == 0 else 1)
        idx = rank_stages(name, rank, WORLD, per_rank)
        mods = [stage(args, max(1, layers // per_rank)) for _ in idx]
        stages = [pp.PipelineStage(mod, i, per_rank * WORLD, torch.device("cpu"))
                  for mod, i in zip(mods, idx)]
        cls = getattr(pp, name)
        sched = cls(stages[0] if per_rank == 1 else stages, n_microbatches=m,
                    loss_fn=lambda y, t: y.sum())
        x = torch.randn(m * 32, args.dim)
        first, last = 0 in idx, per_rank * WORLD - 1 in idx
        with em.Counter(stages, count="every") as c:
            for _ in range(args.steps + 1):
                sched.step(*((x,) if first else ()),
                           **({"target": x, "losses": []} if last else {}))
                dist.barrier()
                c.step()
        steps = c.steps.iloc[1:]  # the first: warm-up
        theory = hold = None
        if ratio == 1:
            theory = em.pipeline_bubble(cls, per_rank * WORLD, m)
            hold = em.pipeline_bubble(cls, per_rank * WORLD, m, costs={"F": 1, "I": 2, "W": 0})
        short = name.removeprefix("Schedule").replace("ZeroBubble", "ZB")
        rows.append({"schedule": short + (" 2:1" if ratio > 1 else ""), "m": m,
                     "theory": theory, "hold": hold,
                     "bubble": statistics.median(steps["bubble_fraction"]),
                     "peer": statistics.median(steps["peer_wait_s"] / steps["wall_s"]),
                     "step_ms": 1e3 * statistics.median(steps["wall_s"])})
    everyone = [None] * WORLD if rank == 0 else None
    dist.gather_object(rows, everyone, dst=0)
    if rank == 0:
        print(f"pipeline on {WORLD} ranks, work={args.work}, {args.steps} measured steps per row "
              f"(medians)")
        print(f"{'schedule':<16} {'m':>2} {'theory':>7} {'hold':>6} {'rank0':>6} {'rank1':>6} "
              f"{'peer0':>6} {'peer1':>6} {'step ms':>8}")

        def fmt(v, same=None):
            return "-" if v is None or (same is not None and abs(v - same) < 5e-4) else f"{v:.3f}"

        for r0, r1 in zip(*everyone):
            print(f"{r0['schedule']:<16} {r0['m']:>2} {fmt(r0['theory']):>7} "
                  f"{fmt(r0['hold'], r0['theory']):>6} {r0['bubble']:>6.3f} {r1['bubble']:>6.3f} "
                  f"{r0['peer']:>6.3f} {r1['peer']:>6.3f} {r0['step_ms']:>8.1f}")
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", choices=("hold", "matmul"), default="hold")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hold-ms", type=float, default=8.0)
    ap.add_argument("--dim", type=int, default=None)
    args = ap.parse_args()
    if args.dim is None:
        args.dim = 1024 if args.work == "matmul" else 64
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(run, args=(args, port), nprocs=WORLD, join=True)


if __name__ == "__main__":
    main()
