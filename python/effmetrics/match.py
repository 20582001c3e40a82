"""match(): the configurations of a model family that cost what a target costs, on one metric,
with every other cost next to them ("fair comparisons": a FLOP-matched model may lose most of
its parameters, or take twice the time).

    df = em.match(lambda depth, dim: build("vit-ti/16", depth=depth, dim=dim),
                  {"depth": [2, 4, 6], "dim": [192, 384]},
                  target=(reference_model, reference_input), on="flops", tolerance=0.05,
                  make_inputs=lambda config: torch.randn(1, 3, 224, 224), hw=["H100", "cpu"])

Every configuration is built under ``torch.device(device)`` (meta by default: no memory, no
compute) and counted once with em.profile(memory=True); with ``store=``, each one is committed to
an SQLite file as it finishes, and a rerun (after a crash, or with another target or tolerance)
reads the counted ones back instead of counting them again.
"""
from __future__ import annotations

import itertools
import json
import math
import numbers
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from effmetrics.roofline import Hardware, hardware, roofline_times

#: The costs of every configuration, in the result's column order; `on` may be any of these or
#: a predicted_s_<hw> column.
METRICS = ("params", "params_applied", "params_touched", "flops", "macs", "flops_matmul",
           "bytes", "activation_bytes")
_TABLE = "match_results"


def configs_of(space) -> list[dict]:
    """The configurations of a search space: a dict of lists is a grid (every combination, the
    last key varying fastest); a list of dicts is taken as it is."""
    if isinstance(space, Mapping):
        if not space:
            raise ValueError("space is empty: give {name: [values, ...]} or a list of configs")
        for key, values in space.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                raise TypeError(f"space[{key!r}] must be a list of values; got {values!r} "
                                f"(write [{values!r}] for a fixed value)")
        keys = list(space)
        return [dict(zip(keys, combo)) for combo in itertools.product(*space.values())]
    if isinstance(space, Iterable) and not isinstance(space, (str, bytes)):
        configs = list(space)
        bad = [c for c in configs if not isinstance(c, Mapping)]
        if bad:
            raise TypeError(f"a list space holds config dicts (keyword arguments of build); got "
                            f"{bad[0]!r}")
        if not configs:
            raise ValueError("space is empty: give {name: [values, ...]} or a list of configs")
        return [dict(c) for c in configs]
    raise TypeError(f"space must be a dict of lists (a grid) or a list of config dicts; got "
                    f"{type(space).__name__}")


def _hw_key(h: Hardware, given) -> str:
    return given if isinstance(given, str) else h.name


def _columns(hws: list[tuple[str, Hardware]]) -> list[str]:
    return [*METRICS, *(f"predicted_s_{key}" for key, _ in hws)]


def _as_args(inputs) -> tuple:
    return inputs if isinstance(inputs, tuple) else (inputs,)


def _signature(args) -> list:
    """What identifies the inputs in the store: each tensor's shape and dtype, other leaves."""
    return [[list(t.shape), str(t.dtype).removeprefix("torch.")] if isinstance(t, torch.Tensor)
            else repr(t) for t in pytree.tree_leaves(args)]


def _costs(model, args: tuple, device: str) -> dict:
    """Totals of one counted pass and its op cells (flops_matmul, flops_vector, bytes), from
    which a predicted latency on any hardware is a sum."""
    from effmetrics.predict import count_on_meta
    from effmetrics.profiler import profile

    if device == "meta":
        rep = count_on_meta(model, *args, memory=True)
    else:
        args = pytree.tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, args)
        with torch.enable_grad():
            rep = profile(model, *args, memory=True)
    return _costs_of_report(rep)


def _costs_of_report(rep) -> dict:
    cells = rep.ops()
    cells = cells[(cells["flops"] > 0) | (cells["bytes_read"] + cells["bytes_written"] > 0)]
    p = rep.params
    return {
        "params": p.total if p is not None else None,
        "params_applied": p.applied if p is not None else None,
        "params_touched": p.touched if p is not None else None,
        "flops": rep.flops, "macs": rep.macs, "flops_matmul": rep.flops_matmul,
        "bytes": rep.bytes_read + rep.bytes_written, "activation_bytes": rep.activation_bytes,
        "cells": cells[["flops_matmul", "flops_vector", "bytes_read", "bytes_written"]]
        .astype(float).values.tolist(),
    }


def _predicted(cells: list, h: Hardware) -> float:
    import pandas as pd

    df = pd.DataFrame(cells, columns=["flops_matmul", "flops_vector", "bytes_read",
                                      "bytes_written"])
    return float(roofline_times(df, h)[2].sum())


def _row(costs: dict, hws) -> dict:
    row = {m: costs[m] for m in METRICS}
    for key, h in hws:
        row[f"predicted_s_{key}"] = _predicted(costs["cells"], h)
    return row


class _Store:
    """One SQLite file (WAL journal, one transaction per configuration, like em.sweep's store),
    table match_results: the costs of (build, config, inputs, device), as JSON."""

    def __init__(self, path: str | None):
        self.conn = None
        if path is None:
            return
        self.conn = sqlite3.connect(path)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS {_TABLE} (build TEXT NOT NULL, config "
                          "TEXT NOT NULL, inputs TEXT NOT NULL, device TEXT NOT NULL, costs "
                          "TEXT NOT NULL, torch_version TEXT, created REAL, PRIMARY KEY (build, "
                          "config, inputs, device))")

    def get(self, key: tuple) -> dict | None:
        if self.conn is None:
            return None
        row = self.conn.execute(f"SELECT costs FROM {_TABLE} WHERE build=? AND config=? AND "
                                "inputs=? AND device=?", key).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: tuple, costs: dict) -> None:
        if self.conn is None:
            return
        with self.conn:
            self.conn.execute(f"INSERT OR REPLACE INTO {_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (*key, json.dumps(costs), torch.__version__, time.time()))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _build_name(build) -> str:
    if isinstance(build, str):
        return build
    return f"{getattr(build, '__module__', '')}.{getattr(build, '__qualname__', repr(build))}"


def _zoo(name: str):
    from effmetrics.models import ZOO, build, example_input

    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}: build must be a callable (build(**config) -> "
                         f"nn.Module) or a zoo name ({', '.join(sorted(ZOO))})")
    return (lambda **config: build(name, **config)), (
        lambda config: example_input(name, **config))


def _reference(target, on: str, device: str, hws) -> tuple[float, dict | None]:
    """(target value of `on`, the reference's costs or None for a plain number)."""
    from effmetrics.report import Report

    if isinstance(target, bool) or target is None:
        raise TypeError(f"target must be a number, a Report or a (model, inputs) tuple; got "
                        f"{target!r}")
    if isinstance(target, numbers.Real):
        value = float(target)
        if not math.isfinite(value) or value == 0:
            raise ValueError(f"target must be a finite, non-zero number (tolerance is relative "
                             f"to it); got {target!r}")
        return value, None
    if isinstance(target, Report):
        row = _row(_costs_of_report(target), hws)
        return _value(row, on), row
    if isinstance(target, nn.Module):
        raise TypeError("target is a model without its inputs: pass target=(model, inputs), "
                        "inputs being its argument or a tuple of arguments")
    if isinstance(target, tuple) and len(target) == 2 and callable(target[0]):
        model, inputs = target
        row = _row(_costs(model, _as_args(inputs), device), hws)
        return _value(row, on), row
    raise TypeError(f"target must be a number, a Report or a (model, inputs) tuple; got "
                    f"{type(target).__name__}")


def _value(costs: dict, on: str) -> float:
    value = costs.get(on)
    if value is None:
        raise ValueError(f"the target has no {on!r} (a Report has activation_bytes only from "
                         "profile(memory=True), params only for an nn.Module)")
    if value == 0:
        raise ValueError(f"the target's {on} is 0: a relative tolerance needs a non-zero target")
    return float(value)


def match(
    build: Callable[..., nn.Module] | str,
    space: Mapping[str, Iterable] | Iterable[Mapping[str, Any]],
    target: float | Any,
    *,
    on: str = "flops",
    tolerance: float = 0.05,
    make_inputs: Callable[[dict], Any] | None = None,
    device: str = "meta",
    hw: str | Hardware | Iterable[str | Hardware] | None = None,
    store: str | None = None,
    progress: bool = True,
):
    """The configurations whose `on` cost is within `tolerance` (relative) of the target's, with
    their other costs, closest first.

    build: build(**config) -> nn.Module, or a zoo name (effmetrics.models.ZOO; its
        example_input(name, **config) is then the default make_inputs).
    space: {name: [values...]} (a grid: every combination) or a list of config dicts.
    target: a number (the target value of `on`); a (model, inputs) tuple, counted like the
        candidates (a model with real weights is not moved: meta stand-ins for the call); or a
        Report of the reference (for the counts a Report holds).
    on: one of METRICS (params, params_applied, params_touched, flops, macs, flops_matmul,
        bytes = read + written, activation_bytes) or predicted_s_<hw key> for a hw given.
    make_inputs: make_inputs(config) -> the model's argument or a tuple of arguments (called
        under torch.device(device), so factory functions make meta tensors).
    device: where to build and count; "meta" (default) allocates nothing and computes nothing.
    hw: hardware for predicted-latency columns predicted_s_<key> (per-op roofline, as
        em.predict_latency): a HARDWARE preset name (the key), "cpu" (calibrate_cpu), a
        Hardware (key: its name), or a list of them.
    store: an SQLite file; configurations already counted there (same build name, config,
        input shapes and device) are read back, each new one committed when counted.
    progress: one stderr line per configuration.

    Returns a DataFrame: the config's keys as columns, METRICS, predicted_s_<key>...,
    `relative_diff` ((value - target) / target) and `distance` (its absolute value), sorted by
    distance. attrs: target, on, tolerance, tried (configurations counted or read back),
    counted (counted in this call), reference (the reference's costs, if any).
    """
    import pandas as pd

    if not (isinstance(tolerance, numbers.Real) and tolerance >= 0):
        raise ValueError(f"tolerance must be a relative difference >= 0 (0.05 = 5%); got "
                         f"{tolerance!r}")
    if isinstance(build, str):
        build, default_inputs = _zoo(build_name := build)
        make_inputs = make_inputs or default_inputs
    elif callable(build):
        build_name = _build_name(build)
    else:
        raise TypeError(f"build must be a callable (build(**config) -> nn.Module) or a zoo "
                        f"name; got {type(build).__name__}")
    if make_inputs is None:
        raise TypeError("make_inputs is required with a build callable: make_inputs(config) -> "
                        "the model's argument or a tuple of arguments")
    given = [hw] if isinstance(hw, (str, Hardware)) or hw is None else list(hw)
    hws = [(_hw_key(hardware(g), g), hardware(g)) for g in given if g is not None]
    columns = _columns(hws)
    if on not in columns:
        raise ValueError(f"on={on!r} is not a cost match computes; choose one of "
                         f"{', '.join(columns)} (predicted_s_<hw> needs hw=)")
    configs = configs_of(space)
    goal, reference = _reference(target, on, device, hws)

    db = _Store(store)
    rows, counted = [], 0
    try:
        for i, config in enumerate(configs, 1):
            with torch.device(device):
                args = _as_args(make_inputs(config))
            key = (build_name, json.dumps(config, sort_keys=True, default=str),
                   json.dumps(_signature(args)), device)
            costs = db.get(key)
            note = "from the store"
            if costs is None:
                try:
                    with torch.device(device):
                        model = build(**config)
                    if isinstance(model, nn.Module):
                        model.eval()
                    costs = _costs(model, args, device)
                except Exception as e:
                    if hasattr(e, "add_note"):
                        e.add_note(f"effmetrics.match: while counting config {config}")
                    raise
                db.put(key, costs)
                counted += 1
                note = "counted"
            row = {**config, **_row(costs, hws)}
            rows.append(row)
            if progress:
                sys.stderr.write(f"[{i}/{len(configs)}] {config}: {on}={row[on]} ({note})\n")
    finally:
        db.close()

    df = pd.DataFrame(rows)
    values = df[on].astype(float)
    df["relative_diff"] = (values - goal) / abs(goal)
    df["distance"] = df["relative_diff"].abs()
    # a hair of slack so a boundary value written as a float still matches
    df = df[df["distance"] <= tolerance * (1 + 1e-12)]
    df = df.sort_values("distance", kind="stable").reset_index(drop=True)
    df.attrs.update(target=goal, on=on, tolerance=tolerance, tried=len(configs),
                    counted=counted, reference=reference)
    return df


def perceiver_io_case(small: bool = False, hw=("H100", "cpu")):
    """The Perceiver IO situation (Dehghani et al. 2022, sec. 4): byte-level BERTs at 2048
    tokens (models.byte_bert, a depth x width grid) matched to BERT-Base at 512 tokens on FLOPs
    within 15%, counted on meta. The matches with params_lost (the share of BERT-Base's
    parameters they give up); attrs as match()'s. small: a 3 x 3 grid (tests)."""
    from effmetrics.models import build, byte_bert

    with torch.device("meta"):
        bert_base = build("bert-base")  # 109,482,240 parameters, 512 tokens
    space = {"depth": [4, 6, 12] if small else [2, 4, 6, 8, 12],
             "dim": [256, 384, 512] if small else [256, 384, 512, 640, 768]}
    matched = match(byte_bert, space, (bert_base, torch.zeros(1, 512, dtype=torch.long)),
                    on="flops", tolerance=0.15,
                    make_inputs=lambda config: torch.zeros(1, 2048, dtype=torch.long),
                    hw=list(hw), progress=False)
    matched["params_lost"] = 1 - matched["params"] / matched.attrs["reference"]["params"]
    return matched
