"""NVTX ranges from Python reach a tool: a subprocess runs with the test injection library
(tests/cpp/nvtx_capture.cpp, built next to the extension) named by NVTX_INJECTION64_PATH."""
import glob
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def capture_lib() -> str:
    found = os.environ.get("EFFMETRICS_NVTX_CAPTURE_LIB") or next(
        iter(sorted(glob.glob(os.path.join(ROOT, "build*", "libeffmetrics_nvtx_capture.so")))),
        None)
    if not found:
        pytest.fail("libeffmetrics_nvtx_capture.so not built: run `make build` (CMake builds it)")
    return found


def run_captured(tmp_path, code: str) -> list:
    out = tmp_path / "nvtx.txt"
    env = dict(os.environ, NVTX_INJECTION64_PATH=capture_lib(), EFFMETRICS_NVTX_CAPTURE=str(out),
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "python"),
                                           os.path.join(ROOT, "tests", "python")]))
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, check=True,
                   timeout=120)
    return out.read_text().splitlines() if out.exists() else []


def balanced(lines) -> bool:
    depth = 0
    for line in lines:
        depth += 1 if line.startswith("push") else -1
        if depth < 0:
            return False
    return depth == 0


def test_module_names_reach_the_tool(tmp_path):
    lines = run_captured(tmp_path, """
        import torch, effmetrics as em
        from models import ViT
        vit = ViT(32, 2, 4, 64, 8, image=32, classes=10)
        em.profile(vit, torch.randn(1, 3, 32, 32), nvtx=True)
        em.profile(vit, torch.randn(1, 3, 32, 32))  # no ranges without nvtx=True
    """)
    pushed = [line[5:] for line in lines if line.startswith("push ")]
    assert pushed[:3] == ["patch_embed", "blocks.0", "blocks.0.norm1"]
    assert pushed.count("blocks.1.fc2") == 1 and "head" in pushed
    assert not any(p.startswith("aten::") for p in pushed)
    assert balanced(lines)


def test_op_and_step_ranges_balanced_when_forward_raises(tmp_path):
    lines = run_captured(tmp_path, """
        import torch, effmetrics as em
        from torch import nn
        class Boom(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(4, 4)
            def forward(self, x):
                self.lin(x)
                torch.cat([x, x[:1]])
                raise ValueError("boom")
        try:
            em.profile(Boom(), torch.randn(2, 4), nvtx=True, nvtx_ops=True)
        except ValueError:
            pass
        lin = nn.Linear(4, 4)
        with em.Counter(lin, nvtx=True) as c:
            for _ in range(2):
                lin(torch.randn(2, 4))
                c.step()
    """)
    pushed = [line[5:] for line in lines if line.startswith("push ")]
    # op ranges carry the input shapes: x [2, 4], weight [4, 4], bias [4]
    assert pushed[0] == "lin" and "aten::linear [2, 4] [4, 4] [4]" in pushed
    assert "aten::cat [2, 4] [1, 4]" in pushed  # a tensor list, element by element
    assert pushed.count("step 0") == 1 and pushed.count("step 1") == 1
    assert "step 2" in pushed  # the range of the step in progress at exit, closed by __exit__
    assert balanced(lines)


def test_named_regions_reach_the_tool(tmp_path):
    """record_function regions (a pipeline schedule names its actions "Forward 3", "Backward
    3") become ranges with nvtx=True, around the module ranges inside them; none without."""
    lines = run_captured(tmp_path, """
        import torch, effmetrics as em
        from torch import nn
        from torch.profiler import record_function
        class Stage(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(4, 4)
            def forward(self, x):
                with record_function("Forward 3"):
                    return self.lin(x)
        stage = Stage()
        em.profile(stage, torch.randn(2, 4), nvtx=True)
        em.profile(stage, torch.randn(2, 4))
    """)
    pushed = [line[5:] for line in lines if line.startswith("push ")]
    assert pushed == ["Forward 3", "lin"]
    assert balanced(lines)


def test_named_region_inside_a_counted_op_reaches_the_tool_on_every_call(tmp_path):
    """An op with a FLOP rule and a Python kernel (a custom op) nests records, which effmetrics
    mutes once it knows the op nests them (Session::mute), and a named region, which it must
    not lose: regions have a callback of their own, never muted. Five calls, five ranges."""
    lines = run_captured(tmp_path, """
        import torch, effmetrics as em
        from torch.profiler import record_function
        lib = torch.library.Library("em_nvtx_test", "DEF")
        lib.define("twice(Tensor x) -> Tensor")
        def twice(x):
            with record_function("inside twice"):
                return (x * 2).sum(0) + x.mean()
        lib.impl("twice", twice, "CPU")
        em.register_rule("em_nvtx_test::twice", kind="vector", flops=lambda x: 3 * x.numel())
        x = torch.randn(4, 4)
        def run():
            for _ in range(5):
                torch.ops.em_nvtx_test.twice(x)
        assert em.profile(run, nvtx=True).flops == 5 * 3 * 16
    """)
    pushed = [line[5:] for line in lines if line.startswith("push ")]
    assert pushed.count("inside twice") == 5
    assert balanced(lines)


def test_pipeline_actions_named_with_their_stage(tmp_path):
    """A Counter on torch.distributed.pipelining stages names each compute action `stage {i}
    {F|B|I|W}{microbatch}`, inside the schedule's own region ("PP:1F0", "Forward 0"): a
    one-rank gloo group, 2 stages under the interleaved zero-bubble schedule (split backward:
    I and W) and 1 stage under GPipe (whole backward B); no ranges without nvtx=True."""
    m = 2
    lines = run_captured(tmp_path, f"""
        import tempfile, torch, torch.distributed as dist, effmetrics as em
        import torch.distributed.pipelining as pp
        dist.init_process_group("gloo", rank=0, world_size=1,
                                init_method="file://" + tempfile.mktemp())
        x = torch.randn(2 * {m}, 4)
        loss = lambda y, t: y.sum()
        stages = [pp.PipelineStage(torch.nn.Linear(4, 4), i, 2, torch.device("cpu"))
                  for i in (0, 1)]
        zb = pp.ScheduleInterleavedZeroBubble(stages, n_microbatches={m}, loss_fn=loss)
        with em.Counter(stages, count="every", nvtx=True) as c:
            zb.step(x, target=x, losses=[])
            c.step()
        one = pp.PipelineStage(torch.nn.Linear(4, 4), 0, 1, torch.device("cpu"))
        gpipe = pp.ScheduleGPipe(one, n_microbatches={m}, loss_fn=loss)
        for nvtx in (True, False):
            with em.Counter(one, count="every", nvtx=nvtx) as c:
                gpipe.step(x, target=x, losses=[])
                c.step()
        dist.destroy_process_group()
    """)
    pushed = [line[5:] for line in lines if line.startswith("push ")]
    named = [p for p in pushed if p.startswith("stage ")]
    zb = {f"stage {s} {kind}{mb}" for s in (0, 1) for kind in "FIW" for mb in range(m)}
    gpipe = [f"stage 0 F{mb}" for mb in range(m)] + [f"stage 0 B{mb}" for mb in range(m)]
    assert sorted(named[:len(zb)]) == sorted(zb)  # each action once
    assert named[len(zb):] == gpipe  # GPipe: every forward, then every backward; once
    for i, name in enumerate(pushed):  # inside the schedule's region for the same action
        if name.startswith("stage "):
            _, s, act = name.split()
            gpipe_region = {"F": "Forward", "B": "Backward"}.get(act[0])
            assert pushed[i - 1] in (f"PP:{s}{act}", f"{gpipe_region} {act[1:]}"), \
                (pushed[i - 1], name)
    # the stages' modules: their range inside the forward action, named by stage
    assert pushed[pushed.index("stage 1 F0") + 1] == "stage1"
    assert balanced(lines)
