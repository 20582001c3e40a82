import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Single-threaded torch for timing tests (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def host_timeline(monkeypatch):
    """Run the device-timeline path (what CUDA uses, with events) on the CPU: marks stamped
    with the steady clock instead of CUDA events, everything else the same code."""
    from effmetrics import counter, profiler

    for module in (profiler, counter):
        monkeypatch.setattr(module, "_timeline", lambda device: "cpu")
