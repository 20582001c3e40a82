"""Predicted latency: the per-op roofline summed over a model's ops, counted on meta.

    em.predict_latency(model, x, hw="H100")   # seconds: sum over ops of max(compute, memory)
    em.predict_ops(model, x, hw="H100")       # the per-op table it sums

Each (module, op, phase) cell of the report costs max(matmul FLOPs / matmul peak + vector FLOPs
/ vector peak, bytes / bandwidth) on the hardware (effmetrics.roofline: HARDWARE presets,
"cpu" = calibrate_cpu, or a Hardware); the model's prediction is the sum. It assumes ops run
one after another at the peaks, each moving effmetrics' no-cache lower bound of bytes.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from effmetrics.roofline import Hardware, hardware, roofline_times


def _on_meta(t):
    return torch.empty_like(t, device="meta") if isinstance(t, torch.Tensor) else t


def count_on_meta(model, *args: Any, memory: bool = False, **kwargs: Any):
    """em.profile of model(*args, **kwargs) on meta, leaving the model as it was: an nn.Module
    whose parameters or buffers are not all on meta runs with meta stand-ins of them for the
    call only (its own tensors are not moved, unlike profile(device="meta")); tensor inputs
    are replaced by meta tensors of the same shapes and dtypes. memory=True also measures
    activation_bytes (autograd on for the pass). Other keywords go to em.profile (backward=,
    loss_fn=) and through it to the model."""
    from effmetrics.compiled import on_meta
    from effmetrics.profiler import profile

    if "device" in kwargs:
        raise TypeError("counting is on meta here; device= does not apply (to count on "
                        "another device, use em.profile(model, ..., device=...))")
    args, kwargs = pytree.tree_map(_on_meta, (args, kwargs))
    stand_ins = contextlib.nullcontext()
    if isinstance(model, nn.Module) and any(
            not t.is_meta for t in (*model.parameters(), *model.buffers())):
        stand_ins = on_meta(model)
    with stand_ins, torch.enable_grad() if memory else contextlib.nullcontext():
        return profile(model, *args, memory=memory, **kwargs)


def _report(model_or_report, args: tuple, kwargs: dict):
    from effmetrics.report import Report

    if isinstance(model_or_report, Report):
        if args or kwargs:
            raise TypeError("a Report is already counted: pass it alone (em.predict_latency(rep, "
                            "hw=...)), or pass the model and its inputs instead")
        return model_or_report
    if not (isinstance(model_or_report, nn.Module) or callable(model_or_report)):
        raise TypeError(f"expected a model (nn.Module or callable) and its inputs, or a Report "
                        f"from em.profile; got {type(model_or_report).__name__}")
    return count_on_meta(model_or_report, *args, **kwargs)


def op_predictions(cells, hw: str | Hardware):
    """The cells of a Report's ops() with compute_s, memory_s, predicted_s and bound added."""
    h = hardware(hw)
    out = cells.copy()
    out["compute_s"], out["memory_s"], out["predicted_s"] = roofline_times(out, h)
    out["bound"] = (out["compute_s"] >= out["memory_s"]).map({True: "compute", False: "memory"})
    out.attrs["hardware"] = h.name
    return out


def predict_ops(model_or_report, *inputs: Any, hw: str | Hardware = "cpu", **kwargs: Any):
    """The per-op roofline table: one row per (module, op, phase) cell of the report (counted
    on meta when given a model, see count_on_meta) with compute_s, memory_s, predicted_s =
    max(compute_s, memory_s) and bound; most predicted time first. hw: a HARDWARE preset name,
    "cpu" (calibrate_cpu: measured once, cached) or a Hardware."""
    rep = _report(model_or_report, inputs, kwargs)
    out = op_predictions(rep.ops(), hw)
    return out.sort_values("predicted_s", ascending=False, kind="stable").reset_index(drop=True)


def predict_latency(model_or_report, *inputs: Any, hw: str | Hardware = "cpu",
                    **kwargs: Any) -> float:
    """Predicted seconds of model(*inputs, **kwargs) on hw: the sum over its ops of
    max(matmul FLOPs / matmul peak + vector FLOPs / vector peak, bytes / bandwidth).

    model_or_report: a Report (from em.profile), or a model counted here on meta without
    moving it (keywords such as backward=True go to em.profile, the rest to the model).
    Equals em.roofline(report, hw).loc["", "predicted_s"].
    """
    return float(predict_ops(model_or_report, *inputs, hw=hw, **kwargs)["predicted_s"].sum())
