"""flex_attention's block masks in flops_effective.

In eager mode flex_attention computes every score densely (its matmuls, softmax and the mask
function run as ordinary ops, which the observer counts: ``flops`` is the dense convention, as
FlopCounterMode's formula for the flex_attention operator). The kernel it stands for computes
only the blocks its BlockMask keeps, and the BlockMask is invisible to the C++ observer (a
Python object passed to a higher-order operator). So the operator's calls are intercepted here
while a profile runs: the share of (query, key) pairs in kept blocks is computed from the mask
and set on the calling thread (``_C.set_attention_share``), and the matmul-class ops run inside
the call count that share in ``flops_effective``. The backward operator is intercepted the same
way (it takes the same block mask), on the thread that runs it.

Kept pairs: each block listed in ``kv_num_blocks``/``kv_indices`` (partial: the kernel computes
it in full and masks inside it) or ``full_kv_num_blocks``/``full_kv_indices`` counts its whole
area, ``Q_BLOCK_SIZE x KV_BLOCK_SIZE``, less what lies past the end of the sequences. The share
is kept / (mask batch x mask heads x s_q x s_kv); a mask that broadcasts over batch or heads
(size 1) has the same share for every one of them.
"""
from __future__ import annotations

import sys
import threading

import torch

from effmetrics import _C

_MODULE = "torch._higher_order_ops.flex_attention"
_API = "torch.nn.attention.flex_attention"  # imported by whoever calls flex_attention
# The operators' argument index of the block-mask tuple (BlockMask.as_tuple()).
_MASK_ARG = {"FlexAttentionHOP": 4, "FlexAttentionBackwardHOP": 9}

_installed = False
_install_lock = threading.Lock()
_active = 0  # profiles (and Counters) observing now
_local = threading.local()  # .inside: a flex_attention call on this thread is being counted


def install() -> None:
    """Wraps the flex_attention operators' __call__ once, when flex_attention's module has been
    imported (by the model's code). The wrapper costs one check while no profile runs."""
    global _installed
    if _installed or _API not in sys.modules or _MODULE not in sys.modules:
        return
    with _install_lock:
        if _installed:
            return
        # flex_attention runs the operator inside a region torch.compile made of its wrapper
        # (fullgraph): Dynamo would compile the wrapper's frame as part of it. Hidden from it,
        # as a whole (torch.compile loads the same module on flex_attention's first call).
        import torch._dynamo

        module = sys.modules[_MODULE]
        for cls_name, mask_arg in _MASK_ARG.items():
            cls = getattr(module, cls_name, None)
            if cls is not None and "__call__" in vars(cls):
                wrapper = _wrapped(cls.__call__, mask_arg)
                cls.__call__ = torch._dynamo.disable(wrapper, recursive=True)
        _installed = True


def activate(delta: int) -> None:
    """A profile starts (+1) or ends (-1) observing."""
    global _active
    with _install_lock:
        _active += delta


def _wrapped(call, mask_arg: int):
    def __call__(self, *args, **kwargs):
        if not _active or getattr(_local, "inside", False) or not (args and _readable(args[0])):
            return call(self, *args, **kwargs)  # not profiled; nested; traced (fake tensors)
        try:
            share = _share(args, kwargs, mask_arg)
        except Exception:  # noqa: BLE001 - a layout this code does not know: never the model's
            share = None  # error; the call's matmuls are then counted dense
        # The call's ops are seen (it runs eagerly, in a compiled region Dynamo made of
        # flex_attention's wrapper): that region is not fused code.
        _C.note_counted_graph()
        _local.inside = True
        before = _C.set_attention_share(*share) if share else None
        try:
            return call(self, *args, **kwargs)
        finally:
            _local.inside = False
            if before is not None:
                _C.set_attention_share(*before)

    __call__.__wrapped__ = call
    return __call__


def _share(args: tuple, kwargs: dict, mask_arg: int) -> tuple[int, int] | None:
    """(kept, pairs) of the call's block mask, or None: every pair kept, or nothing readable
    (meta or fake tensors, while torch traces)."""
    try:
        query, key = args[0], args[1]
        block_mask = args[mask_arg] if len(args) > mask_arg else kwargs["block_mask"]
    except (IndexError, KeyError):
        return None
    tensors = [i for i, x in enumerate(block_mask) if isinstance(x, torch.Tensor)]
    if not tensors or len(block_mask) < 4:
        return None
    first = tensors[0]
    num, idx, full_num, full_idx = block_mask[first:first + 4]
    q_block, kv_block = block_mask[-3], block_mask[-2]
    if not all(_readable(t) for t in (query, key, num, idx, full_num, full_idx) if t is not None):
        return None
    if not (isinstance(q_block, int) and isinstance(kv_block, int)):
        return None
    sq, skv = query.shape[-2], key.shape[-2]
    before = _C.record_functions(False)  # the mask's arithmetic is not the model's work
    try:
        with torch.no_grad():
            kept = _kept(num, idx, sq, skv, q_block, kv_block)
            if full_num is not None and full_idx is not None:
                kept += _kept(full_num, full_idx, sq, skv, q_block, kv_block)
    finally:
        _C.record_functions(before)
    pairs = num.shape[0] * num.shape[1] * sq * skv
    if pairs <= 0 or kept >= pairs:
        return None
    return kept, pairs


def _readable(t) -> bool:
    return type(t) is torch.Tensor and t.device.type != "meta"  # not Fake/Functional tensors


def _kept(num: torch.Tensor, idx: torch.Tensor, sq: int, skv: int, q_block: int,
          kv_block: int) -> int:
    """Pairs in the blocks listed: num[b, h, i] blocks of query block row i, whose column
    indices are idx[b, h, i, :num]. A block's area is clipped at the sequences' ends."""
    rows = (sq - torch.arange(num.shape[-1], device=num.device) * q_block).clamp(0, q_block)
    listed = torch.arange(idx.shape[-1], device=idx.device) < num.unsqueeze(-1).long()
    cols = (skv - idx.long() * kv_block).clamp(0, kv_block)
    return int(((cols * listed).sum(-1) * rows).sum())
