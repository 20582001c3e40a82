"""CUDA: counts on the GPU equal counts on the CPU for the same models (skipped without CUDA).

Run on the GPU machine through scripts/gpu_check.sh.
"""
import copy

import pytest
import torch
from torch import nn

import effmetrics as em
from models import CNN, MLP, TCN, Decoder, ViT
from test_flop_counter import reference_flops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

MODELS = {
    "mlp": (MLP, (8, 32)),
    "cnn": (CNN, (2, 3, 32, 32)),
    "decoder": (Decoder, (2, 16, 8, 8)),
    "tcn": (TCN, (2, 8, 64)),
    "vit": (lambda: ViT(64, 2, 4, 128, 8, image=32, classes=10), (2, 3, 32, 32)),
    "transformer": (lambda: nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0,
                                                       batch_first=True), (2, 16, 64)),
}


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward_backward"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_cuda_counts_equal_cpu_counts(name, backward):
    build, shape = MODELS[name]
    cpu = build()
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.randn(*shape)
    rc = em.profile(cpu, x, backward=backward)
    rg = em.profile(gpu, x.cuda(), backward=backward)
    assert rg.flops_matmul == rc.flops_matmul
    assert rg.flops_backward > 0 if backward else rg.flops_backward == 0
    assert rg.params.total == rc.params.total
    assert rg.unsupported_ops == {}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_sdpa_kernels_match_flop_counter(dtype):
    vit = ViT(64, 2, 4, 128, 8, image=32, classes=10).cuda().to(dtype)
    x = torch.randn(2, 3, 32, 32, device="cuda", dtype=dtype)
    expected = reference_flops(lambda: vit(x).sum().backward())
    vit.zero_grad()
    rep = em.profile(vit, x, backward=True)
    assert rep.flops_matmul == expected
