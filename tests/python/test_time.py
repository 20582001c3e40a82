"""Measured time next to counts: profile(time=True), the Chrome trace, Counter's idle time."""
import json
import time

import pytest
import torch
from torch import nn

import effmetrics as em
from models import ViT


def test_profile_time_attributes_op_time_to_modules(one_thread):
    vit = ViT(64, 2, 4, 128, 8, image=32, classes=10).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        vit(x)
        t0 = time.perf_counter()
        rep = em.profile(vit, x, time=True)
        outer = time.perf_counter() - t0
    assert rep.timed and not em.profile(vit, x).timed
    # time inside ops <= wall time of the region <= the time around the whole call
    assert 0 < rep.time_s <= rep.wall_s <= outer
    df = rep.by_module()
    assert df["self_time_ns"].sum() == rep.ops()["time_ns"].sum() == df.loc["", "time_ns"]
    blocks = df.loc[["blocks.0", "blocks.1"], "time_s"]
    assert (blocks > 0).all()
    row = df.loc["blocks.0.fc1"]
    assert row["flops_per_s"] == pytest.approx(row["flops"] / row["time_s"])
    assert rep.by_op().loc["aten::addmm", "flops_per_s"] > 0


def test_chrome_trace_has_ops_and_module_spans(tmp_path):
    vit = ViT(32, 2, 4, 64, 8, image=32, classes=10).eval()
    with torch.no_grad():
        rep = em.profile(vit, torch.randn(1, 3, 32, 32), trace=True)
    path = tmp_path / "trace.json"
    rep.to_chrome_trace(str(path))
    events = json.loads(path.read_text())["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M"}
    assert names[0] == "host"
    events = [e for e in events if e["ph"] != "M"]
    assert all(e["ph"] == "X" and e["dur"] >= 0 and e["pid"] == 0 for e in events)
    modules = {e["name"]: e for e in events if e["cat"] == "module"}
    assert {"patch_embed", "blocks.0", "blocks.0.qkv", "blocks.1", "head"} <= set(modules)
    ops = [e for e in events if e["cat"] == "forward"]
    assert sum(e["args"]["flops"] for e in ops) == rep.flops
    qkv = modules["blocks.0.qkv"]
    inside = [e for e in ops if e["args"]["module"] == "blocks.0.qkv"]
    assert inside and all(qkv["ts"] <= e["ts"] and e["ts"] + e["dur"] <= qkv["ts"] + qkv["dur"]
                          + 1e-3 for e in inside)
    with pytest.raises(RuntimeError, match="trace=True"):
        em.profile(vit, torch.randn(1, 3, 32, 32)).to_chrome_trace(str(path))


def _workload():
    """20 matmuls, and how long they take here (a loop then sleeps as long)."""
    a = torch.randn(256, 256)

    def compute():
        for _ in range(20):
            torch.mm(a, a)

    t0 = time.perf_counter()
    compute()
    return compute, time.perf_counter() - t0


def _sleeping_loop(c, compute, busy, steps=4, **step_args):
    """Each step computes, then sleeps about as long (half of it idle). Returns the share of
    the loop's time this test's own clock saw asleep: on a shared machine the matmuls can run
    faster or slower than when `busy` was measured, and the sleep can overrun. Also the rows
    step() returned."""
    slept = total = 0.0
    rows = []
    for _ in range(steps):
        t0 = time.perf_counter()
        compute()
        t1 = time.perf_counter()
        time.sleep(busy)
        t2 = time.perf_counter()
        rows.append(c.step(**step_args))
        slept, total = slept + (t2 - t1), total + (t2 - t0)
    return slept / total, rows


def test_counter_finds_idle_time_when_the_loop_sleeps(one_thread):
    compute, busy = _workload()
    with em.Counter() as c:
        asleep, _ = _sleeping_loop(c, compute, busy, examples=256)
    s = c.summary()
    assert 0.2 < asleep < 0.8  # the loop is what the test means it to be
    assert s["idle_fraction"] == pytest.approx(asleep, abs=0.1), c.steps
    steps = c.steps
    assert (steps["flops"] == 20 * 2 * 256 ** 3).all()
    assert (abs(steps["busy_s"] + steps["idle_s"] - steps["wall_s"]) < 1e-9).all()
    assert s["examples_per_s"] == pytest.approx(4 * 256 / steps["wall_s"].sum())
    assert s["achieved_flops_per_s"] == pytest.approx(steps["flops"].sum() / steps["wall_s"].sum())


def test_counter_without_idle_is_mostly_busy(one_thread):
    # ops large enough (~5 ms each) that Python's gaps between them stay a small share even
    # under load: a 256x64 Linear idled 0.3 of a quiet step here and 0.59 of a loaded one
    lin = nn.Linear(512, 512)
    x = torch.randn(512, 512)
    with em.Counter(lin) as c:
        for _ in range(3):
            lin(x).sum().backward()
            c.step()
    assert c.summary()["idle_fraction"] < 0.5
    assert c.summary()["examples_per_s"] is None


def test_counter_on_the_device_timeline_finds_the_sleep(one_thread, host_timeline):
    compute, busy = _workload()
    with em.Counter() as c:
        asleep, rows = _sleeping_loop(c, compute, busy)
    assert all(row["busy_s"] is not None for row in rows)  # host marks are passed at once
    steps = c.steps
    assert steps["device_wall_s"].notna().all()
    assert (abs(steps["busy_s"] + steps["idle_s"] - steps["device_wall_s"]) < 1e-9).all()
    # the device's time per step is the host's step time less the Counter's own work
    assert (steps["device_wall_s"] <= steps["wall_s"] * 1.05).all()
    assert c.summary()["idle_fraction"] == pytest.approx(asleep, abs=0.1), steps


def test_profile_time_on_the_device_timeline(one_thread, host_timeline):
    vit = ViT(64, 2, 4, 128, 8, image=32, classes=10).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        vit(x)
        rep = em.profile(vit, x, time=True)
        detailed = em.profile(vit, x, time=True, time_ops=True)
    assert rep.clock == "steady_clock" and rep.timed
    assert 0 < rep.busy_s <= rep.wall_s and rep.idle_s == pytest.approx(rep.wall_s - rep.busy_s)
    df = rep.by_module()
    assert (df.loc[["blocks.0", "blocks.1", "head"], "time_s"] > 0).all()
    # module times are the spans of the outermost ops: they add up to the busy time
    assert df["self_time_ns"].sum() == df.loc["", "time_ns"] == rep._raw.busy_ns
    assert rep.by_op()["time_s"].isna().all()  # per-op times need time_ops: NaN, not 0
    ops = detailed.by_op()
    assert ops.loc["aten::addmm", "time_s"] > 0
    # counted ops never nest, and each lies inside an outermost op's span
    assert ops["time_ns"].sum() <= detailed.busy_s * 1e9


def test_counter_reused_starts_a_new_run(host_timeline):
    lin = nn.Linear(32, 32)
    x = torch.randn(4, 32)
    c = em.Counter(lin, count="every")
    for _ in range(2):
        with c:
            for _ in range(3):
                lin(x)
                c.step()
        steps = c.steps
        assert len(steps) == 3 and (steps["flops"] == 2 * 4 * 32 * 32).all()
        assert steps["busy_s"].notna().all()
