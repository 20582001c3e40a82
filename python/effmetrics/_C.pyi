"""Types of the C++ core's bindings (csrc/python/bindings.cpp): translate only, compute nothing."""
from collections.abc import Callable

COUNT_FIELDS: tuple[str, ...]

class Report:
    """Everything counted between start() and stop(); each part converted when read."""
    @property
    def total(self) -> dict[str, int | float]: ...  # COUNT_FIELDS + intensity
    @property
    def modules(self) -> dict: ...  # columns: name, parent, depth, calls, self{..}, total{..}
    @property
    def ops(self) -> dict: ...  # columns: module, op, phase, kind + COUNT_FIELDS
    @property
    def unsupported_ops(self) -> dict[str, int]: ...
    params_applied: int  # -1 when no parameters were watched
    params_touched: int
    wall_ns: int
    busy_ns: int
    clock: str  # "", "steady_clock", "cuda_event"
    op_times: bool
    @property
    def device_steps(self) -> list[tuple[int, int, int]]: ...  # (wall_ns, busy_ns, idle_ns)
    @property
    def has_trace(self) -> bool: ...
    def to_chrome_trace(self) -> str: ...
    def to_json(self) -> str: ...

class Profiler:
    def __init__(self, *, all_threads: bool = False, time: bool = False, time_ops: bool = False,
                 trace: bool = False, nvtx: bool = False, nvtx_ops: bool = False,
                 device: str = "") -> None: ...
    def start(self) -> None: ...
    def stop(self) -> Report: ...
    def snapshot(self) -> Report: ...
    def set_phase(self, phase: str) -> None: ...  # "forward" | "backward"
    def watch(self, tensors: list[tuple[int, int]]) -> None: ...  # (TensorImpl address, numel)
    def device_steps(self, *, wait: bool, first: int = 0) -> list[tuple[int, int, int]]: ...
    @property
    def running(self) -> bool: ...
    @property
    def clock(self) -> str: ...  # resolved: "" (not timed), "steady_clock", "cuda_event"
    @property
    def nvtx(self) -> bool: ...
    @property
    def device_timeline(self) -> bool: ...

class BenchmarkOptions:
    def __init__(self, *, warmup: int = ..., warmup_time: float = ..., min_run_time: float = ...,
                 max_run_time: float = ..., min_runs: int = ..., iqr_tolerance: float = ...,
                 device: str = ..., l2_flush: bool = ...) -> None: ...
    warmup: int
    warmup_time: float
    min_run_time: float
    max_run_time: float
    min_runs: int
    iqr_tolerance: float
    device: str
    l2_flush: bool

class TimingStats:
    n: int
    median: float
    mean: float
    std: float
    min: float
    max: float
    p10: float
    p90: float
    p99: float
    iqr: float

class BenchmarkResult:
    samples: list[float]
    stats: TimingStats
    clock: str
    total_time: float

def benchmark(fn: Callable[[], None], options: BenchmarkOptions) -> BenchmarkResult: ...

class MemoryTracker:
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def peak_bytes(self, device: str) -> int: ...
    def current_bytes(self, device: str) -> int: ...
    def peak_total_bytes(self, device: str) -> int: ...

def nvtx_range_push(message: str) -> None: ...
def nvtx_range_pop() -> None: ...
def intern_scope_name(name: str) -> int: ...
def tensor_facts(impls: list[int]) -> tuple[list[int], list[int], list[bool]]: ...
def current_scope_name() -> str: ...
def push_scope_id(name_id: int) -> None: ...
def pop_scope() -> bool: ...
def scope_depth() -> int: ...
def truncate_scopes(depth: int) -> None: ...
def max_profilers() -> int: ...
