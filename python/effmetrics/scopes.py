"""Module scopes: global module hooks push each module's qualified name into the C++ scope stack
(every op is charged to the scope on top of its thread's stack), and the interned name ids.

Under torch.compile the hooks are traced, not run: they do nothing then, so that they never
change the graphs torch captures, except while effmetrics itself traces a model to count it
(compiled.py), when they leave a marker op in the graph at each module call.
"""
from __future__ import annotations

import re
import sys
import threading
import warnings

import torch
from torch import nn

from effmetrics import _C

# Set by compiled.py around its own counting traces (and their runs: Dynamo guards on it).
MARK_MODULE_CALLS = False

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
    """Global module hooks that push each module's qualified name into the C++ scope stack.

    One set of hooks serves every active profile/Counter (nested or on other threads); names
    are the union of the registered models' qualified names (the first registration wins).
    Modules of no registered model are transparent: their ops go to the enclosing module.
    """

    _lock = threading.Lock()
    _users = 0
    _names: dict[int, int] = {}  # id(module) -> interned scope name id
    _interned: dict[str, int] = {}  # qualified name -> scope name id (interned once per process)
    _by_id: dict[int, str] = {}  # scope name id -> qualified name
    _hidden = False  # the hooks' code is hidden from Dynamo's frame compilation
    _hooks: tuple | None = None  # (pre, post), made once
    generation = 0  # changes whenever the registered names do
    _hook_ids: tuple | None = None  # their keys in torch's global hook dicts

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
        return cls._names.get(module_id)

    @classmethod
    def acquire(cls, module_names: dict) -> dict:
        """module_names: {id(module): qualified name}, as ModelScan.module_names. Returns the
        entries this call added, for release()."""
        # The root is the report's root row ("") already: no scope of its own.
        ids = {key: cls.intern(name) for key, name in module_names.items() if name}
        with cls._lock:
            if cls._users == 0:  # the common case: nothing registered, take every name
                added = ids
            else:
                added = {key: i for key, i in ids.items() if key not in cls._names}
            cls._names.update(added)
            cls.generation += 1
            if cls._users == 0:
                cls._install()
                _ignore_optimized_module_warning(True)
            cls._users += 1
        return added

    @classmethod
    def release(cls, added: dict) -> None:
        with cls._lock:
            cls._users -= 1
            cls.generation += 1
            if cls._users == 0:  # every user gone: every name goes
                cls._names.clear()
                cls._uninstall()
                _ignore_optimized_module_warning(False)
            else:
                for key in added:
                    cls._names.pop(key, None)

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
        names, push, pop = cls._names, _C.push_scope_id, _C.pop_scope
        compiling = torch.compiler.is_compiling

        def pre(module, args):
            if compiling():  # traced by Dynamo: leave the graph as it is, or mark the call
                if MARK_MODULE_CALLS:
                    MODULE_CALL()
                return
            name_id = names.get(id(module))
            if name_id is not None:
                push(name_id)

        def post(module, args, output):
            if compiling():
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
            for hook in cls._hooks:
                skip_code(hook.__code__)
        cls._hidden = True
