"""benchmark() and throughput(): measured latency, its statistics, items and tokens per second.

The measuring loop is C++ (effmetrics::benchmark): warm-up, then autorange until the
interquartile range is within `iqr_tolerance` of the median or `max_run_time` is spent. On CPU it
times with a monotonic clock; on CUDA with events on the current stream.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from effmetrics import _C
from effmetrics.inputs import batch_size_of, device_of, has_device, parse_device
from effmetrics.units import si

_STATS = ("median", "mean", "std", "min", "max", "p10", "p90", "p99", "iqr")
_DEFAULTS = _C.BenchmarkOptions()  # the C++ defaults (BenchmarkOptions in timing.h)


@dataclasses.dataclass
class Timing:
    """Statistics of repeated runs; times in seconds."""

    median: float
    mean: float
    std: float
    min: float
    max: float
    p10: float
    p90: float
    p99: float
    iqr: float
    n: int
    clock: str
    batch_size: int | None = None
    seq_len: int | None = None
    samples: list = dataclasses.field(default_factory=list, repr=False)

    @property
    def throughput(self) -> float | None:
        """Items (batch elements) per second at the median latency."""
        return self.batch_size / self.median if self.batch_size and self.median else None

    @property
    def tokens_per_s(self) -> float | None:
        if not (self.batch_size and self.seq_len and self.median):
            return None
        return self.batch_size * self.seq_len / self.median

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("samples")
        d["throughput"] = self.throughput
        d["tokens_per_s"] = self.tokens_per_s
        return d

    def _repr_html_(self) -> str:
        from effmetrics.display import timing_html

        return timing_html(self)

    def __str__(self) -> str:
        text = (f"Timing: median {self.median * 1e3:.3f} ms (IQR {self.iqr * 1e3:.3f} ms, "
                f"p10 {self.p10 * 1e3:.3f}, p90 {self.p90 * 1e3:.3f}), {self.n} runs, "
                f"{self.clock}")
        if self.throughput:
            text += f"; {si(self.throughput, 'items/s')}"
        if self.tokens_per_s:
            text += f", {si(self.tokens_per_s, 'tokens/s')}"
        return text


def benchmark(
    model_or_fn: nn.Module | Callable,
    *args: Any,
    warmup: int = _DEFAULTS.warmup,
    warmup_time: float = _DEFAULTS.warmup_time,
    min_run_time: float = _DEFAULTS.min_run_time,
    max_run_time: float = _DEFAULTS.max_run_time,
    min_runs: int = _DEFAULTS.min_runs,
    iqr_tolerance: float = _DEFAULTS.iqr_tolerance,
    batch_size: int | None = None,
    seq_len: int | None = None,
    l2_flush: bool = False,
    cuda_graph: bool = False,
    nvtx: bool = False,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> Timing:
    """Time ``model_or_fn(*args, **kwargs)``.

    An nn.Module runs under torch.no_grad() (inference); a plain function runs as given (a
    training step stays a training step). batch_size defaults to the first dimension of the
    first tensor argument; seq_len, when given, adds tokens_per_s. CUDA only: ``l2_flush``
    overwrites a 256 MiB buffer before each run (cold-cache timing), ``cuda_graph`` captures one
    call in a CUDA graph and times its replay. ``nvtx`` wraps each run in an NVTX range
    ("benchmark") of the effmetrics domain. ``device`` says which clock to use when the
    arguments do not: by default the device of the first tensor argument (or the module's
    parameters); for a function without either, CUDA events when this process has initialised
    CUDA (they time host-only work too: the idle GPU stamps them as the host records them),
    else the CPU clock.
    """
    if not callable(model_or_fn):
        raise TypeError(f"benchmark needs an nn.Module or a callable; got "
                        f"{type(model_or_fn).__name__}")
    device = parse_device(device)
    if device is None:
        device = device_of(args, kwargs, model_or_fn)
        if not has_device(args, kwargs, model_or_fn) and torch.cuda.is_available() \
                and torch.cuda.is_initialized():
            device = torch.device("cuda", torch.cuda.current_device())
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"benchmark times CPU and CUDA work; the inputs are on {device} "
                         "(meta has no time: use em.profile to count it)")
    device_name = "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"
    if (l2_flush or cuda_graph) and device.type != "cuda":
        raise ValueError("l2_flush and cuda_graph need CUDA: CUDA inputs, or device='cuda' for "
                         "a function without tensor arguments; they do not apply on CPU")
    grad = torch.no_grad() if isinstance(model_or_fn, nn.Module) else contextlib.nullcontext()

    def call():
        model_or_fn(*args, **kwargs)

    run = call
    if cuda_graph:
        run = _graphed(call)
    if nvtx:
        inner = run

        def run():
            _C.nvtx_range_push("benchmark")
            try:
                inner()
            finally:
                _C.nvtx_range_pop()

    options = _C.BenchmarkOptions(
        warmup=warmup, warmup_time=warmup_time, min_run_time=min_run_time,
        max_run_time=max_run_time, min_runs=min_runs, iqr_tolerance=iqr_tolerance,
        device=device_name, l2_flush=l2_flush)
    with grad:
        result = _C.benchmark(run, options)
    stats = result.stats
    return Timing(**{k: getattr(stats, k) for k in _STATS}, n=stats.n, clock=result.clock,
                  batch_size=batch_size if batch_size is not None else batch_size_of(args, kwargs),
                  seq_len=seq_len, samples=list(result.samples))


def _graphed(call: Callable) -> Callable:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm up on a side stream, as torch.cuda.graphs recommends
            call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return graph.replay


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError)
        and ("out of memory" in str(err).lower() or "can't allocate memory" in str(err).lower()))


def throughput(
    model: nn.Module | Callable,
    make_inputs: Callable[[int], Any],
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128),
    **options: Any,
):
    """Latency and items/s for each batch size, until the first out-of-memory.

    make_inputs(batch_size) returns the model's argument (or a tuple of arguments). Returns a
    DataFrame (one row per batch size that ran) whose ``attrs["best_batch_size"]`` is the one
    with the highest items/s and ``attrs["stopped"]`` says why the sweep ended.
    """
    import pandas as pd

    rows, stopped = [], "all batch sizes ran"
    for bs in batch_sizes:
        inputs = make_inputs(bs)
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        try:
            t = benchmark(model, *inputs, batch_size=bs, **options)
        except Exception as err:  # noqa: BLE001 - only out-of-memory ends the sweep quietly
            if not _is_oom(err):
                raise
            stopped = f"out of memory at batch size {bs}"
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            break
        finally:
            del inputs
        rows.append({"batch_size": bs, "latency_median": t.median, "latency_iqr": t.iqr,
                     "items_per_s": t.throughput, "runs": t.n})
    df = pd.DataFrame(rows, columns=["batch_size", "latency_median", "latency_iqr",
                                     "items_per_s", "runs"])
    df.attrs["best_batch_size"] = (int(df.loc[df["items_per_s"].idxmax(), "batch_size"])
                                   if len(df) else None)
    df.attrs["stopped"] = stopped
    return df
