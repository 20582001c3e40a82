"""Counter(count="auto" | "every" | N): which steps run under the observer, and counts on every
row that equal what counting every step gives.

The oracle is count="every" on the same loop (every step observed, itself checked against
FlopCounterMode and closed forms elsewhere), row by row.
"""
import contextlib
import time

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import effmetrics as em

COUNTS = ["flops", "macs", "flops_matmul", "flops_vector", "flops_forward", "flops_backward",
          "bytes_read", "bytes_written"]


class TinyLM(nn.Module):
    """Embedding, one linear layer, a head: the work depends on batch and sequence length."""

    def __init__(self, vocab=50, dim=16):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids):
        return self.head(torch.relu(self.mix(self.emb(ids))))


def _batches():
    """Full batches of 4, a variable sequence length, and a last partial batch."""
    shapes = [(4, 8), (4, 8), (4, 12), (4, 8), (4, 12), (4, 8), (3, 8)]
    return [torch.randint(0, 50, s) for s in shapes]


def _train(model, batches, **counter_kw):
    """A training loop: the batch is copied (the ops before the model's call), forward,
    backward, an optimizer step. lr=0: the model does the same work every step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with em.Counter(model, **counter_kw) as c:
        for ids in batches:
            ids = ids.clone()  # observed in every step, before the model's first call
            model(ids).float().pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            c.step(examples=len(ids), tokens=ids.numel())
    return c


def test_auto_counts_each_new_signature_and_reuses_the_rest():
    torch.manual_seed(0)
    model, batches = TinyLM(), _batches()
    every = _train(model, batches, count="every").steps
    c = _train(model, batches)  # count="auto" is the default
    auto = c.steps
    # the first step, the first length-12 step and the last partial batch are new signatures;
    # the first step lends its counts to none (one-time work), so step 1 is counted too
    assert list(auto["counted"]) == [True, True, True, False, False, False, True]
    assert list(auto["counts_from"]) == [0, 1, 2, 1, 2, 1, 6]
    assert every["counted"].all() and list(every["counts_from"]) == list(range(7))
    pd.testing.assert_frame_equal(auto[COUNTS], every[COUNTS])
    # the observer saw the counted steps whole and, in the others, the copy before the call
    counted = auto[auto["counted"]]
    assert c.report.flops == counted["flops"].sum()
    assert c.report.bytes_read == counted["bytes_read"].sum() + sum(
        ids.numel() * 8 for ids, seen in zip(batches, auto["counted"]) if not seen)
    s = c.summary()
    assert s["counted_steps"] == 4 and s["step_time_basis"] == "uncounted steps"
    assert s["flops_per_step"] == pytest.approx(every["flops"].mean())


def test_the_first_step_s_one_time_work_is_not_reused():
    """AdamW makes its state (exp_avg, exp_avg_sq) at its first step(): the run's first step
    writes more than the steps after it at the same signature. It lends its counts to none:
    step 1 is counted and the later steps get its counts, equal to count="every"'s."""

    def run(**kw):
        torch.manual_seed(0)
        model, ids = TinyLM(), torch.randint(0, 50, (4, 8))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        with em.Counter(model, **kw) as c:
            for _ in range(4):
                model(ids).float().pow(2).mean().backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                c.step()
        return c.steps

    every, auto = run(count="every"), run()
    assert every.loc[0, "bytes_written"] > every.loc[1, "bytes_written"]  # the state made
    assert list(auto["counted"]) == [True, True, False, False]
    assert list(auto["counts_from"]) == [0, 1, 1, 1]
    pd.testing.assert_frame_equal(auto[COUNTS], every[COUNTS])


def test_uncounted_steps_run_without_callbacks_or_module_hooks():
    """In a reused step the model's forward sees no global module hook, its modules have their
    own classes again (a counted step's scopes are on a subclass: scopes.py), and none of its
    ops is observed (the report holds the counted step's ops only)."""
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append((len(nn.modules.module._global_forward_pre_hooks), type(self) is Probe))
            return x * 2

    model = nn.Sequential(nn.Linear(8, 8), Probe())
    x = torch.randn(2, 8)
    with em.Counter(model) as c:
        for _ in range(4):
            model(x)
            c.step()
    assert seen == [(0, False), (0, False), (0, True), (0, True)]
    assert type(model[1]) is Probe and list(c.steps["counted"]) == [True, True, False, False]
    assert c.report.by_op().loc["aten::mul", "calls"] == 2  # the counted steps' only
    assert (c.steps["flops"] == c.steps.loc[0, "flops"]).all()


def test_count_n_counts_exactly_the_chosen_steps():
    torch.manual_seed(0)
    model, batches = TinyLM(), _batches()
    every = _train(model, batches, count="every").steps
    c = _train(model, batches, count=3)
    steps = c.steps
    assert list(steps["counted"]) == [True, False, False, True, False, False, True]
    # steps 1 and 5 have step 3's signature (step 0 lends its counts to none: one-time work);
    # steps 2 and 4 (length 12) have no counted step with theirs: no counts, not someone else's
    assert list(steps["counts_from"].fillna(-1)) == [0, 3, -1, 3, -1, 3, 6]
    known = steps["counts_from"].notna()
    pd.testing.assert_frame_equal(steps.loc[known, COUNTS], every.loc[known, COUNTS],
                                  check_dtype=False)  # float: NaN in the other rows
    assert steps.loc[~known, COUNTS].isna().all().all()
    assert c.summary()["flops_per_step"] == pytest.approx(every.loc[known, "flops"].mean())


def test_count_n_fills_a_step_when_a_later_counted_step_has_its_signature():
    model = nn.Linear(8, 8)
    # count=2: steps 0, 2 and 4 counted; step 1 waits for step 2's count, step 3 for step 4's
    # (step 0 lends its counts to none)
    sizes = [2, 5, 5, 2, 2]
    with em.Counter(model, count=2) as c:
        for n in sizes:
            model(torch.randn(n, 8))
            c.step()
    steps = c.steps
    assert list(steps["counted"]) == [True, False, True, False, True]
    assert list(steps["counts_from"]) == [0, 2, 2, 4, 4]
    assert list(steps["flops"]) == [2 * n * 8 * 8 for n in sizes]


def test_a_step_that_turns_out_different_is_never_reused_wrongly():
    """Two model calls a step; the second's shape changes in step 2: the first call looked like
    step 1's, so step 2 ran unobserved, has no counts, and the next such step is counted and
    fills it. Step 4 looks like step 3 at its first call and like step 1 at its end."""
    model = nn.Linear(8, 8)
    a, b, big = torch.randn(2, 8), torch.randn(3, 8), torch.randn(6, 8)
    plan = [(a, b), (a, b), (a, big), (a, big), (a, b)]
    with em.Counter(model) as c:
        for x, y in plan:
            model(x)
            model(y)
            c.step()
    steps = c.steps
    assert list(steps["counted"]) == [True, True, False, True, False]
    assert list(steps["counts_from"]) == [0, 1, 3, 3, 1]
    expected = [2 * 8 * 8 * (len(x) + len(y)) for x, y in plan]
    assert list(steps["flops"]) == expected


def test_mode_module_set_and_grad_mode_are_part_of_the_signature():
    model = nn.Sequential(nn.Linear(8, 8))
    x = torch.randn(2, 8)
    with em.Counter(model) as c:
        model(x)
        c.step()
        model.eval()
        model(x)  # eval: a new signature
        c.step()
        with torch.no_grad():
            model(x)  # no grad: another one
        c.step()
        model.append(nn.Linear(8, 8))  # a new layer
        model(x)
        c.step()
        model(x)
        c.step()
    steps = c.steps
    assert list(steps["counted"]) == [True, True, True, True, False]
    assert list(steps["flops"]) == [2 * 2 * 64] * 3 + [2 * 2 * 2 * 64] * 2


def _frozen(linear):
    linear.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)


@pytest.mark.parametrize("change", [
    lambda m: m[1].eval(),  # a submodule's mode: batch statistics no longer computed
    lambda m: m[2].eval(),  # dropout off
    lambda m: m.__delitem__(3),  # `del`: no registration hook sees it
    lambda m: m._modules.pop("3"),  # the dict edited directly
    lambda m: m._modules.__setitem__("2", nn.ReLU()),  # a layer swapped: same modes, params
    lambda m: _frozen(m[3]),  # a parameter replaced by a frozen one under its name
], ids=["batchnorm eval", "dropout eval", "del", "dict edit", "layer swapped",
        "parameter replaced"])
def test_a_change_inside_the_model_is_counted_not_reused(change):
    """A change anywhere in the model that the root's state does not show: step 2 is counted
    (its counts are count="every"'s, not step 1's), and step 3 reuses step 2's."""

    def run(**kw):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.Dropout(0.5),
                              nn.Linear(16, 16))
        x = torch.randn(8, 16)
        with em.Counter(model, **kw) as c:
            for i in range(4):
                if i == 2:
                    change(model)
                model(x).sum().backward()
                model.zero_grad(set_to_none=True)
                c.step()
        return c.steps

    every, auto = run(count="every"), run()
    assert list(auto["counted"]) == [True, True, True, False]
    assert list(auto["counts_from"]) == [0, 1, 2, 2]
    pd.testing.assert_frame_equal(auto[COUNTS], every[COUNTS])
    assert (every.loc[2, COUNTS] != every.loc[1, COUNTS]).any()  # the change is visible


def test_a_model_cast_to_another_dtype_is_counted_not_reused():
    """A language model fed token ids, cast to bf16 between steps: its inputs are the same, its
    work moves half the bytes. Step 2 (the cast's copies before the call, then the model) and
    step 3 are count="every"'s."""

    def run(**kw):
        torch.manual_seed(0)
        model, ids = TinyLM(), torch.randint(0, 50, (4, 8))
        with em.Counter(model, **kw) as c:
            for i in range(4):
                if i == 2:
                    model.to(torch.bfloat16)
                model(ids).float().sum().backward()
                model.zero_grad(set_to_none=True)
                c.step()
        return c.steps

    every, auto = run(count="every"), run()
    assert list(auto["counted"]) == [True, True, True, False]
    pd.testing.assert_frame_equal(auto[COUNTS], every[COUNTS])
    assert every.loc[3, "bytes_read"] < every.loc[1, "bytes_read"]


def test_gradients_to_accumulate_into_are_part_of_the_signature():
    """Without zero_grad the first backward assigns the gradients and the later ones add to
    them: step 1 does more work than step 0 and is counted, not given step 0's counts."""
    model = nn.Linear(8, 8)
    x = torch.randn(2, 8)
    every = _loop(model, x, count="every")
    model.zero_grad(set_to_none=True)
    auto = _loop(model, x)
    assert every.loc[1, "flops"] > every.loc[0, "flops"]  # the accumulation adds
    assert list(auto["counted"]) == [True, True, False]
    pd.testing.assert_frame_equal(auto[COUNTS], every[COUNTS])


class _Attention(nn.Module):
    """A projection and scaled_dot_product_attention, whose kernel torch picks within what
    sdpa_kernel allows."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.heads = heads

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, d)


def test_autocast_and_attention_kernels_are_part_of_the_signature():
    """The same inputs under bf16 autocast move fewer bytes, and through the math attention
    kernel more than through the flash one: each context is counted once, and a step is only
    given the counts of a step in the same context."""
    model, x = _Attention(), torch.randn(2, 16, 32)
    contexts = [contextlib.nullcontext, lambda: torch.autocast("cpu", dtype=torch.bfloat16),
                lambda: sdpa_kernel([SDPBackend.MATH])] * 2

    def run(**kw):
        with em.Counter(model, **kw) as c:
            for context in contexts:
                with context():
                    model(x).float().sum().backward()
                model.zero_grad(set_to_none=True)
                c.step()
        return c.steps

    every, auto = run(count="every"), run()
    # step 3 is in step 0's context, but step 0 lends its counts to none: counted
    assert list(auto["counted"]) == [True, True, True, True, False, False]
    assert list(auto["counts_from"]) == [0, 1, 2, 3, 1, 2]
    pd.testing.assert_frame_equal(auto[COUNTS], every[COUNTS])
    # the three contexts do different work (reusing one's counts for another would show)
    assert len(set(every.loc[:2, "bytes_read"])) == 3


class _KVCache:
    """A decode loop's cache: one object, updated in place by every call."""

    def __init__(self):
        self.keys, self.values = [], []
        self.length = 0


class _SlotsCache:
    """The same cache without a __dict__: nothing tells what it holds."""

    __slots__ = ("keys", "values")

    def __init__(self):
        self.keys, self.values = [], []


class _Decoder(nn.Module):
    """One attention layer over everything the cache holds: a decode step's work grows with
    the cache."""

    def __init__(self, dim=16):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x, cache, scale=None):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        cache.keys.append(k)
        cache.values.append(v)
        keys, values = torch.cat(cache.keys, 1), torch.cat(cache.values, 1)
        return F.scaled_dot_product_attention(q, keys, values, scale=scale)


@pytest.mark.parametrize("cache_type", [_KVCache, _SlotsCache])
def test_an_object_updated_in_place_is_part_of_the_signature(cache_type):
    """A KV cache passed to every decode step is the same object each time, its tensors one
    longer: a step's work grows with them. Auto describes an object by what it holds (tensor
    shapes, plain values, through its attributes), so each step is counted, and counts equal
    count="every"; an object it cannot describe (no __dict__) makes its step counted. It
    used the object's id: every step after the first two got the second's counts."""
    torch.manual_seed(0)
    model = _Decoder()
    prompt, token = torch.randn(1, 5, 16), torch.randn(1, 1, 16)

    def run(**kw):
        cache = cache_type()
        with torch.no_grad(), em.Counter(model, **kw) as c:
            for x in [prompt] + [token] * 5:
                model(x, cache)
                c.step()
        return c.steps

    every, auto = run(count="every"), run()
    assert auto["counted"].all()
    pd.testing.assert_frame_equal(auto[COUNTS], every[COUNTS])
    assert every.loc[1:, "flops"].is_monotonic_increasing and every["flops"].is_unique
    # count=N: a skipped step has no counted step with its signature: none (NaN), not a guess
    sampled = run(count=2)
    assert list(sampled["counted"]) == [True, False] * 3
    assert sampled.loc[sampled["counted"], "flops"].tolist() == every.loc[::2, "flops"].tolist()
    assert sampled.loc[~sampled["counted"], "flops"].isna().all()


def test_describe_reads_what_an_object_holds():
    """The description auto keys an object argument by: equal where the work would be."""
    from effmetrics.inputs import describe

    class Holder:
        def __init__(self, n, flag="a"):
            self.parts = {"k": [torch.zeros(n, 4)], "span": slice(0, n), "tags": {flag}}
            self.gen = torch.Generator()

    assert describe(Holder(3)) == describe(Holder(3))  # other objects, other generators
    assert describe(Holder(3)) != describe(Holder(4))  # a tensor's shape, a slice's end
    assert describe(Holder(3)) != describe(Holder(3, flag="b"))  # a plain value in a set
    assert describe(Holder(3)) != describe(torch.zeros(3, 4))
    assert describe(object()) is None  # no __dict__: nothing to read it by

    class Deep:
        def __init__(self, depth):
            self.next = Deep(depth - 1) if depth else None

    assert describe(Deep(2)) is not None and describe(Deep(6)) is None
    assert describe([0] * 5000) is None  # larger than the limit


def test_an_object_holding_the_same_shapes_is_reused():
    """An object argument whose tensors keep their shapes and whose values stay the same (a
    config, a static cache) does the same work: its steps are reused like any other."""
    torch.manual_seed(0)
    model = _Decoder()

    class Static:
        def __init__(self):
            self.keys, self.values = [torch.randn(1, 4, 16)], [torch.randn(1, 4, 16)]

    def run(**kw):
        with torch.no_grad(), em.Counter(model, **kw) as c:
            for _ in range(4):
                cache = Static()  # a new object each step, holding the same shapes
                model(torch.randn(1, 1, 16), cache, scale=0.25)
                c.step()
        return c.steps

    every, auto = run(count="every"), run()
    assert list(auto["counted"]) == [True, True, False, False]
    pd.testing.assert_frame_equal(auto[COUNTS], every[COUNTS])


def test_without_a_model_every_step_is_counted():
    with em.Counter() as c:
        for n in (2, 2):
            torch.mm(torch.randn(n, 4), torch.randn(4, 4))
            c.step()
    assert c.steps["counted"].all() and list(c.steps["flops"]) == [2 * 2 * 4 * 4] * 2


@pytest.mark.parametrize("count", ["some", 0, -1, 1.5, True])
def test_bad_count_says_what_it_takes(count):
    with pytest.raises(ValueError, match="'auto'.*'every'.*positive int"):
        em.Counter(nn.Linear(2, 2), count=count)


def test_uncounted_steps_have_device_wall_but_no_busy(host_timeline):
    model = nn.Linear(32, 32)
    x = torch.randn(4, 32)
    with em.Counter(model) as c:
        for _ in range(3):
            model(x)
            c.step()
    steps = c.steps
    assert c.clock == "steady_clock" and steps["device_wall_s"].notna().all()
    assert steps["busy_s"].notna().tolist() == [True, True, False]
    assert c.summary()["idle_fraction"] is not None


def test_a_compiled_model_runs_its_compiled_code_in_uncounted_steps():
    """count="auto" on a compiled model: the first two steps counted through its graphs (eager
    kernels), the later ones run the compiled code itself (a backend that counts its real
    calls shows it), with the second step's counts."""
    calls = []

    def backend(gm, example_inputs):
        def run(*args):
            calls.append(1)
            return gm.forward(*args)

        return run

    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 4))
    x = torch.randn(3, 16)
    eager = _loop(model, x, zero_grad=True, count="every")
    cm = torch.compile(model, backend=backend)
    compiled = _loop(cm, x, zero_grad=True)
    assert list(compiled["counted"]) == [True, True, False]
    pd.testing.assert_frame_equal(compiled[COUNTS], eager[COUNTS])
    assert len(calls) == 1  # step 2 ran the compiled graph, steps 0 and 1 the counting trace
    assert list(eager["counted"]) == [True] * 3


def _loop(model, x, zero_grad=False, **kw):
    with em.Counter(model, **kw) as c:
        for _ in range(3):
            model(x).sum().backward()
            if zero_grad:
                model.zero_grad(set_to_none=True)
            c.step()
    return c.steps


# ---------------------------------------------------------------- MFU and energy

def _steps(model, x, n=3, **kw):
    with em.Counter(model, **kw) as c:
        for _ in range(n):
            model(x).sum().backward()
            model.zero_grad(set_to_none=True)
            c.step(examples=len(x))
    return c


def test_mfu_on_cpu_is_achieved_matmul_flops_over_the_calibrated_peak():
    model, x = nn.Linear(256, 256), torch.randn(64, 256)
    c = _steps(model, x)
    s, steps = c.summary(), c.steps
    peak = em.calibrate_cpu().matmul_peaks["float32"]  # measured here (cached), float32 model
    assert s["peak_flops"] == peak and s["dtype"] == "float32"
    # forward + input-gradient-free backward: 2 matmuls of 64x256x256 per step, by hand
    assert (steps["flops_matmul"] == 2 * 2 * 64 * 256 * 256).all()
    assert s["mfu"] == pytest.approx(steps["flops_matmul"].sum() / steps["wall_s"].sum() / peak)
    assert s["hfu"] == pytest.approx(steps["flops"].sum() / steps["wall_s"].sum() / peak)
    given = _steps(model, x, peak_flops=1e12).summary()
    assert given["peak_source"] == "peak_flops= given"
    # the matmul share of the achieved FLOP/s over the given peak
    assert given["mfu"] == pytest.approx(
        given["achieved_flops_per_s"] * 2 * 2 * 64 * 256 * 256 / given["flops_per_step"] / 1e12)


def test_mfu_under_autocast_uses_the_autocast_dtype_and_unknown_peaks_are_none():
    model, x = nn.Linear(32, 32), torch.randn(4, 32)
    with em.Counter(model) as c:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)
        c.step()
    with pytest.warns(UserWarning, match="peak_flops="):
        s = c.summary()  # the calibrated CPU preset has no bf16 peak: no MFU, not a wrong one
    assert s["dtype"] == "bfloat16" and s["mfu"] is None and s["peak_flops"] is None
    assert "MFU not computed" in s["peak_source"]


class _FakeMeter:
    """An energy counter that gains 2.5 J between readings."""

    available, source, reason = True, "fake", ""

    def __init__(self):
        self.j = 100.0

    def read_j(self):
        self.j += 2.5
        return self.j

    def __bool__(self):
        return True


def test_energy_per_step_from_the_meter(monkeypatch):
    from effmetrics import counter

    monkeypatch.setattr(counter, "open_meter", lambda device: _FakeMeter())
    model, x = nn.Linear(8, 8), torch.randn(4, 8)
    c = _steps(model, x, n=4)
    steps, s = c.steps, c.summary()
    assert (steps["energy_j"] == 2.5).all()
    assert s["energy_j"] == 10.0 and s["energy_source"] == "fake"
    assert s["avg_power_w"] == pytest.approx(10.0 / steps["wall_s"].sum())
    assert s["joules_per_example"] == pytest.approx(10.0 / 16)


class _SlowFailingMeter(_FakeMeter):
    """Each read takes 50 ms (NVML took 3-17 ms a read on the H200); the fourth read fails."""

    def __init__(self):
        super().__init__()
        self.reads, self.threads = 0, set()

    def read_j(self):
        import threading

        self.threads.add(threading.get_ident())
        self.reads += 1
        time.sleep(0.05)
        if self.reads == 4:
            raise OSError("the counter went away")
        return super().read_j()


def test_energy_is_read_off_the_training_thread(monkeypatch):
    """step() does not wait for the meter (it reads on a thread of its own); a read that fails
    gives that step's energy None, never an exception in the training loop."""
    import threading

    from effmetrics import counter

    meter = _SlowFailingMeter()
    monkeypatch.setattr(counter, "open_meter", lambda device: meter)
    model, x = nn.Linear(8, 8), torch.randn(4, 8)
    with em.Counter(model) as c:
        times = []
        for _ in range(5):
            model(x)
            t0 = time.perf_counter()
            c.step()
            times.append(time.perf_counter() - t0)
    assert max(times) < 0.05  # a synchronous read alone would take 50 ms
    assert threading.get_ident() not in meter.threads
    energy = list(c.steps["energy_j"])
    # Reads: 1 before the first step, then one per step; the 4th (step 2's) fails, so steps 2
    # and 3 (which differ from it) have no figure; the others gained 2.5 J each.
    assert energy[:2] == [2.5, 2.5] and energy[4] == 2.5
    assert energy[2] is None or energy[2] != energy[2]  # None (NaN in a float column)
    assert energy[3] is None or energy[3] != energy[3]


def test_no_energy_meter_gives_none_and_the_reason(monkeypatch):
    from effmetrics import counter
    from effmetrics.energy import NoMeter

    monkeypatch.setattr(counter, "open_meter", lambda device: NoMeter("no counter here"))
    s = _steps(nn.Linear(8, 8), torch.randn(4, 8)).summary()
    assert s["energy_j"] is None and s["avg_power_w"] is None
    assert s["energy_source"] == "no counter here"
