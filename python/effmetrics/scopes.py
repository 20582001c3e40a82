"""Module scopes: each module's qualified name is pushed into the C++ scope stack while the module
runs (every op is charged to the scope on top of its thread's stack), and the interned name ids.
An eager model's modules get a scoped subclass of their class for the time; everything else the
global module hooks.

Under torch.compile the hooks are traced, not run: they do nothing then, so that they never
change the graphs torch captures, except while effmetrics itself traces a model to count it
(compiled.py), when they leave a marker op in the graph at each module call.
"""
from __future__ import annotations

import copyreg
import re
import sys
import threading
import types
import warnings

import torch
from torch import nn

from effmetrics import _C

# Set by compiled.py around its own counting traces (and their runs: Dynamo guards on it).
MARK_MODULE_CALLS = False

# "Is this call traced?", asked at every module call. torch.compiler.is_compiling() is a Python
# call into another (torch.jit.is_scripting()): ~1,150 instructions. The scoped forward and the
# hooks ask the same in two steps: `_DYNAMO() or _COMPILER._is_compiling_flag`. Dynamo folds
# is_dynamo_compiling() to True where it traces them (in eager it is a plain call returning
# False); the flag is what is_compiling() returns outside TorchScript (True while torch.export
# traces non-strictly). In that order: Dynamo never reads the flag, which torch.compile sets
# while it compiles, so a guard on it would fail at every run. Where torch lacks either, the
# first step is is_compiling() itself and the second a constant False.
_DYNAMO = getattr(torch.compiler, "is_dynamo_compiling", None)
_COMPILER = torch.compiler
if _DYNAMO is None or not isinstance(getattr(_COMPILER, "_is_compiling_flag", None), bool):
    _DYNAMO, _COMPILER = torch.compiler.is_compiling, types.SimpleNamespace(
        _is_compiling_flag=False)

# torch warns that global hooks fire an extra time for an OptimizedModule; ours ignore modules
# they were not given (an OptimizedModule is transparent), so the warning is not the user's.
_OPTIMIZED_MODULE_WARNING = re.escape("Using `torch.compile(module)` when there are global hooks")
# The warnings filter that ignores it while the hooks are installed (made once: a profile adds
# and removes it, and warnings.filterwarnings costs more than the rest of that together).
_IGNORE_OPTIMIZED_MODULE = ("ignore", re.compile(_OPTIMIZED_MODULE_WARNING, re.I), Warning, None,
                            0)


def _ignore_optimized_module_warning(ignore: bool) -> None:
    mutated = getattr(warnings, "_filters_mutated", None)  # invalidates the warnings cache
    if ignore:
        if mutated is None:  # a Python without it: the public way
            warnings.filterwarnings("ignore", message=_OPTIMIZED_MODULE_WARNING)
            return
        warnings.filters.insert(0, _IGNORE_OPTIMIZED_MODULE)
    else:
        warnings.filters[:] = [f for f in warnings.filters
                               if getattr(f[1], "pattern", None) != _OPTIMIZED_MODULE_WARNING]
    if mutated is not None:
        mutated()


def _marker_op():
    """effmetrics::module_call(): a no-op that marks a module call in a traced graph."""
    lib = torch.library.Library("effmetrics", "FRAGMENT")  # noqa: TOR901 (kept alive below)
    lib.define("module_call() -> ()")
    lib.impl("module_call", lambda: None, "CompositeExplicitAutograd")
    lib.impl("module_call", lambda: None, "Meta")
    op = torch.ops.effmetrics.module_call.default
    torch.fx.node.has_side_effect(op)  # no output: keep it in graphs (no dead-code removal)
    return lib, op


_LIB, MODULE_CALL = _marker_op()


class ModuleScopes:
    """Pushes each module's qualified name into the C++ scope stack while the module runs.

    Two ways, the same scopes:
    - An eager model's modules get a subclass of their own class whose forward pushes and pops
      (``acquire(..., modules=)``; the class goes back at release). A module call stays on
      torch's fast path: about 1 us added, where any global module hook sends every module
      call in the process down torch's slow path (3-4 us; taking and giving back a module's
      scope costs ~1.2 us more this way: bench/overhead.py --only modules).
    - Global module hooks, for everything else: compiled models (Dynamo guards on a module's
      class, so swapping it would recompile their code; the hooks also mark module calls in
      effmetrics' counting traces), modules with a forward of their own in ``__dict__``,
      TorchScript modules.
    The one difference: ops run by a module's own forward pre-hooks (the user's) go to the
    module under the global hooks (torch runs global pre-hooks first) and to its caller under
    the subclass (the scope is the forward); its forward hooks' ops go to the caller either way.

    One set of scopes serves every active profile/Counter (nested or on other threads); names
    are the union of the registered models' qualified names (the first registration wins).
    Modules of no registered model are transparent: their ops go to the enclosing module.
    """

    _lock = threading.Lock()
    _users = 0
    _hook_users = 0  # acquisitions that need the global hooks
    # id(module) -> interned scope name id, each scoped module in one of the two
    _hooked: dict[int, int] = {}  # the global hooks push these
    _swapped: dict[int, int] = {}  # their scoped subclass pushes these
    _interned: dict[str, int] = {}  # qualified name -> scope name id (interned once per process)
    _by_id: dict[int, str] = {}  # scope name id -> qualified name
    _hidden = False  # the hooks' code is hidden from Dynamo's frame compilation
    _hooks: tuple | None = None  # (pre, post), made once
    generation = 0  # changes whenever the registered names do
    _hook_ids: tuple | None = None  # their keys in torch's global hook dicts
    _last_ids: tuple | None = None  # (module_names, its ids): _ids()

    @classmethod
    def intern(cls, name: str) -> int:
        """The scope name id of a qualified name (interned once per process)."""
        name_id = cls._interned.get(name)
        if name_id is None:
            with cls._lock:
                name_id = cls._interned.get(name)
                if name_id is None:
                    name_id = _C.intern_scope_name(name)
                    cls._interned[name] = name_id
                    cls._by_id[name_id] = name
        return name_id

    @classmethod
    def name_of(cls, name_id: int) -> str:
        return cls._by_id[name_id]

    @classmethod
    def registered(cls, name: str) -> int | None:
        """The scope name id of a qualified name already interned, or None."""
        return cls._interned.get(name)

    @classmethod
    def name_id_of_module(cls, module_id: int) -> int | None:
        """The scope name id registered for id(module), or None (transparent)."""
        name_id = cls._swapped.get(module_id)
        return name_id if name_id is not None else cls._hooked.get(module_id)

    @classmethod
    def acquire(cls, module_names: dict, modules: list | None = None) -> tuple:
        """module_names: {id(module): qualified name}, as ModelScan.module_names. modules: the
        modules themselves (ModelScan.modules) when the model runs eagerly: their classes are
        swapped where they can be; None: global hooks for all. Returns what release() undoes."""
        # Written for speed: profile() runs this for every pass (well under 1 us a module).
        ids = cls._ids(module_names)
        hooked, swapped = cls._hooked, cls._swapped
        with cls._lock:
            added = ({key: i for key, i in ids.items() if key not in hooked and key not in swapped}
                     if hooked or swapped else ids)
            classes = []  # (module, its class before, the scoped class it has now)
            mine = added
            if modules is not None:  # one pass in C++: swap, unless a module turns out compiled
                mine = {}
                classes = _C.scope_classes(modules, added, _SCOPED, _scoped_class_of, swapped,
                                           mine)
                if classes is None:  # Dynamo traces some of them: its guards see their classes
                    classes, mine, modules = [], added, None
            hooked.update(mine)
            hooks = modules is None or bool(mine)
            cls.generation += 1
            if hooks:
                if cls._hook_users == 0:
                    cls._install()
                    _ignore_optimized_module_warning(True)
                cls._hook_users += 1
            cls._users += 1
        return added, classes, hooks

    @classmethod
    def _ids(cls, module_names: dict) -> dict:
        """{id(module): scope name id} of module_names; the last one's kept (a profile loop passes
        the same dict, from the walk params.scan keeps: names interned once never change)."""
        last = cls._last_ids
        if last is not None and last[0] is module_names:
            return last[1]
        interned = cls._interned
        ids = {}
        for key, name in module_names.items():
            if name:  # the root is the report's root row ("") already: no scope of its own
                i = interned.get(name)
                ids[key] = i if i is not None else cls.intern(name)
        cls._last_ids = (module_names, ids)  # holds the dict: its identity stays unique
        return ids

    @classmethod
    def release(cls, acquired: tuple) -> None:
        added, classes, hooks = acquired
        with cls._lock:
            if classes:
                _C.restore_classes(classes)  # unless someone changed a module's class since
            cls._users -= 1
            cls.generation += 1
            if cls._users == 0:  # the common case: every name goes
                cls._hooked.clear()
                cls._swapped.clear()
            else:
                for key in added:
                    cls._hooked.pop(key, None)
                    cls._swapped.pop(key, None)
            if hooks:
                cls._hook_users -= 1
                if cls._hook_users == 0:
                    cls._uninstall()
                    _ignore_optimized_module_warning(False)

    @classmethod
    def _install(cls) -> None:
        """The same two hook functions under the same keys each time: code that torch.compile
        traced while they were installed guards on those keys and functions, and must not be
        recompiled by the next profile."""
        module = nn.modules.module
        if cls._hooks is None:
            cls._hooks = cls._make_hooks()
        pre, post = cls._hooks
        if cls._hook_ids is None:
            cls._hook_ids = (module.register_module_forward_pre_hook(pre).id,
                             module.register_module_forward_hook(post, always_call=True).id)
            return
        pre_id, post_id = cls._hook_ids
        module._global_forward_pre_hooks[pre_id] = pre
        module._global_forward_hooks[post_id] = post
        module._global_forward_hooks_always_called[post_id] = True

    @classmethod
    def _uninstall(cls) -> None:
        module = nn.modules.module
        pre_id, post_id = cls._hook_ids
        module._global_forward_pre_hooks.pop(pre_id, None)
        module._global_forward_hooks.pop(post_id, None)
        module._global_forward_hooks_always_called.pop(post_id, None)

    @classmethod
    def _make_hooks(cls):
        # Closures over locals: these run twice per module call, keep them minimal.
        names, push, pop = cls._hooked, _C.push_scope_id, _C.pop_scope
        dynamo, compiler = _DYNAMO, _COMPILER

        def pre(module, args):
            if dynamo() or compiler._is_compiling_flag:  # traced: leave the graph, or mark the call
                if MARK_MODULE_CALLS:
                    MODULE_CALL()
                return
            name_id = names.get(id(module))
            if name_id is not None:
                push(name_id)

        def post(module, args, output):
            if dynamo() or compiler._is_compiling_flag:
                return
            if id(module) in names:
                pop()

        return pre, post

    @classmethod
    def hide_from_dynamo(cls, again: bool = False) -> None:
        """Dynamo must inline the hooks where it traces a module call (they leave the graph as
        it is), but never compile them as frames of their own: a module called between two
        graphs (a graph break) runs its hooks eagerly, and they must push and pop then.
        again: hide them once more (torch._dynamo.reset() forgets what it was told)."""
        if (cls._hidden and not again) or "torch._dynamo" not in sys.modules:
            return
        skip_code = getattr(sys.modules["torch._dynamo"].eval_frame, "skip_code", None)
        if skip_code is not None:
            if cls._hooks is None:
                cls._hooks = cls._make_hooks()
            for code in (*(hook.__code__ for hook in cls._hooks), _SCOPED_FORWARD_CODE):
                skip_code(code)
        cls._hidden = True


# ---------------------------------------------------------------- scoped classes

_SCOPED: dict = {}  # original class -> its scoped subclass (made once per class; None: cannot)
_ORIGINAL = "_effmetrics_original"  # a scoped subclass's own attribute: the class it scopes


def _original_of(cls: type) -> type | None:
    """The class a scoped subclass scopes (in its own __dict__, where params' tree check in
    module_tree.cpp reads it too), or None: not one of ours."""
    return cls.__dict__.get(_ORIGINAL)


def _scoped_class_of(cls: type) -> type | None:
    """The scoped subclass of cls, made once per class: for a plain Python forward on the class,
    not TorchScript; None where it cannot be made (the global hooks scope such modules)."""
    scoped = None
    if (_original_of(cls) is None and isinstance(getattr(cls, "forward", None), types.FunctionType)
            and not issubclass(cls, torch.jit.ScriptModule)):
        try:
            scoped = _scoped_class(cls)
        except Exception:  # a metaclass or an __init_subclass__ that refuses
            scoped = None
    _SCOPED[cls] = scoped
    return scoped


def _scoped_forward(base_forward, push, pop, scoped, dynamo, compiler):
    def forward(self, *args, **kwargs):
        if dynamo() or compiler._is_compiling_flag:  # traced (a compiled caller): as hooks do
            if MARK_MODULE_CALLS:
                MODULE_CALL()
            return base_forward(self, *args, **kwargs)
        name_id = scoped.get(id(self))
        if name_id is None:  # released on another thread while this call began
            return base_forward(self, *args, **kwargs)
        push(name_id)
        try:
            return base_forward(self, *args, **kwargs)
        finally:
            pop()

    return forward


_SCOPED_FORWARD_CODE = _scoped_forward(None, None, None, None, None, None).__code__  # every class's


def _reduce_ex(self, protocol):
    """Copies and pickles of a scoped module are of its original class (copy.deepcopy and
    pickle both go through __reduce_ex__): the scope belongs to the module, not to its copies,
    and a file saved during a profile loads without effmetrics. (pickle insists that
    copyreg.__newobj__ gets the object's own class: copyreg._reconstructor is its protocol-1
    equal, which both know.)"""
    scoped = type(self)
    rv = super(scoped, self).__reduce_ex__(protocol)
    original = _original_of(scoped)  # None: a class made on top of ours since (parametrize)
    if (original is None or not isinstance(rv, tuple) or len(rv) < 2 or not rv[1]
            or rv[1][0] is not scoped):
        return rv
    if rv[0] is copyreg.__newobj__ and len(rv[1]) == 1:
        rv = (copyreg._reconstructor, (scoped, object, None), *rv[2:])
    return (rv[0], (original, *rv[1][1:]), *rv[2:])


def _scoped_class(cls: type) -> type:
    """cls with a forward that pushes the module's scope around cls.forward; same name."""
    forward = _scoped_forward(cls.forward, _C.push_scope_id, _C.pop_scope, ModuleScopes._swapped,
                              _DYNAMO, _COMPILER)
    return type(cls)(cls.__name__, (cls,), {
        "forward": forward, "__reduce_ex__": _reduce_ex, "__module__": cls.__module__,
        "__qualname__": cls.__qualname__, "__doc__": cls.__doc__, _ORIGINAL: cls})
