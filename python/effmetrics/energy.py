"""Energy meters: a joule counter per device, read at two points of a training loop.

    meter = open_meter(device)          # never raises; a NoMeter (with .reason) if unavailable
    j0 = meter.read_j(); ...; joules = meter.read_j() - j0
    energy_summary(joules, seconds, examples)  # energy_j, avg_power_w, joules_per_example

CUDA: NVML's total-energy counter (millijoules since the driver loaded; Volta and newer) through
the pynvml module of nvidia-ml-py, imported only here and only when asked (not a dependency).
It is the whole GPU's energy, whatever else runs on it (and the whole GPU under MIG).
CPU: RAPL's package domains under /sys/class/powercap (intel-rapl:N, name "package-N"; their
subdomains core/uncore/dram are parts of a package, or beside it, and are skipped so nothing is
counted twice). That is every process on the sockets, not this one alone. Its counters wrap at
max_energy_range_uj (minutes at full power on big servers): read at least once per wrap.
energy_uj is root-only on Linux >= 5.10, and containers often hide powercap altogether.

Both count energy consumed, not work queued: synchronize the device (torch.cuda.synchronize())
before reading. NVML's counter updates every few tens of milliseconds: spans shorter than a
second or so are coarse.
"""
from __future__ import annotations

import math
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import Callable

__all__ = ["EnergyMeter", "EnergySpan", "MeterReader", "NoMeter", "NvmlMeter", "RaplMeter",
           "energy_summary", "open_meter", "open_nvml", "open_rapl"]

POWERCAP = "/sys/class/powercap"


class EnergyMeter:
    """read_j(): joules consumed since the meter opened, monotonically increasing (counter
    wrap-around and resets handled). source: where the joules come from. Falsy if unavailable."""

    source = ""
    reason = ""  # why a meter is unavailable ("" for a working one)
    available = True

    def read_j(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __bool__(self) -> bool:
        return self.available

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source if self.available else self.reason!r})"


class NoMeter(EnergyMeter):
    """No energy counter here; reason says why. read_j() is NaN, which energy_summary turns
    into None."""

    available = False
    source = "none"

    def __init__(self, reason: str):
        self.reason = reason

    def read_j(self) -> float:
        return math.nan


class _Accumulator:
    """Turns a raw counter that wraps (at `wrap`, or a reset to a smaller value when wrap is None)
    into a running total from the first reading."""

    def __init__(self, first: int, wrap: int | None):
        self.last, self.wrap, self.total = first, wrap, 0

    def update(self, raw: int) -> int:
        delta = raw - self.last
        if delta < 0:  # wrapped (RAPL) or reset (driver reload): count from the new zero
            delta = raw + (self.wrap - self.last if self.wrap else 0)
        self.last = raw
        self.total += delta
        return self.total


class RaplMeter(EnergyMeter):
    """Sum of RAPL package domains: [(name, energy_uj path, max_energy_range_uj)]."""

    def __init__(self, domains: list[tuple[str, Path, int]]):
        self._domains = [(path, _Accumulator(_read_int(path), wrap)) for _, path, wrap in domains]
        self.source = "rapl:" + "+".join(name for name, _, _ in domains)
        self._lock = threading.Lock()

    def read_j(self) -> float:
        with self._lock:
            return sum(acc.update(_read_int(path)) for path, acc in self._domains) * 1e-6


class NvmlMeter(EnergyMeter):
    """NVML's nvmlDeviceGetTotalEnergyConsumption (mJ) for one GPU handle."""

    def __init__(self, nvml, handle, name: str, first_mj: int):
        self._nvml, self._handle = nvml, handle
        self._acc = _Accumulator(first_mj, None)  # a 64-bit counter: it never wraps in practice
        self.source = f"nvml:{name}"
        self._lock = threading.Lock()
        self._open = True

    def read_j(self) -> float:
        with self._lock:
            mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            return self._acc.update(mj) * 1e-3

    def close(self) -> None:
        if self._open:
            self._open = False
            _nvml_shutdown(self._nvml)


class MeterReader:
    """Reads a meter on a thread of its own at each mark(), so the caller never waits for a
    read: NVML's energy counter takes 3-15 ms a read on the H200 machine (README: "GPU
    figures"), which on the training thread between steps would be device idle time the
    Counter itself creates. Reads happen in mark order, each within the
    reader thread's wake-up latency of its mark; ctypes (pynvml) and file reads (RAPL) release
    the GIL meanwhile."""

    _STOP = object()

    def __init__(self, meter: EnergyMeter):
        self._meter = meter
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._cv = threading.Condition()
        self._posted = self._done = 0
        self._last: float | None = None
        self._thread = threading.Thread(target=self._run, name="effmetrics-energy", daemon=True)
        self._thread.start()

    def mark(self, row: dict | None = None) -> None:
        """A step boundary. row (None: the first mark): gets ``row["energy_j"]``, the joules
        since the previous mark, once read (None if the meter failed)."""
        with self._cv:
            self._posted += 1
        self._queue.put(row)

    def _run(self) -> None:
        while True:
            row = self._queue.get()
            if row is self._STOP:
                return
            try:
                e = self._meter.read_j()
            except Exception:  # a meter that fails mid-run: that step's energy is unknown
                e = math.nan
            if row is not None:
                ok = self._last is not None and not math.isnan(e) and not math.isnan(self._last)
                row["energy_j"] = e - self._last if ok else None
            self._last = e
            with self._cv:
                self._done += 1
                self._cv.notify_all()

    def flush(self, timeout: float = 30.0) -> None:
        """Waits until every mark so far has been read."""
        with self._cv:
            self._cv.wait_for(lambda: self._done >= self._posted, timeout)

    def close(self) -> None:
        self.flush()
        self._queue.put(self._STOP)
        self._thread.join(timeout=30.0)


def _read_int(path: Path) -> int:
    return int(Path(path).read_text().strip())


def _rapl_index(p: Path) -> int:
    return int(p.name.split(":")[1])


def open_rapl(root: str | os.PathLike = POWERCAP) -> EnergyMeter:
    """A RaplMeter over every package domain under root, or a NoMeter saying what is missing."""
    root = Path(root)
    try:
        zones = sorted((p for p in root.iterdir() if re.fullmatch(r"intel-rapl:\d+", p.name)),
                       key=_rapl_index)
    except OSError:
        zones = []
    domains, unreadable = [], []
    for zone in zones:
        try:
            name = (zone / "name").read_text().strip()
        except OSError:
            continue
        if not name.startswith("package"):
            continue  # psys (the platform, which includes the packages) and the like
        energy = zone / "energy_uj"
        try:
            _read_int(energy)
            wrap = _read_int(zone / "max_energy_range_uj")
        except PermissionError:
            unreadable.append(str(energy))
            continue
        except (OSError, ValueError) as e:
            unreadable.append(f"{energy} ({e})")
            continue
        domains.append((name, energy, wrap))
    if unreadable:
        return NoMeter(f"RAPL energy not readable: {', '.join(unreadable)} (root-only on Linux "
                       ">= 5.10; run as root or grant read access to energy_uj)")
    if not domains:
        return NoMeter(f"no {root}/intel-rapl:N package domain readable (containers often hide "
                       "it; not an Intel/AMD RAPL machine?)")
    return RaplMeter(domains)


def _import_pynvml():
    import pynvml

    return pynvml


def _nvml_shutdown(nvml) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:  # shutting down is best effort
        pass


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _nvml_handle(nvml, index: int):
    """NVML's handle for torch's CUDA device `index`. NVML numbers every GPU on the machine and
    ignores CUDA_VISIBLE_DEVICES, so go by the PCI bus id or UUID torch reports, else map the
    index through CUDA_VISIBLE_DEVICES."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(index)
        domain, bus, dev = (getattr(props, f"pci_{k}_id", None)
                            for k in ("domain", "bus", "device"))
        if None not in (domain, bus, dev):
            try:
                return nvml.nvmlDeviceGetHandleByPciBusId(f"{domain:08X}:{bus:02X}:{dev:02X}.0")
            except Exception:  # fall through to the UUID
                pass
        uuid = getattr(props, "uuid", None)
        if uuid is not None:
            try:
                return nvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
            except Exception:  # fall through to the index
                pass
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
               if v.strip()]
    if not visible:
        return nvml.nvmlDeviceGetHandleByIndex(index)
    if index >= len(visible):
        raise ValueError(f"cuda:{index} is not visible (CUDA_VISIBLE_DEVICES="
                         f"{os.environ['CUDA_VISIBLE_DEVICES']})")
    entry = visible[index]
    if entry.isdigit():
        return nvml.nvmlDeviceGetHandleByIndex(int(entry))
    return nvml.nvmlDeviceGetHandleByUUID(entry)


def open_nvml(index: int = 0, nvml=None) -> EnergyMeter:
    """An NvmlMeter for torch's CUDA device `index`, or a NoMeter saying why not. nvml: the
    pynvml module (default: import it; tests pass a fake)."""
    if nvml is None:
        try:
            nvml = _import_pynvml()
        except ImportError:
            return NoMeter("nvidia-ml-py not installed (pip install nvidia-ml-py): no GPU energy")
    try:
        nvml.nvmlInit()
    except Exception as e:  # any NVML failure means no meter
        return NoMeter(f"NVML failed to initialize ({e}): no NVIDIA driver here?")
    try:
        handle = _nvml_handle(nvml, index)
        name = _text(nvml.nvmlDeviceGetName(handle))
    except Exception as e:
        _nvml_shutdown(nvml)
        return NoMeter(f"NVML has no device for cuda:{index} ({e})")
    try:
        first = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as e:
        _nvml_shutdown(nvml)
        return NoMeter(f"NVML energy counter not supported on this GPU ({name}: {e}); it needs "
                       "Volta or newer and a full GPU (not a MIG slice or a vGPU)")
    return NvmlMeter(nvml, handle, name, first)


def open_meter(device, *, nvml=None, powercap_root: str | os.PathLike = POWERCAP
               ) -> EnergyMeter:
    """The energy meter for a torch device: NVML for CUDA, RAPL for the CPU, else a NoMeter.
    Never raises: anything unavailable is a NoMeter whose .reason says why."""
    try:
        import torch

        dev = device if isinstance(device, torch.device) else torch.device(device)
        if dev.type == "cpu":
            return open_rapl(powercap_root)
        if dev.type == "cuda":
            if getattr(torch.version, "hip", None):
                return NoMeter("ROCm GPU: no energy reader (NVML is NVIDIA's)")
            index = dev.index
            if index is None:
                index = torch.cuda.current_device() if torch.cuda.is_available() else 0
            return open_nvml(index, nvml)
        return NoMeter(f"no energy meter for device type {dev.type!r}")
    except Exception as e:  # a meter is optional; never fail the caller
        return NoMeter(f"opening an energy meter for {device!r} failed: {e!r}")


def _defined(x) -> bool:
    return x is not None and math.isfinite(x)


def energy_summary(joules: float | None, seconds: float | None,
                   examples: float | None = None) -> dict[str, float | None]:
    """{"energy_j", "avg_power_w", "joules_per_example"}; None where undefined (no meter:
    joules None or NaN; no time; no examples)."""
    energy = float(joules) if _defined(joules) else None
    power = energy / seconds if energy is not None and seconds and seconds > 0 else None
    per_example = energy / examples if energy is not None and examples and examples > 0 else None
    return {"energy_j": energy, "avg_power_w": power, "joules_per_example": per_example}


class EnergySpan:
    """Joules and seconds between entering and leaving:

        with EnergySpan(meter, sync=torch.cuda.synchronize) as span:
            train_steps()
        span.joules, span.seconds, span.summary(examples=n)

    sync (optional) runs before each reading so queued device work is inside the span."""

    def __init__(self, meter: EnergyMeter, sync: Callable[[], object] | None = None):
        self.meter, self.sync = meter, sync
        self.joules: float | None = None
        self.seconds: float | None = None

    def _read(self) -> tuple[float, float]:
        if self.sync is not None:
            self.sync()
        return self.meter.read_j(), time.perf_counter()

    def __enter__(self) -> EnergySpan:
        self._j0, self._t0 = self._read()
        return self

    def __exit__(self, *exc) -> None:
        j1, t1 = self._read()
        joules = j1 - self._j0
        self.joules = joules if _defined(joules) else None
        self.seconds = t1 - self._t0

    def summary(self, examples: float | None = None) -> dict[str, float | None]:
        return energy_summary(self.joules, self.seconds, examples)
