"""profile(): run a model once under the C++ observer with module scopes attached."""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from effmetrics import _C
from effmetrics.compiled import (
    CompileWatch,
    ScopedGraph,
    counting_callable,
    exported_graph,
    on_meta,
    preserved_state,
    timed_call,
    unwrap,
)
from effmetrics.inputs import device_of, leaves, parse_device
from effmetrics.memory import measure_memory
from effmetrics.params import ModelScan, copy_counts, nonzero_counts, scan
from effmetrics.report import Report
from effmetrics.scopes import ModuleScopes


@contextlib.contextmanager
def _observing(model_scan: ModelScan | None, profiler, nonzero: list | None = None,
               eager: bool = False):
    """Module scopes + a running profiler; on any exit the scope stack is rebalanced and the
    profiler stopped (its callbacks removed) before the exception, if any, propagates.
    eager: the model runs eagerly (its modules' classes can carry the scopes: scopes.py)."""
    added = ModuleScopes.acquire(model_scan.module_names if model_scan else {},
                                 model_scan.modules if model_scan and eager else None)
    depth = _C.scope_depth()
    try:
        if model_scan:
            profiler.watch(model_scan.watch, nonzero or [])
        with CompileWatch.watching(profiler) as compiles:  # compiling is not the model's work
            profiler.start()
            yield compiles
    finally:
        try:
            if profiler.running:
                profiler.stop()  # idempotent when the body already stopped it
        finally:
            _C.truncate_scopes(depth)
            ModuleScopes.release(added)


def _check_model(model) -> tuple[Callable, nn.Module | None]:
    if isinstance(model, nn.Module):
        return model, model
    if callable(model):
        return model, getattr(model, "__self__", None) if isinstance(
            getattr(model, "__self__", None), nn.Module) else None
    raise TypeError(
        f"model must be a torch.nn.Module or a callable; got {type(model).__name__}. "
        "Pass the model itself, e.g. em.profile(net, x), not its output."
    )


def _check_inputs(args: tuple, kwargs: dict) -> None:
    for leaf in leaves(args, kwargs):
        if type(leaf).__module__ == "numpy" and hasattr(leaf, "shape"):
            raise TypeError(
                "inputs must be torch tensors (or lists/tuples/dicts of them); got a numpy "
                "array. Convert it with torch.from_numpy(x)."
            )


_CPU = torch.device("cpu")


def _timeline(device: torch.device | None) -> str:
    """The device whose timeline times the ops, as the C++ Profiler takes it: CUDA events on a
    CUDA device, host clocks ("") else. (The Profiler uses it only when timing.)"""
    # The CPU first by equality: torch.device.type makes its string through a std::ostringstream,
    # ~20 us on the caches a forward leaves cold (a comparison ~1 us over an empty call).
    if device is None or device == _CPU:
        return ""
    if device.type == "cuda":
        return str(device if device.index is not None else torch.device("cuda", 0))
    return ""


def _default_loss(output) -> torch.Tensor:
    leaves = [t for t in pytree.tree_leaves(output)
              if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())]
    if not leaves:
        raise TypeError(
            f"backward=True: the model returned {type(output).__name__} with no floating-point "
            "tensor to differentiate; pass loss_fn=lambda out: <scalar tensor>"
        )
    loss = leaves[0].sum()
    for t in leaves[1:]:
        loss = loss + t.sum()
    return loss.real if loss.is_complex() else loss


def profile(
    model: nn.Module | Callable,
    *args: Any,
    backward: bool = False,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    all_threads: bool = False,
    time: bool = False,
    time_ops: bool = False,
    trace: bool = False,
    nvtx: bool = False,
    nvtx_ops: bool = False,
    memory: bool = False,
    effective: bool = False,
    **kwargs: Any,
) -> Report:
    """Run ``model(*args, **kwargs)`` once and count every op it executes.

    Args:
        model: an nn.Module (module scopes, parameter counts) or any callable; a
            torch.compile'd module or function is counted through its captured graphs, a
            torch.export ExportedProgram (or fx.GraphModule) on meta (README: "Compiled,
            exported and Hugging Face models").
        *args, **kwargs: passed to the model exactly as given (a dict stays a dict).
        backward: also run ``loss_fn(output).backward()`` and count it as the backward pass.
        loss_fn: reduces the output to a scalar; default: the sum of its floating tensors.
        device: move the model (in place, like ``model.to``) and tensor inputs there first;
            ``"meta"`` counts FLOPs without allocating.
        all_threads: observe every thread, not only this one and its autograd threads.
        time: measure time next to the counts: ``time_s``, ``wall_s``, ``busy_s``, ``idle_s``;
            ``by_module()``/``by_op()`` gain ``time_s`` and achieved FLOP/s and bytes/s.
            CPU: each op on the steady clock. CUDA: CUDA events on the current stream around
            each outermost op, so module times are device time (``clock == "cuda_event"``);
            per-op device times need ``time_ops=True`` (two more events per op), else the
            per-op ``time_s`` is NaN.
        time_ops: on CUDA, also time every counted op with events (the detailed mode).
        trace: also keep the timeline of ops and module calls: ``report.to_chrome_trace(path)``.
        nvtx: NVTX ranges (domain "effmetrics") for each module call, named by its qualified
            name; ``nvtx_ops`` adds one per op, named with its input shapes
            (``aten::addmm [576] [1, 192] [192, 576]``). Free when no tool (Nsight Systems)
            is attached.
        memory: measure ``peak_memory_bytes`` (how: ``peak_memory_method``) and
            ``activation_bytes``, the tensors saved for backward (exact on every device,
            ``meta`` included; ``by_module()`` gains the column).
        effective: make ``flops_effective`` use values, not only shapes: zero weights (each
            weight's nonzero elements are counted, once per parameter version) and the True
            elements of boolean attention masks; also fills ``params.nonzero``. Causal masks
            (shapes suffice) and flex_attention's block masks (small, read anyway) are always
            discounted. ``report.effective_basis`` says what was applied. README:
            "flops_effective".

    Returns:
        A Report: totals, ``by_module()``, ``by_op()``, ``params``, ``unsupported_ops``.
    """
    _check_inputs(args, kwargs)
    graph = exported_graph(model)
    if graph is not None:
        if time or time_ops or trace or memory or backward:
            raise ValueError(
                "an ExportedProgram (or fx.GraphModule) is counted on meta, without running "
                "real kernels: time, trace, memory and backward do not apply. Time its module "
                "with em.benchmark(ep.module(), *args).")
        return _profile_graph(graph, args, kwargs, all_threads, nvtx, nvtx_ops)
    compiled = unwrap(model)
    if compiled is not None:
        if trace or time_ops:
            raise ValueError(
                "trace and time_ops need per-op times, and a compiled model's fused kernels are "
                "not ops: profile the model before torch.compile for those, or use time=True "
                "for the compiled run's wall time.")
        fn, module = counting_callable(compiled), compiled.module
    else:
        fn, module = _check_model(model)
    dev = parse_device(device)
    if dev is not None:
        if module is not None:
            module.to(dev)
        args, kwargs = pytree.tree_map(
            lambda t: t.to(dev) if isinstance(t, torch.Tensor) else t, (args, kwargs))
    model_scan = scan(module) if module is not None else None
    # Where the work runs: the device asked for (a function without tensor arguments that works
    # on the GPU, timed on its events), else the arguments' or the model's.
    where = dev if dev is not None else device_of(args, kwargs, module)
    # A compiled model is counted through its graphs, and timed (or measured) in a second run
    # of the compiled code itself; the first run leaves no trace in the model's state.
    second_run = compiled is not None and (time or memory)
    profiler = _C.Profiler(all_threads=all_threads, time=time and compiled is None,
                           time_ops=time_ops, trace=trace, nvtx=nvtx, nvtx_ops=nvtx_ops,
                           device=_timeline(where), effective=effective)
    mem: dict = {}
    params = model_scan.parameters if model_scan else ()
    nonzero, basis = _effective_inputs(model_scan, effective)
    with _observing(model_scan, profiler, nonzero, eager=compiled is None) as compiles:
        with preserved_state(module) if second_run else contextlib.nullcontext():
            measuring = memory and compiled is None
            with measure_memory(where, params) if measuring else contextlib.nullcontext() as m:
                _run_pass(fn, args, kwargs, backward, loss_fn, profiler)
            if measuring:
                mem = m
        raw = profiler.stop()
    timing = None
    if second_run:
        with CompileWatch.watching(None) as warmup:  # compiles here; not timed
            # CUDA graphs (mode="reduce-overhead") warm up on the first call, record on the next
            for _ in range(2 if where is not None and where.type == "cuda" else 1):
                with preserved_state(module):
                    _run_pass(compiled.run, args, kwargs, backward, loss_fn, None)
        compiles["compile_s"] += warmup["compile_s"]
        compiles["compiles"] += warmup["compiles"]

        def call():
            _run_pass(compiled.run, args, kwargs, backward, loss_fn, None)

        with measure_memory(where, params) if memory else contextlib.nullcontext() as m:
            wall_s, clock = timed_call(call, where)
        if memory:
            mem = m
        timing = {"wall_s": wall_s, "clock": clock} if time else None
    return _report(raw, model_scan, mem, compiles, timing, basis, model=module)


def _effective_inputs(model_scan: ModelScan | None, effective: bool) -> tuple:
    """The nonzero count to watch per parameter (-1: not discounted; weights only, 2-D and up)
    and what Python knows of flops_effective's basis (zeros, 2:4)."""
    params = model_scan.parameters if model_scan is not None else []
    semi = model_scan is not None and model_scan.semi_structured
    basis = {"zeros": "not requested: pass effective=True to read the weights' zeros",
             "2:4": "applied" if semi and effective else "none in this pass"}
    if not effective:
        if semi:
            basis["2:4"] = "not requested: pass effective=True"
        return None, basis
    if model_scan is None:
        basis["zeros"] = "no parameters: the profiled callable is not an nn.Module"
        return None, basis
    counts = nonzero_counts(params)
    if counts is None:
        basis["zeros"] = "not applied: meta parameters have no values"
        model_scan.counts.nonzero = None
        return None, basis
    model_scan.counts.nonzero = sum(counts)
    basis["zeros"] = "no zero weights"
    return [n if p.dim() >= 2 else -1 for p, n in zip(params, counts)], basis


_META_VALUE_HINT = (
    "effmetrics: the model reads a tensor's value in Python (.item(), .all(), bool(t)), and "
    "meta tensors have shapes only. Hugging Face models do this to drop an all-ones "
    "attention_mask: leave attention_mask out on meta (an all-ones mask changes no count), or "
    "profile on CPU at a small size.")


def _run_pass(fn, args, kwargs, backward, loss_fn, profiler) -> None:
    """One forward (and backward) of fn; profiler (if any) is told when backward starts."""
    with torch.enable_grad() if backward else contextlib.nullcontext():
        try:
            output = fn(*args, **kwargs)
        except RuntimeError as e:
            if "cannot be called on meta tensors" in str(e) and hasattr(e, "add_note"):
                e.add_note(_META_VALUE_HINT)
            raise
    if backward:
        loss = loss_fn(output) if loss_fn is not None else _default_loss(output)
        if not isinstance(loss, torch.Tensor) or loss.grad_fn is None:
            raise RuntimeError(
                "backward=True, but the loss has no grad_fn: nothing in the forward "
                "requires grad (all parameters frozen, or the call ran under "
                "torch.no_grad()/inference_mode()). Use backward=False, or make "
                "parameters or inputs require grad."
            )
        if profiler is not None:
            profiler.set_phase("backward")
        loss.backward()


def _profile_graph(gm: torch.fx.GraphModule, args: tuple, kwargs: dict, all_threads: bool,
                   nvtx: bool, nvtx_ops: bool) -> Report:
    """An exported program's graph, run op by op on meta (no real kernel) with the module
    scopes its nodes recorded."""
    args, kwargs = pytree.tree_map(
        lambda t: torch.empty_like(t, device="meta") if isinstance(t, torch.Tensor) else t,
        (args, kwargs))
    model_scan = scan(gm)
    graph = ScopedGraph(gm, by_module_id=False)
    profiler = _C.Profiler(all_threads=all_threads, nvtx=nvtx, nvtx_ops=nvtx_ops)
    with on_meta(gm) as meta:
        # applied/touched: the uses of the meta stand-ins of the parameters
        watch = [(meta[p]._cdata, p.numel()) for p in model_scan.parameters if p in meta]
        with _observing(dataclasses.replace(model_scan, watch=watch), profiler) as compiles:
            graph(*args, **kwargs)
            raw = profiler.stop()
    return _report(raw, model_scan, None, compiles)


def _report(raw, model_scan: ModelScan | None, memory: dict | None = None,
            compiles: dict | None = None, timing: dict | None = None,
            basis: dict | None = None, model: nn.Module | None = None) -> Report:
    """The Report of a pass. model: the model model_scan scanned before the pass, scanned again
    if some of its parameters were not materialized then (a lazy module's first call makes
    them)."""
    lazy = model_scan.lazy if model_scan is not None and model is not None else 0
    if lazy:
        model_scan = scan(model)
    params = copy_counts(model_scan.counts) if model_scan is not None else None
    report = Report(raw, params, model_scan.module_params if model_scan is not None else None,
                    memory, compiles=compiles, timing=timing, basis=basis)
    if lazy:
        # The pass watched their reads with 0 elements: applied and touched are not known.
        report.params.applied = report.params.touched = None
        warnings.warn(
            f"effmetrics: {lazy} parameter(s) were not materialized before the pass (a lazy "
            "module's first call made them): the parameter counts are the model's after the "
            "pass; applied and touched are None. Profile again to have them.", stacklevel=3)
    if report.rule_errors:
        errors = "; ".join(f"{op}: {e.splitlines()[0]}" for op, e in report.rule_errors.items())
        warnings.warn(
            f"effmetrics: a registered rule raised, and its op is listed in unsupported_ops "
            f"(bytes counted, no FLOPs): {errors}. Fix the rule (report.rule_errors has the "
            "full error) or em.unregister_rule(op).", RuntimeWarning, stacklevel=3)
    regions = sum(n for op, n in report.unsupported_ops.items()
                  if op.startswith("Torch-Compiled Region"))
    if regions:
        warnings.warn(
            f"effmetrics: torch.compile'd code ran {regions} time(s) inside the profiled call and "
            "was not counted: its fused kernels are not ops (listed in unsupported_ops as "
            "'Torch-Compiled Region'). Give effmetrics the compiled model itself, "
            "em.profile(compiled_model, x) or em.Counter(compiled_model), to count it through "
            "its graphs.", stacklevel=3)
    return report
