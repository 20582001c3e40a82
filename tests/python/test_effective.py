"""flops_effective: the work left after removing what a mask or zero weights make unnecessary.

Expected numbers are written here: the kept (i, j) pairs of a causal mask counted on the grid
torch builds for it (tril of ones, top-left aligned), True counts of masks, zero counts of
weights; the dense flops are FlopCounterMode's (references.py).
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import effmetrics as em
from references import flex_reference_flops as reference_flops_flex
from references import reference_flops

BACKENDS = [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION]  # the SDPA backends present on CPU


def kept_causal(sq: int, sk: int) -> int:
    """(i, j) pairs a causal mask keeps, counted on the mask torch documents for is_causal:
    torch.ones(L, S).tril(diagonal=0)."""
    return int(torch.ones(sq, sk, dtype=torch.bool).tril().sum())


def matmul_effective(rep) -> int:
    ops = rep.ops()
    return int(ops[ops.kind == "matmul"]["flops_effective"].sum())


def vector_unchanged(rep) -> bool:
    ops = rep.ops()
    rest = ops[ops.kind != "matmul"]
    return bool((rest["flops_effective"] == rest["flops"]).all())


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("sq, sk", [(8, 8), (5, 9), (9, 4)], ids=["square", "sq<sk", "sq>sk"])
def test_causal_sdpa_forward_and_backward(backend, sq, sk):
    b, h, d = 2, 3, 16
    q = torch.randn(b, h, sq, d, requires_grad=True)
    k = torch.randn(b, h, sk, d, requires_grad=True)
    v = torch.randn(b, h, sk, d, requires_grad=True)

    def attn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    with sdpa_kernel([backend]):
        fwd = em.profile(attn, q, k, v)
        both = em.profile(attn, q, k, v, backward=True)
        dense = reference_flops(lambda: attn(q, k, v).sum().backward())
    kept = kept_causal(sq, sk)
    # Forward: QK^T and AV over the kept pairs only: 2 * b*h*kept*(dq+dv).
    assert matmul_effective(fwd) == 2 * b * h * kept * (d + d)
    assert fwd.flops_matmul == 2 * b * h * sq * sk * (d + d)  # flops stay dense
    # Backward scales like forward: the flash kernel's 2.5x (recompute QK^T, dP, dV, dQ, dK:
    # 2*b*h*kept*(3dq+2dv)); the math path's bmm backward is 2x its forward.
    bwd_factor = (3 * d + 2 * d) if backend == SDPBackend.FLASH_ATTENTION else 2 * (d + d)
    assert matmul_effective(both) == 2 * b * h * kept * (d + d) + 2 * b * h * kept * bwd_factor
    assert both.flops_matmul == dense  # the dense convention, as FlopCounterMode
    assert vector_unchanged(both)
    assert both.effective_basis["causal"] == "applied"


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_boolean_mask_counts_its_true_elements(backend):
    b, h, sq, sk, d = 1, 2, 6, 10, 8
    q, k, v = torch.randn(b, h, sq, d), torch.randn(b, h, sk, d), torch.randn(b, h, sk, d)
    mask = torch.rand(sq, sk) < 0.4
    mask[:, 0] = True  # every query attends something
    true = int(mask.sum())

    def attn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    with sdpa_kernel([backend]):
        rep = em.profile(attn, q, k, v, effective=True)
        lazy = em.profile(attn, q, k, v)
    # The [sq, sk] mask broadcasts over b and h: b*h*true pairs kept.
    assert matmul_effective(rep) == 2 * b * h * true * (d + d)
    assert rep.effective_basis["mask"] == "applied"
    # Masks are read only when asked (it costs a pass over the mask).
    assert lazy.flops_effective == lazy.flops
    assert lazy.effective_basis["mask"].startswith("not requested")


def test_boolean_mask_on_meta_is_not_applied():
    q = torch.empty(1, 2, 4, 8, device="meta")
    mask = torch.empty(4, 4, dtype=torch.bool, device="meta")
    with sdpa_kernel([SDPBackend.MATH]):
        rep = em.profile(lambda q: F.scaled_dot_product_attention(q, q, q, attn_mask=mask), q,
                         effective=True)
    assert rep.flops_effective == rep.flops
    assert rep.effective_basis["mask"].startswith("not applied")


def half_zero_mlp() -> nn.Module:
    mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 16))
    with torch.no_grad():
        for lin in (mlp[0], mlp[2]):
            lin.weight[:, ::2] = 0  # exactly half of each weight
    return mlp


def test_mlp_with_half_zero_weights_counts_half_its_matmuls():
    mlp, x = half_zero_mlp(), torch.randn(8, 32)
    rep = em.profile(mlp, x, effective=True)
    dense_matmul = 2 * 8 * (32 * 64 + 64 * 16)
    assert rep.flops_matmul == dense_matmul == reference_flops(lambda: mlp(x))
    assert matmul_effective(rep) == dense_matmul // 2
    assert rep.flops_effective == rep.flops - dense_matmul // 2
    assert vector_unchanged(rep)
    assert rep.effective_basis["zeros"] == "applied"
    weights = 32 * 64 + 64 * 16
    assert rep.params.nonzero == weights // 2 + 64 + 16  # biases are all nonzero (random init)
    by_module = rep.by_module()
    assert by_module.loc["0", "flops_effective"] == 2 * 8 * 32 * 64 // 2 + 0  # Linear 0 alone
    assert rep.to_dict()["total"]["flops_effective"] == rep.flops_effective
    # Reading weights is asked for: without effective=True nothing is discounted.
    lazy = em.profile(mlp, x)
    assert lazy.flops_effective == lazy.flops and lazy.params.nonzero is None
    assert lazy.effective_basis["zeros"].startswith("not requested")


def test_zero_weights_discount_the_forward_only():
    mlp, x = half_zero_mlp(), torch.randn(8, 32)
    rep = em.profile(mlp, x, effective=True, backward=True)
    ops = rep.ops()
    mm = ops[ops.kind == "matmul"]
    fwd, bwd = mm[mm.phase == "forward"], mm[mm.phase == "backward"]
    assert fwd["flops_effective"].sum() == fwd["flops"].sum() // 2
    assert (bwd["flops_effective"] == bwd["flops"]).all()  # gradients are dense


def test_nonzero_is_cached_per_parameter_version():
    mlp, x = half_zero_mlp(), torch.randn(8, 32)
    assert em.profile(mlp, x, effective=True).params.nonzero == 32 * 32 + 64 * 8 + 64 + 16
    with torch.no_grad():
        mlp[0].weight.zero_()  # bumps the version: counted again
    assert em.profile(mlp, x, effective=True).params.nonzero == 64 * 8 + 64 + 16
    assert em.count_params(mlp, nonzero=True).nonzero == 64 * 8 + 64 + 16
    assert em.count_params(mlp).nonzero is None


def test_meta_parameters_have_no_values():
    mlp = half_zero_mlp().to("meta")
    rep = em.profile(mlp, torch.empty(8, 32, device="meta"), effective=True)
    assert rep.flops_effective == rep.flops
    assert rep.params.nonzero is None
    assert rep.effective_basis["zeros"].startswith("not applied")


def test_semi_structured_2_4():
    w = torch.randn(64, 64, dtype=torch.float16)
    w[:, 2::4] = 0
    w[:, 3::4] = 0
    try:
        from torch.sparse import to_sparse_semi_structured

        to_sparse_semi_structured(w)
    except (RuntimeError, ImportError, NotImplementedError) as e:
        pytest.skip(f"2:4 semi-structured sparsity is not supported by this torch on CPU: {e}")
    pytest.skip("2:4 semi-structured tensors are supported here, but no test was written for a "
                "machine that supports them (CUDA with cuSPARSELt/CUTLASS)")


def test_no_information_means_effective_equals_flops():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    x = torch.randn(2, 3, 8, 8)
    q = torch.randn(1, 2, 5, 8)
    for rep in (em.profile(model, x, effective=True, backward=True),
                em.profile(lambda q: F.scaled_dot_product_attention(q, q, q), q,
                           effective=True)):
        assert rep.flops_effective == rep.flops
        assert rep.effective_basis["causal"] == "none in this pass"


# ---------------------------------------------------------------- flex_attention block masks

try:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError as e:  # a torch without flex_attention
    FLEX = f"this torch has no torch.nn.attention.flex_attention: {e}"
else:
    FLEX = None
needs_flex = pytest.mark.skipif(FLEX is not None, reason=FLEX or "")


def causal_mod(b, h, q, kv):
    return q >= kv


def window_mod(b, h, q, kv):  # sliding window: the 100 latest keys, itself included
    return (q >= kv) & (q - kv < 100)


def block_mask_pairs(mask_mod, sq: int, sk: int, block: int) -> int:
    """(i, j) pairs in the blocks a block mask keeps, from the mask's dense grid: a block is
    computed (in full) when any of its pairs is kept; edge blocks are cut at the sequence ends."""
    dense = mask_mod(0, 0, torch.arange(sq)[:, None], torch.arange(sk)[None, :])
    kept = 0
    for i in range(0, sq, block):
        for j in range(0, sk, block):
            tile = dense[i:i + block, j:j + block]
            kept += tile.numel() if bool(tile.any()) else 0
    return kept


def no_effmetrics_warning(caught) -> bool:
    return not [w for w in caught if "effmetrics" in str(w.message)]


FLEX_CASES = {  # name: (mask_mod, s_q, s_kv, kept blocks of the block grid, written out)
    "causal 4x4 blocks": (causal_mod, 512, 512, 10),  # 4 diagonal (partial) + 6 below (full)
    "window 4x4 blocks": (window_mod, 512, 512, 7),  # 4 diagonal + 3 just below, all partial
    "causal 3x3, cut ends": (causal_mod, 300, 300, 6),  # 128 + 128 + 44 rows and columns
}


@needs_flex
@pytest.mark.parametrize("case", FLEX_CASES, ids=list(FLEX_CASES))
def test_flex_attention_block_mask_forward(case):
    import warnings

    mask_mod, sq, sk, blocks = FLEX_CASES[case]
    b, h, d, block = 2, 3, 16, 128
    q, k, v = torch.randn(b, h, sq, d), torch.randn(b, h, sk, d), torch.randn(b, h, sk, d)
    block_mask = create_block_mask(mask_mod, None, None, sq, sk, device="cpu",
                                   BLOCK_SIZE=block)

    def attn(q, k, v):
        return flex_attention(q, k, v, block_mask=block_mask)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = em.profile(attn, q, k, v)
    kept = block_mask_pairs(mask_mod, sq, sk, block)
    if sq % block == 0:
        assert kept == blocks * block * block  # the block count written above
    # flops: the dense convention, 2*b*h*s_q*s_kv*(d_q + d_v), as FlopCounterMode counts it.
    dense = 2 * b * h * sq * sk * (d + d)
    assert rep.flops_matmul == dense
    assert reference_flops_flex(q, k, v) in (dense, None)  # None: this torch has no formula
    # flops_effective: QK^T and AV over the pairs of the kept blocks only.
    assert matmul_effective(rep) == 2 * b * h * kept * (d + d)
    assert vector_unchanged(rep)
    assert rep.effective_basis["block_mask"] == "applied"
    assert rep.effective_basis["causal"] == "none in this pass"
    # The compiled region flex_attention runs in eagerly is seen op by op: not compiled code.
    assert rep.unsupported_ops == {}
    assert no_effmetrics_warning(caught)


@needs_flex
def test_flex_attention_per_head_block_mask():
    b, h, s, d = 1, 2, 256, 8

    def head_mod(b, h, q, kv):  # head 0 causal, head 1 everything
        return (q >= kv) | (h == 1)

    block_mask = create_block_mask(head_mod, None, h, s, s, device="cpu", BLOCK_SIZE=128)
    q = torch.randn(b, h, s, d)
    rep = em.profile(lambda q: flex_attention(q, q, q, block_mask=block_mask), q)
    kept = 3 * 128 * 128 + 4 * 128 * 128  # head 0: 3 of 4 blocks; head 1: all 4
    assert matmul_effective(rep) == 2 * b * kept * (d + d)
    assert rep.flops_matmul == 2 * b * h * s * s * (d + d)


@needs_flex
def test_flex_attention_without_block_mask_is_dense():
    q = torch.randn(1, 2, 256, 8)
    rep = em.profile(lambda q: flex_attention(q, q, q), q)
    assert rep.flops_effective == rep.flops
    assert rep.effective_basis["block_mask"] == "none in this pass"
    assert rep.unsupported_ops == {}


@needs_flex
def test_flex_attention_outside_a_profile_is_untouched():
    q = torch.randn(1, 1, 256, 8)
    block_mask = create_block_mask(causal_mod, None, None, 256, 256, device="cpu")
    em.profile(lambda q: flex_attention(q, q, q, block_mask=block_mask), q)  # installs the hook
    from effmetrics import _C

    expected = flex_attention(q, q, q, block_mask=block_mask)
    assert _C.set_attention_share(0, 0) == (0, 0)  # nothing left set on this thread
    torch.testing.assert_close(expected, F.scaled_dot_product_attention(q, q, q, is_causal=True))


@needs_flex
def test_flex_attention_in_a_compiled_model():
    b, h, s, d = 1, 2, 512, 8
    block_mask = create_block_mask(causal_mod, None, None, s, s, device="cpu")

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(d, d)

        def forward(self, x):
            x = self.proj(x)
            return flex_attention(x, x, x, block_mask=block_mask)

    model, x = Attn().requires_grad_(False), torch.randn(b, h, s, d)  # no backward on CPU
    rep = em.profile(torch.compile(model), x)  # counted through its graphs
    proj = 2 * b * h * s * d * d
    assert rep.flops_matmul == proj + 2 * b * h * s * s * (d + d)
    assert matmul_effective(rep) == proj + 2 * b * h * 10 * 128 * 128 * (d + d)
    assert rep.unsupported_ops == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex_attention's backward runs on "
                    "CUDA only (CPU: 'FlexAttention does not support backward on CPU')")
@needs_flex
def test_flex_attention_block_mask_forward_and_backward_cuda():
    b, h, s, d = 2, 3, 512, 16
    block_mask = create_block_mask(causal_mod, None, None, s, s, device="cuda")
    q, k, v = (torch.randn(b, h, s, d, device="cuda", requires_grad=True) for _ in range(3))

    def attn(q, k, v):
        return flex_attention(q, k, v, block_mask=block_mask)

    rep = em.profile(attn, q, k, v, backward=True)
    kept = block_mask_pairs(causal_mod, s, s, 128)
    assert kept == 10 * 128 * 128
    # Forward: QK^T, AV; backward (the dense backward): QK^T again, dP, dV, dQ, dK.
    fwd, bwd = 2 * (d + d), 2 * (3 * d + 2 * d)
    assert rep.flops_matmul == b * h * s * s * (fwd + bwd)
    assert reference_flops_flex(q, k, v, backward=True) in (b * h * s * s * (fwd + bwd), None)
    assert matmul_effective(rep) == b * h * kept * (fwd + bwd)
    ops = rep.ops()
    mm = ops[ops.kind == "matmul"]
    assert mm[mm.phase == "backward"]["flops_effective"].sum() == b * h * kept * bwd
    assert rep.effective_basis["block_mask"] == "applied"
    assert rep.unsupported_ops == {}


def test_zero_weights_used_through_a_view_are_discounted():
    """x @ W.t(), x @ W.T, F.linear(x, W.view(...)): the matmul gets a view of the weight; its
    zeros count as the weight's (the view's use of the parameter is counted once)."""

    class ViewMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(64, 32))
            self.w2 = nn.Parameter(torch.randn(16, 64))
            self.w3 = nn.Parameter(torch.randn(16, 4, 4))  # a weight stored 3-D

        def forward(self, x):
            h = torch.relu(x @ self.w1.t())
            h = torch.relu(h @ self.w2.T)
            return nn.functional.linear(h, self.w3.view(16, 16))

    model = ViewMLP()
    with torch.no_grad():
        model.w1[:, ::2] = 0  # half of w1
        model.w2[::4] = 0  # a quarter of w2
        model.w3[:4] = 0  # a quarter of w3
    x = torch.randn(8, 32)
    rep = em.profile(model, x, effective=True)
    dense = [2 * 8 * 32 * 64, 2 * 8 * 64 * 16, 2 * 8 * 16 * 16]
    assert rep.flops_matmul == sum(dense) == reference_flops(lambda: model(x))
    assert matmul_effective(rep) == dense[0] // 2 + dense[1] * 3 // 4 + dense[2] * 3 // 4
    assert rep.effective_basis["zeros"] == "applied"
    # Each weight is one use per forward, at its view.
    assert rep.params.applied == 64 * 32 + 16 * 64 + 16 * 16
