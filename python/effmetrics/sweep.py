"""sweep() and load(): run many configurations, one SQLite row each, resumable; the named sweeps
of the paper's cases (SWEEPS, run_named) and config_columns (the store's `config` as columns).

Each finished configuration is committed in its own transaction (WAL journal), so a sweep that is
killed loses at most the configuration in flight; a rerun skips what the store already holds.
"""
from __future__ import annotations

import json
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from effmetrics.report import COUNT_FIELDS

# A profile's totals as stored: every count field but op calls, op and communication time (timing
# is measured apart, by em.benchmark) and the collectives' summed group sizes.
_COUNTS = tuple(f for f in COUNT_FIELDS
                if f not in ("calls", "time_ns", "comm_time_ns", "comm_ranks"))

COLUMNS = {  # name -> SQLite type; the store's schema, in order
    "model": "TEXT NOT NULL", "device": "TEXT NOT NULL", "dtype": "TEXT NOT NULL",
    "batch_size": "INTEGER NOT NULL", "sweep": "TEXT", "config": "TEXT",
    "params": "INTEGER", "params_applied": "INTEGER", "params_touched": "INTEGER",
    "params_nonzero": "INTEGER",
    **dict.fromkeys(_COUNTS, "INTEGER"), "intensity": "REAL",
    "latency_median": "REAL", "latency_iqr": "REAL", "latency_n": "INTEGER",
    "throughput": "REAL", "peak_memory_bytes": "INTEGER", "activation_bytes": "INTEGER",
    "torch_version": "TEXT", "hardware": "TEXT", "created": "REAL",
}
KEY = ("model", "device", "dtype", "batch_size")
MEASURES = {"count", "time", "memory"}


def hardware_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _connect(store: str) -> sqlite3.Connection:
    conn = sqlite3.connect(store)
    conn.execute("PRAGMA journal_mode=WAL")
    cols = ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
    conn.execute(f"CREATE TABLE IF NOT EXISTS results ({cols}, PRIMARY KEY ({', '.join(KEY)}))")
    # A store written by an older version lacks the newer columns: add them (rows keep NULL).
    have = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
    with conn:
        for name, kind in COLUMNS.items():
            if name not in have:
                kind = kind.replace(" NOT NULL", "")
                conn.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")
    return conn


def load(store: str):
    """The store as a DataFrame (one row per configuration, device, dtype and batch size)."""
    import pandas as pd

    if not os.path.exists(store):
        raise FileNotFoundError(f"no results store at {store!r}: run em.sweep(..., store=...)")
    with sqlite3.connect(store) as conn:
        return pd.read_sql_query("SELECT * FROM results ORDER BY created", conn)


def config_columns(df):
    """df with each row's config (the store's `config` column, JSON) expanded into columns.

    A dict config gives its keys; a named sweep's [zoo name, {overrides}] gives the overrides;
    any other config gives no columns. Keys that are already columns of df keep df's values.
    """
    import pandas as pd

    def as_dict(text) -> dict:
        if not isinstance(text, str):
            return {}
        try:
            config = json.loads(text)
        except ValueError:
            return {}
        if isinstance(config, list) and len(config) == 2 and isinstance(config[1], dict):
            config = config[1]
        return config if isinstance(config, dict) else {}

    configs = [as_dict(c) for c in df["config"]] if "config" in df.columns else []
    expanded = pd.DataFrame(configs, index=df.index)
    return pd.concat([df, expanded[[c for c in expanded.columns if c not in df.columns]]], axis=1)


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled, self.t0 = total, 0, enabled, time.perf_counter()
        self.tty = sys.stderr.isatty()

    def show(self, name: str, note: str = "") -> None:
        if not self.enabled:
            return
        if not self.tty:  # logs and CI: one line per finished configuration
            if note == "done":
                sys.stderr.write(f"[{self.done}/{self.total}] {name}\n")
            return
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        width = 24
        bar = "#" * (width * self.done // max(self.total, 1))
        sys.stderr.write(f"\r[{bar:<{width}}] {self.done}/{self.total} {name[:28]:<28} "
                         f"{note:<8} ETA {eta:5.0f}s ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def sweep(
    configs: Mapping[str, Any] | Iterable[tuple[str, Any]],
    build: Callable[[Any], torch.nn.Module],
    make_inputs: Callable[[Any, int], Any],
    measure: Iterable[str] = ("count", "time", "memory"),
    store: str = "results.sqlite",
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    batch_size: int = 1,
    progress: bool = True,
    timing: Mapping[str, Any] | None = None,
    tag: str | None = None,
    effective: bool = False,
):
    """Run every configuration and store one row each; returns the whole store (em.load).

    configs: {name: config} (or (name, config) pairs); build(config) -> model;
    make_inputs(config, batch_size) -> the model's argument or a tuple of arguments.
    measure: "count" (FLOPs, bytes, params: on meta when only counting), "time" (em.benchmark),
    "memory" (peak and activation bytes). Configurations already in the store are skipped.
    tag names the sweep in the store's `sweep` column (reports group rows by it).
    effective: count flops_effective from the weights' values (zeros) and params_nonzero; the
    models are then built on `device`, not on meta, even when only counting.
    """
    import effmetrics as em

    measure = set(measure)
    if not measure or measure - MEASURES:
        raise ValueError(f"measure must be a non-empty subset of {sorted(MEASURES)}; got "
                         f"{sorted(measure)}")
    items = list(configs.items() if isinstance(configs, Mapping) else configs)
    dtype_name = str(dtype).replace("torch.", "")
    conn = _connect(store)
    done = {row[0] for row in conn.execute(
        "SELECT model FROM results WHERE device=? AND dtype=? AND batch_size=?",
        (device, dtype_name, batch_size))}
    todo = [(n, c) for n, c in items if n not in done]
    bar = _Progress(len(items), progress)
    bar.done = len(items) - len(todo)
    try:
        for name, config in todo:
            bar.show(name, "running")
            row = _measure(em, name, config, build, make_inputs, measure, device, dtype,
                           batch_size, dict(timing or {}), effective)
            row.update(model=name, device=device, dtype=dtype_name, batch_size=batch_size,
                       sweep=tag,
                       config=json.dumps(config, default=str), torch_version=torch.__version__,
                       hardware=hardware_name(device), created=time.time())
            with conn:  # one transaction per row
                names = list(COLUMNS)
                conn.execute(f"INSERT INTO results ({', '.join(names)}) VALUES "
                             f"({', '.join('?' * len(names))})", [row.get(n) for n in names])
            bar.done += 1
            bar.show(name, "done")
    finally:
        bar.close()
        conn.close()
    return load(store)


def _as_args(inputs) -> tuple:
    return inputs if isinstance(inputs, tuple) else (inputs,)


def _measure(em, name, config, build, make_inputs, measure, device, dtype, batch_size,
             timing, effective=False) -> dict:
    row: dict = {}
    run_device = device if {"time", "memory"} & measure or effective else "meta"
    with torch.device(run_device):
        model = build(config)
    model = model.to(dtype=dtype) if dtype.is_floating_point else model
    model.eval()
    args = _as_args(make_inputs(config, batch_size))
    args = tuple(a.to(run_device, dtype=dtype) if torch.is_tensor(a) and a.is_floating_point()
                 else a.to(run_device) if torch.is_tensor(a) else a for a in args)
    # with memory, the pass keeps autograd on so activation_bytes (what training holds) is seen
    with torch.enable_grad() if "memory" in measure else torch.no_grad():
        rep = em.profile(model, *args, memory="memory" in measure, effective=effective)
    row.update(params=rep.params.total, params_applied=rep.params.applied,
               params_touched=rep.params.touched, params_nonzero=rep.params.nonzero,
               intensity=rep.intensity,
               **{f: getattr(rep, f) for f in _COUNTS})
    if "memory" in measure:
        row.update(peak_memory_bytes=rep.peak_memory_bytes, activation_bytes=rep.activation_bytes)
    if "time" in measure:
        t = em.benchmark(model, *args, batch_size=batch_size, **timing)
        row.update(latency_median=t.median, latency_iqr=t.iqr, latency_n=t.n,
                   throughput=t.throughput)
    return row


# The named sweeps of the paper's cases, at sizes a 2-core CPU measures in minutes. One table:
# SWEEPS[name] = {row name: (zoo model, config overrides, batch size)}.
_TEXT_SMALL = dict(dim=256, heads=4, mlp=1024, vocab=8000, max_len=128)

SWEEPS: dict = {
    # The paper's depth vs width study (ViT at 64px; widths at 64-dim heads, MLP 4x).
    "vit-depth-width": {
        f"vit d{d} w{w}": ("vit-b/16", dict(depth=d, dim=w, heads=w // 64, mlp=4 * w,
                                             image=64, patch=8), 4)
        for d in (2, 4, 8) for w in (128, 256, 384)
    },
    # Patch size at fixed width (the full ViT-S at 224px): FLOPs ~20x apart at ~equal params.
    "patch-size": {f"vit-s/{p}": ("vit-s/16", dict(patch=p), 1) for p in (32, 16, 8)},
    # Parameter sharing: the Universal Transformer applies one block as often as BERT has blocks.
    "sharing": {
        "bert 6 layers": ("bert-base", dict(depth=6, **_TEXT_SMALL), 4),
        "universal 6x1": ("ut-base", dict(depth=6, **_TEXT_SMALL), 4),
    },
    # Mixture of experts: parameters grow with experts, FLOPs per token stay.
    "moe": {
        f"switch {e} experts": ("switch-base-8", dict(depth=4, experts=e, **_TEXT_SMALL), 4)
        for e in (2, 8, 32)
    },
    # Sparsity: magnitude-pruned ViT (every Linear weight) at 0, 50 and 90%, and the 2:4 pattern
    # (kept dense: this CPU's torch has no 2:4 kernels). flops_effective drops with the zeros;
    # dense kernels do the same work.
    "sparsity": {
        **{f"vit {int(100 * a)}% pruned": ("vit-s/16", dict(depth=4, image=64, patch=8, prune=a),
                                           4) for a in (0.0, 0.5, 0.9)},
        "vit 2:4 pattern": ("vit-s/16", dict(depth=4, image=64, patch=8, prune="2:4"), 4),
    },
    # Conv nets vs ViT at 224: fewer FLOPs is not proportionally faster.
    "convnets": {
        "efficientnet-b0 (b8)": ("efficientnet-b0", {}, 8),
        "resnet-50 (b8)": ("resnet-50", {}, 8),
        "vit-s/16 (b8)": ("vit-s/16", {}, 8),
    },
}

_ROW_FORMAT = "[zoo model, {config overrides}, batch size]"


def effective_columns(df) -> list:
    """params_nonzero where it was counted, and flops_effective where it differs from flops:
    the columns that show a sweep's sparsity (tables and the report add them)."""
    cols = []
    if "params_nonzero" in df.columns and df["params_nonzero"].notna().any():
        cols.append("params_nonzero")
    if "flops_effective" in df.columns and (df["flops_effective"] != df["flops"]).any():
        cols.append("flops_effective")
    return cols


def run_named(name: str, store: str, measure=("count", "time", "memory"), progress: bool = True,
              timing: Mapping[str, Any] | None = None, device: str = "cpu",
              rows: Mapping[str, Any] | None = None):
    """Run a sweep of zoo models into store (skipping what it already holds), tagged `name`;
    returns its rows of the store.

    rows: {row name: (zoo model, config overrides, batch size)}; None runs SWEEPS[name]. An
    override prune=fraction or "2:4" magnitude-prunes the built model (models.magnitude_prune)
    and counts flops_effective from its zeros.
    """
    from effmetrics.models import build, example_input, magnitude_prune

    if rows is None:
        if name not in SWEEPS:
            raise ValueError(f"unknown sweep {name!r}; named sweeps: {', '.join(SWEEPS)} (or "
                             f"pass rows={{row name: {_ROW_FORMAT}}})")
        rows = SWEEPS[name]
    by_batch: dict = {}
    for row, spec in rows.items():
        if not (isinstance(spec, (tuple, list)) and len(spec) == 3
                and isinstance(spec[0], str) and isinstance(spec[1], Mapping)
                and isinstance(spec[2], int)):
            raise ValueError(f"sweep {name!r}, row {row!r}: {spec!r} is not {_ROW_FORMAT}")
        zoo, overrides, batch = spec
        by_batch.setdefault(batch, {})[row] = (zoo, overrides)
    def overrides(c) -> dict:
        return {k: v for k, v in c[1].items() if k != "prune"}

    def make(c):
        model = build(c[0], **overrides(c))
        return magnitude_prune(model, c[1]["prune"]) if "prune" in c[1] else model

    df = None
    for batch, configs in by_batch.items():
        df = sweep(configs, make, lambda c, bs: example_input(c[0], batch=bs, **overrides(c)),
                   measure=measure, store=store, batch_size=batch, progress=progress,
                   timing=timing or {"min_run_time": 0.1, "max_run_time": 1.0, "warmup": 1},
                   device=device, tag=name,
                   effective=any("prune" in c[1] for c in configs.values()))
    if df is None:
        raise ValueError(f"sweep {name!r} has no rows: give at least one {_ROW_FORMAT}")
    return df[df["sweep"] == name].reset_index(drop=True)
