"""The model zoo against published figures (ORACLES.md, the papers, torchvision's counts)."""
import pytest
import torch

import effmetrics as em
from effmetrics.models import ZOO, build, example_input


def on_meta(name, **overrides):
    with torch.device("meta"):
        model = build(name, **overrides)
    return em.profile(model, example_input(name, device="meta", **overrides))


@pytest.mark.parametrize("name, params, gmacs", [
    ("vit-b/16", 86_567_656, 17.56), ("vit-b/32", 88_224_232, 4.41),
    ("vit-l/16", 304_326_632, 61.55), ("vit-s/16", 22_050_664, 4.60)])
def test_vit_configs_match_oracles(name, params, gmacs):
    rep = on_meta(name)
    assert rep.params.total == params
    assert round(rep.macs_matmul / 1e9, 2) == gmacs


def test_published_parameter_counts():
    assert on_meta("bert-base").params.total == 109_482_240  # BERT-Base, "110M"
    assert on_meta("resnet-50").params.total == 25_557_032  # torchvision resnet50
    assert on_meta("efficientnet-b0").params.total == 5_288_548  # torchvision efficientnet_b0


def test_patch_size_at_fixed_width():
    s32, s8 = on_meta("vit-s/32"), on_meta("vit-s/8")
    # ORACLES.md quotes 1.15 and 22.4 GMACs (fvcore-style counts, which also include some
    # non-matmul ops); matmul-class MACs are within 1% of them
    assert abs(s32.macs_matmul / 1.15e9 - 1) < 0.01 and abs(s8.macs_matmul / 22.4e9 - 1) < 0.01
    assert 18 < s8.macs_matmul / s32.macs_matmul < 21  # ~19x FLOPs ...
    assert abs(s8.params.total / s32.params.total - 1) < 0.05  # ... at ~equal params


def test_universal_transformer_shares_params_not_flops():
    bert, ut = on_meta("bert-base"), on_meta("ut-base")
    embeddings = (30522 + 512 + 2) * 768 + 2 * 768
    block = (bert.params.total - embeddings - (768 * 768 + 768)) // 12
    assert ut.params.total == bert.params.total - 11 * block  # one block instead of 12
    assert ut.macs_matmul == bert.macs_matmul
    assert ut.params.applied == bert.params.applied


def test_switch_params_grow_with_experts_at_fixed_flops_per_token():
    reps = {e: on_meta(f"switch-base-{e}") for e in (8, 32, 128)}
    assert reps[8].params.total < reps[32].params.total < reps[128].params.total
    assert reps[128].params.total > 10 * reps[8].params.total
    bert = on_meta("bert-base")
    tokens, dim, moe_layers = 128, 768, 6
    for e, rep in reps.items():  # every token through one expert MLP: only the router grows
        assert rep.macs_matmul == bert.macs_matmul + moe_layers * tokens * dim * e


def test_efficientnet_fewer_flops_and_params_than_resnet():
    eff, res = on_meta("efficientnet-b0"), on_meta("resnet-50")
    assert round(eff.macs_matmul / 1e9, 2) == 0.39 and round(res.macs_matmul / 1e9, 2) == 4.09
    assert eff.params.total < res.params.total / 4
    assert eff.intensity < res.intensity  # depthwise convs: low arithmetic intensity


def test_every_zoo_model_runs_and_counts_on_meta():
    for name in ZOO:
        if name.startswith("vit-h") or name.startswith("vit-l"):
            continue  # the large ViTs are covered above; keep the suite fast
        rep = on_meta(name)
        assert rep.macs_matmul > 0 and rep.unsupported_ops == {}, name


def test_vit_global_average_pooling_drops_the_cls_token():
    cls, gap = on_meta("vit-b/16"), on_meta("vit-b/16", pool="gap")
    # no CLS token (D) and one position fewer in the embedding (D)
    assert cls.params.total - gap.params.total == 2 * 768
    # one token fewer in every block; the head reads the mean instead of the CLS row
    T, D, M, L = 197, 768, 3072, 12
    per_token = 3 * D * D + D * D + 2 * D * M
    attention = 2 * (T * T - (T - 1) ** 2) * D
    assert cls.macs_matmul - gap.macs_matmul == L * (per_token + attention)
    with pytest.raises(ValueError, match="'cls' or 'gap'"):
        build("vit-b/16", pool="max")


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="the zoo has: .*bert-base"):
        build("bert-huge")
