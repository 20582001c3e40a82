"""The Python API: calling convention, errors, exception safety, nesting, Counter, output."""
import abc
import copy
import io
import json
import math
import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import effmetrics as em
from effmetrics import _C
from models import CNN, MLP, ViT


def linear_macs(batch, fan_in, fan_out):
    return batch * fan_in * fan_out


def global_hooks():
    m = torch.nn.modules.module
    return len(m._global_forward_pre_hooks) + len(m._global_forward_hooks)


# ---------------------------------------------------------------- calling convention

def test_args_kwargs_and_dicts_reach_the_model_unchanged():
    seen = {}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, batch, *, scale, mode="a"):
            seen.update(batch=batch, scale=scale, mode=mode)
            return self.lin(batch["x"]) * scale

    x = torch.randn(2, 4)
    batch = {"x": x, "meta": "keep"}
    rep = em.profile(Net(), batch, scale=2.0, mode="b")
    assert seen["batch"] is batch and seen["scale"] == 2.0 and seen["mode"] == "b"
    assert rep.macs_matmul == linear_macs(2, 4, 3)


def test_plain_function_is_profiled():
    a, b = torch.randn(5, 6), torch.randn(6, 7)
    rep = em.profile(torch.mm, a, b)
    assert rep.macs == 5 * 6 * 7 and rep.params is None


# ---------------------------------------------------------------- counting conventions

def test_bytes_of_a_linear_layer():
    lin = nn.Linear(16, 32)
    x = torch.randn(4, 16)
    rep = em.profile(lin, x)
    row = rep.by_op().loc["aten::addmm"]
    # reads input, weight, bias once each; writes the output (fp32)
    assert row["bytes_read"] == 4 * (4 * 16 + 32 * 16 + 32)
    assert row["bytes_written"] == 4 * (4 * 32)
    moved = 4 * (4 * 16 + 32 * 16 + 32 + 4 * 32)
    assert row["intensity"] == pytest.approx(2 * 4 * 16 * 32 / moved)
    # views (the weight's transpose) move nothing: all bytes are addmm's
    views = rep.ops().query("kind == 'view'")
    assert len(views) > 0 and views["bytes_read"].sum() == views["bytes_written"].sum() == 0
    assert rep.bytes_read == row["bytes_read"]


def test_vector_flops_by_formula():
    x = torch.randn(8, 32)
    ln = nn.LayerNorm(32)
    assert em.profile(ln, x).flops_vector == 8 * 32 * (5 + 2)
    assert em.profile(lambda t: torch.softmax(t, -1), x).flops == 5 * 8 * 32
    assert em.profile(torch.relu, x).flops == 8 * 32
    assert em.profile(lambda t: t.sum(), x).flops == 8 * 32
    pool = em.profile(lambda t: torch.nn.functional.max_pool2d(t, 3, stride=1),
                      torch.randn(1, 2, 6, 6))
    assert pool.flops == 2 * 4 * 4 * 9


def test_backward_flops_and_attribution():
    mlp = MLP()
    x = torch.randn(8, 32)
    rep = em.profile(mlp, x, backward=True)
    fwd = sum(linear_macs(8, i, o) for i, o in ((32, 64), (64, 64), (64, 10)))
    # grad_input for layers 2 and 3 (x needs no grad), grad_weight for all three
    bwd = 2 * fwd - linear_macs(8, 32, 64)
    ops = rep.ops()
    assert ops.query("kind == 'matmul' and phase == 'forward'")["macs"].sum() == fwd
    assert ops.query("kind == 'matmul' and phase == 'backward'")["macs"].sum() == bwd
    by_mod = rep.by_module()
    assert by_mod.loc["net.2", "macs_matmul"] == 3 * linear_macs(8, 64, 64)
    assert by_mod.loc["net.0", "macs_matmul"] == 2 * linear_macs(8, 32, 64)
    assert rep.flops == rep.flops_forward + rep.flops_backward


def test_module_totals_are_inclusive_with_self_columns():
    vit = ViT(32, 2, 4, 64, 8, image=32, classes=10)
    rep = em.profile(vit, torch.randn(1, 3, 32, 32))
    df = rep.by_module()
    block = df.loc["blocks.0"]
    children = df[df.index.str.startswith("blocks.0.")]
    assert block["flops"] == block["self_flops"] + children["self_flops"].sum()
    assert df.loc["", "flops"] == rep.flops == df["self_flops"].sum()


def test_counts_on_meta_equal_counts_on_cpu():
    cpu = CNN().eval()
    meta = CNN().to("meta").eval()
    rc = em.profile(cpu, torch.randn(2, 3, 32, 32))
    rm = em.profile(meta, torch.randn(2, 3, 32, 32, device="meta"))
    assert rc.flops_matmul == rm.flops_matmul
    assert rc.params.total == rm.params.total


@pytest.fixture(scope="module")
def mystery_op():
    # A custom op whose kernel computes outside ATen (numpy): no rule, no FLOPs below it.
    lib = torch.library.Library("effmetrics_test", "DEF")
    lib.define("mystery(Tensor x) -> Tensor")
    lib.impl("mystery", lambda x: torch.from_numpy(np.tanh(x.numpy())), "CPU")
    yield torch.ops.effmetrics_test.mystery
    del lib


def test_unsupported_ops_are_listed_with_calls(mystery_op):
    x = torch.randn(3, 4)
    rep = em.profile(lambda t: torch.relu(mystery_op(mystery_op(t))), x)
    assert rep.unsupported_ops == {"effmetrics_test::mystery": 2}
    assert rep.by_op().loc["effmetrics_test::mystery", "kind"] == "unsupported"
    assert rep.flops == 3 * 4  # the relu, which has a rule


def test_unsupported_leaf_op_keeps_its_bytes():
    x = torch.rand(3, 4) + 1
    rep = em.profile(torch.special.bessel_j0, x)
    assert rep.unsupported_ops == {"aten::special_bessel_j0": 1}
    row = rep.by_op().loc["aten::special_bessel_j0"]
    assert row["bytes_read"] == 3 * 4 * 4 and row["bytes_written"] == 3 * 4 * 4


def test_weight_norm_pad_splits_and_conjugate_views_have_rules():
    """Ops that popular models run and that were listed unsupported: weight norm (wav2vec2's
    positional conv) and reflection pad backward by their rules' formulas; pad (Swin's windows),
    tensor_split (Mamba), matrix_H (spectral_norm), diag_embed and meshgrid, whose work is
    their bytes."""
    lin = torch.nn.utils.parametrizations.weight_norm(nn.Linear(16, 8))
    rep = em.profile(lin, torch.randn(4, 16), backward=True)
    ops = rep.by_op()
    assert rep.unsupported_ops == {}
    assert ops.loc["aten::_weight_norm_interface", "flops"] == 3 * 8 * 16  # 3 * numel(v)
    assert ops.loc["aten::_weight_norm_interface_backward", "flops"] == 5 * 8 * 16
    x = torch.randn(2, 3, 5, 5)
    rep = em.profile(lambda t: torch.nn.functional.pad(t, (1, 1, 2, 2)), x)
    assert rep.unsupported_ops == {} and rep.flops == 0
    # constant_pad_nd fills the padded output, then copies the input into its interior
    assert rep.bytes_written == (2 * 3 * 9 * 7 + x.numel()) * 4
    assert rep.bytes_read == x.numel() * 4
    rep = em.profile(lambda t: [c.sum() for c in torch.tensor_split(t, 3, dim=2)], x)
    assert rep.unsupported_ops == {} and rep.flops == x.numel()  # the sums, 1 per element
    rep = em.profile(lambda t: t.H @ t, torch.randn(4, 3))  # .H runs aten::matrix_H
    assert rep.unsupported_ops == {} and rep.macs == 3 * 4 * 3
    v = torch.randn(2, 6)
    rep = em.profile(torch.diag_embed, v)
    assert rep.unsupported_ops == {} and rep.flops == 0
    # zeros for the output, then the diagonals copied in
    assert rep.bytes_read == v.numel() * 4 and rep.bytes_written == (2 * 6 * 6 + v.numel()) * 4
    # a reflection pad's backward adds each gradient element into the input's (EnCodec)
    x = torch.randn(2, 3, 16, requires_grad=True)
    rep = em.profile(lambda: torch.nn.functional.pad(x, (3, 3), mode="reflect").sum().backward())
    assert rep.unsupported_ops == {}
    assert rep.by_op().loc["aten::reflection_pad1d_backward", "flops"] == 2 * 3 * 22
    rep = em.profile(lambda: torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij"))
    assert rep.unsupported_ops == {}  # BEiT's relative positions: views
    rep = em.profile(torch.broadcast_tensors, torch.randn(3, 1), torch.randn(1, 4))
    assert rep.unsupported_ops == {} and rep.bytes_read == 0  # views (quantile runs it)


@pytest.mark.parametrize("name,kw,per_element", [
    ("AdamW", {}, 11),  # lerp 2, mul + addcmul 3, sqrt, div, add eps 3, addcdiv 2, decay 1
    ("Adam", {}, 10),
    ("Adam", {"weight_decay": 0.1}, 11),
    ("AdamW", {"amsgrad": True}, 12),
    ("AdamW", {"maximize": True}, 12),
    ("SGD", {}, 1),
    ("SGD", {"momentum": 0.9}, (1, 3)),  # the first step copies the gradient into the buffer
    ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1, "maximize": True}, (4, 6)),
])
def test_a_fused_optimizer_step_counts_as_its_single_tensor_path(name, kw, per_element):
    """fused=True runs one op for every parameter (_fused_adamw_, _fused_sgd_), which was listed
    unsupported, and foreach=True one op for every list (_foreach_lerp_, ...; on CUDA with no ATen
    op below it): each counts what torch's single-tensor path (foreach=False, one op at a time)
    counts, first step and later, and the per-element formula written here. The foreach path
    writes what the single-tensor path writes; the fused one its states in place."""
    firsts, laters = per_element if isinstance(per_element, tuple) else (per_element,) * 2

    def steps(**path):
        torch.manual_seed(0)
        model = nn.Linear(16, 8)
        opt = getattr(torch.optim, name)(model.parameters(), lr=1e-3, **kw, **path)
        reports = []
        for _ in range(2):
            model(torch.randn(4, 16)).sum().backward()
            reports.append(em.profile(opt.step))
        return reports

    n = 16 * 8 + 8
    steps_counted = 0 if name == "SGD" else 2  # Adam's step counters, one add per parameter
    written = {}
    paths = {"single": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    for label, path in paths.items():
        first, later = steps(**path)
        assert first.unsupported_ops == {} and later.unsupported_ops == {}, label
        assert first.flops == firsts * n + steps_counted, label
        assert later.flops == laters * n + steps_counted, label
        written[label] = later.bytes_written
    assert written["foreach"] == written["single"]
    # fused, in place: the parameters, the moments (and the max) or the momentum buffers, in
    # float32, and Adam's step counters
    states = 1 + ({"SGD": "momentum" in kw}.get(name, 2 + kw.get("amsgrad", False)))
    assert written["fused"] == states * n * 4 + 4 * steps_counted


def test_ffts_count_by_fftw_s_convention():
    """5 N log2 N per complex transform of N points, 2.5 N log2 N per real one (FFTW's benchmark
    convention), times the transforms in the batch: FNet, Hyena and spectral convolutions run
    these, which were listed unsupported."""
    x = torch.randn(4, 6, 64)
    rep = em.profile(torch.fft.rfft, x)  # 24 real transforms of 64 points
    assert rep.unsupported_ops == {} and rep.flops == 24 * 2.5 * 64 * math.log2(64)
    z = torch.randn(3, 16, 32, dtype=torch.cfloat)
    rep = em.profile(lambda t: torch.fft.fft2(t), z)  # 3 complex transforms of 16 x 32 points
    assert rep.unsupported_ops == {} and rep.flops == 3 * 5 * 512 * math.log2(512)
    spectrum = torch.fft.rfft(x)
    rep = em.profile(lambda t: torch.fft.irfft(t, n=64), spectrum)  # 64 real points out each
    assert rep.unsupported_ops == {} and rep.flops == 24 * 2.5 * 64 * math.log2(64)


def test_grid_sample_and_cdist_count_by_their_formulas():
    """grid_sample (spatial transformers, deformable attention) interpolates like interpolate:
    2 * taps - 1 per output element (bilinear 4 taps, bicubic 16, nearest none), its backward the
    same per gradient element for each of the input's and the grid's gradients. cdist: per pair
    and coordinate a difference, a power and an add, a root per pair; its backward 4 per pair
    and coordinate. Both were listed unsupported."""
    img = torch.randn(2, 3, 16, 16, requires_grad=True)
    grid = (torch.rand(2, 8, 8, 2) * 2 - 1).requires_grad_()
    out = 2 * 3 * 8 * 8
    for mode, taps in (("bilinear", 4), ("bicubic", 16), ("nearest", 0)):
        rep = em.profile(lambda m=mode: torch.nn.functional.grid_sample(
            img, grid, mode=m, align_corners=False).sum().backward())
        ops = rep.by_op()
        assert rep.unsupported_ops == {}, mode
        forward = (2 * taps - 1) * out if taps else 0
        assert ops.loc["aten::grid_sampler_2d", "flops"] == forward, mode
        assert ops.loc["aten::grid_sampler_2d_backward", "flops"] == 2 * forward, mode
    x1, x2 = torch.randn(2, 5, 7, requires_grad=True), torch.randn(2, 6, 7)
    rep = em.profile(lambda: torch.cdist(x1, x2).sum().backward())
    ops = rep.by_op()
    assert rep.unsupported_ops == {}
    assert ops.loc["aten::_cdist_forward", "flops"] == 2 * 5 * 6 * (3 * 7 + 1)
    assert ops.loc["aten::_cdist_backward", "flops"] == 4 * 2 * 5 * 6 * 7


def test_lapack_factorizations_counted_iterative_ones_listed():
    """LAPACK/cuSOLVER compute outside ATen, with a small ATen op inside (tril, triu, the error
    check's any) whose FLOPs made them look counted. The direct factorizations and solves count
    Golub & Van Loan's leading-order FLOPs (written here); SVD and eigh (iterative) are listed,
    and their small ops count as themselves."""
    n = 16
    a = torch.randn(n, n)
    s = a @ a.T + n * torch.eye(n)
    b = torch.randn(n, 3)

    def op_flops(fn, op):
        rep = em.profile(fn)
        assert rep.unsupported_ops == {}, op
        return rep.by_op().loc[op, "flops"]

    cholesky, lu = n ** 3 // 3, n ** 3 - n ** 3 // 3
    assert op_flops(lambda: torch.linalg.cholesky(s), "aten::linalg_cholesky_ex") == cholesky
    assert op_flops(lambda: torch.linalg.cholesky(s.expand(4, n, n)),
                    "aten::linalg_cholesky_ex") == 4 * cholesky
    assert op_flops(lambda: torch.linalg.lu_factor(a), "aten::linalg_lu_factor_ex") == lu
    wide = torch.randn(10, n)  # k = 10, l = 16: k^2 l - k^3 / 3
    assert op_flops(lambda: torch.linalg.lu_factor(wide), "aten::linalg_lu_factor_ex") == (
        100 * 16 - 1000 // 3)
    # Householder QR of [20, 16]: 2 k^2 (l - k/3), k = 16, l = 20; Q [m, q] from k reflectors:
    # 4 m q k - 2 (m + q) k^2 + 4 k^3 / 3
    tall = torch.randn(20, n)
    factor = 2 * n * n * 20 - 2 * n ** 3 // 3

    def form_q(m, q, k):
        return 4 * m * q * k - 2 * (m + q) * k * k + 4 * k ** 3 // 3

    qr = "aten::linalg_qr"
    assert op_flops(lambda: torch.linalg.qr(tall, mode="r"), qr) == factor
    assert op_flops(lambda: torch.linalg.qr(tall), qr) == factor + form_q(20, n, n)
    assert op_flops(lambda: torch.linalg.qr(tall, mode="complete"), qr) == (
        factor + form_q(20, 20, n))
    # solves with a factored matrix: n^2 per right-hand side and triangle
    assert op_flops(lambda: torch.linalg.solve_triangular(torch.tril(s), b, upper=False),
                    "aten::linalg_solve_triangular") == n * n * 3
    lu_b = torch.linalg.lu_factor(a)
    assert op_flops(lambda: torch.linalg.lu_solve(*lu_b, b), "aten::linalg_lu_solve") == (
        2 * n * n * 3)
    chol = torch.linalg.cholesky(s)
    assert op_flops(lambda: torch.cholesky_solve(b, chol), "aten::cholesky_solve") == 2 * n * n * 3
    # inv: LU, then a solve against the identity's n columns (what LAPACK's getrs does)
    rep = em.profile(lambda: torch.linalg.inv(a))
    assert rep.unsupported_ops == {}
    assert rep.by_op().loc["aten::linalg_lu_solve", "flops"] == 2 * n * n * n
    for op, fn in {"aten::_linalg_svd": lambda: torch.linalg.svd(a),
                   "aten::_linalg_eigh": lambda: torch.linalg.eigh(s)}.items():
        assert em.profile(fn).unsupported_ops == {op: 1}, op


def test_kernels_that_run_their_work_as_aten_ops_are_counted_by_them():
    """The MultiheadAttention and TransformerEncoderLayer fast paths (inference), EmbeddingBag's
    backward and linalg's inv/solve/det run a kernel of their own whose work is the ATen ops it
    runs: counted by them, not listed."""
    torch.manual_seed(0)
    b, s, e, heads, ff = 2, 7, 32, 4, 64
    mha = nn.MultiheadAttention(e, heads, batch_first=True).eval()
    layer = nn.TransformerEncoderLayer(e, heads, ff, batch_first=True).eval()
    x = torch.randn(b, s, e)
    # in-projection (q, k, v), scores and weighted sum (b*heads*s*s*(e/heads) each), out-projection
    attention = b * s * e * 3 * e + 2 * b * s * s * e + b * s * e * e
    with torch.inference_mode():
        rep = em.profile(lambda: mha(x, x, x, need_weights=False))
        assert rep.unsupported_ops == {} and rep.macs == attention
        assert "aten::_transform_bias_rescale_qkv" in rep.by_op().index  # the fast path ran
        rep = em.profile(layer, x)
        assert rep.unsupported_ops == {} and rep.macs == attention + 2 * b * s * e * ff
        assert "aten::_addmm_activation" in rep.by_op().index  # its fused feed-forward
    bag = nn.EmbeddingBag(50, 8, mode="mean")
    rep = em.profile(lambda: bag(torch.randint(0, 50, (4, 6))).sum().backward())
    assert rep.unsupported_ops == {}
    a = torch.randn(6, 6) + 6 * torch.eye(6)
    for fn in (torch.linalg.det, torch.linalg.slogdet, torch.linalg.inv):
        rep = em.profile(fn, a)  # over LU and its solve, both counted
        assert rep.unsupported_ops == {} and rep.by_op().loc[
            "aten::linalg_lu_factor_ex", "flops"] == 6 ** 3 - 6 ** 3 // 3


def test_histograms_binary_searches_and_unique_are_counted():
    """histc (Mixtral's expert counts), searchsorted/bucketize, unique and isin were listed as
    unsupported: counted by the formulas written here (README: the rule table)."""
    x = torch.rand(1000)

    def flops(fn):
        rep = em.profile(fn)
        assert rep.unsupported_ops == {}
        return rep.flops

    # bin index (x - lo) * bins / (hi - lo) and the count: 4 per element; the data's range first
    # when min == max (the default): a min and a max, 2 more
    assert flops(lambda: torch.histc(x, bins=10, min=0, max=1)) == 4 * 1000
    assert flops(lambda: torch.histc(x, bins=10)) == 6 * 1000
    # a binary search per value over m sorted values: ceil(log2(m + 1)) comparisons
    edges = torch.linspace(0, 1, 7)
    assert flops(lambda: torch.bucketize(x, edges)) == 1000 * 3
    assert flops(lambda: torch.searchsorted(edges, x)) == 1000 * 3
    rows, values = torch.rand(4, 15).sort().values, torch.rand(4, 9)
    assert flops(lambda: torch.searchsorted(rows, values)) == 4 * 9 * 4
    # unique sorts (n log2 n) and compares neighbours (n); unique_consecutive compares only
    ints = torch.randint(0, 5, (64,))
    assert flops(lambda: torch.unique(ints)) == 64 * 6 + 64
    assert flops(lambda: torch.unique(ints.view(16, 4), dim=0)) == 64 * 4 + 64
    assert flops(lambda: torch.unique_consecutive(ints)) == 64
    # isin (generate's stopping criteria): each element against each of m test elements while
    # m < 10 * n^0.145 (torch's choice), else sorts: each side's unique, then both together
    elements, test = torch.randperm(1000)[:100], torch.randperm(1000)[:50]
    assert flops(lambda: torch.isin(elements, test[:5])) == 100 * 5
    assert flops(lambda: torch.isin(elements, 3)) == 100
    sort = {n: n * math.ceil(math.log2(n)) + n for n in (50, 100, 150)}
    assert flops(lambda: torch.isin(elements, test)) == sort[150] + sort[100] + sort[50]
    assert flops(lambda: torch.isin(elements, test, assume_unique=True)) == sort[150]


def test_grouped_mm_counts_each_group_s_matmul():
    """torch._grouped_mm (transformers' MoE experts): one kernel on CUDA and on meta, where it
    was listed unsupported and the experts' FLOPs were lost. Each layout counts the matmuls of
    its groups: the formula, and on CPU the mm per group of torch's own fallback (the oracle,
    counted with the op registered as a composite)."""
    bf = torch.bfloat16
    g, m, k, n = 4, 12, 16, 8
    cut = lambda size: torch.arange(1, g + 1, dtype=torch.int32) * (size // g)  # noqa: E731
    cases = {  # name: (a, b, offs, M*K*N per group summed)
        "rows cut": ((m, k), (g, k, n), cut(m), m * k * n),
        "K cut (a weight gradient)": ((m, k), (k, n), cut(k), m * k * n),
        "columns cut": ((g, m, k), (k, n), cut(n), m * k * n),
        "batched": ((g, m, k), (g, k, n), None, g * m * k * n),
    }
    for name, (sa, sb, offs, macs) in cases.items():
        a, b = torch.randn(sa, dtype=bf), torch.randn(sb, dtype=bf)
        rep = em.profile(torch._grouped_mm, a, b, offs)
        assert rep.unsupported_ops == {} and rep.macs == macs, name
        on_meta = [t if t is None else t.to("meta") for t in (a, b, offs)]
        rep = em.profile(torch._grouped_mm, *on_meta)
        assert rep.unsupported_ops == {} and rep.macs == macs, name
        em.register_rule("aten::_grouped_mm", kind="composite")
        try:
            assert em.profile(torch._grouped_mm, a, b, offs).macs == macs, name
        finally:
            em.unregister_rule("aten::_grouped_mm")


def test_packed_weight_matmuls_are_counted():
    """Weight-only quantized matmuls (int8 and int4 packed weights: gpt-fast, torchao) and
    torch.ao's dynamically quantized Linear were listed unsupported: counted from the input
    and the output, M*K*N MACs each."""
    m, k, n = 4, 64, 32
    x = torch.randn(m, k, dtype=torch.bfloat16)
    w8 = torch.randint(-128, 127, (n, k), dtype=torch.int8)
    rep = em.profile(torch._weight_int8pack_mm, x, w8, torch.randn(n, dtype=torch.bfloat16))
    assert rep.unsupported_ops == {} and rep.macs == m * k * n
    w4 = torch._convert_weight_to_int4pack_for_cpu(
        torch.randint(0, 16, (n, k), dtype=torch.int32), 1)
    scales_zeros = torch.randn(k // 32, n, 2, dtype=torch.bfloat16)
    rep = em.profile(torch._weight_int4pack_mm_for_cpu, x, w4, 32, scales_zeros)
    assert rep.unsupported_ops == {} and rep.macs == m * k * n
    quantize_dynamic = getattr(getattr(torch.ao, "quantization", None), "quantize_dynamic", None)
    if quantize_dynamic is None:
        return  # removed from torch (deprecated since 2.10)
    model = nn.Sequential(nn.Linear(k, n), nn.ReLU(), nn.Linear(n, 8))
    rows = 3 * 5
    for dtype in (torch.qint8, torch.float16):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation of torch.ao.quantization
            quantized = quantize_dynamic(model, {nn.Linear}, dtype=dtype)
        rep = em.profile(quantized, torch.randn(3, 5, k))
        assert rep.unsupported_ops == {} and rep.macs == rows * (k * n + n * 8), dtype


def test_small_ops_once_listed_are_counted():
    """polar, renorm, bincount, frexp, normal, the margin losses and rot90 (a composite of
    memory ops: nothing below it counted FLOPs) were listed unsupported: each counted by the
    formula here."""
    v = torch.randn(6, 10)
    ops = lambda fn: em.profile(fn).by_op()  # noqa: E731
    assert ops(lambda: torch.polar(v.abs(), v)).loc["aten::polar", "flops"] == 4 * 60
    assert ops(lambda: torch.renorm(v, 2, 0, 1.0)).loc["aten::renorm", "flops"] == 3 * 60
    counts = torch.randint(0, 10, (6,))
    assert ops(lambda: torch.bincount(counts)).loc["aten::bincount", "flops"] == 6
    frexp = ops(lambda: torch.frexp(v)).loc["aten::frexp"]
    assert frexp["flops"] == 60 and frexp["bytes_read"] == 60 * 4
    assert frexp["bytes_written"] == 60 * 4 + 60 * 4  # mantissa (float), exponent (int32)
    # normal(mean, std): the mean added (the draws are not counted, as for uniform_)
    normal = ops(lambda: torch.normal(torch.zeros(10), 1.0)).loc["aten::normal"]
    assert normal["flops"] == 10 and normal["bytes_written"] == 10 * 4
    # margin losses as the other elementwise losses: 3 per input element, backward 2
    scores = torch.randn(4, 5, requires_grad=True)
    for loss, target in ((F.multi_margin_loss, torch.randint(0, 5, (4,))),
                         (F.multilabel_margin_loss, torch.tensor([[1, 3, -1, 0, 0]] * 4))):
        rep = em.profile(lambda loss=loss, target=target: loss(scores, target).backward())
        assert rep.unsupported_ops == {} and rep.flops_forward == 3 * 20, loss
        assert rep.by_op().filter(like="margin_loss_backward", axis=0)["flops"].sum() == 2 * 20
    x = torch.randn(2, 3, 4, 5)
    rep = em.profile(lambda: torch.rot90(x, 1, (2, 3)))  # a flip and a transpose: one copy
    assert rep.unsupported_ops == {} and rep.flops == 0 and rep.bytes_written == 120 * 4


def test_grad_scaler_steps_are_counted():
    """GradScaler's unscale (one op for every gradient: multiply by the inverse scale, check
    finite: 2 per element) and its scale update (a scalar: bytes) were listed unsupported."""
    model = nn.Linear(16, 8)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(model(torch.randn(4, 16)).sum()).backward()

    def step():
        scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()

    rep = em.profile(step)
    assert rep.unsupported_ops == {}
    ops = rep.by_op()
    assert ops.loc["aten::_amp_foreach_non_finite_check_and_unscale_", "flops"] == 2 * (16 * 8 + 8)
    assert ops.loc["aten::_amp_update_scale_", "flops"] == 0


@pytest.mark.parametrize("case", ["sparse", "complex", "quantized", "nested"])
def test_exotic_tensors_do_not_crash(case):
    if case == "sparse":
        # a dense-shape rule would guess at sparse work: the op is listed instead
        a = torch.randn(4, 5).relu().to_sparse()
        rep = em.profile(torch.sparse.mm, a, torch.randn(5, 3))
        assert rep.flops_matmul == 0 and rep.unsupported_ops
    elif case == "complex":
        a, b = torch.randn(3, 4, dtype=torch.cfloat), torch.randn(4, 2, dtype=torch.cfloat)
        rep = em.profile(torch.mm, a, b)
        assert rep.macs == 3 * 4 * 2
        assert rep.by_op().loc["aten::mm", "bytes_read"] == 8 * (12 + 8)
    elif case == "quantized":
        x = torch.randn(4, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized dtypes are deprecated in recent torch
            rep = em.profile(lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.quint8)
                             .dequantize(), x)
        ops = rep.by_op()
        assert ops.loc["aten::quantize_per_tensor", ["bytes_read", "bytes_written"]].tolist() \
            == [4 * 16, 1 * 16]
        assert ops.loc["aten::dequantize", ["bytes_read", "bytes_written"]].tolist() \
            == [1 * 16, 4 * 16]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the strided nested layout is a prototype
            nt = torch.nested.nested_tensor([torch.randn(2, 3), torch.randn(4, 3)])
        rep = em.profile(lambda t: t * 2 + 1, nt)
        assert rep.unsupported_ops == {"aten::mul": 1, "aten::add": 1}
        assert rep.flops == 0


# ---------------------------------------------------------------- errors

def test_bad_model_names_the_fix():
    with pytest.raises(TypeError, match="torch.nn.Module or a callable"):
        em.profile(42, torch.randn(1))


def test_numpy_input_names_the_fix():
    with pytest.raises(TypeError, match="torch.from_numpy"):
        em.profile(nn.Linear(2, 2), np.zeros((1, 2), dtype=np.float32))


def test_backward_without_grad_names_the_fix():
    lin = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(RuntimeError, match="no grad_fn"):
        em.profile(lin, torch.randn(1, 2), backward=True)
    assert _C.scope_depth() == 0 and global_hooks() == 0


def test_unknown_device_names_the_fix():
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        em.profile(nn.Linear(2, 2), torch.randn(1, 2), device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            em.profile(nn.Linear(2, 2), torch.randn(1, 2), device="cuda")


def test_device_option_moves_model_and_inputs():
    lin = nn.Linear(8, 4)
    rep = em.profile(lin, torch.randn(3, 8), device="meta")
    assert lin.weight.device.type == "meta"
    assert rep.macs == linear_macs(3, 8, 4)


def test_scope_push_and_pop_check_their_argument():
    """_C.push_scope_id and _C.pop_scope (plain CPython calls, run around every module call):
    a pushed name is the current scope, popping an empty stack says so, and a bad id is a clear
    error that pushes nothing."""
    name_id = _C.intern_scope_name("test_api.scope")
    _C.push_scope_id(name_id)
    assert (_C.current_scope_name(), _C.scope_depth()) == ("test_api.scope", 1)
    assert _C.pop_scope() is True and _C.scope_depth() == 0
    assert _C.pop_scope() is False
    with pytest.raises(IndexError, match="no scope name has id"):
        _C.push_scope_id(2**32 - 1)
    with pytest.raises(OverflowError):
        _C.push_scope_id(-1)
    with pytest.raises(OverflowError, match="not a scope name id"):
        _C.push_scope_id(2**32)
    with pytest.raises(TypeError):
        _C.push_scope_id("test_api.scope")
    with pytest.raises(TypeError):
        _C.pop_scope(1)
    assert _C.scope_depth() == 0


def test_exception_in_forward_propagates_and_leaves_nothing_behind():
    class Boom(Exception):
        pass

    err = Boom("inside forward")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            self.lin(x)
            raise err

    net = Net()
    with pytest.raises(Boom) as info:
        em.profile(net, torch.randn(2, 4))
    assert info.value is err
    assert _C.scope_depth() == 0 and global_hooks() == 0 and type(net.lin) is nn.Linear
    assert not torch.autograd.profiler._is_profiler_enabled
    rep = em.profile(nn.Linear(4, 4), torch.randn(2, 4))  # and the next profile is exact
    assert rep.macs == linear_macs(2, 4, 4)


# ---------------------------------------------------------------- module scopes

def test_scopes_leave_the_model_as_it_was():
    """An eager model's modules carry their scopes on a subclass while the pass runs (torch's
    fast path for module calls, no global hook): same name and repr, isinstance holds, their
    own class afterwards; copies and pickles made during the pass are of the original class
    and carry no scope (their ops go to the module that calls them)."""
    seen = {}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            seen["a"] = (type(self.a) is nn.Linear, isinstance(self.a, nn.Linear), repr(self.a))
            seen["hooks"] = global_hooks()
            copied = copy.deepcopy(self.b)
            buf = io.BytesIO()
            torch.save(self.b, buf)
            buf.seek(0)
            loaded = torch.load(buf, weights_only=False)
            seen["copies"] = (type(copied), type(loaded))
            return self.a(x) + copied(x) + loaded(x)

    net = Net()
    rep = em.profile(net, torch.randn(2, 8))
    assert seen["a"] == (False, True, repr(net.a)) and seen["hooks"] == 0
    assert seen["copies"] == (nn.Linear, nn.Linear)
    assert type(net.a) is nn.Linear and type(net.b) is nn.Linear
    df = rep.by_module()
    assert df.loc["a", "macs"] == linear_macs(2, 8, 8)
    assert df.loc["", "self_macs"] == 2 * linear_macs(2, 8, 8)  # the copies' linears


def test_scope_classes_swaps_records_and_undoes():
    """_C.scope_classes, the scopes' pass over an eager model's modules: a module in `added` gets
    the scoped class (made once by make_scoped), recorded in `swapped` and in the list returned;
    a swap the layout refuses leaves the module to the hooks (`hooked`), unrecorded; an error
    midway undoes the swaps done and propagates."""
    class Scoped(nn.Linear):
        pass

    class Slotted(nn.Linear):  # a layout that differs: __class__ assignment refuses it
        __slots__ = ("x",)

    made = []

    def make(cls):
        made.append(cls)
        if cls is nn.ReLU:
            raise ValueError("no subclass")
        return Scoped

    lin, other = nn.Linear(2, 2), nn.Linear(2, 2)
    swapped, hooked = {}, {}
    classes = em._C.scope_classes([lin], {id(lin): 7}, {}, make, swapped, hooked)
    assert classes == [(lin, nn.Linear, Scoped)] and type(lin) is Scoped
    assert (swapped, hooked, made) == ({id(lin): 7}, {}, [nn.Linear])
    swapped, hooked = {}, {}
    classes = em._C.scope_classes([other], {id(other): 8}, {nn.Linear: Slotted}, make, swapped,
                                  hooked)
    assert classes == [] and type(other) is nn.Linear and (swapped, hooked) == ({}, {id(other): 8})
    a, relu = nn.Linear(2, 2), nn.ReLU()
    swapped = {}
    with pytest.raises(ValueError, match="no subclass"):
        em._C.scope_classes([a, relu], {id(a): 1, id(relu): 2}, {}, make, swapped, {})
    assert type(a) is nn.Linear and swapped == {}


def test_released_scopes_leave_a_class_changed_since():
    """Releasing the scopes gives each module its class back (_C.restore_classes), unless
    something changed the module's class since: that change stays. Bad entries are clear
    errors."""
    class Scoped(nn.Linear):
        pass

    class Changed(nn.Linear):
        pass

    lin, other = nn.Linear(2, 2), nn.Linear(2, 2)
    object.__setattr__(lin, "__class__", Scoped)
    object.__setattr__(other, "__class__", Changed)
    em._C.restore_classes([(lin, nn.Linear, Scoped), (other, nn.Linear, Scoped)])
    assert type(lin) is nn.Linear and type(other) is Changed
    with pytest.raises(TypeError, match=r"\(module, class before, scoped class\)"):
        em._C.restore_classes([(lin, nn.Linear)])


class _Sealed(nn.Module):
    """A class that refuses subclasses: effmetrics cannot give it a scoped one."""

    def __init_subclass__(cls, **kwargs):
        raise TypeError("sealed")

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(x)


class _Abstract(nn.Module, metaclass=abc.ABCMeta):  # a metaclass of its own
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(x)


def test_modules_that_keep_their_class_are_scoped_by_hooks():
    """A class that refuses subclasses and a module with a forward of its own (as accelerate
    installs) are scoped by the global hooks; a metaclass of its own takes the subclass."""
    own = nn.Linear(8, 8)
    own.forward = lambda x: nn.Linear.forward(own, x) * 2
    model = nn.Sequential(_Sealed(), own, _Abstract())
    hooks, abstract = [], []
    model[0].register_forward_pre_hook(lambda m, a: hooks.append(global_hooks()))
    model[2].register_forward_pre_hook(lambda m, a: abstract.append(type(m) is _Abstract))
    rep = em.profile(model, torch.randn(2, 8))
    assert abstract == [False]  # its scoped subclass, made through ABCMeta
    df = rep.by_module()
    for name in ("0", "1", "2"):
        assert df.loc[name, "macs"] == linear_macs(2, 8, 8), name
    assert df.loc["1", "self_flops"] == 2 * linear_macs(2, 8, 8) + 2 * 8  # and its own * 2
    assert hooks == [2] and global_hooks() == 0
    assert [type(m) for m in model] == [_Sealed, nn.Linear, _Abstract]


@pytest.mark.filterwarnings("ignore:effmetrics. torch.compile'd code ran")  # torch 2.14
def test_a_model_with_a_compiled_part_keeps_its_classes():
    """Dynamo guards on a module's class: where any part of the model is compiled, every
    module keeps its class (the hooks scope them), so the compiled code is not recompiled.
    (Whether the compiled part is counted depends on the torch: README "torch.compile".)"""
    class Probe(nn.Module):
        def forward(self, x):
            seen.append(type(self) is Probe)
            return x * 2

    # the compiled module before the probe, and after it (the probe's swap is undone)
    for probe_at in (1, 0):
        seen = []
        model = nn.Sequential(nn.Linear(8, 8), Probe())
        model[0].compile(backend="eager")
        if probe_at == 0:
            model = nn.Sequential(model[1], model[0])
        x = torch.randn(2, 8)
        model(x)
        rep = em.profile(model, x)
        assert seen == [True, True], probe_at
        # the probe's x * 2, in its scope
        assert rep.by_module().loc[str(probe_at), "self_flops"] == 2 * 8, probe_at
        assert [type(m) for m in model][probe_at] is Probe


# ---------------------------------------------------------------- nesting and threads

def test_nested_profiles_both_count():
    inner_reports = []
    lin = nn.Linear(8, 8)

    def outer(x):
        y = lin(x)
        inner_reports.append(em.profile(lin, y))
        return lin(y)

    rep = em.profile(outer, torch.randn(2, 8))
    assert inner_reports[0].macs == linear_macs(2, 8, 8)
    assert rep.macs == 3 * linear_macs(2, 8, 8)


def test_other_observers_see_every_record_while_ops_are_muted():
    """Records nested in an op with a FLOP rule (a scalar add's to/_to_copy/copy_) are muted for
    effmetrics' own callback once the op is known to nest them (Session::mute); torch's
    profiler, another observer on the same thread, still sees every one of them, and the chain
    counts as it does alone."""
    x = torch.ones(3)

    def chain():
        y = x
        for _ in range(40):
            y = y + 1
        return y

    def names(fn):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn()
        seen = {}
        for e in prof.events():
            seen[e.name] = seen.get(e.name, 0) + 1
        return seen

    alone = names(chain)
    assert alone["aten::add"] == 40 and len(alone) > 1  # records nest in the add
    reports = []
    under = names(lambda: reports.append(em.profile(chain)))
    assert {n: under.get(n, 0) for n in alone} == alone
    assert reports[0].flops == reports[0].flops_vector == 40 * 3  # one FLOP per element per add
    assert reports[0].by_op().loc["aten::add", "calls"] == 40


def test_concurrent_profiles_on_threads_do_not_mix():
    results = {}

    def work(name, n):
        lin = nn.Linear(n, n)
        results[name] = em.profile(lin, torch.randn(4, n)).macs

    threads = [threading.Thread(target=work, args=(f"t{n}", n)) for n in (8, 16, 32, 64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {f"t{n}": linear_macs(4, n, n) for n in (8, 16, 32, 64)}


def test_more_profilers_than_slots_fail_clearly():
    held = [_C.Profiler() for _ in range(_C.max_profilers())]
    for p in held:
        p.start()
    try:
        with pytest.raises(RuntimeError, match="profilers are already active"):
            em.profile(nn.Linear(2, 2), torch.randn(1, 2))
    finally:
        for p in held:
            p.stop()
    assert em.profile(nn.Linear(2, 2), torch.randn(1, 2)).macs == 4


# ---------------------------------------------------------------- Counter

def test_counter_counts_each_training_step():
    mlp = MLP()
    opt = torch.optim.SGD(mlp.parameters(), lr=0.1)
    x = torch.randn(8, 32)
    fwd = sum(linear_macs(8, i, o) for i, o in ((32, 64), (64, 64), (64, 10)))
    with em.Counter(mlp, count="every") as c:
        for _ in range(3):
            mlp(x).sum().backward()
            opt.step()
            opt.zero_grad()
            c.step(examples=8)
    steps = c.steps
    assert len(steps) == 3 and list(steps["examples"]) == [8, 8, 8]
    matmul = c.report.ops().query("kind == 'matmul'")
    assert matmul["macs"].sum() == 3 * (fwd + 2 * fwd - linear_macs(8, 32, 64))
    assert (steps["flops_backward"] > 0).all()
    assert steps["flops"].sum() == c.report.flops


# ---------------------------------------------------------------- output

def test_print_and_json():
    vit = ViT(32, 2, 4, 64, 8, image=32, classes=10)
    rep = em.profile(vit, torch.randn(1, 3, 32, 32))
    text = str(rep)
    assert "blocks" in text and "FLOP" in text and "KiB" in text
    d = json.loads(rep.to_json())
    assert d["total"]["flops"] == rep.flops
    assert d["params"]["total"] == rep.params.total
    # ModuleList containers have no forward of their own: their blocks are rows
    assert {m["name"] for m in d["modules"]} >= {"", "blocks.0", "blocks.1.qkv", "head"}


def test_leaves_of_arguments_are_pytrees_leaves():
    """inputs.leaves (the fast walk profile() and Counter use) gives pytree's leaves, in order,
    for plain containers and for the ones it hands to pytree."""
    import collections

    from torch.utils import _pytree as pytree

    from effmetrics.inputs import leaves

    x, y = torch.randn(2), torch.randn(3)
    pair = collections.namedtuple("Pair", "a b")
    for args, kwargs in [((x,), {}), ((x, 3, None, [y, (x, 2.0)]), {"m": y, "n": None}),
                         ((pair(x, 1),), {}), ((collections.OrderedDict(a=x),), {"b": [y]}),
                         ((), {"a": {"b": [x, "s"]}})]:
        expected = pytree.tree_leaves((args, kwargs))
        got = leaves(args, kwargs)
        assert len(got) == len(expected) and all(g is e for g, e in zip(got, expected))
