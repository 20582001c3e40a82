"""Roofline: what each op, module or model would take on given hardware if it ran at the peaks,
compute- or memory-bound, against what was measured.

predicted = max(matmul FLOPs / matmul peak + vector FLOPs / vector peak, bytes / bandwidth)

per op (each (module, op, phase) cell of a Report); a module's or the model's prediction is the
sum of its ops' predictions, so a compute-bound matmul and a memory-bound softmax each cost
their own bound (a max over the totals would let one hide the other).

Bytes are effmetrics' no-cache lower bound of memory traffic, so "memory-bound" here means
bound even with perfect reuse inside each op.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import warnings
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Hardware:
    name: str
    matmul_flops: float  # peak FLOP/s of matmul-class work: bf16 tensor cores, dense (V100: fp16)
    vector_flops: float  # peak FLOP/s of everything else
    bandwidth: float  # memory bytes/s
    source: str = ""
    # Dense matmul peak FLOP/s per dtype name ("bfloat16", "float16", "float32", "tfloat32",
    # "float8_e4m3fn", "float8_e5m2"). "float32" is the FP32 (CUDA-core, non-tensor) peak;
    # "tfloat32" the TF32 tensor-core peak, which fp32 matmuls reach only with TF32 enabled
    # (see matmul_peak). A dtype missing here has no known peak: MFU is not computed for it.
    matmul_peaks: dict[str, float] = dataclasses.field(default_factory=dict, hash=False)
    sms: int | None = None  # streaming multiprocessors of the full chip (fewer: a MIG slice)


def _nvidia(name: str, fp32: float, tf32: float, half: float, bandwidth: float, source: str,
            sms: int | None, fp8: float | None = None) -> Hardware:
    """A datasheet row: FP32 (non-tensor), TF32 / BF16 = FP16 / FP8 tensor-core dense peaks."""
    peaks = {"bfloat16": half, "float16": half, "float32": fp32, "tfloat32": tf32}
    if fp8 is not None:
        peaks.update(float8_e4m3fn=fp8, float8_e5m2=fp8)
    return Hardware(name, half, fp32, bandwidth, source, peaks, sms)


_HALVED = "; dense = the datasheet's 'with sparsity' tensor-core figures halved"
_A100 = "NVIDIA A100 datasheet (dense figures as listed)"

# One table. Datasheet peaks: dense (no sparsity), bf16 tensor-core for matmul, fp32 CUDA cores
# for vector work, HBM bandwidth. "cpu" is measured on this machine (calibrate_cpu).
# Hopper's bf16 989e12 (the table's first figure) rounds the H100 whitepaper's 989.4 TFLOPS
# (datasheet: 1,979 with sparsity / 2 = 989.5); TF32 and FP8 are the datasheet's halved.
HARDWARE = {
    "H200": _nvidia("NVIDIA H200 SXM", 67e12, 494.5e12, 989e12, 4.8e12,
                    "NVIDIA H200 datasheet" + _HALVED, 132, fp8=1979e12),
    "H200 NVL": _nvidia("NVIDIA H200 NVL", 60e12, 417.5e12, 835.5e12, 4.8e12,
                        "NVIDIA H200 datasheet" + _HALVED, None, fp8=1670.5e12),
    "H100": _nvidia("NVIDIA H100 SXM", 67e12, 494.5e12, 989e12, 3.35e12,
                    "NVIDIA H100 datasheet" + _HALVED, 132, fp8=1979e12),
    "H100 PCIe": _nvidia("NVIDIA H100 PCIe", 51e12, 378e12, 756.5e12, 2.0e12,
                         "NVIDIA H100 datasheet" + _HALVED, 114, fp8=1513e12),
    "A100": _nvidia("NVIDIA A100 SXM 80GB", 19.5e12, 156e12, 312e12, 2.039e12, _A100, 108),
    "A100 40GB": _nvidia("NVIDIA A100 SXM 40GB", 19.5e12, 156e12, 312e12, 1.555e12, _A100, 108),
    "A100 PCIe": _nvidia("NVIDIA A100 PCIe 80GB", 19.5e12, 156e12, 312e12, 1.935e12, _A100, 108),
    "A100 PCIe 40GB": _nvidia("NVIDIA A100 PCIe 40GB", 19.5e12, 156e12, 312e12, 1.555e12, _A100,
                              108),
    "L4": _nvidia("NVIDIA L4", 30.3e12, 60e12, 121e12, 300e9, "NVIDIA L4 datasheet" + _HALVED,
                  58, fp8=242.5e12),
    # Volta has no bf16 and no TF32: matmul_flops is its fp16 tensor-core peak.
    "V100": Hardware("NVIDIA V100 SXM2", 125e12, 15.7e12, 0.9e12, "NVIDIA V100 datasheet",
                     {"float16": 125e12, "float32": 15.7e12}, 80),
    "TPU v3": Hardware("Google TPU v3 (chip)", 123e12, 15.4e12, 0.9e12,
                       "Google Cloud TPU v3 docs; vector peak an estimate (MXU/8)",
                       {"bfloat16": 123e12}),
}
# Other spellings hardware() accepts.
ALIASES = {"H200 SXM": "H200", "H100 SXM": "H100", "A100 SXM": "A100", "A100 80GB": "A100",
           "A100 SXM 80GB": "A100", "A100 SXM 40GB": "A100 40GB", "A100 PCIe 80GB": "A100 PCIe",
           "V100 SXM2": "V100"}


def _cache_path() -> Path:
    root = Path(os.environ.get("EFFMETRICS_CACHE", Path.home() / ".cache" / "effmetrics"))
    import torch

    key = f"{platform.processor()}|{platform.machine()}|{os.cpu_count()}|" \
          f"{torch.get_num_threads()}|{torch.__version__}"
    return root / f"cpu-{hashlib.sha1(key.encode()).hexdigest()[:12]}.json"


def calibrate_cpu(recalibrate: bool = False) -> Hardware:
    """This CPU's peaks, measured once (a 1024^2 fp32 matmul; an add on 64K elements, which
    stay in cache; a 32M-element copy, which does not) and cached under ~/.cache/effmetrics
    (EFFMETRICS_CACHE overrides). Its matmul_peaks holds float32 only: the measured matmul."""
    path = _cache_path()
    if path.exists() and not recalibrate:
        fields = json.loads(path.read_text())
        fields.setdefault("matmul_peaks", {"float32": fields["matmul_flops"]})  # older caches
        return Hardware(**fields)
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
                  matmul, vector, bandwidth, "measured by effmetrics.calibrate_cpu",
                  {"float32": matmul})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(hw)))
    return hw


def hardware(name: str | Hardware) -> Hardware:
    if isinstance(name, Hardware):
        return name
    if name == "cpu":
        return calibrate_cpu()
    name = ALIASES.get(name, name)
    if name not in HARDWARE:
        raise ValueError(f"unknown hardware {name!r}; presets: {', '.join(HARDWARE)}, cpu "
                         "(measured here), or pass an effmetrics.roofline.Hardware")
    return HARDWARE[name]


MEASURED_COLUMNS = ("time_s", "latency_median")
_COST_COLUMNS = ["flops_matmul", "flops_vector", "bytes_read", "bytes_written"]


def roofline_times(df, hw: Hardware):
    """(compute_s, memory_s, predicted_s) of each row of a table of counts on hw: the one
    roofline formula (predicted_s is the larger of the two)."""
    missing = [c for c in _COST_COLUMNS if c not in df.columns]
    if missing:
        raise KeyError(f"roofline needs columns {_COST_COLUMNS}; missing {missing}")
    compute = df["flops_matmul"] / hw.matmul_flops + df["flops_vector"] / hw.vector_flops
    memory = (df["bytes_read"] + df["bytes_written"]) / hw.bandwidth
    return compute, memory, compute.where(compute >= memory, memory)


def _subtree_sums(names, by_module: dict) -> list:
    """For each module name, the sum of by_module's values over it and its descendants."""
    inclusive: dict = {}
    for name, value in by_module.items():
        parts = name.split(".") if name else []
        for i in range(len(parts) + 1):  # the module itself and every ancestor, "" included
            key = ".".join(parts[:i])
            inclusive[key] = inclusive.get(key, 0.0) + value
    return [inclusive.get(n, 0.0) for n in names]


def _per_op(report, out, h: Hardware, by: str) -> None:
    """predicted_s and bound of report rows (by module or op) as sums over the report's op cells:
    bound is "compute" when the compute-bound ops take at least half of the predicted time."""
    import pandas as pd

    cells = report.ops()
    compute, memory, predicted = roofline_times(cells, h)
    cells = cells.assign(predicted_s=predicted, compute_part=predicted.where(compute >= memory, 0))
    if by == "module":
        own = cells.groupby("module")[["predicted_s", "compute_part"]].sum()
        out["predicted_s"] = _subtree_sums(out.index, own["predicted_s"].to_dict())
        part = pd.Series(_subtree_sums(out.index, own["compute_part"].to_dict()), out.index)
    else:
        own = cells.groupby("op")[["predicted_s", "compute_part"]].sum()
        out["predicted_s"] = own["predicted_s"].reindex(out.index, fill_value=0.0)
        part = own["compute_part"].reindex(out.index, fill_value=0.0)
    out["bound"] = (2 * part >= out["predicted_s"]).map({True: "compute", False: "memory"})


def roofline(report_or_df, hw: str | Hardware = "cpu", by: str = "module", dtype=None):
    """Predicted time per row of a Report's by_module()/by_op() (by="module"/"op") or of any
    table with flops_matmul, flops_vector, bytes_read, bytes_written (e.g. em.load(store)).

    Adds compute_s and memory_s (the row's totals over the peaks), predicted_s, bound
    ("compute"/"memory") and, where a measured time is known (time_s from profile(time=True), or
    latency_median), measured_s, achieved_fraction (predicted / measured) and mfu (matmul FLOP/s
    over the matmul peak).

    From a Report, predicted_s is per op: the sum over the row's (module, op, phase) cells of
    max(compute, memory) (a module row: its whole subtree; "" is the model, equal to
    em.predict_latency), and bound says which kind of op takes most of it. A plain table has no
    cells: each row is one roofline, max(compute_s, memory_s).

    The matmul peak is hw.matmul_flops (bf16), or with dtype= (a torch.dtype) that dtype's
    dense peak (matmul_peak: float32 follows the TF32 setting).
    """
    if by not in ("module", "op"):
        raise ValueError(f"by must be 'module' or 'op', not {by!r}")
    h = hardware(hw)
    if dtype is not None:
        peak = matmul_peak(h, dtype)
        if peak is None:
            raise ValueError(f"{h.name} has no dense {_dtype_name(dtype)} matmul peak; presets' "
                             f"peaks: {h.matmul_peaks}")
        h = dataclasses.replace(h, matmul_flops=peak)
    report = report_or_df if hasattr(report_or_df, "by_module") else None
    if report is not None:
        df = report.by_module() if by == "module" else report.by_op()
        if not report.timed:
            df = df.drop(columns=["time_s"], errors="ignore")
    else:
        df = report_or_df.copy()
    out = df.copy()
    out["compute_s"], out["memory_s"], out["predicted_s"] = roofline_times(out, h)
    out["bound"] = (out["compute_s"] >= out["memory_s"]).map({True: "compute", False: "memory"})
    if report is not None:
        _per_op(report, out, h, by)
    measured = next((c for c in MEASURED_COLUMNS if c in out.columns), None)
    if measured is not None:
        m = out[measured].where(out[measured] > 0)
        out["measured_s"] = m
        out["achieved_fraction"] = out["predicted_s"] / m
        out["mfu"] = out["flops_matmul"] / m / h.matmul_flops
    out.attrs["hardware"] = dataclasses.asdict(h)
    return out


# ---- per-dtype peaks and device detection (MFU) ----

def _dtype_name(dtype) -> str:
    """torch.bfloat16 / "torch.bfloat16" / "bfloat16" -> "bfloat16"."""
    return str(dtype).removeprefix("torch.")


def tf32_enabled(op: str = "matmul") -> bool:
    """Whether torch runs float32 matmuls (op="matmul", cuBLAS) or convolutions (op="conv",
    cuDNN) on TF32 tensor cores (Ampere and newer). Matmul default: no (IEEE fp32) unless
    torch.backends.cuda.matmul.allow_tf32 = True, torch.set_float32_matmul_precision("high" or
    "medium"), or the fp32_precision = "tf32" API; convolution default: yes
    (torch.backends.cudnn.allow_tf32 is True by default)."""
    import torch

    if op not in ("matmul", "conv"):
        raise ValueError(f"op must be 'matmul' or 'conv', not {op!r}")
    backend = torch.backends.cuda.matmul if op == "matmul" else torch.backends.cudnn.conv
    try:  # the newer API; "none" defers to the legacy flags
        precision = backend.fp32_precision
    except (AttributeError, RuntimeError):
        precision = "none"
    if precision in ("tf32", "ieee"):
        return precision == "tf32"
    try:  # reading a legacy flag raises once the new API has been used for the same op
        if op == "matmul":
            return bool(torch.backends.cuda.matmul.allow_tf32) \
                or torch.get_float32_matmul_precision() != "highest"
        return bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:
        return op == "conv"


def matmul_peak(hw: Hardware, dtype, tf32: bool | None = None) -> float | None:
    """Dense matmul peak FLOP/s of hw for dtype (a torch.dtype or its name), None where the
    table lacks it. float32 means the TF32 tensor-core peak when TF32 matmul is enabled
    (tf32=None: torch's current setting, see tf32_enabled) and the chip has one, else the FP32
    peak. On CPU (calibrate_cpu) only float32 is known."""
    name = _dtype_name(dtype)
    if name == "float32":
        if tf32 is None:
            tf32 = tf32_enabled("matmul")
        if tf32 and "tfloat32" in hw.matmul_peaks:
            return hw.matmul_peaks["tfloat32"]
    return hw.matmul_peaks.get(name)


def _gb_in_name(name: str) -> int | None:
    m = re.search(r"(\d+)\s*gb", name)
    return int(m.group(1)) if m else None


def match_device_name(name: str, total_memory_bytes: int | None = None) -> str | None:
    """The HARDWARE key for a CUDA device name (torch.cuda.get_device_properties(i).name), or
    None when the name is not one this table knows for certain (never a guess): "NVIDIA H100
    80GB HBM3" -> "H100" (SXM), "NVIDIA H100 PCIe" -> "H100 PCIe", "NVIDIA H200" -> "H200",
    "NVIDIA H200 NVL" -> "H200 NVL", "NVIDIA A100-SXM4-40GB" -> "A100 40GB",
    "NVIDIA A100-SXM4-80GB" -> "A100", "NVIDIA A100-PCIE-40GB" -> "A100 PCIe 40GB",
    "NVIDIA A100 80GB PCIe" -> "A100 PCIe", "NVIDIA L4" -> "L4", "Tesla V100-SXM2-16GB" ->
    "V100". The memory size decides 40 vs 80 GB where the name does not say it. MIG slices,
    GH200, H100 NVL, H800/A800, L40 and other chips -> None."""
    n = name.lower()
    if re.search(r"\bmig\b", n):
        return None  # a MIG slice has a fraction of the chip's peak

    def has(word: str) -> bool:
        return re.search(rf"(?<![a-z0-9]){word}(?![a-z0-9])", n) is not None

    gb = _gb_in_name(n)
    pcie, sxm, nvl = "pcie" in n, "sxm" in n, has("nvl")
    if has("h200"):
        return "H200 NVL" if nvl else None if pcie else "H200"
    if has("h100"):
        if nvl or gb not in (None, 80):
            return None  # H100 NVL (94 GB), the 64/94 GB SXM variants: other peaks
        if pcie:
            return "H100 PCIe"
        return "H100" if sxm or "hbm3" in n else None
    if has("a100"):
        if gb is None and total_memory_bytes:
            gb = 80 if total_memory_bytes > 60 * 2**30 else 40
        if gb not in (40, 80) or pcie == sxm:
            return None
        return ("A100 PCIe" if pcie else "A100") + (" 40GB" if gb == 40 else "")
    if has("l4"):
        return "L4"
    if has("v100") and "sxm2" in n:
        return "V100"
    return None


def _as_device(device):
    import torch

    return device if isinstance(device, torch.device) else torch.device(device)


def _detect(device) -> tuple[Hardware | None, str]:
    """(hardware, "") or (None, why not)."""
    import torch

    dev = _as_device(device)
    if dev.type == "cpu":
        return calibrate_cpu(), ""
    if dev.type != "cuda":
        return None, f"no peak table for device type {dev.type!r}"
    if not torch.cuda.is_available():
        return None, f"device {str(dev)!r}: CUDA is not available"
    props = torch.cuda.get_device_properties(dev.index if dev.index is not None
                                             else torch.cuda.current_device())
    key = match_device_name(props.name, props.total_memory)
    if key is None:
        return None, f"unknown device {props.name!r}"
    hw = HARDWARE[key]
    if hw.sms is not None and props.multi_processor_count < hw.sms:
        return None, (f"{props.name!r} shows {props.multi_processor_count} SMs, the full "
                      f"{hw.name} {hw.sms} (a MIG slice or partition)")
    return hw, ""


def detect_hardware(device) -> Hardware | None:
    """The HARDWARE preset of a CUDA device (by name and memory, see match_device_name), the
    calibrated preset for the CPU (calibrate_cpu), None for anything else."""
    return _detect(device)[0]


def device_peak(device, dtype, peak_flops: float | None = None) -> tuple[float | None, str]:
    """(peak FLOP/s for MFU, where it came from) for dense matmuls of dtype on device.

    An explicit peak_flops wins. Otherwise the device's preset (detect_hardware) and
    matmul_peak(hw, dtype): e.g. (989e12, "NVIDIA H200 SXM bfloat16 dense, NVIDIA H200
    datasheet..."). An unknown device, or a dtype its preset lacks, gives (None, reason) and a
    warning that says to pass peak_flops=: never a wrong number."""
    if peak_flops is not None:
        return float(peak_flops), "peak_flops= given"
    name = _dtype_name(dtype)
    hw, reason = _detect(device)
    peak, tf32 = None, name == "float32" and tf32_enabled("matmul")
    if hw is not None:
        peak = matmul_peak(hw, dtype, tf32)
        if peak is None:
            known = ", ".join(hw.matmul_peaks) or "none"
            reason = f"{hw.name} has no dense {name} matmul peak (known: {known}; {hw.source})"
    if peak is None:
        reason += ": MFU not computed"
        warnings.warn(f"effmetrics: {reason}. Pass peak_flops= (the device's dense {name} "
                      "matmul FLOP/s) to compute MFU.", stacklevel=2)
        return None, reason
    label = name
    if name == "float32" and "tfloat32" in hw.matmul_peaks:
        label = "float32 (TF32 tensor cores)" if tf32 else "float32 (FP32, TF32 off)"
    return peak, f"{hw.name} {label} dense, {hw.source}"
