"""Pipeline parallelism with torch.distributed.pipelining: the theoretical bubble of a schedule
(em.pipeline_bubble), played out from the schedule's own action lists, and each stage's compute
actions timed and named (NVTX `stage 1 F3`) under an em.Counter.

    em.pipeline_bubble("gpipe", stages=2, microbatches=4)                    # 0.2
    em.pipeline_bubble(ScheduleInterleaved1F1B, stages=4, microbatches=4)    # 2 ranks x 2: 1/9
    with em.Counter([stage0, stage2], count="every") as c: ...              # a rank's stages
    c.stage_steps   # per step and stage: forward_s, backward_s, weight_s, busy_s, actions
"""
from __future__ import annotations

import time
import types

#: Each action's cost in the theoretical bubble: forward F, the input-gradient half of the
#: backward I and its weight-gradient half W one unit each (the zero-bubble paper's convention);
#: an unsplit backward B = I + W = 2 units, twice the forward, as for a matmul.
UNIT_COSTS = {"F": 1.0, "I": 1.0, "W": 1.0}

# em.pipeline_bubble's schedule names (lower case, without "schedule", "-", "_" or spaces) ->
# torch.distributed.pipelining's class names.
SCHEDULES = {"gpipe": "ScheduleGPipe", "1f1b": "Schedule1F1B",
             "interleaved1f1b": "ScheduleInterleaved1F1B", "loopedbfs": "ScheduleLoopedBFS",
             "interleavedzerobubble": "ScheduleInterleavedZeroBubble",
             "zbvzerobubble": "ScheduleZBVZeroBubble", "dualpipev": "ScheduleDualPipeV"}
_SINGLE = ("ScheduleGPipe", "Schedule1F1B")  # one stage per rank: action lists written here
_COMPUTE = ("F", "B", "I", "W")


def _schedule_name(schedule) -> str:
    """torch's class name of `schedule` (a name, a class or an instance)."""
    if isinstance(schedule, str):
        name = schedule
    elif isinstance(schedule, type):
        name = schedule.__name__
    else:
        name = type(schedule).__name__
    key = name.lower().replace("-", "").replace("_", "").replace(" ", "")
    key = key.removeprefix("schedule")
    if key in SCHEDULES:
        return SCHEDULES[key]
    raise ValueError(
        f"em.pipeline_bubble(): unknown schedule {name!r}; pass one of "
        f"{', '.join(repr(k) for k in SCHEDULES)} or torch.distributed.pipelining's class "
        f"({', '.join(SCHEDULES.values())}), or an instance of it")


def _single_order(cls_name: str, stages: int, m: int) -> dict:
    """The compute actions of each rank of a one-stage-per-rank schedule, in the order torch's
    runtime runs them (its _step_microbatches; torch's own pipeline_order for Schedule1F1B
    skips microbatch 0 on the last stage): GPipe every forward, then every backward; 1F1B
    min(m, stages - s) forwards on stage s, then backward and forward alternately, then the
    remaining backwards."""
    order = {}
    for s in range(stages):
        if cls_name == "ScheduleGPipe":
            seq = [("F", s, i) for i in range(m)] + [("B", s, i) for i in range(m)]
        else:
            warmup = min(m, stages - s)
            seq = [("F", s, i) for i in range(warmup)]
            for b in range(m):
                seq.append(("B", s, b))
                if warmup + b < m:
                    seq.append(("F", s, warmup + b))
        order[s] = seq
    return order


def _stub_stage(index: int, stages: int, ranks: int):
    """What a multi-stage schedule's constructor reads of a stage (no process group needed)."""
    from torch import nn

    return types.SimpleNamespace(stage_index=index, num_stages=stages, group_size=ranks,
                                 group_rank=0, is_first=index == 0, is_last=index == stages - 1,
                                 submod=nn.Identity(), stage_index_to_group_rank=None)


def _multi_order(cls_name: str, stages: int, ranks: int, m: int) -> dict:
    """Each rank's compute actions from the schedule's own pipeline_order (built by its
    constructor, every rank's, from rank 0's stages), fused F+B actions split into theirs."""
    import torch.distributed.pipelining.schedules as sched

    cls = getattr(sched, cls_name, None)
    if cls is None:
        raise ValueError(f"em.pipeline_bubble(): this torch ({_torch_version()}) has no "
                         f"torch.distributed.pipelining.{cls_name}")
    mine = [s for s in range(stages) if s % ranks == 0]  # looped placement; V: corrected below
    for _ in range(2):
        try:
            built = cls([_stub_stage(s, stages, ranks) for s in mine], n_microbatches=m,
                        loss_fn=lambda y, t: y)
        except ValueError as e:
            raise ValueError(f"em.pipeline_bubble(): {cls_name} with {stages} stages on "
                             f"{ranks} ranks, {m} microbatches: {e}") from None
        placed = sorted(s for s, r in built.stage_index_to_group_rank.items() if r == 0)
        if placed == mine:
            break
        mine = placed
    order = {}
    for rank, actions in built.pipeline_order.items():
        seq = []
        for a in actions:
            for sub in (a.sub_actions or (a,)) if a is not None else ():
                kind = sub.computation_type.value
                if kind in _COMPUTE:
                    seq.append((kind, sub.stage_index, sub.microbatch_index))
        order[rank] = seq
    return order


def _torch_version() -> str:
    import torch

    return torch.__version__


def _check(order: dict, stages: int, m: int) -> None:
    """Every stage's every microbatch: one forward and one backward (B, or I and W)."""
    seen = {}
    for seq in order.values():
        for kind, s, mb in seq:
            seen.setdefault((s, mb), []).append(kind)
    for s in range(stages):
        for mb in range(m):
            kinds = sorted(seen.get((s, mb), []))
            if kinds not in (["B", "F"], ["F", "I", "W"]):
                raise RuntimeError(
                    f"em.pipeline_bubble(): the schedule's action list has {kinds} for stage "
                    f"{s}, microbatch {mb} (expected F and B, or F, I and W): this torch's "
                    f"schedule cannot be played out")


def play_out(order: dict, stages: int, costs: dict | None = None) -> tuple[float, dict]:
    """Runs each rank's actions in its order, each as soon as its rank is free and its inputs
    are there: F of (stage s, microbatch i) after F of (s-1, i); B or I of (s, i) after F of
    (s, i) and the backward (B or I) of (s+1, i); W of (s, i) after I of (s, i); communication
    takes no time. Returns the step time (the last action's end: every rank's step ends with
    the pipeline) and each rank's busy time, in the costs' unit."""
    cost = {**UNIT_COSTS, **(costs or {})}
    cost["B"] = cost["I"] + cost["W"]
    done: dict = {}
    pos = dict.fromkeys(order, 0)
    free = dict.fromkeys(order, 0.0)
    busy = dict.fromkeys(order, 0.0)
    left = sum(len(seq) for seq in order.values())
    while left:
        moved = False
        for rank, seq in order.items():
            while pos[rank] < len(seq):
                kind, s, mb = seq[pos[rank]]
                if kind == "F":
                    needs = [("F", s - 1, mb)] if s > 0 else []
                elif kind in ("B", "I"):
                    needs = [("F", s, mb)] + ([("grad", s + 1, mb)] if s < stages - 1 else [])
                else:
                    needs = [("grad", s, mb)]
                if any(n not in done for n in needs):
                    break  # waits for a peer (or its own earlier action)
                end = max([free[rank]] + [done[n] for n in needs]) + cost[kind]
                done[(kind, s, mb)] = free[rank] = end
                if kind in ("B", "I"):
                    done[("grad", s, mb)] = end  # the input gradient, sent to stage s-1
                busy[rank] += cost[kind]
                pos[rank] += 1
                left -= 1
                moved = True
        if not moved:
            raise RuntimeError("em.pipeline_bubble(): the schedule's action lists deadlock")
    return max(free.values()), busy


def pipeline_bubble(schedule, stages: int, microbatches: int, *,
                    stages_per_rank: int | None = None, costs: dict | None = None) -> float:
    """The theoretical bubble fraction (idle / step time of a rank) of a pipeline of ``stages``
    equal stages running ``microbatches`` microbatches per step with ``schedule``.

    The schedule is played out from its action lists (play_out): torch's own ``pipeline_order``
    for the multi-stage schedules (built by the schedule's constructor with stand-in stages: no
    process group), and for GPipe and 1F1B the order their runtime runs. Each rank runs its
    actions in order, each as soon as its inputs are there; communication takes no time; the
    step ends when the last rank is done. Costs (``UNIT_COSTS``): a forward F, the
    input-gradient backward I and the weight-gradient backward W one unit each, an unsplit
    backward B = I + W two units. This gives (p-1)/(m+p-1) for GPipe and 1F1B on p ranks,
    (p-1)/(v*m+p-1) for interleaved 1F1B with v stages per rank (m a multiple of p), and for
    the zero-bubble schedules (p-1)/(3*v*m+p-1) once m is large enough: only the first forward's
    way down the pipeline is idle. Every rank holds the same actions, so every rank has this
    bubble.

    schedule: a name ("gpipe", "1f1b", "interleaved1f1b", "loopedbfs",
        "interleavedzerobubble", "zbvzerobubble", "dualpipev") or torch.distributed.pipelining's
        schedule class or instance (ScheduleGPipe, Schedule1F1B, ScheduleInterleaved1F1B, ...).
    stages: the number of pipeline stages in all (torch's ``num_stages``).
    stages_per_rank: 1 for GPipe and 1F1B, 2 for the others by default (the V schedules need
        2); the ranks are stages / stages_per_rank.
    costs: {"F": ..., "I": ..., "W": ...} to replace the unit costs (e.g. measured times).
    """
    cls_name = _schedule_name(schedule)
    single = cls_name in _SINGLE
    per_rank = stages_per_rank if stages_per_rank is not None else (1 if single else 2)
    for what, v in (("stages", stages), ("microbatches", microbatches),
                    ("stages_per_rank", per_rank)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"em.pipeline_bubble(): {what} must be a positive int; got {v!r}")
    if single and per_rank != 1:
        raise ValueError(f"em.pipeline_bubble(): {cls_name} runs one stage per rank; got "
                         f"stages_per_rank={per_rank} (use an interleaved schedule, e.g. "
                         f"'interleaved1f1b', for more)")
    if stages % per_rank:
        raise ValueError(f"em.pipeline_bubble(): stages ({stages}) must be a multiple of "
                         f"stages_per_rank ({per_rank}): every rank holds as many stages")
    if costs is not None:
        bad = {k: v for k, v in costs.items()
               if k not in UNIT_COSTS or not isinstance(v, (int, float)) or v < 0}
        if bad or not any(costs.get(k, UNIT_COSTS[k]) > 0 for k in UNIT_COSTS):
            raise ValueError(f"em.pipeline_bubble(costs=...): non-negative numbers for 'F' "
                             f"(forward), 'I' (input-gradient backward) and 'W' "
                             f"(weight-gradient backward), not all 0; got {costs!r}")
    ranks = stages // per_rank
    if single:
        order = _single_order(cls_name, stages, microbatches)
    else:
        order = _multi_order(cls_name, stages, ranks, microbatches)
    _check(order, stages, microbatches)
    step, busy = play_out(order, stages, costs)
    return max((step - b) / step for b in busy.values())


# ---------------------------------------------------------------- stages under a Counter

_METHODS = (("forward_one_chunk", "F"), ("backward_one_chunk", "B"),
            ("backward_weight_one_chunk", "W"))


def pipeline_stages(model) -> list | None:
    """The torch.distributed.pipelining stages in `model` (a stage, or a list or tuple of
    them), or None when it is something else."""
    items = list(model) if isinstance(model, (list, tuple)) else [model]
    if not items or not all(hasattr(x, "forward_one_chunk") and hasattr(x, "submod")
                            for x in items):
        return None
    try:
        from torch.distributed.pipelining.stage import _PipelineStageBase
    except ImportError:
        return None
    return items if all(isinstance(x, _PipelineStageBase) for x in items) else None


class StageActions:
    """Times each compute action of a rank's stages (forward_one_chunk, backward_one_chunk,
    backward_weight_one_chunk, whichever schedule calls them) on the host clock and, with
    nvtx, names it in an NVTX range: ``stage {i} F{mb}``, ``B`` a whole backward, ``I`` its
    input-gradient half (a zero-bubble schedule's split backward), ``W`` its weight-gradient
    half. An action's time excludes the schedule's wait for its input (the receive is waited
    for before the call)."""

    def __init__(self, stages: list, nvtx: bool):
        self.stages = stages
        self.nvtx = nvtx
        self._saved: list = []
        self._open: dict = {}

    def install(self) -> None:
        for stage in self.stages:
            for method, kind in _METHODS:
                saved = stage.__dict__.get(method, _MISSING)
                setattr(stage, method, self._wrap(stage, getattr(stage, method), kind))
                self._saved.append((stage, method, saved))

    def remove(self) -> None:
        while self._saved:
            stage, method, saved = self._saved.pop()
            if saved is _MISSING:
                stage.__dict__.pop(method, None)
            else:
                setattr(stage, method, saved)

    def _wrap(self, stage, real, kind: str):
        from effmetrics import _C

        def action(chunk, *args, **kwargs):
            letter = kind
            if kind == "B":  # backward_one_chunk(chunk, loss=None, full_backward=True, ...)
                full = kwargs.get("full_backward", args[1] if len(args) > 1 else True)
                letter = "B" if full else "I"
            if self.nvtx:
                _C.nvtx_range_push(f"stage {stage.stage_index} {letter}{chunk}")
            t0 = time.perf_counter()
            try:
                return real(chunk, *args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                if self.nvtx:
                    _C.nvtx_range_pop()
                acc = self._open.setdefault(stage.stage_index, dict.fromkeys(_COMPUTE, 0.0))
                acc[letter] += dt
                acc["actions"] = acc.get("actions", 0) + 1

        return action

    def take(self, step: int) -> list:
        """The rows of the step just ended (one per stage), and start the next."""
        rows = []
        for stage in self.stages:
            acc = self._open.pop(stage.stage_index, None) or dict.fromkeys(_COMPUTE, 0.0)
            fwd, bwd, wgt = acc["F"], acc["B"] + acc["I"], acc["W"]
            rows.append({"step": step, "stage": stage.stage_index, "forward_s": fwd,
                         "backward_s": bwd, "weight_s": wgt, "busy_s": fwd + bwd + wgt,
                         "actions": acc.get("actions", 0)})
        self._open.clear()
        return rows


STAGE_COLUMNS = ("step", "stage", "forward_s", "backward_s", "weight_s", "busy_s", "actions")

_MISSING = object()
