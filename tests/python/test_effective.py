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
