"""MFU peaks (the per-dtype table, device-name matching, device_peak) and energy meters (RAPL on a
fake sysfs tree, NVML through a fake pynvml), all without a GPU.

Expected peaks are datasheet figures written here with their source, not read from the table.
NVIDIA's Hopper/Ada datasheets print tensor-core figures "with sparsity": dense is half.
"""
import importlib
import math
import pathlib
import types
import warnings

import pandas as pd
import pytest
import torch

import effmetrics as em
from effmetrics import energy
from effmetrics.energy import EnergySpan, NoMeter, energy_summary, open_meter, open_rapl
from effmetrics.roofline import (
    HARDWARE,
    Hardware,
    detect_hardware,
    device_peak,
    match_device_name,
    matmul_peak,
)

# the module (the package's `roofline` attribute is the function em.roofline)
rl = importlib.import_module("effmetrics.roofline")
GiB = 2**30
T = 1e12

# NVIDIA H100 datasheet, SXM: BF16 1,979 TFLOPS*, FP8 3,958*, TF32 989*, FP32 67 (*sparsity)
H100_SXM_BF16 = 1979 * T / 2
H100_SXM_FP8 = 3958 * T / 2
H100_SXM_TF32 = 989 * T / 2
H100_SXM_FP32 = 67 * T
# NVIDIA H100 datasheet, PCIe: BF16 1,513*, FP8 3,026*
H100_PCIE_BF16 = 1513 * T / 2
H100_PCIE_FP8 = 3026 * T / 2
# NVIDIA H200 datasheet, SXM: BF16 1,979*; NVL: BF16 1,671*
H200_SXM_BF16 = 1979 * T / 2
H200_NVL_BF16 = 1671 * T / 2
# NVIDIA A100 datasheet (lists dense): BF16/FP16 312, TF32 156, FP32 19.5; HBM 1,555 GB/s
# (40GB) and 2,039 GB/s (80GB SXM)
A100_BF16, A100_TF32, A100_FP32 = 312 * T, 156 * T, 19.5 * T
# NVIDIA L4 datasheet: FP16 242*, FP8 485*
L4_FP16, L4_FP8 = 242 * T / 2, 485 * T / 2

# Datasheets round to whole TFLOPS (the H100 whitepaper's dense BF16 is 989.4): compare at 0.1%.
approx = lambda x: pytest.approx(x, rel=1e-3)  # noqa: E731


# ---- device names ----

@pytest.mark.parametrize("name,memory_gib,key", [
    ("NVIDIA H100 80GB HBM3", 79.1, "H100"),
    ("NVIDIA H100 PCIe", 79.6, "H100 PCIe"),
    ("NVIDIA H200", 139.8, "H200"),
    ("NVIDIA H200 NVL", 139.8, "H200 NVL"),
    ("NVIDIA A100-SXM4-40GB", 39.4, "A100 40GB"),
    ("NVIDIA A100-SXM4-80GB", 79.2, "A100"),
    ("NVIDIA A100-PCIE-40GB", 39.4, "A100 PCIe 40GB"),
    ("NVIDIA A100 80GB PCIe", 79.2, "A100 PCIe"),
    ("NVIDIA L4", 22.0, "L4"),
    ("Tesla V100-SXM2-16GB", 15.8, "V100"),
    ("Tesla V100-SXM2-32GB", 31.7, "V100"),
])
def test_known_device_names(name, memory_gib, key):
    assert match_device_name(name, int(memory_gib * GiB)) == key
    assert match_device_name(name, None) == key  # none of these needs the memory size


def test_a100_size_from_memory_when_the_name_lacks_it():
    assert match_device_name("NVIDIA A100-SXM4", int(39.4 * GiB)) == "A100 40GB"
    assert match_device_name("NVIDIA A100-SXM4", int(79.2 * GiB)) == "A100"
    assert match_device_name("NVIDIA A100 PCIe", int(79.2 * GiB)) == "A100 PCIe"
    assert match_device_name("NVIDIA A100-SXM4", None) is None  # no size known: no guess


@pytest.mark.parametrize("name", [
    "NVIDIA GeForce RTX 4090", "NVIDIA L40S", "NVIDIA L40", "NVIDIA A10G", "NVIDIA A10",
    "NVIDIA GH200 480GB", "NVIDIA H100 NVL", "NVIDIA H800", "NVIDIA A800-SXM4-80GB",
    "NVIDIA A100-SXM4-40GB MIG 3g.20gb", "Tesla V100-PCIE-16GB", "NVIDIA B200", "", "cpu",
])
def test_unknown_device_names(name):
    assert match_device_name(name, 80 * GiB) is None


# ---- the table and matmul_peak ----

def test_table_peaks_match_the_datasheets():
    h100, pcie = HARDWARE["H100"], HARDWARE["H100 PCIe"]
    assert matmul_peak(h100, torch.bfloat16) == approx(H100_SXM_BF16)
    assert matmul_peak(h100, torch.float16) == approx(H100_SXM_BF16)  # same as bf16
    assert matmul_peak(h100, torch.float8_e4m3fn) == approx(H100_SXM_FP8)
    assert matmul_peak(pcie, torch.bfloat16) == approx(H100_PCIE_BF16)
    assert matmul_peak(pcie, "float8_e4m3fn") == approx(H100_PCIE_FP8)
    assert matmul_peak(HARDWARE["H200"], torch.bfloat16) == approx(H200_SXM_BF16)
    assert matmul_peak(HARDWARE["H200 NVL"], torch.bfloat16) == approx(H200_NVL_BF16)
    for key in ("A100", "A100 40GB", "A100 PCIe", "A100 PCIe 40GB"):
        assert matmul_peak(HARDWARE[key], torch.bfloat16) == approx(A100_BF16)
        assert matmul_peak(HARDWARE[key], torch.float8_e4m3fn) is None  # Ampere has no FP8
    assert HARDWARE["A100 40GB"].bandwidth == approx(1555e9)
    assert HARDWARE["A100"].bandwidth == approx(2039e9)
    assert matmul_peak(HARDWARE["L4"], torch.float16) == approx(L4_FP16)
    assert matmul_peak(HARDWARE["L4"], torch.float8_e4m3fn) == approx(L4_FP8)
    # matmul_flops stays the bf16 dense peak (the roofline's, unchanged)
    for key in ("H100", "H100 PCIe", "H200", "H200 NVL", "A100", "L4", "TPU v3"):
        assert HARDWARE[key].matmul_flops == matmul_peak(HARDWARE[key], torch.bfloat16), key
    # Volta has no bf16 tensor cores; nobody has a float64 matmul entry
    assert matmul_peak(HARDWARE["V100"], torch.bfloat16) is None
    assert matmul_peak(HARDWARE["H100"], torch.float64) is None
    assert matmul_peak(Hardware("toy", 1.0, 1.0, 1.0), torch.bfloat16) is None


def test_float32_peak_follows_tf32():
    h100, a100 = HARDWARE["H100"], HARDWARE["A100"]
    assert matmul_peak(h100, torch.float32, tf32=False) == approx(H100_SXM_FP32)
    assert matmul_peak(h100, torch.float32, tf32=True) == approx(H100_SXM_TF32)
    assert matmul_peak(a100, torch.float32, tf32=True) == approx(A100_TF32)
    assert matmul_peak(HARDWARE["V100"], torch.float32, tf32=True) == approx(15.7 * T)  # no TF32
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")  # torch's default: IEEE fp32
        assert not rl.tf32_enabled()
        assert matmul_peak(a100, torch.float32) == approx(A100_FP32)
        torch.set_float32_matmul_precision("high")  # TF32 allowed
        assert rl.tf32_enabled()
        assert matmul_peak(a100, torch.float32) == approx(A100_TF32)
    finally:
        torch.set_float32_matmul_precision(before)


# ---- device_peak and detect_hardware (CUDA faked) ----

@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda reporting one device; set .props to choose it."""
    state = types.SimpleNamespace(props=None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: state.props)

    def use(name, memory_gib, sms):
        state.props = types.SimpleNamespace(name=name, total_memory=int(memory_gib * GiB),
                                            multi_processor_count=sms)
    return use


def test_device_peak_picks_the_dtypes_dense_peak(fake_cuda):
    fake_cuda("NVIDIA H200", 139.8, 132)  # H200 SXM: 132 SMs
    assert detect_hardware("cuda").name == "NVIDIA H200 SXM"
    peak, why = device_peak(torch.device("cuda", 0), torch.bfloat16)
    assert peak == approx(H200_SXM_BF16)
    assert "H200 SXM bfloat16 dense" in why and "datasheet" in why
    fake_cuda("NVIDIA H100 PCIe", 79.6, 114)
    assert device_peak("cuda:0", torch.float8_e4m3fn)[0] == approx(H100_PCIE_FP8)
    fake_cuda("NVIDIA A100-SXM4-40GB", 39.4, 108)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        peak, why = device_peak("cuda", torch.float32)
        assert peak == approx(A100_FP32) and "TF32 off" in why
        torch.set_float32_matmul_precision("high")
        peak, why = device_peak("cuda", torch.float32)
        assert peak == approx(A100_TF32) and "TF32 tensor cores" in why
    finally:
        torch.set_float32_matmul_precision(before)


def test_explicit_peak_overrides(fake_cuda):
    fake_cuda("NVIDIA GeForce RTX 4090", 23.6, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an override never warns
        assert device_peak("cuda", torch.bfloat16, peak_flops=165.2e12) == \
            (165.2e12, "peak_flops= given")


def test_unknown_device_or_dtype_is_none_with_a_reason(fake_cuda):
    fake_cuda("NVIDIA GeForce RTX 4090", 23.6, 128)
    assert detect_hardware("cuda") is None
    with pytest.warns(UserWarning, match="peak_flops="):
        peak, why = device_peak("cuda", torch.bfloat16)
    assert peak is None and "RTX 4090" in why and "MFU not computed" in why
    fake_cuda("NVIDIA H100 80GB HBM3", 79.1, 132)
    with pytest.warns(UserWarning, match="peak_flops="):
        assert device_peak("cuda", torch.float64)[0] is None
    # a MIG slice shows fewer SMs than the chip: its peak is not the chip's
    fake_cuda("NVIDIA H100 80GB HBM3", 9.8, 16)
    with pytest.warns(UserWarning, match="MIG"):
        assert device_peak("cuda", torch.bfloat16)[0] is None
    with pytest.warns(UserWarning, match="device type 'meta'"):
        assert device_peak("meta", torch.float32) == (None, "no peak table for device type "
                                                            "'meta': MFU not computed")


def test_cpu_peak_is_the_calibrated_float32_matmul(monkeypatch):
    measured = Hardware("this CPU", 2e11, 1e10, 5e10, "measured by effmetrics.calibrate_cpu",
                        {"float32": 2e11})
    monkeypatch.setattr(rl, "calibrate_cpu", lambda: measured)
    assert detect_hardware("cpu") is measured
    assert device_peak("cpu", torch.float32) == (2e11, "this CPU float32 dense, measured by "
                                                       "effmetrics.calibrate_cpu")
    with pytest.warns(UserWarning, match="no dense bfloat16"):
        assert device_peak("cpu", torch.bfloat16)[0] is None


def test_calibration_cache_without_peaks_still_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFMETRICS_CACHE", str(tmp_path))
    path = rl._cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"name": "old", "matmul_flops": 3e11, "vector_flops": 1e10, '
                    '"bandwidth": 4e10, "source": "measured by effmetrics.calibrate_cpu"}')
    hw = em.calibrate_cpu()
    assert hw.matmul_flops == 3e11 and matmul_peak(hw, torch.float32) == 3e11


def test_roofline_with_a_dtype_and_aliases():
    df = pd.DataFrame({"flops_matmul": [H100_PCIE_FP8], "flops_vector": [0.0],
                       "bytes_read": [0.0], "bytes_written": [0.0]}, index=["gemm"])
    assert em.roofline(df, "H100 PCIe", dtype=torch.float8_e4m3fn).loc["gemm", "compute_s"] \
        == approx(1.0)
    assert em.roofline(df, "H100 PCIe").loc["gemm", "compute_s"] == approx(2.0)  # bf16: half
    assert em.roofline(df, "H100 SXM").attrs["hardware"]["name"] == "NVIDIA H100 SXM"
    with pytest.raises(ValueError, match="float8"):
        em.roofline(df, "A100", dtype=torch.float8_e4m3fn)


# ---- RAPL on a fake /sys/class/powercap ----

def _zone(root, zone, name, energy_uj, max_uj=None):
    d = root / zone
    d.mkdir()
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    if max_uj is not None:
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


@pytest.fixture
def powercap(tmp_path):
    wrap = 262_143_328_850  # a typical package max_energy_range_uj
    _zone(tmp_path, "intel-rapl", "intel-rapl", 0)  # the control type, not a domain
    pkg0 = _zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000, wrap)
    core = _zone(tmp_path, "intel-rapl:0:0", "core", 500, wrap)  # inside package-0
    dram = _zone(tmp_path, "intel-rapl:0:1", "dram", 500, wrap)  # beside it: not counted either
    pkg1 = _zone(tmp_path, "intel-rapl:1", "package-1", 7_000_000, wrap)
    _zone(tmp_path, "intel-rapl:2", "psys", 9, wrap)  # the whole platform: would double count
    _zone(tmp_path, "intel-rapl-mmio:0", "package-0", 3, wrap)  # package-0 again, via MMIO
    return types.SimpleNamespace(root=tmp_path, pkg0=pkg0, pkg1=pkg1, core=core, dram=dram,
                                 wrap=wrap)


def _set(zone, uj):
    (zone / "energy_uj").write_text(f"{uj}\n")


def test_rapl_sums_packages_and_skips_subdomains(powercap):
    meter = open_meter(torch.device("cpu"), powercap_root=powercap.root)
    assert meter and meter.source == "rapl:package-0+package-1"
    assert meter.read_j() == 0.0
    _set(powercap.pkg0, 1_000_000 + 2_500_000)  # +2.5 J
    _set(powercap.pkg1, 7_000_000 + 1_000_000)  # +1.0 J
    _set(powercap.core, 10**9)
    _set(powercap.dram, 10**9)
    assert meter.read_j() == pytest.approx(3.5)
    _set(powercap.pkg1, 7_000_000 + 1_500_000)
    assert meter.read_j() == pytest.approx(4.0)


def test_rapl_wraps_around(powercap):
    _set(powercap.pkg0, powercap.wrap - 1_000_000)  # 1 J before the wrap
    meter = open_rapl(powercap.root)
    _set(powercap.pkg0, 2_000_000)  # wrapped, then 2 J more
    assert meter.read_j() == pytest.approx(3.0)
    _set(powercap.pkg0, 2_500_000)
    assert meter.read_j() == pytest.approx(3.5)  # still increasing


def test_rapl_unreadable_or_missing_is_a_no_meter(powercap, monkeypatch, tmp_path_factory):
    real = pathlib.Path.read_text
    blocked = powercap.pkg1 / "energy_uj"

    def read_text(self, *a, **k):  # permissions would not stop root: fake the error
        if self == blocked:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)
    meter = open_meter("cpu", powercap_root=powercap.root)
    assert isinstance(meter, NoMeter) and not meter
    assert str(blocked) in meter.reason and "root" in meter.reason
    assert math.isnan(meter.read_j())
    monkeypatch.undo()
    empty = tmp_path_factory.mktemp("empty")
    for root in (empty, empty / "missing"):
        meter = open_meter("cpu", powercap_root=root)
        assert isinstance(meter, NoMeter) and "containers often hide" in meter.reason


# ---- NVML through a fake pynvml ----

class FakeNVML:
    """The few pynvml calls the meter makes; energy in millijoules like the real one."""

    class NVMLError(Exception):
        def __init__(self, value):
            self.value = value
            super().__init__({3: "Not Supported"}.get(value, f"NVML error {value}"))

    NVML_ERROR_NOT_SUPPORTED = 3

    def __init__(self, mj=5_000_000, supported=True, init_fails=False):
        self.mj, self.supported, self.init_fails = mj, supported, init_fails
        self.indices, self.inits, self.shutdowns = [], 0, 0

    def nvmlInit(self):
        if self.init_fails:
            raise self.NVMLError(9)  # driver not loaded
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, i):
        self.indices.append(i)
        return ("handle", i)

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H200"  # older nvidia-ml-py returns bytes

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.supported:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return self.mj


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return monkeypatch


def test_nvml_meter_reads_joules(no_cuda):
    nvml = FakeNVML(mj=5_000_000)
    meter = open_meter(torch.device("cuda", 0), nvml=nvml)
    assert meter and meter.source == "nvml:NVIDIA H200" and nvml.indices == [0]
    assert meter.read_j() == 0.0
    nvml.mj += 12_345  # mJ
    assert meter.read_j() == pytest.approx(12.345)
    with EnergySpan(meter) as span:
        nvml.mj += 300_000
    assert span.joules == pytest.approx(300.0) and span.seconds >= 0
    meter.close()
    meter.close()
    assert nvml.shutdowns == 1


def test_nvml_index_respects_cuda_visible_devices(no_cuda):
    no_cuda.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    nvml = FakeNVML()
    assert open_meter("cuda:1", nvml=nvml) and nvml.indices == [3]


def test_nvml_unavailable_is_a_no_meter(no_cuda):
    nvml = FakeNVML(supported=False)
    meter = open_meter("cuda", nvml=nvml)
    assert isinstance(meter, NoMeter) and "not supported" in meter.reason
    assert "Not Supported" in meter.reason and nvml.shutdowns == nvml.inits == 1
    meter = open_meter("cuda", nvml=FakeNVML(init_fails=True))
    assert isinstance(meter, NoMeter) and "NVML failed to initialize" in meter.reason

    def missing():
        raise ImportError("No module named 'pynvml'")

    no_cuda.setattr(energy, "_import_pynvml", missing)
    meter = open_meter("cuda")
    assert isinstance(meter, NoMeter) and "nvidia-ml-py not installed" in meter.reason


# ---- this machine, and the summary ----

def test_cpu_meter_here_works_or_says_why():
    meter = open_meter(torch.device("cpu"))  # never raises
    if meter:
        a = meter.read_j()
        torch.randn(256, 256) @ torch.randn(256, 256)
        assert meter.read_j() >= a >= 0 and meter.source.startswith("rapl:package")
    else:
        assert isinstance(meter, NoMeter) and meter.reason
    assert isinstance(open_meter("meta"), NoMeter)
    assert isinstance(open_meter("no-such-device"), NoMeter)


def test_energy_summary():
    # 100 J over 4 s for 50 examples: 25 W, 2 J per example
    assert energy_summary(100.0, 4.0, 50) == {"energy_j": 100.0, "avg_power_w": 25.0,
                                              "joules_per_example": 2.0}
    assert energy_summary(100.0, 0.0, None) == {"energy_j": 100.0, "avg_power_w": None,
                                                "joules_per_example": None}
    nothing = {"energy_j": None, "avg_power_w": None, "joules_per_example": None}
    assert energy_summary(None, 4.0, 50) == nothing
    assert energy_summary(math.nan, 4.0, 50) == nothing  # what a NoMeter's readings give
    with EnergySpan(NoMeter("none here")) as span:
        pass
    assert span.joules is None and span.summary(10) == nothing
