"""Memory of a profiled pass: peak allocated bytes, and activation bytes (tensors saved for
backward), per module."""
from __future__ import annotations

import contextlib

import torch

from effmetrics import _C

PEAK_METHODS = {
    "cuda": "CUDA caching allocator: peak allocated bytes during the pass, absolute (what "
            "torch.cuda.max_memory_allocated reports after a reset)",
    "cpu": "CPU allocator reports: peak of tensor bytes allocated and not yet freed during the "
           "pass (memory held before the pass is not included)",
    "meta": "meta: nothing is allocated",
}


class ActivationRecorder:
    """saved_tensors_hooks that add up the distinct storages autograd saves for backward,
    charged to the module running when each is first saved. Parameters are not activations
    (they are held anyway) and are left out."""

    def __init__(self, parameters):
        self._params = {p.untyped_storage()._cdata for p in parameters}
        self._seen: set = set()
        self.by_module: dict[str, int] = {}

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = storage._cdata  # the storage stays alive while saved: no address reuse
        if key not in self._seen and key not in self._params:
            self._seen.add(key)
            module = _C.current_scope_name()
            self.by_module[module] = self.by_module.get(module, 0) + storage.nbytes()
        return t

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    @property
    def total(self) -> int:
        return sum(self.by_module.values())


@contextlib.contextmanager
def measure_memory(device: torch.device, parameters):
    """Yields a dict filled on exit: peak_memory_bytes, peak_memory_method, activation
    bytes (total and by module)."""
    result: dict = {}
    recorder = ActivationRecorder(parameters)
    tracker = _C.MemoryTracker()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    tracker.start()
    try:
        with recorder.hooks():
            yield result
    finally:
        tracker.stop()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            peak = tracker.peak_total_bytes("cuda")
        elif device.type == "cpu":
            peak = tracker.peak_bytes("cpu")
        else:
            peak = None
        result.update(peak_memory_bytes=peak,
                      peak_memory_method=PEAK_METHODS.get(device.type, PEAK_METHODS["meta"]),
                      activation_bytes=recorder.total,
                      activation_bytes_by_module=dict(recorder.by_module))
