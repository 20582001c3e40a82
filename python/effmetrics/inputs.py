"""What the public functions read off a call's arguments."""
from __future__ import annotations

import enum
import functools
import types

import torch
from torch import nn
from torch.utils import _pytree as pytree


class _NotPlain(Exception):
    pass


_SCALARS = (int, float, bool, str, complex)


def leaves(args, kwargs=None) -> list:
    """pytree.tree_leaves((args, kwargs)), fast where the arguments are tensors and scalars in
    plain tuples, lists and dicts (what models take nearly always); pytree's generic walk costs
    tens of microseconds a call, which profile() and Counter pay on every call."""
    out: list = []

    def walk(x):
        t = type(x)
        if t is tuple or t is list:
            for e in x:
                walk(e)
        elif t is dict:
            for e in x.values():
                walk(e)
        elif isinstance(x, torch.Tensor) or t in _SCALARS or x is None:
            out.append(x)
        else:
            raise _NotPlain

    try:
        walk(args)
        if kwargs:
            walk(kwargs)
    except _NotPlain:  # a namedtuple, a dataclass, a registered node: pytree knows them
        return pytree.tree_leaves((args, kwargs))
    return out


class _Undescribed(Exception):
    pass


Tensor = torch.Tensor
# Held by value: equal values do the same work.
_VALUES = (int, float, bool, str, bytes, complex, type(None), torch.dtype, torch.device,
           torch.Size, torch.memory_format, torch.layout, enum.Enum)
_VALUE_TYPES = frozenset((int, float, bool, str, bytes, type(None), torch.dtype, torch.device,
                          torch.Size))
# Code: the same object does the same work, so it is held by identity.
_CODE = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, functools.partial,
         type, nn.Module)


def describe(x, max_depth: int = 4, max_items: int = 4096):
    """A hashable description of an object argument that the argument walk leaves whole (a KV
    cache, a config object), from what it holds: its tensors' shapes, dtypes, devices and
    requires_grad, its plain values, through its attributes, lists, tuples and dicts up to
    max_depth levels (sets, slices and ranges too); functions and modules by identity; a random
    generator by its type. None where it cannot be described (an object without __dict__ that
    is none of these, deeper or larger than the limits): its work may change in ways no
    description shows."""
    out: list = []  # flat: each container as its type and size, then its entries

    def walk(v, depth):
        if len(out) > max_items:
            raise _Undescribed
        t = type(v)
        if t is Tensor or isinstance(v, Tensor):
            out.append((v.shape, v.dtype, v.device, v.requires_grad))
        elif t in _VALUE_TYPES or isinstance(v, _VALUES):
            out.append(v)
        elif isinstance(v, _CODE):
            out.append(("id", v))
        elif t is torch.Generator:  # its state draws values, not work
            out.append(t)
        elif depth >= max_depth:
            raise _Undescribed
        elif t is tuple or t is list:
            out.append((t, len(v)))
            for e in v:
                walk(e, depth + 1)
        elif t is dict:
            out.append((t, len(v)))
            for k, e in v.items():
                out.append(k)
                walk(e, depth + 1)
        elif t is set or t is frozenset:  # unordered: the entries' descriptions as a set
            inner = frozenset(describe(e, max_depth - depth - 1, max_items) for e in v)
            if None in inner:
                raise _Undescribed
            out.append((t, inner))
        elif t is slice or t is range:
            out.append(t)
            for e in (v.start, v.stop, v.step):
                walk(e, depth + 1)
        else:
            fields = getattr(v, "__dict__", None)
            if type(fields) is not dict:
                raise _Undescribed
            out.append((t, len(fields)))
            for k, e in fields.items():
                out.append(k)
                walk(e, depth + 1)

    try:
        walk(x, 0)
        return tuple(out)
    except (_Undescribed, TypeError, RecursionError):
        return None


def device_of(args, kwargs, model=None) -> torch.device:
    """The first tensor argument's device, else the model's parameters', else the CPU."""
    for t in leaves(args, kwargs):
        if isinstance(t, torch.Tensor):
            return t.device
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def has_device(args, kwargs, model=None) -> bool:
    """Whether a tensor argument or the model's parameters say where the work runs."""
    if any(isinstance(t, torch.Tensor) for t in leaves(args, kwargs)):
        return True
    return isinstance(model, nn.Module) and any(True for _ in model.parameters())


def batch_size_of(args, kwargs) -> int | None:
    """The first dimension of the first tensor argument with one."""
    for t in leaves(args, kwargs):
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return int(t.shape[0])
    return None


def parse_device(device) -> torch.device | None:
    """A device argument checked against this machine (None stays None)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"unknown device {device!r}: use 'cpu', 'meta', 'cuda' or 'cuda:N' ({e})"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r}: CUDA is not available on this machine; use 'cpu' or 'meta' "
                "(meta counts FLOPs without allocating memory)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s); use cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
            )
    return dev
