"""Counter: a training loop's counts and times, one row per step, counting only the steps it
needs to (count="auto"), so that the loop it measures runs as it would without it."""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from effmetrics import _C
from effmetrics.compiled import CompileWatch, counting_callable, unwrap
from effmetrics.energy import MeterReader, energy_summary, open_meter
from effmetrics.inputs import describe, device_of, leaves, parse_device
from effmetrics.params import scan, walk_of
from effmetrics.pipeline import STAGE_COLUMNS, StageActions, pipeline_stages
from effmetrics.profiler import _report, _timeline
from effmetrics.report import COUNT_FIELDS, Report
from effmetrics.roofline import device_peak
from effmetrics.scopes import ModuleScopes

# Counts per step; times (op time, communication time) are measured in counted steps only, and
# comm_ranks (the collectives' group sizes summed) is no count of a step.
_COUNTS = tuple(f for f in COUNT_FIELDS
                if f not in ("calls", "time_ns", "comm_time_ns", "comm_ranks"))
_COMM_TIMES = (("comm_time_s", "comm_time_ns"), ("exposed_comm_s", "exposed_comm_ns"),
               ("peer_wait_s", "peer_wait_ns"))


def _parse_count(count) -> int | None:
    """count= as the Counter keeps it: None for "auto", else count every Nth step."""
    if count == "auto":
        return None
    if count == "every":
        return 1
    if isinstance(count, int) and not isinstance(count, bool) and count >= 1:
        return count
    raise ValueError(
        f"Counter(count=...) takes 'auto' (count each new input signature once, reuse its "
        f"counts), 'every' (count every step) or a positive int N (count every Nth step); got "
        f"{count!r}")


def _diff(a: dict, b: dict) -> dict:
    return {k: a[k] - b[k] for k in _COUNTS}


def _add(a: dict, b: dict) -> dict:
    return {k: a[k] + b[k] for k in _COUNTS}


# The device types autocast has a state for (torch.is_autocast_enabled(type) takes each).
_AUTOCAST_TYPES = ("cpu", "cuda", "xpu", "mps", "hpu", "xla", "mtia", "maia", "privateuseone")
_any_autocast = getattr(torch._C, "_is_any_autocast_enabled", lambda: True)
# torch's switches for scaled_dot_product_attention's kernels (sdpa_kernel sets them): the
# flash kernel reads q, k, v once, the math one builds the score matrix (13x the bytes on CPU).
_SDP_SWITCHES = tuple(f for f in (getattr(torch._C, name, None) for name in (
    "_get_flash_sdp_enabled", "_get_mem_efficient_sdp_enabled", "_get_math_sdp_enabled",
    "_get_cudnn_sdp_enabled", "_get_fa3_sdp_enabled", "_get_overrideable_sdp_enabled",
    "_get_math_sdp_allow_fp16_bf16_reduction")) if f is not None)
_sdp_order = getattr(torch._C, "_get_sdp_priority_order", list)


def _kernel_context() -> tuple:
    """The state around a call that changes its ops at the same inputs: the autocast regions
    on (device type, dtype; their weight cache), and which attention kernels may run."""
    amp = None
    if _any_autocast():
        amp = (torch.is_autocast_cache_enabled(),
               *[(t, torch.get_autocast_dtype(t)) for t in _AUTOCAST_TYPES
                 if torch.is_autocast_enabled(t)])
    return amp, tuple([f() for f in _SDP_SWITCHES]), tuple(_sdp_order())


class _Signatures:
    """What makes one call of the model do the same work as another: its inputs' shapes,
    dtypes, devices and requires_grad, their non-tensor values, the keyword names, grad mode,
    autocast and the attention kernels allowed (_kernel_context); and the model's tree as
    params.scan sees it (a version bumped whenever anything in it changed: a submodule added,
    deleted or replaced, a parameter or buffer added or removed), each module's training mode,
    and its parameters' state: for backward (requires_grad, and whether a gradient is there to
    accumulate into), dtype and device."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.version = 0
        self._walk = None

    def _model_state(self) -> tuple:
        walk, modules = walk_of(self.model)  # ~15 us for ViT-Ti's 113 modules, warm
        if walk is not self._walk:
            self._walk = walk
            self.version += 1
        return (self.version, _C.training_modes(modules),
                _C.parameter_state(modules, walk.occ))

    def of(self, args: tuple, kwargs: dict) -> tuple | None:
        """The call's signature; None where an argument cannot be described (its step is
        counted: no other step can be said to do the same work)."""
        sig = [torch.is_grad_enabled(), _kernel_context(), self._model_state(), len(args),
               tuple(kwargs)]
        for x in leaves(args, kwargs):
            if isinstance(x, torch.Tensor):
                sig.append((x.shape, x.dtype, x.device, x.requires_grad))
            elif x is None or isinstance(x, (bool, int, float, str)):
                sig.append(x)
            else:  # an object (a KV cache, updated in place between calls): what it holds
                d = describe(x)
                if d is None:
                    return None
                sig.append(d)
        return tuple(sig)


class Counter:
    """Counts FLOPs, MACs and bytes across a training loop, one row per step.

        with em.Counter(model) as c:
            for x, y in loader:
                loss = loss_fn(model(x), y); loss.backward(); opt.step(); opt.zero_grad()
                c.step(examples=len(x))
        c.steps      # DataFrame, one row per step
        c.summary()  # whole-run figures
        c.report     # Report of the counted steps (by_module(), by_op(), ...)

    A step is one optimizer step (or whatever repeats the same work): with gradient accumulation,
    call c.step() after the optimizer's step, not after each micro-batch.

    count: which steps run under the observer.
        "auto" (default): the first step, and each step whose model calls have an input signature
        (shapes, dtypes, devices and requires_grad of the inputs, their other values, grad mode,
        autocast and the attention kernels allowed; the model's tree, every module's training/eval
        mode, its parameters' requires_grad, gradients, dtypes and devices) not counted before. An
        object argument (a KV cache updated in place, a config) is read for what it holds: its
        tensors' shapes, dtypes and devices and its plain values, through its attributes, lists and
        dicts (4 levels); a step with one that cannot be read so (no __dict__, too large) is
        counted. The first step lends its counts to no other: it does one-time work (an optimizer
        makes its state at its first step()), so the next step with its signature is counted too.
        The other steps reuse the counts of the step that had their signature and run unobserved
        from the model's first call on: no per-op callbacks, no module hooks. Only the ops before
        that call (data loading, copies to the device: the part of a step that no signature
        describes) are observed in every step, and added to the reused counts. Work that depends on
        anything else at the same signature (the inputs' values: an MoE router's tokens per expert;
        a plain attribute a forward reads, set between steps) gets the counted step's figures: count
        such a model with "every".
        "every": every step is counted (the observer runs throughout).
        N (int): steps 0, N, 2N, ... are counted; a step in between reuses the counts of a
        counted step with its signature (step 0 lends none), and has none (NaN) when no
        counted step has it.
        Without a model there is no signature: "auto" counts every step.

    ``c.steps`` has counts on every row and says how they were had: ``counted`` (the step ran
    under the observer) and ``counts_from`` (the step whose counts it holds; NaN when none).
    ``c.report`` is what the observer saw: the counted steps (with "auto", also the ops before
    the model's first call in the others).

    A torch.compile'd model is counted through its graphs in its counted steps and runs its
    compiled code in the others: with "auto", the step times are the compiled run's from the
    second step of each signature on (the third, for the first step's).

    Backward ops are recognised by the autograd node they run in and attributed to the module
    of their forward op.

    Pipeline parallelism: ``model`` may be a torch.distributed.pipelining stage, or the list
    of a rank's stages (an interleaved schedule's 2): the Counter counts their modules, times
    each stage's forward, backward and weight-gradient actions (``stage_steps``) and, with
    ``nvtx=True``, names them in NVTX ranges (``stage 1 F3``, ``stage 1 B3``; ``I3``/``W3``
    for a split backward's halves). ``bubble_fraction`` in ``steps`` is the rank's.

    MFU: ``summary()["mfu"]`` is the achieved matmul FLOP/s over the device's dense matmul
    peak for the dtype the model computes in (autocast's dtype where autocast is on at its
    first call, else its parameters'), from the one hardware table (``em.roofline``'s);
    ``peak_flops=`` overrides it, and an unknown device gives None with a warning.

    Energy: on CUDA, NVML's energy counter (nvidia-ml-py); on CPU, the RAPL counters under
    /sys/class/powercap where readable: ``energy_j`` per step (host step boundaries) and
    ``energy_j``, ``avg_power_w``, ``joules_per_example`` in ``summary()``; else None, with
    the reason in ``summary()["energy_source"]``.

    Busy and idle time, in counted steps: on CPU, host time inside ops and outside them. On
    CUDA (the model's parameters are on a CUDA device, or ``device="cuda"``), from CUDA event
    timestamps: events on the current stream at each step boundary and around each outermost
    op give the device's time per step (``device_wall_s``, every step), the time covered by
    ops (``busy_s``) and the rest (``idle_s``): the device waiting on the host at the start,
    end and inside the step. The events are read once the GPU has passed them, never by
    stalling it: the row ``step()`` returns has these as None while the GPU is behind;
    ``steps`` and ``summary()`` wait.
    """

    def __init__(self, model: nn.Module | None = None, *, count: str | int = "auto",
                 all_threads: bool = False, nvtx: bool = False, nvtx_ops: bool = False,
                 device: str | torch.device | None = None, peak_flops: float | None = None):
        stages = pipeline_stages(model) if not isinstance(model, nn.Module) else None
        if stages is not None:  # a rank's pipeline stages: their modules, their actions timed
            model = stages[0].submod if len(stages) == 1 else nn.ModuleDict(
                {f"stage{s.stage_index}": s.submod for s in stages})  # names: stage2.0.weight
        elif model is not None and not isinstance(model, nn.Module):
            raise TypeError(
                f"Counter(model): model must be a torch.nn.Module, a "
                f"torch.distributed.pipelining stage (or a list of a rank's stages) or None; "
                f"got {type(model).__name__}"
            )
        every = _parse_count(count)
        # A compiled model is counted through its graphs (its calls in counted steps are sent
        # through them), its names are the original's.
        self._compiled = unwrap(model) if model is not None else None
        if self._compiled is not None:
            model = self._compiled.module
        self.model = model
        self.count = count
        self._every = 1 if model is None and every is None else every
        dev = parse_device(device) or device_of((), {}, model)
        self.device = dev
        self.peak_flops = peak_flops
        self._profiler = _C.Profiler(all_threads=all_threads, time=True, nvtx=nvtx,
                                     nvtx_ops=nvtx_ops, device=_timeline(dev))
        self._on_device = self._profiler.device_timeline  # busy/idle from the device's events
        self._stages = StageActions(stages, nvtx) if stages is not None else None
        self._stage_rows: list[dict] = []
        self._rows: list[dict] = []
        self._filled = 0  # rows with their device figures (device timeline)
        self._compile_watch = None
        self._meter = None
        self._reader: MeterReader | None = None  # reads the meter off the training thread
        self.report: Report | None = None

    # ------------------------------------------------------------ the `with` block

    def __enter__(self) -> Counter:
        # Each `with` block is a run of its own: steps and totals start again.
        self._rows, self._filled, self._stage_rows = [], 0, []
        self._known: dict = {}  # step signature -> {"step", "whole", "model"} counts
        self._by_first: dict = {}  # auto: first call's signature -> the step signature counted
        self._missing: dict = {}  # step signature -> [(row, counts before its first call)]
        self._scan = scan(self.model) if self.model is not None else None
        self._scope_names: tuple | None = None  # what ModuleScopes.acquire took, if anything
        self._depth = _C.scope_depth()
        self._signatures = (_Signatures(self.model)
                            if self.model is not None and self._every != 1 else None)
        self._undo_call_hook = None
        self._dtype = None  # what the model computes in, seen at its first call
        try:
            if self._meter is None:
                self._meter = open_meter(self.device)
            if self._meter:
                # The first read before the first step opens: an NVML read (3 ms median, up to
                # 17, on the H200 machine) holds up the host's kernel launches while it runs.
                self._reader = MeterReader(self._meter)
                self._reader.mark()
                self._reader.flush()
            if self._scan:
                self._profiler.watch(self._scan.watch)
            self._compile_watch = CompileWatch.watching(self._profiler)
            self._compiles = self._compile_watch.__enter__()  # compiling is not the model's work
            self._profiler.start()
            self._undo_call_hook = self._install_call_hook()
            if self._stages is not None:
                self._stages.install()
            self._t_last = self._profiler.totals()
            self._begin_step()
        except BaseException:
            self._close(None, None, None)
            raise
        self._step_range_open = False
        self._open_step_range()
        self._t_wall = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._close_step_range()
        raw = self._close(*exc)
        self.report = _report(raw, self._scan, compiles=dict(self._compiles), model=self.model)
        if self._on_device:
            self._fill_device(raw.device_steps[self._filled:])

    def _close(self, *exc):
        """Undoes __enter__ (whatever of it happened); returns the profiler's report."""
        raw = None
        try:
            if self._stages is not None:
                self._stages.remove()
            if self._undo_call_hook is not None:
                self._undo_call_hook()
                self._undo_call_hook = None
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            if self._profiler.running:
                raw = self._profiler.stop()
        finally:
            _C.truncate_scopes(self._depth)
            self._release_scopes()
            if self._compile_watch is not None:
                self._compile_watch.__exit__(*exc)
                self._compile_watch = None
        return raw

    # ------------------------------------------------------------ which steps are counted

    def _install_call_hook(self):
        """Where the Counter sees each call of the model (its signature; for a compiled model,
        whether it runs through the counting trace or its compiled code). Returns the undo."""
        if self._compiled is not None:
            return self._dispatch_compiled()
        if self.model is None:
            return None

        def pre_hook(module, args, kwargs) -> None:
            self._on_call(args, kwargs)

        return self.model.register_forward_pre_hook(pre_hook, with_kwargs=True).remove

    def _dispatch_compiled(self):
        c = self._compiled
        counting = counting_callable(c)
        target = c.run
        attr = "forward" if c.kind == "module" else "_compiled_call_impl"
        saved = target.__dict__.get(attr, _MISSING)
        real = getattr(target, attr)

        def dispatch(*args, **kwargs):
            return (counting if self._on_call(args, kwargs) else real)(*args, **kwargs)

        setattr(target, attr, dispatch)

        def undo():
            if saved is _MISSING:
                delattr(target, attr)
            else:
                setattr(target, attr, saved)

        return undo

    def _acquire_scopes(self) -> None:
        if self._scope_names is None and self._scan is not None:
            self._scope_names = ModuleScopes.acquire(
                self._scan.module_names, self._scan.modules if self._compiled is None else None)

    def _release_scopes(self) -> None:
        if self._scope_names is not None:
            ModuleScopes.release(self._scope_names)
            self._scope_names = None

    def _begin_step(self) -> None:
        """Decides how the step starting now is observed: "count" (the whole step), "pending"
        (auto: observed until the model's first call tells its signature) or "skip" (count=N:
        not observed)."""
        i = len(self._rows)
        self._calls: list = []
        self._t_call = None
        if self._every is not None and i % self._every:
            self._mode = "skip"
            self._release_scopes()
            self._profiler.detach()
            return
        self._profiler.attach()
        if self._every is None and i > 0:
            self._mode = "pending"
            self._release_scopes()  # nothing of the model runs before its first call
        else:
            self._mode = "count"
            self._acquire_scopes()

    def _on_call(self, args: tuple, kwargs: dict) -> bool:
        """A call of the model; returns whether it runs under the observer."""
        sig = self._signatures.of(args, kwargs) if self._signatures is not None else None
        self._calls.append(sig)
        if self._dtype is None:
            self._dtype = _compute_dtype(self.model, self.device)
        if self._mode == "pending":  # auto, the step's first call: counted before?
            self._t_call = self._profiler.totals()
            ref = self._by_first.get(sig)
            if ref is not None:
                self._mode, self._ref = "reuse", ref
                self._profiler.detach()
            else:
                self._mode = "count"
                self._acquire_scopes()
        elif self._mode == "count" and self._t_call is None and self._every is None:
            self._t_call = self._profiler.totals()
        elif self._mode == "reuse":
            k = len(self._calls) - 1
            if k >= len(self._ref) or self._ref[k] != sig:  # not the step it looked like
                self._mode = "lost"
                self._by_first.pop(self._calls[0], None)  # count the next such step
        return self._mode == "count"

    # ------------------------------------------------------------ steps

    def _open_step_range(self) -> None:
        if self._profiler.nvtx:
            _C.nvtx_range_push(f"step {len(self._rows)}")
            self._step_range_open = True

    def _close_step_range(self) -> None:
        if self._step_range_open:
            _C.nvtx_range_pop()
            self._step_range_open = False

    def step(self, examples: int | None = None, tokens: int | None = None) -> dict:
        """Close the current step; returns its row."""
        if not self._profiler.running:
            raise RuntimeError("Counter.step() outside its `with` block")
        now = time.perf_counter()
        self._close_step_range()
        self._profiler.mark_step()
        i = len(self._rows)
        full = tuple(self._calls)
        mode = self._mode
        if mode == "pending":  # no model call: the whole step was observed
            mode = "count"
        elif mode == "reuse" and full != self._ref:  # fewer calls than the step it looked like
            mode = "lost"
            self._by_first.pop(full[0], None)
        wall = now - self._t_wall
        row = {"step": i, "counted": mode == "count", "counts_from": None}
        busy = None
        comm = dict.fromkeys(name for name, _ in _COMM_TIMES)
        if mode == "skip":
            t = self._t_last  # nothing observed
        else:
            t = self._profiler.totals()
        if mode == "count":
            counts = _diff(t, self._t_last)
            busy = min((t["busy_ns"] - self._t_last["busy_ns"]) / 1e9, wall)
            # Negative: not measured (exposure once a collective ran on a GPU): None.
            comm = {name: None if t[ns] < 0 else (t[ns] - self._t_last[ns]) / 1e9
                    for name, ns in _COMM_TIMES}
            model_part = _diff(t, self._t_call) if self._t_call is not None else counts
            if i > 0:  # the run's first step does one-time work: it lends its counts to none
                self._learn(full, i, counts, model_part)
            row["counts_from"] = i
        elif mode == "reuse":
            ref = self._known[full]
            counts = _add(_diff(self._t_call, self._t_last), ref["model"])
            row["counts_from"] = ref["step"]
        else:  # skip (count=N) or lost (auto): counts of a counted step with the signature
            before = _diff(self._t_call, self._t_last) if mode == "lost" else None
            counts = self._reused(full, before)
            if counts is not None:
                row["counts_from"] = self._known[full]["step"]
            elif None not in full:  # a later counted step may have it (None: none can)
                self._missing.setdefault(full, []).append((row, before))
        row.update(counts if counts is not None else dict.fromkeys(_COUNTS))
        if self._on_device:  # filled from the device's steps once the GPU has passed them
            row.update(wall_s=wall, device_wall_s=None, busy_s=None, idle_s=None,
                       idle_fraction=None)
        else:
            idle = wall - busy if busy is not None else None
            row.update(wall_s=wall, device_wall_s=None, busy_s=busy, idle_s=idle,
                       idle_fraction=(idle / wall if wall > 0 else 0.0) if busy is not None
                       else None)
        row.update(comm)
        self._bubble(row)
        row.update(examples=examples, tokens=tokens, energy_j=None)
        if self._reader is not None:
            self._reader.mark(row)  # energy_j: filled by the reader thread
        self._t_last = t
        self._rows.append(row)
        if self._stages is not None:
            self._stage_rows += self._stages.take(i)
        if self._on_device:
            self._fill_device(self._profiler.device_steps(wait=False, first=self._filled))
        self._begin_step()
        self._open_step_range()
        self._t_wall = time.perf_counter()  # the Counter's own work is not the step's time
        return row

    def _bubble(self, row: dict) -> None:
        """A pipeline stage's view of the step: bubble_fraction = idle / step time (host
        clock, or the device's on a device timeline), the idle time split into waiting for a
        peer (peer_wait_s, p2p work in flight while no op ran) and the rest (other_idle_s)."""
        idle, peer = row["idle_s"], row["peer_wait_s"]
        wall = row["device_wall_s"] if self._on_device else row["wall_s"]
        row["bubble_fraction"] = idle / wall if idle is not None and wall else None
        row["other_idle_s"] = (max(idle - peer, 0.0) if idle is not None and peer is not None
                               else None)

    def _learn(self, full: tuple, step: int, whole: dict, model_part: dict) -> None:
        """A counted step: its counts serve the later (and earlier, missing) steps like it,
        unless a call could not be described (None): then no other step is like it."""
        if None in full:
            return
        self._known[full] = {"step": step, "whole": whole, "model": model_part}
        if full and self._every is None:
            self._by_first[full[0]] = full
        for row, before in self._missing.pop(full, ()):
            row.update(self._reused(full, before))
            row["counts_from"] = step

    def _reused(self, full: tuple, before: dict | None) -> dict | None:
        """The counts of a step with signature `full` from a counted one: its whole counts, or
        (auto) the ops observed before this step's first call plus the counted step's from
        its first call on. None when no counted step has the signature."""
        ref = self._known.get(full)
        if ref is None:
            return None
        return ref["whole"] if before is None else _add(before, ref["model"])

    def _fill_device(self, device_steps: list) -> None:
        """Device wall/busy/idle of the steps the GPU has passed (the final stop() closes one
        more step, the work after the last step(): not a row). Busy and idle are known for
        counted steps only: the others have no op spans."""
        for wall, busy, idle in device_steps:
            if self._filled == len(self._rows):
                break
            row = self._rows[self._filled]
            row["device_wall_s"] = wall / 1e9
            if row["counted"]:
                row.update(busy_s=busy / 1e9, idle_s=idle / 1e9,
                           idle_fraction=idle / wall if wall > 0 else 0.0)
                self._bubble(row)
            self._filled += 1

    def _resolve(self) -> None:
        if self._reader is not None:
            self._reader.flush()
        if self._on_device and self._profiler.running and self._filled < len(self._rows):
            self._fill_device(self._profiler.device_steps(wait=True, first=self._filled))

    @property
    def clock(self) -> str:
        """How busy/idle are measured: "cuda_event" (device timeline) or "steady_clock"."""
        return self._profiler.clock

    _COLUMNS = ("step", "counted", "counts_from", *_COUNTS, "wall_s", "device_wall_s", "busy_s",
                "idle_s", "idle_fraction", "comm_time_s", "exposed_comm_s", "peer_wait_s",
                "other_idle_s", "bubble_fraction", "examples", "tokens", "energy_j")

    @property
    def steps(self):
        """One row per step: how its counts were had (``counted``, ``counts_from``), the
        counts (comm_bytes, comm_bus_bytes of collectives included), wall seconds on the host,
        busy/idle seconds (counted steps; on CUDA: of the device, with device_wall_s, its time
        per step), communication (counted steps, host clock): comm_time_s (the backend works'
        time), exposed_comm_s (in flight while no op ran on any observed thread), peer_wait_s
        (the part with a p2p receive in flight) and other_idle_s (idle_s - peer_wait_s),
        bubble_fraction (idle / step time), examples, tokens and energy_j."""
        import pandas as pd

        self._resolve()
        return pd.DataFrame(self._rows, columns=list(self._COLUMNS))

    @property
    def stage_steps(self):
        """A pipeline rank's stages (the Counter made of torch.distributed.pipelining stages):
        one row per step and stage: the host time in its forward actions (forward_s),
        backward actions (backward_s: whole backwards, or the input-gradient halves of a
        zero-bubble schedule's split ones), weight-gradient actions (weight_s), their sum
        (busy_s) and the number of actions. An action's time is its stage call's: the
        schedule's wait for its input is not in it. The rank's idle time and bubble_fraction
        are the step's (``steps``): one rank, whichever of its stages ran. Empty for a Counter
        of a model."""
        import pandas as pd

        return pd.DataFrame(self._stage_rows, columns=list(STAGE_COLUMNS))

    def _repr_html_(self) -> str:
        """Jupyter: the whole run's figures (summary()) once steps are recorded."""
        from effmetrics.display import summary_html

        if not self._rows:
            return f"<p>effmetrics Counter: no steps recorded (clock {self.clock})</p>"
        return summary_html(self.summary())

    def summary(self) -> dict:
        """Whole-run figures: idle_fraction (the pipeline bubble, over the counted steps: on
        CUDA the device's idle time over its time, from CUDA events; on CPU host time outside
        ops over wall time), step_time_median (over the steps that ran unobserved when there
        are any: step_time_basis says which), examples_per_s, tokens_per_s,
        achieved_flops_per_s, mfu (achieved matmul FLOP/s over peak_flops, the dense matmul
        peak of the device for the dtype; peak_source says where it came from), hfu (all
        FLOP/s over the same peak), energy_j, avg_power_w, joules_per_example, energy_source,
        counted_steps, clock; bubble_fraction (= idle_fraction, a pipeline stage's name for
        it), comm_time_s, exposed_comm_s, peer_wait_s (sums over the counted steps) and
        peer_wait_fraction (peer_wait_s over the counted steps' time)."""
        if not self._rows:
            raise RuntimeError("Counter.summary(): no steps recorded; call c.step() per batch")
        self._resolve()
        rows = self._rows
        wall = sum(r["wall_s"] for r in rows)
        timed = [r for r in rows if r["idle_s"] is not None]
        idle = sum(r["idle_s"] for r in timed)
        span = sum(r["device_wall_s"] if self._on_device else r["wall_s"] for r in timed)
        unobserved = [r["wall_s"] for r in rows if not r["counted"]]
        known = [r for r in rows if r["flops"] is not None]
        known_wall = sum(r["wall_s"] for r in known)
        examples = [r["examples"] for r in rows if r["examples"] is not None]
        tokens = [r["tokens"] for r in rows if r["tokens"] is not None]
        flops = sum(r["flops"] for r in known)
        matmul = sum(r["flops_matmul"] for r in known)
        achieved = flops / known_wall if known_wall > 0 else None
        dtype = self._dtype or _compute_dtype(self.model, self.device)
        peak, peak_source = device_peak(self.device, dtype, self.peak_flops)
        joules = [r["energy_j"] for r in rows if r["energy_j"] is not None]
        energy = energy_summary(sum(joules) if joules else None, wall,
                                sum(examples) if examples else None)
        comm = {}
        for name, _ in _COMM_TIMES:
            values = [r[name] for r in timed if r[name] is not None]
            comm[name] = sum(values) if values else None
        return {
            "steps": len(rows),
            "counted_steps": sum(r["counted"] for r in rows),
            "wall_s": wall,
            "idle_fraction": idle / span if span > 0 else None,
            # over the counted steps, like idle_fraction: a pipeline stage's bubble
            "bubble_fraction": idle / span if span > 0 else None,
            "peer_wait_fraction": (comm["peer_wait_s"] / span
                                   if span > 0 and comm["peer_wait_s"] is not None else None),
            **comm,
            "clock": self.clock,
            "step_time_median": statistics.median(unobserved or [r["wall_s"] for r in rows]),
            "step_time_basis": "uncounted steps" if unobserved else "counted steps",
            "examples_per_s": sum(examples) / wall if examples and wall > 0 else None,
            "tokens_per_s": sum(tokens) / wall if tokens and wall > 0 else None,
            "flops_per_step": flops / len(known) if known else None,
            # the steps without counts (NaN) left out of both
            "achieved_flops_per_s": achieved,
            "mfu": matmul / known_wall / peak if peak and known_wall > 0 else None,
            "hfu": achieved / peak if peak and achieved is not None else None,
            "peak_flops": peak,
            "peak_source": peak_source,
            "dtype": str(dtype).removeprefix("torch."),
            **energy,
            "energy_source": self._meter.source if self._meter else self._meter.reason,
        }


def _compute_dtype(model: nn.Module | None, device: torch.device) -> torch.dtype:
    """The dtype the model's matmuls run in: autocast's where it is on, else the model's first
    floating-point parameter's, else torch's default."""
    kind = device.type if device is not None else "cpu"
    try:
        if torch.is_autocast_enabled(kind):
            return torch.get_autocast_dtype(kind)
    except (TypeError, RuntimeError):  # a torch without per-device autocast queries
        pass
    if model is not None:
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
    return torch.get_default_dtype()


_MISSING = object()
