"""One rank of a multi-process test (tests/python/test_distributed.py starts them): runs a
scenario on gloo and writes what it measured to $EM_OUT/rank<r>.json. The test derives what the
numbers must be; this script only measures."""
import datetime
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn

import effmetrics as em


def mlp(dim=32, hidden=64, out=8):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, out))


DDP_MLP = {"dim": 512, "hidden": 1024, "out": 8}


def collectives(rank, world):
    """Each collective once, on tensors of known sizes; returns by_collective()."""
    numel = 1000

    def work():
        x = torch.ones(numel)
        dist.all_reduce(x)
        dist.all_gather([torch.zeros(numel) for _ in range(world)], x)
        dist.all_gather_into_tensor(torch.zeros(numel * world), x)
        dist.reduce_scatter_tensor(torch.zeros(numel // world), torch.ones(numel))
        dist.broadcast(x, 0)
        dist.reduce(x, 0)
        dist.all_to_all_single(torch.zeros(numel), torch.ones(numel))
        dist.barrier()
        if rank == 0:
            dist.send(x, 1)
        elif rank == 1:
            dist.recv(x, 0)
        return x

    def overlapping():  # two all-reduces in flight at once (gloo runs them on 2 threads)
        works = [dist.all_reduce(torch.ones(numel), async_op=True) for _ in range(2)]
        for w in works:
            w.wait()

    both = em.profile(overlapping, time=True)

    def traced():
        dist.barrier()
        return torch.ones(1000) * 2

    # each rank's own trace, and every rank's merged on rank 0
    rep_t = em.profile(traced, trace=True)
    em.gather(rep_t, trace=os.path.join(os.environ["EM_OUT"], "merged_trace.json"))
    own = json.loads(rep_t._raw.to_chrome_trace())["traceEvents"]
    rep = em.profile(work, time=True)
    df = rep.by_collective()
    return {
        "trace_events": sum(e.get("ph") == "X" for e in own),
        "overlapping": {"calls": int(both.by_collective().loc["c10d::allreduce_", "calls"]),
                        "bytes": both.comm_bytes, "comm_time_s": both.comm_time_s,
                        "exposed_comm_s": both.exposed_comm_s, "wall_s": both.wall_s},
        "numel": numel, "itemsize": 4, "flops": rep.flops,
        "unsupported": rep.unsupported_ops,
        "collectives": {op: {k: (None if v != v else v) for k, v in row.items()}
                        for op, row in df.to_dict("index").items()},
        "comm_bytes": rep.comm_bytes, "comm_time_s": rep.comm_time_s,
        "exposed_comm_s": rep.exposed_comm_s, "wall_s": rep.wall_s}


def ddp(rank, world):
    """DDP of an MLP, 3 steps under a Counter (every step counted); em.gather at the end."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(mlp(**DDP_MLP))
    torch.manual_seed(1 + rank)
    batches = [torch.randn(16, DDP_MLP["dim"]) for _ in range(3)]
    with em.Counter(model, count="every") as c:
        for x in batches:
            model.zero_grad(set_to_none=True)  # every step like the first
            model(x).sum().backward()
            c.step(examples=len(x))
    steps = c.steps
    ops = c.report.ops()
    coll = ops[ops["kind"] == "collective"]
    gathered = em.gather(c)
    return {
        "by_collective": c.report.by_collective().to_dict("index"),
        "steps": steps[["flops", "comm_bytes", "comm_bus_bytes", "comm_time_s",
                        "exposed_comm_s", "wall_s"]].to_dict("list"),
        "collective_phases": sorted(set(coll["phase"])),
        "collective_ops": sorted(set(coll["op"])),
        "collective_flops": int(coll["flops"].sum()),
        "comm_calls": int(coll["calls"].sum()),
        "unsupported": c.report.unsupported_ops,
        "gather": None if gathered is None else {
            "rows": gathered.to_dict("list"), "attrs": gathered.attrs},
        "batch": [16, DDP_MLP["dim"]],
    }


def fail(rank, world):
    """Rank 1 raises before its all-reduce; rank 0 must fail, not hang."""
    x = torch.ones(10)
    if rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    t0 = time.perf_counter()
    try:
        dist.all_reduce(x)
    except Exception as e:  # what rank 0 sees is the point
        return {"error": f"{type(e).__name__}: {e}"[:300], "after_s": time.perf_counter() - t0}
    return {"error": None}


def hang(rank, world):
    """Rank 1 never reaches the barrier (the launcher must kill the run)."""
    if rank == 1:
        time.sleep(120)
    dist.barrier()
    return {}


# ---------------------------------------------------------------- pipelines

@torch.library.custom_op("em_test::hold", mutates_args=())
def hold(x: torch.Tensor, ms: float) -> torch.Tensor:
    """An op that takes `ms` milliseconds without using the CPU: a stage of known cost that two
    ranks sharing a core still run side by side (a matmul-heavy stage on 2 shared cores does
    not: README "Distributed runs")."""
    time.sleep(ms / 1e3)
    return x.clone()


@hold.register_fake
def _(x, ms):
    return torch.empty_like(x)


def _hold_backward(ctx, grad):
    return hold(grad, 2 * ctx.ms), None  # backward: twice the forward, as for a matmul


def _hold_setup(ctx, inputs, output):
    ctx.ms = inputs[1]


hold.register_autograd(_hold_backward, setup_context=_hold_setup)


class Hold(nn.Module):
    def __init__(self, ms: float):
        super().__init__()
        self.ms = ms

    def forward(self, x):
        return hold(x, self.ms)


def stage_module(layers, dim, work, hold_ms=12.0):
    """`layers` units of work: a linear layer and a tanh (work="matmul"), or a linear layer and
    a hold of hold_ms (work="hold": backward twice that)."""
    torch.manual_seed(0)
    mods = []
    for _ in range(layers):
        mods += [nn.Linear(dim, dim), nn.Tanh() if work == "matmul" else Hold(hold_ms)]
    return nn.Sequential(*mods)


def pipeline(rank, world):
    """2 stages over gloo: GPipe at m = 1, 2, 4, 8 and 1F1B at m = 2, 4, 8 (equal stages), and
    an imbalanced GPipe (stage 0 twice stage 1). Per config and measured step: the stage's
    bubble_fraction, peer wait, busy and wall time."""
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    work = os.environ.get("EM_PIPE_WORK", "hold")
    dim = int(os.environ.get("EM_PIPE_DIM", "1024" if work == "matmul" else "64"))
    mb_rows = 32
    steps = int(os.environ.get("EM_PIPE_STEPS", "3"))
    configs = [("gpipe", m, (2, 2)) for m in (1, 2, 4, 8)]
    configs += [("1f1b", m, (2, 2)) for m in (2, 4, 8)]  # 1F1B needs m >= stages
    configs += [("gpipe", 4, (4, 2))]
    out = []
    for kind, m, layers in configs:
        mod = stage_module(layers[rank], dim, work)
        x = torch.randn(m * mb_rows, dim)
        stage = PipelineStage(mod, rank, world, torch.device("cpu"))
        cls = ScheduleGPipe if kind == "gpipe" else Schedule1F1B
        sched = cls(stage, n_microbatches=m, loss_fn=lambda y, t: y.sum())
        rows = []
        with em.Counter(mod, count="every") as c:
            for _ in range(steps + 1):  # the first step: warm-up (shapes, buffers)
                if rank == 0:
                    sched.step(x)
                else:
                    sched.step(target=x, losses=[])
                # Every stage's step ends with the pipeline (the last stage's last backward ends
                # before the first stage's): its wait here is part of its bubble.
                dist.barrier()
                rows.append(c.step())
        measured = rows[1:]  # the first: warm-up
        out.append({
            "schedule": kind, "m": m, "layers": list(layers),
            "bubble": [r["bubble_fraction"] for r in measured],
            "peer_wait": [r["peer_wait_s"] / r["wall_s"] for r in measured],
            "busy_s": [r["busy_s"] for r in measured],
            "wall_s": [r["wall_s"] for r in measured],
            "p2p_ops": sorted(op for op in c.report.by_collective().index),
        })
    return {"configs": out}


def rank_stages(cls_name, rank, world, per_rank):
    """This rank's stage indices: looped (rank, rank + world, ...) or, for the V schedules,
    the V (rank, 2 world - 1 - rank)."""
    if cls_name in ("ScheduleZBVZeroBubble", "ScheduleDualPipeV"):
        return [rank, 2 * world - 1 - rank]
    return [rank + k * world for k in range(per_rank)]


def pipeline_multi(rank, world):
    """2 stages per rank (4 in all, one hold layer each: 12 ms forward, 24 ms backward): the
    interleaved 1F1B at m = 2, 4, 8, and each zero-bubble schedule torch has at m = 4. One
    Counter on the rank's two stages; per measured step: the rank's bubble and peer wait, and
    each stage's action times."""
    import torch.distributed.pipelining as pp

    dim, mb_rows, per_rank = 64, 8, 2
    steps = int(os.environ.get("EM_PIPE_STEPS", "3"))
    configs = [("ScheduleInterleaved1F1B", m, steps) for m in (2, 4, 8)]
    configs += [(name, 4, 2) for name in ("ScheduleInterleavedZeroBubble",
                                           "ScheduleZBVZeroBubble", "ScheduleDualPipeV")
                if hasattr(pp, name)]
    out = []
    for name, m, n_steps in configs:
        n = per_rank * world
        idx = rank_stages(name, rank, world, per_rank)
        mods = [stage_module(1, dim, "hold") for _ in idx]
        stages = [pp.PipelineStage(mod, i, n, torch.device("cpu")) for mod, i in zip(mods, idx)]
        sched = getattr(pp, name)(stages, n_microbatches=m, loss_fn=lambda y, t: y.sum())
        x = torch.randn(m * mb_rows, dim)
        first, last = 0 in idx, n - 1 in idx
        rows = []
        with em.Counter(stages, count="every") as c:
            for _ in range(n_steps + 1):  # the first step: warm-up
                args = (x,) if first else ()
                kwargs = {"target": x, "losses": []} if last else {}
                sched.step(*args, **kwargs)
                dist.barrier()
                rows.append(c.step())
        measured = rows[1:]
        per_stage = c.stage_steps
        per_stage = per_stage[per_stage["step"] > 0]
        out.append({
            "schedule": name, "m": m, "stages": idx,
            "bubble": [r["bubble_fraction"] for r in measured],
            "peer_wait": [r["peer_wait_s"] / r["wall_s"] for r in measured],
            "other_idle": [r["other_idle_s"] / r["wall_s"] for r in measured],
            "idle": [r["idle_s"] for r in measured],
            "wall_s": [r["wall_s"] for r in measured],
            "stage_steps": per_stage.to_dict("list"),
            "p2p_ops": sorted(op for op in c.report.by_collective().index),
        })
    return {"configs": out}


SCENARIOS = {"collectives": collectives, "ddp": ddp, "fail": fail, "hang": hang,
             "pipeline": pipeline, "pipeline_multi": pipeline_multi}


def main():
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    timeout = float(os.environ.get("EM_PG_TIMEOUT", "20"))
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout))
    results = {}
    try:
        for name in sys.argv[1:]:
            results[name] = SCENARIOS[name](rank, world)
        with open(os.path.join(os.environ["EM_OUT"], f"rank{rank}.json"), "w") as f:
            json.dump(results, f, default=str)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
