"""Roofline: what each op, module or model would take on given hardware if it ran at the peaks,
compute- or memory-bound, against what was measured.

predicted = max(matmul FLOPs / matmul peak + vector FLOPs / vector peak, bytes / bandwidth)

Bytes are effmetrics' no-cache lower bound of memory traffic, so "memory-bound" here means
bound even with perfect reuse inside each op.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Hardware:
    name: str
    matmul_flops: float  # peak FLOP/s of matmul-class work (tensor cores, dense)
    vector_flops: float  # peak FLOP/s of everything else
    bandwidth: float  # memory bytes/s
    source: str = ""


# One table. Datasheet peaks: dense (no sparsity), bf16 tensor-core for matmul, fp32 CUDA cores
# for vector work, HBM bandwidth. "cpu" is measured on this machine (calibrate_cpu).
HARDWARE = {
    "H200": Hardware("NVIDIA H200 SXM", 989e12, 67e12, 4.8e12, "NVIDIA H200 datasheet"),
    "H100": Hardware("NVIDIA H100 SXM", 989e12, 67e12, 3.35e12, "NVIDIA H100 datasheet"),
    "A100": Hardware("NVIDIA A100 SXM 80GB", 312e12, 19.5e12, 2.039e12, "NVIDIA A100 datasheet"),
    "V100": Hardware("NVIDIA V100 SXM2", 125e12, 15.7e12, 0.9e12, "NVIDIA V100 datasheet"),
    "TPU v3": Hardware("Google TPU v3 (chip)", 123e12, 15.4e12, 0.9e12,
                       "Google Cloud TPU v3 docs; vector peak an estimate (MXU/8)"),
}


def _cache_path() -> Path:
    root = Path(os.environ.get("EFFMETRICS_CACHE", Path.home() / ".cache" / "effmetrics"))
    import torch

    key = f"{platform.processor()}|{platform.machine()}|{os.cpu_count()}|" \
          f"{torch.get_num_threads()}|{torch.__version__}"
    return root / f"cpu-{hashlib.sha1(key.encode()).hexdigest()[:12]}.json"


def calibrate_cpu(recalibrate: bool = False) -> Hardware:
    """This CPU's peaks, measured once (a 1024^2 fp32 matmul; an add on 64K elements, which
    stay in cache; a 32M-element copy, which does not) and cached under ~/.cache/effmetrics
    (EFFMETRICS_CACHE overrides)."""
    path = _cache_path()
    if path.exists() and not recalibrate:
        return Hardware(**json.loads(path.read_text()))
    import torch

    from effmetrics.timing import benchmark

    n = 1024
    a = torch.randn(n, n)
    matmul = 2 * n ** 3 / benchmark(torch.mm, a, a, min_run_time=0.3).median
    v = torch.randn(1 << 16)
    vector = v.numel() / benchmark(torch.add, v, v, min_run_time=0.3).median
    src, dst = torch.randn(1 << 25), torch.empty(1 << 25)
    bandwidth = 2 * 4 * src.numel() / benchmark(dst.copy_, src, min_run_time=0.3).median
    hw = Hardware(f"this CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)",
                  matmul, vector, bandwidth, "measured by effmetrics.calibrate_cpu")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(hw)))
    return hw


def hardware(name: str | Hardware) -> Hardware:
    if isinstance(name, Hardware):
        return name
    if name == "cpu":
        return calibrate_cpu()
    if name not in HARDWARE:
        raise ValueError(f"unknown hardware {name!r}; presets: {', '.join(HARDWARE)}, cpu "
                         "(measured here), or pass an effmetrics.roofline.Hardware")
    return HARDWARE[name]


MEASURED_COLUMNS = ("time_s", "latency_median")


def roofline(report_or_df, hw: str | Hardware = "cpu", by: str = "module"):
    """Predicted time per row of a Report's by_module()/by_op() (by="module"/"op") or of any
    table with flops_matmul, flops_vector, bytes_read, bytes_written (e.g. em.load(store)).

    Adds compute_s, memory_s, predicted_s, bound ("compute"/"memory") and, where a measured time
    is known (time_s from profile(time=True), or latency_median), measured_s,
    achieved_fraction (predicted / measured) and mfu (matmul FLOP/s over the matmul peak).
    """
    h = hardware(hw)
    if hasattr(report_or_df, "by_module"):
        df = report_or_df.by_module() if by == "module" else report_or_df.by_op()
        if not report_or_df.timed:
            df = df.drop(columns=["time_s"], errors="ignore")
    else:
        df = report_or_df.copy()
    need = ["flops_matmul", "flops_vector", "bytes_read", "bytes_written"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise KeyError(f"roofline needs columns {need}; missing {missing}")
    out = df.copy()
    out["compute_s"] = out["flops_matmul"] / h.matmul_flops + out["flops_vector"] / h.vector_flops
    out["memory_s"] = (out["bytes_read"] + out["bytes_written"]) / h.bandwidth
    out["predicted_s"] = out[["compute_s", "memory_s"]].max(axis=1)
    out["bound"] = (out["compute_s"] >= out["memory_s"]).map({True: "compute", False: "memory"})
    measured = next((c for c in MEASURED_COLUMNS if c in out.columns), None)
    if measured is not None:
        m = out[measured].where(out[measured] > 0)
        out["measured_s"] = m
        out["achieved_fraction"] = out["predicted_s"] / m
        out["mfu"] = out["flops_matmul"] / m / h.matmul_flops
    out.attrs["hardware"] = dataclasses.asdict(h)
    return out
