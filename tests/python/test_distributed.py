"""Collectives, DDP, em.gather and pipeline bubbles with real process groups: 2 processes on
gloo, 1 thread each (distributed_worker.py runs one rank and writes what it measured). Every
expected number is derived here from a formula; the launcher bounds the time of each run and
kills what is left, so a hung rank fails its test instead of the suite."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
from distributed_worker import DDP_MLP, mlp

import effmetrics as em

HERE = os.path.dirname(os.path.abspath(__file__))
WORLD = 2
COMM_TRACK = 0x7FFFFFFF  # the trace's "thread" of the backend works (report.h kCommThread)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(scenarios, tmp_path, timeout=90.0, pg_timeout=20.0, world=WORLD):
    """Runs distributed_worker.py on `world` ranks; returns [(returncode, output, results)].
    A rank still running after `timeout` seconds is killed (with the others) and the run fails
    with every rank's output; once one rank has failed, the others get 30 s to end."""
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   EM_OUT=str(tmp_path), EM_PG_TIMEOUT=str(pg_timeout),
                   PYTHONPATH=os.pathsep.join([os.path.dirname(em.__path__[0]), HERE]))
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(HERE, "distributed_worker.py"), *scenarios],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            failed = any(p.returncode not in (None, 0) for p in procs)
            if failed:
                deadline = min(deadline, time.monotonic() + 30.0)
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.05)
    except TimeoutError:
        outputs = []
        for p in procs:
            p.kill()
            outputs.append(p.communicate()[0])
        raise TimeoutError(f"ranks still running after {timeout:.0f} s, killed; outputs:\n"
                           + "\n".join(o[-2000:] for o in outputs)) from None
    out = []
    for rank, p in enumerate(procs):
        path = os.path.join(tmp_path, f"rank{rank}.json")
        results = json.load(open(path)) if os.path.exists(path) else None
        out.append((p.returncode, p.communicate()[0], results))
    return out


def _ok(runs):
    for rank, (rc, output, _) in enumerate(runs):
        assert rc == 0, f"rank {rank} exited with {rc}:\n{output[-3000:]}"
    return [r for _, _, r in runs]


@pytest.fixture(scope="module")
def dp_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("dp")


@pytest.fixture(scope="module")
def dp_runs(dp_dir):
    return _ok(run_ranks(["collectives", "ddp"], dp_dir))


# ---------------------------------------------------------------- collectives

def test_collective_bytes_and_bus_bytes(dp_runs):
    n = WORLD
    for rank, res in enumerate(dp_runs):
        c = res["collectives"]
        size = c["numel"] * c["itemsize"]  # every collective's tensor: 1000 float32
        # (data size on this rank, nccl-tests' bus bytes factor), written out per op:
        expected = {
            "c10d::allreduce_": (size, 2 * (n - 1) / n),
            "c10d::allgather_": (n * size, (n - 1) / n),  # the whole output
            "c10d::_allgather_base_": (n * size, (n - 1) / n),
            "c10d::_reduce_scatter_base_": (size, (n - 1) / n),  # the whole input
            "c10d::broadcast_": (size, 1.0),
            "c10d::reduce_": (size, 1.0),
            "c10d::alltoall_base_": (size, (n - 1) / n),
            "c10d::barrier": (0, 0.0),
            "c10d::send" if rank == 0 else "c10d::recv_": (size, 1.0),
        }
        rows = c["collectives"]
        assert set(rows) == set(expected)
        for op, (nbytes, factor) in expected.items():
            row = rows[op]
            assert row["calls"] == 1, op
            assert row["group_size"] == n, op
            assert row["bytes"] == nbytes, op
            assert row["bus_bytes"] == int(nbytes * factor), op
            assert row["time_s"] > 0, op  # each backend work was matched to its collective
        assert c["comm_bytes"] == sum(b for b, _ in expected.values())
        # no FLOPs, never unsupported
        assert c["flops"] == 0
        assert not any(op.startswith(("c10d::", "gloo:")) for op in c["unsupported"])
        # one collective at a time, waited for, nothing else running meanwhile: the time is
        # exposed, up to the tensor allocations between them
        assert c["exposed_comm_s"] <= c["comm_time_s"] + 1e-4
        assert c["exposed_comm_s"] >= 0.5 * c["comm_time_s"]


def test_overlapping_collectives_each_timed(dp_runs):
    """Two all-reduces in flight at once: each its own time; exposed at most their union."""
    for res in dp_runs:
        o = res["collectives"]["overlapping"]
        assert o["calls"] == 2
        assert o["bytes"] == 2 * res["collectives"]["numel"] * 4
        assert 0 < o["exposed_comm_s"] <= min(o["comm_time_s"], o["wall_s"]) + 1e-4


def test_ddp_allreduce_bytes_flops_and_phase(dp_runs):
    model = mlp(**DDP_MLP)
    grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    n_grads = sum(p.numel() for p in model.parameters())
    rows, cols = dp_runs[0]["ddp"]["batch"]
    single = em.profile(model, torch.randn(rows, cols), backward=True).flops
    for res in dp_runs:
        d = res["ddp"]
        coll = d["by_collective"]
        steps = len(d["steps"]["flops"])
        allreduce = coll["c10d::allreduce_"]
        assert allreduce["bytes"] == steps * grad_bytes  # the gradients, every step
        assert allreduce["bus_bytes"] == steps * grad_bytes * 2 * (WORLD - 1) // WORLD
        assert allreduce["phase"] == "backward"  # the bucket all-reduces run in backward
        # Besides: DDP's second forward broadcasts its rebuilt bucket layout (forward).
        other = sum(r["bytes"] for op, r in coll.items() if op != "c10d::allreduce_")
        assert all(r["phase"] == "forward" for op, r in coll.items()
                   if op != "c10d::allreduce_")
        per_step = d["steps"]["comm_bytes"]
        assert all(b >= grad_bytes for b in per_step)
        assert sum(per_step) == steps * grad_bytes + other
        # FLOPs per rank = one process on its batch, plus DDP's averaging (the reducer scales
        # each gradient by 1/world as it copies it into its bucket: aten::mul, 1 per element)
        assert d["steps"]["flops"] == [single + n_grads] * steps
        assert d["collective_flops"] == 0
        assert not d["unsupported"]
        exposed, comm = d["steps"]["exposed_comm_s"], d["steps"]["comm_time_s"]
        assert sum(exposed) <= sum(comm) + 1e-4


# ---------------------------------------------------------------- em.gather

def test_gather_one_row_per_rank(dp_runs):
    g = dp_runs[0]["ddp"]["gather"]
    assert dp_runs[1]["ddp"]["gather"] is None  # not the destination
    rows, attrs = g["rows"], g["attrs"]
    assert list(rows) == list(em.distributed.GATHER_COLUMNS)
    assert rows["rank"] == [0, 1]
    assert rows["steps"] == [3, 3]
    for rank in range(WORLD):  # each rank's own figures, as it measured them
        mine = dp_runs[rank]["ddp"]["steps"]
        assert rows["flops"][rank] == sum(mine["flops"])
        assert rows["comm_time_s"][rank] == pytest.approx(sum(mine["comm_time_s"]))
    times = rows["step_time_median"]
    assert attrs["world_size"] == WORLD
    assert attrs["slowest_rank"] == max(range(WORLD), key=lambda r: times[r])
    assert attrs["spread"] == pytest.approx(max(times) / (sum(times) / 2))  # median of 2


def test_gather_merges_the_ranks_traces(dp_runs, dp_dir):
    with open(dp_dir / "merged_trace.json") as f:
        events = json.load(f)["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e["name"] == "process_name"}
    assert names[0] == "rank 0 host" and names[2] == "rank 1 host"
    assert names[1].startswith("rank 0 device") and names[3].startswith("rank 1 device")
    spans = [e for e in events if e.get("ph") == "X"]
    for rank in range(WORLD):  # each rank's events, all of them, in its own process
        mine = [e for e in spans if e["pid"] == 2 * rank]
        assert len(mine) == dp_runs[rank]["collectives"]["trace_events"]
        assert any(e["name"] == "c10d::barrier" for e in mine)
        # the barrier's backend work on the communication track, with its name
        comm = [e for e in mine if e["tid"] == COMM_TRACK]
        assert [e["name"] for e in comm] == ["c10d::barrier"]
        assert any(e.get("ph") == "M" and e["name"] == "thread_name" and e["pid"] == 2 * rank
                   and e["tid"] == COMM_TRACK and e["args"]["name"] == "communication"
                   for e in events)
    # one time line: the earliest rank starts at 0; both ranks profiled the same barrier, so
    # their first events lie within a second of each other on the host's clock
    firsts = [min(e["ts"] for e in spans if e["pid"] == 2 * r) for r in range(WORLD)]
    assert min(firsts) >= 0 and abs(firsts[0] - firsts[1]) < 1e6


def test_gather_errors_and_one_process_group(tmp_path):
    with pytest.raises(RuntimeError, match="init_process_group"):
        em.gather(em.profile(torch.nn.Linear(2, 2), torch.randn(1, 2)))
    dist.init_process_group("gloo", rank=0, world_size=1,
                            init_method=f"file://{tmp_path / 'store'}")
    try:
        rep = em.profile(torch.nn.Linear(4, 3), torch.randn(2, 4), time=True)
        df = em.gather(rep)
        assert df["rank"].tolist() == [0]
        assert df["flops"].tolist() == [2 * 2 * 4 * 3]  # addmm 2mkn (its bias is not counted)
        assert df.attrs["spread"] == 1.0 and df.attrs["slowest_rank"] == 0
        with pytest.raises(TypeError, match="em.Counter"):
            em.gather(42)
        with pytest.raises(ValueError, match="dst"):
            em.gather(rep, dst=1)
        with pytest.raises(ValueError, match="trace=True"):
            em.gather(rep, trace=str(tmp_path / "t.json"))
        traced = em.profile(torch.nn.Linear(4, 3), torch.randn(2, 4), trace=True)
        em.gather(traced, trace=str(tmp_path / "t.json"))
        with open(tmp_path / "t.json") as f:
            events = json.load(f)["traceEvents"]
        assert sum(e.get("ph") == "X" for e in events) == sum(
            e.get("ph") == "X" for e in json.loads(traced._raw.to_chrome_trace())["traceEvents"])
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- failures

def test_a_failing_rank_fails_the_others_in_bounded_time(tmp_path):
    t0 = time.monotonic()
    (rc0, _, res0), (rc1, out1, _) = run_ranks(["fail"], tmp_path, timeout=60, pg_timeout=10)
    assert rc1 != 0 and "rank 1 fails on purpose" in out1
    err = res0["fail"]["error"]  # rank 0 saw its all-reduce fail, did not hang
    assert err is not None and "RuntimeError" in err
    assert res0["fail"]["after_s"] < 10  # before the process group's timeout
    assert time.monotonic() - t0 < 60


def test_a_hung_rank_is_killed(tmp_path):
    with pytest.raises(TimeoutError, match="killed"):
        run_ranks(["hang"], tmp_path, timeout=3, pg_timeout=60)


# ---------------------------------------------------------------- pipelines

def test_pipeline_bubble_formula():
    """The bubble played out from each schedule's action lists (F, I, W one unit each, B = 2)
    against the closed forms, derived here."""
    from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe

    for p, m in [(2, 1), (2, 8), (4, 4), (8, 32)]:
        expected = (p - 1) / (m + p - 1)
        assert em.pipeline_bubble("gpipe", p, m) == pytest.approx(expected)
        assert em.pipeline_bubble(Schedule1F1B, p, m) == pytest.approx(expected)
        assert em.pipeline_bubble(ScheduleGPipe, p, m) == pytest.approx(expected)
        assert em.pipeline_bubble("1f1b", p, m) == pytest.approx(expected)
        # equal stages: any cost of forward and backward gives the same fraction
        assert em.pipeline_bubble("gpipe", p, m, costs={"F": 3, "I": 2, "W": 0}) == \
            pytest.approx(expected)


def test_pipeline_bubble_interleaved_1f1b():
    """Interleaved 1F1B (Narayanan et al. 2021) with v stages per rank: the fill and drain
    shrink to (p-1)/v microbatches' time: (p-1)/(v m + p - 1), m a multiple of p. Looped BFS
    (every microbatch through a rank's first stage, then its next) fills and drains the
    same."""
    from torch.distributed.pipelining import ScheduleInterleaved1F1B, ScheduleLoopedBFS

    for p, v, m in [(2, 2, 2), (2, 2, 8), (4, 2, 4), (4, 2, 8), (2, 3, 6), (4, 4, 8), (3, 2, 6)]:
        expected = (p - 1) / (v * m + p - 1)
        assert em.pipeline_bubble(ScheduleInterleaved1F1B, p * v, m, stages_per_rank=v) == \
            pytest.approx(expected), (p, v, m)
        assert em.pipeline_bubble(ScheduleLoopedBFS, p * v, m, stages_per_rank=v) == \
            pytest.approx(expected), (p, v, m)
    # the default: 2 stages per rank
    assert em.pipeline_bubble("interleaved_1f1b", 4, 4) == pytest.approx(1 / (2 * 4 + 1))


ZERO_BUBBLE = ("ScheduleInterleavedZeroBubble", "ScheduleZBVZeroBubble", "ScheduleDualPipeV")


def test_pipeline_bubble_zero_bubble_schedules():
    """F, I, W one unit each, 2 stages per rank: the last rank cannot start before the first
    forward has gone through the p-1 stages before it (p-1 units), and holds 3 v m units of
    work; the zero-bubble schedules idle nothing else once m >= 2p: (p-1)/(3 v m + p - 1)."""
    import torch.distributed.pipelining as pp

    present = [name for name in ZERO_BUBBLE if hasattr(pp, name)]
    assert present  # torch 2.13 has all three
    v = 2
    for name in present:
        for p, m in [(2, 4), (2, 8), (3, 6), (4, 8), (4, 16)]:
            expected = (p - 1) / (3 * v * m + p - 1)
            assert em.pipeline_bubble(getattr(pp, name), v * p, m) == pytest.approx(expected), \
                (name, p, m)
    if "ScheduleZBVZeroBubble" in present:
        # A small case by hand: 2 ranks, V placement (rank 0: stages 0 and 3, rank 1: 1 and 2),
        # m = 2, torch's order (unit steps, [start, end)):
        #   rank 0: 0F0 [0,1] 0F1 [1,2] 3F0 [3,4] (after 2F0) 3I0 [4,5] 3W0 [5,6] 3F1 [6,7]
        #           (after 2F1) 3I1 [7,8] 3W1 [8,9] 0I0 [9,10] (1I0 ended at 8) 0W0 [10,11]
        #           0I1 [12,13] (after 1I1) 0W1 [13,14]
        #   rank 1: 1F0 [1,2] 2F0 [2,3] 1F1 [3,4] 2F1 [4,5] 2I0 [5,6] (after 3I0) 2W0 [6,7]
        #           1I0 [7,8] 1W0 [8,9] 2I1 [9,10] (after 3I1) 2W1 [10,11] 1I1 [11,12] 1W1 [12,13]
        # 12 units of work in a 14-unit step: 2/14 idle.
        assert em.pipeline_bubble("zbv_zero_bubble", 4, 2) == pytest.approx(2 / 14)


def test_pipeline_bubble_errors():
    with pytest.raises(ValueError, match="unknown schedule 'interleaved'.*'gpipe'"):
        em.pipeline_bubble("interleaved", 2, 4)
    with pytest.raises(ValueError, match="microbatches"):
        em.pipeline_bubble("1f1b", 2, 0)
    with pytest.raises(ValueError, match="one stage per rank"):
        em.pipeline_bubble("gpipe", 4, 4, stages_per_rank=2)
    with pytest.raises(ValueError, match="multiple of stages_per_rank"):
        em.pipeline_bubble("interleaved1f1b", 5, 4)
    with pytest.raises(ValueError, match="costs"):
        em.pipeline_bubble("gpipe", 2, 4, costs={"B": 2})
    import torch.distributed.pipelining as pp

    if hasattr(pp, "ScheduleDualPipeV"):  # torch's own constraint, with what was asked
        with pytest.raises(ValueError, match="DualPipeV with 4 stages on 2 ranks, 2 micro"):
            em.pipeline_bubble("dualpipev", 4, 2)


def test_counter_takes_pipeline_stages_only():
    with pytest.raises(TypeError, match="pipelining stage"):
        em.Counter([torch.nn.Linear(2, 2)])
    assert em.Counter(torch.nn.Linear(2, 2)).stage_steps.empty


@pytest.fixture(scope="module")
def pipe_runs(tmp_path_factory):
    return _ok(run_ranks(["pipeline"], tmp_path_factory.mktemp("pipe"), timeout=120))


def _median(xs):
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2


def test_pipeline_bubbles_match_theory(pipe_runs):
    """Equal stages (each microbatch: two 12 ms holds forward, 24 ms backward): every stage's
    measured bubble within 0.1 of (p-1)/(m+p-1), decreasing with m."""
    p = WORLD
    for rank, res in enumerate(pipe_runs):
        by = {}
        for c in res["pipeline"]["configs"]:
            assert {"c10d::send", "c10d::recv_"} <= set(c["p2p_ops"])
            if c["layers"][0] != c["layers"][1]:
                continue
            measured = _median(c["bubble"])
            theory = (p - 1) / (c["m"] + p - 1)
            assert abs(measured - theory) <= 0.1, (rank, c["schedule"], c["m"], c["bubble"])
            by.setdefault(c["schedule"], []).append((c["m"], measured))
        for schedule, points in by.items():
            bubbles = [b for _, b in sorted(points)]
            assert bubbles == sorted(bubbles, reverse=True), (rank, schedule, points)
        assert sorted(by) == ["1f1b", "gpipe"]


def gpipe_bubbles(f, b, m):
    """Each stage's bubble in a 2-stage GPipe step, stage k taking f[k] forward and b[k]
    backward per microbatch: the schedule played out (every forward, then every backward)."""
    F0 = [(i + 1) * f[0] for i in range(m)]
    F1 = []
    for i in range(m):
        F1.append(max(F0[i], F1[-1] if F1 else 0.0) + f[1])
    B1 = []
    for _ in range(m):
        B1.append((B1[-1] if B1 else F1[-1]) + b[1])
    B0 = []
    for i in range(m):
        B0.append(max(B1[i], B0[-1] if B0 else F0[-1]) + b[0])
    total = B0[-1]
    return [(total - m * (f[k] + b[k])) / total for k in (0, 1)]


def test_imbalanced_pipeline_fast_stage_idles_more(pipe_runs):
    """Stage 0 twice as long as stage 1: the fast stage waits for the slow one."""
    imbalanced = [[c for c in res["pipeline"]["configs"] if c["layers"][0] != c["layers"][1]][0]
                  for res in pipe_runs]
    c = imbalanced[0]
    assert c["schedule"] == "gpipe" and c["layers"] == [2 * c["layers"][1], c["layers"][1]]
    slow, fast = (_median(c["bubble"]) for c in imbalanced)
    assert fast > slow + 0.2
    # backward = 2 x forward; stage 0 = 2 x stage 1
    expected = gpipe_bubbles(f=[2.0, 1.0], b=[4.0, 2.0], m=c["m"])
    assert abs(slow - expected[0]) <= 0.1 and abs(fast - expected[1]) <= 0.1, (slow, fast)


def test_gpipe_bubbles_reduce_to_the_formula_for_equal_stages():
    for m in (1, 2, 4, 8):
        assert gpipe_bubbles([1.0, 1.0], [2.0, 2.0], m) == pytest.approx([1 / (m + 1)] * 2)


# ---------------------------------------------------------------- 2 stages per rank

@pytest.fixture(scope="module")
def multi_runs(tmp_path_factory):
    return _ok(run_ranks(["pipeline_multi"], tmp_path_factory.mktemp("multi"), timeout=120))


HOLD_S = 0.012  # distributed_worker.stage_module's hold: 12 ms forward, twice that backward


def test_interleaved_1f1b_bubbles_match_theory(multi_runs):
    """2 ranks x 2 stages of equal cost (interleaved 1F1B): each rank's measured bubble within
    0.1 of (p-1)/(v m + p - 1), decreasing with m; each stage's actions timed."""
    p, v = WORLD, 2
    for rank, res in enumerate(multi_runs):
        points = []
        for c in res["pipeline_multi"]["configs"]:
            if c["schedule"] != "ScheduleInterleaved1F1B":
                continue
            m = c["m"]
            assert c["stages"] == [rank, rank + p]
            assert {"c10d::send", "c10d::recv_"} <= set(c["p2p_ops"])
            measured = _median(c["bubble"])
            theory = (p - 1) / (v * m + p - 1)
            assert abs(measured - theory) <= 0.1, (rank, m, c["bubble"])
            points.append((m, measured))
            ss = c["stage_steps"]
            steps = len(c["bubble"])
            assert ss["stage"] == c["stages"] * steps  # one row per stage and step
            assert ss["actions"] == [2 * m] * (v * steps)  # m forwards, m backwards
            assert ss["weight_s"] == [0.0] * (v * steps)  # no split backward
            assert all(f >= m * HOLD_S for f in ss["forward_s"])
            assert all(b >= m * 2 * HOLD_S for b in ss["backward_s"])
            for k in range(steps):  # the rank's idle: at least the step less its actions
                busy = sum(ss["busy_s"][v * k:v * k + v])
                assert busy <= c["wall_s"][k]
                assert c["idle"][k] >= c["wall_s"][k] - busy - 1e-3
                assert c["peer_wait"][k] + c["other_idle"][k] == pytest.approx(c["bubble"][k])
        bubbles = [b for _, b in sorted(points)]
        assert len(bubbles) == 3 and bubbles == sorted(bubbles, reverse=True), (rank, points)


def test_zero_bubble_schedules_run_under_a_counter(multi_runs):
    """The zero-bubble schedules torch has, 2 ranks x 2 stages, m = 4: every stage's
    microbatches each get one forward and one backward (whole, or split in I and W), timed; the
    rank's idle splits into peer wait and the rest. (Their bubble with these stages is not
    the unit-cost theory's: the hold is all input gradient, the W halves are nearly empty;
    the first stage has no input gradient, its W runs its whole backward.)"""
    import torch.distributed.pipelining as pp

    present = [name for name in ZERO_BUBBLE if hasattr(pp, name)]
    for res in multi_runs:
        configs = {c["schedule"]: c for c in res["pipeline_multi"]["configs"]}
        assert sorted(n for n in configs if n in ZERO_BUBBLE) == sorted(present)
        for name in present:
            c, m = configs[name], configs[name]["m"]
            ss = c["stage_steps"]
            for i in range(len(ss["stage"])):
                assert 2 * m <= ss["actions"][i] <= 3 * m, (name, ss)
                assert ss["forward_s"][i] >= m * HOLD_S
                assert ss["backward_s"][i] + ss["weight_s"][i] >= m * 2 * HOLD_S
            for k, bubble in enumerate(c["bubble"]):
                assert 0 < bubble < 0.5, (name, c["bubble"])
                assert c["peer_wait"][k] + c["other_idle"][k] == pytest.approx(bubble)
