"""Report: what one profiled region cost, as numbers, tables and JSON."""
from __future__ import annotations

import json

from effmetrics import _C
from effmetrics.params import ParamCount
from effmetrics.units import binary, si

#: The count fields of every op, module and total, in the C++ core's order (Counts::fields);
#: ``calls`` first, then flops, macs, ..., time_ns.
COUNT_FIELDS: tuple = _C.COUNT_FIELDS
_COUNT_FIELDS = tuple(f for f in COUNT_FIELDS if f != "calls")  # calls: of modules or of ops


def _inside(name: str, module: str) -> bool:
    """Whether qualified name `name` is `module` or below it ("" is the whole model)."""
    return not module or name == module or name.startswith(module + ".")


def intensity(df):
    """FLOPs per byte moved for each row of a table of counts (0 where nothing moved): the
    table's rows may be sums made in pandas, so it is computed here, as Counts::intensity does
    for one C++ row."""
    moved = df["bytes_read"] + df["bytes_written"]
    return (df["flops"] / moved.where(moved > 0)).fillna(0.0)


def _add_rates(df, timed: bool = True) -> None:
    """Derived columns: intensity; with times, achieved FLOP/s and bytes/s. timed=False: times
    were not measured for these rows (NaN, not 0)."""
    moved = df["bytes_read"] + df["bytes_written"]
    df["intensity"] = intensity(df)
    if not timed:
        df["time_ns"] = float("nan")
    seconds = df["time_ns"] / 1e9
    df["time_s"] = seconds
    df["flops_per_s"] = (df["flops"] / seconds.where(seconds > 0)).fillna(0.0)
    df["bytes_per_s"] = (moved / seconds.where(seconds > 0)).fillna(0.0)


class Report:
    """Counts of one profiled pass (see README "Counting conventions").

    Totals are attributes (``flops``, ``macs``, ``flops_forward``, ``bytes_read``...);
    ``by_module()`` and ``by_op()`` give pandas DataFrames; ``params`` a ParamCount with
    ``applied`` and ``touched`` filled from the pass.
    """

    def __init__(self, raw, params: ParamCount | None = None,
                 module_params: dict | None = None, memory: dict | None = None,
                 compiles: dict | None = None, timing: dict | None = None,
                 basis: dict | None = None):
        self._raw = raw  # _C.Report: each part converted when read
        self._basis = basis or {}  # what Python knows of flops_effective (zeros, 2:4)
        # A compiled model: counts from its graphs (raw), times of the compiled run itself
        # (whole-model only: its fused kernels are not ops, so rows have no times).
        self._timing = timing
        compiles = compiles or {}
        #: seconds spent compiling (torch.compile) inside the profiled call, never counted
        self.compile_s: float = compiles.get("compile_s", 0.0)
        #: how many compilations (Dynamo frames, lazy backward graphs) happened in it
        self.compiles: int = compiles.get("compiles", 0)
        self._module_params = module_params or {}
        memory = memory or {}
        #: peak allocated bytes of the pass (profile(memory=True)); how it was measured:
        self.peak_memory_bytes: int | None = memory.get("peak_memory_bytes")
        self.peak_memory_method: str | None = memory.get("peak_memory_method")
        #: bytes of the tensors autograd saved for backward (profile(memory=True))
        self.activation_bytes: int | None = memory.get("activation_bytes")
        self._activation_by_module: dict = memory.get("activation_bytes_by_module", {})
        if params is not None:
            if raw.params_applied >= 0:
                params.applied = raw.params_applied
                params.touched = raw.params_touched
        self.params = params
        total = raw.total
        for field in _COUNT_FIELDS:
            setattr(self, field, total[field])
        #: FLOPs per byte moved (no-cache lower bound of memory traffic)
        self.intensity: float = total["intensity"]
        self.unsupported_ops: dict[str, int] = raw.unsupported_ops
        #: registered rules that raised: op -> the first error (the op is listed unsupported)
        self.rule_errors: dict[str, str] = raw.rule_errors

    @property
    def effective_basis(self) -> dict:
        """What ``flops_effective`` could remove in this pass, per kind of information:
        "causal" (SDPA is_causal), "mask" (boolean attention masks' True elements),
        "block_mask" (flex_attention's BlockMask: the pairs in its kept blocks), "zeros" (zero
        weights of linear/matmul/conv), "2:4" (semi-structured sparse weights). Each value says
        "applied", "none in this pass", or why it was not applied (not requested:
        ``effective=True``; no values on meta)."""
        got = set(self._raw.effective_basis)
        mask = "none in this pass"
        if "mask" in got:
            mask = "applied"
            if "mask:no-data" in got:
                mask += " (some masks had no values: meta, not discounted)"
        elif "mask:no-data" in got:
            mask = "not applied: boolean masks without values (meta tensors)"
        elif "mask:not-requested" in got:
            mask = "not requested: boolean masks are read with effective=True"
        zeros = self._basis.get("zeros", "not requested: pass effective=True")
        if "zeros" in got:
            zeros = "applied"
        return {"causal": "applied" if "causal" in got else "none in this pass",
                "mask": mask,
                "block_mask": "applied" if "block_mask" in got else "none in this pass",
                "zeros": zeros,
                "2:4": self._basis.get("2:4", "none in this pass")}

    @property
    def coverage(self) -> dict | None:
        """Where the measured time went (profile(time=True), host clocks): the share of the
        time of the counted ops spent in ops with a FLOP rule (``flop_rule``), in ops counted
        as memory only (memory, view and collective rules: ``memory_only``) and in ops without
        a rule (``unsupported``); the three sum to 1. The denominator (``time_s``) is the time
        of the counted ops, each nanosecond once: an op's own time less that of the counted ops
        below it (time between ops, in Python, is not in it). None when not timed on host clocks
        (CUDA events time modules, not every op)."""
        ns = self._raw.coverage_ns
        total = sum(ns)
        if self._timing is not None or self.clock != "steady_clock" or total <= 0:
            return None
        return {"flop_rule": ns[0] / total, "memory_only": ns[1] / total,
                "unsupported": ns[2] / total, "time_s": total / 1e9}

    @property
    def timed(self) -> bool:
        """Whether the pass was profiled with time=True."""
        return self._timing is not None or self._rows_timed

    @property
    def _rows_timed(self) -> bool:  # modules and ops have times
        return self._raw.wall_ns > 0

    @property
    def compiled(self) -> bool:
        """A torch.compile'd model: counted through its graphs, timed as one compiled run."""
        return self._timing is not None

    @property
    def clock(self) -> str | None:
        """How times were measured: "steady_clock" (host, per op), "cuda_event" (device
        timeline: events around the outermost ops), None when not timed."""
        return self._timing["clock"] if self._timing else (self._raw.clock or None)

    @property
    def time_s(self) -> float:
        """Seconds spent inside the ops (time=True; 0 otherwise). With CUDA events: the
        device time covered by the ops. A compiled model: the compiled run's wall time."""
        return self._timing["wall_s"] if self._timing else self.time_ns / 1e9

    @property
    def wall_s(self) -> float:
        """Wall time of the profiled region (time=True; 0 otherwise); with CUDA events, the
        device's time from the start mark to the end mark."""
        return self._timing["wall_s"] if self._timing else self._raw.wall_ns / 1e9

    @property
    def busy_s(self) -> float:
        """Time covered by ops (host threads inside top-level ops, or the device inside the
        spans of the outermost ops); ``idle_s = wall_s - busy_s``. NaN for a compiled run
        (its kernels are not ops)."""
        return float("nan") if self._timing else self._raw.busy_ns / 1e9

    @property
    def idle_s(self) -> float:
        return max(self.wall_s - self.busy_s, 0.0)

    @property
    def comm_time_s(self) -> float:
        """Seconds the collectives' and p2p ops' backend work took (time=True; 0 otherwise):
        a gloo work from its start to its end on the backend's thread, a send/recv from posting
        it to the end of its wait. Concurrent works add up."""
        return self.comm_time_ns / 1e9

    @property
    def exposed_comm_s(self) -> float | None:
        """Communication time not overlapped with compute (time=True): time during which some
        collective or p2p work was in flight and no other op ran on any observed thread. None
        once a collective ran on a GPU: its work overlaps compute on the device, where the
        host clock cannot see it (comm_time_s has its device time)."""
        ns = self._raw.exposed_comm_ns
        return None if ns < 0 else ns / 1e9

    @property
    def peer_wait_s(self) -> float | None:
        """The part of exposed_comm_s with a p2p receive in flight: waiting for a peer (None
        as exposed_comm_s)."""
        ns = self._raw.peer_wait_ns
        return None if ns < 0 else ns / 1e9

    @property
    def comm_untimed(self) -> int:
        """GPU collectives whose device time could not be read (their backend keeps no start
        and end events): their time is missing from comm_time_s."""
        return self._raw.comm_untimed

    @property
    def comm_untimed_why(self) -> str:
        """Why the first untimed GPU collective's time could not be read ("" if none)."""
        return self._raw.comm_untimed_why

    def by_collective(self):
        """One row per collective or p2p op (c10d name) and group size: calls, group_size,
        bytes (the data size on this rank, nccl-tests' convention: README "Distributed runs"),
        bus_bytes, time_s (its backend's work, time=True) and the phase it ran in (forward,
        backward, or both). A backend work no collective claimed keeps its own name
        ("gloo:all_reduce") with calls 0."""
        import pandas as pd

        df = self.ops()
        df = df[df["kind"] == "collective"]
        cols = ["op", "calls", "group_size", "bytes", "bus_bytes", "time_s", "phase"]
        if df.empty:
            return pd.DataFrame(columns=cols).set_index("op")
        out = df.groupby("op").agg(
            calls=("calls", "sum"), comm_ranks=("comm_ranks", "sum"),
            bytes=("comm_bytes", "sum"), bus_bytes=("comm_bus_bytes", "sum"),
            comm_time_ns=("comm_time_ns", "sum"),
            phase=("phase", lambda p: "+".join(sorted(set(p)))))
        # Each call's group size summed: the group size where every call had the same one.
        out["group_size"] = (out["comm_ranks"] / out["calls"].where(out["calls"] > 0))
        out["time_s"] = out["comm_time_ns"] / 1e9 if self.timed else float("nan")
        return out[cols[1:]].sort_values("bytes", ascending=False)

    def to_chrome_trace(self, path: str) -> None:
        """Write the timeline (profile(trace=True)) as Chrome trace JSON; open it in Perfetto
        (ui.perfetto.dev) or chrome://tracing."""
        if not self._raw.has_trace:
            raise RuntimeError("no timeline in this report: profile with trace=True")
        with open(path, "w") as f:
            f.write(self._raw.to_chrome_trace())

    @property
    def _op_times(self) -> bool:
        return self._raw.op_times

    def by_module(self):
        """One row per module (qualified name; "" is the whole model), tree order.

        Inclusive columns (the module and its submodules) plus ``self_*`` columns (its own ops).
        """
        import pandas as pd

        m = self._raw.modules
        df = pd.DataFrame({"module": m["name"], "depth": m["depth"], "calls": m["calls"]})
        df["params"] = [self._module_params.get(n) for n in m["name"]]
        for f in _COUNT_FIELDS:
            df[f] = m["total"][f]
        _add_rates(df, self._rows_timed)
        for f in ("flops", "macs", "bytes_read", "bytes_written", "time_ns"):
            df[f"self_{f}"] = m["self"][f]
        if not self._rows_timed:
            df["self_time_ns"] = float("nan")
        if self.activation_bytes is not None:
            own = self._activation_by_module
            df["self_activation_bytes"] = [own.get(n, 0) for n in m["name"]]
            df["activation_bytes"] = [sum(b for k, b in own.items() if _inside(k, n))
                                      for n in m["name"]]
        return df.set_index("module")

    def by_op(self, module: str | None = None, inclusive: bool = False):
        """One row per op name (summed over modules and phases), most FLOPs first; then, when
        timed, the unsupported ops by time (the first is the rule most worth writing), then
        the rest by bytes read.

        module: only the ops attributed directly to this module (its self ops); with
        inclusive=True, the ops of its whole subtree (the module and every descendant, as its
        by_module() row counts them; "" is the whole model).
        """
        if inclusive and module is None:
            raise ValueError("by_op(inclusive=True) needs module=: the qualified name whose "
                             "subtree to sum (\"\" is the whole model)")
        if module is not None and module not in self._raw.modules["name"]:
            raise ValueError(f"no module {module!r} in this report; by_module().index lists the "
                           "qualified names (\"\" is the whole model)")
        df = self.ops()
        if module is not None:
            df = df[df["module"].map(lambda n: _inside(n, module)) if inclusive
                    else df["module"] == module]
        cols = ["calls", *_COUNT_FIELDS]
        out = df.groupby("op").agg({"kind": "first", **{c: "sum" for c in cols}})
        _add_rates(out, self._op_times)
        # Unsupported ops have no FLOPs: among the FLOP-less rows, the slowest unsupported first.
        unsupported_time = out["time_ns"].where(out["kind"] == "unsupported", 0).fillna(0)
        order = out.assign(_unsupported_time=unsupported_time).sort_values(
            ["flops", "_unsupported_time", "bytes_read"], ascending=False, kind="stable")
        return out.loc[order.index]

    def ops(self):
        """The raw cells: one row per (module, op, phase)."""
        import pandas as pd

        o = self._raw.ops
        df = pd.DataFrame({c: o[c] for c in ("module", "op", "phase", "kind", "calls",
                                             *_COUNT_FIELDS)})
        if self._rows_timed and not self._op_times:
            df["time_ns"] = float("nan")  # per-op times not measured (CUDA without time_ops)
        return df

    def to_dict(self) -> dict:
        """Plain dict: the C++ report's JSON (Report::to_json: totals, one record per module and
        per op, unsupported ops, times), plus what Python measured (params, memory)."""
        d = json.loads(self._raw.to_json())
        d.update({
            "effective_basis": self.effective_basis,
            "coverage": self.coverage,
            "params": self.params.to_dict() if self.params is not None else None,
            "peak_memory_bytes": self.peak_memory_bytes,
            "peak_memory_method": self.peak_memory_method,
            "activation_bytes": self.activation_bytes,
            "compile_s": self.compile_s,
            "compiles": self.compiles,
        })
        if self._timing:  # the compiled run's times replace the (absent) per-op ones
            d.update(wall_ns=round(self.wall_s * 1e9), clock=self.clock)
        return d

    def to_json(self, path: str | None = None) -> str:
        """The report as JSON; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def table(self, max_depth: int = 2) -> str:
        """Per-module table with human units, modules down to ``max_depth``."""
        lines = []
        head = (f"{'module':<34} {'calls':>5} {'params':>10} {'FLOPs':>12} {'matmul':>7} "
                f"{'bwd':>6} {'read':>11} {'written':>11} {'FLOP/B':>7}")
        lines.append(head)
        lines.append("-" * len(head))
        df = self.by_module()
        col = {c: df[c].tolist() for c in ("depth", "calls", "flops", "flops_matmul",
                                           "flops_backward", "bytes_read", "bytes_written",
                                           "intensity")}
        for i, (module, parent) in enumerate(zip(df.index, self._raw.modules["parent"])):
            depth, calls, flops = col["depth"][i], col["calls"][i], col["flops"][i]
            if depth > max_depth:
                continue
            short = module[len(parent) + 1:] if parent and module.startswith(parent + ".") \
                else (module or "(model)")
            name = "  " * depth + short
            p = self._module_params.get(module)
            matmul = col["flops_matmul"][i] / flops if flops else 0.0
            bwd = col["flops_backward"][i] / flops if flops else 0.0
            lines.append(
                f"{name[:34]:<34} {calls or '':>5} {si(p) if p is not None else '':>10} "
                f"{si(flops, 'FLOP'):>12} {matmul:>6.0%} {bwd:>6.0%} "
                f"{binary(col['bytes_read'][i]):>11} {binary(col['bytes_written'][i]):>11} "
                f"{col['intensity'][i]:>7.1f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        parts = [
            f"effmetrics report: {si(self.flops, 'FLOPs')} ({si(self.macs, 'MACs')}), "
            f"matmul {si(self.flops_matmul, 'FLOPs')}, vector {si(self.flops_vector, 'FLOPs')}; "
            f"forward {si(self.flops_forward, 'FLOPs')}, "
            f"backward {si(self.flops_backward, 'FLOPs')}",
            f"memory traffic: read {binary(self.bytes_read)}, "
            f"written {binary(self.bytes_written)}, "
            f"intensity {self.intensity:.1f} FLOP/B (no-cache lower bound)",
        ]
        if self.comm_bytes or self.comm_time_ns:
            line = (f"communication: {binary(self.comm_bytes)} "
                    f"({binary(self.comm_bus_bytes)} bus bytes), no FLOPs")
            if self.timed:
                exposed = self.exposed_comm_s
                line += f"; backend time {self.comm_time_s * 1e3:.2f} ms, exposed " + (
                    "not measured on the GPU" if exposed is None else f"{exposed * 1e3:.2f} ms")
                if self.comm_untimed:
                    line += (f", {self.comm_untimed} collective(s) untimed: "
                             f"{self.comm_untimed_why}")
            parts.append(line + " (by_collective())")
        if self.params is not None:
            p = self.params
            line = f"params: {p.total:,} unique ({p.shared:,} shared, {p.trainable:,} trainable)"
            if p.applied is not None:
                line += f", {p.applied:,} applied, {p.touched:,} touched"
            parts.append(line)
        parts.append("")
        parts.append(self.table())
        if self.unsupported_ops:
            ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.unsupported_ops.items()))
            parts.append(f"\nunsupported ops (no FLOP rule; bytes counted): {ops}")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        """Jupyter: the module tree with FLOPs/bytes/time shares as inline bars."""
        from effmetrics.display import report_html

        return report_html(self)

    def __repr__(self) -> str:
        return (f"Report(flops={self.flops:,}, macs={self.macs:,}, "
                f"flops_backward={self.flops_backward:,}, bytes_read={self.bytes_read:,}, "
                f"unsupported_ops={len(self.unsupported_ops)})")
