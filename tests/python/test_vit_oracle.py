"""ViT counts against the published figures in ORACLES.md and the closed form there."""
import pytest
import torch

import effmetrics as em
from models import ViT, vit_b16


def vit_params(D, L, M, P, image=224, C=1000):
    T = (image // P) ** 2 + 1
    return (3 * P * P * D + D + D + T * D + L * (4 * D * D + 2 * D * M + 9 * D + M) + 2 * D
            + D * C + C)


def vit_matmul_macs(D, L, M, P, image=224, C=1000):
    N = (image // P) ** 2
    T = N + 1
    return N * 3 * P * P * D + L * (3 * T * D * D + T * T * D + T * T * D + T * D * D
                                    + 2 * T * D * M) + D * C


def test_closed_form_matches_published_figures():
    # ORACLES.md's table, so the formula the other tests use is itself pinned to the papers.
    assert vit_params(768, 12, 3072, 16) == 86_567_656
    assert vit_params(768, 12, 3072, 32) == 88_224_232
    assert vit_params(1024, 24, 4096, 16) == 304_326_632
    assert vit_params(384, 12, 1536, 16) == 22_050_664
    assert round(vit_matmul_macs(768, 12, 3072, 16) / 1e9, 2) == 17.56
    assert round(vit_matmul_macs(768, 12, 3072, 32) / 1e9, 2) == 4.41
    assert round(vit_matmul_macs(1024, 24, 4096, 16) / 1e9, 2) == 61.55
    assert round(vit_matmul_macs(384, 12, 1536, 16) / 1e9, 2) == 4.60


def test_vit_b16_on_meta_matches_oracle():
    with torch.device("meta"):
        model = vit_b16()
    rep = em.profile(model, torch.empty(1, 3, 224, 224, device="meta"))
    assert rep.params.total == 86_567_656
    assert rep.macs_matmul == 17_563_828_224
    assert rep.flops_matmul == 2 * 17_563_828_224
    assert rep.unsupported_ops == {}
    # Per-module attribution: each block carries 1/12 of the block MACs.
    T, D, M = 197, 768, 3072
    block = rep.by_module().loc["blocks.5"]
    assert block["macs_matmul"] == 3 * T * D * D + 2 * T * T * D + T * D * D + 2 * T * D * M
    assert block["params"] == 4 * D * D + 2 * D * M + 9 * D + M


@pytest.mark.parametrize("attention", ["sdpa", "einsum"])
def test_small_vit_on_cpu_matches_closed_form(attention):
    D, L, H, M, P, R, C = 64, 2, 4, 128, 8, 32, 10
    model = ViT(D, L, H, M, P, image=R, classes=C, attention=attention).eval()
    batch = 3
    rep = em.profile(model, torch.randn(batch, 3, R, R))
    assert rep.params.total == vit_params(D, L, M, P, R, C)
    assert rep.macs_matmul == batch * vit_matmul_macs(D, L, M, P, R, C)
    assert rep.unsupported_ops == {}


def test_patch_size_changes_flops_not_params():
    # The paper's patch-size point at ViT-S width: /32 vs /8, ~equal params, ~19x FLOPs.
    with torch.device("meta"):
        s32, s8 = ViT(384, 12, 6, 1536, 32), ViT(384, 12, 6, 1536, 8)
    x = torch.empty(1, 3, 224, 224, device="meta")
    r32, r8 = em.profile(s32, x), em.profile(s8, x)
    assert r8.macs_matmul == vit_matmul_macs(384, 12, 1536, 8)
    assert r32.macs_matmul == vit_matmul_macs(384, 12, 1536, 32)
    assert abs(r8.params.total / r32.params.total - 1) < 0.05
    assert 15 < r8.macs_matmul / r32.macs_matmul < 25
