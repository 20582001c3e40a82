"""torch.compile'd models and torch.export programs are counted as their eager selves.

The oracle is the eager count of the same model (itself checked against FlopCounterMode and
published figures elsewhere): field by field, module by module, op by op.
"""
import copy
import warnings

import pandas as pd
import pytest
import torch
from torch import nn

import effmetrics as em
from effmetrics.models import build, example_input
from models import CNN

SWITCH = dict(depth=2, dim=64, heads=2, mlp=128, vocab=500, max_len=16)


def _vit():
    return build("vit-ti/16", depth=2, image=32, patch=8), example_input("vit-ti/16", batch=2,
                                                                          image=32)


def _mlp_gelu():
    return (nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(),
                          nn.Linear(64, 10)), torch.randn(4, 32))


MODELS = {
    "vit": _vit,
    "cnn-batchnorm": lambda: (CNN(), torch.randn(2, 3, 32, 32)),
    "mlp-gelu": _mlp_gelu,
    "switch": lambda: (build("switch-base-8", **SWITCH),
                       example_input("switch-base-8", batch=2, **SWITCH)),
}


class GraphBreak(nn.Module):
    """A forced graph break in the top-level forward and one inside a submodule's forward."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 16)
        self.inner = Inner()
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = self.a(x).relu()
        torch._dynamo.graph_break()
        return self.head(self.inner(x))


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(16, 16)
        self.l2 = nn.Sequential(nn.Linear(16, 16), nn.GELU())

    def forward(self, x):
        x = self.l1(x)
        torch._dynamo.graph_break()
        return self.l2(x).sigmoid() * 2


def assert_same_counts(eager, other):
    """Every count of the two reports is equal: totals, parameters, modules, ops."""
    e, o = eager.to_dict(), other.to_dict()
    assert o["total"] == e["total"]
    assert o["unsupported_ops"] == e["unsupported_ops"]
    for field in ("total", "shared", "trainable", "applied", "touched"):
        assert getattr(other.params, field) == getattr(eager.params, field), field
    pd.testing.assert_frame_equal(other.by_module(), eager.by_module())
    pd.testing.assert_frame_equal(other.ops(), eager.ops())


def profile_both(model, x, backward, compiled=None):
    """The eager and the compiled profile of one model, from the same state."""
    torch.manual_seed(0)
    eager = em.profile(model, x, backward=backward)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    other = em.profile(compiled if compiled is not None else torch.compile(model), x,
                       backward=backward)
    return eager, other


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("name", list(MODELS))
def test_compiled_model_counts_equal_eager(name, backward):
    model, x = MODELS[name]()
    eager, compiled = profile_both(model, x, backward)
    assert_same_counts(eager, compiled)
    assert compiled.flops_vector > 0 and eager.compiles == 0


def test_graph_breaks_count_each_graph_and_the_code_between_once():
    model, x = GraphBreak(), torch.randn(3, 16)
    for backward in (False, True):
        eager, compiled = profile_both(model, x, backward)
        assert_same_counts(eager, compiled)
        if not backward:  # traced here (the backward pass reuses these graphs)
            assert compiled.compiles >= 3  # at least three graphs: the breaks split them


def test_recompiling_is_not_counted_and_a_compiled_model_is_reused():
    class Fresh(nn.Sequential):
        """Dynamo keeps the sizes each code object saw across models: a Sequential compiled
        by an earlier test at another batch size would have made the batch dimension dynamic
        already (no recompile below). This forward's code is compiled here only."""

        def forward(self, x):
            return super().forward(x)

    model, x = Fresh(*_mlp_gelu()[0]), torch.randn(4, 32)
    cm = torch.compile(model)
    first = em.profile(cm, x)
    again = em.profile(cm, x)
    assert again.compiles == 0  # the counting trace is cached with the compiled model
    bigger = em.profile(cm, torch.randn(8, 32))  # a new shape: recompiled inside the call
    assert bigger.compiles >= 1
    assert bigger.flops == 2 * first.flops  # batch 8 vs 4: exactly twice, compile not counted
    assert_same_counts(first, again)


def test_module_compile_in_place_and_compiled_functions():
    model, x = _mlp_gelu()
    eager = em.profile(model, x)
    model.compile()
    assert_same_counts(eager, em.profile(model, x))

    def fn(t):
        return torch.tanh(t @ t.T).sum(-1)

    t = torch.randn(8, 16)
    eager_fn = em.profile(fn, t)
    compiled_fn = em.profile(torch.compile(fn), t)
    assert compiled_fn.to_dict()["total"] == eager_fn.to_dict()["total"]
    pd.testing.assert_frame_equal(compiled_fn.ops(), eager_fn.ops())


def test_compiled_code_inside_a_profiled_function_is_never_a_silent_undercount():
    model, x = _mlp_gelu()
    eager = em.profile(model, x)
    compiled = torch.compile(model)
    compiled(x)

    def step(t):
        return compiled(t).sum()

    with pytest.warns(UserWarning, match=r"em\.profile\(compiled_model"):
        rep = em.profile(step, x)
    regions = {op: n for op, n in rep.unsupported_ops.items()
               if op.startswith("Torch-Compiled Region")}
    assert sum(regions.values()) == 1  # one call of the compiled model, listed, not counted
    assert rep.flops_matmul == eager.flops_matmul  # the extern matmuls are still seen
    assert rep.flops_vector < eager.flops_vector  # the fused GELUs are not


def test_no_torch_warning_caused_by_effmetrics():
    model, x = _mlp_gelu()
    cm = torch.compile(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        em.profile(cm, x)
        with em.Counter(cm) as c:
            cm(x)
            c.step()
    assert [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)] \
        == []


def test_counter_on_a_compiled_model_counts_its_steps_as_eager():
    model, x = MODELS["cnn-batchnorm"]()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every step the same model

    def loop(m, counter_model):
        with em.Counter(counter_model) as c:
            for _ in range(3):
                m(x).sum().backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                c.step(examples=len(x))
        return c

    eager = loop(model, model)
    cm = torch.compile(model)
    forward = cm.forward
    compiled = loop(cm, cm)
    counts = ["flops", "flops_vector", "flops_backward", "bytes_read", "bytes_written"]
    pd.testing.assert_frame_equal(compiled.steps[counts], eager.steps[counts])
    assert compiled.report.flops == eager.report.flops
    assert cm.forward is forward  # the compiled module runs its own code again after the block


def test_time_is_measured_on_the_compiled_run_and_state_changes_once():
    model, x = MODELS["cnn-batchnorm"]()
    reference = copy.deepcopy(model)
    reference(x).sum().backward()  # what one training step leaves in the model's state
    rep = em.profile(torch.compile(model), x, backward=True, time=True)
    assert rep.compiled and rep.clock == "steady_clock" and rep.wall_s > 0
    assert rep.time_s == rep.wall_s
    assert rep.by_module()["time_s"].isna().all()  # fused kernels: no per-module times
    # counted in one run, timed in another, warmed up in a third: the model saw one step
    torch.testing.assert_close(model.bn.running_mean, reference.bn.running_mean)
    assert model.bn.num_batches_tracked == reference.bn.num_batches_tracked == 1
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)


def test_unpacking_a_tensor_is_traced_as_indexing():
    """Where Dynamo's graph differs from eager Python: `a, b, c = t` is `unbind` in eager code
    (which dispatches one select per slice) and the three selects alone in the captured graph.
    Forward costs are the same (views; one call fewer); backward accumulates the three slices'
    gradients into one: two adds per element of t."""

    class Unpack(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 24)

        def forward(self, x):
            a, b, c = self.proj(x).reshape(-1, 3, 8).permute(1, 0, 2)
            return a * b + c

    model, x = Unpack(), torch.randn(5, 8)
    eager, compiled = profile_both(model, x, backward=False)
    e, c = eager.to_dict()["total"], compiled.to_dict()["total"]
    assert e.pop("calls") - c.pop("calls") == 1  # the unbind
    assert c == e
    eager, compiled = profile_both(model, x, backward=True)
    t_numel = 5 * 24
    assert compiled.flops_backward - eager.flops_backward == 2 * t_numel
    assert compiled.flops_forward == eager.flops_forward


def test_exported_program_counts_on_meta_equal_eager():
    model, x = _vit()
    model.eval()
    ep = torch.export.export(model, (x,))
    rep = em.profile(ep, x)
    meta_model = copy.deepcopy(model).to("meta")
    eager = em.profile(meta_model, x.to("meta"))  # the same kernels' choices: meta both
    assert rep.to_dict()["total"] == eager.to_dict()["total"]
    assert rep.params.total == eager.params.total
    assert rep.params.applied == eager.params.applied
    counted = eager.by_module()
    counted = counted[counted["calls"] > 0]
    cols = ["calls", "flops", "macs", "flops_vector", "bytes_read", "bytes_written",
            "self_flops"]
    pd.testing.assert_frame_equal(rep.by_module().loc[counted.index, cols], counted[cols])
    assert x.device.type == "cpu" and next(ep.module().parameters()).device.type == "cpu"


def test_counts_survive_a_dynamo_reset():
    """torch._dynamo.reset() drops the compile callbacks effmetrics registered (the compiler's
    tracing would be counted as the model's work) and the hooks' hiding from frame
    compilation: both are made again."""
    model, x = _mlp_gelu()
    eager = em.profile(model, x)
    torch._dynamo.reset()
    again = em.profile(torch.compile(model), x)
    assert again.compiles >= 1 and again.unsupported_ops == {}
    assert_same_counts(eager, again)


def test_a_compiled_function_calling_a_profiled_module_traces_its_scoped_forward():
    """During a profile an eager model's modules have the scoped subclass; a compiled function
    that calls one traces that class's forward. Dynamo must see it as traced (no push or pop in
    the graph: no graph break) and reuse the graph at the next profile (no recompile). The
    compiled region is listed, not counted, and the eager module around it keeps its scope."""
    from torch._dynamo.utils import counters

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.sub = nn.Sequential(nn.Linear(8, 8), nn.GELU())
            self.out = nn.Linear(8, 2)

        def forward(self, x):
            return self.out(doubled(self.sub, x))

    @torch.compile(backend="eager")
    def doubled(m, t):
        return m(t) * 2

    net, x = Net(), torch.randn(4, 8)
    counters.clear()
    for _ in range(3):
        with pytest.warns(UserWarning, match="torch.compile'd code ran 1 time"):
            rep = em.profile(net, x)
        assert sum(counters["graph_break"].values()) == 0
        assert counters["stats"]["unique_graphs"] == 1
    assert rep.by_module().loc["out", "flops"] == 2 * 4 * 8 * 2  # 2 * batch * in * out


def test_the_scoped_forward_steps_aside_while_torch_says_it_is_compiling(monkeypatch):
    """torch.compiler's flag (torch.export's non-strict tracing sets it, and is_compiling()
    returns it) makes a module call transparent, as is_compiling() did: its ops go to the
    caller's scope."""
    net, x = nn.Sequential(nn.Linear(4, 4)), torch.randn(2, 4)
    assert em.profile(net, x).by_module().loc["0", "flops"] == 2 * 2 * 4 * 4
    monkeypatch.setattr(torch.compiler, "_is_compiling_flag", True)
    assert torch.compiler.is_compiling()
    flagged = em.profile(net, x).by_module()
    assert "0" not in flagged.index and flagged.loc["", "flops"] == 2 * 2 * 4 * 4
