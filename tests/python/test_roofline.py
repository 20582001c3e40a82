"""Roofline arithmetic on tables built here, the preset table, CPU calibration and caching."""
import pandas as pd
import pytest
import torch

import effmetrics as em
from effmetrics.roofline import HARDWARE, Hardware
from models import ViT


def test_predictions_and_bounds():
    hw = Hardware("toy", matmul_flops=100.0, vector_flops=10.0, bandwidth=50.0)
    df = pd.DataFrame({"flops_matmul": [1000, 0], "flops_vector": [20, 100],
                       "bytes_read": [100, 400], "bytes_written": [0, 100],
                       "latency_median": [20.0, 0.0]}, index=["gemm", "softmax"])
    out = em.roofline(df, hw)
    # gemm: 1000/100 + 20/10 = 12 s compute vs 100/50 = 2 s memory -> compute-bound
    assert out.loc["gemm", "compute_s"] == 12 and out.loc["gemm", "memory_s"] == 2
    assert out.loc["gemm", "predicted_s"] == 12 and out.loc["gemm", "bound"] == "compute"
    assert out.loc["gemm", "achieved_fraction"] == pytest.approx(12 / 20)
    assert out.loc["gemm", "mfu"] == pytest.approx(1000 / 20 / 100)
    # softmax: 10 s compute vs 500/50 = 10 s memory: a tie counts as compute; no time measured
    assert out.loc["softmax", "predicted_s"] == 10
    assert pd.isna(out.loc["softmax", "measured_s"])


def test_presets_are_complete_and_unknown_names_fail():
    for name, hw in HARDWARE.items():
        assert hw.matmul_flops > hw.vector_flops > 0 and hw.bandwidth > 0 and hw.source, name
    with pytest.raises(ValueError, match="presets: H200"):
        em.roofline(pd.DataFrame(), "B200")
    with pytest.raises(KeyError, match="flops_matmul"):
        em.roofline(pd.DataFrame({"x": [1]}), "A100")


def test_report_roofline_on_a_gpu_preset():
    vit = ViT(64, 2, 4, 128, 8, image=32, classes=10)
    rep = em.profile(vit, torch.randn(2, 3, 32, 32), time=True)
    out = em.roofline(rep, "H100")
    row = out.loc["blocks.0.fc1"]
    expected = max(row["flops_matmul"] / 989e12 + row["flops_vector"] / 67e12,
                   (row["bytes_read"] + row["bytes_written"]) / 3.35e12)
    assert row["predicted_s"] == pytest.approx(expected)
    assert "measured_s" in out.columns and out.attrs["hardware"]["name"] == "NVIDIA H100 SXM"
    ops = em.roofline(rep, "H100", by="op")
    # LayerNorm moves ~1 byte per FLOP, far below the H100's ridge (67e12 / 3.35e12 = 20 FLOP/B)
    assert ops.loc["aten::native_layer_norm", "intensity"] < 20
    assert ops.loc["aten::native_layer_norm", "bound"] == "memory"


def test_cpu_calibration_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFMETRICS_CACHE", str(tmp_path))
    hw = em.calibrate_cpu()
    assert hw.matmul_flops > 1e8 and hw.vector_flops > 1e6 and hw.bandwidth > 1e8
    files = list(tmp_path.iterdir())
    assert len(files) == 1
    assert em.calibrate_cpu() == hw  # from the cache: identical numbers
