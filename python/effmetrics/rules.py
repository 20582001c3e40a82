"""User-registered op rules: count custom ops, ops the table lacks, or override a built-in rule.

    em.register_rule("mylib::my_mm", macs=lambda a, b: a.shape[0] * a.shape[1] * b.shape[1])
    em.rules()                      # the whole table: op, kind, formula, user, overridden
    em.unregister_rule("mylib::my_mm")

The table itself lives in the C++ core (csrc/rules.cpp); this module only wraps Python callables
so the core can call them.
"""
from __future__ import annotations

import inspect
import typing
from collections.abc import Callable

import torch

from effmetrics import _C

_KINDS = ("matmul", "vector", "memory", "composite")  # what register_rule takes


class TensorArg(typing.NamedTuple):
    """A tensor argument as a rule sees it: its sizes and dtype (never its values)."""

    shape: tuple
    dtype: torch.dtype | None

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


_DTYPES: dict = {}  # c10::ScalarType value -> torch.dtype, built on first use


def _dtype(code: int) -> torch.dtype | None:
    if not _DTYPES:
        names = ("float32", "float64", "float16", "bfloat16", "complex64", "complex128", "int8",
                 "int16", "int32", "int64", "uint8", "bool", "float8_e4m3fn", "float8_e5m2",
                 "float8_e4m3fnuz", "float8_e5m2fnuz", "uint16", "uint32", "uint64")
        tensors = [torch.empty(0, dtype=getattr(torch, n), device="meta") for n in names
                   if isinstance(getattr(torch, n, None), torch.dtype)]
        codes = _C.scalar_type_codes([t._cdata for t in tensors])
        _DTYPES.update(zip(codes, (t.dtype for t in tensors)))
    return _DTYPES.get(code)


def _tensor_arg(shape: tuple, code: int) -> TensorArg:
    return TensorArg(shape, _dtype(code))


def _op_name(op) -> str:
    """'ns::name' from a string, an OpOverloadPacket (torch.ops.mylib.foo) or an OpOverload."""
    if isinstance(op, torch._ops.OpOverload):
        return op._schema.name
    if isinstance(op, torch._ops.OpOverloadPacket):
        return op._qualified_op_name
    if not isinstance(op, str):
        raise TypeError(f"op must be a name like 'mylib::my_op' or torch.ops.mylib.my_op; got "
                        f"{type(op).__name__}")
    if "::" not in op:
        raise ValueError(f"op name {op!r} has no namespace: write it as the profiler sees it, "
                         f"'namespace::name' (e.g. 'aten::{op}' or 'mylib::{op}')")
    name = op.split("::", 1)[1]
    if "." in name:
        raise ValueError(f"op name {op!r} names an overload; rules apply to every overload of an "
                         f"op: pass {op.rsplit('.', 1)[0]!r}")
    return op


def _accepts_outputs(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or p.name == "outputs" for p in params)


def _part(name: str, value, op: str):
    """One cost part as a function of (args, outputs) -> int, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not (isinstance(value, int) or callable(value)):
        raise TypeError(f"register_rule({op!r}): {name} must be an int or a callable "
                        f"f(*args, outputs=...) -> int; got {type(value).__name__}")
    if not callable(value):
        if value < 0:
            raise ValueError(f"register_rule({op!r}): {name} must be >= 0; got {value}")
        return lambda args, outputs: value
    if _accepts_outputs(value):
        return lambda args, outputs: value(*args, outputs=outputs)
    return lambda args, outputs: value(*args)


def _checked(name: str, v, op: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        try:
            import numbers

            if isinstance(v, numbers.Integral):
                v = int(v)
            elif isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise TypeError
        except TypeError:
            raise TypeError(f"rule for {op}: {name} returned {type(v).__name__} {v!r}; return "
                            "an int") from None
    if v < 0:
        raise ValueError(f"rule for {op}: {name} returned {v}; counts must be >= 0")
    return v


def register_rule(op, *, flops=None, macs=None, bytes_read=None, bytes_written=None,
                  kind: str = "matmul", formula: str | None = None) -> None:
    """Count ``op`` with your own formula (a custom ``torch.library`` op, an op the table lacks,
    or an override of a built-in rule). A registered op is no longer unsupported (a composite
    one still is where nothing inside it counted FLOPs, like an op without a rule).

    Args:
        op: ``"namespace::name"`` as the profiler sees it (no overload), or the op object
            (``torch.ops.mylib.my_op``).
        flops, macs, bytes_read, bytes_written: an int, or a callable called once per op call
            with the op's positional schema arguments (keyword-only ones included, in schema
            order): each tensor as a ``TensorArg(shape: tuple, dtype: torch.dtype)`` (None
            when absent), a tensor list as a list of them, ints, floats, bools and int lists as
            they are, anything else (strings, devices, symbolic values) as None. A callable
            that accepts ``outputs=`` (or ``**kwargs``) also gets the output tensors as a list
            of ``TensorArg``. It returns an int.
            ``kind="matmul"``: give ``macs`` (flops = 2 * macs) or ``flops`` (macs = flops // 2),
            or both. ``kind="vector"``: give ``flops`` (macs default 0). ``kind="memory"``: no
            FLOPs. ``bytes_*`` default to the generic count (distinct inputs read, outputs
            written).
        kind: "matmul" (tensor-core class), "vector", "memory" (moves bytes, no FLOPs), or
            "composite": the op counts nothing itself, the ATen ops its kernel runs count (give
            no counts). Matmul and vector rules own the op's subtree: nothing below it is
            counted again.
        formula: the text ``rules()`` shows (default: "user rule").

    An op with a kernel of its own (a ``torch.library`` op implemented for "CPU" or "CUDA", not
    a composite of other ops) and no rule is listed in ``unsupported_ops`` even where ATen ops
    inside it counted FLOPs: a kernel may compute outside ATen and run only a small ATen op
    inside, so what ran inside is not taken as its whole count. Register such an op with its
    formula, or with ``kind="composite"`` where its kernel's work is the ATen ops it runs.

    The callables run inside the profiler's observer: the GIL is taken only for their call, and
    only for this op. An exception inside them never stops the model: the op is listed in
    ``unsupported_ops`` (its bytes counted), ``report.rule_errors`` keeps the first error per
    op, and profile() warns.

    Registration is thread-safe and takes effect for profiles started after it; a profile
    already running applies it only to op names it meets for the first time. Registering an op
    again replaces its rule. The callables are kept alive for the life of the process.
    """
    name = _op_name(op)
    if kind not in _KINDS:
        raise ValueError(f"register_rule({name!r}): kind must be 'matmul', 'vector', 'memory' "
                         f"or 'composite'; got {kind!r}")
    counts = (("flops", flops), ("macs", macs), ("bytes_read", bytes_read),
              ("bytes_written", bytes_written))
    if kind == "composite":
        given = [k for k, v in counts if v is not None]
        if given:
            raise ValueError(f"register_rule({name!r}): kind='composite' counts nothing itself "
                             f"(the ops its kernel runs count); drop {', '.join(given)}")
        _C.register_rule(name, kind, lambda args, outputs: (0, 0, 0, 0), _tensor_arg,
                         formula or "user rule: the ATen ops its kernel runs count")
        return
    parts = {k: _part(k, v, name) for k, v in counts}
    if kind == "memory":
        if flops is not None or macs is not None:
            raise ValueError(f"register_rule({name!r}): kind='memory' counts no FLOPs; drop "
                             "flops/macs or use kind='vector' or 'matmul'")
    elif flops is None and macs is None:
        raise ValueError(f"register_rule({name!r}): give flops= or macs= (an int or a "
                         "callable of the op's arguments)")
    if kind == "vector" and flops is None:
        raise ValueError(f"register_rule({name!r}): a vector rule needs flops=")
    f_flops, f_macs = parts["flops"], parts["macs"]
    f_read, f_written = parts["bytes_read"], parts["bytes_written"]

    def cost(args: list, outputs: list) -> tuple:
        macs_v = _checked("macs", f_macs(args, outputs), name) if f_macs else None
        flops_v = _checked("flops", f_flops(args, outputs), name) if f_flops else None
        if kind == "matmul":
            if flops_v is None:
                flops_v = 2 * macs_v
            if macs_v is None:
                macs_v = flops_v // 2
        read = _checked("bytes_read", f_read(args, outputs), name) if f_read else -1
        written = _checked("bytes_written", f_written(args, outputs), name) if f_written else -1
        return (macs_v or 0, flops_v or 0, read, written)

    _C.register_rule(name, kind, cost, _tensor_arg, formula or "user rule")


def unregister_rule(op) -> bool:
    """Remove a registered rule (the built-in one, if any, applies again). Returns whether one
    was registered. Takes effect like register_rule."""
    return _C.unregister_rule(_op_name(op))


def rules():
    """The op rule table as a DataFrame, one row per op: ``op``, ``kind`` (matmul, vector,
    memory, view; unsupported for ops known to compute outside ATen with no FLOP count, LAPACK's
    iterative ones (SVD, eigen), listed in unsupported_ops: register_rule gives one a count;
    composite for ops with a kernel of their own whose work is the ATen ops it runs),
    ``formula`` (what it counts), ``user`` (registered by register_rule) and ``overridden`` (a
    built-in rule a registered one replaces)."""
    import pandas as pd

    return pd.DataFrame(_C.rules())
