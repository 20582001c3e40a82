"""Memory of a pass: activation bytes (tensors saved for backward) and peak allocated bytes."""
import torch
from torch import nn

import effmetrics as em
from models import ViT


def test_mlp_activation_bytes_by_module():
    B, fan_in, H, classes = 8, 32, 64, 10
    mlp = nn.Sequential(nn.Linear(fan_in, H), nn.ReLU(), nn.Linear(H, classes))
    rep = em.profile(mlp, torch.randn(B, fan_in), memory=True)
    # saved for backward, weights excluded: the input x (by the first linear, for its weight
    # gradient) and the ReLU output (by ReLU; the second linear saves that same storage)
    assert rep.activation_bytes == 4 * (B * fan_in + B * H)
    df = rep.by_module()
    assert df.loc["0", "activation_bytes"] == 4 * B * fan_in
    assert df.loc["1", "activation_bytes"] == 4 * B * H
    assert df.loc["2", "activation_bytes"] == 0
    assert df.loc["", "activation_bytes"] == rep.activation_bytes


def test_activation_bytes_on_meta_equal_cpu():
    mlp = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    cpu = em.profile(mlp, torch.randn(8, 32), memory=True)
    meta = em.profile(mlp.to("meta"), torch.empty(8, 32, device="meta"), memory=True)
    assert meta.activation_bytes == cpu.activation_bytes
    assert meta.peak_memory_bytes is None and "meta" in meta.peak_memory_method


def test_small_vit_activation_bytes():
    B, R, P, D, L, h, M = 2, 32, 8, 32, 2, 4, 64
    T = (R // P) ** 2 + 1
    vit = ViT(D, L, h, M, P, image=R, classes=10)
    rep = em.profile(vit, torch.randn(B, 3, R, R), memory=True)
    # per block: the residual stream in (TD) and LayerNorm mean/rstd (2T); LN1 out (TD);
    # the qkv projection output (3TD: q, k, v are views of it); the attention output (TD) and
    # logsumexp (hT) kept by the CPU flash kernel, whose output is laid out [b, t, h, d] so the
    # head merge before proj is a view of it; the residual (TD) and LN2's mean/rstd (2T);
    # LN2 out (TD); fc1 out (TM, for GELU) and GELU out (TM, for fc2).
    block = 8 * T * D + 2 * T * M + 4 * T + h * T
    # plus the image (for the patch conv's weight gradient), and the head: the last block's
    # output with mean/rstd, and the final LayerNorm's output (the CLS row is a view of it)
    expected = 4 * B * (3 * R * R + L * block + T * D + 2 * T + T * D)
    assert rep.activation_bytes == expected
    df = rep.by_module()
    assert df.loc["blocks.0", "activation_bytes"] == df.loc["blocks.1", "activation_bytes"]
    assert df.loc["blocks.0.fc1", "activation_bytes"] == 4 * B * T * D  # LN2 output


def test_cpu_peak_memory_of_a_pass():
    n = 1 << 16
    x = torch.randn(n)
    # x * x (4n bytes) is alive while + x allocates the result (4n more): peak 8n
    rep = em.profile(lambda t: (t * t) + t, x, memory=True)
    assert rep.peak_memory_bytes == 8 * n
    assert "CPU allocator" in rep.peak_memory_method
    assert em.profile(lambda t: t * 2, x).peak_memory_bytes is None  # not asked


def test_memory_tracker_binding_has_what_measure_memory_reads():
    # measure_memory reads peak_total_bytes on CUDA: the binding must exist on every machine.
    from effmetrics import _C

    t = _C.MemoryTracker()
    t.start()
    x = torch.empty(1 << 20)  # 4 MiB, freed at once
    del x
    t.stop()
    assert t.peak_bytes("cpu") >= 4 << 20
    assert t.peak_total_bytes("cpu") >= 4 << 20
    assert t.current_bytes("cpu") <= t.peak_bytes("cpu")
