"""Distributed runs: one row per rank (em.gather). The theoretical pipeline bubble
(em.pipeline_bubble) is in effmetrics.pipeline.

    c = em.Counter(model)            # on every rank, around its training loop
    ...
    df = em.gather(c)                # rank 0: DataFrame, one row per rank; others: None
    df.attrs["slowest_rank"], df.attrs["spread"]

Collectives themselves are counted by the observer like any op (README "Distributed runs").
"""
from __future__ import annotations

import json
import statistics
import time

#: The columns of em.gather's DataFrame, in order.
GATHER_COLUMNS = ("rank", "steps", "step_time_median", "idle_fraction", "bubble_fraction",
                  "comm_time_s", "exposed_comm_s", "peer_wait_s", "flops",
                  "achieved_flops_per_s")

def _row(source) -> dict:
    """This rank's figures from a Counter (its summary and steps) or a Report."""
    from effmetrics.counter import Counter
    from effmetrics.report import Report

    if isinstance(source, Counter):
        s = source.summary()
        flops = sum(r["flops"] for r in source._rows if r["flops"] is not None)
        return {"steps": s["steps"], "step_time_median": s["step_time_median"],
                "idle_fraction": s["idle_fraction"], "bubble_fraction": s["bubble_fraction"],
                "comm_time_s": s["comm_time_s"], "exposed_comm_s": s["exposed_comm_s"],
                "peer_wait_s": s["peer_wait_s"], "flops": flops,
                "achieved_flops_per_s": s["achieved_flops_per_s"]}
    if isinstance(source, Report):
        wall = source.wall_s if source.timed else None
        idle = source.idle_s / wall if wall else None
        return {"steps": 1, "step_time_median": wall, "idle_fraction": idle,
                "bubble_fraction": idle, "comm_time_s": source.comm_time_s if wall else None,
                "exposed_comm_s": source.exposed_comm_s if wall else None,
                "peer_wait_s": source.peer_wait_s if wall else None, "flops": source.flops,
                "achieved_flops_per_s": source.flops / wall if wall else None}
    raise TypeError(f"em.gather() takes an em.Counter (after its `with` block or between steps) "
                    f"or an em.Report; got {type(source).__name__}")


def _trace_part(source) -> dict:
    """This rank's Chrome trace and where it starts on the wall clock, or why there is none."""
    from effmetrics.report import Report

    if not isinstance(source, Report) or not source._raw.has_trace:
        return {"error": "em.gather(..., trace=path) needs every rank's em.Report profiled with "
                         "trace=True (em.profile(..., trace=True))"}
    # The profiler's clock is CLOCK_MONOTONIC (time.monotonic_ns): this rank's offset to the
    # wall clock puts every rank on one time line (as far as the hosts' clocks agree).
    offset = time.time_ns() - time.monotonic_ns()
    return {"events": json.loads(source._raw.to_chrome_trace())["traceEvents"],
            "start_wall_ns": source._raw.start_ns + offset}


def _merge_traces(parts: list, path: str) -> None:
    """One Chrome trace: rank r's host threads as process 2r ("rank r host"), its device
    timeline as process 2r+1, times from the earliest rank's start."""
    t0 = min(p["start_wall_ns"] for p in parts)
    out = []
    for rank, part in enumerate(parts):
        shift_us = (part["start_wall_ns"] - t0) / 1e3
        for e in part["events"]:
            e = dict(e, pid=2 * rank + e.get("pid", 0))
            if e.get("ph") == "M" and e.get("name") == "process_name":
                e["args"] = {"name": f"rank {rank} {e['args']['name']}"}
                out.append({"name": "process_sort_index", "ph": "M", "pid": e["pid"],
                            "args": {"sort_index": e["pid"]}})
            elif "ts" in e:
                e["ts"] = e["ts"] + shift_us
            out.append(e)
    with open(path, "w") as f:
        json.dump({"displayTimeUnit": "ms", "traceEvents": out}, f)


def gather(source, dst: int = 0, trace: str | None = None):
    """Every rank's figures on rank ``dst``: a DataFrame with one row per rank (columns
    GATHER_COLUMNS), the cluster view in ``df.attrs``: ``world_size``, ``slowest_rank`` (the
    largest step_time_median), ``spread`` (max / median of the ranks' step_time_median: 1.0 is
    a balanced run). The other ranks get None. Every rank of the default group must call it
    (it is a collective: torch.distributed.gather_object), with the same ``dst`` and ``trace``.

    source: this rank's em.Counter or em.Report (a Report counts as one step: its wall time).
    trace: a path: rank ``dst`` also writes one Chrome trace of every rank's timeline (each
    rank's report profiled with trace=True), one process per rank, aligned on the wall clock.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "em.gather() needs an initialized torch.distributed default process group: call "
            "torch.distributed.init_process_group(...) first (e.g. in a script run by torchrun)")
    world = dist.get_world_size()
    if not isinstance(dst, int) or not 0 <= dst < world:
        raise ValueError(f"em.gather(dst=...): a rank of the default group, 0..{world - 1}; "
                         f"got {dst!r}")
    row = {"rank": dist.get_rank(), **_row(source)}
    part = _trace_part(source) if trace is not None else None
    rows = [None] * world if dist.get_rank() == dst else None
    dist.gather_object((row, part), rows, dst=dst)
    if part is not None and "error" in part:  # every rank took part before raising
        raise ValueError(part["error"])
    if rows is None:
        return None
    rows, parts = [r for r, _ in rows], [p for _, p in rows]
    if trace is not None:
        missing = [r["rank"] for r, p in zip(rows, parts) if "error" in p]
        if missing:
            raise ValueError(f"ranks {missing}: " + parts[missing[0]]["error"])
        _merge_traces([p for _, p in sorted(zip(rows, parts), key=lambda rp: rp[0]["rank"])],
                      trace)
    import pandas as pd

    df = pd.DataFrame(sorted(rows, key=lambda r: r["rank"]), columns=list(GATHER_COLUMNS))
    times = [t for t in df["step_time_median"] if t is not None]
    df.attrs["world_size"] = world
    if times:
        slowest = max(range(len(df)), key=lambda i: df["step_time_median"].iloc[i] or 0.0)
        df.attrs["slowest_rank"] = int(df["rank"].iloc[slowest])
        median = statistics.median(times)
        df.attrs["spread"] = max(times) / median if median > 0 else None
    else:
        df.attrs["slowest_rank"] = df.attrs["spread"] = None
    return df
