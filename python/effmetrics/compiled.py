"""torch.compile'd models and torch.export programs: counted through the graphs torch captures.

A compiled model runs fused kernels that no op observer can see into. effmetrics counts it from
the graphs Dynamo captures instead: it traces the original model with Dynamo once more, with a
backend that runs each captured graph as FX's generated code on the real tensors (the same
torch-level calls eager code makes), under the same C++ observer and rule table. The graph's
nodes carry the module they came from (``nn_module_stack``): the graph is rewritten once to
enter those module scopes as the module hooks would, and the hooks, traced by Dynamo, leave a
marker op at each module call so that calls are counted as in eager mode. Code between graphs
(graph breaks) runs eagerly and is counted as usual, once.

Compilation inside a profiled call (Dynamo's tracing, the backend's compile, a lazily compiled
backward) pauses every active profiler through Dynamo's compile callbacks: it is never counted
as the model's work; the report says how long it took (``compile_s``).

An ExportedProgram (or an fx.GraphModule) is counted on meta through the same rewritten graph.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from effmetrics import _C, flex, scopes
from effmetrics.scopes import MODULE_CALL, ModuleScopes

# ---------------------------------------------------------------- what is compiled


@dataclasses.dataclass
class Compiled:
    """A compiled callable as given, and what effmetrics counts it through."""

    run: Callable  # the user's compiled callable (timed runs call it)
    original: Callable  # the callable torch.compile wrapped
    module: nn.Module | None  # the model whose names and parameters the report uses
    kind: str  # "module" (torch.compile(module)), "inplace" (module.compile()), "function"


def unwrap(model: Any) -> Compiled | None:
    """The parts of a torch.compile'd model or function; None for anything else."""
    if "torch._dynamo" not in sys.modules:  # nothing can be compiled before Dynamo is loaded
        return None
    from torch._dynamo.eval_frame import OptimizedModule

    if isinstance(model, OptimizedModule):
        return Compiled(model, model._orig_mod, model._orig_mod, "module")
    if isinstance(model, nn.Module):
        if getattr(model, "_compiled_call_impl", None) is not None:
            return Compiled(model, model._call_impl, model, "inplace")
        return None
    original = getattr(model, "_torchdynamo_orig_callable", None)
    if original is None:
        return None
    owner = getattr(original, "__self__", None)
    return Compiled(model, original, owner if isinstance(owner, nn.Module) else None,
                    "function")


# ---------------------------------------------------------------- counting traces

_COUNTING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # compiled -> counting fn


def counting_callable(compiled: Compiled) -> Callable:
    """A callable that runs compiled.original through Dynamo with the counting backend (traced
    once per input signature, like the compiled model itself; cached per compiled object)."""
    fn = _COUNTING.get(compiled.run)
    if fn is None:
        target = compiled.original
        traced = torch.compile(target, backend=_count_graph)
        if compiled.kind == "module":
            # OptimizedModule.forward runs the module's __call__ under Dynamo; calling it, not
            # the OptimizedModule, keeps torch from firing global hooks an extra time.
            traced = traced.forward
        fn = _marking(traced)
        _COUNTING[compiled.run] = fn
    return fn


def _marking(fn: Callable) -> Callable:
    """fn with the module hooks marking module calls (scopes.MARK_MODULE_CALLS) while it runs:
    they must see the same value when Dynamo traces and when it checks its guards."""

    def run(*args, **kwargs):
        before, scopes.MARK_MODULE_CALLS = scopes.MARK_MODULE_CALLS, True
        try:
            return fn(*args, **kwargs)
        finally:
            scopes.MARK_MODULE_CALLS = before

    return run


def _count_graph(gm: torch.fx.GraphModule, example_inputs) -> Callable:
    """The counting backend: the captured graph, run with the module scopes of its nodes."""
    return ScopedGraph(gm, by_module_id=True, frame_module=_frame_module(gm))


_FRAME_LOCAL = re.compile(r"^L\['(\w+)'\]$")  # a stack entry that is a local of the frame


def _frame_module(gm: torch.fx.GraphModule) -> nn.Module | None:
    """The module the frame Dynamo compiled runs in: the outermost module of the graph's stacks
    that is a local of the frame (`L['self']` in a forward, `L['fn']` in torch.compile's
    wrapper), else the frame's `self`. Dynamo reuses a frame's graph for every module of the
    same class (an expert of an MoE, the same model built again: parameters are graph inputs),
    so the graph's modules are resolved by their path below it, at run time, against the module
    running it."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
    except Exception:  # noqa: BLE001 - internal API: without it, modules resolve by identity
        return None
    if tx is None:
        return None
    names = []
    for node in gm.graph.nodes:
        for value in (node.meta.get("nn_module_stack") or {}).values():
            match = _FRAME_LOCAL.match(value[0]) if isinstance(value, tuple) else None
            # ___stackN in a resumed frame holds the module about to be called, not the frame's
            if match and not match.group(1).startswith("___") and match.group(1) not in names:
                names.append(match.group(1))
    for name in [*names, "self"]:
        module = tx.f_locals.get(name)
        if isinstance(module, nn.Module):
            return module
    return None


class ScopedGraph:
    """A graph that enters the module scope each node came from (its ``nn_module_stack``) as it
    runs, so its ops are charged to the modules eager code charges them to. The graph is
    rewritten once: a call to enter the next module goes in where the module changes (and where
    the hooks marked a module call), and FX's generated code runs it at the speed of the code
    Dynamo would have run.

    Dynamo names the stack's modules by id: those below the frame's module (frame_module) are
    kept as paths below it, the others by the qualified name they have while traced (a resumed
    frame: the same names in another instance of the model), or by id when they have none.
    torch.export names them by qualified name. A stack entry becomes a ref: ("path", p) below
    the module running the graph, ("name", qualified name) or ("id", i)."""

    def __init__(self, gm: torch.fx.GraphModule, by_module_id: bool,
                 frame_module: nn.Module | None = None):
        below = ({id(m): path for path, m in frame_module.named_modules(remove_duplicate=False)}
                 if frame_module is not None else {})
        self.transitions: list = []  # (chain of (key, ref) outer first, marks a module call)
        graph = gm.graph
        last = None
        for node in list(graph.nodes):
            if node.op not in ("call_function", "call_method", "call_module"):
                continue  # inputs and outputs run in no module
            stack = node.meta.get("nn_module_stack") or {}
            chain = tuple((key, self._ref(key, value, by_module_id, below))
                          for key, value in stack.items())
            marker = node.op == "call_function" and node.target is MODULE_CALL
            if marker or chain != last:
                with graph.inserting_before(node):
                    graph.call_function(self._enter, (len(self.transitions),))
                self.transitions.append((chain, marker))
                last = chain
            if marker:
                graph.erase_node(node)
        gm.recompile()
        self.forward = gm.forward  # not gm(): no module hooks for the graph module itself
        # The transitions resolved for the scope running the graph and the registered names
        # (they change with each profile): (key, plan) of the last run.
        self._plan_for: tuple = (None, None)

    @staticmethod
    def _ref(key: str, value, by_module_id: bool, below: dict) -> tuple | None:
        if not by_module_id:
            return ("name", value[0]) if isinstance(value, tuple) and value else None
        head = key.split("@")[0]
        if not head.isdigit():
            return None
        module_id = int(head)
        if module_id in below:
            return ("path", below[module_id])
        name_id = ModuleScopes.name_id_of_module(module_id)
        return ("name", ModuleScopes.name_of(name_id)) if name_id is not None else ("id", module_id)

    def __call__(self, *args, **kwargs):
        # The module running the graph: the root of the profiled model, or the module whose
        # call the eager hooks entered before Dynamo ran its forward as a frame of its own.
        current = _C.current_scope_name()
        key = (current, ModuleScopes.generation)
        if self._plan_for[0] != key:
            self._plan_for = (key, self._plan(current))
        plan = self._plan_for[1]
        _C.note_counted_graph()  # the compiled region around this call is counted
        run = _Run(plan)
        runs = _RUNS.__dict__.setdefault("stack", [])
        runs.append(run)
        depth = _C.scope_depth()
        try:
            return self.forward(*args, **kwargs)
        finally:
            runs.pop()
            _C.truncate_scopes(depth)

    def _enter(self, k: int) -> None:
        _RUNS.stack[-1].enter(k)

    def _plan(self, current: str) -> list:
        """Per transition: the scope name ids to be in, and how many of them the transition
        keeps at most (a module call starts: a module called again is entered anew)."""
        # Scopes entered outside the graph are not entered again.
        outside = {current} | {current[:i] for i, ch in enumerate(current) if ch == "."}
        resolved: dict = {}

        def name_id(ref):
            if ref not in resolved:
                resolved[ref] = _resolve(ref, current, outside)
            return resolved[ref]

        plan = []
        for chain, marker in self.transitions:
            desired = tuple((key, nid) for key, ref in chain if (nid := name_id(ref)) is not None)
            keep = len(desired)
            if marker and chain and desired and name_id(chain[-1][1]) == desired[-1][1]:
                keep -= 1
            plan.append((desired, keep))
        return plan


_RUNS = threading.local()  # the graphs running on this thread, innermost last


def _resolve(ref, current: str, outside: set) -> int | None:
    if ref is None:
        return None
    kind, value = ref
    if kind == "path":  # below the module running the graph ("" is that module itself)
        if not value:
            return None
        name_id = ModuleScopes.registered(f"{current}.{value}" if current else value)
    elif kind == "id":
        name_id = ModuleScopes.name_id_of_module(value)
    else:
        name_id = ModuleScopes.intern(value) if value else None  # export: every name counts
    if name_id is None or ModuleScopes.name_of(name_id) in outside:
        return None
    return name_id


class _Run:
    """One run of a ScopedGraph: the scopes it entered, left when it ends."""

    __slots__ = ("plan", "pushed")

    def __init__(self, plan: list):
        self.plan = plan
        self.pushed: tuple = ()

    def enter(self, k: int) -> None:
        desired, keep = self.plan[k]
        pushed = self.pushed
        common = 0
        limit = min(keep, len(pushed))
        while common < limit and desired[common] == pushed[common]:
            common += 1
        for _ in range(len(pushed) - common):
            _C.pop_scope()
        for _, nid in desired[common:]:
            _C.push_scope_id(nid)
        self.pushed = desired


# ---------------------------------------------------------------- compilation is not work


class CompileWatch:
    """Pauses every active profiler while torch compiles (Dynamo's compile callbacks) and adds
    up the time it took, per profiler."""

    _lock = threading.Lock()
    _active: dict = {}  # id(entry) -> entry
    _registered = False
    _t0: list = []

    @classmethod
    @contextlib.contextmanager
    def watching(cls, profiler):
        """Yields {"compile_s", "compiles"} of the compilations in the block; profiler (or
        None: only the time is wanted) is paused while they run."""
        cls._register()
        entry = {"profiler": profiler, "compile_s": 0.0, "compiles": 0, "in_compile": False,
                 "paused": False}
        with cls._lock:
            cls._active[id(entry)] = entry
        if profiler is not None:
            flex.install()
            flex.activate(+1)  # flex_attention's block masks reach flops_effective
        try:
            yield entry
        finally:
            if profiler is not None:
                flex.activate(-1)
            with cls._lock:
                cls._active.pop(id(entry), None)
                if entry["paused"] and profiler.running:
                    profiler.resume()
                entry["paused"] = False

    @classmethod
    def _register(cls) -> None:
        """Hooks Dynamo's compile callbacks, and hides the module hooks from its frame
        compilation; again after torch._dynamo.reset(), which clears both."""
        if "torch._dynamo" not in sys.modules:
            return
        handler = getattr(sys.modules["torch._dynamo"], "callback_handler", None)
        starts = getattr(handler, "start_callbacks", None)
        if cls._registered and (starts is None or cls._start in starts):
            return
        ModuleScopes.hide_from_dynamo(again=cls._registered)
        if handler is None:  # a torch without compile callbacks: nothing to pause
            return
        with cls._lock:
            starts = getattr(handler, "start_callbacks", None)
            if not cls._registered or (starts is not None and cls._start not in starts):
                handler.register_start_callback(cls._start)
                handler.register_end_callback(cls._end)
                cls._registered = True

    @classmethod
    def _start(cls, *args) -> None:
        with cls._lock:
            cls._t0.append(time.perf_counter())
            for entry in cls._active.values():
                entry["in_compile"] = True
                profiler = entry["profiler"]
                if profiler is not None and not entry["paused"] and profiler.running:
                    profiler.pause()
                    entry["paused"] = True

    @classmethod
    def _end(cls, *args) -> None:
        with cls._lock:
            elapsed = time.perf_counter() - cls._t0.pop() if cls._t0 else 0.0
            for entry in cls._active.values():
                if not entry["in_compile"]:
                    continue
                entry["in_compile"] = False
                entry["compile_s"] += elapsed
                entry["compiles"] += 1
                if entry["paused"]:
                    entry["paused"] = False
                    if entry["profiler"].running:
                        entry["profiler"].resume()


# ---------------------------------------------------------------- one real run, not two


@contextlib.contextmanager
def preserved_state(module: nn.Module | None):
    """Runs the body without leaving a trace in the model's state: buffers (batch-norm running
    statistics), parameter gradients and the random generators are as they were after it. A
    compiled model is counted in one run and timed in another; the user sees one."""
    cpu_rng = torch.get_rng_state()
    cuda_rng = (torch.cuda.get_rng_state_all()
                if torch.cuda.is_available() and torch.cuda.is_initialized() else None)
    buffers = [(b, b.detach().clone()) for b in module.buffers()] if module is not None else []
    grads = ([(p, None if p.grad is None else p.grad.detach().clone())
              for p in module.parameters()] if module is not None else [])
    try:
        yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, saved in grads:
            p.grad = saved
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def timed_call(call: Callable[[], Any], device: torch.device | None) -> tuple[float, str]:
    """Wall time of one call, in seconds, and the clock: CUDA events on the current stream when
    the model is on CUDA (the device's time), the steady clock otherwise."""
    if device is not None and device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, "cuda_event"
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0, "steady_clock"


# ---------------------------------------------------------------- torch.export


def exported_graph(model: Any) -> torch.fx.GraphModule | None:
    """The graph module of a torch.export.ExportedProgram, or of an fx.GraphModule (a copy of
    its graph over the same submodules: counting rewrites the graph), or None."""
    export = getattr(torch, "export", None)
    if export is not None and isinstance(model, export.ExportedProgram):
        return model.module()  # a new module on each call
    if isinstance(model, torch.fx.GraphModule):
        return torch.fx.GraphModule(model, copy.deepcopy(model.graph), type(model).__name__)
    return None


@contextlib.contextmanager
def on_meta(gm: torch.fx.GraphModule):
    """gm's parameters and buffers replaced by meta tensors of the same shapes for the body (the
    program itself is left as it was). Yields {original tensor: meta tensor}."""
    from torch.nn.utils.stateless import _reparametrize_module

    tensors = {**dict(gm.named_parameters(remove_duplicate=False)),
               **dict(gm.named_buffers(remove_duplicate=False))}
    made: dict = {}
    meta = {}
    for name, t in tensors.items():
        if t not in made:  # tied tensors stay tied
            m = torch.empty_like(t, device="meta")
            made[t] = m.requires_grad_(t.requires_grad) if t.is_floating_point() else m
        meta[name] = made[t]
    with _reparametrize_module(gm, meta):
        yield made
