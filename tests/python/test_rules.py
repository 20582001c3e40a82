"""User-registered rules (em.register_rule, the C++ register_rule), em.rules(), coverage."""
import threading
import time
import warnings

import numpy as np
import pytest
import torch

import effmetrics as em
from effmetrics import _C


@pytest.fixture(scope="module")
def custom_ops():
    """Custom ops whose kernels compute outside ATen (numpy): nothing below them is counted,
    so without a rule they are unsupported."""
    lib = torch.library.Library("em_rules_test", "DEF")
    lib.define("py_mm(Tensor a, Tensor b, float scale=1.0) -> Tensor")
    lib.define("cpp_mm(Tensor a, Tensor b) -> Tensor")
    lib.define("slow(Tensor x) -> Tensor")

    def np_mm(a, b, scale=1.0):
        return torch.from_numpy(a.detach().numpy() @ b.detach().numpy() * scale)

    def slow(x):
        time.sleep(0.02)  # a deliberately slow op without a rule
        return torch.from_numpy(np.tanh(x.numpy()))  # no ATen op inside: call it without grad

    lib.impl("py_mm", np_mm, "CPU")
    lib.impl("cpp_mm", lambda a, b: np_mm(a, b), "CPU")
    lib.impl("slow", slow, "CPU")
    yield torch.ops.em_rules_test
    for op in ("em_rules_test::py_mm", "em_rules_test::cpp_mm", "em_rules_test::slow"):
        em.unregister_rule(op)
    del lib


@pytest.fixture(scope="module")
def kernel_ops():
    """Custom ops that run ATen ops inside: two with a CPU kernel of their own (one computes
    outside ATen, numpy, after checking its input with an ATen sum; one's work is the ATen
    matmul it runs), and a composite (CompositeExplicitAutograd) running the same matmul."""
    lib = torch.library.Library("em_kernel_test", "DEF")
    for op in ("opaque_mm", "aten_mm", "composite_mm"):
        lib.define(f"{op}(Tensor a, Tensor b) -> Tensor")

    def opaque_mm(a, b):
        if not torch.isfinite(a.sum()):
            raise ValueError("a holds inf or nan")
        return torch.from_numpy(a.numpy() @ b.numpy())

    lib.impl("opaque_mm", opaque_mm, "CPU")
    lib.impl("aten_mm", lambda a, b: torch.mm(a, b), "CPU")
    lib.impl("composite_mm", lambda a, b: torch.mm(a, b), "CompositeExplicitAutograd")
    yield torch.ops.em_kernel_test
    for op in ("opaque_mm", "aten_mm", "composite_mm"):
        em.unregister_rule(f"em_kernel_test::{op}")
    del lib


def test_an_op_with_its_own_kernel_is_not_counted_by_the_small_ops_inside_it(kernel_ops):
    """An op with a kernel of its own and no rule is listed even where ATen ops inside it
    counted FLOPs (oneDNN's LSTM adds its biases with aten::add): the ops inside count as
    themselves. A composite op's work is the ops it runs: not listed."""
    m, k, n = 5, 7, 3
    a, b = torch.randn(m, k), torch.randn(k, n)
    rep = em.profile(kernel_ops.opaque_mm, a, b)
    assert rep.unsupported_ops == {"em_kernel_test::opaque_mm": 1}
    ops = rep.by_op()
    assert ops.loc["aten::sum", "flops"] == m * k and ops.loc["aten::isfinite", "flops"] == 1
    assert rep.macs == 0
    # Its kernel's work is the matmul it runs: counted, and listed until registered as such.
    rep = em.profile(kernel_ops.aten_mm, a, b)
    assert rep.unsupported_ops == {"em_kernel_test::aten_mm": 1} and rep.macs == m * k * n
    em.register_rule("em_kernel_test::aten_mm", kind="composite")
    rep = em.profile(kernel_ops.aten_mm, a, b)
    assert rep.unsupported_ops == {} and rep.macs == m * k * n
    table = em.rules().set_index("op")
    assert table.loc["em_kernel_test::aten_mm", "kind"] == "composite"
    rep = em.profile(kernel_ops.composite_mm, a, b)
    assert rep.unsupported_ops == {} and rep.macs == m * k * n


def test_builtin_composites_have_kernels_of_their_own():
    """The table's composite entries are the ops that need one: each has a CPU kernel of its own
    (a composite of other ops is never listed, and needs no entry)."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    table = em.rules()
    composites = table[(table.kind == "composite") & ~table.user].op
    assert len(composites) >= 7
    for op in composites:
        packet = getattr(torch.ops.aten, op.split("::")[1])
        overloads = [op if o == "default" else f"{op}.{o}" for o in packet.overloads()]
        assert any(has(o, "CPU") for o in overloads), op


def test_custom_op_counted_through_a_python_rule(custom_ops):
    m, k, n = 5, 7, 3
    a, b = torch.randn(m, k), torch.randn(k, n)
    before = em.profile(custom_ops.py_mm, a, b)
    assert before.unsupported_ops == {"em_rules_test::py_mm": 1}
    seen = []

    def macs(a, b, scale, outputs):
        seen.append((a, b, scale, outputs))
        return a.shape[0] * a.shape[1] * b.shape[1]

    em.register_rule("em_rules_test::py_mm", macs=macs, formula="A[m,k] @ B[k,n]")
    rep = em.profile(custom_ops.py_mm, a, b, scale=2.0)
    assert rep.unsupported_ops == {}
    assert rep.macs == m * k * n
    assert rep.flops == rep.flops_matmul == 2 * m * k * n
    assert rep.bytes_read == 4 * (m * k + k * n)  # the generic bytes
    assert rep.bytes_written == 4 * m * n
    # What the rule received: TensorArg(shape, dtype) per tensor, scalars as they are.
    (ta, tb, scale, outputs), = seen
    assert ta == em.TensorArg((m, k), torch.float32) and tb.shape == (k, n)
    assert scale == 2.0
    assert outputs == [em.TensorArg((m, n), torch.float32)]
    row = em.rules().set_index("op").loc["em_rules_test::py_mm"]
    assert row["user"] and row["kind"] == "matmul" and row["formula"] == "A[m,k] @ B[k,n]"


def test_custom_op_counted_through_a_cpp_rule(custom_ops):
    m, k, n = 4, 6, 9
    a, b = torch.randn(m, k), torch.randn(k, n)
    _C._register_cpp_test_rule("em_rules_test::cpp_mm")
    rep = em.profile(custom_ops.cpp_mm, a, b)
    assert rep.unsupported_ops == {}
    assert rep.flops == 2 * m * k * n
    assert em.unregister_rule(custom_ops.cpp_mm)  # the op object works as a name too
    assert em.profile(custom_ops.cpp_mm, a, b).unsupported_ops == {"em_rules_test::cpp_mm": 1}


def test_override_a_builtin_rule_and_remove_it():
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    em.register_rule("aten::mm", kind="vector", flops=lambda a, b: 11)
    try:
        rep = em.profile(torch.mm, a, b)
        assert rep.flops == rep.flops_vector == 11
        table = em.rules()
        assert table[(table.op == "aten::mm") & ~table.user]["overridden"].item()
    finally:
        assert em.unregister_rule("aten::mm")
    assert em.profile(torch.mm, a, b).flops == 2 * 3 * 4 * 5
    assert not em.unregister_rule("aten::mm")


def test_memory_rule_and_constant_counts(custom_ops):
    x = torch.randn(8, 8)
    em.register_rule("em_rules_test::slow", kind="memory", bytes_read=100, bytes_written=7)
    try:
        rep = em.profile(custom_ops.slow, x)
        assert rep.unsupported_ops == {}
        assert (rep.flops, rep.bytes_read, rep.bytes_written) == (0, 100, 7)
    finally:
        em.unregister_rule("em_rules_test::slow")


def test_a_failing_rule_warns_and_lists_the_op_unsupported(custom_ops):
    a, b = torch.randn(2, 3), torch.randn(3, 4)

    def broken(a, b, scale):
        raise ValueError("no formula yet")

    em.register_rule("em_rules_test::py_mm", flops=broken, kind="vector")
    with pytest.warns(RuntimeWarning, match="no formula yet"):
        rep = em.profile(custom_ops.py_mm, a, b)
    assert rep.unsupported_ops == {"em_rules_test::py_mm": 1}
    assert "ValueError" in rep.rule_errors["em_rules_test::py_mm"]
    assert rep.bytes_read == 4 * (6 + 12)  # its bytes still counted
    em.register_rule("em_rules_test::py_mm", flops=lambda a, b, s: -1, kind="vector")
    with pytest.warns(RuntimeWarning, match="counts must be >= 0"):
        em.profile(custom_ops.py_mm, a, b)
    em.unregister_rule("em_rules_test::py_mm")


@pytest.mark.parametrize("kwargs, match", [
    ({"op": "py_mm", "macs": 1}, "no namespace"),
    ({"op": "em_rules_test::py_mm.default", "macs": 1}, "overload"),
    ({"op": "em_rules_test::py_mm", "macs": 1, "kind": "sparse"}, "kind must be"),
    ({"op": "em_rules_test::py_mm"}, "give flops= or macs="),
    ({"op": "em_rules_test::py_mm", "macs": "3"}, "an int or a callable"),
    ({"op": "em_rules_test::py_mm", "flops": 1, "kind": "memory"}, "counts no FLOPs"),
    ({"op": "em_rules_test::py_mm", "macs": 1, "kind": "composite"}, "drop macs"),
])
def test_bad_registrations_say_what_to_do(kwargs, match):
    op = kwargs.pop("op")
    with pytest.raises((ValueError, TypeError), match=match):
        em.register_rule(op, **kwargs)


def test_rules_table_is_the_cpp_table():
    table = em.rules()
    assert list(table.columns) == ["op", "kind", "formula", "user", "overridden"]
    builtin = table[~table.user]
    assert len(builtin) > 300 and builtin.op.is_unique
    assert (builtin.formula.str.len() > 0).all()
    sdpa = builtin.set_index("op").loc["aten::_scaled_dot_product_flash_attention_for_cpu"]
    assert sdpa["kind"] == "matmul" and "effective" in sdpa["formula"]


def test_registration_while_a_profile_runs_is_safe(custom_ops):
    """Registering from another thread while a profile runs: no crash; the profile counts the op
    with the rule it met first, and the next profile uses the new rule."""
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    started, done = threading.Event(), threading.Event()

    def register():
        started.wait()
        for _ in range(50):
            em.register_rule("em_rules_test::py_mm", macs=lambda a, b, s: 64)
            em.unregister_rule("em_rules_test::py_mm")
        em.register_rule("em_rules_test::py_mm", macs=lambda a, b, s: 64)
        done.set()

    def model(a, b):
        out = custom_ops.py_mm(a, b)  # the name is resolved here, before any registration
        started.set()
        done.wait(10)
        for _ in range(20):
            out = custom_ops.py_mm(out, b) + torch.mm(a, b)
        return out

    t = threading.Thread(target=register)
    t.start()
    rep = em.profile(model, a, b)
    t.join()
    assert rep.unsupported_ops == {"em_rules_test::py_mm": 21}  # consistent within the profile
    assert em.profile(custom_ops.py_mm, a, b).flops == 128  # in effect for the next one
    em.unregister_rule("em_rules_test::py_mm")


def test_coverage_names_the_unsupported_share(custom_ops, one_thread):
    lin = torch.nn.Linear(64, 64)

    @torch.no_grad()
    def model(x):
        return custom_ops.slow(torch.relu(lin(x)).clone())

    rep = em.profile(model, torch.randn(32, 64), time=True)
    cov = rep.coverage
    assert cov["flop_rule"] + cov["memory_only"] + cov["unsupported"] == pytest.approx(1.0)
    ops = rep.by_op()
    slow_ns = ops.loc["em_rules_test::slow", "time_ns"]
    # The only unsupported op: its share is its own time, less the ops counted inside it (the
    # views its kernel runs), over the counted time, in which each nanosecond counts once.
    assert rep.unsupported_ops == {"em_rules_test::slow": 1}
    total_ns = cov["time_s"] * 1e9
    others_ns = ops[ops.kind != "unsupported"]["time_ns"].sum()
    assert total_ns <= ops["time_ns"].sum() + 1
    assert (slow_ns - others_ns) / total_ns - 1e-9 <= cov["unsupported"] <= slow_ns / total_ns
    assert cov["unsupported"] > 0.5  # it sleeps 20 ms; the rest takes microseconds
    assert cov["memory_only"] > 0  # the clone
    # The first unsupported row of by_op() is the rule worth writing.
    first = ops[ops.kind == "unsupported"].index[0]
    assert first == "em_rules_test::slow"
    assert em.profile(model, torch.randn(32, 64)).coverage is None  # not timed


def test_by_op_ranks_unsupported_ops_by_time(custom_ops, one_thread):
    def model(x):
        y = torch.special.bessel_j0(x)  # unsupported, fast
        return custom_ops.slow(y)  # unsupported, slow

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = em.profile(model, torch.rand(16, 16), time=True)
    ops = rep.by_op()
    unsupported = list(ops[ops.kind == "unsupported"].index)
    assert unsupported == ["em_rules_test::slow", "aten::special_bessel_j0"]
