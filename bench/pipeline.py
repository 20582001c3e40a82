"""Pipeline bubbles: measured (em.Counter on each stage) vs theoretical ((p-1)/(m+p-1),
em.pipeline_bubble) for a 2-stage pipeline on CPU over gloo, GPipe and 1F1B, m microbatches.

Each stage is `--layers` units: a linear layer and either a hold (an op that takes --hold-ms
without using the CPU, backward twice that: stages of known cost that two ranks sharing a core
still run side by side) or a tanh on a --dim x --dim layer (--work matmul: real compute, which
on a machine with fewer free cores than ranks serialises the stages). Every step ends at a
barrier, so every stage's step spans the whole pipeline. Prints one row per schedule and m:
the theory, each stage's median bubble_fraction and peer_wait share over the measured steps.

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
from distributed_worker import stage_module  # noqa: E402

WORLD = 2


def stage(args, layers: int) -> nn.Module:
    return stage_module(layers, args.dim, args.work, args.hold_ms)


def run(rank: int, args, port: int) -> None:
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    configs = [("gpipe", m, 1) for m in (1, 2, 4, 8)] + [("1f1b", m, 1) for m in (2, 4, 8)]
    configs += [("gpipe", 4, 2)]  # stage 0 twice stage 1
    rows = []
    for kind, m, ratio in configs:
        layers = args.layers * (ratio if rank == 0 else 1)
        mod = stage(args, layers)
        x = torch.randn(m * 32, args.dim)
        st = PipelineStage(mod, rank, WORLD, torch.device("cpu"))
        cls = ScheduleGPipe if kind == "gpipe" else Schedule1F1B
        sched = cls(st, n_microbatches=m, loss_fn=lambda y, t: y.sum())
        with em.Counter(mod, count="every") as c:
            for _ in range(args.steps + 1):
                sched.step(x) if rank == 0 else sched.step(target=x, losses=[])
                dist.barrier()
                c.step()
        steps = c.steps.iloc[1:]  # the first: warm-up
        rows.append({"schedule": kind + (" 2:1" if ratio > 1 else ""), "m": m,
                     "theory": em.pipeline_bubble(kind, WORLD, m) if ratio == 1 else None,
                     "bubble": statistics.median(steps["bubble_fraction"]),
                     "peer": statistics.median(steps["peer_wait_s"] / steps["wall_s"]),
                     "step_ms": 1e3 * statistics.median(steps["wall_s"])})
    everyone = [None] * WORLD if rank == 0 else None
    dist.gather_object(rows, everyone, dst=0)
    if rank == 0:
        print(f"2-stage pipeline, work={args.work}, {args.steps} measured steps per row (medians)")
        print(f"{'schedule':<10} {'m':>2} {'theory':>7} {'stage0':>7} {'stage1':>7} "
              f"{'peer0':>6} {'peer1':>6} {'step ms':>8}")
        for r0, r1 in zip(*everyone):
            theory = f"{r0['theory']:.3f}" if r0["theory"] is not None else "-"
            print(f"{r0['schedule']:<10} {r0['m']:>2} {theory:>7} {r0['bubble']:>7.3f} "
                  f"{r1['bubble']:>7.3f} {r0['peer']:>6.3f} {r1['peer']:>6.3f} "
                  f"{r0['step_ms']:>8.1f}")
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
