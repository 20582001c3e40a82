"""em.benchmark and em.throughput on CPU; torch.utils.benchmark.Timer is the reference."""
import statistics

import pytest
import torch
from torch import nn
from torch.utils.benchmark import Timer

import effmetrics as em


def test_median_agrees_with_torch_benchmark_timer(one_thread):
    """Our median of single calls lies within the spread of Timer's, taken in the same window.

    Both are medians of single calls (Timer.timeit(1), many times): the same estimator, which a
    loaded machine shifts alike (a median of block means, as blocked_autorange gives, takes in
    preemptions that a median of calls leaves out: under a concurrent build Timer's block
    medians were 118-224 us while the calls' stayed at 105-115). A shared machine still moves
    a 100 us matmul by 10% from one tenth of a second to the next, so the band is Timer's own
    spread over interleaved rounds, +-5%; a timer that measured something else (overhead, the
    wrong unit, the warm-up, one call for many) lands far outside it.
    """
    a = torch.randn(192, 192)
    timer = Timer("torch.mm(a, a)", globals={"torch": torch, "a": a},
                  num_threads=torch.get_num_threads())
    ours, theirs = [], []

    def timer_median():
        return statistics.median(timer.timeit(1).times[0] for _ in range(500))

    for i in range(6):  # interleaved, each going first in turn, so drift hits both alike
        first_ours = i % 2 == 0
        if not first_ours:
            theirs.append(timer_median())
        ours.append(em.benchmark(torch.mm, a, a, min_run_time=0.05).median)
        if first_ours:
            theirs.append(timer_median())
    assert min(theirs) / 1.05 < statistics.median(ours) < max(theirs) * 1.05, (ours, theirs)


def test_timing_fields_and_derived_rates():
    model = nn.Linear(64, 64)
    x = torch.randn(16, 64)
    t = em.benchmark(model, x, seq_len=10, min_run_time=0.05)
    assert t.n == len(t.samples) >= 5
    s = sorted(t.samples)
    assert t.min == s[0] and t.max == s[-1]
    assert t.median == pytest.approx(statistics.median(s))
    assert t.mean == pytest.approx(statistics.fmean(s))
    assert t.std == pytest.approx(statistics.stdev(s))
    assert t.batch_size == 16 and t.throughput == pytest.approx(16 / t.median)
    assert t.tokens_per_s == pytest.approx(160 / t.median)
    assert t.clock == "steady_clock"
    assert "median" in str(t) and "items/s" in str(t)


def test_module_runs_without_grad_function_as_given():
    seen = []
    model = nn.Linear(4, 4)
    em.benchmark(lambda x: seen.append(torch.is_grad_enabled()), torch.randn(2, 4),
                 min_run_time=0.01, warmup=1)
    assert all(seen)

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(torch.is_grad_enabled())
            return model(x)

    seen.clear()
    em.benchmark(Spy(), torch.randn(2, 4), min_run_time=0.01, warmup=1)
    assert not any(seen)


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="meta has no time"):
        em.benchmark(nn.Linear(2, 2).to("meta"), torch.empty(1, 2, device="meta"))
    with pytest.raises(ValueError, match="need CUDA"):
        em.benchmark(torch.relu, torch.randn(3), l2_flush=True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            em.benchmark(lambda: None, device="cuda")
        with pytest.raises(ValueError, match="device='cuda'"):
            em.benchmark(lambda: None, cuda_graph=True)  # no tensor says where it runs
    with pytest.raises(ValueError, match="max_run_time"):
        em.benchmark(torch.relu, torch.randn(3), min_run_time=1.0, max_run_time=0.5)
    with pytest.raises(TypeError, match="callable"):
        em.benchmark(3, torch.randn(3))


def test_throughput_sweep_stops_cleanly_at_out_of_memory():
    class Capped(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(32, 32)

        def forward(self, x):
            if x.shape[0] > 8:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.lin(x)

    df = em.throughput(Capped(), lambda bs: torch.randn(bs, 32), batch_sizes=[1, 2, 4, 8, 16, 32],
                       min_run_time=0.02, warmup=1)
    assert list(df["batch_size"]) == [1, 2, 4, 8]
    assert df.attrs["stopped"] == "out of memory at batch size 16"
    assert df.attrs["best_batch_size"] == int(df.loc[df["items_per_s"].idxmax(), "batch_size"])
    assert (df["items_per_s"] == df["batch_size"] / df["latency_median"]).all()


def test_throughput_reraises_other_errors():
    def broken(x):
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape mismatch"):
        em.throughput(broken, lambda bs: torch.randn(bs, 2), batch_sizes=[1])


def _cudart_loaded() -> bool:
    """torch's CUDA code (libc10_cuda) and the libcudart it links are both mapped."""
    with open("/proc/self/maps") as f:
        names = {line.rstrip().rsplit("/", 1)[-1].split(".so")[0] for line in f}
    return {"libc10_cuda", "libcudart"} <= names


def test_cuda_marks_record_with_the_loaded_cuda_runtime(monkeypatch):
    """time=True on CUDA records pooled raw events with the calls of the libcudart torch's CUDA
    code (libc10_cuda) links (a CUDA build of torch, even without a GPU: test-compat's torch
    2.14.1+cu130). Every call must resolve there; a CPU-only torch has no libcudart and keeps
    c10's events, as do other devices and EFFMETRICS_EVENTS=c10 (the switch bench/timing.py
    --cuda compares the two with)."""
    want = "cudart" if _cudart_loaded() else "c10"
    assert em._C.device_event_calls("cuda") == want
    assert em._C.device_event_calls("cuda:1") == want
    assert em._C.device_event_calls("cpu") == "c10"
    monkeypatch.setenv("EFFMETRICS_EVENTS", "c10")
    assert em._C.device_event_calls("cuda") == "c10"
